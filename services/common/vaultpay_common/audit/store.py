"""Writing and listing audit events, inside the caller's transaction.

    await AuditLog().append(conn, AuditEntry("user.role_changed", "user", user_id, {...}))

`append` calls the database's `audit_append()`, which assigns the sequence, the time and the
transaction id itself; it takes no lock, so concurrent writers never wait for each other. The
row is chained later by the sealer (`sealer.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    MetaData,
    ScalarSelect,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from vaultpay_common.audit.model import AuditEntry, AuditQuery, AuditRecord, AuditRow
from vaultpay_common.audit.tables import audit_tables
from vaultpay_common.context import PRINCIPAL, REQUEST_ID

__all__ = ["EVENTS", "ROW_COLUMNS", "SEALS", "AuditLog", "list_audit_events", "row_from_mapping"]

EVENTS, SEALS = audit_tables(MetaData())
# Every column but xact_id, which only the sealer needs.
ROW_COLUMNS = tuple(column for column in EVENTS.c if column.name != "xact_id")

_APPEND = text(
    "SELECT audit_append(:actor_id, :actor_role, :action, :target_type, :target_id,"
    " :request_id, CAST(:details AS jsonb))"
)


class AuditLog:
    """Appends entries to this database's audit log inside the caller's transaction."""

    async def append(self, conn: AsyncConnection, entry: AuditEntry) -> int:
        """Appends `entry`; the actor is the caller's principal unless the entry names one.

        Returns the row's sequence (the order of insertion; the chain order is the seal's).
        """
        principal = PRINCIPAL.get()
        if entry.actor_id:
            actor_id, actor_role = entry.actor_id, entry.actor_role
        elif principal is None:
            actor_id, actor_role = "system", ""
        elif principal.is_service:
            actor_id, actor_role = f"service:{principal.service}", ""
        else:
            actor_id = principal.subject
            actor_role = principal.role.name if principal.role else ""
        return await self.append_as(conn, entry, actor_id=actor_id, actor_role=actor_role)

    async def append_as(
        self, conn: AsyncConnection, entry: AuditEntry, *, actor_id: str, actor_role: str
    ) -> int:
        sequence = await conn.scalar(
            _APPEND,
            {
                "actor_id": actor_id,
                "actor_role": actor_role,
                "action": entry.action,
                "target_type": entry.target_type,
                "target_id": entry.target_id,
                "request_id": REQUEST_ID.get(),
                "details": json.dumps(dict(entry.details)),
            },
        )
        return int(sequence)

    async def count(self, conn: AsyncConnection) -> int:
        return int((await conn.execute(select(func.count()).select_from(EVENTS))).scalar_one())


def row_from_mapping(row: Mapping[Any, Any]) -> AuditRow:
    """The chained columns of an audit_events row (as read by SQLAlchemy)."""
    return AuditRow(
        sequence=int(row["sequence"]),
        created_at=row["created_at"],
        actor_id=row["actor_id"],
        actor_role=row["actor_role"],
        action=row["action"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        request_id=row["request_id"],
        details=dict(row["details"]),
    )


async def list_audit_events(
    conn: AsyncConnection,
    query: AuditQuery,
    before_sequence: int | None,
    limit: int,
) -> list[AuditRecord]:
    """Newest first, keyset-paginated on sequence; sealed rows carry their seal's hash."""
    c = EVENTS.c
    stmt = select(*ROW_COLUMNS, SEALS.c.position, SEALS.c.row_hash).select_from(
        EVENTS.outerjoin(SEALS, SEALS.c.sequence == c.sequence)
    )
    if query.actor_id:
        stmt = stmt.where(c.actor_id == query.actor_id)
    if query.action:
        stmt = stmt.where(c.action == query.action)
        # asyncpg prepares the statement, and its generic plan cannot see which action it
        # looks for (it prices every one as common) and may walk the whole primary key back
        # for a rare one: this transaction plans for the values (the action index's range).
        await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    if query.target_id:
        stmt = stmt.where(c.target_id == query.target_id)
    if query.start is not None:
        stmt = stmt.where(c.created_at >= query.start)
    if query.end is not None:
        stmt = stmt.where(c.created_at < query.end)
    if before_sequence is not None:
        stmt = stmt.where(c.sequence < before_sequence)
    order = c.sequence.desc()
    if await _window_is_the_cheaper_read(conn, query, before_sequence, limit):
        # The same order, which no index gives: the planner reads the window's range of
        # audit_events_created_idx and sorts it, rather than walk the primary key back.
        order = (c.sequence + literal_column("0")).desc()
    rows = await conn.execute(stmt.order_by(order).limit(limit))
    return [
        AuditRecord(
            sequence=row.sequence,
            created_at=row.created_at,
            actor_id=row.actor_id,
            actor_role=row.actor_role,
            action=row.action,
            target_type=row.target_type,
            target_id=row.target_id,
            request_id=row.request_id,
            details=dict(row.details),
            row_hash=row.row_hash or "",
            position=row.position,
        )
        for row in rows
    ]


def _first_at(at: datetime) -> ScalarSelect[int]:
    """The sequence of the first event at or after `at` (one entry of the time index)."""
    return (
        select(EVENTS.c.sequence)
        .where(EVENTS.c.created_at >= at)
        .order_by(EVENTS.c.created_at)
        .limit(1)
        .scalar_subquery()
    )


async def _window_is_the_cheaper_read(
    conn: AsyncConnection, query: AuditQuery, before_sequence: int | None, limit: int
) -> bool:
    """Whether a page with a time window costs less read from the time index (every event of
    the window, then sorted) than by walking the primary key back from its keyset, which reads
    every event newer than the window before the first of it, and when the window holds fewer
    than the page, every event older than it too (to the first): the planner cannot tell, it
    prices the events of a window as spread evenly over the sequence, where they are one run
    of it. Either read returns the same page, whatever the data: the window's edges are only
    estimated, by the sequences of the first events at or after `start` and `end` (one entry
    of the time index each) and the newest. They need not be exact: a row's time and sequence
    are taken one after the other, so two concurrent appends may take them in opposite orders,
    and a clock that steps back writes older times after newer ones. No bound on either is
    known, so the filters stay on `created_at` alone, never on sequences derived from it."""
    if query.start is None and query.end is None:
        return False
    c = EVENTS.c
    edges = (
        await conn.execute(
            select(
                # Where the walk starts: below the keyset, or at the newest event.
                select(func.max(c.sequence)).scalar_subquery()
                if before_sequence is None
                else literal(before_sequence - 1, BigInteger),
                literal(0, BigInteger) if query.start is None else _first_at(query.start),
                literal(None, BigInteger) if query.end is None else _first_at(query.end),
            )
        )
    ).one()
    top, first_in, first_after = (None if value is None else int(value) for value in edges)
    if top is None:
        return False  # no event at all
    if first_in is None:
        return True  # none at or after the start: the walk would read every event
    last_in = top if first_after is None else min(top, first_after - 1)
    in_window = max(0, last_in - first_in + 1)
    newer = top - last_in
    return in_window < newer + limit
