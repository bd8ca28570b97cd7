"""Each user's money movements are throttled by the real transfer gRPC host (its interceptors,
its error mapping), on real PostgreSQL: the (burst + 1)-th TopUp in a row is RESOURCE_EXHAUSTED
with reason RATE_LIMITED and a RetryInfo delay, and another user's TopUp still goes through.
Callers are authenticated with kyc's LocalAuth (a local Ed25519 key, no running auth)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from tests.integration.kyc.conftest import LocalAuth, bearer
from tests.integration.transfer.conftest import LedgerWorld
from vaultpay.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from vaultpay.type.v1 import money_pb2
from vaultpay_transfer.entrypoints.bootstrap import build_host
from vaultpay_transfer.settings import TransferSettings

M = TypeVar("M", bound=Message)
BURST = 3
REFILL_SECONDS = 3600
RATE = 1 / REFILL_SECONDS  # a token an hour: none comes back while the test runs, however slow


@pytest.fixture
async def stack(ledger: LedgerWorld) -> AsyncIterator[tuple[Any, LocalAuth]]:
    fields: dict[str, Any] = {
        k.removeprefix("TRANSFER_").lower(): v
        for k, v in ledger.env.items()
        if k != "TRANSFER_DATABASE_CHAIN_ROLES"  # migrate's alone
    }
    settings = TransferSettings(**fields, movement_burst=BURST, movement_rate_per_second=RATE)
    auth = LocalAuth("transfer")
    host = await build_host(settings, auth=auth)
    port = await host.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield transfer_pb2_grpc.TransferServiceStub(channel), auth
    finally:
        await channel.close()
        await host.stop()


def _top_up() -> transfer_pb2.TopUpRequest:
    return transfer_pb2.TopUpRequest(
        request_id=str(uuid.uuid4()),
        amount=money_pb2.Money(currency_code="INR", amount_minor=100),
        payment_method=transfer_pb2.PAYMENT_METHOD_UPI,
        payment_reference=f"upi-{uuid.uuid4().hex}",
    )


def _detail(error: grpc.aio.AioRpcError, kind: type[M]) -> M:
    """The refusal's first detail of type `kind` (ErrorInfo, RetryInfo)."""
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    found = kind()
    assert any(d.Unpack(found) for d in status_pb2.Status.FromString(raw).details), kind
    return found


async def test_the_burst_plus_first_top_up_is_rate_limited_and_others_are_not(
    ledger: LedgerWorld, stack: tuple[Any, LocalAuth]
) -> None:
    transfer, auth = stack
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    alice_token, bob_token = auth.user_token(alice.user_id), auth.user_token(bob.user_id)
    began = time.monotonic()  # before alice's bucket exists (full, at her first TopUp)
    for _ in range(BURST):
        await transfer.TopUp(_top_up(), metadata=bearer(alice_token), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await transfer.TopUp(_top_up(), metadata=bearer(alice_token), timeout=10)
    elapsed = time.monotonic() - began
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _detail(refused.value, error_details_pb2.ErrorInfo).reason == "RATE_LIMITED"
    retry = _detail(refused.value, error_details_pb2.RetryInfo).retry_delay
    # The wait for a whole token: an hour, less what refilled since the bucket was full.
    assert REFILL_SECONDS - elapsed - 1 <= retry.ToTimedelta().total_seconds() <= REFILL_SECONDS
    assert await ledger.balance(alice) == BURST * 100  # the refused one moved nothing
    await transfer.TopUp(_top_up(), metadata=bearer(bob_token), timeout=10)
    assert await ledger.balance(bob) == 100


async def test_a_top_up_with_a_bad_request_id_names_every_bad_field_and_takes_no_token(
    ledger: LedgerWorld, stack: tuple[Any, LocalAuth]
) -> None:
    """Through the real host: one INVALID_ARGUMENT whose BadRequest names the request_id,
    the amount and the payment method in the request's field order (the request_id was
    refused alone before); more of them than the burst are never RATE_LIMITED and leave the
    user's whole burst."""
    transfer, auth = stack
    alice = await ledger.new_wallet()
    token = auth.user_token(alice.user_id)
    bad = _top_up()
    bad.request_id = "not-a-uuid"
    bad.amount.amount_minor = 0
    bad.payment_method = 99  # type: ignore[assignment]
    for _ in range(BURST + 2):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await transfer.TopUp(bad, metadata=bearer(token), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = _detail(refused.value, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["request_id", "amount.amount_minor", "payment_method"]
    for _ in range(BURST):
        await transfer.TopUp(_top_up(), metadata=bearer(token), timeout=10)
    assert await ledger.balance(alice) == BURST * 100
