"""The revocation feed's table: read in one consistent snapshot, purged when nobody needs it;
and the LISTEN link that wakes held polls when a revocation commits.

The rows are written by a trigger on `sessions` (sql/revocations.sql), in the transaction that
revokes the session; this module only reads and purges them. Why the cursor is a transaction
horizon is explained in `vaultpay_auth.domain.revocations`.

A read is one constant autocommit SELECT on a pooled connection's raw asyncpg driver: one
statement, so its rows and its horizon (`pg_current_snapshot()`) come from one snapshot, and
asyncpg keeps it prepared per connection. Every peer polls it four times a second; built and
compiled through SQLAlchemy each time, it cost auth ~50 ms of CPU per second on an idle mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import timedelta
from importlib.resources import files
from typing import Any

import asyncpg
from sqlalchemy import Integer, Interval, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_auth.domain.revocations import FeedCursor, FeedRead, FeedRow, RevokedSession
from vaultpay_common.audit.tables import split_sql
from vaultpay_common.db import DatabaseUnavailableError, delete_in_batches
from vaultpay_common.pg_failures import LOST_CONNECTION
from vaultpay_common.pg_raw import borrowed_driver

__all__ = [
    "REVOCATION_CHANNEL",
    "PgRevocationNotices",
    "SqlRevocationFeed",
    "revocation_feed_ddl",
    "revocation_feed_drop_ddl",
]

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
_DROP = [
    "DROP TRIGGER IF EXISTS sessions_feed_revocation ON sessions",
    "DROP FUNCTION IF EXISTS sessions_feed_revocation()",
    "DROP TABLE IF EXISTS session_revocations",
]


# What the revoking transaction NOTIFYs at COMMIT (migration 0005's trigger function).
REVOCATION_CHANNEL = "vaultpay_auth_session_revocations"
_PROBE_TIMEOUT = 2.0

_MAX_BIGINT = 2**63 - 1

# The snapshot's horizon and newest id joined with the page (LEFT JOIN on a one-row anchor: the
# horizon comes back even when no row does), in (xact_id, sequence) order, and on every row the
# signing keys withdrawn within the look-back (auth 0008; a handful of rows, a scan of a tiny
# table). xid8 travels as text both ways. Parameters:
# $1 look-back (interval), $2 limit, then the cursor: $3 horizon; or $3 a snapshot's xmax and
# $4 the transactions it saw running; or $3 xact_id and $4 sequence of the last row delivered.
_READ = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon,
       pg_snapshot_xmax(pg_current_snapshot())::text AS newest,
       (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint AS incarnation,
       ARRAY(SELECT x::text FROM pg_snapshot_xip(pg_current_snapshot()) AS x) AS in_progress,
       anchor.withdrawn,
       page.xact_id, page.sequence, page.session_id, page.user_id, page.revoked_at, page.reason
FROM (
    SELECT ARRAY(
        SELECT k.kid FROM signing_keys k
        WHERE k.withdrawn_at > clock_timestamp() - $1::interval
        ORDER BY k.kid
    ) AS withdrawn
) AS anchor
LEFT JOIN (
    SELECT r.xact_id::text AS xact_id, r.sequence, r.session_id, r.user_id, r.revoked_at,
           r.reason
    FROM session_revocations r
    WHERE r.recorded_at > clock_timestamp() - $1::interval
      AND {cursor}
    ORDER BY r.xact_id, r.sequence
    LIMIT $2::bigint
) AS page ON true
ORDER BY page.xact_id::xid8, page.sequence
"""
_READ_FROM_HORIZON = _READ.format(cursor="r.xact_id >= $3::text::xid8")
_READ_FROM_SNAPSHOT = _READ.format(
    cursor="(r.xact_id >= $3::text::xid8 OR r.xact_id = ANY($4::text[]::xid8[]))"
)
_READ_AFTER = _READ.format(cursor="(r.xact_id, r.sequence) > ($3::text::xid8, $4::bigint)")


# One batch of the purge: the oldest rows by `session_revocations_recorded_idx`, deleted by
# their addresses (a TID scan), as the idempotency purge does. The cut is the database's clock,
# the one `recorded_at` was written with, read as statement_timestamp(): a stable function is
# an index condition (a range of the index); clock_timestamp(), volatile, made every batch walk
# the whole index, filtering.
_PURGE_BATCH = text(
    "DELETE FROM session_revocations WHERE ctid = ANY(ARRAY("
    "SELECT r.ctid FROM session_revocations r"
    " WHERE r.recorded_at < statement_timestamp() - CAST(:older_than AS interval)"
    " ORDER BY r.recorded_at LIMIT :batch_size))"
).bindparams(
    bindparam("older_than", type_=Interval()),
    bindparam("batch_size", type_=Integer),
)


def revocation_feed_ddl(app_role: str) -> list[str]:
    """Statements creating the feed table, its trigger on `sessions`, and `app_role`'s grants."""
    if not _ROLE.match(app_role):
        raise ValueError(f"unsafe role name {app_role!r}")
    script = files("vaultpay_auth.adapters").joinpath("sql", "revocations.sql")
    return split_sql(script.read_text(encoding="utf-8").replace("__APP_ROLE__", f'"{app_role}"'))


def revocation_feed_drop_ddl() -> list[str]:
    return list(_DROP)


class SqlRevocationFeed:
    """Implements RevocationFeedReader on auth's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def read(self, cursor: FeedCursor, *, limit: int, look_back: timedelta) -> FeedRead:
        """Up to `limit` rows after `cursor` recorded within `look_back`, with the horizon of
        the same snapshot (one statement: in READ COMMITTED a statement sees one snapshot).

        Raises DatabaseUnavailableError when no connection can be had or it is lost mid-read."""
        args: tuple[object, ...]
        if cursor.after is None and cursor.in_progress is None:
            sql, args = _READ_FROM_HORIZON, (look_back, limit, str(cursor.horizon))
        elif cursor.after is None:
            running = [str(n) for n in cursor.in_progress or ()]
            sql, args = _READ_FROM_SNAPSHOT, (look_back, limit, str(cursor.horizon), running)
        else:
            xact, sequence = cursor.after
            # No row has a sequence above bigint's range, so clamping changes no answer.
            sql, args = _READ_AFTER, (look_back, limit, str(xact), min(sequence, _MAX_BIGINT))
        try:
            async with borrowed_driver(self._engine) as driver:
                found: list[asyncpg.Record] = await driver.fetch(sql, *args)
        except LOST_CONNECTION as exc:
            raise DatabaseUnavailableError() from exc
        first = found[0]
        return FeedRead(
            horizon=int(first["horizon"]),
            newest=int(first["newest"]),
            incarnation=int(first["incarnation"]),
            withdrawn_keys=tuple(first["withdrawn"]),
            in_progress=tuple(int(n) for n in first["in_progress"]),
            rows=[
                FeedRow(
                    int(row["xact_id"]),
                    int(row["sequence"]),
                    RevokedSession(
                        str(row["session_id"]),
                        str(row["user_id"]),
                        row["revoked_at"],
                        row["reason"],
                    ),
                )
                for row in found
                if row["sequence"] is not None
            ],
        )

    async def purge(self, older_than: timedelta, *, batch_size: int = 5_000) -> int:
        """Deletes rows recorded more than `older_than` ago (no poller can need them any more),
        at most `batch_size` a transaction; returns how many.

        A burst of revocations (a mass deactivation, a role change of many) can leave many rows
        due at once: one DELETE would hold their locks in one long transaction."""

        async def one_batch(conn: AsyncConnection) -> int:
            params = {"older_than": older_than, "batch_size": batch_size}
            return int((await conn.execute(_PURGE_BATCH, params)).rowcount)

        return await delete_in_batches(self._engine, one_batch, batch_size)


class PgRevocationNotices:
    """Implements RevocationNotices: one LISTEN connection on REVOCATION_CHANNEL.

    Run `listen()` as a restarting job (`runtime.every`): it holds the link until cancelled,
    probes it every `probe_interval` seconds so a dead one is noticed, and raises when it is
    lost, after waking every held poll (they are answered from a read at once, and polls are
    not held again until the link is back).
    """

    def __init__(self, engine: AsyncEngine, *, probe_interval: float = 5.0) -> None:
        self._engine = engine
        self._probe_interval = probe_interval
        self._generation = 0
        self._next = asyncio.Event()
        self._listening = False

    @property
    def listening(self) -> bool:
        return self._listening

    @property
    def generation(self) -> int:
        return self._generation

    async def wait_past(self, generation: int) -> None:
        if generation == self._generation and self._listening:
            await self._next.wait()

    def _heard(self, *_: object) -> None:
        self._generation += 1
        heard, self._next = self._next, asyncio.Event()
        heard.set()

    async def listen(self) -> None:
        async with self._engine.connect() as conn:
            try:
                raw: Any = (await conn.get_raw_connection()).driver_connection
                await raw.add_listener(REVOCATION_CHANNEL, self._heard)
                raw.add_termination_listener(self._heard)
                self._listening = True
                while True:
                    await asyncio.sleep(self._probe_interval)
                    # A dead link raises here (and ends the job) instead of going quiet.
                    async with asyncio.timeout(_PROBE_TIMEOUT):
                        await raw.fetchval("SELECT 1")
            finally:
                self._listening = False
                self._heard()  # held polls read now rather than at their timeout
                # The LISTEN connection never goes back to the pool.
                with contextlib.suppress(Exception):
                    await conn.invalidate()
