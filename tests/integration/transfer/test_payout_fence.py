"""The payout lease is fenced (transfer t0014), on real PostgreSQL with the real ledger adapter
and payout worker.

* Worker A leases a payout for a moment; the lease runs out and worker B leases it. A's claim
  answers LEASE_LOST and leaves the row as B's lease made it; B's claim answers CLEAR and
  renews the lease for the bank call.
* Both workers' rounds, A's stalled in its batch while its lease runs out and B leases the
  payout: the bank is asked once in all, by B, and the payout settles once.
* A stale worker cannot hold a payout another one leased (a staff freeze): its claim is
  LEASE_LOST, the live lease's end and attempts stay; the live worker's claim holds it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import pytest

from tests.fakes.transfer import ScriptedBank
from tests.integration.transfer.conftest import LedgerWorld, Wallet, ledger_is_clean
from tests.support import eventually
from vaultpay_transfer.service_layer.payouts import PayoutWorker
from vaultpay_transfer.service_layer.ports import (
    ClaimAnswer,
    PayoutClaim,
    PayoutLease,
    PayoutLedger,
    PayoutSettlement,
)
from vaultpay_wallet.domain.model import FreezeSource

pytestmark = pytest.mark.integration

_LOGGER = "vaultpay_transfer.service_layer.payouts"
_MOMENT = 0.2  # worker A's lease, in seconds: run out by the time B leases


async def _pending_payout(ledger: LedgerWorld) -> tuple[str, Wallet]:
    wallet = await ledger.new_wallet()
    await ledger.fund(wallet, 5_000)
    outcome = await ledger.withdraw(wallet, 1_000, account_hash=secrets.token_hex(32))
    assert outcome.code == "OK" and outcome.transaction is not None, outcome
    return outcome.transaction.transaction_id, wallet


async def _row(ledger: LedgerWorld, transaction_id: str) -> tuple[str, datetime, int, bool]:
    """The payout's status, available_at, attempts and whether it is marked held."""
    [row] = await ledger.fetch(
        "SELECT status, available_at, attempts, held_since IS NOT NULL AS held FROM payouts"
        " WHERE transaction_id = $1::uuid",
        transaction_id,
    )
    return str(row["status"]), row["available_at"], int(row["attempts"]), bool(row["held"])


async def _lease_runs_out(ledger: LedgerWorld, transaction_id: str, within: float = 20.0) -> None:
    """Until the database's clock has passed the payout's lease; polled, with a deadline."""

    async def due() -> bool:
        [row] = await ledger.fetch(
            "SELECT available_at <= clock_timestamp() AS due FROM payouts"
            " WHERE transaction_id = $1::uuid",
            transaction_id,
        )
        return bool(row["due"])

    await eventually(due, within=within, what="the payout's lease running out")


def _lease_of(leases: list[PayoutLease], transaction_id: str) -> PayoutLease:
    [lease] = [lease for lease in leases if lease.transaction_id == transaction_id]
    return lease


async def test_a_stale_lease_is_lost_and_the_live_one_is_renewed_for_the_bank_call(
    ledger: LedgerWorld,
) -> None:
    payout, _ = await _pending_payout(ledger)
    a = _lease_of(await ledger.ledger.lease_payouts(1000, _MOMENT), payout)
    # The lease's end, exactly; a lease counts no attempt (t0021: the claim counts bank calls).
    assert (await _row(ledger, payout))[1:3] == (a.lease_until, 0)
    await _lease_runs_out(ledger, payout)
    b = _lease_of(await ledger.ledger.lease_payouts(1000, 5), payout)
    assert b.lease_until > a.lease_until and b.attempts == 0
    leased_by_b = await _row(ledger, payout)

    lost = await ledger.ledger.claim_for_bank(a, 0, 60)
    assert lost == PayoutClaim(ClaimAnswer.LEASE_LOST, b.lease_until)
    assert await _row(ledger, payout) == leased_by_b  # nothing changed

    claimed = await ledger.ledger.claim_for_bank(b, 0, 60)
    assert claimed.answer is ClaimAnswer.CLEAR
    assert claimed.attempts == 1  # the bank call it lets through: the first
    assert claimed.lease_until is not None
    assert claimed.lease_until - b.lease_until > timedelta(seconds=40)  # held for the bank call
    assert await _row(ledger, payout) == ("PENDING", claimed.lease_until, 1, False)
    # A's lease is stale for good, whatever the row says now.
    assert (await ledger.ledger.claim_for_bank(a, 0, 60)).answer is ClaimAnswer.LEASE_LOST

    await ledger.ledger.settle_payout(payout)
    assert (await ledger.ledger.claim_for_bank(b, 0, 60)) == PayoutClaim(ClaimAnswer.FINISHED, None)
    await ledger_is_clean(ledger)


class _StalledAfterLease:
    """A worker's ledger whose lease comes back only after `meanwhile` ran: the worker's round
    reaches its payouts late, as one busy with the rest of its batch does."""

    def __init__(self, ledger: PayoutLedger, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._ledger, self._meanwhile = ledger, meanwhile

    async def lease_payouts(self, limit: int, lease_seconds: float) -> list[PayoutLease]:
        leases = await self._ledger.lease_payouts(limit, lease_seconds)
        await self._meanwhile()
        return leases

    async def claim_for_bank(
        self, lease: PayoutLease, hold_seconds: float, bank_seconds: float
    ) -> PayoutClaim:
        return await self._ledger.claim_for_bank(lease, hold_seconds, bank_seconds)

    async def settle_payout(self, transaction_id: str) -> PayoutSettlement:
        return await self._ledger.settle_payout(transaction_id)

    async def return_payout(self, transaction_id: str, reason: str) -> PayoutSettlement:
        return await self._ledger.return_payout(transaction_id, reason)


async def test_two_workers_on_one_payout_ask_the_bank_once(
    ledger: LedgerWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """A leases the payout and stalls until its lease has run out and B has leased it; A
    goes on first (its claim is LEASE_LOST), then B (CLEAR, the bank, settled). Without the
    fence both claims answered CLEAR and the bank was asked twice."""
    payout, wallet = await _pending_payout(ledger)
    bank = ScriptedBank()  # counts: `asked`
    b_leased, a_done = asyncio.Event(), asyncio.Event()

    async def b_waits_for_a() -> None:
        b_leased.set()
        await a_done.wait()

    b = PayoutWorker(_StalledAfterLease(ledger.ledger, b_waits_for_a), bank, batch_size=1000)
    b_round: asyncio.Task[int] | None = None

    async def a_stalls() -> None:
        nonlocal b_round
        await _lease_runs_out(ledger, payout)
        b_round = asyncio.create_task(b.run_once())
        await asyncio.wait_for(b_leased.wait(), 20)

    a = PayoutWorker(
        _StalledAfterLease(ledger.ledger, a_stalls), bank, batch_size=1000, lease_seconds=_MOMENT
    )
    with caplog.at_level(logging.INFO, logger=_LOGGER):
        assert await a.run_once() == 0
        assert bank.asked.count(payout) == 0  # A left it to B
        a_done.set()
        assert b_round is not None
        assert await asyncio.wait_for(b_round, 20) >= 1
    assert bank.asked.count(payout) == 1
    assert (await _row(ledger, payout))[0] == "SETTLED"
    assert await ledger.balance(wallet) == 4_000
    lost = [
        r
        for r in caplog.records
        if getattr(r, "transaction_id", "") == payout and "another worker has it" in r.getMessage()
    ]
    assert len(lost) == 1 and lost[0].levelno == logging.INFO
    await ledger_is_clean(ledger)


async def test_a_stale_worker_cannot_hold_a_payout_and_cut_the_live_lease_short(
    ledger: LedgerWorld,
) -> None:
    payout, wallet = await _pending_payout(ledger)
    a = _lease_of(await ledger.ledger.lease_payouts(1000, _MOMENT), payout)
    await _lease_runs_out(ledger, payout)
    b = _lease_of(await ledger.ledger.lease_payouts(1000, 60), payout)
    await ledger.freeze(wallet, FreezeSource.ADMIN)

    # t0011's check answered HELD here: due again at once.
    assert (await ledger.ledger.claim_for_bank(a, 0, 60)).answer is ClaimAnswer.LEASE_LOST
    assert await _row(ledger, payout) == ("PENDING", b.lease_until, 0, False)

    held = await ledger.ledger.claim_for_bank(b, 0, 60)
    assert held.answer is ClaimAnswer.HELD
    assert await _row(ledger, payout) == ("PENDING", held.lease_until, 0, True)

    # The freeze lifted, a round of the worker pays it out (the hold made it due at once).
    await ledger.lift(wallet, FreezeSource.ADMIN)
    bank = ScriptedBank()
    await PayoutWorker(ledger.ledger, bank, batch_size=1000).run_once()
    assert bank.asked.count(payout) == 1
    assert (await _row(ledger, payout))[0] == "SETTLED"
    await ledger_is_clean(ledger)
