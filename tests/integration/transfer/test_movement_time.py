"""A movement's time is taken under its wallet's row lock (transfer t0012), on real PostgreSQL.

A side connection holds the wallet's row lock; the movement is started and waits for it (seen
in pg_stat_activity, not slept for); the database's clock is read; the lock is released. The
movement's created_at and its postings' time (the one reading its limit's business day is also
taken from) must come after that reading: with the time taken before the wait (t0002's
functions) they come before it. And a movement
that another one overtook while it waited never leaves the history's newest row with a
balance_after that is not the wallet's balance.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import pytest

from tests.integration.transfer.conftest import (
    TOP_UP,
    LedgerWorld,
    Wallet,
    key,
    ledger_is_clean,
    send_overtaken_by_a_top_up,
    waiting_on_a_lock,
)
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.outcomes import LedgerOutcome

T = TypeVar("T")


async def _after_waiting_for(
    ledger: LedgerWorld,
    wallet: Wallet,
    function: str,
    movement: Callable[[], Coroutine[Any, Any, T]],
) -> tuple[T, datetime]:
    """Runs `movement` while a side connection holds `wallet`'s row lock; returns its result
    and the database's clock read while it was waiting."""
    blocker = await ledger.owner()
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM wallets WHERE id = $1 FOR UPDATE", wallet.wallet_id)
        moving = asyncio.create_task(movement())
        await waiting_on_a_lock(ledger, function)
        waited_at: datetime = await blocker.fetchval("SELECT clock_timestamp()")
        await holding.rollback()
        result = await moving
    finally:
        await blocker.close()
    return result, waited_at


async def _times_of(ledger: LedgerWorld, transaction_id: str) -> list[Any]:
    """The wallet-side row's created_at, its movement's and its postings' (one list)."""
    rows = await ledger.fetch(
        "SELECT t.created_at AS side, m.created_at AS movement, p.created_at AS posting"
        " FROM wallet_transactions AS t"
        " JOIN ledger_transactions AS m ON m.id = t.ledger_transaction_id"
        " JOIN ledger_postings AS p ON p.ledger_transaction_id = m.id"
        " WHERE t.id = $1::uuid",
        transaction_id,
    )
    assert len(rows) == 2
    return [value for row in rows for value in row.values()]


async def _top_up(ledger: LedgerWorld, wallet: Wallet) -> LedgerOutcome:
    return await ledger.ledger.top_up(
        key(wallet.user_id, TOP_UP),
        wallet.user_id,
        700,
        "INR",
        PaymentMethod.UPI,
        f"upi-{uuid.uuid4().hex}",
        "UPI test",
    )


@pytest.mark.parametrize("kind", ["send", "top_up", "withdraw"])
async def test_a_movement_that_waited_for_its_wallet_is_timed_after_the_wait(
    ledger: LedgerWorld, kind: str
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    movements: dict[str, tuple[str, Callable[[], Coroutine[Any, Any, LedgerOutcome]]]] = {
        "send": (
            "transfer_send_money",
            lambda: ledger.ledger.send_money(
                key(alice.user_id), alice.user_id, bob.wallet_id, 300, "INR", ""
            ),
        ),
        "top_up": ("transfer_top_up", lambda: _top_up(ledger, alice)),
        "withdraw": ("transfer_withdraw", lambda: ledger.withdraw(alice, 300)),
    }
    function, movement = movements[kind]
    outcome, waited_at = await _after_waiting_for(ledger, alice, function, movement)
    assert outcome.code == "OK" and outcome.transaction is not None, outcome
    times = await _times_of(ledger, outcome.transaction.transaction_id)
    assert all(at > waited_at for at in times), (waited_at, times)
    await ledger_is_clean(ledger)


async def test_a_returned_payout_that_waited_for_its_wallet_is_timed_after_the_wait(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    withdrawal = await ledger.withdraw(alice, 400)
    assert withdrawal.transaction is not None
    withdrawal_id = withdrawal.transaction.transaction_id

    returned, waited_at = await _after_waiting_for(
        ledger,
        alice,
        "transfer_return_payout",
        lambda: ledger.ledger.return_payout(withdrawal_id, "account closed"),
    )
    assert returned.outcome == "OK", returned
    [credit] = await ledger.fetch(
        "SELECT id::text FROM wallet_transactions WHERE original_transaction_id = $1::uuid",
        withdrawal_id,
    )
    times = await _times_of(ledger, credit["id"])
    assert all(at > waited_at for at in times), (waited_at, times)
    assert await ledger.balance(alice) == 10_000
    await ledger_is_clean(ledger)


async def test_a_send_overtaken_while_it_waited_is_still_the_historys_newest_row(
    ledger: LedgerWorld,
) -> None:
    """The send waits for alice's row; the session holding it credits her (a top-up, in the
    same transaction) and commits first. The send commits last, so its row must be the newest
    in alice's history and carry her balance."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    sent, _ = await send_overtaken_by_a_top_up(ledger, alice, bob)
    assert sent.code == "OK", sent
    assert await ledger.balance(alice) == 10_000 + 700 - 300
    history = await ledger.fetch(
        "SELECT category, balance_after FROM wallet_transactions WHERE wallet_id = $1"
        " ORDER BY created_at DESC, id DESC",
        alice.wallet_id,
    )
    assert [(r["category"], r["balance_after"]) for r in history] == [
        ("P2P_SEND", 10_400),
        ("TOP_UP", 10_700),
        ("TOP_UP", 10_000),
    ]
    await ledger_is_clean(ledger)
