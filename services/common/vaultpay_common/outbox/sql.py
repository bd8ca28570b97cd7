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

Staff act on dead letters through the service CLIs (`dead-letters`, `replay-dead-letter`,
`discard-dead-letter`): `list_dead_letters` pages them by a key, `replay_dead_letter` makes one
pending again and `discard_dead_letter` gives one up for good (DISCARDED: never claimed, never
listed again, kept). Both write an audit row naming the operator in their transaction, in the
audit log of the database the outbox is in (`vaultpay_common.audit`), and only when they
changed the event: a replayed event, once delivered, is purged after OUTBOX_RETENTION like any
other, and the audit row is then all that says an operator sent it again.

Schema and privileges: `outbox_table_ddl(app_role)` creates the table as platform p0002 did,
`outbox_purge_index_ddl()` adds what p0004 changed, `outbox_discarded_status_ddl()` what p0006
did (run in that order by the platform chain and the integration tests). The app role may
SELECT, INSERT, UPDATE (relay bookkeeping, replays, discards) and DELETE (the cleanup of
delivered events). Where the services
log in as roles of their own, each service's chain adds `outbox_producer_policy_ddl`: row-level
security lets a service's role see and write only the events it produces (the ledger's
functions write transfer's as the owner, whom the policies do not bind).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
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
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.expression import TextClause

from vaultpay_common.audit import AuditEntry, AuditLog
from vaultpay_common.clock import Clock
from vaultpay_common.db import delete_in_batches
from vaultpay_common.outbox.model import OutboxEvent, OutboxMessage, OutboxStatus, encode_payload
from vaultpay_common.row_security import ServicePolicies

__all__ = [
    "DEAD_LETTER_DISCARDED",
    "DEAD_LETTER_REPLAYED",
    "DISCARD_REASON_LIMIT",
    "OUTBOX_RETENTION",
    "DeadLetterKey",
    "SqlOutbox",
    "clean_discard_reason",
    "count_dead_letters",
    "delivered_outbox_events_delete",
    "discard_dead_letter",
    "list_dead_letters",
    "outbox_discarded_status_ddl",
    "outbox_discarded_status_drop_ddl",
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
_STATUS_CHECK = "outbox_events_status_valid"
# The statuses each shape of the table allows: p0002's, and p0006's (DISCARDED).
_STATUSES_P0002 = ("PENDING", "DELIVERED", "DEAD")
_STATUSES = (*_STATUSES_P0002, OutboxStatus.DISCARDED.value)
# The audit actions of staff's acts on dead letters (target: the event id).
DEAD_LETTER_REPLAYED = "outbox.dead_letter_replayed"
DEAD_LETTER_DISCARDED = "outbox.dead_letter_discarded"
# How much of the event's last error, and of a discard's reason, an audit row keeps.
_AUDITED_ERROR_LIMIT = 200
DISCARD_REASON_LIMIT = 500


def _status_check(statuses: Sequence[str]) -> str:
    return "status IN (" + ", ".join(f"'{status}'" for status in statuses) + ")"


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
            _status_check(_STATUSES if at_head else _STATUSES_P0002), name=_STATUS_CHECK
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
    """The table as it is at the platform chain's head (p0004's cleanup index, p0006's
    DISCARDED status)."""
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


def outbox_discarded_status_ddl() -> list[str]:
    """Platform p0006: the status CHECK allows DISCARDED (`discard_dead_letter`).

    The first two statements run in the revision's transaction, with its bounded lock wait:
    the CHECK is replaced by the wider one NOT VALID (ACCESS EXCLUSIVE for a catalogue change,
    no scan; every later write is checked). The last one, VALIDATE (a scan under SHARE UPDATE
    EXCLUSIVE only: relays and movements go on writing), runs in `concurrently()`, after that
    transaction committed. Every statement may run again (a run stopped before the
    validation)."""
    return [
        f"ALTER TABLE {_TABLE_NAME} DROP CONSTRAINT IF EXISTS {_STATUS_CHECK}",
        f"ALTER TABLE {_TABLE_NAME} ADD CONSTRAINT {_STATUS_CHECK}"
        f" CHECK ({_status_check(_STATUSES)}) NOT VALID",
        f"ALTER TABLE {_TABLE_NAME} VALIDATE CONSTRAINT {_STATUS_CHECK}",
    ]


def outbox_discarded_status_drop_ddl() -> list[str]:
    """p0006's downgrade, as its upgrade: the discarded events become dead letters again (never
    delivered, listed and replayable as before the discard; the audit rows of their discards
    stay) and p0002's CHECK comes back NOT VALID, in the revision's transaction (whose ALTER
    holds the table from the first statement: no discard can slip in between); the last
    statement, VALIDATE, in `concurrently()`."""
    return [
        f"ALTER TABLE {_TABLE_NAME} DROP CONSTRAINT IF EXISTS {_STATUS_CHECK}",
        "UPDATE outbox_events SET status = 'DEAD' WHERE status = 'DISCARDED'",
        f"ALTER TABLE {_TABLE_NAME} ADD CONSTRAINT {_STATUS_CHECK}"
        f" CHECK ({_status_check(_STATUSES_P0002)}) NOT VALID",
        f"ALTER TABLE {_TABLE_NAME} VALIDATE CONSTRAINT {_STATUS_CHECK}",
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


def truncate_error(message: str, limit: int = LAST_ERROR_LIMIT) -> str:
    """What `last_error` can store: at most `limit` characters of valid UTF-8 without NUL
    (PostgreSQL's text refuses NUL, and asyncpg cannot encode a lone surrogate: either would
    fail the settlement of the whole round, delivered events included)."""
    text = message.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dead(producer: str | None) -> Any:
    condition = _events.c.status == OutboxStatus.DEAD.value
    return condition if producer is None else condition & (_events.c.producer == producer)


@dataclass(frozen=True, slots=True)
class DeadLetterKey:
    """Where a dead letter is in the listing's order (oldest first; the id breaks ties): a page
    continues after the key of the last event of the page before it. `created_at` never
    changes, so a key stays valid while events before or after it are replayed, discarded or
    dead-lettered; a replayed event that dies again keeps its place."""

    created_at: datetime
    event_id: str

    @classmethod
    def of(cls, event: OutboxEvent) -> DeadLetterKey:
        return cls(event.created_at, event.event_id)


def _after(key: DeadLetterKey) -> Any:
    c = _events.c
    # The first condition is the index's range ((producer, created_at) WHERE DEAD); the row
    # comparison then skips the ties already shown.
    return (c.created_at >= key.created_at) & (
        tuple_(c.created_at, c.event_id)
        > tuple_(
            literal(key.created_at, DateTime(timezone=True)),
            literal(str(uuid.UUID(key.event_id)), UUID(as_uuid=False)),
        )
    )


async def list_dead_letters(
    conn: AsyncConnection,
    producer: str | None,
    limit: int,
    *,
    after: DeadLetterKey | None = None,
) -> list[OutboxEvent]:
    """Dead-lettered events (of one producer, or all), oldest first, for staff to inspect: at
    most `limit`, those after `after` (the key of the last one of the page before)."""
    condition = _dead(producer)
    if after is not None:
        condition = condition & _after(after)
    query = (
        select(*_columns())
        .where(condition)
        .order_by(_events.c.created_at, _events.c.event_id)
        .limit(max(0, limit))
    )
    return [_event(row) for row in await conn.execute(query)]


async def count_dead_letters(
    conn: AsyncConnection, producer: str | None, *, after: DeadLetterKey | None = None
) -> int:
    """How many events (of one producer, or all) are dead-lettered, or of those how many come
    after `after`: what a page of `list_dead_letters` is out of, and where it starts."""
    condition = _dead(producer)
    if after is not None:
        condition = condition & _after(after)
    query = select(func.count()).select_from(_events).where(condition)
    return int((await conn.execute(query)).scalar_one())


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


async def _take_dead_letter(
    conn: AsyncConnection, event_id: str, producer: str
) -> OutboxEvent | None:
    """`producer`'s dead-lettered event `event_id`, locked until the transaction ends (a
    concurrent replay or discard of it waits, then finds it no longer dead), or None."""
    try:
        canonical = str(uuid.UUID(event_id))
    except ValueError:
        return None
    query = (
        select(*_columns())
        .where(_events.c.event_id == canonical, _dead(producer))
        .with_for_update()
    )
    row = (await conn.execute(query)).first()
    return None if row is None else _event(row)


def _dead_letter_entry(action: str, event: OutboxEvent, actor: str, **more: str) -> AuditEntry:
    """The audit row of staff's act on a dead letter: what the event was when they acted (its
    payload left out: it may hold a sealed code), and who acted."""
    details = {
        "producer": event.producer,
        "topic": event.topic,
        "key": event.key,
        "attempts": str(event.attempts),
        "created_at": _when(event.created_at),
        "dead_at": _when(event.dead_at),
        "last_error": truncate_error(event.last_error, _AUDITED_ERROR_LIMIT),
        **more,
    }
    return AuditEntry(action, "outbox_event", event.event_id, details, actor_id=actor)


def _check_actor(actor: str) -> None:
    if not actor.strip():
        raise ValueError("an act on a dead letter needs its actor (operator:<login>)")


async def replay_dead_letter(
    conn: AsyncConnection, event_id: str, *, producer: str, actor: str
) -> OutboxEvent | None:
    """Puts `producer`'s dead-lettered event back to pending, due now, with its attempts reset,
    and appends the audit row of it (DEAD_LETTER_REPLAYED, `actor` the operator) in the
    caller's transaction: the replay and its record commit together. Returns the event as it
    was dead.

    None, and no audit row, when `producer` has no dead-lettered event with that id (an id that
    is not a UUID included): another service's event is theirs to replay, even where row-level
    security is off (one role for every service, or a chain not yet migrated). The last error
    is kept until the next attempt overwrites it, so staff can still see why it died.
    """
    _check_actor(actor)
    dead = await _take_dead_letter(conn, event_id, producer)
    if dead is None:
        return None
    result = await conn.execute(
        update(_events)
        .where(_events.c.event_id == dead.event_id, _dead(producer))
        .values(
            status=OutboxStatus.PENDING.value,
            attempts=0,
            available_at=func.now(),
            dead_at=None,
            lease_token=None,
        )
    )
    if not result.rowcount:
        return None
    await AuditLog().append(conn, _dead_letter_entry(DEAD_LETTER_REPLAYED, dead, actor))
    return dead


def clean_discard_reason(reason: str) -> str:
    """A discard's reason as the audit row keeps it (stripped, storable: no NUL, no lone
    surrogate); ValueError when nothing is left or it is longer than DISCARD_REASON_LIMIT."""
    cleaned = truncate_error(reason.strip(), DISCARD_REASON_LIMIT)
    if not cleaned or len(reason.strip()) > DISCARD_REASON_LIMIT:
        raise ValueError(f"a discard needs its reason, 1 to {DISCARD_REASON_LIMIT} characters")
    return cleaned


async def discard_dead_letter(
    conn: AsyncConnection, event_id: str, *, producer: str, actor: str, reason: str
) -> OutboxEvent | None:
    """Gives `producer`'s dead-lettered event up for good: DISCARDED, never claimed (relays
    claim PENDING events only), never listed or replayed (DEAD ones only), and appends the
    audit row of it (DEAD_LETTER_DISCARDED, `actor`, `reason`) in the caller's transaction.
    Returns the event as it was dead; None, and no audit row, as `replay_dead_letter`.

    The row is kept, as dead letters are (the purge deletes DELIVERED events only): a discard
    is one operator's act on one event, so they stay few, and the row keeps what was given up
    (its payload) next to the audit row that says who did and why. ValueError for a reason
    `clean_discard_reason` refuses."""
    _check_actor(actor)
    why = clean_discard_reason(reason)
    dead = await _take_dead_letter(conn, event_id, producer)
    if dead is None:
        return None
    result = await conn.execute(
        update(_events)
        .where(_events.c.event_id == dead.event_id, _dead(producer))
        .values(status=OutboxStatus.DISCARDED.value, lease_token=None)
    )
    if not result.rowcount:
        return None
    entry = _dead_letter_entry(DEAD_LETTER_DISCARDED, dead, actor, reason=why)
    await AuditLog().append(conn, entry)
    return dead


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
    (and hold back vacuum). Dead letters stay until replayed or discarded, discarded events
    for good (`discard_dead_letter`); other producers' events are
    theirs to clean up (and, where each service logs in as a role of its own, row-level
    security hides them anyway)."""
    statement = delivered_outbox_events_delete(
        producer, clock.now() - retention, batch_size=batch_size
    )

    async def one_batch(conn: AsyncConnection) -> int:
        return int((await conn.execute(statement)).rowcount)

    return await delete_in_batches(engine, one_batch, batch_size)
