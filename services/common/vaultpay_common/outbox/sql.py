"""The `outbox_events` table: producers insert in their transaction, relays lease and settle.

A relay never keeps a transaction open while it delivers. It claims due events in one
statement (`FOR UPDATE SKIP LOCKED`, so replicas share the work) by pushing their
`available_at` forward by a lease and stamping a lease token; delivers; then settles the whole
round in one more statement: the delivered events, the failed ones (each with its own error
and retry time), and those it gave up without an outcome (it is stopping, or their turn came
too late for the lease) made due again at once. Every settlement is guarded by the round's
token, so a relay whose lease expired cannot settle an event another relay re-claimed. A relay
that dies mid-delivery leaves the lease to expire, and the event is due again. Those two
statements are in `relay_sql.py` (raw asyncpg: they run after every commit that adds events).

Schema and privileges: `outbox_table_ddl(app_role)` creates the table as platform p0002 did,
`outbox_purge_index_ddl()` adds what p0004 changed (run in that order by the platform chain and
the integration tests). The app role may SELECT, INSERT, UPDATE
(relay bookkeeping, replays) and DELETE (the cleanup of delivered events). Where the services
log in as roles of their own, each service's chain adds `outbox_producer_policy_ddl`: row-level
security lets a service's role see and write only the events it produces (the ledger's
functions write transfer's as the owner, whom the policies do not bind).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Row,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.expression import TextClause

from vaultpay_common.clock import Clock
from vaultpay_common.db import delete_in_batches
from vaultpay_common.outbox.model import OutboxEvent, OutboxMessage, OutboxStatus, encode_payload
from vaultpay_common.row_security import ServicePolicies

__all__ = [
    "OUTBOX_RETENTION",
    "SqlOutbox",
    "count_dead_letters",
    "delivered_outbox_events_delete",
    "list_dead_letters",
    "outbox_producer_policy_ddl",
    "outbox_producer_policy_drop_ddl",
    "outbox_purge_index_ddl",
    "outbox_purge_index_drop_ddl",
    "outbox_table",
    "outbox_table_ddl",
    "outbox_table_drop_ddl",
    "purge_delivered_outbox_events",
    "replay_dead_letter",
]

_TABLE_NAME = "outbox_events"
# How long delivered events are kept (for support and replays) before the cleanup job.
OUTBOX_RETENTION = timedelta(days=7)
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
# Each producer's role sees its own events (vaultpay_common.row_security).
_POLICIES = ServicePolicies(_TABLE_NAME, "outbox", "producer")
_PENDING = text("status = 'PENDING'")
_DELIVERED = text("status = 'DELIVERED'")
_DELIVERED_INDEX = "outbox_events_delivered_idx"
_PURGE_INDEX = "outbox_events_producer_delivered_idx"
LAST_ERROR_LIMIT = 500
_UUID_ARRAY = postgresql.ARRAY(UUID(as_uuid=False))
_TIMESTAMP_ARRAY = postgresql.ARRAY(DateTime(timezone=True))
_TEXT_ARRAY = postgresql.ARRAY(Text)


def _table(metadata: MetaData, *, at_head: bool) -> Table:
    return Table(
        _TABLE_NAME,
        metadata,
        Column("event_id", UUID(as_uuid=False), primary_key=True),
        Column("producer", Text, nullable=False),
        Column("topic", Text, nullable=False),
        Column("key", Text, nullable=False, server_default=""),
        Column("payload", JSONB, nullable=False),
        Column("status", Text, nullable=False, server_default=OutboxStatus.PENDING.value),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("available_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("lease_token", UUID(as_uuid=False)),
        Column("last_error", Text, nullable=False, server_default=""),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("delivered_at", DateTime(timezone=True)),
        Column("dead_at", DateTime(timezone=True)),
        CheckConstraint(
            "status IN ('PENDING', 'DELIVERED', 'DEAD')", name="outbox_events_status_valid"
        ),
        CheckConstraint("attempts >= 0", name="outbox_events_attempts_nonnegative"),
        # What a relay polls: its producer's pending events, soonest first.
        Index("outbox_events_due_idx", "producer", "available_at", postgresql_where=_PENDING),
        # What staff list, and what the cleanup deletes.
        Index(
            "outbox_events_dead_idx",
            "producer",
            "created_at",
            postgresql_where=text("status = 'DEAD'"),
        ),
        *(
            # What each producer's cleanup reads: its delivered events, oldest first (p0004).
            [Index(_PURGE_INDEX, "producer", "delivered_at", postgresql_where=_DELIVERED)]
            if at_head
            else [Index(_DELIVERED_INDEX, "delivered_at", postgresql_where=_DELIVERED)]
        ),
    )


def outbox_table(metadata: MetaData) -> Table:
    """The table as it is at the platform chain's head (p0004's cleanup index)."""
    return _table(metadata, at_head=True)


_events = outbox_table(MetaData())
# As p0002 created it: `outbox_table_ddl` must go on creating exactly that.
_events_p0002 = _table(MetaData(), at_head=False)


def outbox_table_ddl(app_role: str) -> list[str]:
    """Statements that create the table as p0002 did and grant the app role what it needs;
    `outbox_purge_index_ddl` then brings it to the head's shape.

    Run in order by the table owner (the platform migration; integration tests).
    """
    if not _ROLE.match(app_role):
        raise ValueError(f"not a plain role name: {app_role!r}")
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return [
        str(CreateTable(_events_p0002).compile(dialect=dialect)).strip(),
        *(str(CreateIndex(index).compile(dialect=dialect)) for index in _events_p0002.indexes),
        f'REVOKE ALL ON {_TABLE_NAME} FROM "{app_role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON {_TABLE_NAME} TO "{app_role}"',
    ]


def outbox_table_drop_ddl() -> list[str]:
    return [f"DROP TABLE IF EXISTS {_TABLE_NAME}"]


def outbox_purge_index_ddl() -> list[str]:
    """Platform p0004: the `(producer, delivered_at) WHERE status = 'DELIVERED'` index each
    producer's cleanup reads, in place of p0002's `delivered_at` one (the cleanup was its only
    reader, and read every producer's rows on it before reaching its own).

    CONCURRENTLY, so each statement must run outside a transaction (Alembic's autocommit
    block): the relays and every money movement write the table while it builds. A build that
    failed leaves an INVALID index: the DROP first builds it again when the migration reruns.
    """
    return [
        f"DROP INDEX CONCURRENTLY IF EXISTS {_PURGE_INDEX}",
        f"CREATE INDEX CONCURRENTLY {_PURGE_INDEX} ON {_TABLE_NAME} (producer, delivered_at)"
        f" WHERE {_DELIVERED.text}",
        f"DROP INDEX CONCURRENTLY IF EXISTS {_DELIVERED_INDEX}",
    ]


def outbox_purge_index_drop_ddl() -> list[str]:
    """p0004's downgrade: p0002's `delivered_at` index back, the cleanup's gone; CONCURRENTLY
    (outside a transaction) too."""
    return [
        f"DROP INDEX CONCURRENTLY IF EXISTS {_DELIVERED_INDEX}",
        f"CREATE INDEX CONCURRENTLY {_DELIVERED_INDEX} ON {_TABLE_NAME} (delivered_at)"
        f" WHERE {_DELIVERED.text}",
        f"DROP INDEX CONCURRENTLY IF EXISTS {_PURGE_INDEX}",
    ]


def outbox_producer_policy_ddl(producer: str, app_role: str) -> list[str]:
    """`app_role` sees and writes the events of `producer` only, once row-level security is
    on: with the last service's policy (`vaultpay_common.row_security`; a role with no policy
    would see no event, so it stays off until every service's chain has added its own)."""
    return _POLICIES.add_ddl(producer, app_role)


def outbox_producer_policy_drop_ddl(producer: str) -> list[str]:
    """Drops `producer`'s policy; row-level security goes off with it (`row_security`)."""
    return _POLICIES.drop_ddl(producer)


class SqlOutbox:
    """`Outbox` on the unit of work's connection: the event commits with the change."""

    def __init__(self, conn: AsyncConnection, producer: str) -> None:
        if not producer:
            raise ValueError("an outbox needs its producer's name")
        self._conn = conn
        self._producer = producer

    async def add(self, message: OutboxMessage) -> str:
        encode_payload(message.payload)  # refuse what JSON cannot carry, here and now
        event_id = str(uuid.uuid4())
        await self._conn.execute(
            insert(_events).values(
                event_id=event_id,
                producer=self._producer,
                topic=message.topic,
                key=message.key,
                payload=dict(message.payload),
            )
        )
        return event_id


def _event(row: Row[Any]) -> OutboxEvent:
    return OutboxEvent(
        event_id=str(row.event_id),
        producer=row.producer,
        topic=row.topic,
        key=row.key,
        payload=row.payload,
        attempts=row.attempts,
        created_at=row.created_at,
        status=OutboxStatus(row.status),
        available_at=row.available_at,
        last_error=row.last_error,
        dead_at=row.dead_at,
    )


def _columns() -> Sequence[Any]:
    return [
        _events.c.event_id,
        _events.c.producer,
        _events.c.topic,
        _events.c.key,
        _events.c.payload,
        _events.c.attempts,
        _events.c.created_at,
        _events.c.status,
        _events.c.available_at,
        _events.c.last_error,
        _events.c.dead_at,
    ]


def truncate_error(message: str) -> str:
    """What `last_error` can store: at most LAST_ERROR_LIMIT characters of valid UTF-8 without
    NUL (PostgreSQL's text refuses NUL, and asyncpg cannot encode a lone surrogate: either
    would fail the settlement of the whole round, delivered events included)."""
    text = message.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= LAST_ERROR_LIMIT else text[: LAST_ERROR_LIMIT - 1] + "…"


def _dead(producer: str | None) -> Any:
    condition = _events.c.status == OutboxStatus.DEAD.value
    return condition if producer is None else condition & (_events.c.producer == producer)


async def list_dead_letters(
    conn: AsyncConnection, producer: str | None, limit: int
) -> list[OutboxEvent]:
    """Dead-lettered events (of one producer, or all), oldest first, for staff to inspect."""
    query = (
        select(*_columns())
        .where(_dead(producer))
        .order_by(_events.c.created_at, _events.c.event_id)
        .limit(max(0, limit))
    )
    return [_event(row) for row in await conn.execute(query)]


async def count_dead_letters(conn: AsyncConnection, producer: str | None) -> int:
    """How many events (of one producer, or all) are dead-lettered: what a page of
    `list_dead_letters` is out of."""
    query = select(func.count()).select_from(_events).where(_dead(producer))
    return int((await conn.execute(query)).scalar_one())


async def replay_dead_letter(conn: AsyncConnection, event_id: str, *, producer: str) -> bool:
    """Puts `producer`'s dead-lettered event back to pending, due now, with its attempts reset.

    False when `producer` has no dead-lettered event with that id (an id that is not a UUID
    included): another service's event is theirs to replay, even where row-level security is
    off (one role for every service, or a chain not yet migrated). The last error is kept until
    the next attempt overwrites it, so staff can still see why it died.
    """
    try:
        canonical = str(uuid.UUID(event_id))
    except ValueError:
        return False
    result = await conn.execute(
        update(_events)
        .where(_events.c.event_id == canonical, _dead(producer))
        .values(
            status=OutboxStatus.PENDING.value,
            attempts=0,
            available_at=func.now(),
            dead_at=None,
            lease_token=None,
        )
    )
    return bool(result.rowcount)


# One batch of a cleanup: the victims are a range of p0004's `(producer, delivered_at) WHERE
# status = 'DELIVERED'` index, and their row addresses take the DELETE straight to them (a TID
# scan). Matching them by `event_id IN (SELECT ...)` let the planner hash-join a scan of the
# whole table, every batch. Oldest first, the index's order, which no scan of the table has: so
# the planner keeps to the index even where it guesses that most of the table is due (a generic
# plan's guess; a scan with a LIMIT would read again, every batch, the pages earlier batches
# emptied). The status is a literal and the batch size an integer: asyncpg prepares every
# statement, and a generic plan can neither prove the partial index's predicate from
# `status = $1` nor see how few rows `LIMIT $n` wants. The addresses are taken and used by one
# statement, whose snapshot keeps them from being reused; a delivered event is never updated
# again (every relay UPDATE requires 'PENDING'), and a row another purge deleted first is
# skipped.
_DELETE_BATCH = (
    "DELETE FROM outbox_events WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM outbox_events"
    " WHERE producer = :producer AND status = 'DELIVERED' AND delivered_at < :older_than"
    " ORDER BY delivered_at LIMIT {batch_size}))"
)


def delivered_outbox_events_delete(
    producer: str, older_than: datetime, *, batch_size: int
) -> TextClause:
    """The statement that deletes at most `batch_size` of `producer`'s events delivered before
    `older_than`, reading them from the cleanup's index."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be an aware datetime")
    if not producer:
        raise ValueError("a purge needs its producer's name")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return text(_DELETE_BATCH.format(batch_size=int(batch_size))).bindparams(
        bindparam("producer", producer, type_=Text),
        bindparam("older_than", older_than, type_=DateTime(timezone=True)),
    )


async def purge_delivered_outbox_events(
    engine: AsyncEngine,
    producer: str,
    *,
    clock: Clock,
    retention: timedelta = OUTBOX_RETENTION,
    batch_size: int = 5_000,
) -> int:
    """The cleanup job: deletes `producer`'s events delivered more than `retention` ago, at
    most `batch_size` a transaction, and returns how many. A week of events can be millions of
    rows: one statement would delete them all in one long transaction next to the money path
    (and hold back vacuum). Dead letters stay until replayed; other producers' events are
    theirs to clean up (and, where each service logs in as a role of its own, row-level
    security hides them anyway)."""
    statement = delivered_outbox_events_delete(
        producer, clock.now() - retention, batch_size=batch_size
    )

    async def one_batch(conn: AsyncConnection) -> int:
        return int((await conn.execute(statement)).rowcount)

    return await delete_in_batches(engine, one_batch, batch_size)
