"""A bank answer that contradicts how the ledger finished a payout (transfer t0020), on real
PostgreSQL with the real ledger adapter and payout worker.

Worker A asks the bank about a payout; the bank is slow to answer and A's lease runs out.
Worker B leases the payout, claims it and asks again: this time the bank answers the other
way, and B records it. Then A gets its own (first) answer and records it: the ledger answers
ALREADY_FINISHED with how B finished the payout. A logs the contradiction as an ERROR naming
the payout and both outcomes, counts it apart from its finished payouts, and the ledger keeps
B's outcome: the money moved once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import pytest

from tests.integration.transfer.conftest import LedgerWorld, ledger_is_clean
from tests.support import eventually
from vaultpay_transfer.service_layer.payouts import CONTRADICTION, PayoutWorker
from vaultpay_transfer.service_layer.ports import BankAnswer, PayoutLease

pytestmark = pytest.mark.integration

_LOGGER = "vaultpay_transfer.service_layer.payouts"
_PAID = BankAnswer(paid=True)
_REFUSED = BankAnswer(paid=False, refused=True, reason="account closed")


class _ChangesItsAnswer:
    """A bank whose first call waits for `first_may_answer`, then answers `first`; every
    later call answers `later` at once."""

    def __init__(self, first: BankAnswer, later: BankAnswer) -> None:
        self.first, self.later = first, later
        self.first_asked, self.first_may_answer = asyncio.Event(), asyncio.Event()
        self.calls = 0

    async def pay_out(self, payout: PayoutLease) -> BankAnswer:
        self.calls += 1
        if self.calls > 1:
            return self.later
        self.first_asked.set()
        await self.first_may_answer.wait()
        return self.first


@pytest.mark.parametrize(
    ("first", "later", "bank_answer", "ledger_status", "balance"),
    [
        (_PAID, _REFUSED, "paid", "RETURNED", 5_000),
        (_REFUSED, _PAID, "refused", "SETTLED", 4_000),
    ],
    ids=["paid_after_returned", "refused_after_settled"],
)
async def test_a_late_answer_contradicting_the_payouts_end_is_an_error_and_moves_nothing(
    ledger: LedgerWorld,
    caplog: pytest.LogCaptureFixture,
    first: BankAnswer,
    later: BankAnswer,
    bank_answer: str,
    ledger_status: str,
    balance: int,
) -> None:
    wallet = await ledger.new_wallet()
    await ledger.fund(wallet, 5_000)
    account_hash = secrets.token_hex(32)
    made = await ledger.withdraw(wallet, 1_000, account_hash=account_hash)
    assert made.code == "OK" and made.transaction is not None, made
    payout = made.transaction.transaction_id
    bank = _ChangesItsAnswer(first, later)
    a = PayoutWorker(ledger.ledger, bank, batch_size=1000, bank_seconds=60)
    b = PayoutWorker(ledger.ledger, bank, batch_size=1000)

    with caplog.at_level(logging.INFO, logger=_LOGGER):
        a_round = asyncio.create_task(a.run_once())
        try:
            await asyncio.wait_for(bank.first_asked.wait(), 20)
            # A's lease runs out while the bank keeps it waiting (moved, not waited for).
            owner = await ledger.owner()
            try:
                await owner.execute(
                    "UPDATE payouts SET available_at = clock_timestamp() - interval '1 second'"
                    " WHERE transaction_id = $1::uuid",
                    payout,
                )
            finally:
                await owner.close()

            async def b_finished_it() -> bool:
                await b.run_once()
                [row] = await ledger.fetch(
                    "SELECT status FROM payouts WHERE transaction_id = $1::uuid", payout
                )
                return bool(row["status"] != "PENDING")

            await eventually(b_finished_it, within=20, what="worker B finishing the payout")
            bank.first_may_answer.set()
            assert await asyncio.wait_for(a_round, 20) == 0
        finally:
            bank.first_may_answer.set()
            a_round.cancel()
            await asyncio.gather(a_round, return_exceptions=True)

    assert (a.contradicted, b.contradicted) == (1, 0)
    [row] = await ledger.fetch("SELECT status FROM payouts WHERE transaction_id = $1::uuid", payout)
    assert row["status"] == ledger_status  # B's outcome stands
    assert await ledger.balance(wallet) == balance  # the money moved once
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [CONTRADICTION]
    facts = vars(errors[0])
    assert (facts["transaction_id"], facts["bank_answer"], facts["ledger_status"]) == (
        payout,
        bank_answer,
        ledger_status,
    )
    assert account_hash not in str(facts)
    await ledger_is_clean(ledger)
