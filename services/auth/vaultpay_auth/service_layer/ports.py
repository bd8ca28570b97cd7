"""What the use cases need from the outside world, as protocols."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from types import TracebackType
from typing import Protocol, Self

from vaultpay_auth.domain.model import Session, SessionHolder, User
from vaultpay_auth.domain.policies import guessability_violations
from vaultpay_auth.domain.revocations import FeedCursor, FeedRead
from vaultpay_common.audit import AuditEntry, AuditQuery, AuditRecord
from vaultpay_common.context import Role
from vaultpay_common.errors import FieldViolation

__all__ = [
    "AccessTokenIssuer",
    "AuditRow",
    "AuthUnitOfWork",
    "HashPriority",
    "LoginThrottle",
    "PasswordEstimator",
    "PasswordHasher",
    "RefreshRecord",
    "RevocationFeedReader",
    "RevocationNotices",
    "SignUpThrottle",
    "UserFilter",
    "estimate_inline",
]


class HashPriority(Enum):
    """Who waits for a password computation: sign-ins (login, password change) go first; a
    sign-up may wait longer and is refused when too many sign-ups wait, so a flood of
    registrations can never starve the people signing in."""

    SIGN_IN = "sign_in"
    SIGN_UP = "sign_up"


class PasswordHasher(Protocol):
    """Raises PasswordHashingBusyError (RESOURCE_EXHAUSTED + RetryInfo) when too many
    computations of the same priority already wait."""

    async def hash(
        self,
        password: str,
        *,
        priority: HashPriority = HashPriority.SIGN_IN,
        admitted: asyncio.Event | None = None,
    ) -> str: ...

    async def verify(
        self,
        password: str,
        password_hash: str,
        *,
        priority: HashPriority = HashPriority.SIGN_IN,
        admitted: asyncio.Event | None = None,
    ) -> bool:
        """`admitted` is set once the check leaves the queue for a worker: from then on its
        hash runs whoever waits for it."""
        ...

    async def first_match(
        self,
        candidates: Sequence[str],
        password_hash: str,
        *,
        priority: HashPriority = HashPriority.SIGN_IN,
        admitted: asyncio.Event | None = None,
    ) -> str | None:
        """The first of `candidates` (spellings of one typed password) that `password_hash`
        was made from, or None: `verify` of each in turn, in one worker's turn."""
        ...

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether `password_hash` was made with other parameters (a cost) than `hash` uses
        now: a sign-in that proved the password then stores a new hash."""
        ...


class PasswordEstimator(Protocol):
    """`domain.policies.guessability_violations`, run where its CPU (up to tens of
    milliseconds for some inputs) does not hold the event loop (adapters/password_estimate)."""

    async def __call__(
        self, password: str, email: str, field: str, *, full_name: str
    ) -> list[FieldViolation]: ...


async def estimate_inline(
    password: str, email: str, field: str, *, full_name: str
) -> list[FieldViolation]:
    """The estimate on the caller's thread: for tests and tools, not for a serving loop."""
    return guessability_violations(password, email, field, full_name=full_name)


class AccessTokenIssuer(Protocol):
    def issue_access_token(
        self, user: User, session_id: str, *, not_after: datetime
    ) -> tuple[str, datetime]:
        """A token of `session_id` that expires at the usual lifetime or at `not_after` (the
        session's end), whichever is first: the revocation feed carries revoked sessions, not
        expired ones, so a token must not outlive its session."""
        ...

    def issue_service_token(self, client_id: str, peer: str) -> tuple[str, datetime]: ...


class LoginThrottle(Protocol):
    async def reserve(self, account: str, client_ip: str) -> None:
        """Counts a password attempt atomically; raises LoginThrottledError when over a limit."""

    async def succeeded(self, account: str, client_ip: str) -> None:
        """The password was right: the attempt does not count against the account."""

    async def release(self, account: str, client_ip: str) -> None:
        """The password was never checked (the service was busy): the attempt does not count."""


class SignUpThrottle(Protocol):
    async def reserve(self, client_ip: str) -> None:
        """Counts a registration attempt per address and for the whole service; raises
        SignUpThrottledError when over a limit."""


class RevocationFeedReader(Protocol):
    async def read(self, cursor: FeedCursor, *, limit: int, look_back: timedelta) -> FeedRead:
        """Up to `limit` revocations after `cursor` recorded within `look_back`, with the
        transaction horizon of the same snapshot."""
        ...


class RevocationNotices(Protocol):
    """Wakes held feed polls when a revocation commits (LISTEN for the revoking trigger's
    NOTIFY). `generation` counts the notices heard; `listening` is False while the link is
    down, when polls are answered at once instead of held."""

    @property
    def listening(self) -> bool: ...

    @property
    def generation(self) -> int: ...

    async def wait_past(self, generation: int) -> None:
        """Returns once a notice after `generation` has been heard or the link is down (at
        once if either is already so)."""
        ...


class RefreshRecord(Protocol):
    token_hash: str
    session_id: str
    user_id: str
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True, slots=True)
class UserFilter:
    """Filters of ListUsers; None means "any"."""

    role: Role | None
    active: bool | None
    email_prefix: str


class AuditRow(Protocol):
    sequence: int


class UserRepository(Protocol):
    async def add(self, user: User) -> None: ...
    async def get(
        self, user_id: str, *, for_update: bool = False, for_key_share: bool = False
    ) -> User | None: ...
    async def get_by_email(self, email: str) -> User | None: ...
    async def update(self, user: User) -> None: ...
    async def set_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool: ...
    async def lock_active_super_admins(self) -> list[str]: ...
    async def list(
        self, flt: UserFilter, after: tuple[datetime, str] | None, limit: int
    ) -> Sequence[User]: ...


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...
    async def get(
        self, session_id: str, *, for_share: bool = False, for_update: bool = False
    ) -> Session | None: ...
    async def get_with_holder(self, session_id: str) -> SessionHolder | None: ...
    async def revoke(self, session_id: str, reason: str) -> bool: ...
    async def revoke_all_for_user(
        self, user_id: str, reason: str, *, except_id: str = ""
    ) -> int: ...
    async def add_refresh_token(
        self, token_hash: str, session_id: str, user_id: str, expires_at: datetime
    ) -> None: ...
    async def get_refresh_token_for_update(self, token_hash: str) -> RefreshRecord | None: ...
    async def mark_refresh_token_used(self, token_hash: str) -> None: ...


class AuthUnitOfWork(Protocol):
    @property
    def users(self) -> UserRepository: ...
    @property
    def sessions(self) -> SessionRepository: ...

    async def audit(self, entry: AuditEntry) -> None: ...
    async def audit_events(
        self, query: AuditQuery, before_sequence: int | None, limit: int
    ) -> list[AuditRecord]: ...
    async def commit(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
