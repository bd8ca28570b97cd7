"""The payout worker's lease (transfer_lease_payouts, t0004, t0013 and t0021) on real
PostgreSQL: the payouts it leases are found by their key however the planner guesses the round's
size, and a payout the bank cannot be asked about is leased for twice as long each time, up to
64 times the worker's lease; a staff hold asks no bank and counts no attempt (t0021: only the
claim that lets the payout go to the bank counts one), so it does not lengthen the next
lease."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import pytest

from tests.fakes.transfer import ScriptedBank
from tests.integration.transfer.conftest import LedgerWorld, Wallet
from vaultpay_transfer.service_layer.payouts import PayoutWorker
from vaultpay_wallet.domain.model import FreezeSource

pytestmark = pytest.mark.integration


async def test_the_lease_finds_its_payouts_by_key_whatever_the_planner_guesses(
    ledger: LedgerWorld,
) -> None:
    """PostgreSQL 15 plans a SQL function's statement without its arguments' values: a generic
    plan, where `LIMIT p_limit` is a guess (a tenth of the due payouts the statistics saw).
    t0002's `transaction_id IN (subquery)` joined the leased rows back, which after a backlog
    became a hash join over the whole payouts table; the installed lease, planned the same way,
    must take the leased ids as one array and find each by the primary key: no join at all."""
    conn = await ledger.owner()
    try:
        body = await conn.fetchval(
            "SELECT prosrc FROM pg_proc WHERE proname = 'transfer_lease_payouts'"
        )
        statement = body.replace("p_limit", "$1").replace("p_lease_seconds", "$2")
        async with conn.transaction():
            await conn.execute("PREPARE lease_plan (integer, double precision) AS " + statement)
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            rows = await conn.fetch("EXPLAIN EXECUTE lease_plan (50, 60)")
            await conn.execute("DEALLOCATE lease_plan")
    finally:
        await conn.close()
    plan = "\n".join(row[0] for row in rows)
    # The leased ids are computed once (an InitPlan) and matched by `= ANY`: on a table this
    # small a scan is cheapest, on a large one the primary key's index; never a join.
    assert "InitPlan" in plan and "= ANY" in plan, plan
    assert "Join" not in plan and "Nested Loop" not in plan, plan


_LEASE = 10.0
# The bank call's time, shorter than the first lease: the claim before the call (t0014) then
# keeps the lease's end as the lease set it (it only lengthens a lease that would end sooner).
_BANK = _LEASE / 2


async def _pending_payout(ledger: LedgerWorld) -> tuple[str, str, Wallet]:
    """A new payout to an account of its own: its transaction id, its account hash, its
    wallet."""
    wallet = await ledger.new_wallet()
    await ledger.fund(wallet, 5_000)
    account_hash = secrets.token_hex(32)
    outcome = await ledger.withdraw(wallet, 1_000, account_hash=account_hash)
    assert outcome.code == "OK" and outcome.transaction is not None, outcome
    return outcome.transaction.transaction_id, account_hash, wallet


async def _leased_for(
    ledger: LedgerWorld, worker: PayoutWorker, transaction_id: str
) -> tuple[timedelta, timedelta, int]:
    """One round of the worker on the payout, made due first: the bounds of its lease's length
    (the database's clock read just before and just after the round) and its attempts."""
    [before] = await ledger.fetch(
        "UPDATE payouts SET available_at = clock_timestamp() WHERE transaction_id = $1::uuid"
        " RETURNING clock_timestamp() AS now",
        transaction_id,
    )
    await worker.run_once()
    [row] = await ledger.fetch(
        "SELECT available_at, attempts, clock_timestamp() AS now FROM payouts"
        " WHERE transaction_id = $1::uuid",
        transaction_id,
    )
    available_at: datetime = row["available_at"]
    return available_at - row["now"], available_at - before["now"], int(row["attempts"])


async def test_a_payout_the_bank_cannot_be_asked_about_is_leased_twice_as_long_each_time(
    ledger: LedgerWorld,
) -> None:
    """t0004 leased every payout for the worker's lease: one the bank never answered came back
    every lease period forever. Each lease is now the worker's lease times 2^attempts so far,
    capped at 64 times."""
    transaction_id, account_hash, _ = await _pending_payout(ledger)
    bank = ScriptedBank(down={account_hash})
    worker = PayoutWorker(
        ledger.ledger, bank, batch_size=1000, lease_seconds=_LEASE, bank_seconds=_BANK
    )

    for attempt, factor in enumerate((1, 2, 4, 8, 16, 32, 64, 64, 64), start=1):
        shortest, longest, attempts = await _leased_for(ledger, worker, transaction_id)
        lease = timedelta(seconds=_LEASE * factor)
        assert shortest <= lease <= longest, (attempt, shortest, longest)
        assert attempts == attempt
    assert bank.asked.count(transaction_id) == 9  # asked every round, never answered
    [row] = await ledger.fetch(
        "SELECT status FROM payouts WHERE transaction_id = $1::uuid", transaction_id
    )
    assert row["status"] == "PENDING"


async def test_a_held_payout_counts_no_attempt_and_does_not_back_off(
    ledger: LedgerWorld,
) -> None:
    """t0011's hold asks no bank, so it counts no attempt (t0013 gave the lease's back; since
    t0021 the lease takes none): however many rounds a staff freeze holds a payout, its next
    lease is as long as before the freeze."""
    transaction_id, account_hash, wallet = await _pending_payout(ledger)
    bank = ScriptedBank(down={account_hash})
    worker = PayoutWorker(
        ledger.ledger,
        bank,
        batch_size=1000,
        lease_seconds=_LEASE,
        hold_seconds=0,
        bank_seconds=_BANK,
    )
    for _ in range(2):  # two failed attempts: the next lease is 4 times the worker's
        await _leased_for(ledger, worker, transaction_id)
    await ledger.freeze(wallet, FreezeSource.ADMIN)
    for _ in range(3):
        *_, attempts = await _leased_for(ledger, worker, transaction_id)
        assert attempts == 2
    assert bank.asked.count(transaction_id) == 2
    await ledger.lift(wallet, FreezeSource.ADMIN)

    shortest, longest, attempts = await _leased_for(ledger, worker, transaction_id)
    assert shortest <= timedelta(seconds=_LEASE * 4) <= longest
    assert attempts == 3
    assert bank.asked.count(transaction_id) == 3
