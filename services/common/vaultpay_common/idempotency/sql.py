"""Idempotency records in PostgreSQL, written in the same transaction as the effect.

A claim takes a transaction-scoped advisory lock on a 64-bit hash of the key, so two
concurrent calls with the same key never both run: the second finds the lock taken and is
told IDEMPOTENCY_KEY_IN_USE (ABORTED, retry). Once it holds the lock, a fresh READ COMMITTED
snapshot sees the record of a first call that already committed, so a retry gets the stored
reply. The record row itself is inserted by `save` in the same transaction as the effect;
its primary key is the last line of defence (a duplicate insert fails the whole transaction,
effect included, and is answered IN_USE).

Schema and privileges: `idempotency_table_ddl(app_role)` (run by the platform migration and
the integration tests). The app role may SELECT, INSERT and DELETE (the cleanup job); no
UPDATE: a stored answer never changes.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable

from vaultpay_common.clock import Clock
from vaultpay_common.idempotency.model import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
)

__all__ = [
    "IDEMPOTENCY_RETENTION",
    "SqlIdempotencyRecords",
    "delete_expired_idempotency_records",
    "idempotency_lock_key",
    "idempotency_table",
    "idempotency_table_ddl",
    "idempotency_table_drop_ddl",
    "purge_expired_idempotency_records",
]

IDEMPOTENCY_RETENTION = timedelta(hours=24)
_TABLE_NAME = "idempotency_records"
_UNIQUE_VIOLATION = "23505"
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


def idempotency_table(metadata: MetaData) -> Table:
    return Table(
        _TABLE_NAME,
        metadata,
        Column("caller", Text, nullable=False),
        Column("method", Text, nullable=False),
        Column("request_id", UUID(as_uuid=False), nullable=False),
        Column("fingerprint", Text, nullable=False),
        Column("reply", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("caller", "method", "request_id", name="idempotency_records_pkey"),
        CheckConstraint(
            "fingerprint ~ '^[0-9a-f]{64}$'", name="idempotency_records_fingerprint_sha256"
        ),
        Index("idempotency_records_created_idx", "created_at"),
    )


_records = idempotency_table(MetaData())


def _checked_role(app_role: str) -> str:
    if not _ROLE.match(app_role):
        raise ValueError(f"not a plain role name: {app_role!r}")
    return app_role


def idempotency_table_ddl(app_role: str) -> list[str]:
    """Statements that create the table and its index and grant the app role what it needs.

    Run in order by the table owner (the platform migration; integration tests).
    """
    role = _checked_role(app_role)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return [
        str(CreateTable(_records).compile(dialect=dialect)).strip(),
        *(str(CreateIndex(index).compile(dialect=dialect)) for index in _records.indexes),
        f'REVOKE ALL ON {_TABLE_NAME} FROM "{role}"',
        f'GRANT SELECT, INSERT, DELETE ON {_TABLE_NAME} TO "{role}"',
    ]


def idempotency_table_drop_ddl() -> list[str]:
    return [f"DROP TABLE IF EXISTS {_TABLE_NAME}"]


def idempotency_lock_key(key: IdempotencyKey) -> int:
    """The signed 64-bit advisory-lock id of a key (shared with any SQL function that claims
    keys itself, e.g. a one-round-trip transfer)."""
    scope = "\x00".join(("idempotency", key.caller, key.method, key.request_id))
    return int.from_bytes(hashlib.sha256(scope.encode()).digest()[:8], "big", signed=True)


class SqlIdempotencyRecords:
    """`IdempotencyRecords` on the unit of work's connection (inside its transaction)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def claim(self, key: IdempotencyKey) -> bytes | None:
        locked = await self._conn.scalar(
            text("SELECT pg_try_advisory_xact_lock(CAST(:lock AS bigint))"),
            {"lock": idempotency_lock_key(key)},
        )
        if not locked:
            raise IdempotencyKeyInUseError()
        # A new statement, so a new READ COMMITTED snapshot taken after the lock was granted:
        # a first call that held the lock has committed (or rolled back) by now.
        row = (
            await self._conn.execute(
                select(_records.c.fingerprint, _records.c.reply).where(
                    _records.c.caller == key.caller,
                    _records.c.method == key.method,
                    _records.c.request_id == key.request_id,
                )
            )
        ).one_or_none()
        if row is None:
            return None
        if row.fingerprint != key.fingerprint:
            raise IdempotencyKeyReusedError()
        return bytes(row.reply)

    async def save(self, key: IdempotencyKey, reply: bytes) -> None:
        try:
            await self._conn.execute(
                insert(_records).values(
                    caller=key.caller,
                    method=key.method,
                    request_id=key.request_id,
                    fingerprint=key.fingerprint,
                    reply=reply,
                )
            )
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", "") != _UNIQUE_VIOLATION:
                raise
            # Only reachable when the key was not claimed under the lock in this transaction
            # (e.g. a REPEATABLE READ snapshot older than the first call's commit). The
            # transaction, effect included, is lost; a retry replays the stored answer.
            raise IdempotencyKeyInUseError() from exc


async def delete_expired_idempotency_records(
    conn: AsyncConnection, older_than: datetime, *, batch_size: int | None = None
) -> int:
    """Deletes records created before `older_than` (at most `batch_size`); returns how many."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be an aware datetime")
    condition = _records.c.created_at < older_than
    if batch_size is None:
        statement = delete(_records).where(condition)
    else:
        pk = (_records.c.caller, _records.c.method, _records.c.request_id)
        victims = select(*pk).where(condition).limit(batch_size)
        statement = delete(_records).where(tuple_(*pk).in_(victims))
    result = await conn.execute(statement)
    return int(result.rowcount)


async def purge_expired_idempotency_records(
    engine: AsyncEngine,
    *,
    clock: Clock,
    retention: timedelta = IDEMPOTENCY_RETENTION,
    batch_size: int = 5_000,
) -> int:
    """The cleanup job: deletes records older than `retention` in short batches.

    Each batch is its own transaction so the job never holds many row locks or a long
    transaction next to the money path. Returns the number of records deleted.
    """
    if retention < IDEMPOTENCY_RETENTION:
        raise ValueError("idempotency records must be kept at least 24 hours")
    older_than = clock.now() - retention
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = await delete_expired_idempotency_records(
                conn, older_than, batch_size=batch_size
            )
        total += deleted
        if deleted < batch_size:
            return total
