"""Async PostgreSQL access (SQLAlchemy 2.0 Core on asyncpg) and the unit-of-work base.

A unit of work is one database transaction:

    async with uow:
        user = await uow.users.get(user_id)
        ...
        await uow.commit()      # leaving the block without commit rolls back

When the caller sent a gRPC deadline, the transaction's statement_timeout is set to the time
that is left, so the database stops working for a client that has already gone.

Every connection a service opens from its DATABASE_URL (the engines' pools, wallet's LISTEN
link) is `asyncpg.connect(asyncpg_dsn(url), ...)`: the URL's TLS options mean the same on each.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self
from urllib.parse import parse_qsl, quote, urlencode

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from vaultpay_common.context import remaining_seconds
from vaultpay_common.errors import DeadlineExceededError, UnavailableError
from vaultpay_common.pg_failures import connection_lost

_QUERY_CANCELED = "57014"  # statement_timeout (the caller's deadline) or a cancel

__all__ = [
    "DatabaseUnavailableError",
    "SqlUnitOfWork",
    "asyncpg_dsn",
    "create_engine",
    "delete_in_batches",
    "limit_statements",
    "limit_statements_to_deadline",
    "query_canceled",
    "replace_closed_at_checkout",
]


class DatabaseUnavailableError(UnavailableError):
    reason = "DATABASE_UNAVAILABLE"
    default_message = "the database is unavailable, retry later"


def query_canceled(exc: BaseException) -> bool:
    """The statement was cancelled: its statement_timeout (a caller's deadline) passed, or a
    cancel request reached it. Answer DEADLINE_EXCEEDED, not an unexpected error."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(orig, "sqlstate", "") == _QUERY_CANCELED


async def limit_statements(conn: AsyncConnection, seconds: float) -> None:
    """Bounds each later statement of `conn`'s transaction by `seconds` (at least 1 ms).
    `SET LOCAL` takes no snapshot: a REPEATABLE READ transaction's begins at its first query."""
    timeout_ms = max(1, math.floor(seconds * 1000))
    await conn.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))


# The session's own bound (the engine's DB_STATEMENT_TIMEOUT_MS; 0 is none) or the deadline's,
# whichever is shorter: a caller's long deadline never lifts the service's bound.
# (current_setting reads "10s", "300ms", "0": an interval; no scan of the pg_settings view.)
_LIMIT_TO_DEADLINE = text(
    "SELECT set_config('statement_timeout', least(nullif(extract(epoch FROM"
    " current_setting('statement_timeout')::interval) * 1000, 0), :ms)::bigint::text, true)"
)


async def limit_statements_to_deadline(conn: AsyncConnection) -> None:
    """Lowers each later statement's bound of `conn`'s transaction to the time the caller's
    gRPC deadline leaves, when it sent one and it is shorter than the session's own: the
    database stops working for a client that has already gone."""
    left = remaining_seconds()
    if left is not None:
        await conn.execute(_LIMIT_TO_DEADLINE, {"ms": max(1, math.floor(left * 1000))})


# A session of ours never waits this long inside a transaction: a process that froze or lost
# its network mid-transaction (a VM pause, a partition) would otherwise keep its row and
# transaction-level advisory locks (IDEMPOTENCY_KEY_IN_USE for every retry) and pin the
# snapshot horizon the audit sealer seals below, until the kernel's keepalive gave up, two
# hours later. (Not transfer's movement hold: a session-level lock taken outside any
# transaction, held until the session ends; the keepalives below end a partitioned one, and
# the hold's own idle_session_timeout one whose process is only paused: adapters/ledger_pg.)
IDLE_IN_TRANSACTION_TIMEOUT_MS = 120_000
# PostgreSQL's side of the socket probes a silent client after 30 s, every 10 s, 3 times.
_KEEPALIVES = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}


# libpq's modes, weakest first; asyncpg takes the same. Without one asyncpg uses PGSSLMODE, else
# `prefer`: encrypted if the server offers it, its certificate never checked.
TLS_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# The URL's options carried into the DSN. Any other is refused: SQLAlchemy handed each to
# asyncpg.connect as a keyword (`sslmode`: TypeError) and asyncpg's DSN parser makes what it does
# not know a server setting (`ssl`: PostgreSQL refuses the login), so one URL meant different
# connections on the two paths (a review: no verified TLS was possible).
_URL_OPTIONS = frozenset({"ssl", "sslmode", "sslrootcert"})


def asyncpg_dsn(url: str) -> str:
    """The DSN asyncpg.connect takes for a service's DATABASE_URL (`postgresql+asyncpg://`).

    Read as SQLAlchemy reads it (`make_url`: a password may hold `?`, `#` or `/` unencoded, as
    the engines always took it), then written back with every part quoted. The URL's TLS
    options become libpq's, which asyncpg's DSN parser reads: `ssl=` or `sslmode=` (one of
    TLS_MODES; `ssl` is SQLAlchemy's spelling) and `sslrootcert=`, the CA bundle's path;
    without it asyncpg reads PGSSLROOTCERT, then ~/.postgresql/root.crt. Any other query
    option, a mode not in TLS_MODES, or `ssl` beside `sslmode` is a ValueError naming the
    option (never the URL: it carries the password)."""
    shape = (
        "a database URL must read postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE, one"
        " host, with @ : / in the user or password percent-encoded (%40 %3A %2F)"
    )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # never the parser's own text: it quotes the URL
        raise ValueError(shape) from None
    if parsed.host is not None and "@" in parsed.host:  # an unencoded @ in the password
        raise ValueError(shape)
    # SQLAlchemy drops an option given empty; an empty mode (`sslmode=${UNSET}`) would then
    # mean asyncpg's default, `prefer`: unverified. Read the raw query for it.
    raw_query = url.partition("?")[2]
    for name, given in parse_qsl(raw_query, keep_blank_values=True):
        if name in {"ssl", "sslmode"} and given == "":
            raise ValueError(
                f"database URL: ssl/sslmode must be one of {', '.join(TLS_MODES)}, not ''"
            )
    if parsed.drivername not in {"postgresql+asyncpg", "postgresql", "postgres"}:
        raise ValueError("a database URL must start with postgresql+asyncpg://")
    options: dict[str, str] = {}
    for name, value in parsed.query.items():
        if name not in _URL_OPTIONS:
            raise ValueError(
                f"database URL option {name!r} is not supported (only ssl or sslmode, sslrootcert)"
            )
        if not isinstance(value, str):
            raise ValueError(f"database URL option {name!r} is given twice")
        options[name] = value
    if "ssl" in options and "sslmode" in options:
        raise ValueError("database URL: give ssl= or sslmode=, not both")
    mode = options.pop("ssl") if "ssl" in options else options.pop("sslmode", None)
    if mode is not None and mode not in TLS_MODES:
        raise ValueError(
            f"database URL: ssl/sslmode must be one of {', '.join(TLS_MODES)}, not {mode!r}"
        )
    if options.get("sslrootcert") == "":
        raise ValueError("database URL: sslrootcert is empty")
    auth = ""
    if parsed.username is not None:
        auth = quote(parsed.username, safe="")
        if parsed.password is not None:
            auth += ":" + quote(str(parsed.password), safe="")
        auth += "@"
    host = parsed.host or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = "" if parsed.port is None else f":{parsed.port}"
    dsn = f"postgresql://{auth}{host}{port}/{quote(parsed.database or '', safe='')}"
    query = {**({"sslmode": mode} if mode is not None else {}), **options}
    return f"{dsn}?{urlencode(query, quote_via=quote, safe='/')}" if query else dsn


def create_engine(
    url: str, *, pool_size: int = 10, application_name: str, statement_timeout_ms: int = 10_000
) -> AsyncEngine:
    """An engine with a bounded pool, tagged with the service name.

    Every statement is bounded by `statement_timeout_ms` even when the caller sent no
    deadline (a caller's shorter deadline lowers it per transaction), and a transaction left
    idle by a frozen or cut-off process by IDLE_IN_TRANSACTION_TIMEOUT_MS. Bound parameters
    are kept out of error messages and logs: they can carry personal data. Each connection is
    `asyncpg.connect(asyncpg_dsn(url))` (a bad TLS option fails here, at start-up), not what
    SQLAlchemy would make of the URL's query.
    """
    dsn = asyncpg_dsn(url)
    server_settings = {
        "application_name": application_name,
        "statement_timeout": str(statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS),
        **_KEEPALIVES,
    }

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, server_settings=server_settings)

    engine = create_async_engine(
        url,
        async_creator=connect,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per checkout on every call. A connection the
        # driver already knows is closed is replaced at checkout (replace_closed_at_checkout);
        # one broken by a database restart before the driver heard of it fails one call
        # (UNAVAILABLE, retryable) and is then discarded.
        pool_pre_ping=False,
        # Most recently used connection first: at a low rate a few warm backends serve the
        # calls instead of every connection the pool grew to at its peak in turn (each with
        # cold caches, in PostgreSQL and here): half of PostgreSQL's CPU per call in the
        # transfer bench's PIN-checked cells after its 64-client ones.
        pool_use_lifo=True,
        pool_recycle=1800,
        hide_parameters=True,
    )
    event.listen(engine.sync_engine.pool, "checkout", replace_closed_at_checkout)
    return engine


def replace_closed_at_checkout(dbapi_connection: object, record: object, proxy: object) -> None:
    """Pool checkout hook: a pooled connection whose socket PostgreSQL closed (a restart, a
    failover, pg_terminate_backend, idle_session_timeout) while it sat idle is known closed
    to asyncpg, which read the end of file. Without this every such connection failed the
    one call that took it, and after a restart that was one call per pooled connection,
    minutes later for the least used ones. Raising DisconnectionError makes SQLAlchemy
    discard that connection and hand out a new one; the others stay (each is checked at its
    own checkout, so one ended backend does not make the whole pool reconnect). No round
    trip: one method call per checkout."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver, "is_closed", None)
    if is_closed is not None and is_closed():
        raise DisconnectionError("the pooled connection was closed by the server")


class SqlUnitOfWork:
    """One transaction on one pooled connection. Subclasses add repositories in `_bind`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._committed = False

    @property
    def connection(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._conn

    def _bind(self, conn: AsyncConnection) -> None:
        """Create repositories on `conn`; overridden by each service's unit of work."""

    async def __aenter__(self) -> Self:
        try:
            self._conn = await self._engine.connect()
            await self._conn.begin()
            await limit_statements_to_deadline(self._conn)
        except Exception as exc:
            # PoolTimeoutError: every pooled connection stayed checked out for the pool's timeout.
            lost = isinstance(
                exc, (OperationalError, InterfaceError, PoolTimeoutError)
            ) or connection_lost(exc)
            await self._discard()
            if lost:
                raise DatabaseUnavailableError() from exc
            raise
        except BaseException:
            # A cancellation (the client's deadline, a cancelled call) between the checkout
            # and the deadline's bound: `async with` calls no __aexit__ for an __aenter__
            # that raised, so the connection stayed checked out until the garbage collector
            # dropped it, with an ERROR from SQLAlchemy's pool (review of 2026-12-05).
            await asyncio.shield(self._discard())
            raise
        self._committed = False
        self._bind(self._conn)
        return self

    async def commit(self) -> None:
        try:
            await self.connection.commit()
        except Exception as exc:
            if connection_lost(exc):
                # The COMMIT may or may not have happened: never report a definite failure.
                raise DatabaseUnavailableError("commit outcome unknown, retry") from exc
            raise
        self._committed = True

    async def rollback(self) -> None:
        await self.connection.rollback()

    async def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _discard(self) -> None:
        """Closes for good a connection that may be broken, instead of pooling it again."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lost = exc is not None and connection_lost(exc)
        try:
            if not lost and self._conn is not None and self._conn.in_transaction():
                await self._conn.rollback()
        except Exception as rollback_error:
            lost = connection_lost(rollback_error)
            if exc is None and not lost:
                raise
        finally:
            await (self._discard() if lost else self._close())
        if exc is not None and query_canceled(exc):
            raise DeadlineExceededError() from exc
        if exc is not None and lost and not isinstance(exc, DatabaseUnavailableError):
            # The connection died under us (database restart, network): nothing committed,
            # and a retry will get a fresh connection.
            raise DatabaseUnavailableError() from exc


async def delete_in_batches(
    engine: AsyncEngine,
    one_batch: Callable[[AsyncConnection], Awaitable[int]],
    batch_size: int,
) -> int:
    """Runs `one_batch` (it deletes at most `batch_size` rows and says how many), each in a
    transaction of its own, until one deletes fewer; returns how many went in all. The purges'
    shape: no long transaction holding many rows' locks, nothing left that was due."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = await one_batch(conn)
        total += deleted
        if deleted < batch_size:
            return total
