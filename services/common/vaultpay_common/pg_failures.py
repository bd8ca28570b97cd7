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

import asyncpg
from sqlalchemy.exc import DBAPIError

__all__ = ["LOST_CONNECTION", "connection_lost"]

LOST_CONNECTION: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # ConnectionDoesNotExistError among them
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    ConnectionError,
    OSError,
)


def connection_lost(exc: BaseException) -> bool:
    """True when `exc`, or one it was raised from, says the connection is gone or unusable."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, LOST_CONNECTION):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__
    return False
