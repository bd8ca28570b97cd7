"""Writing and listing audit events, inside the caller's transaction.

    await AuditLog().append(conn, AuditEntry("user.role_changed", "user", user_id, {...}))

`append` calls the database's `audit_append()`, which assigns the sequence, the time and the
transaction id itself; it takes no lock, so concurrent writers never wait for each other. The
row is chained later by the sealer (`sealer.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import MetaData, func, select, text
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
    rows = await conn.execute(stmt.order_by(c.sequence.desc()).limit(limit))
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
