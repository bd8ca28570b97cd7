"""The notification inbox in PostgreSQL (SQLAlchemy Core), and its NOTIFY fan-out.

`add` inserts and, in the same transaction, raises `NOTIFY wallet_notifications` with the
notification's id and user id. PostgreSQL delivers a NOTIFY only when its transaction
commits, to every listening session (one per wallet replica, see `notification_hub`), so
watchers hear of exactly the committed notifications, with no separate publish step to forget
or to lose in a crash between commit and publish.

The payload names the notification and carries none of it: PostgreSQL checks no privilege
on LISTEN or NOTIFY, so any role that can connect to the shared database (transfer's, kyc's)
can listen on the channel and notify on it. The listener reads what it delivers from the
table, which only wallet's role can read (`LIVE_READ`), and delivers nothing the table does
not hold for that user: a listening role learns ids, a notifying one cannot put words on a
user's stream.

`add_many` does the same for a batch in three statements whatever its size: one INSERT of
every row from `unnest` arrays (ON CONFLICT DO NOTHING, RETURNING what it inserted), one
SELECT of the rows that already existed, and one `SELECT pg_notify(...) FROM unnest(...)` with
a payload per new notification, so watchers hear of each exactly as after `add`.

A notification's `created_at` is the database's clock when its row is inserted
(`clock_timestamp()`; a batch's items a microsecond apart, in order), not the caller's: a
time read before the unit of work waited for a pooled connection (seconds, when the PIN checks
hold the pool) ordered a notification before others that committed first, so "mark all read
up to" the newest one shown could mark it unseen; and the replicas' clocks differ. What is
stored is what is returned.

"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    Text,
    bindparam,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from vaultpay_wallet.adapters.metadata import metadata
from vaultpay_wallet.domain.notifications import Notification, NotificationCursor, NotificationKind

__all__ = [
    "LIVE_READ",
    "NOTIFY_CHANNEL",
    "NotifiedRef",
    "SqlNotificationRepository",
    "decode_notify_payload",
    "encode_notify_payload",
    "note_from_record",
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
    Index("notifications_created_idx", "created_at"),  # the retention's (w0010)
)

_c = notifications.c
_UUID_ARRAY = ARRAY(UUID(as_uuid=False))
_TEXT_ARRAY = ARRAY(Text)
_INT_ARRAY = ARRAY(Integer)
_INSERTED_COLUMNS = ("id", "user_id", "kind", "title", "body", "created_at", "dedupe_key")
_BATCH_COLUMNS = ("id", "user_id", "kind", "title", "body", "place", "dedupe_key")


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


@dataclass(frozen=True, slots=True)
class NotifiedRef:
    """What a NOTIFY says: which notification of which user was committed."""

    notification_id: str
    user_id: str


def encode_notify_payload(note: Notification) -> str:
    return json.dumps({"id": note.notification_id, "user_id": note.user_id}, separators=(",", ":"))


def decode_notify_payload(payload: str) -> NotifiedRef:
    """Raises ValueError/KeyError/TypeError on a payload that names no notification (both
    ids must be UUIDs, so a forged one cannot make the listener's read fail)."""
    data = json.loads(payload)
    return NotifiedRef(
        notification_id=str(uuid.UUID(data["id"])), user_id=str(uuid.UUID(data["user_id"]))
    )


# The listener's read of the notifications it was told of (asyncpg, $1 a uuid[]).
LIVE_READ = (
    "SELECT id::text AS id, user_id::text AS user_id, kind, title, body, read, created_at"
    " FROM notifications WHERE id = ANY($1::uuid[])"
)


def note_from_record(record: Mapping[str, Any]) -> Notification:
    """A notification from a row of `LIVE_READ` (an asyncpg record)."""
    return Notification(
        notification_id=record["id"],
        user_id=record["user_id"],
        kind=NotificationKind[record["kind"]],
        title=record["title"],
        body=record["body"],
        read=record["read"],
        created_at=record["created_at"],
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
                    created_at=func.clock_timestamp(),
                    dedupe_key=dedupe_key,
                )
                # A concurrent insert of the same key waits for the other transaction, then
                # does nothing if it committed: the SELECT below then sees its row.
                .on_conflict_do_nothing(index_elements=[_c.user_id, _c.dedupe_key])
                .returning(_c.id, _c.created_at)
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
        note = replace(note, created_at=inserted.created_at)
        await self._conn.execute(
            select(func.pg_notify(NOTIFY_CHANNEL, encode_notify_payload(note)))
        )
        return note, True

    async def add_many(
        self, items: Sequence[tuple[Notification, str]]
    ) -> list[tuple[Notification, bool]]:
        firsts: dict[tuple[str, str], Notification] = {}  # (user, key) -> its first item
        for note, key in items:
            firsts.setdefault((note.user_id, key), note)
        if not firsts:
            return []
        # In (user, key) order: concurrent batches that share keys then wait on each other's
        # index entries in the same order instead of deadlocking.
        rows = sorted(firsts.items(), key=lambda row: row[0])
        order = {note.notification_id: place for place, note in enumerate(firsts.values())}
        batch = (
            func.unnest(
                bindparam(None, [n.notification_id for _, n in rows], type_=_UUID_ARRAY),
                bindparam(None, [user for (user, _), _ in rows], type_=_UUID_ARRAY),
                bindparam(None, [n.kind.name for _, n in rows], type_=_TEXT_ARRAY),
                bindparam(None, [n.title for _, n in rows], type_=_TEXT_ARRAY),
                bindparam(None, [n.body for _, n in rows], type_=_TEXT_ARRAY),
                # Each item's place in the commands (the insert runs in (user, key) order).
                bindparam(None, [order[n.notification_id] for _, n in rows], type_=_INT_ARRAY),
                bindparam(None, [key for (_, key), _ in rows], type_=_TEXT_ARRAY),
            )
            .table_valued(*_BATCH_COLUMNS)
            .render_derived(name="batch")
        )
        # One reading of the clock for the statement (an InitPlan), each item its place's
        # microseconds after it: a reading per row, taken in the insert's order, could put a
        # later item before an earlier one.
        now = select(func.clock_timestamp()).scalar_subquery()
        stamped = select(
            *(batch.c[name] for name in _BATCH_COLUMNS[:5]),
            now + batch.c.place * literal_column("interval '1 microsecond'"),
            batch.c.dedupe_key,
        )
        # As in `add`, a concurrent insert of the same key is waited for; if it commits, the
        # SELECT below (a statement of its own, so a newer snapshot) reads its row.
        inserted = {
            str(note_id): created_at
            for note_id, created_at in await self._conn.execute(
                insert(notifications)
                .from_select(list(_INSERTED_COLUMNS), stamped)
                .on_conflict_do_nothing(index_elements=[_c.user_id, _c.dedupe_key])
                .returning(_c.id, _c.created_at)
            )
        }
        for ids, note in rows:
            if note.notification_id in inserted:
                firsts[ids] = replace(note, created_at=inserted[note.notification_id])
        existing = [ids for ids, note in rows if note.notification_id not in inserted]
        if existing:
            await self._read_existing(existing, firsts)
        new = [note for note in firsts.values() if note.notification_id in inserted]
        if new:
            await self._notify_all(new)
        results: list[tuple[Notification, bool]] = []
        answered: set[tuple[str, str]] = set()
        for note, key in items:
            ids = (note.user_id, key)
            first = firsts[ids]
            results.append((first, first.notification_id in inserted and ids not in answered))
            answered.add(ids)
        return results

    async def _read_existing(
        self, existing: Sequence[tuple[str, str]], firsts: dict[tuple[str, str], Notification]
    ) -> None:
        """Replaces the items of `firsts` named by `existing` with their stored rows."""
        wanted = (
            func.unnest(
                bindparam(None, [user for user, _ in existing], type_=_UUID_ARRAY),
                bindparam(None, [key for _, key in existing], type_=_TEXT_ARRAY),
            )
            .table_valued("user_id", "dedupe_key")
            .render_derived(name="wanted")
        )
        found = await self._conn.execute(
            select(notifications).where(
                _c.user_id == wanted.c.user_id, _c.dedupe_key == wanted.c.dedupe_key
            )
        )
        missing = set(existing)
        for row in found:
            ids = (str(row.user_id), str(row.dedupe_key))
            firsts[ids] = _note(row)
            missing.discard(ids)
        if missing:  # a conflict without a row to show for it: never expected
            raise RuntimeError(f"{len(missing)} notification(s) conflicted but cannot be read")

    async def _notify_all(self, new: Sequence[Notification]) -> None:
        """One NOTIFY per notification, in order, in one statement."""
        payloads = (
            func.unnest(bindparam(None, [encode_notify_payload(n) for n in new], type_=_TEXT_ARRAY))
            .table_valued("payload", with_ordinality="position")
            .render_derived(name="payloads")
        )
        await self._conn.execute(
            select(func.pg_notify(NOTIFY_CHANNEL, payloads.c.payload))
            .select_from(payloads)
            .order_by(payloads.c.position)
        )

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
            query = query.where(~_c.read)
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
            select(func.count()).select_from(notifications).where(_c.user_id == user_id, ~_c.read)
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

    async def mark_all_read(self, user_id: str, *, up_to: str | None = None) -> int | None:
        if up_to is None:
            result = await self._conn.execute(
                update(notifications)
                .where(_c.user_id == user_id, ~_c.read)
                .values(read=True, read_at=func.now())
            )
            return int(result.rowcount)
        # One statement, one snapshot: the bound's position, the UPDATE of the unread ones at
        # or before it (a range of the partial index on unread, from the user's oldest to the
        # bound's (created_at, id)), and whether the bound was found at all (0 marked is
        # an answer; a bound that is not this user's is NOT_FOUND).
        bound = (
            select(_c.created_at, _c.id).where(_c.id == up_to, _c.user_id == user_id).cte("bound")
        )
        marked = (
            update(notifications)
            .where(
                _c.user_id == user_id,
                ~_c.read,
                tuple_(_c.created_at, _c.id) <= tuple_(bound.c.created_at, bound.c.id),
            )
            .values(read=True, read_at=func.now())
            .returning(_c.id)
            .cte("marked")
        )
        found, count = (
            await self._conn.execute(
                select(
                    select(func.count()).select_from(bound).scalar_subquery(),
                    select(func.count()).select_from(marked).scalar_subquery(),
                )
            )
        ).one()
        return int(count) if found else None
