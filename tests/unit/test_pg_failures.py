"""A lost PostgreSQL connection is told apart from other failures, however asyncpg reports it,
and a unit of work that loses its connection answers UNAVAILABLE and never pools it again."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.db import DatabaseUnavailableError, SqlUnitOfWork
from vaultpay_common.pg_failures import connection_lost


def _wrapped(error: BaseException) -> DBAPIError:
    """What SQLAlchemy raises: a DBAPIError whose cause chain ends at the driver's error."""
    try:
        try:
            raise error
        except BaseException as driver:
            raise DBAPIError("SELECT 1", None, driver, connection_invalidated=False) from driver
    except DBAPIError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("cannot switch to state 11; another operation is in progress"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("connection is closed"),
        ConnectionResetError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_way_asyncpg_reports_a_lost_connection_counts(error: BaseException) -> None:
    assert connection_lost(error)
    assert connection_lost(_wrapped(error))


def test_a_query_error_is_not_a_lost_connection() -> None:
    error = asyncpg.UniqueViolationError("duplicate key value")
    assert not connection_lost(error)
    assert not connection_lost(_wrapped(error))


class _Connection:
    def __init__(self) -> None:
        self.invalidated = False
        self.closed = False

    async def begin(self) -> None: ...

    def in_transaction(self) -> bool:
        return True

    async def rollback(self) -> None:
        raise _wrapped(asyncpg.InternalClientError("another operation is in progress"))

    async def invalidate(self) -> None:
        self.invalidated = True

    async def close(self) -> None:
        self.closed = True


class _Engine:
    def __init__(self) -> None:
        self.connection = _Connection()

    async def connect(self) -> _Connection:
        return self.connection


async def test_a_unit_of_work_that_loses_its_connection_is_unavailable_and_discards_it() -> None:
    engine = _Engine()

    async def work() -> None:
        async with SqlUnitOfWork(cast(AsyncEngine, engine)):
            raise _wrapped(asyncpg.InternalClientError("another operation is in progress"))

    with pytest.raises(DatabaseUnavailableError):
        await work()
    assert engine.connection.invalidated  # never handed out again by the pool


async def test_a_lost_commit_is_an_unknown_outcome() -> None:
    engine = _Engine()

    async def commit() -> None:
        raise _wrapped(asyncpg.AdminShutdownError("terminating connection"))

    async def work() -> None:
        async with SqlUnitOfWork(cast(AsyncEngine, engine)) as uow:
            cast(Any, uow.connection).commit = commit
            await uow.commit()

    with pytest.raises(DatabaseUnavailableError, match="outcome unknown"):
        await work()
