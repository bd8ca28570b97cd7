"""Migrations on a database in use, on real PostgreSQL: what they lock, for how long, and what
they keep (vaultpay_common.migrations; a review read them as a DBA of large, busy tables).

* Every revision waits for its locks within LOCK_WAIT_LIMIT, set once by `run_env` for the
  migration's session: auth 0008 (ADD COLUMN behind a long reader of `signing_keys`) and kyc
  k0006 (CREATE TRIGGER behind an open write of `kyc_submissions`) had no bound of their own
  and waited forever, every later use of the table queued behind their lock request.
* A CONCURRENTLY build (kyc k0005's unique index, as `concurrently()` runs it) lets writes in
  while it waits for an older write transaction, and outwaits it past LOCK_WAIT_LIMIT: its
  block lifts the bound. As shipped, k0005 built the index in the revision's transaction,
  holding SHARE (writers queued behind it).
* kyc k0005 run again after a stop (its DROP INDEX CONCURRENTLY of the old index interrupted,
  the version still k0004) keeps the new index it built, valid all along, instead of dropping
  it first and leaving no index to hold one pending submission per user while it built again.
* auth 0010 validates its foreign key in a transaction of its own, holding SHARE UPDATE
  EXCLUSIVE on `users`, not ACCESS EXCLUSIVE (the ADD COLUMN's lock) as it first did; and it
  runs again after stopping between the two.
* auth 0003 copies `audit_events` and drops it, both ways: a row appended meanwhile is kept
  (it was lost: the copy's snapshot did not hold it, the drop took it).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from tests.integration.databases import fresh_databases
from vaultpay_auth.entrypoints.cli import AUTH_CHAIN
from vaultpay_common import migrations
from vaultpay_common.migrations import LOCK_WAIT_LIMIT, PLATFORM_CHAIN, migrate_chain
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN

pytestmark = pytest.mark.integration

LIMIT = float(LOCK_WAIT_LIMIT.removesuffix("s"))
# How long a held transaction stays open at most: a migration that waits without bound (the
# bug) finishes once it ends, instead of hanging the suite.
GUARD = LIMIT + 20


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


def _on(dsn: str, database: str) -> str:
    """`dsn` (the server's superuser) on `database`."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _fetch(dsn: str, sql: str, *args: Any) -> list[Any]:
    async def fetch(conn: Any) -> list[Any]:
        return list(await conn.fetch(sql, *args))

    return run_sql(_plain(dsn), fetch)


class Held:
    """A transaction left open on another connection, as a long report or a slow request
    leaves it: it ran `statements` and commits when `commit()` is called (or after GUARD)."""

    def __init__(self, dsn: str, *statements: str) -> None:
        self._ran, self._release = threading.Event(), threading.Event()
        self._failed: list[BaseException] = []
        self._thread = threading.Thread(target=run_sql, args=(_plain(dsn), self._hold))
        self._statements = statements

    async def _hold(self, conn: Any) -> None:
        try:
            async with conn.transaction():
                for statement in self._statements:
                    await conn.execute(statement)
                self._ran.set()
                await asyncio.to_thread(self._release.wait, GUARD)
        except BaseException as exc:
            self._failed.append(exc)
            self._ran.set()

    def __enter__(self) -> Held:
        self._thread.start()
        assert self._ran.wait(30) and not self._failed, self._failed
        return self

    def commit(self) -> None:
        self._release.set()
        self._thread.join()
        assert not self._failed, self._failed

    def __exit__(self, *exc: object) -> None:
        self.commit()


class Migration:
    """`migrate_chain(...)` in a thread: its error, if any, and how long it took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=args, kwargs=kwargs)

    def _run(self, *args: Any, **kwargs: Any) -> None:
        started = time.monotonic()
        try:
            migrate_chain(*args, **kwargs)
        except BaseException as exc:
            self.error = exc
        self.seconds = time.monotonic() - started

    def start(self) -> Migration:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(GUARD + 30)
        assert not self._thread.is_alive()


def _wait_for_a_lock_wait(admin_dsn: str, database: str) -> None:
    """Until a session of `database` waits for a lock (the migration, behind a held one)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = _fetch(
            admin_dsn,
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            database,
        )
        if rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing waited for a lock in {database}")


@pytest.fixture
def dbs(infra: Infra) -> Iterator[Provisioned]:
    with fresh_databases(infra, "l") as fresh:
        yield fresh


def _auth(dbs: Provisioned, revision: str, action: str = "upgrade") -> None:
    migrate_chain(
        AUTH_CHAIN,
        dbs.auth_owner_dsn,
        dbs.auth_app_role,
        action=action,  # type: ignore[arg-type]
        revision=revision,
    )


def _kyc_args(dbs: Provisioned) -> tuple[tuple[Any, ...], dict[str, Any]]:
    roles = dbs.chain_roles()
    return (KYC_CHAIN, dbs.vaultpay_owner_dsn, roles["kyc"]), {"shared_role": roles["platform"]}


def _kyc(dbs: Provisioned, revision: str, action: str = "upgrade") -> None:
    args, kwargs = _kyc_args(dbs)
    migrate_chain(*args, **kwargs, action=action, revision=revision)  # type: ignore[arg-type]


def _kyc_to(dbs: Provisioned, revision: str) -> None:
    migrate_chain(PLATFORM_CHAIN, dbs.vaultpay_owner_dsn, dbs.chain_roles()["platform"])
    _kyc(dbs, revision)


def _auth_version(dbs: Provisioned) -> str:
    [row] = _fetch(dbs.auth_owner_dsn, "SELECT version_num FROM alembic_version")
    return str(row[0])


def _columns(dsn: str, table: str) -> set[str]:
    rows = _fetch(
        dsn,
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1",
        table,
    )
    return {row[0] for row in rows}


# -- every revision's lock waits are bounded ------------------------------------------------


def test_auth_0008_gives_up_behind_a_long_reader_of_signing_keys(dbs: Provisioned) -> None:
    """ADD COLUMN needs ACCESS EXCLUSIVE: behind a reader (a report, a pg_dump) its request
    queued every later read of the keys too, for as long as the reader ran."""
    _auth(dbs, "0007")
    with Held(dbs.auth_owner_dsn, "SELECT count(*) FROM signing_keys"):
        started = time.monotonic()
        with pytest.raises(DBAPIError, match="lock timeout"):
            _auth(dbs, "0008")
        assert time.monotonic() - started < LIMIT + 10
    assert _auth_version(dbs) == "0007"  # rolled back whole
    assert "withdrawn_at" not in _columns(dbs.auth_owner_dsn, "signing_keys")
    _auth(dbs, "head")  # once the reader is done
    assert "withdrawn_at" in _columns(dbs.auth_owner_dsn, "signing_keys")


def test_kyc_k0006_gives_up_behind_an_open_write_of_kyc_submissions(dbs: Provisioned) -> None:
    _kyc_to(dbs, "k0005")
    trigger = "SELECT tgname FROM pg_trigger WHERE tgname = 'kyc_submissions_change_guard'"
    with Held(dbs.vaultpay_owner_dsn, "LOCK TABLE kyc_submissions IN ROW EXCLUSIVE MODE"):
        started = time.monotonic()
        with pytest.raises(DBAPIError, match="lock timeout"):
            _kyc(dbs, "k0006")
        assert time.monotonic() - started < LIMIT + 10
    assert _fetch(dbs.vaultpay_owner_dsn, trigger) == []
    _kyc(dbs, "head")
    assert _fetch(dbs.vaultpay_owner_dsn, trigger) != []


# -- a CONCURRENTLY build lets writes in, and outwaits the bound ----------------------------

_SUBMISSION = """
INSERT INTO kyc_submissions (id, user_id, document_type, masked_number, number_hash, status,
    created_at, key_id, wrapped_key, sealed_number)
SELECT $1::uuid, $2, 'PAN', 'XXXXXX234F', repeat('a', 64), 'PENDING', now(), key_id,
    '\\x00'::bytea, '\\x00'::bytea
  FROM kyc_keys WHERE state = 'ACTIVE'
"""


def _submit(conn_dsn: str, user_id: str, *, lock_timeout: str) -> None:
    async def submit(conn: Any) -> None:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{lock_timeout}'")
            await conn.execute(_SUBMISSION, str(uuid.uuid4()), user_id)

    run_sql(_plain(conn_dsn), submit)


def test_kyc_k0005_builds_its_index_while_submissions_go_on(
    dbs: Provisioned, infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "LOCK_WAIT_LIMIT", "2s")  # a shorter bound, same rule
    _kyc_to(dbs, "k0004")
    owner = dbs.vaultpay_owner_dsn
    user = f"user-{secrets.token_hex(4)}"
    held = Held(owner, "LOCK TABLE kyc_submissions IN ROW EXCLUSIVE MODE")
    with held:  # a submission being written, its transaction open
        args, kwargs = _kyc_args(dbs)
        migration = Migration(*args, **kwargs, revision="k0005").start()
        _wait_for_a_lock_wait(infra.postgres.admin_dsn, dbs.vaultpay_database)
        waiting = time.monotonic()
        # The build waits for that transaction; another submission goes in meanwhile (behind
        # a plain CREATE INDEX's SHARE request it waited, and gave up after a second).
        _submit(owner, user, lock_timeout="1s")
        time.sleep(max(0.0, 3.0 - (time.monotonic() - waiting)))  # past the 2 s bound
    migration.join()
    assert migration.error is None, migration.error
    assert migration.seconds > 3.0
    rows = _fetch(
        owner,
        "SELECT c.relname::text, i.indisvalid FROM pg_index AS i"
        " JOIN pg_class AS c ON c.oid = i.indexrelid"
        " WHERE c.relname LIKE 'kyc_submissions_one_%'",
    )
    assert {(row[0], row[1]) for row in rows} == {("kyc_submissions_one_pending", True)}
    with pytest.raises(asyncpg.UniqueViolationError, match="kyc_submissions_one_pending"):
        _submit(owner, user, lock_timeout="1s")  # the rule holds: one pending per user


# -- kyc k0005 runs again after a stop, keeping the index it built -------------------------

_ONE_PENDING, _ONE_OPEN = "kyc_submissions_one_pending", "kyc_submissions_one_open"
_BUILD = {  # as k0005 builds each
    _ONE_PENDING: f"CREATE UNIQUE INDEX CONCURRENTLY {_ONE_PENDING} ON kyc_submissions (user_id)"
    " WHERE status = 'PENDING'",
    _ONE_OPEN: f"CREATE UNIQUE INDEX CONCURRENTLY {_ONE_OPEN} ON kyc_submissions (user_id)"
    " WHERE status IN ('PENDING', 'VERIFIED')",
}


def _kyc_indexes(dsn: str) -> dict[str, tuple[int, bool, bool]]:
    """k0001's and k0005's indexes that are there: name -> (oid, valid, ready)."""
    rows = _fetch(
        dsn,
        "SELECT c.relname::text, c.oid::bigint, i.indisvalid, i.indisready FROM pg_index AS i"
        " JOIN pg_class AS c ON c.oid = i.indexrelid"
        " WHERE c.relname IN ('kyc_submissions_one_pending', 'kyc_submissions_one_open')",
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _kyc_version(dsn: str) -> str:
    [row] = _fetch(dsn, f"SELECT version_num FROM {KYC_CHAIN.version_table}")
    return str(row[0])


def _waiting_statement(admin_dsn: str, database: str) -> tuple[int, str]:
    """The pid and statement of the session of `database` that waits for a lock."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = _fetch(
            admin_dsn,
            "SELECT pid, query FROM pg_stat_activity"
            " WHERE datname = $1 AND wait_event_type = 'Lock'",
            database,
        )
        if rows:
            return int(rows[0][0]), str(rows[0][1])
        time.sleep(0.05)
    raise AssertionError(f"nothing waited for a lock in {database}")


def _run_sql_outside_a_transaction(dsn: str, *statements: str) -> None:
    async def run(conn: Any) -> None:
        for statement in statements:
            await conn.execute(statement)

    run_sql(_plain(dsn), run)


def test_kyc_k0005_run_again_after_a_stop_keeps_the_index_it_built(
    dbs: Provisioned, infra: Infra
) -> None:
    """The review's case: the new index built, the old one's DROP INDEX CONCURRENTLY waiting
    behind a long reader after its first phase (the old index INVALID), the Job pod evicted.
    The next run dropped the valid new index first: while that drop and the new build waited
    behind the next reader, nothing held one pending submission per user."""
    _kyc_to(dbs, "k0004")
    owner, admin = dbs.vaultpay_owner_dsn, infra.postgres.admin_dsn
    reader = "SELECT count(*) FROM kyc_submissions"  # a report, a pg_dump: AccessShare held
    args, kwargs = _kyc_args(dbs)
    with Held(owner, reader):
        first = Migration(*args, **kwargs, revision="k0005").start()
        try:
            pid, statement = _waiting_statement(admin, dbs.vaultpay_database)
            assert statement.startswith(f"DROP INDEX CONCURRENTLY IF EXISTS {_ONE_OPEN}")
            _fetch(admin, "SELECT pg_terminate_backend($1)", pid)  # the pod evicted
        finally:
            first.join()
    assert first.error is not None
    assert _kyc_version(owner) == "k0004"
    stopped = _kyc_indexes(owner)
    built = stopped[_ONE_PENDING]
    assert built[1:] == (True, True), stopped
    assert stopped[_ONE_OPEN][1] is False, stopped  # k0001's index half-dropped

    user = f"user-{secrets.token_hex(4)}"
    held = Held(owner, reader)
    with held:  # the next run, behind the next long reader
        again = Migration(*args, **kwargs, revision="k0005").start()
        try:
            _, statement = _waiting_statement(admin, dbs.vaultpay_database)
            # It waits to drop k0001's index; k0005's is the one it built, untouched.
            assert _kyc_indexes(owner)[_ONE_PENDING] == built, statement
            _submit(owner, user, lock_timeout="1s")
            with pytest.raises(asyncpg.UniqueViolationError):  # the rule holds meanwhile
                _submit(owner, user, lock_timeout="1s")
        finally:
            held.commit()
            again.join()
    assert again.error is None, again.error
    assert _kyc_version(owner) == "k0005"
    assert _kyc_indexes(owner) == {_ONE_PENDING: built}  # the same index, valid
    with pytest.raises(asyncpg.UniqueViolationError, match=_ONE_PENDING):
        _submit(owner, user, lock_timeout="1s")


@pytest.mark.parametrize("old_index", ["dropped", "not ready"])
@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
def test_kyc_k0005_run_again_keeps_the_index_it_built_whatever_became_of_the_old_one(
    dbs: Provisioned, infra: Infra, direction: str, old_index: str
) -> None:
    """Stopped after the old index was dropped (before the version moved), or after the second
    phase of its DROP INDEX CONCURRENTLY (no longer ready: it enforces nothing); the upgrade
    (k0001's index the old one) and the downgrade (k0005's) alike."""
    start, end, new, old = ("k0004", "k0005", _ONE_PENDING, _ONE_OPEN)
    if direction == "downgrade":
        start, end, new, old = ("k0005", "k0004", _ONE_OPEN, _ONE_PENDING)
    _kyc_to(dbs, start)
    owner = dbs.vaultpay_owner_dsn
    _run_sql_outside_a_transaction(owner, _BUILD[new])
    if old_index == "dropped":
        _run_sql_outside_a_transaction(owner, f"DROP INDEX CONCURRENTLY {old}")
    else:  # what DROP INDEX CONCURRENTLY leaves between its phases (a catalogue change)
        _run_sql_outside_a_transaction(
            _on(infra.postgres.admin_dsn, dbs.vaultpay_database),
            "UPDATE pg_index SET indisvalid = false, indisready = false, indislive = false"
            f" WHERE indexrelid = 'public.{old}'::regclass",
        )
    built = _kyc_indexes(owner)[new]
    _kyc(dbs, end, direction)
    assert _kyc_version(owner) == end
    assert _kyc_indexes(owner) == {new: built}


def test_kyc_k0005_drops_an_invalid_leftover_of_its_build_and_builds_again(
    dbs: Provisioned, infra: Infra
) -> None:
    """A build that failed (or was killed) leaves an INVALID index of that name, still
    refusing inserts that break it: the next run drops it and builds the index again."""
    _kyc_to(dbs, "k0004")
    owner = dbs.vaultpay_owner_dsn
    for _ in range(2):  # two PAN submissions: a unique build on document_type fails
        _submit(owner, f"user-{secrets.token_hex(4)}", lock_timeout="1s")
    with pytest.raises(asyncpg.UniqueViolationError):
        _run_sql_outside_a_transaction(
            owner,
            f"CREATE UNIQUE INDEX CONCURRENTLY {_ONE_PENDING} ON kyc_submissions (document_type)",
        )
    leftover = _kyc_indexes(owner)[_ONE_PENDING]
    assert leftover[1] is False
    _kyc(dbs, "k0005")
    rebuilt = _kyc_indexes(owner)
    assert set(rebuilt) == {_ONE_PENDING} and rebuilt[_ONE_PENDING][1:] == (True, True)
    assert rebuilt[_ONE_PENDING][0] != leftover[0]
    [definition] = _fetch(owner, "SELECT pg_get_indexdef($1::regclass)", _ONE_PENDING)
    assert "(user_id) WHERE" in definition[0] and "PENDING" in definition[0], definition
    _submit(owner, f"user-{secrets.token_hex(4)}", lock_timeout="1s")  # a third PAN: let in


# -- auth 0010: the key is checked outside the lock on users --------------------------------

_DDL_LOG = """
CREATE TABLE public.test_ddl_locks (n bigserial, xact xid8, key_valid boolean, locks text[]);
GRANT ALL ON public.test_ddl_locks TO PUBLIC;
GRANT ALL ON SEQUENCE public.test_ddl_locks_n_seq TO PUBLIC;
CREATE FUNCTION public.test_log_ddl_locks() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    -- After each DDL command on users: its transaction, whether users' new key is validated
    -- yet, and the locks this session holds on users at that moment.
    INSERT INTO public.test_ddl_locks (xact, key_valid, locks)
    SELECT pg_current_xact_id_if_assigned(),
           (SELECT convalidated FROM pg_constraint
             WHERE conname = 'users_deactivated_by_fkey'),
           array(SELECT l.mode FROM pg_locks AS l
                  WHERE l.pid = pg_backend_pid() AND l.granted
                    AND l.relation = 'public.users'::regclass ORDER BY 1)
      FROM pg_event_trigger_ddl_commands() AS c
     WHERE c.object_identity = 'public.users';
END
$$;
CREATE EVENT TRIGGER test_log_ddl_locks ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION public.test_log_ddl_locks();
"""


def test_auth_0010_checks_its_key_holding_no_lock_that_stops_logins(
    dbs: Provisioned, infra: Infra
) -> None:
    _auth(dbs, "0009")
    admin = _on(infra.postgres.admin_dsn, dbs.auth_database)

    async def log_ddl(conn: Any) -> None:  # an event trigger: the server's superuser only
        await conn.execute(_DDL_LOG)

    run_sql(admin, log_ddl)
    _auth(dbs, "0010")
    log = _fetch(admin, "SELECT xact::text, key_valid, locks FROM test_ddl_locks ORDER BY n")
    column_xact = log[0][0]
    checked = next(row for row in log if row[1])  # the statement that validated the key
    assert "AccessExclusiveLock" not in checked[2], log
    assert "ShareUpdateExclusiveLock" in checked[2], log  # VALIDATE CONSTRAINT's
    assert checked[0] != column_xact, log  # after the ALTER's lock was released
    [row] = _fetch(
        dbs.auth_owner_dsn,
        "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint"
        " WHERE conname = 'users_deactivated_by_fkey'",
    )
    assert (row[0], row[1]) == ("FOREIGN KEY (deactivated_by) REFERENCES users(id)", True)


def test_auth_0010_runs_again_after_it_stopped_before_the_validation(dbs: Provisioned) -> None:
    """What a failed (or killed) validation leaves: the column and the key NOT VALID, the
    version still 0009. The revision runs again from the start."""
    _auth(dbs, "0009")

    async def half_done(conn: Any) -> None:
        await conn.execute("ALTER TABLE users ADD COLUMN deactivated_by uuid")
        await conn.execute(
            "ALTER TABLE users ADD CONSTRAINT users_deactivated_by_fkey"
            " FOREIGN KEY (deactivated_by) REFERENCES users (id) NOT VALID"
        )

    run_sql(_plain(dbs.auth_owner_dsn), half_done)
    _auth(dbs, "head")
    [row] = _fetch(
        dbs.auth_owner_dsn,
        "SELECT convalidated FROM pg_constraint WHERE conname = 'users_deactivated_by_fkey'",
    )
    assert row[0] is True


# -- auth 0003 keeps what is appended while it copies ---------------------------------------

_OLD_APPEND = (
    "INSERT INTO audit_events VALUES (1000, now(), 'u', 'ADMIN', 'user.login', 'user',"
    " 'appended-meanwhile', 'r', '{}', repeat('a', 64), repeat('a', 64))"
)
_NEW_APPEND = (
    "SELECT audit_append('u', 'ADMIN', 'user.login', 'user', 'appended-meanwhile', 'r', '{}')"
)


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
def test_auth_0003_keeps_a_row_appended_while_it_copies_the_log(
    dbs: Provisioned, infra: Infra, direction: Literal["upgrade", "downgrade"]
) -> None:
    start, end, append = ("0002", "0003", _OLD_APPEND)
    if direction == "downgrade":
        start, end, append = ("0003", "0002", _NEW_APPEND)
    _auth(dbs, start)
    with Held(dbs.auth_owner_dsn, append) as held:  # appended, not committed yet
        migration = Migration(
            AUTH_CHAIN,
            dbs.auth_owner_dsn,
            dbs.auth_app_role,
            action=direction,
            revision=end,
        ).start()
        _wait_for_a_lock_wait(infra.postgres.admin_dsn, dbs.auth_database)
        held.commit()  # the append commits while the migration waits
    migration.join()
    assert migration.error is None, migration.error
    assert _auth_version(dbs) == end
    kept = _fetch(
        dbs.auth_owner_dsn,
        "SELECT count(*) FROM audit_events WHERE target_id = 'appended-meanwhile'",
    )
    assert kept[0][0] == 1
