"""Trusted addresses and pending IP confirmations in PostgreSQL (SQLAlchemy Core).

Neither table holds an address or a token: `ip_hash` is the keyed HMAC of the address and
`token_hash` the SHA-256 of the mailed token.

`ip_confirmations` keeps one row per (user, address): the pending confirmation. Issuing a new
one is one upsert that replaces the row only when its mail window has passed (or its token
was used), so two concurrent checks from a new address mail once: the second waits on the
first's row lock and then finds the window taken.

`awaits_confirmation`, the mail delivery's look before it mails a code, is one statement:
the token's row by `ip_confirmations_token_key` (unique) and, for it, the pair's
`trusted_ips` row by `trusted_ips_pkey`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    PrimaryKeyConstraint,
    Table,
    Text,
    delete,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from vaultpay_wallet.adapters.metadata import metadata
from vaultpay_wallet.domain.ip_trust import (
    IP_HASH_PREFIX_LENGTH,
    IpConfirmation,
    TrustedIp,
    TrustedIpCursor,
)

__all__ = [
    "SqlIpConfirmationRepository",
    "SqlTrustedIpRepository",
    "ip_confirmations",
    "trusted_ips",
]

trusted_ips = Table(
    "trusted_ips",
    metadata,
    Column("user_id", UUID(as_uuid=False), nullable=False),
    Column("ip_hash", Text, nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("user_id", "ip_hash", name="trusted_ips_pkey"),
    CheckConstraint("ip_hash ~ '^[0-9a-f]{64}$'", name="trusted_ips_hash_hex"),
    Index("trusted_ips_user_seen_idx", "user_id", "last_seen_at", "ip_hash"),
    Index("trusted_ips_expires_idx", "expires_at"),  # the retention's (w0009)
)

ip_confirmations = Table(
    "ip_confirmations",
    metadata,
    Column("user_id", UUID(as_uuid=False), nullable=False),
    Column("ip_hash", Text, nullable=False),
    Column("token_hash", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("user_id", "ip_hash", name="ip_confirmations_pkey"),
    CheckConstraint("ip_hash ~ '^[0-9a-f]{64}$'", name="ip_confirmations_hash_hex"),
    Index("ip_confirmations_token_key", "token_hash", unique=True),
    Index("ip_confirmations_expires_idx", "expires_at"),  # the retention's (w0009)
)

_t = trusted_ips.c
_p = ip_confirmations.c


def _trusted(row: Any) -> TrustedIp:
    return TrustedIp(
        user_id=row.user_id,
        ip_hash=row.ip_hash,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        expires_at=row.expires_at,
    )


def _confirmation(row: Any) -> IpConfirmation:
    return IpConfirmation(
        user_id=row.user_id,
        ip_hash=row.ip_hash,
        token_hash=row.token_hash,
        request_id=row.request_id,
        sent_at=row.sent_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )


class SqlTrustedIpRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, user_id: str, ip_hash: str) -> TrustedIp | None:
        row = (
            await self._conn.execute(
                select(trusted_ips).where(_t.user_id == user_id, _t.ip_hash == ip_hash)
            )
        ).first()
        return None if row is None else _trusted(row)

    async def save(self, trusted: TrustedIp) -> None:
        stmt = insert(trusted_ips).values(
            user_id=trusted.user_id,
            ip_hash=trusted.ip_hash,
            first_seen_at=trusted.first_seen_at,
            last_seen_at=trusted.last_seen_at,
            expires_at=trusted.expires_at,
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(
                constraint="trusted_ips_pkey",
                set_={
                    "first_seen_at": stmt.excluded.first_seen_at,
                    "last_seen_at": stmt.excluded.last_seen_at,
                    "expires_at": stmt.excluded.expires_at,
                },
            )
        )

    async def touch(self, user_id: str, ip_hash: str, at: datetime) -> None:
        await self._conn.execute(
            update(trusted_ips)
            .where(_t.user_id == user_id, _t.ip_hash == ip_hash, _t.last_seen_at < at)
            .values(last_seen_at=at)
        )

    async def list(
        self, user_id: str, *, now: datetime, after: TrustedIpCursor | None, limit: int
    ) -> Sequence[TrustedIp]:
        query = select(trusted_ips).where(_t.user_id == user_id, _t.expires_at > now)
        if after is not None:
            position = tuple_(
                literal(after.first_seen_at, _t.first_seen_at.type),
                literal(after.public_hash, _t.ip_hash.type),
            )
            query = query.where(tuple_(_t.first_seen_at, _t.ip_hash) < position)
        query = query.order_by(_t.first_seen_at.desc(), _t.ip_hash.desc()).limit(limit)
        return [_trusted(row) for row in await self._conn.execute(query)]

    async def delete_by_public_hash(self, user_id: str, public_hash: str) -> TrustedIp | None:
        row = (
            await self._conn.execute(
                delete(trusted_ips)
                .where(
                    _t.user_id == user_id,
                    func.left(_t.ip_hash, IP_HASH_PREFIX_LENGTH) == public_hash,
                )
                .returning(*trusted_ips.c)
            )
        ).first()
        return None if row is None else _trusted(row)


class SqlIpConfirmationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def issue(self, pending: IpConfirmation, *, window_start: datetime) -> IpConfirmation:
        stmt = insert(ip_confirmations).values(
            user_id=pending.user_id,
            ip_hash=pending.ip_hash,
            token_hash=pending.token_hash,
            request_id=pending.request_id,
            sent_at=pending.sent_at,
            expires_at=pending.expires_at,
            used_at=None,
        )
        stored = (
            await self._conn.execute(
                stmt.on_conflict_do_update(
                    constraint="ip_confirmations_pkey",
                    set_={
                        "token_hash": stmt.excluded.token_hash,
                        "request_id": stmt.excluded.request_id,
                        "sent_at": stmt.excluded.sent_at,
                        "expires_at": stmt.excluded.expires_at,
                        "used_at": None,
                    },
                    where=or_(_p.sent_at <= window_start, _p.used_at.is_not(None)),
                ).returning(_p.token_hash)
            )
        ).first()
        if stored is not None:
            return pending
        row = (
            await self._conn.execute(
                select(ip_confirmations).where(
                    _p.user_id == pending.user_id, _p.ip_hash == pending.ip_hash
                )
            )
        ).one()
        return _confirmation(row)

    async def get_for_update(self, token_hash: str) -> IpConfirmation | None:
        row = (
            await self._conn.execute(
                select(ip_confirmations).where(_p.token_hash == token_hash).with_for_update()
            )
        ).first()
        return None if row is None else _confirmation(row)

    async def mark_used(self, token_hash: str, at: datetime) -> None:
        await self._conn.execute(
            update(ip_confirmations).where(_p.token_hash == token_hash).values(used_at=at)
        )

    async def discard(self, user_id: str, ip_hash: str) -> None:
        await self._conn.execute(
            delete(ip_confirmations).where(_p.user_id == user_id, _p.ip_hash == ip_hash)
        )

    async def awaits_confirmation(self, token_hash: str, now: datetime) -> bool:
        trusted = (
            select(_t.user_id)
            .where(_t.user_id == _p.user_id, _t.ip_hash == _p.ip_hash, _t.expires_at > now)
            .exists()
        )
        found = await self._conn.scalar(
            select(_p.token_hash).where(
                _p.token_hash == token_hash, _p.used_at.is_(None), _p.expires_at > now, ~trusted
            )
        )
        return found is not None
