"""PostgreSQL for the local mesh: a private server from the local binaries, or an existing one.

A private server lives under one directory (`<var>/postgres`): `data/` (the cluster, initdb'd
once and reused afterwards) and `socket/` (its Unix socket). initdb writes into
`data.initdb-partial/`, renamed to `data/` only once the cluster is complete, so an initdb that
fails or is interrupted (Ctrl-C, `make stop`) never leaves a half-made `data/` behind (the
leftover of a supervisor killed outright is removed by the next start). It listens on
127.0.0.1 only, on a free port, and is stopped by PID with a fast shutdown. Every connection,
over TCP or the socket, authenticates with a password (SCRAM): other users of the machine
cannot get in. A cluster made by an older version with trust authentication is converted on
its next start.

    server = start_postgres(Path("var/postgres"), log=..., superuser_password=secret)
    dbs = provision(server.admin_dsn)
    dbs.auth_app_dsn   # 'postgresql+asyncpg://vaultpay_auth_app@127.0.0.1:54xx/vaultpay_auth'
    server.stop()

Against an existing server (`VAULTPAY_POSTGRES_ADMIN_URL`), `provision(..., suffix="_t1a2b")`
gives tests their own roles and databases so they never touch real data.

The same provisioning runs against a container or managed server (compose, a Kubernetes Job):

    VAULTPAY_POSTGRES_ADMIN_URL=postgresql://postgres:pw@db/postgres \
        python -m vaultpay_devstack.postgres provision --password-env VAULTPAY_DB_PASSWORD
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, quote, unquote, urlsplit

import asyncpg

from vaultpay_devstack.procs import (
    LOOPBACK,
    ManagedProcess,
    MissingToolError,
    StartupError,
    free_port,
    log_tail,
    os_user_ids,
    pid_alive,
    run_as_user,
    setpriv_prefix,
    wait_until,
)

__all__ = [
    "VAULTPAY_SERVICES",
    "PostgresServer",
    "Provisioned",
    "connect_postgres",
    "database_identities",
    "deprovision",
    "find_pg_bindir",
    "provision",
    "run_sql",
    "start_postgres",
    "unique_suffix",
]

PG_PACKAGE = "postgresql-15"
PG_OS_USER = "postgres"
SUPERUSER = "postgres"
# Durability off: only for throwaway test clusters.
_FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
# The services of the shared `vaultpay` database, each logging in as a role of its own.
VAULTPAY_SERVICES = ("wallet", "transfer", "kyc")
T = TypeVar("T")
# How long `provision` waits for a server that is not taking connections yet (refused,
# unresolvable, timed out, or "starting up") at its first connection, and how often it tries
# meanwhile: a container started beside it (compose's postgres runs initdb on a fresh volume
# behind a server listening on its Unix socket only) or a managed server coming up. Any other
# failure (a wrong password, a missing privilege) stops it at once.
CONNECT_WAIT_SECONDS = 60.0
CONNECT_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class PostgresServer:
    """A reachable PostgreSQL server; `process` is set only when we started it."""

    host: str
    port: int
    superuser: str = SUPERUSER
    password: str | None = None
    process: ManagedProcess | None = None
    data_dir: Path | None = None

    @property
    def admin_dsn(self) -> str:
        """libpq/asyncpg URL of the superuser on the `postgres` database."""
        return _url("postgresql", self.superuser, self.password, self.host, self.port, "postgres")

    @property
    def private(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        """Fast shutdown of a server we started (SIGINT, then SIGKILL); no-op otherwise."""
        if self.process is not None:
            self.process.stop()


@dataclass(frozen=True)
class Provisioned:
    """The roles and databases `provision` made, and the DSNs services connect with."""

    host: str
    port: int
    suffix: str = ""
    # The provisioning secret: each role's password derives from it (`role_password`), so a
    # service that knows its own DSN knows no other role's password. None: trust auth.
    password: str | None = None

    def role_password(self, role: str) -> str | None:
        """`role`'s password: HMAC-SHA256 of its name under the provisioning secret."""
        return None if self.password is None else role_password(self.password, role)

    @property
    def auth_database(self) -> str:
        return f"vaultpay_auth{self.suffix}"

    @property
    def auth_owner_role(self) -> str:
        return f"vaultpay_auth_owner{self.suffix}"

    @property
    def auth_app_role(self) -> str:
        return f"vaultpay_auth_app{self.suffix}"

    @property
    def vaultpay_database(self) -> str:
        return f"vaultpay{self.suffix}"

    @property
    def vaultpay_owner_role(self) -> str:
        return f"vaultpay_owner{self.suffix}"

    @property
    def vaultpay_app_role(self) -> str:
        """The shared database's group role (NOLOGIN): the platform's tables (outbox,
        idempotency records, audit) are granted to it, and each service's role is a member."""
        return f"vaultpay_app{self.suffix}"

    def app_role(self, service: str) -> str:
        """The login role of wallet, transfer or kyc in the shared database."""
        if service not in VAULTPAY_SERVICES:
            raise KeyError(f"{service!r} has no role in the shared database")
        return f"vaultpay_{service}_app{self.suffix}"

    def chain_roles(self) -> dict[str, str]:
        """The role each migration chain of the shared database grants to (`upgrade_all`'s
        `chain_roles`, the services' DATABASE_CHAIN_ROLES)."""
        return {"platform": self.vaultpay_app_role} | {
            service: self.app_role(service) for service in VAULTPAY_SERVICES
        }

    def url(self, role: str, database: str, *, driver: str = "postgresql+asyncpg") -> str:
        """DSN for `role` on `database`; `driver="postgresql"` gives a plain libpq URL."""
        return _url(driver, role, self.role_password(role), self.host, self.port, database)

    @property
    def auth_app_dsn(self) -> str:
        return self.url(self.auth_app_role, self.auth_database)

    @property
    def auth_owner_dsn(self) -> str:
        return self.url(self.auth_owner_role, self.auth_database)

    def app_dsn(self, service: str) -> str:
        """The DSN wallet, transfer or kyc runs with."""
        return self.url(self.app_role(service), self.vaultpay_database)

    @property
    def vaultpay_owner_dsn(self) -> str:
        return self.url(self.vaultpay_owner_role, self.vaultpay_database)

    def databases(self) -> list[tuple[str, str, str]]:
        """(database, owner role, app role) for each database; the shared database's app role
        is its group role."""
        return [
            (self.auth_database, self.auth_owner_role, self.auth_app_role),
            (self.vaultpay_database, self.vaultpay_owner_role, self.vaultpay_app_role),
        ]

    def member_roles(self) -> list[str]:
        """The login roles that are members of the shared database's group role."""
        return [self.app_role(service) for service in VAULTPAY_SERVICES]


def unique_suffix(tag: str = "t") -> str:
    """A name suffix such as `_t1a2b3c` that keeps test roles and databases apart."""
    return f"_{tag}{secrets.token_hex(3)}"


def find_pg_bindir(override: Path | None = None) -> Path:
    """Where initdb/postgres live: `override`, PostgreSQL 15, another version, then PATH."""
    candidates = [override] if override else []
    candidates.append(Path("/usr/lib/postgresql/15/bin"))
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise MissingToolError(
        "PostgreSQL server binaries (initdb, postgres) not found. Install them with "
        f"`apt-get install -y {PG_PACKAGE}` (Debian package {PG_PACKAGE!r}), or set "
        "VAULTPAY_POSTGRES_ADMIN_URL=postgresql://postgres@127.0.0.1:5432/postgres "
        "to use an existing server."
    )


def start_postgres(
    root: Path,
    *,
    log: Path,
    port: int | None = None,
    fast: bool = False,
    bindir: Path | None = None,
    timeout: float = 60.0,
    superuser_password: str,
    extra_settings: Sequence[str] = (),
) -> PostgresServer:
    """Starts a private server in `root` (initdb on first use) and waits until it is ready.

    The superuser `postgres` gets `superuser_password`; the caller keeps it (MeshSecrets).

    `fast` turns durability off (fsync, synchronous_commit, full-page writes): test runs only.
    `extra_settings` are more `name=value` server settings (e.g. a benchmark's
    `shared_preload_libraries=pg_stat_statements`).
    """
    bindir = find_pg_bindir(bindir)
    data_dir, socket_dir = root / "data", root / "socket"
    run_as = PG_OS_USER if os.geteuid() == 0 else None
    _prepare_dirs(root, data_dir, socket_dir, run_as)
    _refuse_if_running(data_dir)
    if (data_dir / "PG_VERSION").exists():
        _refuse_if_half_made(data_dir)
    else:
        _initdb(bindir, data_dir, superuser_password, log=log, run_as=run_as, fast=fast)
    legacy_trust = _trusts_connections(data_dir)

    port = port or free_port()
    # Room for every service's pool at its overflow (db_pool_size each, twice under load) next
    # to the tests' and the bench's own clients (pgbench runs up to 64).
    settings = [
        "listen_addresses=127.0.0.1",
        "max_connections=400",
        *(_FAST_SETTINGS if fast else ()),
        *extra_settings,
    ]
    argv: list[str | Path] = [bindir / "postgres", "-D", data_dir, "-p", str(port)]
    argv += ["-k", socket_dir]
    for setting in settings:
        argv += ["-c", setting]
    proc = ManagedProcess.start(
        "postgres",
        argv,
        log=log,
        cwd=root,
        user=run_as,
        stop_signal=signal.SIGINT,
        stop_timeout=30.0,
    )
    server = PostgresServer(
        LOOPBACK, port, password=superuser_password, process=proc, data_dir=data_dir
    )
    try:
        wait_until(
            lambda: _pg_isready(bindir, port),
            what=f"PostgreSQL on {LOOPBACK}:{port}",
            proc=proc,
            timeout=timeout,
        )
        if legacy_trust:
            _require_passwords(server, data_dir)
    except BaseException:
        proc.stop()
        raise
    return server


def connect_postgres(admin_url: str) -> PostgresServer:
    """An existing server from its superuser URL, checked by connecting once."""
    parts = urlsplit(admin_url)
    if parts.scheme not in {"postgres", "postgresql", "postgresql+asyncpg"} or not parts.hostname:
        # Never the URL itself: it carries the superuser's password.
        raise StartupError(
            "VAULTPAY_POSTGRES_ADMIN_URL must be postgresql://user:password@host:port/db "
            f"(scheme {parts.scheme or 'missing'!r}{'' if parts.hostname else ', no host'})"
        )
    server = PostgresServer(
        host=parts.hostname,
        port=parts.port or 5432,
        superuser=unquote(parts.username or SUPERUSER),
        password=unquote(parts.password) if parts.password else None,
    )
    try:
        run_sql(server.admin_dsn, lambda conn: conn.fetchval("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        where = f"{server.host}:{server.port}"
        raise StartupError(f"cannot reach PostgreSQL at {where}: {exc}") from exc
    return server


def _login_roles(dbs: Provisioned) -> list[str]:
    return [
        dbs.auth_owner_role,
        dbs.auth_app_role,
        dbs.vaultpay_owner_role,
        *dbs.member_roles(),
    ]


def provision(
    admin_dsn: str,
    *,
    suffix: str = "",
    password: str | None = None,
    wait_seconds: float | None = None,
) -> Provisioned:
    """Creates (idempotently) the login roles and databases of the mesh; returns their DSNs.

    auth: `vaultpay_auth` owned by `vaultpay_auth_owner`, used by `vaultpay_auth_app`.
    wallet/transfer/kyc: `vaultpay` owned by `vaultpay_owner`, used by `vaultpay_wallet_app`,
    `vaultpay_transfer_app` and `vaultpay_kyc_app`, members of the group role `vaultpay_app`
    (NOLOGIN), which holds the shared tables' privileges and the right to connect.
    Every name gets `suffix` (e.g. `_t1a2b`) so tests on a shared server stay apart; `password`
    (the provisioning secret) gives each login role a password of its own (`role_password`)
    when the server does not trust local connections.

    A failure (the admin role may not create roles, the server went away) is a StartupError
    saying what failed, where and as whom, never with a password. A server not taking
    connections yet is asked again every CONNECT_POLL_SECONDS for `wait_seconds`
    (CONNECT_WAIT_SECONDS by default; 0: fail at once), saying on stderr what it waits for.
    """
    parts = urlsplit(admin_dsn)
    result = Provisioned(parts.hostname or LOOPBACK, parts.port or 5432, suffix, password)
    for database, owner, app in result.databases():
        for name in (database, owner, app, *result.member_roles()):
            if not _NAME.match(name):
                raise ValueError(f"unsafe PostgreSQL identifier {name!r}")

    def step(what: str, dsn: str, work: Callable[[Any], Awaitable[None]]) -> None:
        try:
            run_sql(dsn, work)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _provisioning_failed(what, parts, exc, result) from exc

    _first_step_when_accepting(
        admin_dsn,
        partial(_create_roles_and_databases, dbs=result),
        fail=lambda what, exc: _provisioning_failed(what, parts, exc, result),
        wait_seconds=CONNECT_WAIT_SECONDS if wait_seconds is None else wait_seconds,
    )
    for database, owner, app in result.databases():
        lock_down = partial(_lock_down, database=database, owner=owner, app=app)
        step(f"locking down database {database}", _replace_database(admin_dsn, database), lock_down)
    return result


def _first_step_when_accepting(
    admin_dsn: str,
    work: Callable[[Any], Awaitable[None]],
    *,
    fail: Callable[[str, BaseException], StartupError],
    wait_seconds: float,
) -> None:
    """Runs provisioning's first step (idempotent), again every CONNECT_POLL_SECONDS while the
    server is not taking connections, until `wait_seconds` have passed."""
    what = "creating roles and databases"
    parts = urlsplit(admin_dsn)
    where = f"{parts.hostname or LOOPBACK}:{parts.port or 5432}"
    deadline = time.monotonic() + wait_seconds
    waiting_for: str | None = None
    while True:
        try:
            run_sql(admin_dsn, work)
        except ssl.SSLError as exc:  # an OSError, but waiting does not fix a certificate
            raise fail(what, exc) from exc
        except (OSError, asyncpg.CannotConnectNowError) as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f", after waiting {wait_seconds:g} s for it to take connections"
                raise fail(what + (waited if waiting_for else ""), exc) from exc
            # What it waits for, in few words: the OS error's (`Connection refused`), or the
            # server's ("the database system is starting up").
            reason = getattr(exc, "strerror", None) or (
                str(exc) if isinstance(exc, asyncpg.PostgresError) else type(exc).__name__
            )
            if reason != waiting_for:
                print(
                    f"waiting up to {round(left, 1):g} s for PostgreSQL at {where} to take"
                    f" connections ({reason})",
                    file=sys.stderr,
                    flush=True,
                )
                waiting_for = reason
            time.sleep(min(CONNECT_POLL_SECONDS, left))
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise fail(what, exc) from exc
        else:
            if waiting_for:
                print(f"PostgreSQL at {where} takes connections", file=sys.stderr, flush=True)
            return


def database_identities(admin_dsn: str, provisioned: Provisioned) -> dict[str, str]:
    """Each provisioned database's identity, by name: the server's system identifier (new at
    every initdb) and the database's oid (new at every CREATE DATABASE), "<system>-<oid>". Two
    databases of one name, one dropped or on another server, never share it. Read as the admin
    role (`pg_control_system()` is a superuser's by default, as provisioning needs anyway)."""
    names = [database for database, _, _ in provisioned.databases()]

    async def read(conn: Any) -> dict[str, str]:
        rows = await conn.fetch(
            "SELECT d.datname, s.system_identifier::text || '-' || d.oid::text AS identity"
            " FROM pg_database d, pg_control_system() s WHERE d.datname = ANY($1::text[])",
            names,
        )
        return {row["datname"]: row["identity"] for row in rows}

    return run_sql(admin_dsn, read)


# What `provision` asks of the admin role, named when the server refuses it (SQLSTATE 42501).
_ADMIN_ROLE_NEEDS = (
    "The admin role (VAULTPAY_POSTGRES_ADMIN_URL's user) must be a superuser, such as "
    "`postgres`: it creates login roles, databases owned by them, and hands each database's "
    "public schema to its owner, which CREATEROLE and CREATEDB alone do not allow."
)


def _provisioning_failed(
    what: str, admin: SplitResult, exc: BaseException, dbs: Provisioned
) -> StartupError:
    """The StartupError for a failed step of `provision`: what failed, on which server and as
    which role, the server's reason, and what the admin role needs when it lacked a privilege.
    The admin URL's password and every role's are masked out of the server's reason."""
    reason = str(exc) or type(exc).__name__
    passwords = [admin.password or "", unquote(admin.password or "")]
    passwords += [dbs.role_password(role) or "" for role in _login_roles(dbs)]
    passwords.append(dbs.password or "")
    for secret in filter(None, passwords):
        reason = reason.replace(secret, "***")
    where = f"{admin.hostname or LOOPBACK}:{admin.port or 5432}"
    user = unquote(admin.username or SUPERUSER)
    message = f"provisioning the mesh's roles and databases on {where} as {user!r} failed"
    message += f" ({what}): {reason}"
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        message += f". {_ADMIN_ROLE_NEEDS}"
    return StartupError(message)


def deprovision(admin_dsn: str, provisioned: Provisioned) -> None:
    """Drops the databases and roles of `provision` (test clean-up on a shared server)."""

    async def drop(conn: Any) -> None:
        for database, _, _ in provisioned.databases():
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in provisioned.member_roles():  # before their group
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        for _, owner, app in provisioned.databases():
            await conn.execute(f'DROP ROLE IF EXISTS "{app}"')
            await conn.execute(f'DROP ROLE IF EXISTS "{owner}"')

    run_sql(admin_dsn, drop)


def run_sql(dsn: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Runs `work(connection)` on a fresh asyncpg connection, from sync code.

    A private event loop in a worker thread keeps this usable from inside a running loop
    (pytest-asyncio fixtures) as well as from plain scripts.
    """

    async def session() -> T:
        conn = await asyncpg.connect(_libpq(dsn), timeout=10)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, session()).result()


async def _create_roles_and_databases(conn: Any, *, dbs: Provisioned) -> None:
    def login(role: str) -> str:
        password = dbs.role_password(role)
        return "LOGIN" + ("" if password is None else f" PASSWORD {_literal(password)}")

    roles = [
        (dbs.auth_owner_role, login(dbs.auth_owner_role)),
        (dbs.auth_app_role, login(dbs.auth_app_role)),
        (dbs.vaultpay_owner_role, login(dbs.vaultpay_owner_role)),
        # A group: NOLOGIN and no password (a login role before per-service roles).
        (dbs.vaultpay_app_role, "NOLOGIN PASSWORD NULL"),
        *((role, login(role)) for role in dbs.member_roles()),
    ]
    for role, attributes in roles:
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f'ALTER ROLE "{role}" {attributes}')
        else:
            await _ignore_duplicate(conn.execute(f'CREATE ROLE "{role}" {attributes}'))
    for role in dbs.member_roles():
        await conn.execute(f'GRANT "{dbs.vaultpay_app_role}" TO "{role}"')
    for database, owner, _app in dbs.databases():
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await _ignore_duplicate(conn.execute(f'CREATE DATABASE "{database}" OWNER "{owner}"'))


async def _lock_down(conn: Any, *, database: str, owner: str, app: str) -> None:
    """Only the owner creates objects; only the two roles connect; migrations grant the rest."""
    await conn.execute(f'ALTER SCHEMA public OWNER TO "{owner}"')
    await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    await conn.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
    await conn.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{app}"')
    await conn.execute(f'GRANT USAGE ON SCHEMA public TO "{app}"')


async def _ignore_duplicate(statement: Awaitable[object]) -> None:
    """Another provisioner won the race: the object exists, which is all we wanted."""
    try:
        await statement
    except (asyncpg.DuplicateObjectError, asyncpg.DuplicateDatabaseError):
        pass
    except asyncpg.UniqueViolationError:
        pass


def _initdb_dir(data_dir: Path) -> Path:
    """Where initdb makes the cluster: beside `data_dir`, renamed to it once complete."""
    return data_dir.with_name(f"{data_dir.name}.initdb-partial")


def _initdb(
    bindir: Path, data_dir: Path, password: str, *, log: Path, run_as: str | None, fast: bool
) -> None:
    """Makes the cluster in a sibling folder and renames it to `data_dir` only once complete.

    `data_dir` is then either missing or a whole cluster: before, an initdb that failed or was
    interrupted (Ctrl-C or `make stop` during "starting PostgreSQL") left `PG_VERSION` and
    `pg_control` with the bootstrap unfinished and no superuser password, and every later
    start reused it and failed. Everything the cluster needs before its first start (the
    superuser's password, password authentication) is done by initdb itself, before the
    rename; the server's settings are command-line options of each start."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise StartupError(
            f"{data_dir} holds files but no PostgreSQL cluster (no PG_VERSION): an earlier "
            f"initialisation was interrupted. Remove it (`rm -rf {data_dir}`) and start again."
        )
    partial = _initdb_dir(data_dir)
    try:
        _remove_tree(partial)  # the leftover of a supervisor killed outright during initdb
    except OSError as exc:
        raise StartupError(
            f"cannot remove {partial}, left by an interrupted initdb: {exc}"
        ) from exc
    partial.mkdir(mode=0o700)
    uid, gid = os_user_ids(run_as)
    if uid is not None and gid is not None:
        os.chown(partial, uid, gid)
    # The password reaches initdb in a 0600 file of its OS user, never on a command line.
    pwfile = data_dir.parent / ".superuser-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    if uid is not None and gid is not None:
        os.chown(pwfile, uid, gid)
    argv = [str(bindir / "initdb"), "-D", str(partial), "-U", SUPERUSER]
    argv += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
    argv += ["--encoding=UTF8", "--no-locale", *(["--no-sync"] if fast else [])]
    try:
        _run_initdb(argv, partial, log=log, run_as=run_as)
        # An empty `data_dir` (made by an older version) is replaced: rename(2) allows that.
        partial.rename(data_dir)
        if not fast:
            _fsync_dir(data_dir.parent)
    except BaseException:
        # initdb's bootstrap backend may still be exiting: what it leaves, the next start removes.
        _remove_tree(partial, ignore_errors=True)
        raise
    finally:
        pwfile.unlink(missing_ok=True)


def _remove_tree(path: Path, *, ignore_errors: bool = False) -> None:
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=ignore_errors)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_if_half_made(data_dir: Path) -> None:
    """Names the cure for a cluster an older version left half-made (see `_initdb`): PostgreSQL
    starts on it, but it has no superuser password and misses databases, so the mesh failed
    later with no hint. A complete cluster has template1, template0 and postgres in base/."""
    try:
        databases = [entry for entry in (data_dir / "base").iterdir() if entry.name.isdigit()]
    except OSError:
        databases = []
    if (data_dir / "global" / "pg_control").exists() and len(databases) >= 3:
        return
    raise StartupError(
        f"{data_dir} holds a PostgreSQL cluster whose initialisation never finished (an "
        "earlier start was interrupted while initialising it, e.g. by Ctrl-C or `make stop` "
        f'during "starting PostgreSQL"). Remove it (`rm -rf {data_dir}`) and start again.'
    )


def _run_initdb(argv: list[str], data_dir: Path, *, log: Path, run_as: str | None) -> None:
    switch, popen_user = run_as_user(run_as)
    with log.open("ab") as out:
        result = subprocess.run(  # noqa: S603 (our own argv, no shell)
            # initdb dies with the supervisor (killed outright, it could not stop it).
            [*setpriv_prefix([*switch, "--pdeathsig", "SIGTERM"]), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_dir.parent,
            check=False,
            **popen_user,
        )
    if result.returncode != 0:
        raise StartupError(f"initdb failed ({result.returncode}); see {log}:\n{log_tail(log)}")


def _trusts_connections(data_dir: Path) -> bool:
    """True for a cluster made with `--auth=trust` (by an older version of this runner)."""
    try:
        rules = (data_dir / "pg_hba.conf").read_text()
    except OSError:
        return False
    return any(
        line.split()[-1] == "trust"
        for line in rules.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )


def _require_passwords(server: PostgresServer, data_dir: Path) -> None:
    """Converts a trust cluster: the superuser gets the password, then every rule asks for it."""
    trusting = PostgresServer(server.host, server.port)  # no password: trust still applies

    async def set_password(conn: Any) -> None:
        assert server.password is not None
        await conn.execute(f'ALTER ROLE "{SUPERUSER}" PASSWORD {_literal(server.password)}')

    run_sql(trusting.admin_dsn, set_password)
    hba = data_dir / "pg_hba.conf"
    lines = [
        re.sub(r"\btrust\s*$", "scram-sha-256", line) if not line.lstrip().startswith("#") else line
        for line in hba.read_text().splitlines()
    ]
    hba.write_text("\n".join(lines) + "\n")

    async def reload(conn: Any) -> None:
        await conn.execute("SELECT pg_reload_conf()")

    run_sql(server.admin_dsn, reload)


def _prepare_dirs(root: Path, data_dir: Path, socket_dir: Path, run_as: str | None) -> None:
    """`root` and `socket_dir` made if missing; `data_dir` is initdb's to make (`_initdb`)."""
    for directory in (root, socket_dir):
        directory.mkdir(parents=True, exist_ok=True)
    if data_dir.exists():
        data_dir.chmod(0o700)
    if run_as is None:
        return
    uid, gid = os_user_ids(run_as)
    if uid is None or gid is None:
        return
    for directory in (root, data_dir, socket_dir):
        if directory.exists():
            os.chown(directory, uid, gid)
    if blocked := _first_untraversable(root.resolve(), uid, gid):
        raise StartupError(
            f"PostgreSQL refuses to run as root, so it runs as the {run_as!r} OS user, who "
            f"cannot enter {blocked} (on the way to {root}). Use a var dir outside it, "
            f"`chmod o+x {blocked}`, or set VAULTPAY_POSTGRES_ADMIN_URL to an existing server."
        )


def _first_untraversable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to `path` that `uid`/`gid` may not enter (ACLs aside)."""
    for directory in [*reversed(path.parents), path]:
        info = directory.stat()
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return directory
    return None


def _refuse_if_running(data_dir: Path) -> None:
    """Refuses while a PostgreSQL runs on `data_dir`; removes a stale lock file.

    A live pid in `postmaster.pid` is not enough: after a crash or a restart of the host or
    container the pid may be another process's. PostgreSQL itself would refuse to start then
    if that process runs as its OS user (only a dead pid, or one it may not signal, is
    stale to it), so the lock file is removed here once no PostgreSQL process works in
    `data_dir` (a postmaster and its backends run with it as their working directory). A
    dead pid is left to PostgreSQL, which also checks that no old backend still holds the
    shared memory."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not pid_alive(pid):
        return
    working = _postgres_processes_in(data_dir)
    # A postgres whose working directory cannot be read (another OS user's, without
    # CAP_SYS_PTRACE, as root in a default container) may be this folder's server: refused.
    # One that provably works elsewhere (the system's cluster, another run's) is a reused pid
    # of a server killed with its lock file left: not ours (review of 2026-12-05).
    if pid in working or (_is_postgres(pid) and _working_dir_identity(pid) is None):
        raise StartupError(
            f"PostgreSQL already runs on {data_dir} (pid {pid}); is another `make run` using "
            "this var dir? (`make status` shows it, `make stop` stops it)"
        )
    if working:
        pids = ", ".join(map(str, working))
        raise StartupError(
            f"PostgreSQL processes of an earlier server still work in {data_dir} (pids "
            f"{pids}); stop them before starting again."
        )
    pid_file.unlink(missing_ok=True)  # stale: its pid is no PostgreSQL of this folder


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster")
    except OSError:
        return False


def _working_dir_identity(pid: int) -> tuple[int, int] | None:
    """`pid`'s working directory as (device, inode), or None when it cannot be read (gone,
    or not ours). The directory itself, not its name: one folder reached by two paths (a bind
    mount, a symlink) is one folder (review of 2026-12-05: comparing names took a live
    server of this folder, started through another path, for another's)."""
    try:
        found = os.stat(f"/proc/{pid}/cwd")
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _postgres_processes_in(data_dir: Path) -> list[int]:
    """PIDs of the live PostgreSQL processes (postmaster, backends) working in `data_dir`."""
    here = os.stat(data_dir)
    target = (here.st_dev, here.st_ino)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in ("postgres", "postmaster"):
                continue
        except OSError:  # gone
            continue
        if _working_dir_identity(int(entry.name)) != target:
            continue  # elsewhere, or not ours to inspect (then not a server of our folder)
        if pid_alive(pid := int(entry.name)):
            found.append(pid)
    return sorted(found)


def _pg_isready(bindir: Path, port: int) -> bool:
    result = subprocess.run(  # noqa: S603 (our own argv, no shell)
        [str(bindir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port), "-t", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return result.returncode == 0


def _url(scheme: str, user: str, password: str | None, host: str, port: int, db: str) -> str:
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"{scheme}://{auth}@{host}:{port}/{db}"


def _libpq(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgresql") else dsn


def _replace_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return parts._replace(path=f"/{database}").geturl()


def role_password(secret: str, role: str) -> str:
    """The password of `role` under the provisioning secret (URL-safe, 43 characters)."""
    digest = hmac.new(secret.encode(), f"vaultpay-db-role:{role}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create the VaultPay roles and databases.")
    parser.add_argument(
        "command",
        choices=["provision", "passwords"],
        help="provision: create the roles and databases; passwords: print each role's"
        " password (derived from the secret of --password-env) as KEY=value lines for an"
        " .env file: <ROLE>_PASSWORD",
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("VAULTPAY_POSTGRES_ADMIN_URL"),
        help="postgresql://superuser@host:port/db (default: $VAULTPAY_POSTGRES_ADMIN_URL)",
    )
    parser.add_argument("--suffix", default="", help="appended to every role and database name")
    parser.add_argument(
        "--password-env",
        metavar="NAME",
        help="environment variable holding the provisioning secret, from which each role's"
        " password derives (omit for trust auth)",
    )
    args = parser.parse_args(argv)
    password = os.environ[args.password_env] if args.password_env else None
    if args.command == "passwords":
        if password is None:
            parser.error("passwords needs --password-env")
        names = Provisioned(LOOPBACK, 5432, args.suffix, password)
        for role in _login_roles(names):
            print(f"{role.upper()}_PASSWORD={names.role_password(role)}")
        return 0
    if not args.admin_url:
        parser.error("--admin-url or VAULTPAY_POSTGRES_ADMIN_URL is required")
    try:
        result = provision(args.admin_url, suffix=args.suffix, password=password)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for database, owner, app in result.databases():
        print(f"database {database}: owner {owner}, app role {app}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
