"""GetTransferStats reads one range of an index per branch, never the table (transfer t0018),
on real PostgreSQL: the one statement `SqlTransactionStore.stats` sends (captured from the
engine) is prepared and explained as transfer's role prepares it, in a table of two years of
P2P rows and rare rows (top-ups, settled, pending and returned withdrawals), the month a small
part of it. The P2P sends are found by created_at on the time index (a P2P row completes at its
creation); the rare categories by completed_at on t0018's partial index. Plan shapes, never
timing. Without t0018 the rare branch has no index on completed_at: it reads every rare row of
the table's whole history (all of t0015's rare category index), not the month's.

The figures are checked too: what completed in the windows, by completion time, each movement
once (the debit side, a top-up's credit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event as sqlalchemy_events

from tests.integration.transfer.conftest import LedgerWorld, plain_dsn
from tests.integration.transfer.sql_capture import CapturedStatement, prepared_plan_scans
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore

pytestmark = pytest.mark.integration

P2P_ROWS = 60_000  # one every 20 minutes: 833 days, the month about 2 160 of them
RARE_ROWS = 6_000  # one every 200 minutes, a quarter of each kind below
BY_TIME = "wallet_transactions_created_idx"
RARE_COMPLETED = "wallet_transactions_rare_completed_idx"


async def _fill(ledger: LedgerWorld, now: datetime) -> None:
    """As the owner (test data only), then ANALYZE: P2P rows of other users, both sides
    COMPLETED at their creation; rare rows, each kind a quarter: top-up credits, withdrawals
    settled 3 days after they were made, withdrawals still pending, and the credits of returned
    ones. Amount 1, currency XTS (the sends) or XTR (the
    rare rows), so the figures are these rows' alone."""
    [row] = await ledger.fetch("SELECT id FROM ledger_transactions LIMIT 1")  # any movement
    conn = await ledger.owner()
    try:
        insert = (
            "INSERT INTO wallet_transactions (id, ledger_transaction_id, reference, user_id,"
            " wallet_id, type, category, status, amount, currency, balance_after, created_at,"
            " completed_at) SELECT gen_random_uuid(), $1, 'VP-TXN-FILLER00',"
            " 'filler-' || (i % 500), 'VPY-F' || (i % 500), {columns}"
            " FROM generate_series(1, $2) AS i, LATERAL (SELECT CAST($3 AS timestamptz) - interval '{every}' * i AS at)"
            " AS t"
        )
        await conn.execute(
            insert.format(
                every="20 minutes",
                columns="CASE WHEN i % 2 = 0 THEN 'DEBIT' ELSE 'CREDIT' END,"
                " CASE WHEN i % 2 = 0 THEN 'P2P_SEND' ELSE 'P2P_RECEIVE' END, 'COMPLETED', 1,"
                " 'XTS', i, t.at, t.at",
            ),
            row["id"],
            P2P_ROWS,
            now,
        )
        await conn.execute(
            insert.format(
                every="200 minutes",
                columns="CASE WHEN i % 4 IN (0, 3) THEN 'CREDIT' ELSE 'DEBIT' END,"
                " CASE WHEN i % 4 = 0 THEN 'TOP_UP' ELSE 'WITHDRAW' END,"
                " (ARRAY['COMPLETED', 'COMPLETED', 'PENDING', 'COMPLETED'])[i % 4 + 1], 1,"
                " 'XTR', i, t.at - CASE WHEN i % 4 = 1 THEN interval '3 days' ELSE '0' END,"
                " CASE WHEN i % 4 = 2 THEN NULL ELSE t.at END",
            ),
            row["id"],
            RARE_ROWS,
            now,
        )
        await conn.execute("ANALYZE wallet_transactions")
    finally:
        await conn.close()


async def _plans(ledger: LedgerWorld, store: SqlTransactionStore, now: datetime) -> Any:
    """The scans of the generic and of the custom plan of the statement `store.stats(now)`
    sends (it sends that one only), prepared as transfer's role prepares it."""
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    sync_engine = ledger.engine.sync_engine
    sqlalchemy_events.listen(sync_engine, "before_cursor_execute", count)
    try:
        with CapturedStatement(ledger.engine) as captured:
            await store.stats(now)
    finally:
        sqlalchemy_events.remove(sync_engine, "before_cursor_execute", count)
    assert sent == [captured.statement]  # both windows, one statement: one snapshot
    return await prepared_plan_scans(plain_dsn(ledger.dbs.app_dsn("transfer")), "stats", captured)


async def test_the_stats_read_an_index_range_per_branch_and_count_by_completion(
    ledger: LedgerWorld,
) -> None:
    await ledger.fund(await ledger.new_wallet(), 1_000)  # a movement the filler rows point at
    [row] = await ledger.fetch("SELECT date_trunc('minute', now()) AS at")
    now: datetime = row["at"]
    await _fill(ledger, now)
    store = SqlTransactionStore(ledger.engine)

    stats = await store.stats(now)
    # P2P sends: every other row, one each 40 minutes; created_at = now - 20 min * i, i >= 1.
    sends_day, sends_month = 24 * 60 // 40, 30 * 24 * 60 // 40
    # Rare rows at now - 200 min * i: a top-up (i % 4 = 0) counts by its credit, a settled
    # withdrawal (i % 4 = 1) by its debit at its completion (made 3 days earlier), a pending
    # one (2) and a return's credit (3) never.
    day = [i for i in range(1, RARE_ROWS + 1) if 200 * i <= 24 * 60 and i % 4 in (0, 1)]
    month = [i for i in range(1, RARE_ROWS + 1) if 200 * i <= 30 * 24 * 60 and i % 4 in (0, 1)]
    assert dict(stats.daily_volumes)["XTS"] == sends_day
    assert dict(stats.monthly_volumes)["XTS"] == sends_month
    assert dict(stats.daily_volumes)["XTR"] == len(day)
    assert dict(stats.monthly_volumes)["XTR"] == len(month)
    assert 1 in day  # a withdrawal made 3 days and 200 minutes ago, settled inside the day
    assert stats.daily_count <= stats.monthly_count

    plans = await _plans(ledger, store, now)
    for mode, scans in plans.items():
        indexes = {index for node, index in scans if "Index" in node}
        # Never the table: the time index for the sends, the partial index for the rest.
        assert all(node != "Seq Scan" for node, _ in scans), (mode, scans)
        assert indexes == {BY_TIME, RARE_COMPLETED}, (mode, scans)
