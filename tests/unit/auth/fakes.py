"""In-memory fakes of auth's ports, for unit tests of the account and staff use cases.

Repositories keep their state in plain public attributes, so `FakeUnitOfWork` snapshots and
restores them (and the audit entries): what a block did not commit is provably gone.

    world = AuthWorld()
    await world.accounts.register("ada@example.com", PASSWORD, "Ada", "192.0.2.1")
    assert world.hasher.calls == [("hash", "sign_up")]
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from tests.fakes.uow import FakeUnitOfWork
from vaultpay_auth.domain.errors import EmailAlreadyRegisteredError, PasswordHashingBusyError
from vaultpay_auth.domain.model import Session, SessionHolder, User
from vaultpay_auth.service_layer.ports import HashPriority, UserFilter
from vaultpay_common.audit import AuditEntry, AuditQuery, AuditRecord
from vaultpay_common.context import Role
from vaultpay_common.errors import RateLimitedError

__all__ = [
    "PASSWORD",
    "CountingHasher",
    "FakeAuthUnitOfWork",
    "FakeIssuer",
    "FakeLoginThrottle",
    "FakeSessionRepository",
    "FakeSignUpThrottle",
    "FakeUserRepository",
    "make_user",
]

PASSWORD = "correct horse 42 battery"
EPOCH = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)


def make_user(email: str, password: str = PASSWORD, *, role: Role = Role.USER) -> User:
    """A stored user whose (fake) hash matches `password`."""
    return User(
        id=str(uuid.uuid4()),
        email=email,
        full_name="Test User",
        password_hash=f"hashed:{password}",
        role=role,
        active=True,
        deactivation_reason="",
        created_at=EPOCH,
        updated_at=EPOCH,
    )


class CountingHasher:
    """A hasher that records every call and its priority. Its hashes read
    "hashed<cost>:<password>"; `cost` is what `hash` makes now ("" by default, so
    "hashed:<password>"), and `verify` accepts a hash of any cost, as bcrypt does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.busy: PasswordHashingBusyError | None = None  # raised instead of computing
        self.cost = ""

    async def hash(
        self,
        password: str,
        *,
        priority: HashPriority = HashPriority.SIGN_IN,
        admitted: asyncio.Event | None = None,
    ) -> str:
        if self.busy is not None:
            raise self.busy
        if admitted is not None:
            admitted.set()
        self.calls.append(("hash", priority.value))
        return f"hashed{self.cost}:{password}"

    async def verify(
        self,
        password: str,
        password_hash: str,
        *,
        priority: HashPriority = HashPriority.SIGN_IN,
        admitted: asyncio.Event | None = None,
    ) -> bool:
        if self.busy is not None:
            raise self.busy
        if admitted is not None:
            admitted.set()  # no queue here: admitted at once
        self.calls.append(("verify", priority.value))
        made, _, hashed = password_hash.partition(":")
        return made.startswith("hashed") and hashed == password

    async def first_match(
        self,
        candidates: Sequence[str],
        password_hash: str,
        *,
        priority: HashPriority = HashPriority.SIGN_IN,
        admitted: asyncio.Event | None = None,
    ) -> str | None:
        """One turn for all candidates, each check recorded as a "verify" call."""
        if self.busy is not None:
            raise self.busy
        if admitted is not None:
            admitted.set()
        for candidate in candidates:
            self.calls.append(("verify", priority.value))
            made, _, hashed = password_hash.partition(":")
            if made.startswith("hashed") and hashed == candidate:
                return candidate
        return None

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(f"hashed{self.cost}:")

    @property
    def hashes(self) -> int:
        return sum(1 for kind, _ in self.calls if kind == "hash")


class FakeIssuer:
    def issue_access_token(
        self, user: User, session_id: str, *, not_after: datetime
    ) -> tuple[str, datetime]:
        return f"access:{user.id}:{session_id}", min(EPOCH + timedelta(minutes=15), not_after)

    def issue_service_token(self, client_id: str, peer: str) -> tuple[str, datetime]:
        return f"service:{client_id}:{peer}", EPOCH + timedelta(minutes=10)


class FakeLoginThrottle:
    """Refuses with `refusal` when set; records reservations, successes and releases."""

    def __init__(self) -> None:
        self.refusal: RateLimitedError | None = None
        self.reserved: list[tuple[str, str]] = []
        self.succeeded_for: list[tuple[str, str]] = []
        self.released: list[tuple[str, str]] = []

    async def reserve(self, account: str, client_ip: str) -> None:
        if self.refusal is not None:
            raise self.refusal
        self.reserved.append((account, client_ip))

    async def succeeded(self, account: str, client_ip: str) -> None:
        self.succeeded_for.append((account, client_ip))

    async def release(self, account: str, client_ip: str) -> None:
        self.released.append((account, client_ip))


class FakeSignUpThrottle:
    def __init__(self) -> None:
        self.refusal: RateLimitedError | None = None
        self.reserved: list[str] = []

    async def reserve(self, client_ip: str) -> None:
        if self.refusal is not None:
            raise self.refusal
        self.reserved.append(client_ip)


class FakeUserRepository:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self._email_lookups = 0  # private: a rollback must not reset the count

    @property
    def email_lookups(self) -> int:
        return self._email_lookups

    async def add(self, user: User) -> None:
        if any(u.email == user.email for u in self.users.values()):
            raise EmailAlreadyRegisteredError()
        self.users[user.id] = dataclasses.replace(user)

    async def get(
        self, user_id: str, *, for_update: bool = False, for_key_share: bool = False
    ) -> User | None:
        found = self.users.get(user_id)
        return None if found is None else dataclasses.replace(found)

    async def get_by_email(self, email: str) -> User | None:
        self._email_lookups += 1
        for user in self.users.values():
            if user.email == email:
                return dataclasses.replace(user)
        return None

    async def update(self, user: User) -> None:
        self.users[user.id] = dataclasses.replace(user)

    async def set_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        user = self.users.get(user_id)
        if user is None or user.password_hash != old_hash:
            return False
        user.password_hash = new_hash
        return True

    async def lock_active_super_admins(self) -> list[str]:
        return sorted(u.id for u in self.users.values() if u.role is Role.SUPER_ADMIN and u.active)

    async def list(
        self, flt: UserFilter, after: tuple[datetime, str] | None, limit: int
    ) -> Sequence[User]:
        chosen = [
            u
            for u in self.users.values()
            if (flt.role is None or u.role is flt.role)
            and (flt.active is None or u.active is flt.active)
            and u.email.startswith(flt.email_prefix)
        ]
        chosen.sort(key=lambda u: (u.created_at, u.id), reverse=True)
        if after is not None:
            chosen = [u for u in chosen if (u.created_at, u.id) < after]
        return [dataclasses.replace(u) for u in chosen[:limit]]


@dataclasses.dataclass
class _Refresh:
    token_hash: str
    session_id: str
    user_id: str
    expires_at: datetime
    used_at: datetime | None = None


class FakeSessionRepository:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.revoked: dict[str, str] = {}
        self.refresh_tokens: dict[str, _Refresh] = {}

    async def add(self, session: Session) -> None:
        self.sessions[session.id] = session

    async def get(
        self, session_id: str, *, for_share: bool = False, for_update: bool = False
    ) -> Session | None:
        return self.sessions.get(session_id)

    async def get_with_holder(self, session_id: str) -> SessionHolder | None:
        raise NotImplementedError

    async def revoke(self, session_id: str, reason: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None or session.revoked_at is not None:
            return False
        self.sessions[session_id] = dataclasses.replace(session, revoked_at=EPOCH)
        self.revoked[session_id] = reason
        return True

    async def revoke_all_for_user(self, user_id: str, reason: str, *, except_id: str = "") -> int:
        ids = [
            s.id
            for s in self.sessions.values()
            if s.user_id == user_id and s.revoked_at is None and s.id != except_id
        ]
        for session_id in ids:
            await self.revoke(session_id, reason)
        return len(ids)

    async def add_refresh_token(
        self, token_hash: str, session_id: str, user_id: str, expires_at: datetime
    ) -> None:
        self.refresh_tokens[token_hash] = _Refresh(token_hash, session_id, user_id, expires_at)

    async def get_refresh_token_for_update(self, token_hash: str) -> _Refresh | None:
        return self.refresh_tokens.get(token_hash)

    async def mark_refresh_token_used(self, token_hash: str) -> None:
        self.refresh_tokens[token_hash].used_at = EPOCH


class FakeAuthUnitOfWork(FakeUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self.users = FakeUserRepository()
        self.sessions = FakeSessionRepository()
        # The rows the audit log lists (a test stores them; `audit` does not add to them).
        self.records: list[AuditRecord] = []

    def _state_holders(self) -> list[object]:
        return [self.users, self.sessions]

    async def audit_events(
        self, query: AuditQuery, before_sequence: int | None, limit: int
    ) -> list[AuditRecord]:
        """`records` newest first, by action and target (the filters the tests use)."""
        chosen = [
            r
            for r in sorted(self.records, key=lambda r: r.sequence, reverse=True)
            if (not query.action or r.action == query.action)
            and (not query.target_id or r.target_id == query.target_id)
            and (before_sequence is None or r.sequence < before_sequence)
        ]
        return chosen[:limit]

    def committed_actions(self) -> list[str]:
        return [e.action for e in self.audit_entries]

    def entries(self, action: str) -> list[AuditEntry]:
        return [e for e in self.audit_entries if e.action == action]
