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

Schema and privileges: `outbox_table_ddl(app_role)`. The app role may SELECT, INSERT, UPDATE
(relay bookkeeping, replays) and DELETE (the cleanup of delivered events). Where the services
log in as roles of their own, each service's chain adds `outbox_producer_policy_ddl`: row-level
security lets a service's role see and write only the events it produces (the ledger's
functions write transfer's as the owner, whom the policies do not bind).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
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
    delete,
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

from vaultpay_common.clock import Clock
from vaultpay_common.outbox.model import OutboxEvent, OutboxMessage, OutboxStatus, encode_payload
from vaultpay_common.row_security import ServicePolicies

__all__ = [
    "OUTBOX_RETENTION",
    "SqlOutbox",
    "count_dead_letters",
    "list_dead_letters",
    "outbox_producer_policy_ddl",
    "outbox_producer_policy_drop_ddl",
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
LAST_ERROR_LIMIT = 500
_UUID_ARRAY = postgresql.ARRAY(UUID(as_uuid=False))
_TIMESTAMP_ARRAY = postgresql.ARRAY(DateTime(timezone=True))
_TEXT_ARRAY = postgresql.ARRAY(Text)


def outbox_table(metadata: MetaData) -> Table:
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
        Index(
            "outbox_events_delivered_idx",
            "delivered_at",
            postgresql_where=text("status = 'DELIVERED'"),
        ),
    )


_events = outbox_table(MetaData())


def outbox_table_ddl(app_role: str) -> list[str]:
    """Statements that create the table and its indexes and grant the app role what it needs.

    Run in order by the table owner (the platform migration; integration tests).
    """
    if not _ROLE.match(app_role):
        raise ValueError(f"not a plain role name: {app_role!r}")
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return [
        str(CreateTable(_events).compile(dialect=dialect)).strip(),
        *(str(CreateIndex(index).compile(dialect=dialect)) for index in _events.indexes),
        f'REVOKE ALL ON {_TABLE_NAME} FROM "{app_role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON {_TABLE_NAME} TO "{app_role}"',
    ]


def outbox_table_drop_ddl() -> list[str]:
    return [f"DROP TABLE IF EXISTS {_TABLE_NAME}"]


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
    return message if len(message) <= LAST_ERROR_LIMIT else message[: LAST_ERROR_LIMIT - 1] + "…"


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
    theirs to clean up."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    older_than = clock.now() - retention
    victims = (
        select(_events.c.event_id)
        .where(
            _events.c.status == OutboxStatus.DELIVERED.value,
            _events.c.delivered_at < older_than,
            _events.c.producer == producer,
        )
        .limit(batch_size)
    )
    statement = delete(_events).where(_events.c.event_id.in_(victims))
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = int((await conn.execute(statement)).rowcount)
        total += deleted
        if deleted < batch_size:
            return total
