"""Idempotency records in PostgreSQL, written in the same transaction as the effect.

A claim takes a transaction-scoped advisory lock on a 64-bit hash of the key, so two
concurrent calls with the same key never both run: the second finds the lock taken and is
told IDEMPOTENCY_KEY_IN_USE (ABORTED, retry). Once it holds the lock, a fresh READ COMMITTED
snapshot sees the record of a first call that already committed, so a retry gets the stored
reply. The record row itself is inserted by `save` in the same transaction as the effect;
its primary key is the last line of defence (a duplicate insert fails the whole transaction,
effect included, and is answered IN_USE).

Schema and privileges: `idempotency_table_ddl(app_role)` creates the table as platform p0002
did, `idempotency_service_ddl()` adds what p0003 added (run in that order by the platform
chain and the integration tests). The app role may SELECT, INSERT and DELETE (the cleanup
job); no UPDATE: a stored answer never changes.

Each record belongs to one service: `service` is a column PostgreSQL computes from `method`
(`idempotency_service` is its Python twin), so it is bound to the key itself and no caller
sets it. A gRPC method names its package ("/vaultpay.wallet.v1.WalletService/SetPin", and
wallet's "#reserve" keys that append to it); kyc's key-rotation CLI keys its runs
"cli:vaultpay-kyc/rotate-key". Stored replies can hold sensitive answers, so where the
services log in as roles of their own each service's chain adds
`idempotency_service_policy_ddl`: row-level security lets a service's role see, insert and
delete only its own service's records, and each service's cleanup purges only its own
(`purge_expired_idempotency_records(engine, service, ...)`, on the `(service, created_at)`
index). The table's owner is not bound (row-level security is not FORCEd): the migrations and
transfer's SECURITY DEFINER ledger functions, which write transfer's records as the owner (and
refuse any other service's method, transfer t0010). A method that names no service gives a NULL
service: only the owner sees it.

Records are kept at least 24 hours (`IDEMPOTENCY_RETENTION`), and not by the purge's guard
alone: `idempotency_retention_policy_ddl` (platform p0005) adds a restrictive DELETE policy for
every role, so once row-level security is on no role but the owner deletes a record younger
than that, whatever it asks (its own service's policy let it delete its own at any age, and a
retry would then have run the effect again). The purge's cut is never later than that.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta

from sqlalchemy import (
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.expression import Delete, TextClause

from vaultpay_common.clock import Clock
from vaultpay_common.db import delete_in_batches
from vaultpay_common.idempotency.model import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
)
from vaultpay_common.row_security import ServicePolicies

__all__ = [
    "IDEMPOTENCY_RETENTION",
    "SqlIdempotencyRecords",
    "delete_expired_idempotency_records",
    "expired_idempotency_records_delete",
    "idempotency_lock_key",
    "idempotency_retention_policy_ddl",
    "idempotency_retention_policy_drop_ddl",
    "idempotency_service",
    "idempotency_service_ddl",
    "idempotency_service_drop_ddl",
    "idempotency_service_policy_ddl",
    "idempotency_service_policy_drop_ddl",
    "idempotency_table",
    "idempotency_table_ddl",
    "idempotency_table_drop_ddl",
    "purge_expired_idempotency_records",
    "scope_lock_key",
]

IDEMPOTENCY_RETENTION = timedelta(hours=24)
_TABLE_NAME = "idempotency_records"
_UNIQUE_VIOLATION = "23505"
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
# Each service's role sees its own records (vaultpay_common.row_security).
_POLICIES = ServicePolicies(_TABLE_NAME, "idempotency", "service")
# No role but the owner deletes a record younger than the retention's floor (p0005). Not one of
# the services' policies: the switch of row-level security does not count it.
_RETENTION_POLICY = "idempotency_retention"
# IDEMPOTENCY_RETENTION as p0005 wrote it: a shipped migration's statement never changes (a test
# checks the two agree).
_RETENTION_FLOOR = "interval '24 hours'"


# The service a method names: its gRPC package's second part, or a CLI's "vaultpay-<service>".
# PostgreSQL computes the `service` column with this expression (immutable: regular-expression
# substrings only); `idempotency_service` is the same rule in Python.
_SERVICE_OF_METHOD = (
    r"COALESCE(substring(method FROM '^/vaultpay\.([a-z][a-z0-9_]*)\.'),"
    r" substring(method FROM '^cli:vaultpay-([a-z][a-z0-9_]*)/'))"
)
_SERVICE_PATTERN = re.compile(
    r"^(?:/vaultpay\.(?P<grpc>[a-z][a-z0-9_]*)\.|cli:vaultpay-(?P<cli>[a-z][a-z0-9_]*)/)"
)
_CREATED_INDEX = "idempotency_records_created_idx"
_SERVICE_INDEX = "idempotency_records_service_created_idx"


def idempotency_service(method: str) -> str | None:
    """The service a record of `method` belongs to, as PostgreSQL computes its `service`."""
    found = _SERVICE_PATTERN.match(method)
    if found is None:
        return None
    return found.group("grpc") or found.group("cli")


def _table(metadata: MetaData, *, with_service: bool) -> Table:
    service: list[Column[str] | Index] = [
        Column("service", Text, Computed(_SERVICE_OF_METHOD, persisted=True)),
        # What each service's cleanup reads: its own records, oldest first.
        Index(_SERVICE_INDEX, "service", "created_at"),
    ]
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
        *(service if with_service else [Index(_CREATED_INDEX, "created_at")]),
    )


def idempotency_table(metadata: MetaData) -> Table:
    """The table as it is at the platform chain's head (p0003's `service` and its index)."""
    return _table(metadata, with_service=True)


_records = idempotency_table(MetaData())
# As p0002 created it: `idempotency_table_ddl` must go on creating exactly that.
_records_p0002 = _table(MetaData(), with_service=False)


def _checked_role(app_role: str) -> str:
    if not _ROLE.match(app_role):
        raise ValueError(f"not a plain role name: {app_role!r}")
    return app_role


def idempotency_table_ddl(app_role: str) -> list[str]:
    """Statements that create the table as p0002 did and grant the app role what it needs;
    `idempotency_service_ddl` then brings it to the head's shape.

    Run in order by the table owner (the platform migration; integration tests).
    """
    role = _checked_role(app_role)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return [
        str(CreateTable(_records_p0002).compile(dialect=dialect)).strip(),
        *(str(CreateIndex(index).compile(dialect=dialect)) for index in _records_p0002.indexes),
        f'REVOKE ALL ON {_TABLE_NAME} FROM "{role}"',
        f'GRANT SELECT, INSERT, DELETE ON {_TABLE_NAME} TO "{role}"',
    ]


def idempotency_table_drop_ddl() -> list[str]:
    return [f"DROP TABLE IF EXISTS {_TABLE_NAME}"]


def idempotency_service_ddl() -> list[str]:
    """Platform p0003: the `service` column, computed from `method` (existing records get
    theirs as the table is rewritten), and the `(service, created_at)` index each service's
    cleanup reads, in place of the `created_at` one that only the cleanup used."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    (index,) = (index for index in _records.indexes if index.name == _SERVICE_INDEX)
    return [
        f"ALTER TABLE {_TABLE_NAME} ADD COLUMN service text"
        f" GENERATED ALWAYS AS ({_SERVICE_OF_METHOD}) STORED",
        str(CreateIndex(index).compile(dialect=dialect)),
        f"DROP INDEX IF EXISTS {_CREATED_INDEX}",
    ]


def idempotency_service_drop_ddl() -> list[str]:
    """p0003's downgrade. Fails while a service's policy still reads the column: the service
    chains' downgrades drop theirs first."""
    return [
        f"CREATE INDEX IF NOT EXISTS {_CREATED_INDEX} ON {_TABLE_NAME} (created_at)",
        f"DROP INDEX IF EXISTS {_SERVICE_INDEX}",
        f"ALTER TABLE {_TABLE_NAME} DROP COLUMN IF EXISTS service",
    ]


def idempotency_service_policy_ddl(service: str, app_role: str) -> list[str]:
    """`app_role` sees, inserts and deletes the records of `service` only, once row-level
    security is on: with the last service's policy (`vaultpay_common.row_security`; a role
    with no policy would see no record, so it stays off until every service's chain has
    added its own). Needs p0003's column. The owner is not bound (no FORCE): transfer's
    SECURITY DEFINER ledger functions insert transfer's records as the owner (t0010 lets
    them store transfer's methods only)."""
    return _POLICIES.add_ddl(service, app_role)


def idempotency_service_policy_drop_ddl(service: str) -> list[str]:
    """Drops `service`'s policy; row-level security goes off with it (`row_security`)."""
    return _POLICIES.drop_ddl(service)


def idempotency_retention_policy_ddl() -> list[str]:
    """Platform p0005: a RESTRICTIVE policy `FOR DELETE TO PUBLIC`, so a role deletes only the
    records created more than 24 hours before its transaction began, whatever its permissive
    policy (`idempotency_service_policy_ddl`, every command) allows. Restrictive, it grants
    nothing: a role still reaches only the rows its service's policy gives it, and it binds only
    while row-level security is on (with every service's policy, `row_security`; it is not one
    of those the switch counts). The owner is not bound (no FORCE). The purge deletes only what
    is older than its retention, at least 24 hours: the policy never holds back what it is due
    to delete (a record of exactly the cut, under a clock ahead of the database's, waits for the
    next run)."""
    return [
        f'DROP POLICY IF EXISTS "{_RETENTION_POLICY}" ON {_TABLE_NAME}',
        f'CREATE POLICY "{_RETENTION_POLICY}" ON {_TABLE_NAME} AS RESTRICTIVE FOR DELETE'
        f" TO PUBLIC USING (created_at < now() - {_RETENTION_FLOOR})",
    ]


def idempotency_retention_policy_drop_ddl() -> list[str]:
    """p0005's downgrade: the policy goes (row-level security stays as the services' policies
    have it)."""
    return [f'DROP POLICY IF EXISTS "{_RETENTION_POLICY}" ON {_TABLE_NAME}']


def idempotency_lock_key(key: IdempotencyKey) -> int:
    """The signed 64-bit advisory-lock id of a key (shared with any SQL function that claims
    keys itself, e.g. a one-round-trip transfer)."""
    return scope_lock_key(key.caller, key.method, key.request_id)


def scope_lock_key(caller: str, method: str, request_id: str) -> int:
    """The advisory-lock id of every key of (caller, method, request_id), whatever its request:
    the lock an attempt holds while it runs."""
    scope = "\x00".join(("idempotency", caller, method, request_id))
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


# One batch of a cleanup: the victims are a range of the `(service, created_at)` index, and
# their row addresses take the DELETE straight to them (a TID scan). Matching them by primary
# key instead let the planner hash-join a scan of the whole table, every batch. The addresses
# are taken and used by one statement, whose snapshot keeps them from being reused; records are
# never updated, and a row another purge deleted first is skipped. The batch size is written
# into the SQL and the victims taken oldest first: asyncpg prepares the statement, and its
# generic plan, blind to a LIMIT parameter and to how much of the table is due, scanned the
# whole table (a review of 2026-12-04); ordered by the index's own column, it keeps to it.
_DELETE_BATCH = (
    "DELETE FROM idempotency_records WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM idempotency_records"
    " WHERE service = :service AND created_at < :older_than"
    " ORDER BY created_at LIMIT {batch_size}))"
)


def expired_idempotency_records_delete(
    service: str, older_than: datetime, *, batch_size: int | None = None
) -> Delete | TextClause:
    """The statement that deletes `service`'s records created before `older_than` (at most
    `batch_size`), reading them from the `(service, created_at)` index."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be an aware datetime")
    if not _ROLE.match(service):
        raise ValueError(f"not a plain name: {service!r}")
    if batch_size is None:
        return delete(_records).where(
            _records.c.service == service, _records.c.created_at < older_than
        )
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return text(_DELETE_BATCH.format(batch_size=int(batch_size))).bindparams(
        bindparam("service", service, type_=Text),
        bindparam("older_than", older_than, type_=DateTime(timezone=True)),
    )


async def delete_expired_idempotency_records(
    conn: AsyncConnection, service: str, older_than: datetime, *, batch_size: int | None = None
) -> int:
    """Deletes `service`'s records created before `older_than` (at most `batch_size`); returns
    how many. Other services' records are theirs to clean up (and, where each logs in as a
    role of its own, row-level security hides them anyway)."""
    statement = expired_idempotency_records_delete(service, older_than, batch_size=batch_size)
    result = await conn.execute(statement)
    return int(result.rowcount)


async def purge_expired_idempotency_records(
    engine: AsyncEngine,
    service: str,
    *,
    clock: Clock,
    retention: timedelta = IDEMPOTENCY_RETENTION,
    batch_size: int = 5_000,
) -> int:
    """The cleanup job of `service`: deletes its records older than `retention` in short
    batches.

    Each batch is its own transaction so the job never holds many row locks or a long
    transaction next to the money path. Returns the number of records deleted. Only
    `service`'s: every service runs its own job, and a role under row-level security could
    not delete another's records anyway.
    """
    if retention < IDEMPOTENCY_RETENTION:
        raise ValueError("idempotency records must be kept at least 24 hours")
    older_than = clock.now() - retention
    return await delete_in_batches(
        engine,
        lambda conn: delete_expired_idempotency_records(
            conn, service, older_than, batch_size=batch_size
        ),
        batch_size,
    )
