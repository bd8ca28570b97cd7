"""The platform's unit of work on a real PostgreSQL: commit, rollback, deadline -> timeout."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from vaultpay_common.context import DEADLINE
from vaultpay_common.db import DatabaseUnavailableError, SqlUnitOfWork, create_engine
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_common.pg_raw import borrowed_driver
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import run_sql


@pytest.fixture
async def engine(infra: Infra) -> AsyncIterator[AsyncEngine]:
    url = infra.postgres.admin_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_engine(url, pool_size=2, application_name="uow-test")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS uow_probe (n int)"))
        await conn.execute(text("TRUNCATE uow_probe"))
    yield engine
    await engine.dispose()


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM uow_probe"))).scalar_one())


async def test_leaving_without_commit_rolls_back(engine: AsyncEngine) -> None:
    async with SqlUnitOfWork(engine) as uow:
        await uow.connection.execute(text("INSERT INTO uow_probe VALUES (1)"))
    assert await _count(engine) == 0


async def test_commit_persists(engine: AsyncEngine) -> None:
    async with SqlUnitOfWork(engine) as uow:
        await uow.connection.execute(text("INSERT INTO uow_probe VALUES (1)"))
        await uow.commit()
    assert await _count(engine) == 1


async def test_the_callers_deadline_becomes_the_statement_timeout(engine: AsyncEngine) -> None:
    token = DEADLINE.set(time.monotonic() + 0.3)
    try:
        with pytest.raises(DeadlineExceededError):
            async with SqlUnitOfWork(engine) as uow:
                await uow.connection.execute(text("SELECT pg_sleep(5)"))
    finally:
        DEADLINE.reset(token)


async def test_a_connection_killed_mid_transaction_is_unavailable_and_then_recovers(
    engine: AsyncEngine,
) -> None:
    with pytest.raises(DatabaseUnavailableError):
        async with SqlUnitOfWork(engine) as uow:
            await uow.connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    async with SqlUnitOfWork(engine) as uow:
        assert (await uow.connection.execute(text("SELECT 1"))).scalar_one() == 1


async def test_without_a_deadline_the_engine_default_still_bounds_statements(infra: Infra) -> None:
    url = infra.postgres.admin_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_engine(url, pool_size=1, application_name="uow-test", statement_timeout_ms=300)
    try:
        with pytest.raises(DeadlineExceededError):
            async with SqlUnitOfWork(engine) as uow:
                await uow.connection.execute(text("SELECT pg_sleep(5)"))
    finally:
        await engine.dispose()


async def test_a_callers_long_deadline_does_not_lift_the_engines_bound(infra: Infra) -> None:
    """A deadline an hour away leaves the service's own bound (here 300 ms) in force; only a
    shorter one lowers it (review of 2026-12-03: reads set the deadline's time whatever it was)."""
    url = infra.postgres.admin_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_engine(url, pool_size=1, application_name="uow-test", statement_timeout_ms=300)
    token = DEADLINE.set(time.monotonic() + 3600)
    try:
        async with SqlUnitOfWork(engine) as uow:
            bound = (await uow.connection.execute(text("SHOW statement_timeout"))).scalar_one()
        assert bound == "300ms"
        DEADLINE.set(time.monotonic() + 0.1)
        async with SqlUnitOfWork(engine) as uow:
            lowered = (await uow.connection.execute(text("SHOW statement_timeout"))).scalar_one()
        assert lowered in {f"{ms}ms" for ms in range(1, 101)}
    finally:
        DEADLINE.reset(token)
        await engine.dispose()


async def test_a_pooled_connection_terminated_while_idle_is_unavailable_and_then_recovers(
    engine: AsyncEngine, infra: Infra
) -> None:
    """PostgreSQL ends an idle pooled connection (restart, failover, pg_terminate_backend):
    the next unit of work that takes it answers UNAVAILABLE, never a raw driver error, and
    the one after gets a fresh connection."""
    async with SqlUnitOfWork(engine) as uow:
        pid = (await uow.connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    run_sql(infra.postgres.admin_dsn, lambda c: c.execute(f"SELECT pg_terminate_backend({pid})"))

    outcomes: list[str] = []
    for _ in range(3):  # the pool may hand out the dead connection first or second
        try:
            async with SqlUnitOfWork(engine) as uow:
                await uow.connection.execute(text("INSERT INTO uow_probe VALUES (1)"))
                await uow.commit()
            outcomes.append("ok")
        except DatabaseUnavailableError:
            outcomes.append("unavailable")
    assert outcomes[-1] == "ok"
    assert set(outcomes) <= {"ok", "unavailable"}


async def test_an_exhausted_pool_is_unavailable_for_units_of_work_and_raw_calls(
    infra: Infra,
) -> None:
    """Every pooled connection stays checked out (slow callers): the next unit of work, and
    the next raw asyncpg call, wait for the pool's timeout and answer UNAVAILABLE, never a raw
    SQLAlchemy error (which would reach the client as INTERNAL)."""
    url = infra.postgres.admin_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        async with engine.connect():  # the pool's only connection, busy
            with pytest.raises(DatabaseUnavailableError):
                await _enter_unit_of_work(engine)
            with pytest.raises(DatabaseUnavailableError):
                await _borrow_driver(engine)
    finally:
        await engine.dispose()


async def _enter_unit_of_work(engine: AsyncEngine) -> None:
    async with SqlUnitOfWork(engine):
        pytest.fail("a unit of work got a connection from an exhausted pool")


async def _borrow_driver(engine: AsyncEngine) -> None:
    async with borrowed_driver(engine):
        pytest.fail("a raw call got a connection from an exhausted pool")
