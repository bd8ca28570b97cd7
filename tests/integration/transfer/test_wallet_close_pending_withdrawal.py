"""A wallet never closes while a withdrawal of it is still being paid out (transfer's t0003
trigger on wallets, mapped by wallet's repository to WALLET_HAS_PENDING_WITHDRAWAL), on real
PostgreSQL with both services' migrations, wallet's own CloseMyWallet use case and the ledger
functions.

* A pending withdrawal blocks the close; once the payout settled, or came back and was
  withdrawn again and settled, the close (at zero balance) works.
* Closes racing withdrawals of the whole balance, and the settlement of a withdrawal, many
  times: never a CLOSED wallet with a PENDING withdrawal, never a withdrawal from a CLOSED
  wallet.
* A payout refused for a wallet closed some other way is not credited (a CLOSED wallet holds
  no money, wallet's w0011): it stays PENDING in payouts-in-flight (money is conserved) and
  the payout worker logs an ERROR naming it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable

import pytest

from tests.fakes.wallet import FakeUsage
from tests.integration.transfer.conftest import TOP_UP, LedgerWorld, Wallet, key, ledger_is_clean
from vaultpay_common.clock import SystemClock
from vaultpay_common.errors import ErrorKind
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.service_layer.payouts import PayoutWorker
from vaultpay_transfer.service_layer.ports import BankAnswer, PayoutLease
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.errors import (
    WalletClosedError,
    WalletHasBalanceError,
    WalletHasPendingWithdrawalError,
)
from vaultpay_wallet.service_layer.commands import CloseMyWallet
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.ports import WalletUnitOfWork
from vaultpay_wallet.service_layer.wallets import WalletService

pytestmark = pytest.mark.integration

CLOSE = "/vaultpay.wallet.v1.WalletService/CloseMyWallet"
_PENDING_ON_CLOSED = (
    "SELECT count(*) AS n FROM wallets AS w JOIN wallet_transactions AS t"
    " ON t.wallet_id = w.id WHERE w.status = 'CLOSED' AND t.status = 'PENDING'"
    " AND w.id = ANY($1::text[])"
)


def _wallets(ledger: LedgerWorld) -> WalletService:
    clock = SystemClock()
    uow: Callable[[], WalletUnitOfWork] = lambda: SqlWalletUnitOfWork(ledger.wallet_engine)  # noqa: E731
    return WalletService(uow, clock, LimitsService(uow, clock, FakeUsage()))


async def _close(ledger: LedgerWorld, wallet: Wallet) -> str:
    """CloseMyWallet as wallet runs it: "CLOSED" or the refusal's reason."""
    try:
        closed = await _wallets(ledger).close_my_wallet(
            CloseMyWallet(wallet.user_id, key(wallet.user_id, CLOSE))
        )
    except (WalletHasPendingWithdrawalError, WalletHasBalanceError, WalletClosedError) as exc:
        return exc.reason
    return closed.status.value


async def _withdraw(ledger: LedgerWorld, wallet: Wallet, amount: int, account: str = "b") -> str:
    """The withdrawal's transaction id, or the refusal's code."""
    outcome = await ledger.withdraw(wallet, amount, account_hash=account * 64)
    if outcome.code != "OK":
        return outcome.code
    assert outcome.transaction is not None
    return outcome.transaction.transaction_id


async def _status(ledger: LedgerWorld, wallet: Wallet) -> str:
    rows = await ledger.fetch("SELECT status FROM wallets WHERE id = $1", wallet.wallet_id)
    return str(rows[0]["status"])


def test_the_refusal_is_a_failed_precondition_with_its_own_reason() -> None:
    error = WalletHasPendingWithdrawalError()
    assert error.kind is ErrorKind.FAILED_PRECONDITION
    assert error.reason == "WALLET_HAS_PENDING_WITHDRAWAL"
    assert "still being paid out" in str(error)


async def test_a_pending_withdrawal_blocks_the_close_until_it_settles(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 5_000)
    pending = await _withdraw(ledger, alice, 5_000)
    assert await ledger.balance(alice) == 0

    assert await _close(ledger, alice) == "WALLET_HAS_PENDING_WITHDRAWAL"
    assert await _status(ledger, alice) == "ACTIVE"  # nothing of the close was kept
    assert (await ledger.ledger.settle_payout(pending)).outcome == "OK"
    assert await _close(ledger, alice) == "CLOSED"
    assert await _withdraw(ledger, alice, 1) == "WALLET_CLOSED"


async def test_a_returned_payout_comes_back_to_an_open_wallet_which_closes_once_empty(
    ledger: LedgerWorld,
) -> None:
    bob = await ledger.new_wallet()
    await ledger.fund(bob, 3_000)
    refused = await _withdraw(ledger, bob, 3_000)
    assert await _close(ledger, bob) == "WALLET_HAS_PENDING_WITHDRAWAL"
    assert (await ledger.ledger.return_payout(refused, "account closed")).outcome == "OK"
    assert await ledger.balance(bob) == 3_000
    assert await _close(ledger, bob) == "WALLET_HAS_BALANCE"
    paid = await _withdraw(ledger, bob, 3_000)
    assert await _close(ledger, bob) == "WALLET_HAS_PENDING_WITHDRAWAL"
    assert (await ledger.ledger.settle_payout(paid)).outcome == "OK"
    assert await _close(ledger, bob) == "CLOSED"
    await ledger_is_clean(ledger)


async def test_other_wallet_updates_and_a_second_close_are_not_refused_by_the_trigger(
    ledger: LedgerWorld,
) -> None:
    carol = await ledger.new_wallet()
    await ledger.fund(carol, 2_000)
    await _withdraw(ledger, carol, 1_000)
    await ledger.freeze(carol)  # an UPDATE of status (to FROZEN) with a withdrawal pending
    assert await _status(ledger, carol) == "FROZEN"


async def test_closes_racing_withdrawals_and_settlements_never_close_with_one_pending(
    ledger: LedgerWorld,
) -> None:
    rounds = 40
    wallets = [await ledger.new_wallet() for _ in range(rounds)]
    for wallet in wallets:
        await ledger.fund(wallet, 1_000)
    # Half the wallets already have their whole balance in flight, settled during the race.
    in_flight = {w.wallet_id: await _withdraw(ledger, w, 1_000) for w in wallets[: rounds // 2]}

    async def race(wallet: Wallet) -> list[str]:
        if wallet.wallet_id in in_flight:
            moves = [ledger.ledger.settle_payout(in_flight[wallet.wallet_id])]
            closes = [_close(ledger, wallet) for _ in range(3)]
            done = await asyncio.gather(*closes, *moves)
            return [str(d) for d in done[:3]]
        closes = [_close(ledger, wallet) for _ in range(3)]
        done = await asyncio.gather(_withdraw(ledger, wallet, 1_000), *closes)
        assert len(str(done[0])) == 36, done  # the withdrawal always wins: nothing closes at 1000
        return [str(d) for d in done[1:]]

    answers: Counter[str] = Counter()
    for wallet in wallets:
        answers.update(await race(wallet))
    assert set(answers) <= {
        "CLOSED",
        "WALLET_HAS_BALANCE",
        "WALLET_HAS_PENDING_WITHDRAWAL",
        "WALLET_CLOSED",
    }, answers
    assert answers["WALLET_HAS_PENDING_WITHDRAWAL"] > 0, answers
    ids = [w.wallet_id for w in wallets]
    assert (await ledger.fetch(_PENDING_ON_CLOSED, ids))[0]["n"] == 0
    # Every wallet's withdrawal ends paid: each one closes now, and still nothing is pending.
    for wallet in wallets:
        for row in await ledger.fetch(
            "SELECT id::text AS id FROM wallet_transactions WHERE wallet_id = $1"
            " AND status = 'PENDING'",
            wallet.wallet_id,
        ):
            assert (await ledger.ledger.settle_payout(row["id"])).outcome == "OK"
        if await _status(ledger, wallet) != "CLOSED":
            assert await _close(ledger, wallet) == "CLOSED"
    assert (await ledger.fetch(_PENDING_ON_CLOSED, ids))[0]["n"] == 0
    await ledger_is_clean(ledger)


async def test_withdrawals_racing_a_close_at_zero_never_leave_money_in_flight_from_it(
    ledger: LedgerWorld,
) -> None:
    """The close can win here (the wallet is empty but a top-up lands during the race): a
    withdrawal either comes first (and the close is refused) or sees CLOSED. Each order is
    first made on purpose, so both outcomes are known to be checked; then they race."""

    async def fund_then_withdraw(wallet: Wallet) -> str:
        funded = await ledger.ledger.top_up(
            key(wallet.user_id, TOP_UP),
            wallet.user_id,
            500,
            "INR",
            PaymentMethod.UPI,
            f"upi-{uuid.uuid4().hex}",
            "UPI test",
        )
        if funded.code != "OK":
            return funded.code
        return await _withdraw(ledger, wallet, 500)

    def close_won(close: str, withdrawn: str) -> bool:
        """Exactly one of the two won: a close that won leaves nothing for a withdrawal (a
        top-up cannot reach the wallet either); a close that lost let the withdrawal through."""
        assert close in {"CLOSED", "WALLET_HAS_BALANCE", "WALLET_HAS_PENDING_WITHDRAWAL"}, close
        if close == "CLOSED":
            assert withdrawn in {"WALLET_CLOSED", "INSUFFICIENT_BALANCE"}, withdrawn
            return True
        assert len(withdrawn) == 36, withdrawn  # the withdrawal's transaction id
        return False

    closed_first = await ledger.new_wallet()
    close = await _close(ledger, closed_first)
    assert close_won(close, await fund_then_withdraw(closed_first))
    withdrawn_first = await ledger.new_wallet()
    withdrawn = await fund_then_withdraw(withdrawn_first)
    close = await _close(ledger, withdrawn_first)
    assert close == "WALLET_HAS_PENDING_WITHDRAWAL"
    assert not close_won(close, withdrawn)

    rounds = 30
    wallets = [await ledger.new_wallet() for _ in range(rounds)]

    async def race(wallet: Wallet) -> tuple[str, str]:
        close, withdrawn = await asyncio.gather(_close(ledger, wallet), fund_then_withdraw(wallet))
        return close, withdrawn

    results = [await race(w) for w in wallets]
    ids = [w.wallet_id for w in [*wallets, closed_first, withdrawn_first]]
    assert (await ledger.fetch(_PENDING_ON_CLOSED, ids))[0]["n"] == 0
    for close, withdrawn in results:
        close_won(close, withdrawn)


class _RefusingBank:
    """Refuses the one account it is told about; cannot be reached for any other."""

    def __init__(self, account_hash: str) -> None:
        self._hash = account_hash

    async def pay_out(self, payout: PayoutLease) -> BankAnswer:
        if payout.account_hash == self._hash:
            return BankAnswer(paid=False, refused=True, reason="account closed")
        raise ConnectionError("not this test's payout")


async def _close_around_the_trigger(ledger: LedgerWorld, wallet: Wallet) -> None:
    """A wallet closed some other way (as if before t0003): the trigger is off only inside
    this transaction (ALTER TABLE holds an exclusive lock on wallets until it commits)."""
    conn = await ledger.owner()
    try:
        async with conn.transaction():
            await conn.execute(
                "ALTER TABLE wallets DISABLE TRIGGER wallets_close_without_pending_withdrawal"
            )
            await conn.execute(
                "UPDATE wallets SET status = 'CLOSED', closed_at = now() WHERE id = $1",
                wallet.wallet_id,
            )
            await conn.execute(
                "ALTER TABLE wallets ENABLE TRIGGER wallets_close_without_pending_withdrawal"
            )
    finally:
        await conn.close()


async def test_a_payout_refused_for_a_closed_wallet_stays_in_flight_and_is_logged(
    ledger: LedgerWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """A wallet closed some other way (as before t0003) while its withdrawal was pending, and
    the bank refuses the payout: the return's credit is refused by the database (wallet's
    w0011: a CLOSED wallet holds no money), so nothing is credited. The payout stays PENDING
    with its money in payouts-in-flight (conserved: the verifier is clean), the worker logs an
    ERROR naming it (not the database's error, whose detail is the wallet's row: the owner's
    name, the balance) and goes on with its round; settling that money is staff's. (Until w0011
    the return credited the CLOSED wallet and the worker logged an anomaly.)"""
    dave = await ledger.new_wallet()
    await ledger.fund(dave, 700)
    refused = await _withdraw(ledger, dave, 700, account="d")  # this test's own account
    await _close_around_the_trigger(ledger, dave)
    # A payout returned to an open wallet in the same round is credited as ever.
    erin = await ledger.new_wallet()
    await ledger.fund(erin, 300)
    await _withdraw(ledger, erin, 300, account="d")

    worker = PayoutWorker(ledger.ledger, _RefusingBank("d" * 64), batch_size=1000)
    with caplog.at_level(logging.WARNING, logger="vaultpay_transfer.service_layer.payouts"):
        assert await worker.run_once() >= 1
    assert await ledger.balance(erin) == 300
    assert (await _status(ledger, dave), await ledger.balance(dave)) == ("CLOSED", 0)
    [payout] = await ledger.fetch("SELECT status FROM payouts WHERE transaction_id = $1", refused)
    assert payout["status"] == "PENDING"
    failed = [r for r in caplog.records if getattr(r, "transaction_id", "") == refused]
    assert [r.levelno for r in failed] == [logging.ERROR]
    assert "wallet is CLOSED" in failed[0].getMessage()
    # PostgreSQL's refusal names the failing row (the owner's name, the balance): no log line
    # may carry it (review of 2026-12-04: it reached the log through the traceback).
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {caplog.handler.format(r)}" for r in caplog.records
    )
    assert "Test Person" not in logged and "Failing row" not in logged
    assert failed[0].exc_info is None
    await ledger_is_clean(ledger)
