"""A payout of a wallet that staff froze is held, not paid out (transfer t0011), on real
PostgreSQL with both services' migrations, wallet's own repository for the freezes and the real
payout worker with a bank that pays every payout it is asked about.

* Withdraw, an admin freeze, a round of the worker: the bank is not asked, the withdrawal stays
  PENDING with its money in payouts-in-flight, the wallet's balance is unchanged and the ledger
  verifies; the hold is logged once. The freeze lifted, the next round pays it out.
* A self-freeze (or an admin freeze whose time ran out) does not hold a payout.
* A freeze still being committed when the worker checks the payout wins: the check waits for
  the wallet's row lock and holds the payout.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.transfer import ScriptedBank
from tests.integration.transfer.conftest import (
    LedgerWorld,
    Wallet,
    ledger_is_clean,
    waiting_on_a_lock,
)
from vaultpay_transfer.service_layer.payouts import PayoutWorker
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.model import Freeze, FreezeSource

pytestmark = pytest.mark.integration

_LOGGER = "vaultpay_transfer.service_layer.payouts"
_IN_FLIGHT = (
    "SELECT coalesce(sum(amount), 0) AS total FROM ledger_postings"
    " WHERE account = 'sys:payouts_in_flight'"
)


async def _withdraw(ledger: LedgerWorld, wallet: Wallet, amount: int) -> str:
    outcome = await ledger.withdraw(wallet, amount)
    assert outcome.code == "OK", outcome
    assert outcome.transaction is not None
    return outcome.transaction.transaction_id


async def _payout(ledger: LedgerWorld, transaction_id: str) -> tuple[str, str, bool]:
    """The payout's status, its withdrawal's status, and whether it is marked held."""
    [row] = await ledger.fetch(
        "SELECT p.status, t.status AS withdrawal, p.held_since IS NOT NULL AS held"
        " FROM payouts AS p JOIN wallet_transactions AS t ON t.id = p.transaction_id"
        " WHERE p.transaction_id = $1::uuid",
        transaction_id,
    )
    return str(row["status"]), str(row["withdrawal"]), bool(row["held"])


def _worker(ledger: LedgerWorld, bank: ScriptedBank) -> PayoutWorker:
    # hold_seconds=0: a held payout is due again at the next round, as the test runs them.
    return PayoutWorker(ledger.ledger, bank, batch_size=1000, hold_seconds=0)


async def test_a_staff_freeze_holds_a_pending_payout_until_it_is_lifted(
    ledger: LedgerWorld, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 5_000)
    pending = await _withdraw(ledger, alice, 2_000)
    await ledger.freeze(alice, FreezeSource.ADMIN)
    in_flight = (await ledger.fetch(_IN_FLIGHT))[0]["total"]
    bank = ScriptedBank()
    worker = _worker(ledger, bank)

    with caplog.at_level(logging.INFO, logger=_LOGGER):
        for _ in range(3):
            await worker.run_once()
    assert pending not in bank.asked  # the money never left
    assert await _payout(ledger, pending) == ("PENDING", "PENDING", True)
    assert await ledger.balance(alice) == 3_000
    assert (await ledger.fetch(_IN_FLIGHT))[0]["total"] == in_flight
    [attempts] = await ledger.fetch(
        "SELECT attempts FROM payouts WHERE transaction_id = $1::uuid", pending
    )
    assert attempts["attempts"] == 0  # the bank was never asked: no attempt counted
    await ledger_is_clean(ledger)
    holds = [
        r
        for r in caplog.records
        if getattr(r, "transaction_id", "") == pending and "is held" in r.getMessage()
    ]
    assert len(holds) == 1 and holds[0].levelno == logging.INFO

    await ledger.lift(alice, FreezeSource.ADMIN)
    with caplog.at_level(logging.INFO, logger=_LOGGER):
        await worker.run_once()
    assert bank.asked.count(pending) == 1
    assert await _payout(ledger, pending) == ("SETTLED", "COMPLETED", False)
    assert await ledger.balance(alice) == 3_000
    assert any(
        getattr(r, "transaction_id", "") == pending and "released" in r.getMessage()
        for r in caplog.records
    )
    await ledger_is_clean(ledger)


async def test_a_self_freeze_or_a_lapsed_staff_freeze_does_not_hold_a_payout(
    ledger: LedgerWorld,
) -> None:
    bob, carol = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(bob, 1_000)
    await ledger.fund(carol, 1_000)
    own = await _withdraw(ledger, bob, 400)
    lapsed = await _withdraw(ledger, carol, 600)
    await ledger.freeze(bob, FreezeSource.SELF)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await ledger.freeze(carol, since=hour_ago - timedelta(hours=1), until=hour_ago)
    bank = ScriptedBank()
    await _worker(ledger, bank).run_once()
    assert {own, lapsed} <= set(bank.asked)
    assert await _payout(ledger, own) == ("SETTLED", "COMPLETED", False)
    assert await _payout(ledger, lapsed) == ("SETTLED", "COMPLETED", False)
    await ledger_is_clean(ledger)


async def test_a_freeze_committing_while_the_worker_checks_the_payout_holds_it(
    ledger: LedgerWorld,
) -> None:
    dave = await ledger.new_wallet()
    await ledger.fund(dave, 900)
    pending = await _withdraw(ledger, dave, 900)
    bank = ScriptedBank()
    async with SqlWalletUnitOfWork(ledger.wallet_engine) as uow:
        current = await uow.wallets.get(dave.wallet_id, for_update=True)  # the freeze's lock
        assert current is not None
        now = datetime.now(UTC)
        await uow.wallets.update(current.frozen(Freeze(FreezeSource.ADMIN, "fraud", now), now))
        round_ = asyncio.create_task(_worker(ledger, bank).run_once())
        await waiting_on_a_lock(ledger, "transfer_claim_payout_for_bank")
        assert not round_.done()  # the check waits for the wallet's row
        await uow.commit()
    await round_
    assert pending not in bank.asked
    assert await _payout(ledger, pending) == ("PENDING", "PENDING", True)
    assert await ledger.balance(dave) == 0
    await ledger_is_clean(ledger)
