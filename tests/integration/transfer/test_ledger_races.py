"""Races on the real ledger: many concurrent calls of the one-round-trip functions, and of
SendMoney's real path (MovementService: the key's hold, wallet's checks, the `_held` call).

Each property is proven by running the calls, not argued: one effect for 20 copies of a
request, a daily limit that 20 concurrent sends cannot pass together, a freeze that wins
over every debit still queued behind it, and opposite sends that never deadlock. Where the
overlap matters it is made, not hoped for: the sender's row is locked by another session
until the calls are seen waiting behind it (pg_stat_activity, polled with a deadline), and the
freeze reads the balance under its own row lock, so "after the freeze" is exact.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import text

from tests.integration.transfer.conftest import (
    HOME,
    SEND,
    LedgerWorld,
    Wallet,
    key,
    ledger_is_clean,
    movement_service,
    row_locked,
    twenty_copies,
    waiting_on_a_lock,
    wallet_gate,
)
from vaultpay_common.db import create_engine
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_transfer.adapters.ledger_pg import PgLedger
from vaultpay_transfer.domain.errors import DailyLimitExceededError
from vaultpay_transfer.domain.model import Transaction
from vaultpay_transfer.domain.outcomes import LedgerOutcome
from vaultpay_transfer.service_layer.commands import AmountInput, SendMoney
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.model import Freeze, FreezeSource


async def _waiting_on_locks(ledger: LedgerWorld, at_least: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        # As transfer's role (the sends) and wallet's (the freeze): a role sees what its own
        # sessions wait for, not another role's.
        waiting = 0
        for engine in (ledger.engine, ledger.wallet_engine):
            async with engine.connect() as conn:
                waiting += (
                    await conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND datname = current_database()"
                        )
                    )
                    or 0
                )
        if waiting >= at_least:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {at_least} sessions waiting on locks")
        await asyncio.sleep(0.02)


async def test_twenty_concurrent_copies_of_one_request_make_one_effect(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 100_000)
    same = key(alice.user_id, SEND, body="bob 500")

    async def send() -> LedgerOutcome:
        return await ledger.ledger.send_money(same, alice.user_id, bob.wallet_id, 500, "INR", "")

    outcomes = await asyncio.gather(*(send() for _ in range(20)))
    codes = Counter(o.code for o in outcomes)
    assert codes["OK"] == 1, codes
    assert set(codes) <= {"OK", "REPLAY", "IDEMPOTENCY_KEY_IN_USE"}, codes
    answered = {o.transaction.transaction_id for o in outcomes if o.transaction is not None}
    assert len(answered) == 1
    assert await ledger.balance(bob) == 500
    rows = await ledger.fetch(
        "SELECT count(*) AS n FROM wallet_transactions WHERE request_id = $1::uuid",
        same.request_id,
    )
    assert rows[0]["n"] == 1
    # Once the first committed, every later copy is answered from the stored record.
    again = await send()
    assert again.code == "REPLAY"
    assert again.transaction == next(o.transaction for o in outcomes if o.code == "OK")
    await ledger_is_clean(ledger)


async def test_twenty_concurrent_sends_never_pass_the_daily_limit_together(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 100_000)
    await ledger.set_limit(alice, "send", per_transaction=10_000, daily=5_000, monthly=50_000)

    async def send() -> LedgerOutcome:
        return await ledger.ledger.send_money(
            key(alice.user_id), alice.user_id, bob.wallet_id, 1_000, "INR", ""
        )

    outcomes = await asyncio.gather(*(send() for _ in range(20)))
    codes = Counter(o.code for o in outcomes)
    assert codes == {"OK": 5, "DAILY_LIMIT_EXCEEDED": 15}, codes
    assert await ledger.balance(bob) == 5_000
    assert await ledger.balance(alice) == 95_000
    refused = next(o for o in outcomes if o.code == "DAILY_LIMIT_EXCEEDED")
    assert refused.details["limit_minor"] == "5000"
    assert refused.details["used_minor"] == "5000"
    await ledger_is_clean(ledger)


def _send(sender: Wallet, recipient: Wallet, amount: int, request: IdempotencyKey) -> SendMoney:
    return SendMoney(
        sender.user_id, request, recipient.wallet_id, AmountInput("INR", amount), "", "1234", HOME
    )


async def test_twenty_concurrent_copies_of_one_send_through_the_service_make_one_effect(
    ledger: LedgerWorld,
) -> None:
    """SendMoney's real path (MovementService: the key's hold, wallet's checks, the `_held`
    ledger call) on real PostgreSQL, in two "transfer processes". The copy that takes the key
    is kept inside its ledger call (the sender's row is locked elsewhere) until the 19 others
    have answered: each of them overlapped it, whatever the scheduling. ARCHITECTURE.md,
    "Idempotency": the same key while the first still runs is ABORTED IDEMPOTENCY_KEY_IN_USE;
    once it committed, the stored answer."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    sent = key(alice.user_id, SEND, body="bob 700")
    send = _send(alice, bob, 700, sent)
    race = await twenty_copies(
        ledger, alice, lambda service: service.send_money(send), "transfer_send_money_held"
    )
    gates, first = race.gates, race.first
    # wallet was asked for the PIN once: a copy refused for the key never reached it.
    assert sum(1 for g in gates for what, _, _ in g.calls if what == "pin") == 1
    assert await ledger.balance(alice) == 9_300
    assert await ledger.balance(bob) == 700
    rows = await ledger.fetch(
        "SELECT count(DISTINCT ledger_transaction_id) AS movements, count(*) AS sides"
        " FROM wallet_transactions WHERE reference = $1",
        first.reference,
    )
    assert (rows[0]["movements"], rows[0]["sides"]) == (1, 2)
    mine = await ledger.fetch(
        "SELECT count(*) AS n FROM wallet_transactions WHERE request_id = $1::uuid",
        sent.request_id,
    )
    assert mine[0]["n"] == 1
    await ledger_is_clean(ledger)


async def test_twenty_concurrent_sends_through_the_service_never_pass_the_daily_limit(
    ledger: LedgerWorld,
) -> None:
    """20 sends of 1,000 (each its own request) against a daily limit of 5,000, through
    SendMoney's real path: all 20 hold their keys, passed wallet's checks and wait on the
    sender's row at once before any of them may run; five move money, fifteen are refused."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 100_000)
    await ledger.set_limit(alice, "send", per_transaction=10_000, daily=5_000, monthly=50_000)
    service = movement_service(ledger.ledger, wallet_gate(alice))
    sends: list[asyncio.Task[Transaction]] = []
    try:
        async with row_locked(ledger, alice):
            sends = [
                asyncio.create_task(
                    service.send_money(_send(alice, bob, 1_000, key(alice.user_id)))
                )
                for _ in range(20)
            ]
            await waiting_on_a_lock(ledger, "transfer_send_money_held", at_least=20)
        answers = await asyncio.gather(*sends, return_exceptions=True)
    finally:
        for send in sends:
            send.cancel()
        await asyncio.gather(*sends, return_exceptions=True)
    moved = [a for a in answers if isinstance(a, Transaction)]
    refused = [a for a in answers if isinstance(a, DailyLimitExceededError)]
    assert (len(moved), len(refused)) == (5, 15), answers
    assert all(r.metadata["limit_minor"] == "5000" for r in refused)
    assert await ledger.balance(bob) == 5_000
    assert await ledger.balance(alice) == 95_000
    await ledger_is_clean(ledger)


async def test_a_freeze_queued_before_a_burst_of_sends_stops_every_one_of_them(
    ledger: LedgerWorld,
) -> None:
    """The sends were all under way (PIN checked, in the service's terms) when the freeze
    committed: each re-checks the status under the row lock and refuses."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 100_000)
    blocker = await ledger.owner()
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM wallets WHERE id = $1 FOR UPDATE", alice.wallet_id)
        freeze = asyncio.create_task(ledger.freeze(alice))
        await _waiting_on_locks(ledger, 1)
        sends = [
            asyncio.create_task(
                ledger.ledger.send_money(
                    key(alice.user_id), alice.user_id, bob.wallet_id, 100, "INR", ""
                )
            )
            for _ in range(20)
        ]
        await _waiting_on_locks(ledger, 21)
        await holding.rollback()
        await freeze
        outcomes = await asyncio.gather(*sends)
    finally:
        await blocker.close()
    assert Counter(o.code for o in outcomes) == {"WALLET_FROZEN": 20}
    assert await ledger.balance(alice) == 100_000
    assert await ledger.balance(bob) == 0
    await ledger_is_clean(ledger)


async def _freeze_reading_balance(ledger: LedgerWorld, wallet: Wallet, *, queued: int) -> int:
    """Freezes `wallet` as wallet's use cases do (`LedgerWorld.freeze`: its repository, the row
    loaded FOR UPDATE) and answers the balance read under that row lock, inside the freeze's
    own transaction: no debit can commit between that read and the freeze's COMMIT. The COMMIT
    waits (polled) until `queued` sends wait on a lock behind the freeze: sends that began
    before the freeze committed and take the row after it."""
    async with SqlWalletUnitOfWork(ledger.wallet_engine) as uow:
        current = await uow.wallets.get(wallet.wallet_id, for_update=True)
        assert current is not None
        now = datetime.now(UTC)
        await uow.wallets.update(current.frozen(Freeze(FreezeSource.ADMIN, "test", now), now))
        await waiting_on_a_lock(ledger, "transfer_send_money", at_least=queued)
        await uow.commit()
    return current.balance_minor


async def test_a_freeze_during_a_burst_stops_every_debit_that_commits_after_it(
    ledger: LedgerWorld,
) -> None:
    """The burst, in order on the sender's row: sends queued ahead of the freeze (they commit),
    the freeze (it reads the balance under the row lock), sends queued behind it (each began
    while the wallet was still ACTIVE, and each must be refused), then the rest of the burst.
    A ledger that checked the status before taking the row lock would debit the sends queued
    behind the freeze: the balance would end below the one the freeze saw."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    initial, amount, burst = 100_000, 100, 60
    await ledger.fund(alice, initial)
    # A "transfer process" of its own, at most 8 sends in the database at once (the rest of
    # the burst waits for a connection): the burst outlasts the freeze.
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=4, application_name="burst")
    sender = PgLedger(engine)
    sends: list[asyncio.Task[LedgerOutcome]] = []
    try:
        async with row_locked(ledger, alice):
            sends = [
                asyncio.create_task(
                    sender.send_money(
                        key(alice.user_id), alice.user_id, bob.wallet_id, amount, "INR", ""
                    )
                )
                for _ in range(burst)
            ]
            await waiting_on_a_lock(ledger, "transfer_send_money", at_least=8)
            freeze = asyncio.create_task(_freeze_reading_balance(ledger, alice, queued=3))
            await _waiting_on_locks(ledger, 9)  # the freeze too, behind the first 8 sends
        seen = await freeze
        outcomes = await asyncio.gather(*sends)
    finally:
        for send in sends:
            send.cancel()
        await asyncio.gather(*sends, return_exceptions=True)
        await engine.dispose()
    codes = Counter(o.code for o in outcomes)
    assert set(codes) == {"OK", "WALLET_FROZEN"}, codes  # both sides of the freeze, no race lost
    # Exactly the debits that committed before the freeze took the row left the wallet: none
    # committed after it.
    assert (initial - seen) % amount == 0
    assert codes["OK"] == (initial - seen) // amount, (codes, seen)
    assert await ledger.balance(alice) == seen
    assert await ledger.balance(bob) == initial - seen
    after = await ledger.ledger.send_money(
        key(alice.user_id), alice.user_id, bob.wallet_id, amount, "INR", ""
    )
    assert after.code == "WALLET_FROZEN"
    await ledger_is_clean(ledger)


async def test_opposite_concurrent_sends_between_one_pair_never_deadlock(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 50_000)
    await ledger.fund(bob, 50_000)

    async def send(i: int) -> LedgerOutcome:
        sender, recipient = (alice, bob) if i % 2 else (bob, alice)
        return await ledger.ledger.send_money(
            key(sender.user_id), sender.user_id, recipient.wallet_id, 10 + i, "INR", ""
        )

    outcomes = await asyncio.gather(*(send(i) for i in range(40)))
    assert Counter(o.code for o in outcomes) == {"OK": 40}
    moved_to_bob = sum(10 + i for i in range(40) if i % 2)
    moved_to_alice = sum(10 + i for i in range(40) if not i % 2)
    assert await ledger.balance(alice) == 50_000 - moved_to_bob + moved_to_alice
    assert await ledger.balance(bob) == 50_000 + moved_to_bob - moved_to_alice
    await ledger_is_clean(ledger)


async def test_the_same_request_id_on_two_methods_at_once_moves_money_once(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    request_id = str(uuid.uuid4())
    send_key = key(alice.user_id, SEND, request_id)
    withdraw_key = key(alice.user_id, "/vaultpay.transfer.v1.TransferService/Withdraw", request_id)
    outcomes = await asyncio.gather(
        ledger.ledger.send_money(send_key, alice.user_id, bob.wallet_id, 100, "INR", ""),
        ledger.withdraw(alice, 100, request=withdraw_key),
        return_exceptions=True,
    )
    moved = [o for o in outcomes if isinstance(o, LedgerOutcome) and o.code == "OK"]
    assert len(moved) == 1, outcomes
    assert await ledger.balance(alice) == 9_900
    await ledger_is_clean(ledger)
