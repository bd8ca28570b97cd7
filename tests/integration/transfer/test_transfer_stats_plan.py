"""GetTransferStats reads one range of an index per branch, never the table (transfer t0018),
on real PostgreSQL: each counting statement `SqlTransactionStore.stats` sends (captured from
the engine) is prepared and explained as transfer's role prepares it, in a table of two years of
P2P rows and rare rows (top-ups, settled, pending and returned withdrawals), the month a small
part of it. The P2P sends are found by created_at on the time index (a P2P row completes at its
creation); the rare categories by completed_at on t0018's partial index. Plan shapes, never
timing. Without t0018 the rare branch has no index on completed_at: it reads every rare row of
the table's whole history (all of t0015's rare category index), not the month's.

The figures are checked too: what completed in the windows, by completion time, each movement
once (the debit side, a top-up's credit); the same once t0027's rollup holds the closed hours,
and then the call reads a small part of what it read before (pages, not time)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event as sqlalchemy_events

from tests.integration.transfer.conftest import LedgerWorld, plain_dsn
from tests.integration.transfer.sql_capture import CapturedStatement, prepared_plan_scans
from vaultpay_transfer.adapters.stats_sql import ROLLUP_MARGIN, SqlStatsRollup, hour_ceiling
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


MONTH_SENDS = 100_000  # P2P rows within the month, both sides: a busier month


async def _fill_month(ledger: LedgerWorld, now: datetime) -> None:
    """P2P rows of other users within the last 30 days (currency XTM), one every 26 s."""
    [row] = await ledger.fetch("SELECT id FROM ledger_transactions LIMIT 1")
    conn = await ledger.owner()
    try:
        await conn.execute(
            "INSERT INTO wallet_transactions (id, ledger_transaction_id, reference, user_id,"
            " wallet_id, type, category, status, amount, currency, balance_after, created_at,"
            " completed_at) SELECT gen_random_uuid(), $1, 'VP-TXN-FILLER00',"
            " 'month-' || (i % 500), 'VPY-M' || (i % 500),"
            " CASE WHEN i % 2 = 0 THEN 'DEBIT' ELSE 'CREDIT' END,"
            " CASE WHEN i % 2 = 0 THEN 'P2P_SEND' ELSE 'P2P_RECEIVE' END, 'COMPLETED', 1, 'XTM',"
            " i, t.at, t.at FROM generate_series(1, $2) AS i,"
            " LATERAL (SELECT CAST($3 AS timestamptz) - interval '25.9 seconds' * i AS at) AS t",
            row["id"],
            MONTH_SENDS,
            now,
        )
        await conn.execute("ANALYZE wallet_transactions")
    finally:
        await conn.close()


async def _sent(ledger: LedgerWorld, store: SqlTransactionStore, now: datetime) -> list[Any]:
    """Every statement (with its parameters) `store.stats(now)` sends."""
    sent: list[Any] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    sync_engine = ledger.engine.sync_engine
    sqlalchemy_events.listen(sync_engine, "before_cursor_execute", record)
    try:
        await store.stats(now)
    finally:
        sqlalchemy_events.remove(sync_engine, "before_cursor_execute", record)
    return sent


def _captured(statement: str, parameters: Any) -> CapturedStatement:
    captured = CapturedStatement.__new__(CapturedStatement)
    captured.statement, captured.parameters = statement, parameters
    return captured


async def _plans(ledger: LedgerWorld, store: SqlTransactionStore, now: datetime) -> list[Any]:
    """The scans of the generic and of the custom plan of each counting statement
    `store.stats(now)` sends, prepared as transfer's role prepares them."""
    counting = [
        (statement, parameters)
        for statement, parameters in await _sent(ledger, store, now)
        if statement.startswith("WITH counted")
    ]
    assert counting  # at least the window's tail is counted
    dsn = plain_dsn(ledger.dbs.app_dsn("transfer"))
    return [
        await prepared_plan_scans(dsn, f"stats_{n}", _captured(statement, parameters))
        for n, (statement, parameters) in enumerate(counting)
    ]


async def _pages_read(ledger: LedgerWorld, store: SqlTransactionStore, now: datetime) -> int:
    """Shared buffers (hit or read) of every statement `store.stats(now)` sends, each run
    again under EXPLAIN (ANALYZE, BUFFERS)."""
    pages = 0
    async with ledger.engine.connect() as conn:
        for statement, parameters in await _sent(ledger, store, now):
            plan = await conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters
            )
            document = plan.scalar_one()
            root = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
            pages += int(root["Shared Hit Blocks"]) + int(root["Shared Read Blocks"])
    return pages


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

    for plans in await _plans(ledger, store, now):
        for mode, scans in plans.items():
            indexes = {index for node, index in scans if "Index" in node}
            # Never the table: the time index for the sends, the partial index for the rest.
            assert all(node != "Seq Scan" for node, _ in scans), (mode, scans)
            assert indexes == {BY_TIME, RARE_COMPLETED}, (mode, scans)


async def test_the_rolled_up_hours_give_the_same_figures_for_a_fraction_of_the_pages(
    ledger: LedgerWorld,
) -> None:
    """t0027: once the closed hours are rolled up, a call counts live only the windows'
    partial first hours and what completed since the last hour rolled up: the same figures
    (the rollup counts as the live statement counts), a small part of the pages. The first
    rollup catches up 31 days, a day a transaction; once caught up, a run adds nothing (no
    hour twice)."""
    await ledger.fund(await ledger.new_wallet(), 1_000)
    [row] = await ledger.fetch("SELECT date_trunc('minute', now()) AS at")
    now: datetime = row["at"]
    await _fill(ledger, now)
    await _fill_month(ledger, now)
    store = SqlTransactionStore(ledger.engine)
    live = await store.stats(now)
    pages_live = await _pages_read(ledger, store, now)

    rollup = SqlStatsRollup(ledger.engine)
    first = await rollup.run_once()  # 31 days back, a day a transaction
    assert first in (31 * 24, 31 * 24 + 1), first  # (an hour may close during the test)
    assert await rollup.run_once() in (0, 1)  # caught up
    rolled = await store.stats(now)
    pages_rolled = await _pages_read(ledger, store, now)

    assert rolled == live
    assert dict(rolled.monthly_volumes)["XTM"] == MONTH_SENDS // 2  # the debits
    assert pages_rolled * 20 < pages_live, (pages_rolled, pages_live)
    [watermark] = await ledger.fetch("SELECT rolled_until FROM transfer_stats_rollup")
    assert watermark["rolled_until"] <= now - ROLLUP_MARGIN
    assert watermark["rolled_until"] == hour_ceiling(watermark["rolled_until"])
