"""A service starts serving only once its database has this code's migrations.

The releases run each service's `migrate` before its new code (the compose file's
`*-migrate` services, the Kubernetes release's migration Job), but nothing in the process held
to it: a pod of new code started against an old schema (a Job still running or failed, an
image rolled out by hand) served, and its first money movement failed on a function or column
that was not there yet, as INTERNAL. Now the server reads each chain's version table before it
binds its port: while one is behind this code's head the process waits (no port: readiness
fails, Envoy and the Service send it nothing), says why every `report_every` seconds, and
serves as soon as the migration has committed.

A chain *ahead* of the code (a revision the code does not know: a newer release migrated
first) is served: every migration keeps the previous release's code working (expand, then
contract in a later release), which is what lets a rollout run old and new code side by side.

    await wait_for_schema(dsn, [PLATFORM_CHAIN, WALLET_CHAIN], stop=stopping)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from vaultpay_common.migrations import SQL_NAME, MigrationChain
from vaultpay_common.pg_failures import LOST_CONNECTION

__all__ = [
    "ChainSchema",
    "SchemaState",
    "code_revisions",
    "judge",
    "read_applied",
    "wait_for_schema",
]

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
REPORT_EVERY_SECONDS = 30.0
READ_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 1.0


class SchemaState(enum.Enum):
    CURRENT = "current"
    BEHIND = "behind"  # not migrated, or at a revision older than the code's head
    AHEAD = "ahead"  # at a revision the code does not know (a newer release's)


@dataclass(frozen=True, slots=True)
class ChainSchema:
    """What this code knows of one chain: its version table, head and every revision."""

    name: str
    version_table: str
    head: str
    revisions: frozenset[str]


def code_revisions(chain: MigrationChain) -> ChainSchema:
    """`chain`'s head and revisions, read from its scripts (the image ships them)."""
    quiet = logging.getLogger("alembic")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its plugins' set-up, on import, logs a line each
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(chain.script_location))
        scripts = ScriptDirectory.from_config(config)
    finally:
        quiet.setLevel(level)
    heads = scripts.get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migration chain {chain.name} has {len(heads)} heads: {heads}")
    revisions = frozenset(script.revision for script in scripts.walk_revisions())
    return ChainSchema(chain.name, chain.version_table, heads[0], revisions)


def judge(schema: ChainSchema, applied: Sequence[str]) -> SchemaState:
    """Where a database whose version table holds `applied` stands against `schema`."""
    if schema.head in applied:
        return SchemaState.CURRENT
    if any(revision not in schema.revisions for revision in applied):
        return SchemaState.AHEAD
    return SchemaState.BEHIND


async def read_applied(conn: asyncpg.Connection, version_table: str) -> list[str]:
    """The revisions `version_table` records; none when the table is missing or this role may
    not read it (a database migrated before `migrate` granted it: behind this code)."""
    if not SQL_NAME.match(version_table):
        raise ValueError(f"unsafe version table name {version_table!r}")
    try:
        rows = await conn.fetch(f"SELECT version_num FROM {version_table}")  # noqa: S608 (name checked)
    except (asyncpg.UndefinedTableError, asyncpg.InsufficientPrivilegeError):
        return []
    return [str(row["version_num"]) for row in rows]


async def wait_for_schema(
    dsn: str,
    chains: Sequence[MigrationChain],
    *,
    stop: asyncio.Event,
    poll_seconds: float = POLL_SECONDS,
    report_every: float = REPORT_EVERY_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> bool:
    """Waits until no chain of `chains` is behind this code, polling every `poll_seconds`;
    True then, False as soon as `stop` is set (a read in progress is abandoned). A database
    it cannot reach, or a read that outlasts `read_timeout` (a failover, a paused VM), is
    waited for too, said the same way. A chain ahead is logged once and served."""
    schemas = [code_revisions(chain) for chain in chains]
    last_report = float("-inf")
    while not stop.is_set():
        try:
            states = await _unless_stopped(
                _read_states(dsn, schemas, read_timeout), stop, read_timeout
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, *LOST_CONNECTION) as exc:
            problem = f"database not reachable ({type(exc).__name__})"
        else:
            if states is None:
                return False
            behind = [s for s in states if s.state is SchemaState.BEHIND]
            if not behind:
                for ahead in (s for s in states if s.state is SchemaState.AHEAD):
                    log.info(
                        "database schema ahead of this code (a newer release migrated it)",
                        extra={"chain": ahead.schema.name, "applied": ahead.applied},
                    )
                return True
            problem = "; ".join(
                f"{s.schema.name} at {','.join(s.applied) or 'none'},"
                f" this code needs {s.schema.head}"
                for s in behind
            )
        now = time.monotonic()
        if now - last_report >= report_every:
            log.warning(
                "waiting for migrations before serving",
                extra={"behind": problem, "hint": "run this service's migrate command"},
            )
            last_report = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_seconds)
    return False


T = TypeVar("T")


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event, within: float) -> T | None:
    """`work`'s result; None once `stop` is set (`work` cancelled); TimeoutError after
    `within` seconds. A stop that comes while the work finishes wins: nothing starts after
    it."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if stop.is_set() or not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if stop.is_set():
            return None
        raise TimeoutError
    return task.result()


@dataclass(frozen=True, slots=True)
class _Read:
    schema: ChainSchema
    applied: list[str]
    state: SchemaState


async def _read_states(dsn: str, schemas: Sequence[ChainSchema], within: float) -> list[_Read]:
    conn = await asyncpg.connect(dsn, timeout=within, command_timeout=within)
    try:
        reads = []
        for schema in schemas:
            applied = await read_applied(conn, schema.version_table)
            reads.append(_Read(schema, applied, judge(schema, applied)))
    except BaseException:
        conn.terminate()  # a cancelled or failed read waits for no goodbye
        raise
    try:  # the answer is in: a goodbye that is not acknowledged changes nothing
        await conn.close(timeout=CLOSE_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, *LOST_CONNECTION):
        conn.terminate()
    return reads
