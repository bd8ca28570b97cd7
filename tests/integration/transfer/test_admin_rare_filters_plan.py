"""The staff listing of a rare category or status reads its partial index (transfer t0015), on
real PostgreSQL: the statement `SqlTransactionStore.list` sends (captured from the engine) is
prepared and explained as a generic plan (`plan_cache_mode = force_generic_plan`: what a
prepared statement runs after its fifth execution, when PostgreSQL finds it no costlier than
the custom ones) and as a custom one, in a table of P2P rows many times the size of the rare
ones. Each rare filter's plan (a next page's too) scans its partial index; a user's or a
wallet's filter reads its owner's indexes in both plans (t0024's for a rare status). Plan shapes, never timing. Without the
listing's literal predicates the generic plan cannot use a partial index (it cannot prove
`category NOT IN (...)` from `category = $1`) and walks the time index; without t0015 there is
no index to read.

A page's cost is also counted (EXPLAIN ANALYZE's shared buffers, not time) for REVERSAL, of
which the table holds no row at all: a walk of the time index reads every one of its pages."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from tests.integration.transfer.conftest import LedgerWorld, Wallet, plain_dsn
from tests.integration.transfer.sql_capture import (
    CapturedStatement,
    execute_prepared,
    prepared_plan_scans,
)
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.domain.model import (
    TransactionCategory,
    TransactionStatus,
    TransactionType,
)
from vaultpay_transfer.service_layer.ports import TransactionCursor, TransactionFilter

pytestmark = pytest.mark.integration

P2P_ROWS = 60_000
PAGE = 20
RARE_CATEGORY = "wallet_transactions_rare_category_idx"
RARE_STATUS = "wallet_transactions_rare_status_idx"
PENDING = "wallet_transactions_pending_idx"
BY_WALLET = "wallet_transactions_wallet_idx"
BY_USER_CATEGORY = "wallet_transactions_user_category_idx"
BY_USER = "wallet_transactions_user_idx"
OWNER_RARE = "wallet_transactions_user_rare_idx"
PAYOUT_RETURNS = "wallet_transactions_payout_returns_idx"
OWNER_PAYOUT_RETURNS = "wallet_transactions_user_payout_returns_idx"
WALLETS = "wallets_pkey"  # the wallet's owner, looked up once
# At most this many shared buffers for a page of a category with no row: a descent of a small
# index. The time index of P2P_ROWS rows is hundreds of pages.
EMPTY_PAGE_BUFFERS = 10


async def _plans(
    ledger: LedgerWorld,
    store: SqlTransactionStore,
    flt: TransactionFilter,
    after: TransactionCursor | None,
) -> Any:
    """The scans of the generic and of the custom plan of the statement `store.list(flt)`
    sends, prepared as transfer's role prepares it."""
    with CapturedStatement(ledger.engine) as captured:
        await store.list(flt, after, PAGE)
    return await prepared_plan_scans(plain_dsn(ledger.dbs.app_dsn("transfer")), "listing", captured)


async def _fill(ledger: LedgerWorld, alice: Wallet) -> None:
    """P2P rows of other users, COMPLETED, as the owner (test data only), then ANALYZE."""
    [row] = await ledger.fetch(
        "SELECT ledger_transaction_id FROM wallet_transactions WHERE user_id = $1 LIMIT 1",
        alice.user_id,
    )
    conn = await ledger.owner()
    try:
        await conn.execute(
            "INSERT INTO wallet_transactions (id, ledger_transaction_id, reference, user_id,"
            " wallet_id, type, category, status, amount, currency, balance_after, created_at,"
            " completed_at)"
            " SELECT gen_random_uuid(), $1, 'VP-TXN-FILLER00', 'filler-' || (i % 500),"
            " 'VPY-F' || (i % 500), CASE WHEN i % 2 = 0 THEN 'DEBIT' ELSE 'CREDIT' END,"
            " CASE WHEN i % 2 = 0 THEN 'P2P_SEND' ELSE 'P2P_RECEIVE' END, 'COMPLETED', 1,"
            " 'INR', i, now() - interval '1 second' * i, now() - interval '1 second' * i"
            " FROM generate_series(1, $2) AS i",
            row["ledger_transaction_id"],
            P2P_ROWS,
        )
        # Statistics of every row (this module's database only): ANALYZE samples 300 x the
        # largest column target rows (30,000 by default), and a sample of half the table
        # missed some of its handful of rare rows now and then, which made the generic plan
        # of a TOP_UP next page a coin toss between the partial index and the time index (one
        # failure in several full runs, 2026-12-04). Set on the columns, so an autovacuum
        # ANALYZE samples as much. A real table's rare categories are far less rare than
        # these few among 60,000.
        for column in ("category", "status"):
            await conn.execute(
                f"ALTER TABLE wallet_transactions ALTER COLUMN {column} SET STATISTICS 1000"
            )
        await conn.execute("ANALYZE wallet_transactions")
    finally:
        await conn.close()


async def _empty_page_buffers(ledger: LedgerWorld, store: SqlTransactionStore) -> int:
    """Shared buffers a page of REVERSAL (no such row) reads, as the generic plan runs it."""
    with CapturedStatement(ledger.engine) as captured:
        assert (
            await store.list(TransactionFilter(category=TransactionCategory.REVERSAL), None, PAGE)
            == []
        )
    conn = await asyncpg.connect(plain_dsn(ledger.dbs.app_dsn("transfer")))
    try:
        await conn.execute(f"PREPARE listing AS {captured.statement}")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        document = await conn.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
            + execute_prepared("listing", captured.parameters)
        )
    finally:
        await conn.close()
    root = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    return int(root["Shared Hit Blocks"]) + int(root["Shared Read Blocks"])


async def test_a_rare_category_or_status_reads_its_partial_index_in_generic_plans_too(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    topped_up = await ledger.fund(alice, 1_000_000)
    for _ in range(3):
        await ledger.send(alice, bob, 100)
    returned = await ledger.withdraw(alice, 1_000)
    pending = await ledger.withdraw(alice, 2_000)
    assert returned.transaction is not None and pending.transaction is not None
    back = await ledger.ledger.return_payout(returned.transaction.transaction_id, "account closed")
    assert back.outcome == "OK", back
    await _fill(ledger, alice)
    store = SqlTransactionStore(ledger.engine)

    # The added predicates change no answer: each rare filter finds its rows, newest first.
    def ids(page: Any) -> list[str]:
        return [t.transaction_id for t in page]

    top_ups = await store.list(TransactionFilter(category=TransactionCategory.TOP_UP), None, PAGE)
    assert ids(top_ups) == [topped_up.transaction_id]
    failed = await store.list(TransactionFilter(status=TransactionStatus.FAILED), None, PAGE)
    assert ids(failed) == [returned.transaction.transaction_id]
    waiting = await store.list(TransactionFilter(status=TransactionStatus.PENDING), None, PAGE)
    assert ids(waiting) == [pending.transaction.transaction_id]
    withdrawals = await store.list(
        TransactionFilter(category=TransactionCategory.WITHDRAW), None, PAGE
    )
    assert len(withdrawals) == 3  # two debits and the return's credit
    returns = await store.list(
        TransactionFilter(category=TransactionCategory.WITHDRAW, type=TransactionType.CREDIT),
        None,
        PAGE,
    )
    [return_credit] = [t for t in withdrawals if t.type is TransactionType.CREDIT]
    assert ids(returns) == [return_credit.transaction_id]
    mine = TransactionFilter(
        user_id=alice.user_id, category=TransactionCategory.WITHDRAW, type=TransactionType.CREDIT
    )
    assert ids(await store.list(mine, None, PAGE)) == [return_credit.transaction_id]
    assert [t.created_at for t in withdrawals] == sorted(
        (t.created_at for t in withdrawals), reverse=True
    )

    # name: (filter, the indexes its generic plan may scan, those its custom plan may scan).
    # A user's or a wallet's filter keeps its own index in the generic plan (no predicate is
    # added); a custom plan, which sees the category, may find the partial index cheaper.
    rare_alone: dict[str, tuple[TransactionFilter, set[str]]] = {
        "REVERSAL": (TransactionFilter(category=TransactionCategory.REVERSAL), {RARE_CATEGORY}),
        "TOP_UP": (TransactionFilter(category=TransactionCategory.TOP_UP), {RARE_CATEGORY}),
        "REFUND, in a time range": (
            TransactionFilter(
                category=TransactionCategory.REFUND,
                start=topped_up.created_at,
                end=pending.transaction.created_at,
            ),
            {RARE_CATEGORY},
        ),
        "FAILED": (TransactionFilter(status=TransactionStatus.FAILED), {RARE_STATUS}),
        "REVERSED": (TransactionFilter(status=TransactionStatus.REVERSED), {RARE_STATUS}),
        "PENDING": (TransactionFilter(status=TransactionStatus.PENDING), {PENDING}),
        "WITHDRAW and FAILED": (
            TransactionFilter(
                category=TransactionCategory.WITHDRAW, status=TransactionStatus.FAILED
            ),
            {RARE_CATEGORY, RARE_STATUS},
        ),
    }
    expected: dict[str, tuple[TransactionFilter, set[str], set[str], TransactionCursor | None]] = {
        name: (flt, ok, ok, None) for name, (flt, ok) in rare_alone.items()
    }
    cursor = (top_ups[0].created_at, top_ups[0].transaction_id)
    expected["TOP_UP, a next page"] = (
        TransactionFilter(category=TransactionCategory.TOP_UP),
        {RARE_CATEGORY},
        {RARE_CATEGORY},
        cursor,
    )
    # An owner's listing reads the owner's indexes only, in both plans (t0024: the owner is a
    # sub-select whose value neither plan sees, a wallet's is its owner's); a custom plan,
    # which sees a rare category or status, may prove t0024's predicate from it, or find the
    # few rows of a rare status everyone has (this table's) cheaper to filter by owner.
    expected["one wallet's REVERSAL"] = (
        TransactionFilter(wallet_id=alice.wallet_id, category=TransactionCategory.REVERSAL),
        {WALLETS, BY_USER_CATEGORY},
        {WALLETS, BY_USER_CATEGORY, OWNER_RARE},
        None,
    )
    expected["one user's TOP_UP"] = (
        TransactionFilter(user_id=alice.user_id, category=TransactionCategory.TOP_UP),
        {BY_USER_CATEGORY},
        {BY_USER_CATEGORY, OWNER_RARE},
        None,
    )
    expected["one user's FAILED"] = (
        TransactionFilter(user_id=alice.user_id, status=TransactionStatus.FAILED),
        {OWNER_RARE},
        {OWNER_RARE, RARE_STATUS},
        None,
    )
    expected["one wallet's PENDING"] = (
        TransactionFilter(wallet_id=alice.wallet_id, status=TransactionStatus.PENDING),
        {WALLETS, OWNER_RARE},
        {WALLETS, OWNER_RARE, PENDING},
        None,
    )
    # The returned payouts (t0028): their own indexes, not every rare row of the table nor
    # every withdrawal of the owner (review of 2026-12-05).
    returned_payouts = TransactionFilter(
        category=TransactionCategory.WITHDRAW, type=TransactionType.CREDIT
    )
    expected["the returned payouts"] = (returned_payouts, {PAYOUT_RETURNS}, {PAYOUT_RETURNS}, None)
    expected["one user's returned payouts"] = (
        mine,
        {OWNER_PAYOUT_RETURNS},
        {OWNER_PAYOUT_RETURNS, PAYOUT_RETURNS},
        None,
    )
    expected["one wallet's returned payouts"] = (
        TransactionFilter(
            wallet_id=alice.wallet_id,
            category=TransactionCategory.WITHDRAW,
            type=TransactionType.CREDIT,
        ),
        {WALLETS, OWNER_PAYOUT_RETURNS},
        {WALLETS, OWNER_PAYOUT_RETURNS, PAYOUT_RETURNS},
        None,
    )
    for name, (flt, generic, custom, after) in expected.items():
        plans = await _plans(ledger, store, flt, after)
        for mode, allowed in (("force_generic_plan", generic), ("force_custom_plan", custom)):
            scans = plans[mode]
            indexes = {index for node, index in scans if "Index" in node}
            # Never the table, never the time index: only the indexes named.
            assert all(node != "Seq Scan" for node, _ in scans), (name, mode, scans)
            assert indexes and indexes <= allowed, (name, mode, scans)

    assert await _empty_page_buffers(ledger, store) <= EMPTY_PAGE_BUFFERS
