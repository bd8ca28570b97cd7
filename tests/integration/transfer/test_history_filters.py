"""The history listings' filters on real PostgreSQL (`SqlTransactionStore.list`, what
ListTransactions and AdminListTransactions page through): type, category, a time window
(start included, end excluded), and for staff a wallet and a status, each combined with keyset
pagination, newest first, every row once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.integration.transfer.conftest import LedgerWorld, Wallet, key
from vaultpay_common.audit.model import AuditEntry, StaffViewer
from vaultpay_common.context import Role
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.domain.model import (
    Transaction,
    TransactionCategory,
    TransactionStatus,
    TransactionType,
)
from vaultpay_transfer.domain.staff_reads import transactions_listed
from vaultpay_transfer.service_layer.ports import TransactionFilter

pytestmark = pytest.mark.integration


async def _send(ledger: LedgerWorld, sender: Wallet, recipient: Wallet, amount: int) -> Transaction:
    outcome = await ledger.ledger.send_money(
        key(sender.user_id), sender.user_id, recipient.wallet_id, amount, "INR", ""
    )
    assert outcome.code == "OK" and outcome.transaction is not None, outcome
    return outcome.transaction


async def _all_pages(
    store: SqlTransactionStore, flt: TransactionFilter, size: int = 2
) -> list[Transaction]:
    """Every row the filter matches, page by page as the RPCs ask for them."""
    found: list[Transaction] = []
    after = None
    while True:
        page = await store.list(flt, after, size)
        found += page
        if len(page) < size:
            return found
        after = (page[-1].created_at, page[-1].transaction_id)


def _ids(rows: Sequence[Transaction]) -> list[str]:
    return [t.transaction_id for t in rows]


async def test_every_filter_pages_newest_first_and_each_row_once(ledger: LedgerWorld) -> None:
    alice, bob, carol = [await ledger.new_wallet() for _ in range(3)]
    top_up = await ledger.fund(alice, 100_000)
    sends = [
        await _send(ledger, alice, bob, 100),
        await _send(ledger, alice, carol, 200),
        await _send(ledger, alice, bob, 300),
    ]
    withdrawal = await ledger.withdraw(alice, 400)
    assert withdrawal.code == "OK" and withdrawal.transaction is not None
    store = SqlTransactionStore(ledger.engine)
    mine = TransactionFilter(user_id=alice.user_id)

    everything = await _all_pages(store, mine)
    assert _ids(everything) == _ids([withdrawal.transaction, *reversed(sends), top_up]), (
        "newest first, each once"
    )
    times = [(t.created_at, t.transaction_id) for t in everything]
    assert times == sorted(times, reverse=True)

    credits = await _all_pages(store, replace(mine, type=TransactionType.CREDIT))
    assert _ids(credits) == [top_up.transaction_id]
    p2p = await _all_pages(store, replace(mine, category=TransactionCategory.P2P_SEND))
    assert _ids(p2p) == _ids(list(reversed(sends)))

    # [start, end): the second send only (each movement commits at its own time).
    second, third = sends[1], sends[2]
    assert second.created_at < third.created_at
    window = replace(mine, start=second.created_at, end=third.created_at)
    assert _ids(await _all_pages(store, window)) == [second.transaction_id]
    since_third = replace(mine, start=third.created_at)
    assert _ids(await _all_pages(store, since_third)) == [
        withdrawal.transaction.transaction_id,
        third.transaction_id,
    ]
    before_all = replace(mine, end=top_up.created_at - timedelta(microseconds=1))
    assert await _all_pages(store, before_all) == []
    # A user's listing without a user id (never sent by the gateway: defence in depth)
    # lists nothing, not every user's rows (review of 2026-12-04).
    assert await _all_pages(store, TransactionFilter(user_id="")) == []

    # Staff: one wallet (bob's two receipts), one status (the pending withdrawal).
    bobs = await _all_pages(store, TransactionFilter(wallet_id=bob.wallet_id))
    assert [(t.category, t.amount_minor) for t in bobs] == [
        (TransactionCategory.P2P_RECEIVE, 300),
        (TransactionCategory.P2P_RECEIVE, 100),
    ]
    pending = await _all_pages(store, TransactionFilter(status=TransactionStatus.PENDING))
    assert _ids(pending) == [withdrawal.transaction.transaction_id]
    carols_debits = TransactionFilter(wallet_id=carol.wallet_id, type=TransactionType.DEBIT)
    assert await _all_pages(store, carols_debits) == []


async def test_a_staff_page_and_its_audit_row_commit_together(ledger: LedgerWorld) -> None:
    """AdminListTransactions' page is read and audited in one transaction by transfer's own
    role (review of 2026-12-04: staff reads of the ledger left no trace)."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    sent = await _send(ledger, alice, bob, 100)
    store = SqlTransactionStore(ledger.engine)
    viewer = StaffViewer("staff-reader", Role.ADMIN, "192.0.2.9")
    flt = TransactionFilter(wallet_id=alice.wallet_id, category=TransactionCategory.P2P_SEND)

    page = await store.list_audited(
        flt,
        None,
        5,
        lambda rows: transactions_listed(
            viewer, rows, {"wallet_id": alice.wallet_id}, continued=False
        ),
    )

    assert _ids(page) == [sent.transaction_id]
    [row] = await ledger.fetch(
        "SELECT actor_id, actor_role, details FROM audit_events"
        " WHERE action = 'transactions.listed' AND actor_id = 'staff-reader'"
    )
    details = json.loads(row["details"]) if isinstance(row["details"], str) else row["details"]
    assert (row["actor_id"], row["actor_role"]) == ("staff-reader", "ADMIN")
    assert details["transaction_ids"] == sent.transaction_id
    assert details["wallet_id"] == alice.wallet_id and details["ip"] == "192.0.2.9"

    def refuse(rows: Sequence[Transaction]) -> AuditEntry:
        raise RuntimeError("the audit row could not be made")

    with pytest.raises(RuntimeError):
        await store.list_audited(flt, None, 5, refuse)
