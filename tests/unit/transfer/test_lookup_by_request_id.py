"""GetTransactionByRequestId's rule (TransactionQueries.by_request_id) with a fake store: a
movement still running answers IDEMPOTENCY_KEY_IN_USE, not NOT_FOUND; one that committed
between the lookup and the check of its key is read again and found; the check asks about the
caller's own keys of the movement methods. Real locks: test_lookup_while_in_flight.py."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from tests.fakes.transfer import fake_transaction
from vaultpay_common.clock import SystemClock
from vaultpay_common.idempotency import IdempotencyKey, IdempotencyKeyInUseError
from vaultpay_transfer.domain.errors import TransactionNotFoundError
from vaultpay_transfer.domain.model import Transaction, TransactionCategory
from vaultpay_transfer.service_layer.queries import TransactionQueries

METHODS = ("/t/TopUp", "/t/SendMoney", "/t/Withdraw")


@dataclass
class _LookupStore:
    """`by_request_id` answers in turn; `movement_in_flight` as told, recording what it asked."""

    answers: list[Transaction | None]
    running: bool = False
    asked: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)

    async def by_request_id(self, user_id: str, request_id: str) -> Transaction | None:
        return self.answers.pop(0)

    async def movement_in_flight(
        self, caller: str, methods: Sequence[str], request_id: str
    ) -> bool:
        self.asked.append((caller, tuple(methods), request_id))
        return self.running


def _queries(store: _LookupStore) -> TransactionQueries:
    return TransactionQueries(store, SystemClock(), METHODS)  # type: ignore[arg-type]


def _sent(request_id: str) -> Transaction:
    key = IdempotencyKey("alice", METHODS[1], request_id, "0" * 64)
    return fake_transaction("VPY-AAAAAA", "alice", key, 300, TransactionCategory.P2P_SEND)


async def test_a_found_transaction_asks_no_more() -> None:
    rid = str(uuid.uuid4())
    store = _LookupStore([_sent(rid)])
    assert (await _queries(store).by_request_id("alice", rid, "alice")).request_id == rid
    assert store.asked == []


async def test_a_running_movement_is_in_use_asking_about_the_callers_own_keys() -> None:
    rid = str(uuid.uuid4())
    store = _LookupStore([None], running=True)
    with pytest.raises(IdempotencyKeyInUseError):
        await _queries(store).by_request_id("alice", rid.upper(), "alice")
    assert store.asked == [("alice", METHODS, rid)]  # the id as the movements spelt it


async def test_a_movement_that_committed_between_the_reads_is_found() -> None:
    rid = str(uuid.uuid4())
    store = _LookupStore([None, _sent(rid)], running=False)
    assert (await _queries(store).by_request_id("alice", rid, "alice")).request_id == rid


async def test_no_movement_and_none_running_is_not_found() -> None:
    store = _LookupStore([None, None], running=False)
    with pytest.raises(TransactionNotFoundError):
        await _queries(store).by_request_id("alice", str(uuid.uuid4()), "alice")
