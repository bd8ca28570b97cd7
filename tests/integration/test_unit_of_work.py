"""The platform's unit of work on a real PostgreSQL: commit, rollback, deadline -> timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.support import eventually
from vaultpay_common.context import DEADLINE
from vaultpay_common.db import DatabaseUnavailableError, SqlUnitOfWork, create_engine
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_common.pg_raw import borrowed_driver
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql


@pytest.fixture
async def engine(databases: Provisioned) -> AsyncIterator[AsyncEngine]:
    """An engine on this module's own database (`databases`, dropped after the module), as
    its owner: the probe table goes with the database, never into a shared server's."""
    url = databases.url(databases.vaultpay_owner_role, databases.vaultpay_database)
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


async def test_a_session_bounds_idle_transactions_and_probes_a_silent_client(
    engine: AsyncEngine,
) -> None:
    """A process frozen or cut off mid-transaction does not keep its locks for hours (review
    of 2026-12-04): PostgreSQL ends the idle transaction, and probes the socket."""
    async with engine.connect() as conn:
        shown = {
            name: await conn.scalar(text(f"SHOW {name}"))
            for name in (
                "idle_in_transaction_session_timeout",
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
            )
        }
    assert shown == {
        "idle_in_transaction_session_timeout": "2min",
        "tcp_keepalives_idle": "30",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
    }


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


async def _pooled_driver(engine: AsyncEngine) -> tuple[int, asyncpg.Connection]:
    """The backend pid and the asyncpg connection of the connection the pool hands out next
    (the only one pooled: the pool is LIFO and a fresh engine has used one at a time)."""
    async with SqlUnitOfWork(engine) as uow:
        pid = int((await uow.connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        raw = await uow.connection.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
    return pid, driver


def _terminate_and_wait_until_gone(admin_dsn: str, pid: int, *, within: float = 10.0) -> None:
    """Ends backend `pid` and waits until it has left pg_stat_activity. Blocking on purpose:
    the caller's event loop does not run meanwhile, so asyncpg cannot yet have read the end
    of the connection."""

    async def work(conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
        deadline = time.monotonic() + within
        while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            assert time.monotonic() < deadline, f"backend {pid} still there after {within} s"
            await asyncio.sleep(0.01)

    run_sql(admin_dsn, work)


async def _insert_probe(engine: AsyncEngine) -> str:
    try:
        async with SqlUnitOfWork(engine) as uow:
            await uow.connection.execute(text("INSERT INTO uow_probe VALUES (1)"))
            await uow.commit()
    except DatabaseUnavailableError:
        return "unavailable"
    return "ok"


async def test_a_pooled_connection_the_driver_knows_closed_is_replaced_at_checkout(
    engine: AsyncEngine, infra: Infra
) -> None:
    """PostgreSQL ends an idle pooled connection (restart, failover, pg_terminate_backend)
    and asyncpg has read the end of it: the checkout hook (`replace_closed_at_checkout`)
    hands out a fresh connection instead, so no call fails for it. With this ordering
    UNAVAILABLE is not a possible outcome; the next test covers the other one."""
    pid, driver = await _pooled_driver(engine)
    _terminate_and_wait_until_gone(infra.postgres.admin_dsn, pid)

    async def driver_knows() -> bool:
        return bool(driver.is_closed())

    await eventually(driver_knows, within=10.0, what="asyncpg saw the connection end")
    assert [await _insert_probe(engine) for _ in range(3)] == ["ok", "ok", "ok"]
    fresh, _ = await _pooled_driver(engine)
    assert fresh != pid
    assert await _count(engine) == 3


async def test_a_pooled_connection_ended_before_the_driver_heard_is_unavailable_once(
    engine: AsyncEngine, infra: Infra
) -> None:
    """The backend of an idle pooled connection is gone but asyncpg has not read the end of
    it yet (the event loop has not run since): the checkout hook cannot tell, the unit of
    work that takes it answers UNAVAILABLE (never a raw driver error), and the one after
    gets a fresh connection."""
    pid, driver = await _pooled_driver(engine)
    _terminate_and_wait_until_gone(infra.postgres.admin_dsn, pid)
    assert not driver.is_closed()  # the case under test: the driver has not heard yet
    assert await _insert_probe(engine) == "unavailable"
    assert await _insert_probe(engine) == "ok"
    fresh, _ = await _pooled_driver(engine)
    assert fresh != pid
    assert await _count(engine) == 1


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


async def test_a_call_cancelled_while_its_unit_of_work_starts_gives_its_connection_back(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of 2026-12-05: a cancellation (the client's deadline) between the checkout and
    the deadline's bound skipped the discard, and `async with` calls no __aexit__ for an
    __aenter__ that raised: the connection stayed checked out until the garbage collector
    dropped it, with an ERROR from SQLAlchemy's pool."""
    bounding = asyncio.Event()

    async def stuck(conn: object) -> None:  # the bound's round trip, held there
        bounding.set()
        await asyncio.Event().wait()

    monkeypatch.setattr("vaultpay_common.db.limit_statements_to_deadline", stuck)

    async def enter() -> None:
        async with SqlUnitOfWork(engine):
            raise AssertionError("never entered")

    before = engine.pool.checkedout()  # type: ignore[attr-defined]
    call = asyncio.ensure_future(enter())
    await asyncio.wait_for(bounding.wait(), 5)
    assert engine.pool.checkedout() == before + 1  # type: ignore[attr-defined]
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert engine.pool.checkedout() == before  # type: ignore[attr-defined]
