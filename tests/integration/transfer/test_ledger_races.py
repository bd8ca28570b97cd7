"""Races on the real ledger: many concurrent calls of the one-round-trip functions.

Each property is proven by running the calls, not argued: one effect for 20 copies of a
request, a daily limit that 20 concurrent sends cannot pass together, a freeze that wins
over every debit still queued behind it, and opposite sends that never deadlock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

from sqlalchemy import text

from tests.integration.transfer.conftest import SEND, LedgerWorld, key, ledger_is_clean
from vaultpay_transfer.domain.outcomes import LedgerOutcome


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


async def test_a_freeze_during_a_burst_stops_every_debit_that_commits_after_it(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 100_000)
    frozen_at: list[float] = []
    started: dict[int, float] = {}

    async def send(i: int) -> LedgerOutcome:
        await asyncio.sleep(0.002 * i)
        started[i] = time.monotonic()
        return await ledger.ledger.send_money(
            key(alice.user_id), alice.user_id, bob.wallet_id, 100, "INR", ""
        )

    async def freeze() -> None:
        await asyncio.sleep(0.04)
        await ledger.freeze(alice)
        frozen_at.append(time.monotonic())

    results = await asyncio.gather(*(send(i) for i in range(60)), freeze())
    outcomes: list[LedgerOutcome] = [r for r in results if isinstance(r, LedgerOutcome)]
    ok = [i for i, o in enumerate(outcomes) if o.code == "OK"]
    refused = [i for i, o in enumerate(outcomes) if o.code == "WALLET_FROZEN"]
    assert len(ok) + len(refused) == 60
    assert refused, "the freeze came after every send; the burst proved nothing"
    # A send that began after the freeze had committed never moved money.
    assert all(started[i] < frozen_at[0] for i in ok)
    # The debits that did commit are exactly what left the wallet.
    assert await ledger.balance(alice) == 100_000 - 100 * len(ok)
    after = await ledger.ledger.send_money(
        key(alice.user_id), alice.user_id, bob.wallet_id, 100, "INR", ""
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
