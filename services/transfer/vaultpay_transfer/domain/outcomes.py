"""What the ledger functions answer, and the error each refusal becomes.

A ledger call returns an outcome code: OK (the movement committed), REPLAY (the stored
answer of an earlier identical request) or a refusal, decided before anything was written.

    refusal_error("DAILY_LIMIT_EXCEEDED", {"action": "send", "limit_minor": "100", ...}, now=now)

A daily or monthly limit tells when to retry (`retry_after_seconds`, which becomes RetryInfo
and the gateway's Retry-After): when its window resets, unless the movement would still be
refused then. The month keeps today's usage after the day resets, so a daily refusal whose
movement the month's limit would refuse too (the ledger tells the month's figures with it)
says the month's end; an amount above a window's whole limit says nothing, like a
per-transaction limit, which waiting never clears.

The window is the one the ledger decided in: its refusal tells the database's time of the
decision (`decided_at`, transfer t0016), and the wait counts from it, so neither a reply that
crosses midnight on its way nor a service clock that differs from the database's moves the
refusal into another window. A function older than t0016 tells no time: the service's clock
(`now`) stands in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from vaultpay_common.errors import DomainError
from vaultpay_common.idempotency import IdempotencyKeyInUseError, IdempotencyKeyReusedError
from vaultpay_transfer.domain.errors import (
    CurrencyMismatchError,
    DailyLimitExceededError,
    InsufficientBalanceError,
    KycNotVerifiedError,
    LimitExceededError,
    MonthlyLimitExceededError,
    PaymentReferenceUsedError,
    PerTransactionLimitExceededError,
    PinLockedError,
    RecipientNotFoundError,
    SelfTransferError,
    WalletClosedError,
    WalletFrozenError,
    WalletNotFoundError,
)
from vaultpay_transfer.domain.model import Transaction
from vaultpay_transfer.domain.windows import seconds_until, window_end

__all__ = ["ACCEPTED", "LedgerOutcome", "Movement", "refusal_error"]

ACCEPTED = frozenset({"OK", "REPLAY"})


@dataclass(frozen=True, slots=True)
class LedgerOutcome:
    code: str
    transaction: Transaction | None = None
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.code in ACCEPTED


def _limit(cls: type[LimitExceededError]) -> Callable[[Mapping[str, str]], DomainError]:
    def build(details: Mapping[str, str]) -> DomainError:
        return cls(
            details.get("action", ""),
            int(details.get("limit_minor", "0")),
            int(details.get("used_minor", "0")),
            details.get("currency", ""),
        )

    return build


Movement = Literal["send", "top_up", "withdraw"]
_MOVEMENT_NAMES: dict[Movement, str] = {
    "send": "a send",
    "top_up": "a top-up",
    "withdraw": "a withdrawal",
}


def _mismatch(
    details: Mapping[str, str], movement: Movement | None, requested: str | None
) -> DomainError:
    """CURRENCY_MISMATCH names what mismatched. The ledger tells only the sender's currency;
    the requested one tells the rest: another currency than the wallet's is the amount's
    fault (any movement); on a send in the wallet's own currency, the recipient's wallet is.
    One message for all used to mention a send's recipient on a TopUp or Withdraw too (QA).
    Metadata `mismatch` says which (`amount` or `recipient`), when known."""
    currency = details.get("currency", "")
    if not currency:
        return CurrencyMismatchError()
    metadata = {"currency": currency}
    what = _MOVEMENT_NAMES[movement] if movement is not None else "the movement"
    if requested is not None and requested != currency:
        metadata["mismatch"] = "amount"
        message = (
            f"your wallet holds {currency}: the amount of {what} must be in {currency},"
            f" not {requested}"
        )
    elif movement == "send" and requested is not None:
        metadata["mismatch"] = "recipient"
        message = (
            f"the recipient's wallet holds another currency than yours ({currency}):"
            f" money can be sent only to a wallet in {currency}"
        )
    else:  # not told what was asked: both possibilities
        message = f"your wallet holds {currency}: {what} must be in {currency}"
        if movement in (None, "send"):
            message += ", and to a wallet in it"
    return CurrencyMismatchError(message, metadata=metadata)


_REFUSALS: dict[str, Callable[[Mapping[str, str]], DomainError]] = {
    "IDEMPOTENCY_KEY_IN_USE": lambda _: IdempotencyKeyInUseError(),
    "IDEMPOTENCY_KEY_REUSED": lambda _: IdempotencyKeyReusedError(),
    "WALLET_NOT_FOUND": lambda _: WalletNotFoundError(),
    "RECIPIENT_NOT_FOUND": lambda _: RecipientNotFoundError(),
    "SELF_TRANSFER": lambda _: SelfTransferError(),
    # The freeze that holds the wallet, when the ledger adapter could read it (details
    # `freeze_reason` and `until`, as wallet's PIN check tells them); bare otherwise.
    "WALLET_FROZEN": lambda details: WalletFrozenError.held_by(
        details.get("freeze_reason", ""), details.get("until", "")
    ),
    "WALLET_CLOSED": lambda _: WalletClosedError(),
    "RECIPIENT_CLOSED": lambda _: WalletClosedError(
        "the recipient's wallet is closed", metadata={"side": "recipient"}
    ),
    "CURRENCY_MISMATCH": lambda details: _mismatch(details, None, None),
    "KYC_NOT_VERIFIED": lambda _: KycNotVerifiedError(),
    "INSUFFICIENT_BALANCE": lambda _: InsufficientBalanceError(),
    "PAYMENT_REFERENCE_USED": lambda _: PaymentReferenceUsedError(),
    "PER_TRANSACTION_LIMIT_EXCEEDED": _limit(PerTransactionLimitExceededError),
    "DAILY_LIMIT_EXCEEDED": _limit(DailyLimitExceededError),
    "MONTHLY_LIMIT_EXCEEDED": _limit(MonthlyLimitExceededError),
}


_WINDOWS: dict[str, Literal["daily", "monthly"]] = {
    "DAILY_LIMIT_EXCEEDED": "daily",
    "MONTHLY_LIMIT_EXCEEDED": "monthly",
}


def refusal_error(
    code: str,
    details: Mapping[str, str],
    *,
    now: datetime,
    amount_minor: int | None = None,
    movement: Movement | None = None,
    currency: str | None = None,
) -> DomainError:
    """The domain error of a refusal code; an unknown code is a bug (RuntimeError).
    `amount_minor`, the movement's amount: the refusal says when to retry only when a reset
    lets it through (see the module docstring). `movement` and `currency` (the amount's, as
    requested) let CURRENCY_MISMATCH say what mismatched. `now`, the service's clock, times a
    limit's window only when the refusal does not tell when the ledger decided it."""
    build = _REFUSALS.get(code)
    if build is None:
        raise RuntimeError(f"the ledger answered an unknown outcome {code!r}")
    if code == "CURRENCY_MISMATCH":
        error = _mismatch(details, movement, currency)
    elif code == "WALLET_FROZEN" and _locked_out_after_its_check(details, movement):
        error = PinLockedError(details.get("until", ""))
    else:
        error = build(details)
    window = _WINDOWS.get(code)
    if window is not None:
        reset = _reset_that_helps(window, details, amount_minor)
        if reset is not None:
            decided_at = _decided_at(details, now)
            error.retry_after_seconds = seconds_until(window_end(reset, decided_at), decided_at)
    return error


def _locked_out_after_its_check(details: Mapping[str, str], movement: Movement | None) -> bool:
    """A send's or withdrawal's PIN passed wallet's check, then a lockout froze the wallet
    before the ledger call: said as that check would now say it (a TopUp, without a PIN
    check, is told the freeze)."""
    return movement in ("send", "withdraw") and (
        details.get("freeze_reason") == "FREEZE_REASON_PIN_LOCKOUT"
    )


def _decided_at(details: Mapping[str, str], now: datetime) -> datetime:
    """The ledger's time of the decision (ISO 8601 with its offset), else `now`: an older
    function tells none, and a time without an offset would be read in the host's zone."""
    told = details.get("decided_at")
    if not told:
        return now
    try:
        decided_at = datetime.fromisoformat(told)
    except ValueError:
        return now
    return decided_at if decided_at.tzinfo is not None else now


def _minor(details: Mapping[str, str], key: str) -> int | None:
    value = details.get(key)
    return int(value) if value else None


def _reset_that_helps(
    window: Literal["daily", "monthly"], details: Mapping[str, str], amount_minor: int | None
) -> Literal["daily", "monthly"] | None:
    """The first window whose reset lets the movement through, None when none does. Without
    the amount, the refused window's own reset."""
    if amount_minor is None:
        return window
    if amount_minor > (_minor(details, "limit_minor") or 0):
        return None
    monthly_limit = _minor(details, "monthly_limit_minor")
    if window == "daily" and monthly_limit is not None:
        monthly_used = _minor(details, "monthly_used_minor") or 0
        if monthly_used + amount_minor > monthly_limit:
            # Tomorrow the month still holds today's usage; at its end both windows start over.
            return "monthly" if amount_minor <= monthly_limit else None
    return window
