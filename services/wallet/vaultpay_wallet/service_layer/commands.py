"""Commands: one small frozen dataclass per state-changing use case.

Each carries the actor explicitly (the caller's user id, or the staff member's) and the
idempotency key the entrypoint built from the request (None only where no request_id exists,
e.g. the periodic sweep). Inputs arrive as the client sent them; the use cases validate them
and name the offending request field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vaultpay_common.context import Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_wallet.domain.limits import LimitAction
from vaultpay_wallet.domain.model import KycTier

__all__ = [
    "AdminFreezeWallet",
    "AdminSetWalletLimits",
    "AdminUnfreezeWallet",
    "AmountInput",
    "ChangePin",
    "CloseMyWallet",
    "CreateWallet",
    "DeleteMyLimit",
    "FreezeMyWallet",
    "LimitValuesInput",
    "RequestPinReset",
    "ResetPin",
    "SetKycTier",
    "SetMyLimit",
    "SetPin",
    "UnfreezeMyWallet",
    "UpdateSetting",
    "VerifyPin",
    "VerifyTransferPin",
]


@dataclass(frozen=True, slots=True)
class AmountInput:
    """A Money from the request, not yet validated (so the error can name the field)."""

    currency_code: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class LimitValuesInput:
    """Caps for one action as requested; None = window not set. `action` None = the
    request's LIMIT_ACTION_UNSPECIFIED (refused); a ValidationError = the entrypoint's
    refusal of a number no action has, named with the request's other bad fields."""

    action: LimitAction | ValidationError | None
    per_transaction: AmountInput | None = None
    daily: AmountInput | None = None
    monthly: AmountInput | None = None


# ----- wallet holder --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateWallet:
    user_id: str
    display_name: str
    currency_code: str  # "" means INR
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class FreezeMyWallet:
    user_id: str
    note: str
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class UnfreezeMyWallet:
    user_id: str
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class CloseMyWallet:
    user_id: str
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class SetPin:
    user_id: str
    pin: str
    pin_confirmation: str
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class VerifyPin:
    user_id: str
    pin: str
    idempotency: IdempotencyKey | None
    client_ip: str = ""  # the caller's address, audited with a wrong PIN ("" unknown)


@dataclass(frozen=True, slots=True)
class ChangePin:
    user_id: str
    current_pin: str
    new_pin: str
    new_pin_confirmation: str
    idempotency: IdempotencyKey | None
    client_ip: str = ""  # as VerifyPin's


@dataclass(frozen=True, slots=True)
class RequestPinReset:
    user_id: str
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class ResetPin:
    """Public: the token is the credential, so there is no user id."""

    token: str
    new_pin: str
    new_pin_confirmation: str
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class SetMyLimit:
    user_id: str
    action: str  # as in the path: "send", "withdraw" or "top_up"
    per_transaction: AmountInput | None
    daily: AmountInput | None
    monthly: AmountInput | None
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class DeleteMyLimit:
    user_id: str
    action: str
    idempotency: IdempotencyKey | None


# ----- staff ----------------------------------------------------------------------------
# The changes of another user's wallet carry the staff member's role too (from their token,
# current on these strict RPCs): the owner must rank below it (domain/staff.py).


@dataclass(frozen=True, slots=True)
class AdminFreezeWallet:
    actor_id: str
    actor_role: Role
    wallet_id: str
    reason: str
    until: datetime | None
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class AdminUnfreezeWallet:
    actor_id: str
    actor_role: Role
    wallet_id: str
    reason: str
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class AdminSetWalletLimits:
    """`limits` and `idempotency` may hold the refusal the entrypoint met reading them (more
    entries than actions, a malformed request_id), named with the request's other bad fields."""

    actor_id: str
    actor_role: Role
    wallet_id: str
    limits: tuple[LimitValuesInput, ...] | ValidationError
    reason: str
    idempotency: IdempotencyKey | ValidationError | None


@dataclass(frozen=True, slots=True)
class UpdateSetting:
    actor_id: str
    key: str
    value: str
    reason: str
    idempotency: IdempotencyKey | None


# ----- internal (service principals) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyTransferPin:
    """`idempotency` is required: a retried check of one money movement counts once."""

    user_id: str
    pin: str
    idempotency: IdempotencyKey | None
    client_ip: str = ""  # the mover's address as transfer passes it, audited with a wrong PIN


@dataclass(frozen=True, slots=True)
class SetKycTier:
    """`kyc_tier` None = the request's KYC_TIER_UNSPECIFIED (refused)."""

    user_id: str
    kyc_tier: KycTier | None
    submission_id: str
    idempotency: IdempotencyKey | None
