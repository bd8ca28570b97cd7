"""SQLAlchemy Core repositories and the auth unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, literal, or_, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_auth.adapters.tables import refresh_tokens, sessions, users
from vaultpay_auth.domain.errors import EmailAlreadyRegisteredError
from vaultpay_auth.domain.model import Session, SessionHolder, User
from vaultpay_auth.service_layer.ports import UserFilter
from vaultpay_common.audit import (
    AuditEntry,
    AuditLog,
    AuditQuery,
    AuditRecord,
    list_audit_events,
)
from vaultpay_common.context import Role
from vaultpay_common.db import SqlUnitOfWork

__all__ = ["SqlAuthUnitOfWork", "SqlSessionRepository", "SqlUserRepository"]

# ListUsers' rare filters read partial indexes of their own (auth 0011), which a generic plan of
# the prepared statement may use only if the query states their predicates as literal SQL: the
# bound role is added to, never replaced. Both must stay the indexes' WHEREs word for word.
_STAFF_ROLES = frozenset({Role.MODERATOR, Role.ADMIN, Role.SUPER_ADMIN})
_STAFF_ROLE = text("users.role IN ('MODERATOR', 'ADMIN', 'SUPER_ADMIN')")
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)  # not characters: UTF-8 has no bytes for them


def _prefix_upper(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`, in code point order (the
    "C" collation of UTF-8): `prefix` with its last character incremented, past the surrogates,
    after dropping its trailing U+10FFFF characters, which have no successor. None when every
    character is U+10FFFF: no string above it starts otherwise."""
    while prefix and ord(prefix[-1]) == _MAX_CODE_POINT:
        prefix = prefix[:-1]
    if not prefix:
        return None
    following = ord(prefix[-1]) + 1
    if following in _SURROGATES:
        following = _SURROGATES.stop
    return prefix[:-1] + chr(following)


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        full_name=row.full_name,
        password_hash=row.password_hash,
        role=Role[row.role],
        active=row.active,
        deactivation_reason=row.deactivation_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deactivated_by=row.deactivated_by,
    )


class SqlUserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, user: User) -> None:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    users.insert().values(
                        id=user.id,
                        email=user.email,
                        password_hash=user.password_hash,
                        full_name=user.full_name,
                        role=user.role.name,
                        active=user.active,
                        deactivation_reason=user.deactivation_reason,
                        deactivated_by=user.deactivated_by,
                        created_at=user.created_at,
                        updated_at=user.updated_at,
                    )
                )
        except IntegrityError as exc:
            raise EmailAlreadyRegisteredError() from exc

    async def get(
        self, user_id: str, *, for_update: bool = False, for_key_share: bool = False
    ) -> User | None:
        """`for_update` takes the lock a change of the row takes (FOR NO KEY UPDATE: no
        change of a user touches a key column, `id` or `email`, and no user is deleted): it
        waits for, and holds off, another change of the user (a role change, a deactivation,
        a password change, a sign-in), and nothing else. `for_key_share` (FOR KEY SHARE, what
        a foreign-key check of a session or refresh-token insert takes anyway) holds off only
        a delete or a key change, neither of which happens: it waits for no change of the
        user and holds none off, and reads the latest committed row (a refresh's, under its
        session's lock)."""
        query = select(users).where(users.c.id == user_id)
        if for_update:
            query = query.with_for_update(key_share=True)
        elif for_key_share:
            query = query.with_for_update(read=True, key_share=True)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _user(row)

    async def get_by_email(self, email: str) -> User | None:
        row = (await self._conn.execute(select(users).where(users.c.email == email))).first()
        return None if row is None else _user(row)

    async def update(self, user: User) -> None:
        await self._conn.execute(
            update(users)
            .where(users.c.id == user.id)
            .values(
                full_name=user.full_name,
                role=user.role.name,
                active=user.active,
                deactivation_reason=user.deactivation_reason,
                deactivated_by=user.deactivated_by,
                updated_at=user.updated_at,
            )
        )

    async def set_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        result = await self._conn.execute(
            update(users)
            .where(users.c.id == user_id, users.c.password_hash == old_hash)
            .values(password_hash=new_hash, updated_at=func.now())
        )
        return bool(result.rowcount)

    async def lock_active_super_admins(self) -> list[str]:
        """The active super_admins' ids, in id order, each row locked as a change of it locks
        it (FOR NO KEY UPDATE, as `get(for_update=True)`): two staff actions, or a staff
        action and a super_admin's password change or sign-in, take turns; a super_admin's
        refresh (FOR KEY SHARE) holds none of them back."""
        rows = await self._conn.execute(
            select(users.c.id)
            .where(users.c.role == Role.SUPER_ADMIN.name, users.c.active.is_(True))
            .order_by(users.c.id)
            .with_for_update(key_share=True)
        )
        return [row.id for row in rows]

    async def list(
        self, flt: UserFilter, after: tuple[datetime, str] | None, limit: int
    ) -> Sequence[User]:
        query = select(users)
        if flt.role is not None:
            query = query.where(users.c.role == flt.role.name)
            if flt.role in _STAFF_ROLES:  # the few staff: users_staff_created_idx
                query = query.where(_STAFF_ROLE)
        if flt.active is not None:
            # `NOT active`, which implies users_inactive_created_idx's WHERE (`IS false` does
            # not: the planner would walk every user back to find the few deactivated).
            query = query.where(users.c.active if flt.active else ~users.c.active)
        if flt.email_prefix:
            # The emails that start with the prefix, character for character (what LIKE
            # 'prefix%' matched, its wildcards escaped), are a range of users_email_c_idx in
            # code point order, whatever the database's collation (LIKE, its pattern a bound
            # parameter, used no index).
            prefix = flt.email_prefix.lower()
            email = users.c.email.collate("C")
            query = query.where(email >= prefix)
            upper = _prefix_upper(prefix)
            if upper is not None:
                query = query.where(email < upper)
            # A generic plan cannot see how many emails the range holds (it prices every
            # range as 0.5% of the table) and walks users_created_idx back for a page of
            # them: this transaction plans for the prefix (the range for a rare one, that
            # walk for a common one).
            await self._conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        if after is not None:
            created_at, user_id = after
            position = tuple_(
                literal(created_at, users.c.created_at.type), literal(user_id, users.c.id.type)
            )
            query = query.where(tuple_(users.c.created_at, users.c.id) < position)
        query = query.order_by(users.c.created_at.desc(), users.c.id.desc()).limit(limit)
        return [_user(row) for row in await self._conn.execute(query)]


@dataclass(slots=True)
class _RefreshRecord:
    token_hash: str
    session_id: str
    user_id: str
    expires_at: datetime
    used_at: datetime | None


class SqlSessionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, session: Session) -> None:
        await self._conn.execute(
            sessions.insert().values(
                id=session.id,
                user_id=session.user_id,
                created_at=session.created_at,
                expires_at=session.expires_at,
            )
        )

    async def get(
        self, session_id: str, *, for_share: bool = False, for_update: bool = False
    ) -> Session | None:
        """`for_share` (FOR SHARE) holds off the session's revocation until this transaction
        ends; `for_update` takes the lock the revocation's UPDATE takes (FOR NO KEY UPDATE:
        a refresh token's insert, which key-shares the row, still passes)."""
        query = select(sessions).where(sessions.c.id == session_id)
        if for_update:
            query = query.with_for_update(key_share=True)
        elif for_share:
            query = query.with_for_update(read=True)
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        return Session(row.id, row.user_id, row.created_at, row.expires_at, row.revoked_at)

    async def get_with_holder(self, session_id: str) -> SessionHolder | None:
        query = (
            select(sessions, users.c.role, users.c.active)
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.id == session_id)
        )
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        session = Session(row.id, row.user_id, row.created_at, row.expires_at, row.revoked_at)
        return SessionHolder(session, Role[row.role], row.active)

    async def revoke(self, session_id: str, reason: str) -> bool:
        result = await self._conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC), revoke_reason=reason)
        )
        return bool(result.rowcount)

    async def revoke_all_for_user(self, user_id: str, reason: str, *, except_id: str = "") -> int:
        condition = and_(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
        if except_id:
            condition = and_(condition, or_(sessions.c.id != except_id))
        result = await self._conn.execute(
            update(sessions)
            .where(condition)
            .values(revoked_at=datetime.now(UTC), revoke_reason=reason)
        )
        return int(result.rowcount)

    async def add_refresh_token(
        self, token_hash: str, session_id: str, user_id: str, expires_at: datetime
    ) -> None:
        await self._conn.execute(
            refresh_tokens.insert().values(
                token_hash=token_hash, session_id=session_id, user_id=user_id, expires_at=expires_at
            )
        )

    async def get_refresh_token_for_update(self, token_hash: str) -> _RefreshRecord | None:
        row = (
            await self._conn.execute(
                select(refresh_tokens)
                .where(refresh_tokens.c.token_hash == token_hash)
                .with_for_update()
            )
        ).first()
        if row is None:
            return None
        return _RefreshRecord(
            row.token_hash, row.session_id, row.user_id, row.expires_at, row.used_at
        )

    async def mark_refresh_token_used(self, token_hash: str) -> None:
        await self._conn.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.token_hash == token_hash)
            .values(used_at=datetime.now(UTC))
        )


class SqlAuthUnitOfWork(SqlUnitOfWork):
    users: SqlUserRepository
    sessions: SqlSessionRepository

    def __init__(self, engine: AsyncEngine, audit_key: bytes | None = None) -> None:
        # `audit_key` is no longer needed to append (the sealer chains rows later); accepted
        # so existing callers keep working.
        del audit_key
        super().__init__(engine)
        self._audit_log = AuditLog()

    def _bind(self, conn: AsyncConnection) -> None:
        self.users = SqlUserRepository(conn)
        self.sessions = SqlSessionRepository(conn)

    async def audit(self, entry: AuditEntry) -> None:
        await self._audit_log.append(self.connection, entry)

    async def audit_events(
        self, query: AuditQuery, before_sequence: int | None, limit: int
    ) -> list[AuditRecord]:
        return await list_audit_events(self.connection, query, before_sequence, limit)
