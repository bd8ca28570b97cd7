"""The system accounts (`sys:clearing`, `sys:payouts_in_flight`) are no row that every top-up or
withdrawal queues on (issue 8, section 1): they have no balance row, only postings, so a
movement that has posted to them and not yet committed holds nothing the next one needs.
Proven on real PostgreSQL: with one top-up's transaction left open, top-ups and withdrawals of
other wallets commit meanwhile (a wait would hang until the hang guard)."""

from __future__ import annotations

import asyncio
import uuid

from tests.integration.transfer.conftest import (
    TOP_UP,
    LedgerWorld,
    key,
    ledger_is_clean,
    top_up_on,
)


async def test_movements_through_the_system_accounts_never_wait_for_each_other(
    ledger: LedgerWorld,
) -> None:
    first, second, third = [await ledger.new_wallet() for _ in range(3)]
    await ledger.fund(third, 5_000)
    open_top_up = await ledger.owner()
    holding = open_top_up.transaction()
    await holding.start()
    try:
        reference = f"upi-{uuid.uuid4().hex}"
        outcome = await top_up_on(open_top_up, key(first.user_id, TOP_UP), first, 1_000, reference)
        assert outcome == "OK"  # posted to sys:clearing, not committed
        async with asyncio.timeout(15):  # a hang guard: a queue would wait for the rollback
            await ledger.fund(second, 2_000)  # sys:clearing again
            withdrawn = await ledger.withdraw(third, 1_000)  # into sys:payouts_in_flight
        assert withdrawn.code == "OK", withdrawn
    finally:
        await holding.rollback()
        await open_top_up.close()
    assert (await ledger.balance(second), await ledger.balance(third)) == (2_000, 4_000)
    assert await ledger.balance(first) == 0  # the open top-up was rolled back
    owner = await ledger.owner()
    try:
        rows = await owner.fetchval("SELECT count(*) FROM wallets WHERE id LIKE 'sys:%'")
        accounts = await owner.fetch(
            "SELECT DISTINCT account FROM ledger_postings WHERE account LIKE 'sys:%'"
        )
    finally:
        await owner.close()
    assert rows == 0  # no balance row to lock
    assert {r["account"] for r in accounts} == {"sys:clearing", "sys:payouts_in_flight"}
    await ledger_is_clean(ledger)
