"""A history page costs the same whatever the size of the table: the listing's own queries
(captured from `SqlTransactionStore`, run again under EXPLAIN (ANALYZE, BUFFERS)) read about
the same number of pages for a user's first page, a next page, a category filter and the staff
view of one wallet, before and after 100,000 other users' rows land in `wallet_transactions`,
interleaved in time with the user's own. Pages read, not time: a count the machine's load
cannot move. The grown table is many times what any page reads, so a plan that scanned it (or
sorted a user's whole history) would fail.

The same for the filters whose rows may be sparse in one owner's history: a hot wallet that
received 100,000 payments and sent a few, listed by type or (staff) by a status other than
COMPLETED, reads as much after the payments as before them (t0024)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.transfer.conftest import LedgerWorld, Wallet
from tests.integration.transfer.sql_capture import CapturedStatement
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.domain.model import (
    TransactionCategory,
    TransactionStatus,
    TransactionType,
)
from vaultpay_transfer.service_layer.ports import TransactionFilter

pytestmark = pytest.mark.integration

FILLER_ROWS = 100_000
FILLER_USERS = 1_000
PAGE = 20
# Growing the table may add one level to an index (one more page per descent) and leave the
# visibility map behind; anything that scanned the table would read thousands more.
SLACK_PAGES = 8


async def _pages_read(ledger: LedgerWorld, read: Callable[[], Awaitable[object]]) -> int:
    """Shared buffers (hit or read) of the statement `read` sends, run again under EXPLAIN."""
    with CapturedStatement(ledger.engine) as captured:
        await read()
    async with ledger.engine.connect() as conn:
        plan = await conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + captured.statement,
            captured.parameters,
        )
        document = plan.scalar_one()
    root = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    return int(root["Shared Hit Blocks"]) + int(root["Shared Read Blocks"])


async def _grow(ledger: LedgerWorld, alice: Wallet, *, hers: bool = False) -> int:
    """Other users' rows, interleaved in time with alice's (as the owner: test data only),
    or with `hers` payments received by alice herself (COMPLETED P2P_RECEIVE rows); returns
    the table's size in pages."""
    [row] = await ledger.fetch(
        "SELECT ledger_transaction_id, min(created_at) AS first, max(created_at) AS last"
        " FROM wallet_transactions WHERE user_id = $1 GROUP BY 1 LIMIT 1",
        alice.user_id,
    )
    conn = await ledger.owner()
    try:
        await conn.execute(
            "INSERT INTO wallet_transactions (id, ledger_transaction_id, reference, user_id,"
            " wallet_id, type, category, status, amount, currency, balance_after, created_at,"
            " completed_at)"
            " SELECT gen_random_uuid(), $1, 'VP-TXN-FILLER00',"
            " coalesce($6, 'filler-' || (i % $2)), coalesce($7, 'VPY-F' || (i % $2)),"
            " 'CREDIT', $8, 'COMPLETED', 1, 'INR', i,"
            " $3::timestamptz + ($4::timestamptz - $3::timestamptz) * random() - interval '1 minute' * random(), now()"
            " FROM generate_series(1, $5) AS i",
            row["ledger_transaction_id"],
            FILLER_USERS,
            row["first"],
            row["last"],
            FILLER_ROWS,
            alice.user_id if hers else None,
            alice.wallet_id if hers else None,
            "P2P_RECEIVE" if hers else "TOP_UP",
        )
        await conn.execute("ANALYZE wallet_transactions")
        pages = await conn.fetchval(
            "SELECT pg_relation_size('wallet_transactions') / current_setting('block_size')::int"
        )
    finally:
        await conn.close()
    return int(pages)


async def test_a_history_page_reads_as_many_pages_in_a_big_table_as_in_a_small_one(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 1_000_000)
    for _ in range(2 * PAGE):
        await ledger.send(alice, bob, 100)
    store = SqlTransactionStore(ledger.engine)
    mine = TransactionFilter(user_id=alice.user_id)
    first_page = await store.list(mine, None, PAGE)
    cursor = (first_page[-1].created_at, first_page[-1].transaction_id)
    reads: dict[str, Callable[[], Awaitable[object]]] = {
        "first page": lambda: store.list(mine, None, PAGE),
        "next page": lambda: store.list(mine, cursor, PAGE),
        "one category": lambda: store.list(
            TransactionFilter(user_id=alice.user_id, category=TransactionCategory.P2P_SEND),
            None,
            PAGE,
        ),
        "staff, one wallet": lambda: store.list(
            TransactionFilter(wallet_id=bob.wallet_id), None, PAGE
        ),
    }

    small = {name: await _pages_read(ledger, read) for name, read in reads.items()}
    table_pages = await _grow(ledger, alice)
    big = {name: await _pages_read(ledger, read) for name, read in reads.items()}

    assert table_pages > 50 * max(big.values()), (table_pages, big)
    for name in reads:
        assert big[name] <= small[name] + SLACK_PAGES, (name, small, big)
    # The pages still hold what they held: the filler belongs to other users and wallets.
    assert [t.transaction_id for t in await store.list(mine, None, PAGE)] == [
        t.transaction_id for t in first_page
    ]


async def test_a_hot_wallets_sparse_rows_page_as_cheaply_after_a_flood_of_payments(
    ledger: LedgerWorld,
) -> None:
    hot, payer = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(payer, 1_000_000)
    await ledger.fund(hot, 10_000)
    for _ in range(PAGE):
        await ledger.send(payer, hot, 100)
    sent = [await ledger.send(hot, payer, 10) for _ in range(3)]
    withdrawal = await ledger.withdraw(hot, 50)
    assert withdrawal.code == "OK" and withdrawal.transaction is not None
    store = SqlTransactionStore(ledger.engine)
    debits = TransactionFilter(user_id=hot.user_id, type=TransactionType.DEBIT)
    filters = {
        "the user's debits": debits,
        "staff, the wallet's debits": TransactionFilter(
            wallet_id=hot.wallet_id, type=TransactionType.DEBIT
        ),
        "staff, the wallet's pending": TransactionFilter(
            wallet_id=hot.wallet_id, status=TransactionStatus.PENDING
        ),
        "staff, the wallet's completed withdrawals": TransactionFilter(
            wallet_id=hot.wallet_id,
            category=TransactionCategory.WITHDRAW,
            status=TransactionStatus.COMPLETED,
        ),
        "staff, the wallet's debits sent": TransactionFilter(
            wallet_id=hot.wallet_id, type=TransactionType.DEBIT, status=TransactionStatus.COMPLETED
        ),
    }
    before = {name: await store.list(flt, None, PAGE) for name, flt in filters.items()}

    def first_page(flt: TransactionFilter) -> Callable[[], Awaitable[object]]:
        return lambda: store.list(flt, None, PAGE)

    small = {name: await _pages_read(ledger, first_page(flt)) for name, flt in filters.items()}
    table_pages = await _grow(ledger, hot, hers=True)
    big = {name: await _pages_read(ledger, first_page(flt)) for name, flt in filters.items()}

    assert table_pages > 50 * max(big.values()), (table_pages, big)
    for name in filters:
        assert big[name] <= small[name] + SLACK_PAGES, (name, small, big)
    expected_debits = [withdrawal.transaction.transaction_id] + [
        t.transaction_id for t in reversed(sent)
    ]
    assert [t.transaction_id for t in before["the user's debits"]] == expected_debits
    assert [t.transaction_id for t in before["staff, the wallet's pending"]] == [
        withdrawal.transaction.transaction_id
    ]
    for name, flt in filters.items():  # the flood added no row these filters match
        after = await store.list(flt, None, PAGE)
        assert [t.transaction_id for t in after] == [t.transaction_id for t in before[name]], name
