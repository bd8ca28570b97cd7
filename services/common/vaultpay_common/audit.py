"""Append-only, hash-chained audit log: one table per database, written in the same
transaction as the action it records.

Each row stores `row_hash = HMAC-SHA256(key, prev_hash || canonical(row))`, so changing,
deleting or reordering any row breaks every hash after it; `verify_audit_chain` finds the first
bad row. The key lives outside the database (derived from the service's key-encryption key),
so even someone who can write the table cannot forge a consistent chain.
Writers serialise on a transaction-scoped advisory lock to extend the chain one at a time.
The database backs this up: the app role has INSERT/SELECT only and a trigger refuses
UPDATE/DELETE/TRUNCATE for everyone (see `audit_table_ddl`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from vaultpay_common.context import PRINCIPAL, REQUEST_ID

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "AuditQuery",
    "AuditRecord",
    "ChainVerification",
    "audit_table",
    "audit_table_ddl",
    "compute_row_hash",
    "list_audit_events",
    "verify_audit_chain",
    "verify_audit_table",
]

GENESIS_HASH = "0" * 64
_LOCK_KEY = 0x5641554C54  # "VAULT": one chain per database


def audit_table(metadata: MetaData) -> Table:
    return Table(
        "audit_events",
        metadata,
        Column("sequence", BigInteger, primary_key=True, autoincrement=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("actor_id", Text, nullable=False),
        Column("actor_role", Text, nullable=False),
        Column("action", Text, nullable=False),
        Column("target_type", Text, nullable=False),
        Column("target_id", Text, nullable=False),
        Column("request_id", Text, nullable=False),
        Column("details", JSONB, nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("row_hash", String(64), nullable=False),
    )


def audit_table_ddl(app_role: str) -> list[str]:
    """Statements (run by a migration as the table owner) that make the table append-only."""
    return [
        """
        CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """,
        """
        CREATE TRIGGER audit_events_no_update_delete
            BEFORE UPDATE OR DELETE ON audit_events
            FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()
        """,
        """
        CREATE TRIGGER audit_events_no_truncate
            BEFORE TRUNCATE ON audit_events
            FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change()
        """,
        "CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, sequence)",
        "CREATE INDEX audit_events_target_idx ON audit_events (target_id, sequence)",
        "CREATE INDEX audit_events_created_idx ON audit_events (created_at)",
        f'REVOKE ALL ON audit_events FROM "{app_role}"',
        f'GRANT SELECT, INSERT ON audit_events TO "{app_role}"',
    ]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited action. `details` must hold no secrets (PINs, passwords, tokens)."""

    action: str
    target_type: str
    target_id: str
    details: Mapping[str, str] = field(default_factory=dict)
    # Set when the actor is not the caller's principal, e.g. the user who just signed in
    # through a public RPC.
    actor_id: str = ""
    actor_role: str = ""


def _canonical(sequence: int, created_at: datetime, fields: Mapping[str, object]) -> bytes:
    body = {"sequence": sequence, "created_at": created_at.isoformat(), **fields}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def compute_row_hash(
    key: bytes, prev_hash: str, sequence: int, created_at: datetime, fields: Mapping[str, object]
) -> str:
    mac = hmac.new(key, prev_hash.encode(), hashlib.sha256)
    mac.update(_canonical(sequence, created_at, fields))
    return mac.hexdigest()


_HASHED = ("actor_id", "actor_role", "action", "target_type", "target_id", "request_id", "details")


class AuditLog:
    """Appends entries to one database's chain inside the caller's transaction."""

    def __init__(self, table: Table, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the audit chain key must be at least 32 bytes")
        self._table = table
        self._key = key

    async def append(self, conn: AsyncConnection, entry: AuditEntry) -> int:
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
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        last = (
            await conn.execute(
                select(self._table.c.sequence, self._table.c.row_hash)
                .order_by(self._table.c.sequence.desc())
                .limit(1)
            )
        ).first()
        sequence = 1 if last is None else last.sequence + 1
        prev_hash = GENESIS_HASH if last is None else last.row_hash
        created_at = datetime.now(UTC)
        fields: dict[str, object] = {
            "actor_id": actor_id,
            "actor_role": actor_role,
            "action": entry.action,
            "target_type": entry.target_type,
            "target_id": entry.target_id,
            "request_id": REQUEST_ID.get(),
            "details": dict(entry.details),
        }
        await conn.execute(
            self._table.insert().values(
                sequence=sequence,
                created_at=created_at,
                prev_hash=prev_hash,
                row_hash=compute_row_hash(self._key, prev_hash, sequence, created_at, fields),
                **fields,
            )
        )
        return sequence

    async def count(self, conn: AsyncConnection) -> int:
        return int((await conn.execute(select(func.count()).select_from(self._table))).scalar_one())


@dataclass(frozen=True, slots=True)
class ChainVerification:
    ok: bool
    rows_checked: int
    first_bad_sequence: int | None = None
    problem: str = ""


def verify_audit_chain(rows: Sequence[Mapping[str, object]], key: bytes) -> ChainVerification:
    """Checks rows (ordered by sequence) link up and each hash matches its content."""
    prev_hash = GENESIS_HASH
    expected_sequence = 1
    for row in rows:
        sequence = int(str(row["sequence"]))
        if sequence != expected_sequence:
            return ChainVerification(False, expected_sequence - 1, sequence, "gap in sequence")
        if row["prev_hash"] != prev_hash:
            return ChainVerification(False, sequence - 1, sequence, "prev_hash does not link")
        created_at = row["created_at"]
        if not isinstance(created_at, datetime):
            raise TypeError("created_at must be a datetime")
        fields = {name: row[name] for name in _HASHED}
        expected = compute_row_hash(key, prev_hash, sequence, created_at, fields)
        if not hmac.compare_digest(expected, str(row["row_hash"])):
            return ChainVerification(
                False, sequence - 1, sequence, "row content does not match hash"
            )
        prev_hash = str(row["row_hash"])
        expected_sequence += 1
    return ChainVerification(True, expected_sequence - 1)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for listing audit events; empty/None means "any"."""

    actor_id: str = ""
    action: str = ""
    target_id: str = ""
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    sequence: int
    created_at: datetime
    actor_id: str
    actor_role: str
    action: str
    target_type: str
    target_id: str
    request_id: str
    details: dict[str, str]
    row_hash: str


async def list_audit_events(
    conn: AsyncConnection,
    table: Table,
    query: AuditQuery,
    *,
    before_sequence: int | None,
    limit: int,
) -> list[AuditRecord]:
    """Newest first, keyset-paginated on sequence."""
    stmt = select(table)
    c = table.c
    if query.actor_id:
        stmt = stmt.where(c.actor_id == query.actor_id)
    if query.action:
        stmt = stmt.where(c.action == query.action)
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
            row_hash=row.row_hash,
        )
        for row in rows
    ]


async def verify_audit_table(conn: AsyncConnection, table: Table, key: bytes) -> ChainVerification:
    """Reads the whole chain in order and verifies it."""
    rows = await conn.execute(select(table).order_by(table.c.sequence))
    return verify_audit_chain([dict(row._mapping) for row in rows], key)
