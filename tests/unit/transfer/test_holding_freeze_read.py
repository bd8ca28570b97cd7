"""The freeze read after a WALLET_FROZEN (adapters/ledger_pg.py `_with_holding_freeze`): a
read that fails leaves the refusal standing, bare, and is never taken for a movement's lost
commit; a broken or interrupted connection is discarded. Stand-ins for the connection and the
driver (the integration tests run the read on PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from vaultpay_transfer.adapters.ledger_pg import _with_holding_freeze
from vaultpay_transfer.domain.outcomes import LedgerOutcome

REFUSED = LedgerOutcome("WALLET_FROZEN")


class _Conn:
    def __init__(self) -> None:
        self.invalidated = False

    async def invalidate(self) -> None:
        self.invalidated = True


class _Driver:
    def __init__(self, failure: BaseException, *, closes: bool) -> None:
        self._failure = failure
        self._closes = closes
        self._closed = False

    async def fetch(self, *args: Any) -> list[Any]:
        self._closed = self._closes
        raise self._failure

    def is_closed(self) -> bool:
        return self._closed


@pytest.mark.parametrize(
    ("failure", "closes"),
    [
        (asyncpg.ConnectionDoesNotExistError("gone"), True),
        (asyncpg.QueryCanceledError("statement timeout"), False),
        (asyncpg.InsufficientPrivilegeError("no grant"), False),
    ],
    ids=["lost", "timeout", "privilege"],
)
async def test_a_failed_read_leaves_the_refusal_bare_and_is_no_lost_commit(
    failure: BaseException, closes: bool, caplog: pytest.LogCaptureFixture
) -> None:
    conn = _Conn()
    outcome = await _with_holding_freeze(
        conn,  # type: ignore[arg-type]
        _Driver(failure, closes=closes),
        REFUSED,
        "user-1",
    )
    assert outcome == REFUSED
    assert conn.invalidated is closes  # a broken connection never goes back to the pool
    messages = [r.getMessage() for r in caplog.records]
    assert not any("connection lost" in m for m in messages)  # no movement's unknown commit
    assert any("freeze holding a wallet could not be read" in m for m in messages)


async def test_a_read_interrupted_discards_the_connection_and_is_not_swallowed() -> None:
    conn = _Conn()
    with pytest.raises(asyncio.CancelledError):
        await _with_holding_freeze(
            conn,  # type: ignore[arg-type]
            _Driver(asyncio.CancelledError(), closes=False),
            REFUSED,
            "user-1",
        )
    assert conn.invalidated


async def test_any_other_outcome_reads_nothing() -> None:
    driver = _Driver(AssertionError("read"), closes=False)
    for code in ("OK", "INSUFFICIENT_BALANCE", "WALLET_CLOSED"):
        outcome = LedgerOutcome(code)
        assert await _with_holding_freeze(_Conn(), driver, outcome, "u") is outcome  # type: ignore[arg-type]
