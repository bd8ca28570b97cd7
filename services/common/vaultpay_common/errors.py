"""Domain error base classes. Services subclass these; one interceptor maps them to gRPC.

Each class fixes the *kind* of failure (which becomes the gRPC status code) and each
instance carries a stable UPPER_SNAKE `reason` that clients switch on. Domain code raises
them without knowing about gRPC:

    class InsufficientBalanceError(FailedPreconditionError):
        reason = "INSUFFICIENT_BALANCE"
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

__all__ = [
    "MAX_VIOLATIONS",
    "AbortedError",
    "AlreadyExistsError",
    "DeadlineExceededError",
    "DomainError",
    "ErrorKind",
    "FailedPreconditionError",
    "FieldViolation",
    "InsufficientPermissionsError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationError",
    "metadata_time",
    "wallet_frozen_refusal",
]


class ErrorKind(Enum):
    """The family of a failure, named after google/rpc/code.proto."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


def metadata_time(moment: datetime) -> str:
    """A time as an error's metadata and message carry it: RFC 3339 in UTC with `Z`, the
    form proto3 JSON gives every Timestamp of the API (fractions of 0, 3 or 6 digits), so a
    client parses the `until` of PIN_LOCKED as it parses any `createdAt`. A naive datetime is
    local time, as `astimezone` reads it.

    >>> metadata_time(datetime(2026, 12, 5, 10, 11, 8, 247530, tzinfo=UTC))
    '2026-12-05T10:11:08.247530Z'
    """
    utc = moment.astimezone(UTC)
    seconds = utc.replace(tzinfo=None).isoformat(timespec="seconds")
    micros = utc.microsecond
    if micros == 0:
        return f"{seconds}Z"
    if micros % 1000 == 0:
        return f"{seconds}.{micros // 1000:03d}Z"
    return f"{seconds}.{micros:06d}Z"


def wallet_frozen_refusal(source: str, until: str = "") -> tuple[str, dict[str, str]]:
    """The message and metadata of a money movement's WALLET_FROZEN, one wording whichever
    service refuses it (wallet's PIN check, transfer's ledger). `source`: the freeze that holds
    the wallet, "SELF", "ADMIN" or (a TopUp into a locked wallet) "PIN_LOCKOUT" (wallet's
    FreezeSource values); `until`: its end as
    `metadata_time` gives it, "" for a freeze without one. The message says who can lift it;
    metadata `freeze_reason` is FREEZE_REASON_<source> (the enum names GetWallet shows), and
    `until` is there only for a freeze with an end.

    >>> wallet_frozen_refusal("SELF")
    ('you froze this wallet; unfreeze it to move money', {'freeze_reason': 'FREEZE_REASON_SELF'})
    """
    ends = f" until {until}" if until else ""
    if source == "SELF":
        message = f"you froze this wallet{ends}; unfreeze it to move money"
    elif source == "PIN_LOCKOUT":
        message = f"the wallet is locked after wrong PINs{ends}: reset the PIN or wait"
    else:
        message = f"the wallet is frozen by staff{ends}, which only staff can lift"
    metadata = {"freeze_reason": f"FREEZE_REASON_{source}"}
    if until:
        metadata["until"] = until
    return message, metadata


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field, by its proto field path (e.g. "email")."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every expected failure. Subclasses set `kind` and a default `reason`."""

    kind: ErrorKind = ErrorKind.FAILED_PRECONDITION
    reason: str = "FAILED_PRECONDITION"
    default_message: str = "the request cannot be carried out"
    # When waiting helps: seconds until a retry can succeed (a RetryInfo detail, which the
    # gateway turns into Retry-After).
    retry_after_seconds: int | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        if reason is not None:
            self.reason = reason
        self.metadata = metadata or {}


# The most violations one error carries: a request can hold millions of bad values (a repeated
# field), and every violation travels in the reply's trailers, which clients cap at a few KiB.
MAX_VIOLATIONS = 20


class ValidationError(DomainError):
    """Invalid input; carries every offending field so clients can show them all at once (the
    first MAX_VIOLATIONS of them; the message says when there were more)."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"
    default_message = "the request has invalid fields"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        shown = violations[:MAX_VIOLATIONS]
        summary = "; ".join(f"{v.field}: {v.description}" for v in shown)
        if len(violations) > len(shown):
            summary += "; and more"  # a check may stop counting once it has found enough
        super().__init__(message or f"invalid request: {summary}")
        self.violations = shown

    @classmethod
    def single(cls, field: str, description: str) -> ValidationError:
        return cls([FieldViolation(field, description)])

    def within(self, parent: str) -> ValidationError:
        """The same violations, of fields inside the message field `parent` (a check written
        for a request's top level, applied to a message nested in it)."""
        return ValidationError(
            [FieldViolation(f"{parent}.{v.field}", v.description) for v in self.violations]
        )


class NotFoundError(DomainError):
    kind = ErrorKind.NOT_FOUND
    reason = "NOT_FOUND"
    default_message = "not found"


class AlreadyExistsError(DomainError):
    kind = ErrorKind.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"
    default_message = "already exists"


class FailedPreconditionError(DomainError):
    kind = ErrorKind.FAILED_PRECONDITION


class PermissionDeniedError(DomainError):
    kind = ErrorKind.PERMISSION_DENIED
    reason = "INSUFFICIENT_PERMISSIONS"
    default_message = "the caller may not do this"


class InsufficientPermissionsError(PermissionDeniedError):
    """The caller's role is below what the action needs (reason INSUFFICIENT_PERMISSIONS)."""


class UnauthenticatedError(DomainError):
    kind = ErrorKind.UNAUTHENTICATED
    reason = "TOKEN_INVALID"
    default_message = "missing or invalid credentials"


class RateLimitedError(DomainError):
    """Too many attempts; `retry_after_seconds` becomes a RetryInfo detail."""

    kind = ErrorKind.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"
    default_message = "too many requests, try again later"
    retry_after_seconds: int

    def __init__(self, retry_after_seconds: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class AbortedError(DomainError):
    kind = ErrorKind.ABORTED
    reason = "ABORTED"
    default_message = "the request conflicted with another one, retry it"


class UnavailableError(DomainError):
    kind = ErrorKind.UNAVAILABLE
    reason = "UNAVAILABLE"
    default_message = "a dependency is unavailable, retry later"


class DeadlineExceededError(DomainError):
    kind = ErrorKind.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"
    default_message = "the request took longer than its deadline allows"
