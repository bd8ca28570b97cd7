"""The notification inbox in PostgreSQL (SQLAlchemy Core), and its NOTIFY fan-out.

`add` inserts and, in the same transaction, raises `NOTIFY wallet_notifications` with the
whole notification as JSON. PostgreSQL delivers a NOTIFY only when its transaction commits,
to every listening session (one per wallet replica, see `notification_hub`), so watchers
hear of exactly the committed notifications, with no separate publish step to forget or
to lose in a crash between commit and publish.

The payload always fits the 8000-byte NOTIFY limit: titles are at most 120 and bodies at
most 1000 characters without control characters (at most ~5 KB of UTF-8 JSON).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Table,
    Text,
    func,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from vaultpay_wallet.adapters.metadata import metadata
from vaultpay_wallet.domain.notifications import Notification, NotificationCursor, NotificationKind

__all__ = [
    "NOTIFY_CHANNEL",
    "SqlNotificationRepository",
    "decode_notify_payload",
    "encode_notify_payload",
    "notifications",
]

NOTIFY_CHANNEL = "wallet_notifications"

notifications = Table(
    "notifications",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("user_id", UUID(as_uuid=False), nullable=False),
    Column("kind", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("read", Boolean, nullable=False, server_default="false"),
    Column("read_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("dedupe_key", Text, nullable=False),
    CheckConstraint("char_length(title) BETWEEN 1 AND 120", name="notifications_title_length"),
    CheckConstraint("char_length(body) <= 1000", name="notifications_body_length"),
    CheckConstraint("char_length(dedupe_key) BETWEEN 1 AND 200", name="notifications_dedupe_key"),
    CheckConstraint(
        "kind IN (" + ", ".join(f"'{kind.name}'" for kind in NotificationKind) + ")",
        name="notifications_kind_valid",
    ),
    Index("notifications_user_dedupe_key", "user_id", "dedupe_key", unique=True),
    Index("notifications_user_created_idx", "user_id", "created_at", "id"),
    Index(
        "notifications_user_unread_idx",
        "user_id",
        "created_at",
        "id",
        postgresql_where=text("NOT read"),
    ),
)

_c = notifications.c


def _note(row: Any) -> Notification:
    return Notification(
        notification_id=row.id,
        user_id=row.user_id,
        kind=NotificationKind[row.kind],
        title=row.title,
        body=row.body,
        read=row.read,
        created_at=row.created_at,
    )


def encode_notify_payload(note: Notification) -> str:
    return json.dumps(
        {
            "id": note.notification_id,
            "user_id": note.user_id,
            "kind": note.kind.name,
            "title": note.title,
            "body": note.body,
            "read": note.read,
            "created_at": note.created_at.isoformat(),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_notify_payload(payload: str) -> Notification:
    """Raises ValueError/KeyError on a payload this release did not write."""
    data = json.loads(payload)
    return Notification(
        notification_id=str(data["id"]),
        user_id=str(data["user_id"]),
        kind=NotificationKind[data["kind"]],
        title=str(data["title"]),
        body=str(data["body"]),
        read=bool(data["read"]),
        created_at=datetime.fromisoformat(data["created_at"]),
    )


class SqlNotificationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, note: Notification, dedupe_key: str) -> tuple[Notification, bool]:
        inserted = (
            await self._conn.execute(
                insert(notifications)
                .values(
                    id=note.notification_id,
                    user_id=note.user_id,
                    kind=note.kind.name,
                    title=note.title,
                    body=note.body,
                    read=note.read,
                    created_at=note.created_at,
                    dedupe_key=dedupe_key,
                )
                # A concurrent insert of the same key waits for the other transaction, then
                # does nothing if it committed: the SELECT below then sees its row.
                .on_conflict_do_nothing(index_elements=[_c.user_id, _c.dedupe_key])
                .returning(_c.id)
            )
        ).first()
        if inserted is None:
            row = (
                await self._conn.execute(
                    select(notifications).where(
                        _c.user_id == note.user_id, _c.dedupe_key == dedupe_key
                    )
                )
            ).one()
            return _note(row), False
        await self._conn.execute(
            select(func.pg_notify(NOTIFY_CHANNEL, encode_notify_payload(note)))
        )
        return note, True

    async def get(self, user_id: str, notification_id: str) -> Notification | None:
        row = (
            await self._conn.execute(
                select(notifications).where(_c.id == notification_id, _c.user_id == user_id)
            )
        ).first()
        return None if row is None else _note(row)

    async def list(
        self, user_id: str, *, unread_only: bool, after: NotificationCursor | None, limit: int
    ) -> Sequence[Notification]:
        query = select(notifications).where(_c.user_id == user_id)
        if unread_only:
            query = query.where(_c.read.is_(False))
        if after is not None:
            position = tuple_(
                literal(after.created_at, _c.created_at.type),
                literal(after.notification_id, _c.id.type),
            )
            query = query.where(tuple_(_c.created_at, _c.id) < position)
        query = query.order_by(_c.created_at.desc(), _c.id.desc()).limit(limit)
        return [_note(row) for row in await self._conn.execute(query)]

    async def count_unread(self, user_id: str) -> int:
        query = (
            select(func.count())
            .select_from(notifications)
            .where(_c.user_id == user_id, _c.read.is_(False))
        )
        return int((await self._conn.execute(query)).scalar_one())

    async def mark_read(self, user_id: str, notification_id: str) -> Notification | None:
        row = (
            await self._conn.execute(
                update(notifications)
                .where(_c.id == notification_id, _c.user_id == user_id)
                .values(read=True, read_at=func.coalesce(_c.read_at, func.now()))
                .returning(*notifications.c)
            )
        ).first()
        return None if row is None else _note(row)

    async def mark_all_read(self, user_id: str) -> int:
        result = await self._conn.execute(
            update(notifications)
            .where(_c.user_id == user_id, _c.read.is_(False))
            .values(read=True, read_at=func.now())
        )
        return int(result.rowcount)
