"""GetTransactionByRequestId while the movement it asks about is still running (a client that
lost its reply asks at once; the first attempt still waits on a wallet's lock, or on a paused
process): IDEMPOTENCY_KEY_IN_USE, "retry shortly", never NOT_FOUND, which tells a client no
money moved and may make it pay again by other means. Real PostgreSQL: the movement holds its
key's advisory lock until its commit, and the lookup reads pg_locks."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.transfer.conftest import (
    TOP_UP,
    LedgerWorld,
    key,
    row_locked,
    top_up_on,
    waiting_on_a_lock,
)
from vaultpay_common.clock import SystemClock
from vaultpay_common.idempotency import IdempotencyKeyInUseError
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.domain.errors import TransactionNotFoundError
from vaultpay_transfer.entrypoints.bootstrap import MOVEMENT_METHODS
from vaultpay_transfer.service_layer.queries import TransactionQueries

pytestmark = pytest.mark.integration


def _queries(ledger: LedgerWorld) -> TransactionQueries:
    return TransactionQueries(SqlTransactionStore(ledger.engine), SystemClock(), MOVEMENT_METHODS)


async def test_a_send_still_waiting_is_in_use_then_found_once_it_committed(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    queries = _queries(ledger)
    send = key(alice.user_id)
    async with row_locked(ledger, alice):
        sending = asyncio.create_task(
            ledger.ledger.send_money(send, alice.user_id, bob.wallet_id, 300, "INR", "")
        )
        await waiting_on_a_lock(ledger, "transfer_send_money")
        with pytest.raises(IdempotencyKeyInUseError):
            await queries.by_request_id(alice.user_id, send.request_id, alice.user_id)
        # Another user's lookup of the same id asks about their own movements: none.
        with pytest.raises(TransactionNotFoundError):
            await queries.by_request_id(bob.user_id, send.request_id, bob.user_id)
    sent = await sending
    assert sent.code == "OK" and sent.transaction is not None, sent
    found = await queries.by_request_id(alice.user_id, send.request_id, alice.user_id)
    assert found.transaction_id == sent.transaction.transaction_id
    with pytest.raises(TransactionNotFoundError):  # an id no movement used
        await queries.by_request_id(alice.user_id, str(uuid.uuid4()), alice.user_id)


async def test_a_top_up_in_an_open_transaction_is_in_use_and_a_rolled_back_one_not_found(
    ledger: LedgerWorld,
) -> None:
    """The top-up's function holds its key's transaction lock until its transaction ends: in
    use while open; rolled back, nothing moved, NOT_FOUND."""
    alice = await ledger.new_wallet()
    queries = _queries(ledger)
    credit = key(alice.user_id, TOP_UP)
    conn = await ledger.owner()
    try:
        transaction = conn.transaction()
        await transaction.start()
        assert await top_up_on(conn, credit, alice, 500, f"upi-{uuid.uuid4().hex}") == "OK"
        with pytest.raises(IdempotencyKeyInUseError):
            await queries.by_request_id(alice.user_id, credit.request_id, alice.user_id)
        await transaction.rollback()
    finally:
        await conn.close()
    with pytest.raises(TransactionNotFoundError):
        await queries.by_request_id(alice.user_id, credit.request_id, alice.user_id)
