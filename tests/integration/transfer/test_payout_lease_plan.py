"""The payout worker's lease (transfer_lease_payouts, t0004) on real PostgreSQL: the payouts it
leases are found by their key however the planner guesses the round's size."""

from __future__ import annotations

import pytest

from tests.integration.transfer.conftest import LedgerWorld

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
