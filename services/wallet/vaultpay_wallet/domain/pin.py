"""Transaction PIN rules: format, trivial PINs, the lockout policy and reset tokens.

A 4-digit PIN has only 10,000 values, so guessing is bounded by the lockout, not by the PIN:
3 consecutive wrong PINs freeze the wallet for 24 hours. The most common PINs are refused
outright, since an attacker tries those first: repeats (1111) and runs (1234, 9876), years
1900-2039 (birth years, anniversaries: 1987, 2001), and `_COMMON` (the rest of the 20 most
frequent PINs of DataGenetics' analysis of 3.4 million leaked PINs, 2012, which year, repeat and
run rules do not already cover, and two keypad patterns).

Reset tokens are 256-bit `secrets.token_urlsafe` strings; only their SHA-256 is stored (a
token of that entropy needs no salt or slow hash). A user is mailed at most one a minute
(a request within `PIN_RESET_COOLDOWN` of a usable token answers that token's expiry and
mails nothing) and `PIN_RESET_HOURLY_CAP` an hour (PIN_RESET_RATE_LIMITED beyond).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from vaultpay_common.errors import FieldViolation

__all__ = [
    "MAX_FAILED_PIN_ATTEMPTS",
    "PIN_CHECK_SETTLE_WINDOW",
    "PIN_LOCKOUT_DURATION",
    "PIN_RESET_CAP_WINDOW",
    "PIN_RESET_COOLDOWN",
    "PIN_RESET_HOURLY_CAP",
    "PIN_RESET_TOKEN_TTL",
    "PinRecord",
    "hash_reset_token",
    "is_pin_shaped",
    "new_reset_token",
    "pin_violations",
    "reset_cap_wait",
]

MAX_FAILED_PIN_ATTEMPTS = 3
PIN_LOCKOUT_DURATION = timedelta(hours=24)
# How long a counted check may take to settle (the hash queued behind others under load, two
# short transactions, a retry of the second after a lost connection). While the last attempt
# is younger than this, attempts counted and not settled may belong to checks still running.
PIN_CHECK_SETTLE_WINDOW = timedelta(seconds=30)
PIN_RESET_TOKEN_TTL = timedelta(minutes=15)
# A reset request while a usable token is younger than this mints nothing and mails nothing: it
# answers that token's expiry (a double tap, or a retry with a new request_id, waits for the
# mail on its way instead of killing its code with a newer one).
PIN_RESET_COOLDOWN = timedelta(seconds=60)
# Tokens minted (mails sent) per wallet within PIN_RESET_CAP_WINDOW; one more is refused
# PIN_RESET_RATE_LIMITED. Counted from `pin_reset_tokens` itself, whose rows outlive the window
# (the retention keeps them at least an hour past their 15 minutes).
PIN_RESET_HOURLY_CAP = 5
PIN_RESET_CAP_WINDOW = timedelta(hours=1)

# Years: birth years and dates people pick (1900-2039; 2000 and 2001 are in the top 20).
_YEARS = frozenset(f"{year:04d}" for year in range(1900, 2040))
# DataGenetics, "PIN analysis" (Nick Berry, 2012), 3.4 million leaked 4-digit PINs, top 20:
# 1234 1111 0000 1212 7777 1004 2000 4444 2222 6969 9999 3333 5555 6666 1122 1313 8888 4321
# 2001 1010. Repeats, runs and years cover 14 of them; these are the other six, plus the
# keypad's middle column down and up (2580, 0852).
_COMMON = frozenset({"1212", "1004", "6969", "1122", "1313", "1010", "2580", "0852"})
_DENY_LIST = _YEARS | _COMMON


def _is_run(pin: str, step: int) -> bool:
    digits = [int(c) for c in pin]
    return all(b - a == step for a, b in pairwise(digits))


def _is_guessable(pin: str) -> bool:
    """Whether a 4-digit PIN is among the first an attacker tries (refused as a new PIN)."""
    return len(set(pin)) == 1 or _is_run(pin, 1) or _is_run(pin, -1) or pin in _DENY_LIST


def pin_violations(
    pin: str, confirmation: str | None, *, field: str, allow_guessable: bool = False
) -> list[FieldViolation]:
    """What is wrong with a new PIN (empty when acceptable). Never echoes the PIN.

    `field` names the PIN's request field; the confirmation's is `<field>_confirmation`.
    `allow_guessable` leaves out the trivial-PIN rule (repeats, runs, the deny list), the one
    that changes between releases: the use cases look for a stored reply before they refuse
    a PIN that rule alone refuses (a request that succeeded before the rule grew, retried
    with its request_id after, gets its answer).
    """
    if len(pin) != 4 or not pin.isascii() or not pin.isdigit():
        return [FieldViolation(field, "must be exactly 4 digits")]
    if not allow_guessable and _is_guessable(pin):
        return [FieldViolation(field, "is too easy to guess; avoid repeats, sequences and years")]
    if confirmation is not None and confirmation != pin:
        return [FieldViolation(f"{field}_confirmation", "does not match")]
    return []


def reset_cap_wait(minted: Sequence[datetime], now: datetime) -> int | None:
    """Seconds until one more reset token may be minted, or None when one may be now.

    `minted`: when the wallet's tokens were created, those within PIN_RESET_CAP_WINDOW before
    `now`, in any order. At the cap, the wait ends when enough of them have left the window."""
    recent = sorted(t for t in minted if t > now - PIN_RESET_CAP_WINDOW)
    if len(recent) < PIN_RESET_HOURLY_CAP:
        return None
    frees_at = recent[len(recent) - PIN_RESET_HOURLY_CAP] + PIN_RESET_CAP_WINDOW
    return max(1, math.ceil((frees_at - now).total_seconds()))


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
