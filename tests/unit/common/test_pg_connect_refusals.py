"""A new connection PostgreSQL refuses while it starts, stops or recovers (57P03), or for want
of a slot (53300), is DatabaseUnavailableError (UNAVAILABLE) on the raw-driver paths too
(review of 2026-12-05: SQLAlchemy wraps it in a bare DBAPIError, which reached the error
interceptor as INTERNAL for every SendMoney, GetBalance, PIN check and revocation poll while
a restarted server came back). No server: the engine's creator refuses as PostgreSQL does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.pg_raw import borrowed_driver, connect_or_unavailable
from vaultpay_transfer.adapters.ledger_pg import PgLedger

REFUSALS: list[Callable[[], Exception]] = [
    lambda: asyncpg.CannotConnectNowError("the database system is starting up"),
    lambda: asyncpg.TooManyConnectionsError("sorry, too many clients already"),
]


def _refusing(refusal: Callable[[], Exception]) -> AsyncEngine:
    async def creator() -> Any:
        raise refusal()

    return create_async_engine("postgresql+asyncpg://", async_creator=creator)


@pytest.mark.parametrize("refusal", REFUSALS, ids=["57P03", "53300"])
async def test_a_refused_connection_is_database_unavailable(
    refusal: Callable[[], Exception],
) -> None:
    engine = _refusing(refusal)
    try:
        with pytest.raises(DatabaseUnavailableError):
            async with borrowed_driver(engine):
                pass
        with pytest.raises(DatabaseUnavailableError):
            await PgLedger(engine)._connect()
    finally:
        await engine.dispose()


async def test_another_connect_failure_is_not_hidden() -> None:
    """A refusal that is no outage (a wrong password) stays what it is, for the operator."""
    engine = _refusing(lambda: asyncpg.InvalidPasswordError("password authentication failed"))
    try:
        with pytest.raises(DBAPIError):
            await connect_or_unavailable(engine)
    finally:
        await engine.dispose()
