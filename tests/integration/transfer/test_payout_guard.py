"""A payout changes only along its progress, in the database itself (transfer t0017): whoever
writes, the money functions (which run as the owner) and the owner included. The real worker
path (settle, return) still passes; every other change is refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import asyncpg
import pytest

from tests.integration.transfer.conftest import LedgerWorld, Wallet

pytestmark = pytest.mark.integration

REFUSED = (asyncpg.CheckViolationError, asyncpg.InsufficientPrivilegeError)


async def _pending_payout(ledger: LedgerWorld) -> tuple[Wallet, str]:
    wallet = await ledger.new_wallet()
    await ledger.fund(wallet, 5_000)
    outcome = await ledger.withdraw(wallet, 1_000)
    assert outcome.code == "OK" and outcome.transaction is not None, outcome
    return wallet, outcome.transaction.transaction_id


async def _as_owner(ledger: LedgerWorld, statement: str, *args: Any) -> None:
    """`statement` as the owner, in a transaction of its own (committed when it passes)."""
    conn = await ledger.owner()
    try:
        async with conn.transaction():
            await conn.execute(statement, *args)
    finally:
        await conn.close()


async def _refused(ledger: LedgerWorld, statement: str, *args: Any) -> None:
    with pytest.raises(REFUSED):
        await _as_owner(ledger, statement, *args)


async def test_a_pending_payout_moves_only_its_bookkeeping(ledger: LedgerWorld) -> None:
    _, payout = await _pending_payout(ledger)
    for change in (
        "amount = amount + 1",
        "account_hash = repeat('c', 64)",
        "ifsc = 'ICIC0001234'",
        "wallet_id = 'VPY-ZZZZZZ'",
        "created_at = created_at - interval '1 day'",
        "status = 'SETTLED'",  # an end without its finished_at
        "finished_at = now()",  # a finished_at without an end
    ):
        await _refused(ledger, f"UPDATE payouts SET {change} WHERE transaction_id = $1", payout)
    await _refused(ledger, "DELETE FROM payouts WHERE transaction_id = $1", payout)
    await _refused(ledger, "TRUNCATE payouts CASCADE")
    # The worker's bookkeeping while it is pending (attempts, lease, hold, last failure).
    await _as_owner(
        ledger,
        "UPDATE payouts SET attempts = attempts + 1, available_at = now(),"
        " held_since = now(), failure_reason = 'bank timeout' WHERE transaction_id = $1",
        payout,
    )


@pytest.mark.parametrize("end", ["settle", "return"])
async def test_a_payout_ends_once_and_never_changes_after(
    ledger: LedgerWorld, end: Literal["settle", "return"]
) -> None:
    wallet, payout = await _pending_payout(ledger)
    ended: Callable[[], Awaitable[Any]] = (
        (lambda: ledger.ledger.settle_payout(payout))
        if end == "settle"
        else (lambda: ledger.ledger.return_payout(payout, "refused by the bank"))
    )
    assert (await ended()).outcome == "OK"  # the money functions' own path passes
    for change in (
        "status = 'PENDING', finished_at = NULL",
        "status = 'RETURNED'" if end == "settle" else "status = 'SETTLED'",
        "failure_reason = 'rewritten'",
        "attempts = attempts + 1",
        "finished_at = finished_at + interval '1 second'",
    ):
        await _refused(ledger, f"UPDATE payouts SET {change} WHERE transaction_id = $1", payout)
    assert (await ended()).outcome != "OK"  # a second end is refused by the function, too
    assert await ledger.balance(wallet) == (4_000 if end == "settle" else 5_000)


async def test_t0017_downgrades_without_its_triggers_and_upgrades_back(
    ledger: LedgerWorld,
) -> None:
    async def triggers() -> list[str]:
        rows = await ledger.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'payouts'::regclass"
            " AND NOT tgisinternal ORDER BY 1"
        )
        return [r["tgname"] for r in rows]

    expected = [
        "payouts_change_along_their_progress",
        "payouts_never_deleted",
        "payouts_never_truncated",
    ]
    assert await triggers() == expected
    try:
        await ledger.migrate("downgrade", "t0016")
        assert await triggers() == []
    finally:
        await ledger.migrate("upgrade", "head")
    assert await triggers() == expected
