"""Transactions as each wallet sees them, and the facts of the ledger. Pure values.

A money movement is one ledger transaction (balanced postings); each wallet it touches sees
its own side as a `Transaction`: a debit or a credit with a category, the amount, the
balance right after it, the other side and a `VP-TXN-` reference shared by both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

__all__ = [
    "REFERENCE_PATTERN",
    "Counterparty",
    "LedgerCheck",
    "LedgerReport",
    "PaymentMethod",
    "Transaction",
    "TransactionCategory",
    "TransactionStatus",
    "TransactionType",
    "TransferStats",
    "UsageFigures",
]

REFERENCE_PATTERN = re.compile(r"^VP-TXN-[A-Z0-9]{8}\Z")


class TransactionType(Enum):
    CREDIT = "CREDIT"
    DEBIT = "DEBIT"


class TransactionCategory(Enum):
    TOP_UP = "TOP_UP"
    P2P_SEND = "P2P_SEND"
    P2P_RECEIVE = "P2P_RECEIVE"
    WITHDRAW = "WITHDRAW"
    REFUND = "REFUND"
    REVERSAL = "REVERSAL"

    @property
    def only_type(self) -> TransactionType | None:
        """The side every row of this category is on; None for a category with rows of both
        (a refused withdrawal is credited back as WITHDRAW; refunds and reversals go either
        way)."""
        return _ONE_SIDED.get(self)


_ONE_SIDED = {
    TransactionCategory.TOP_UP: TransactionType.CREDIT,
    TransactionCategory.P2P_SEND: TransactionType.DEBIT,
    TransactionCategory.P2P_RECEIVE: TransactionType.CREDIT,
}


class TransactionStatus(Enum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REVERSED = "REVERSED"

    @property
    def only_on(self) -> tuple[TransactionCategory, TransactionType] | None:
        """The one kind of row that can have this status: only a withdrawal's debit waits
        for its payout or fails (every other side is settled when written; the verifier's
        `statuses_match_movements`); None for a status any row may have."""
        waits_or_fails = self in (TransactionStatus.PENDING, TransactionStatus.FAILED)
        return _WITHDRAWAL_ONLY if waits_or_fails else None


_WITHDRAWAL_ONLY = (TransactionCategory.WITHDRAW, TransactionType.DEBIT)


class PaymentMethod(Enum):
    UPI = "UPI"
    CARD = "CARD"
    NET_BANKING = "NET_BANKING"

    @property
    def label(self) -> str:
        return {"UPI": "UPI", "CARD": "Card", "NET_BANKING": "Net banking"}[self.value]


@dataclass(frozen=True, slots=True)
class Counterparty:
    wallet_id: str = ""
    display_name: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Transaction:
    transaction_id: str
    reference: str
    request_id: str  # "" on the side that did not ask
    wallet_id: str
    user_id: str
    type: TransactionType
    category: TransactionCategory
    status: TransactionStatus
    amount_minor: int
    currency: str
    balance_after_minor: int
    counterparty: Counterparty
    note: str
    original_transaction_id: str
    reversed_amount_minor: int
    created_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class LedgerReport:
    checks: tuple[LedgerCheck, ...]
    verified_at: datetime

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


@dataclass(frozen=True, slots=True)
class UsageFigures:
    """How much of an action's current day and month (Asia/Kolkata) a wallet has used."""

    action: str  # "send", "withdraw", "top_up"
    daily_used_minor: int
    monthly_used_minor: int


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """A wallet's usage of every limited action, as of `read_at` (whose business day and month
    the figures are)."""

    currency: str
    actions: tuple[UsageFigures, ...]
    read_at: datetime


@dataclass(frozen=True, slots=True)
class TransferStats:
    daily_count: int
    daily_volumes: tuple[tuple[str, int], ...]  # (currency, minor units)
    monthly_count: int
    monthly_volumes: tuple[tuple[str, int], ...]
    open_disputes: int
    computed_at: datetime
