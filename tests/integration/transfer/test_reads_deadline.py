"""The ledger's reads answer DEADLINE_EXCEEDED when the database holds them past the caller's
deadline, never an unexpected error: GetTransactionByRequestId is how a client learns what
became of a send whose reply was lost, and INTERNAL would tell it not to retry. A reader waits
here on the owner's lock of wallet_transactions (as it would behind a migration, or on a
database too busy to answer in time)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.integration.transfer.conftest import LedgerWorld
from vaultpay_common.context import DEADLINE
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.service_layer.ports import TransactionFilter

pytestmark = pytest.mark.integration

_READS: dict[str, Callable[[SqlTransactionStore], Awaitable[Any]]] = {
    "by_request_id": lambda s: s.by_request_id(str(uuid.uuid4()), str(uuid.uuid4())),
    "list": lambda s: s.list(TransactionFilter(user_id=str(uuid.uuid4())), None, 10),
    "by_reference": lambda s: s.by_reference(str(uuid.uuid4()), "VP-TXN-ABCD2345"),
}


@pytest.mark.parametrize("read", sorted(_READS))
async def test_a_read_held_past_the_callers_deadline_answers_deadline_exceeded(
    ledger: LedgerWorld, read: str
) -> None:
    store = SqlTransactionStore(ledger.engine)

    async def within_a_deadline() -> Any:
        DEADLINE.set(time.monotonic() + 0.3)  # this task's context only
        return await _READS[read](store)

    owner = await ledger.owner()
    try:
        async with owner.transaction():
            await owner.execute("LOCK TABLE wallet_transactions IN ACCESS EXCLUSIVE MODE")
            reading = asyncio.create_task(within_a_deadline())
            # The lock is held until the read ends: only its deadline can end it.
            with pytest.raises(DeadlineExceededError):
                await asyncio.wait_for(reading, 30)  # a hang guard
    finally:
        await owner.close()


async def test_a_read_whose_deadline_has_passed_answers_deadline_exceeded(
    ledger: LedgerWorld,
) -> None:
    store = SqlTransactionStore(ledger.engine)

    async def past_its_deadline() -> Any:
        DEADLINE.set(time.monotonic() - 0.01)
        return await store.by_request_id(str(uuid.uuid4()), str(uuid.uuid4()))

    with pytest.raises(DeadlineExceededError):
        await asyncio.create_task(past_its_deadline())
