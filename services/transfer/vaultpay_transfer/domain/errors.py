"""The transfer domain's errors, each with the stable reason clients switch on.

Codes follow google/rpc/code.proto (API.md): a state the caller must change first is
FAILED_PRECONDITION, a limit RESOURCE_EXHAUSTED, a dependency that is down UNAVAILABLE.
Reasons not listed in API.md are ours: INVALID_AMOUNT, CURRENCY_MISMATCH,
PAYMENT_REFERENCE_USED, TRANSACTION_NOT_FOUND, COMMIT_OUTCOME_UNKNOWN, WALLET_UNAVAILABLE,
DATABASE_UNAVAILABLE and DEADLINE_EXCEEDED, and wallet's PIN_CHANGED and
PIN_CHECK_IN_PROGRESS passed through (README, "Transfer").
"""

from __future__ import annotations

from vaultpay_common.errors import (
    AlreadyExistsError,
    DomainError,
    ErrorKind,
    FailedPreconditionError,
    FieldViolation,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
    ValidationError,
    wallet_frozen_refusal,
)
from vaultpay_transfer.domain.notifications import format_amount

__all__ = [
    "CommitOutcomeUnknownError",
    "CurrencyMismatchError",
    "DailyLimitExceededError",
    "InsufficientBalanceError",
    "InvalidAmountError",
    "IpNotTrustedError",
    "KycNotVerifiedError",
    "LimitExceededError",
    "MonthlyLimitExceededError",
    "MovementRateLimitedError",
    "PassedThroughError",
    "PaymentReferenceUsedError",
    "PerTransactionLimitExceededError",
    "PinLockedError",
    "RecipientNotFoundError",
    "SelfTransferError",
    "TransactionNotFoundError",
    "WalletClosedError",
    "WalletFrozenError",
    "WalletNotFoundError",
    "WalletUnavailableError",
]


class WalletNotFoundError(NotFoundError):
    """The caller has no wallet yet."""

    reason = "WALLET_NOT_FOUND"
    default_message = "you have no wallet; create one first"


class RecipientNotFoundError(NotFoundError):
    reason = "RECIPIENT_NOT_FOUND"
    default_message = "no wallet with that id"


class TransactionNotFoundError(NotFoundError):
    """No such transaction, or another user's (the two are indistinguishable on purpose)."""

    reason = "TRANSACTION_NOT_FOUND"
    default_message = "no such transaction"


class WalletFrozenError(FailedPreconditionError):
    """A freeze holds the caller's wallet. Refused by the ledger, it says which as wallet's
    PIN check does (`held_by`): metadata `freeze_reason` (FREEZE_REASON_SELF,
    FREEZE_REASON_ADMIN or, for a TopUp, FREEZE_REASON_PIN_LOCKOUT) and `until` (its end; absent for a freeze without one), and a message
    saying who can lift it; bare when no freeze explains the status or it could not be read."""

    reason = "WALLET_FROZEN"
    default_message = "the wallet is frozen"

    @classmethod
    def held_by(cls, freeze_reason: str, until: str) -> WalletFrozenError:
        """`freeze_reason`: FREEZE_REASON_SELF, _ADMIN or _PIN_LOCKOUT, anything else (none
        read) the bare refusal; `until`: its end as `metadata_time` gives it, "" for none."""
        source = freeze_reason.removeprefix("FREEZE_REASON_")
        if source not in ("SELF", "ADMIN", "PIN_LOCKOUT"):
            return cls()
        message, metadata = wallet_frozen_refusal(source, until)
        return cls(message, metadata=metadata)


class PinLockedError(FailedPreconditionError):
    """A send or withdrawal whose wallet a PIN lockout froze after its own PIN check passed
    (wrong PINs of other requests in between): answered as wallet's check answers a locked
    wallet, PIN_LOCKED with `until` (the lockout's end, `metadata_time`), not WALLET_FROZEN."""

    reason = "PIN_LOCKED"
    default_message = "too many wrong PINs; the wallet is locked"

    def __init__(self, until: str = "") -> None:
        message = self.default_message + (f" until {until}" if until else "")
        super().__init__(message, metadata={"until": until} if until else None)


class WalletClosedError(FailedPreconditionError):
    """The caller's wallet is closed, or (metadata side=recipient) the recipient's."""

    reason = "WALLET_CLOSED"
    default_message = "the wallet is closed"


class KycNotVerifiedError(FailedPreconditionError):
    reason = "KYC_NOT_VERIFIED"
    default_message = "moving money needs an approved KYC submission"


class InsufficientBalanceError(FailedPreconditionError):
    reason = "INSUFFICIENT_BALANCE"
    default_message = "the balance is too low for this amount"


class CurrencyMismatchError(FailedPreconditionError):
    reason = "CURRENCY_MISMATCH"
    default_message = "the amount is not in the wallets' currency"


class IpNotTrustedError(FailedPreconditionError):
    """The client's address is not trusted yet. Metadata `confirmation_sent`: whether wallet
    mailed a confirmation code for it now (not when one is already outstanding, or the
    request came without an address); the message says which."""

    reason = "IP_NOT_TRUSTED"
    default_message = (
        "money cannot move from this network address yet; confirm it with the code we emailed"
    )

    def __init__(self, *, confirmation_sent: bool, address_known: bool = True) -> None:
        if not address_known:  # a caller not through the gateway, on a unix socket, say
            message = "money cannot move from a caller whose network address is unknown"
        else:
            message = self.default_message + (
                "" if confirmation_sent else " earlier (no new code was sent)"
            )
        sent = "true" if confirmation_sent else "false"
        super().__init__(message, metadata={"confirmation_sent": sent})


class PaymentReferenceUsedError(AlreadyExistsError):
    reason = "PAYMENT_REFERENCE_USED"
    default_message = "this payment reference was already credited"


class MovementRateLimitedError(RateLimitedError):
    """The user moved money faster than this transfer process lets one user (RetryInfo)."""

    reason = "RATE_LIMITED"
    default_message = "too many money movements, try again shortly"


class SelfTransferError(ValidationError):
    reason = "SELF_TRANSFER"

    def __init__(self) -> None:
        super().__init__(
            [FieldViolation("recipient_wallet_id", "must not be your own wallet")],
            "you cannot send money to your own wallet",
        )


class InvalidAmountError(ValidationError):
    reason = "INVALID_AMOUNT"

    def __init__(self, field: str, description: str) -> None:
        super().__init__([FieldViolation(field, description)])


class LimitExceededError(DomainError):
    """A limit would be passed; the metadata says which and how much is used, in minor units
    (for programs); the message says it as the notifications do (`100,000.00 INR`), for
    people, and repeats the minor units the metadata carries."""

    kind = ErrorKind.RESOURCE_EXHAUSTED

    def __init__(self, action: str, limit_minor: int, used_minor: int, currency: str) -> None:
        remaining = max(0, limit_minor - used_minor)
        limit, used, left = (
            format_amount(amount, currency) for amount in (limit_minor, used_minor, remaining)
        )
        super().__init__(
            f"{self.default_message} ({action}: limit {limit}, used {used}, remaining {left}; "
            f"in minor units: limit {limit_minor}, used {used_minor}, remaining {remaining})",
            metadata={
                "action": action,
                "limit_minor": str(limit_minor),
                "used_minor": str(used_minor),
                "remaining_minor": str(remaining),
                "currency": currency,
            },
        )


class PerTransactionLimitExceededError(LimitExceededError):
    reason = "PER_TRANSACTION_LIMIT_EXCEEDED"
    default_message = "the amount is above the per-transaction limit"


class DailyLimitExceededError(LimitExceededError):
    reason = "DAILY_LIMIT_EXCEEDED"
    default_message = "the amount would pass today's limit"


class MonthlyLimitExceededError(LimitExceededError):
    reason = "MONTHLY_LIMIT_EXCEEDED"
    default_message = "the amount would pass this month's limit"


class CommitOutcomeUnknownError(UnavailableError):
    """The connection was lost while the ledger transaction committed: it may or may not
    have happened. Never a definite failure: the client asks GetTransactionByRequestId or
    retries with the same request_id."""

    reason = "COMMIT_OUTCOME_UNKNOWN"
    default_message = (
        "the outcome is unknown; retry with the same request_id or ask GetTransactionByRequestId"
    )


class WalletUnavailableError(UnavailableError):
    reason = "WALLET_UNAVAILABLE"
    default_message = "the wallet service is unavailable, retry later"


class PassedThroughError(DomainError):
    """A peer's refusal handed on unchanged (code, reason, message, metadata), e.g.
    wallet's INVALID_PIN with its remaining attempts, PIN_LOCKED or PIN_NOT_SET."""

    def __init__(
        self, kind: ErrorKind, reason: str, message: str, metadata: dict[str, str]
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.kind = kind
