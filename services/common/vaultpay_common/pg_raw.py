"""A pooled connection's raw asyncpg driver, for hot paths that skip SQLAlchemy.

    async with borrowed_driver(engine) as driver:      # asyncpg.Connection
        row = await driver.fetchrow(SQL, *args)

The connection comes from the engine's pool (the same bound, the same session settings) and
goes back to it afterwards. Failures become the project's errors at the boundary: no
connection -> DatabaseUnavailableError; a connection that died during the block is
invalidated (never pooled again) and the asyncpg error propagates, for the caller to say what
a lost connection means for it (a read may be retried; a commit's outcome is unknown).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.pg_failures import LOST_CONNECTION, connection_lost

__all__ = ["borrowed_driver", "connect_or_unavailable"]


async def connect_or_unavailable(engine: AsyncEngine) -> AsyncConnection:
    """A pooled connection, or DatabaseUnavailableError: the server unreachable, the pool
    exhausted, or a new connection refused while PostgreSQL starts, stops or recovers
    (57P03) or has no slot left (53300), which SQLAlchemy wraps in a bare DBAPIError (they
    answered INTERNAL)."""
    try:
        return await engine.connect()
    except (OperationalError, InterfaceError, OSError, PoolTimeoutError) as exc:
        raise DatabaseUnavailableError() from exc  # unreachable, or the pool exhausted
    except DBAPIError as exc:
        if connection_lost(exc):
            raise DatabaseUnavailableError() from exc
        raise


@asynccontextmanager
async def borrowed_driver(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """The raw asyncpg connection of a pooled connection (see the module docstring)."""
    conn = await connect_or_unavailable(engine)
    try:
        try:
            raw = await conn.get_raw_connection()
        except DBAPIError as exc:
            raise DatabaseUnavailableError() from exc
        driver: asyncpg.Connection = raw.driver_connection
        try:
            yield driver
        except TimeoutError:  # asyncpg's own timeout cancelled the statement: still usable
            raise
        except LOST_CONNECTION:
            await conn.invalidate()
            raise
    finally:
        await conn.close()
