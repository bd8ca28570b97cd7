"""Telling a lost PostgreSQL connection from other failures (every unit of work, the ledger and its reads).

PostgreSQL ends connections on a restart, a failover or `pg_terminate_backend`, and asyncpg
reports it differently depending on when the news arrives: ConnectionDoesNotExistError, or
InterfaceError ("connection is closed"), once the socket is gone; AdminShutdownError when the
FATAL message is read during a call; InternalClientError ("cannot switch to state 11;
another operation (2) is in progress") when a pooled connection is taken after its FATAL
message was read and before its end of file was. SQLAlchemy wraps each in a DBAPIError.

    if connection_lost(exc): ...   # discard the connection; the call may be retried
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
from sqlalchemy.exc import DBAPIError

__all__ = ["LOST_CONNECTION", "causes", "connection_lost", "sqlstates"]

LOST_CONNECTION: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # ConnectionDoesNotExistError among them
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.TooManyConnectionsError,  # 53300: every replica reconnecting at once
    ConnectionError,
    OSError,
)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then each exception it was raised from (`raise ... from`, as SQLAlchemy wraps
    the driver's)."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__


def sqlstates(exc: BaseException) -> Iterator[tuple[str, BaseException]]:
    """The SQLSTATE codes PostgreSQL answered along `exc`'s causes, each with its exception."""
    for seen in causes(exc):
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str):
            yield code, seen


def connection_lost(exc: BaseException) -> bool:
    """True when `exc`, or one it was raised from, says the connection is gone or unusable."""
    return any(
        isinstance(seen, LOST_CONNECTION)
        or (isinstance(seen, DBAPIError) and seen.connection_invalidated)
        for seen in causes(exc)
    )
