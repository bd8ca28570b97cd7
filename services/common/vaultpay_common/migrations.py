"""Alembic for every service: one env, parameterised by metadata, and named migration chains.

A database can hold several chains, each with its own version table: the shared `vaultpay`
database has the platform's (audit, outbox, idempotency records) plus one per service that owns
tables there. A service's `migrate` command upgrades its chains in order:

    upgrade_all([PLATFORM_CHAIN, WALLET_CHAIN], owner_url, app_role)

Each chain grants what it creates to one role, its migrations' `app_role`. The services of one
database may log in as roles of their own (`chain_roles`: wallet's tables to wallet's role,
transfer's to transfer's, the platform's shared tables to a group role every service's role is
a member of): then a compromised kyc cannot call the ledger's functions or read a PIN hash.
Without `chain_roles` every chain grants to the one `app_role`. A chain's migrations also see
the platform's role (`shared_role`), which `move_privileges_ddl` moves a service's grants from
when a database that used one role for everything takes roles of its own.

Migrations of one database take turns (a session-level advisory lock, polled), and each
revision runs in a transaction of its own: a chain that fails at a revision keeps the ones
before it (its version table says which), and a revision may run statements that must not be
in a transaction (`concurrently()`, Alembic's autocommit block: CREATE INDEX CONCURRENTLY,
VALIDATE CONSTRAINT).

Every lock a migration waits for is waited for LOCK_WAIT_LIMIT at most (`lock_timeout`, set
for the migration's session): a revision's DDL queued behind a long transaction fails, rolled
back, instead of queueing every read and write of the table behind its lock request. Only
`concurrently()` blocks wait without bound (their statements take SHARE UPDATE EXCLUSIVE,
which no read or write queues behind, and a CONCURRENTLY build must outwait every older
transaction).

Each chain's `env.py` is two lines:

    from vaultpay_common.migrations import run_env
    run_env(metadata)

A service chain also names what it grants its service's role (`isolation=`, a
`vaultpay_common.chain_isolation.ChainIsolation`): with `chain_roles`, `upgrade_all` has each
such chain, after its upgrade and in the same turn, move what the group role still holds of it
to the service's role and point the service's row-level policies at that role, at every run,
so that a database first migrated with one role for everything is isolated too, not only one
whose role revisions ran with chain roles set (`reconcile_chain`).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import asyncpg
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from vaultpay_common.audit.tables import split_sql
from vaultpay_common.db import asyncpg_dsn

if TYPE_CHECKING:
    from vaultpay_common.chain_isolation import ChainIsolation

__all__ = [
    "LOCK_WAIT_LIMIT",
    "PLATFORM_CHAIN",
    "SQL_NAME",
    "MigrationChain",
    "concurrently",
    "limit_lock_waits",
    "migrate_chain",
    "move_privileges_ddl",
    "refuse_to_drop_rows",
    "run_env",
    "unnamed_chains",
    "upgrade_all",
]

# Held while migrating, so two services migrating one database at once take turns.
_MIGRATION_LOCK = 0x4D494752  # "MIGR"
_TURN_POLL_SECONDS = 0.2
# Who holds the migration lock of this database: an advisory lock on one bigint shows in
# pg_locks (cluster-wide) as classid = its high 32 bits, objid = its low 32 bits, objsubid 1.
_LOCK_HOLDER = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1 LIMIT 1"
).bindparams(high=_MIGRATION_LOCK >> 32, low=_MIGRATION_LOCK & 0xFFFFFFFF)
# A plain, unquoted PostgreSQL name: what our SQL may interpolate (roles, tables, functions).
SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


@dataclass(frozen=True, slots=True)
class MigrationChain:
    """One Alembic history: where its scripts are and which table records its head."""

    name: str
    script_location: Path
    version_table: str = "alembic_version"


PLATFORM_CHAIN = MigrationChain(
    "platform", Path(__file__).parent / "platform_migrations", "alembic_version_platform"
)


def migrate_chain(
    chain: MigrationChain,
    url: str,
    app_role: str,
    *,
    shared_role: str | None = None,
    action: Literal["upgrade", "downgrade"] = "upgrade",
    revision: str = "head",
    isolate: bool = False,
    drop_data: bool = False,
) -> None:
    """Runs one chain's migrations (`action`) to `revision`, as the table owner (`url`),
    granting to `app_role`; `shared_role` is the platform chain's role (default: `app_role`).
    A downgrade that would drop a table holding rows stops unless `drop_data` says to drop
    them (`refuse_to_drop_rows`).
    `isolate` (an upgrade to head only): then, in the same turn, a chain whose env.py names
    its isolation moves to `app_role` what `shared_role` still holds of it and points its
    service's policies at `app_role` (`vaultpay_common.chain_isolation`).

    Synchronous, and Alembic runs an event loop of its own: from async code, call it in a
    thread (`asyncio.to_thread`)."""
    from alembic import command
    from alembic.config import Config

    if isolate and (action, revision) != ("upgrade", "head"):
        raise ValueError("isolate follows an upgrade to head only")
    config = Config()
    config.set_main_option("script_location", str(chain.script_location))
    config.attributes.update(
        database_url=url,
        app_role=app_role,
        shared_role=shared_role or app_role,
        version_table=chain.version_table,
        isolate=isolate,
        drop_data=drop_data,
    )
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def upgrade_all(
    chains: Sequence[MigrationChain],
    url: str,
    app_role: str,
    *,
    chain_roles: Mapping[str, str] | None = None,
) -> None:
    """Upgrades each chain to its head, in order, as the table owner (`url`).

    Without `chain_roles` every chain grants to `app_role`, as before. With it, each chain
    grants to the role it names, and it must name every chain given and the platform's: a
    chain left out would grant to `app_role` (transfer's `migrate` runs the wallet chain, which
    would hand wallet's tables to transfer's role). Each service chain is then isolated at
    every run (`migrate_chain`'s `isolate`): what the platform's role still holds of it moves
    to its role, and its policies name its role, whatever the database was migrated with
    before; a line is printed per change."""
    roles = chain_roles or {}
    missing = unnamed_chains(chains, roles)
    if missing:
        raise ValueError(f"chain_roles names no role for: {', '.join(missing)}")
    for chain in chains:
        role = roles.get(chain.name, app_role)
        migrate_chain(
            chain,
            url,
            role,
            shared_role=roles.get(PLATFORM_CHAIN.name, app_role),
            isolate=bool(roles),
        )


def unnamed_chains(chains: Sequence[MigrationChain], chain_roles: Mapping[str, str]) -> list[str]:
    """The chains (the platform's included) that a non-empty `chain_roles` names no role for."""
    if not chain_roles:
        return []
    needed = dict.fromkeys([PLATFORM_CHAIN.name, *(chain.name for chain in chains)])
    return [name for name in needed if name not in chain_roles]


def move_privileges_ddl(
    *, tables: Sequence[str], functions: Sequence[str], from_role: str, to_role: str
) -> list[str]:
    """Statements giving `to_role` every privilege `from_role` holds on `tables` (their
    columns included) and on the functions named `functions` (every overload), then revoking
    them from `from_role`. Nothing when the two roles are one."""
    for name in (*tables, *functions, from_role, to_role):
        if not SQL_NAME.match(name):
            raise ValueError(f"unsafe SQL name {name!r}")
    if from_role == to_role:
        return []
    script = files("vaultpay_common").joinpath("sql", "move_privileges.sql").read_text("utf-8")
    filled = (
        script.replace("__FROM_ROLE__", f"'\"{from_role}\"'")
        .replace("__TO_ROLE__", f"'{to_role}'")
        .replace("__TABLES__", _text_array(tables))
        .replace("__FUNCTIONS__", _text_array(functions))
    )
    return split_sql(filled)


# How long a migration waits for any lock (see `run_env`, `limit_lock_waits`, `concurrently`).
LOCK_WAIT_LIMIT = "5s"


def limit_lock_waits() -> None:
    """The first step of a revision whose DDL takes a strong lock on a table the services write
    (ALTER TABLE, CREATE TRIGGER: ACCESS EXCLUSIVE, SHARE ROW EXCLUSIVE). Such a lock request
    waits behind every transaction holding the table, however long (a `verify-ledger` reading
    for half an hour, a `pg_dump`), and every later lock on the table queues behind it: every
    movement, PIN check or submission stalled to its statement timeout while `migrate` merely
    looked slow (review of 2026-12-05). With a bound, the migration fails within
    LOCK_WAIT_LIMIT instead (`lock_not_available`), nothing half-done (its transaction rolls
    back), to be run again when the long reader is over.

    `run_env` now sets that bound for the whole migration session, so every revision has it,
    those written before this helper included (a later review found t0002, t0003, t0011,
    t0017, k0006 and auth 0003, 0004, 0008 locking busy tables without it); this SET LOCAL
    says so where a revision takes such a lock, and holds whatever the session's setting.
    Statements that must outwait older transactions (CREATE INDEX CONCURRENTLY) run in
    `concurrently()`, which lifts the bound for its block only."""
    from alembic import op

    op.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_LIMIT}'")


@contextmanager
def concurrently() -> Iterator[None]:
    """Alembic's autocommit block (the revision's transaction so far is committed, each
    statement inside commits on its own), with lock waits unbounded inside it: for CREATE INDEX
    CONCURRENTLY, DROP INDEX CONCURRENTLY and VALIDATE CONSTRAINT, which take SHARE UPDATE
    EXCLUSIVE only (reads and writes of the table go on, and none queues behind the request).

    A CONCURRENTLY build waits for every transaction older than each of its phases as a lock
    wait (on their virtual transaction ids), which `lock_timeout` cuts short: under the
    session's LOCK_WAIT_LIMIT a build behind a five-second report would fail, leave an INVALID
    index, and fail again at every run while the database is busy. So `lock_timeout` is 0 in
    the block, and LOCK_WAIT_LIMIT again after it (`statement_timeout` is left as it is). On an
    error the setting is left to the failed run, whose session ends."""
    from alembic import op

    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = 0")
        yield
        op.execute(f"SET lock_timeout = '{LOCK_WAIT_LIMIT}'")


def refuse_to_drop_rows(*tables: str) -> None:
    """The first step of a downgrade that drops `tables`: it stops, naming those that hold
    rows, unless the migration was asked to drop data (`migrate_chain(..., drop_data=True)`).

    A downgrade to base used to drop the ledger, the wallets or the audit trail whatever they
    held. The tables are locked (SHARE: writers wait) before they are looked at, so a row a
    service commits meanwhile is either seen or waits for the drop to be refused or done; the
    lock lasts to the end of the revision's transaction, which drops them."""
    from alembic import context, op

    if context.config.attributes.get("drop_data"):
        return
    for table in tables:
        if not SQL_NAME.match(table):
            raise ValueError(f"not a table name: {table!r}")
    checks = " ".join(
        f"IF EXISTS (SELECT FROM {table}) THEN holding := holding || '{table}'::text; END IF;"
        for table in tables
    )
    op.execute(
        "DO $refuse$ DECLARE holding text[] := '{}'; BEGIN "
        f"LOCK TABLE {', '.join(tables)} IN SHARE MODE; "
        f"{checks} IF cardinality(holding) > 0 THEN RAISE EXCEPTION USING"
        " ERRCODE = 'object_not_in_prerequisite_state',"
        " MESSAGE = 'this downgrade drops tables that hold rows: '"
        " || array_to_string(holding, ', '),"
        " HINT = 'back them up; migrate_chain(..., drop_data=True) drops them';"
        " END IF; END $refuse$"
    )


def _text_array(names: Sequence[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{name}'" for name in names) + "]::text[]"


def _take_turn(connection: Connection) -> None:
    """Takes the migration lock (session-level), polled, and commits: no transaction is left
    open, so Alembic gives each revision a transaction of its own (`transaction_per_migration`)
    and a revision may run statements outside any (`autocommit_block`: CREATE INDEX
    CONCURRENTLY, transfer t0015). Polled rather than waited for: a migrator blocked in
    `pg_advisory_lock` would hold its statement's snapshot all the while, and the CONCURRENTLY
    build of the migrator holding the lock waits for every older snapshot of the database (a
    deadlock PostgreSQL would break by failing one of the two)."""
    lock = text(f"SELECT pg_try_advisory_lock({_MIGRATION_LOCK})")
    waited = False
    while not connection.execute(lock).scalar_one():
        if not waited:  # say once why nothing happens (a long build may hold the turn)
            holder = connection.execute(_LOCK_HOLDER).scalar()
            print(
                "waiting for another migration of this database"
                f" (backend pid {holder if holder is not None else 'unknown'})",
                file=sys.stderr,
                flush=True,
            )
            waited = True
        connection.rollback()
        time.sleep(_TURN_POLL_SECONDS)
    connection.commit()


def _bound_lock_waits(connection: Connection) -> None:
    """Sets `lock_timeout` for the migration's session (LOCK_WAIT_LIMIT), and commits: every
    revision's transaction, and the reconciliation after them, give up on a lock they cannot
    have within it (`lock_not_available`, the revision rolled back) instead of waiting behind
    a long transaction while every later read and write of the table waits behind them.
    `concurrently()` lifts it for its block."""
    connection.execute(text(f"SET lock_timeout = '{LOCK_WAIT_LIMIT}'"))
    connection.commit()


def _let_services_read_version(connection: Connection, attributes: Mapping[str, object]) -> None:
    """Lets the chain's role and the platform's read its version table, at every run (a
    database migrated before this grant gets it at its next `migrate`): a service waits for
    its schema by it before serving (`vaultpay_common.schema_gate`), and transfer reads
    wallet's chain too. It holds nothing but revision ids."""
    table = str(attributes.get("version_table", "alembic_version"))
    # The platform's role first: a database first migrated with one role for everything holds
    # it first, and one ACL, whatever the history, reads the same (a catalogue compares them).
    roles = dict.fromkeys(
        str(attributes[key]) for key in ("shared_role", "app_role") if attributes.get(key)
    )
    for name in (table, *roles):
        if not SQL_NAME.match(name):
            raise ValueError(f"unsafe SQL name {name!r}")
    if roles:
        connection.execute(text(f"GRANT SELECT ON {table} TO {', '.join(roles)}"))
    connection.commit()


def run_env(metadata: MetaData, *, isolation: ChainIsolation | None = None) -> None:
    """The body of a chain's env.py: online migrations on an async engine. A service chain
    names what it grants its service's role (`isolation`): when the run isolates
    (`migrate_chain`'s `isolate`), that is reconciled after the upgrade, in the same turn, and
    committed in a transaction of its own."""
    from alembic import context

    config = context.config
    if context.is_offline_mode():
        raise SystemExit("offline migrations are not supported; run the service's `migrate`")

    def migrate(connection: Connection) -> None:
        _take_turn(connection)
        try:
            _bound_lock_waits(connection)
            context.configure(
                connection=connection,
                target_metadata=metadata,
                transaction_per_migration=True,
                version_table=config.attributes.get("version_table", "alembic_version"),
            )
            with context.begin_transaction():
                context.run_migrations()
            _let_services_read_version(connection, config.attributes)
            if isolation is not None and config.attributes.get("isolate", False):
                from vaultpay_common.chain_isolation import reconcile_chain

                app_role = config.attributes["app_role"]
                reconcile_chain(
                    connection,
                    isolation,
                    app_role=app_role,
                    shared_role=config.attributes.get("shared_role", app_role),
                )
                connection.commit()
        except BaseException:
            # A failed statement leaves the transaction aborted: roll back first, or the
            # unlock fails too and its "current transaction is aborted" hides the cause.
            connection.rollback()
            raise
        finally:
            connection.execute(text(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})"))

    url = config.attributes["database_url"]
    dsn = asyncpg_dsn(url)  # the services' TLS options, read as they read them

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    async def run() -> None:
        engine = create_async_engine(url, async_creator=connect)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(run())
