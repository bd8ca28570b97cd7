"""The commands of the transfer use cases: small frozen values carrying the actor.

A movement's `key` (and a top-up's `payment_method`) is read by the entrypoint, which refuses
a malformed one; its refusal is carried here, not raised, so the use case names it together
with every other bad field of the request (InputChecks.take).
"""

from __future__ import annotations

from dataclasses import dataclass

from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.validation import BankAccountInput

__all__ = ["AmountInput", "SendMoney", "TopUp", "Withdraw"]


@dataclass(frozen=True, slots=True)
class AmountInput:
    """A Money field as the client sent it (None when absent)."""

    currency: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class TopUp:
    user_id: str
    key: IdempotencyKey | ValidationError
    amount: AmountInput | None
    payment_method: PaymentMethod | ValidationError | None
    payment_reference: str


@dataclass(frozen=True, slots=True)
class SendMoney:
    user_id: str
    key: IdempotencyKey | ValidationError
    recipient_wallet_id: str
    amount: AmountInput | None
    note: str
    pin: str
    client_ip: str


@dataclass(frozen=True, slots=True)
class Withdraw:
    user_id: str
    key: IdempotencyKey | ValidationError
    amount: AmountInput | None
    bank_account: BankAccountInput | None
    pin: str
    client_ip: str
