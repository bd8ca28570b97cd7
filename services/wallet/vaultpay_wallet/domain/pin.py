"""Transaction PIN rules: format, trivial PINs, the lockout policy and reset tokens.

A 4-digit PIN has only 10,000 values, so guessing is bounded by the lockout, not by the PIN:
3 consecutive wrong PINs freeze the wallet for 24 hours. The most common PINs (repeats and
runs such as 1111, 1234, 9876, and a few famous ones) are refused outright, since an
attacker tries those first.

Reset tokens are 256-bit `secrets.token_urlsafe` strings; only their SHA-256 is stored (a
token of that entropy needs no salt or slow hash).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from vaultpay_common.errors import FieldViolation

__all__ = [
    "MAX_FAILED_PIN_ATTEMPTS",
    "PIN_CHECK_SETTLE_WINDOW",
    "PIN_LOCKOUT_DURATION",
    "PIN_RESET_TOKEN_TTL",
    "PinRecord",
    "hash_reset_token",
    "is_pin_shaped",
    "new_reset_token",
    "pin_violations",
]

MAX_FAILED_PIN_ATTEMPTS = 3
PIN_LOCKOUT_DURATION = timedelta(hours=24)
# How long a counted check may take to settle (the hash queued behind others under load, two
# short transactions, a retry of the second after a lost connection). While the last attempt
# is younger than this, attempts counted and not settled may belong to checks still running.
PIN_CHECK_SETTLE_WINDOW = timedelta(seconds=30)
PIN_RESET_TOKEN_TTL = timedelta(minutes=15)

# Beyond repeats and runs: the PINs most often chosen (year-like and keypad patterns).
_DENY_LIST = frozenset({"1212", "1122", "2580", "0852", "1004", "2000", "6969", "1010"})


def _is_run(pin: str, step: int) -> bool:
    digits = [int(c) for c in pin]
    return all(b - a == step for a, b in pairwise(digits))


def pin_violations(pin: str, confirmation: str | None, *, field: str) -> list[FieldViolation]:
    """What is wrong with a new PIN (empty when acceptable). Never echoes the PIN.

    `field` names the PIN's request field; the confirmation's is `<field>_confirmation`.
    """
    if len(pin) != 4 or not pin.isascii() or not pin.isdigit():
        return [FieldViolation(field, "must be exactly 4 digits")]
    if len(set(pin)) == 1 or _is_run(pin, 1) or _is_run(pin, -1) or pin in _DENY_LIST:
        return [FieldViolation(field, "is too easy to guess; avoid repeats and sequences")]
    if confirmation is not None and confirmation != pin:
        return [FieldViolation(f"{field}_confirmation", "does not match")]
    return []


def is_pin_shaped(pin: str) -> bool:
    """Whether a PIN to check could be a PIN at all (a malformed one is refused as input,
    without counting toward the lockout)."""
    return len(pin) == 4 and pin.isascii() and pin.isdigit()


def new_reset_token() -> str:
    return secrets.token_urlsafe(32)


def hash_reset_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PinRecord:
    """A wallet's PIN state. `failed_attempts` counts consecutive wrong PINs (0 to 3),
    reserved before bcrypt runs so that a crash or a flood of parallel guesses counts too."""

    wallet_id: str
    pin_hash: str
    failed_attempts: int
    updated_at: datetime
    last_attempt_at: datetime | None = None

    @property
    def attempts_left(self) -> int:
        return max(0, MAX_FAILED_PIN_ATTEMPTS - self.failed_attempts)

    def checks_may_be_running(self, now: datetime) -> bool:
        """Every attempt is counted, no lockout was written, and the last one was counted
        recently: checks still running may settle them (a right PIN clears the counter), so
        the caller should retry rather than be told the wallet is locked."""
        return (
            self.failed_attempts >= MAX_FAILED_PIN_ATTEMPTS
            and self.last_attempt_at is not None
            and now < self.last_attempt_at + PIN_CHECK_SETTLE_WINDOW
        )

    @property
    def stale_lock_ends(self) -> datetime | None:
        """When a counter left full with no lockout written starts again (`stale_lock_expired`
        from then on): the end a PIN_LOCKED refusal of it names."""
        return None if self.last_attempt_at is None else self.last_attempt_at + PIN_LOCKOUT_DURATION

    def stale_lock_expired(self, now: datetime) -> bool:
        """All attempts used but no lockout written (the locking attempt died before it
        settled): fail closed, then start again once a lockout would have ended."""
        return (
            self.failed_attempts >= MAX_FAILED_PIN_ATTEMPTS
            and self.last_attempt_at is not None
            and now >= self.last_attempt_at + PIN_LOCKOUT_DURATION
        )
