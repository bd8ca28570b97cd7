"""A transaction PostgreSQL rolls back to break a deadlock answers ABORTED TRANSACTION_CONFLICT
(retryable: nothing of it committed), not INTERNAL (review of 2026-12-05: no mapping of 40P01
or 40001 existed; the error table and a client's retry policy say otherwise). A real deadlock
between a handler's transaction and the test's, through a real grpc.aio server and client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import rpc_failure
from vaultpay_common.db import create_engine
from vaultpay_common.grpc.errors import ErrorInterceptor
from vaultpay_common.grpc.request_context import RequestContextInterceptor
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned

pytestmark = pytest.mark.integration

METHOD = "/test.v1.Conflicts/Deadlock"
PATIENCE = 10.0


@pytest.fixture
async def engines(
    databases: Provisioned, infra: Infra
) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """The handler's engine (the server's admin: only a superuser sets deadlock_timeout) and
    the test's, on this module's database, told apart in pg_stat_activity."""
    admin = make_url(infra.postgres.admin_dsn).set(
        drivername="postgresql+asyncpg", database=databases.vaultpay_database
    )
    victim = create_engine(
        admin.render_as_string(hide_password=False), pool_size=2, application_name="victim"
    )
    other = create_engine(databases.vaultpay_owner_dsn, pool_size=2, application_name="other")
    async with other.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS conflict_rows (id int PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO conflict_rows VALUES (1), (2) ON CONFLICT DO NOTHING"))
    try:
        yield victim, other
    finally:
        await victim.dispose()
        await other.dispose()


async def _waiting_on_a_lock(engine: AsyncEngine, application: str) -> None:
    """Until a backend of `application` waits on a lock (polled, with a deadline)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = :app AND wait_event_type = 'Lock'"
    )
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while True:
        async with engine.connect() as conn:
            if (await conn.execute(query, {"app": application})).scalar_one():
                return
        assert asyncio.get_running_loop().time() < deadline, f"{application} never waited"
        await asyncio.sleep(0.01)


async def test_a_deadlock_victim_answers_aborted_transaction_conflict(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    victim, other_engine = engines
    first_locked, second_locked = asyncio.Event(), asyncio.Event()

    async def deadlocking(request: bytes, context: Any) -> bytes:
        async with victim.begin() as conn:
            # It waits second and checks for a deadlock after 50 ms, long before the other
            # side's check (1 s): it finds the cycle, and is its victim, however slow the
            # machine.
            await conn.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
            await conn.execute(text("SELECT * FROM conflict_rows WHERE id = 1 FOR UPDATE"))
            first_locked.set()
            await second_locked.wait()
            await conn.execute(text("SELECT * FROM conflict_rows WHERE id = 2 FOR UPDATE"))
        return b"never"

    server = grpc.aio.server(interceptors=[RequestContextInterceptor(), ErrorInterceptor("kit")])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.v1.Conflicts", {"Deadlock": grpc.unary_unary_rpc_method_handler(deadlocking)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = asyncio.ensure_future(channel.unary_unary(METHOD)(b"", timeout=PATIENCE))
            async with other_engine.begin() as other:
                await other.execute(text("SELECT * FROM conflict_rows WHERE id = 2 FOR UPDATE"))
                await asyncio.wait_for(first_locked.wait(), PATIENCE)
                waiting = asyncio.ensure_future(
                    other.execute(text("SELECT * FROM conflict_rows WHERE id = 1 FOR UPDATE"))
                )
                await _waiting_on_a_lock(other_engine, "other")
                second_locked.set()
                refused = await rpc_failure(call)
                await asyncio.wait_for(waiting, PATIENCE)  # this side then gets the row
    finally:
        await server.stop(None)
    assert (refused.code, refused.reason) == (grpc.StatusCode.ABORTED, "TRANSACTION_CONFLICT")
