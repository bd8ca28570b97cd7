"""proto <-> domain conversions of the transfer service."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

from google.protobuf.message import Message

from vaultpay.transfer.v1 import transfer_pb2
from vaultpay.type.v1 import limit_action_pb2, money_pb2
from vaultpay_common.errors import ValidationError
from vaultpay_common.grpc.convert import datetime_or_none, timestamp
from vaultpay_common.grpc.idempotency import idempotency_key
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_common.pagination import page_size
from vaultpay_transfer.domain.model import (
    LedgerReport,
    PaymentMethod,
    Transaction,
    TransactionCategory,
    TransactionStatus,
    TransactionType,
)
from vaultpay_transfer.domain.validation import BankAccountInput, InputChecks, check_wallet_id
from vaultpay_transfer.service_layer.commands import AmountInput
from vaultpay_transfer.service_layer.ports import TransactionFilter
from vaultpay_transfer.service_layer.queries import check_listable

__all__ = [
    "ACTIONS",
    "amount_input",
    "bank_account_input",
    "ledger_report_to_proto",
    "money",
    "movement_key",
    "payment_method_from_proto",
    "transaction_filter",
    "transaction_to_proto",
]

E = TypeVar("E", bound=Enum)

_TYPES: dict[TransactionType, transfer_pb2.TransactionType.ValueType] = {
    TransactionType.CREDIT: transfer_pb2.TRANSACTION_TYPE_CREDIT,
    TransactionType.DEBIT: transfer_pb2.TRANSACTION_TYPE_DEBIT,
}
_CATEGORIES: dict[TransactionCategory, transfer_pb2.TransactionCategory.ValueType] = {
    TransactionCategory.TOP_UP: transfer_pb2.TRANSACTION_CATEGORY_TOP_UP,
    TransactionCategory.P2P_SEND: transfer_pb2.TRANSACTION_CATEGORY_P2P_SEND,
    TransactionCategory.P2P_RECEIVE: transfer_pb2.TRANSACTION_CATEGORY_P2P_RECEIVE,
    TransactionCategory.WITHDRAW: transfer_pb2.TRANSACTION_CATEGORY_WITHDRAW,
    TransactionCategory.REFUND: transfer_pb2.TRANSACTION_CATEGORY_REFUND,
    TransactionCategory.REVERSAL: transfer_pb2.TRANSACTION_CATEGORY_REVERSAL,
}
_STATUSES: dict[TransactionStatus, transfer_pb2.TransactionStatus.ValueType] = {
    TransactionStatus.PENDING: transfer_pb2.TRANSACTION_STATUS_PENDING,
    TransactionStatus.COMPLETED: transfer_pb2.TRANSACTION_STATUS_COMPLETED,
    TransactionStatus.FAILED: transfer_pb2.TRANSACTION_STATUS_FAILED,
    TransactionStatus.REVERSED: transfer_pb2.TRANSACTION_STATUS_REVERSED,
}
_METHODS = {
    transfer_pb2.PAYMENT_METHOD_UPI: PaymentMethod.UPI,
    transfer_pb2.PAYMENT_METHOD_CARD: PaymentMethod.CARD,
    transfer_pb2.PAYMENT_METHOD_NET_BANKING: PaymentMethod.NET_BANKING,
}
ACTIONS = {
    "send": limit_action_pb2.LIMIT_ACTION_SEND,
    "withdraw": limit_action_pb2.LIMIT_ACTION_WITHDRAW,
    "top_up": limit_action_pb2.LIMIT_ACTION_TOP_UP,
}


def money(amount_minor: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount_minor=amount_minor)


def amount_input(
    message: transfer_pb2.TopUpRequest
    | transfer_pb2.SendMoneyRequest
    | transfer_pb2.WithdrawRequest,
) -> AmountInput | None:
    if not message.HasField("amount"):
        return None
    return AmountInput(message.amount.currency_code, message.amount.amount_minor)


def bank_account_input(request: transfer_pb2.WithdrawRequest) -> BankAccountInput | None:
    if not request.HasField("bank_account"):
        return None
    account = request.bank_account
    return BankAccountInput(account.account_number, account.ifsc, account.account_holder_name)


def movement_key(request: Message, **fields: Any) -> IdempotencyKey | ValidationError:
    """A movement's idempotency key (`request_id` required; `fields` as `idempotency_key`
    takes them), or the refusal of its request_id, returned for the use case to name with
    the request's other bad fields (InputChecks.take)."""
    try:
        key = idempotency_key(request, required=True, **fields)
    except ValidationError as refused:
        return refused
    assert key is not None  # required
    return key


def payment_method_from_proto(value: int) -> PaymentMethod | ValidationError | None:
    """The method, None when not given (0), or the refusal of a number that is no known
    method, returned for the use case to name with the request's other bad fields."""
    if value == 0:
        return None
    method = next((m for number, m in _METHODS.items() if number == value), None)
    if method is None:
        return ValidationError.single("payment_method", "is not a known payment method")
    return method


def _from(mapping: Mapping[E, int], value: int, field: str) -> E | None:
    """The domain member of an enum number; 0 (UNSPECIFIED) is "any"."""
    if value == 0:
        return None
    for member, number in mapping.items():
        if number == value:
            return member
    raise ValidationError.single(field, "is not a known value")


def transaction_filter(
    request: transfer_pb2.ListTransactionsRequest | transfer_pb2.AdminListTransactionsRequest,
    *,
    user_id: str | None = None,
) -> TransactionFilter:
    """The listing's filters. One refusal names every bad field of the request, its page size
    and the filters no row can match (`check_listable`) among them; the page token is read
    afterwards (`paginate`), as what it may hold depends on the filters."""
    with InputChecks() as checks:  # in the request's field order
        checks.run(lambda: page_size(request.page_size))
        flt = checks.run(lambda: _filter_fields(request, user_id))
    return flt.value


def _filter_fields(
    request: transfer_pb2.ListTransactionsRequest | transfer_pb2.AdminListTransactionsRequest,
    user_id: str | None,
) -> TransactionFilter:
    """Every malformed filter in one refusal; once all are well formed, those that no row
    can match together."""
    staff = request if isinstance(request, transfer_pb2.AdminListTransactionsRequest) else None
    with InputChecks() as checks:
        wallet_id = checks.run(
            lambda: (
                ""
                if staff is None
                else check_wallet_id(staff.wallet_id, "wallet_id", required=False)
            )
        )
        status = checks.run(
            lambda: None if staff is None else _from(_STATUSES, staff.status, "status")
        )
        type_ = checks.run(lambda: _from(_TYPES, request.type, "type"))
        category = checks.run(lambda: _from(_CATEGORIES, request.category, "category"))
        start = checks.run(lambda: datetime_or_none(request, "start_time"))
        end = checks.run(lambda: datetime_or_none(request, "end_time"))
    flt = TransactionFilter(
        user_id=user_id,
        wallet_id=wallet_id.value,
        type=type_.value,
        category=category.value,
        status=status.value,
        start=start.value,
        end=end.value,
    )
    check_listable(flt)
    return flt


def transaction_to_proto(tx: Transaction) -> transfer_pb2.Transaction:
    message = transfer_pb2.Transaction(
        transaction_id=tx.transaction_id,
        reference_id=tx.reference,
        request_id=tx.request_id,
        wallet_id=tx.wallet_id,
        type=_TYPES[tx.type],
        category=_CATEGORIES[tx.category],
        status=_STATUSES[tx.status],
        amount=money(tx.amount_minor, tx.currency),
        balance_after=money(tx.balance_after_minor, tx.currency),
        counterparty=transfer_pb2.Counterparty(
            wallet_id=tx.counterparty.wallet_id,
            display_name=tx.counterparty.display_name,
            description=tx.counterparty.description,
        ),
        note=tx.note,
        original_transaction_id=tx.original_transaction_id,
        reversed_amount=money(tx.reversed_amount_minor, tx.currency),
        create_time=timestamp(tx.created_at),
    )
    if tx.completed_at is not None:
        message.complete_time.CopyFrom(timestamp(tx.completed_at))
    return message


def ledger_report_to_proto(report: LedgerReport) -> transfer_pb2.AdminVerifyLedgerResponse:
    return transfer_pb2.AdminVerifyLedgerResponse(
        ok=report.ok,
        checks=[
            transfer_pb2.LedgerCheck(name=c.name, ok=c.ok, detail=c.detail) for c in report.checks
        ],
        verify_time=timestamp(report.verified_at),
    )
