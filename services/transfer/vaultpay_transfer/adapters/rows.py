"""One mapping from a `wallet_transactions` row to a `Transaction`, whether the row came from
SQLAlchemy (typed values) or from a ledger function's JSON reply (`row_to_json`: text times,
text UUIDs). The stored answer of an idempotent call is that JSON, so a replay decodes
through the very same path as the first answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from vaultpay_transfer.domain.model import (
    Counterparty,
    Transaction,
    TransactionCategory,
    TransactionStatus,
    TransactionType,
)

__all__ = ["transaction_from_row"]


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError("a ledger time without a zone")
    return parsed


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def transaction_from_row(row: Mapping[Any, Any]) -> Transaction:
    completed = row["completed_at"]
    return Transaction(
        transaction_id=_text(row["id"]),
        reference=row["reference"],
        request_id=_text(row["request_id"]),
        wallet_id=row["wallet_id"],
        user_id=row["user_id"],
        type=TransactionType(row["type"]),
        category=TransactionCategory(row["category"]),
        status=TransactionStatus(row["status"]),
        amount_minor=int(row["amount"]),
        currency=row["currency"],
        balance_after_minor=int(row["balance_after"]),
        counterparty=Counterparty(
            row["counterparty_wallet_id"],
            row["counterparty_name"],
            row["counterparty_description"],
        ),
        note=row["note"],
        original_transaction_id=_text(row["original_transaction_id"]),
        reversed_amount_minor=int(row["reversed_amount"]),
        created_at=_time(row["created_at"]),
        completed_at=None if completed is None else _time(completed),
    )
