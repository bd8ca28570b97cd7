"""kyc's outbox deliveries to wallet: which failures of a call dead-letter its event at once
(wallet refuses the event itself) and which the relay retries (wallet or our identity is not
right yet: an outage, or PERMISSION_DENIED, a deployment fault the same for every event)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from vaultpay_common.outbox import PermanentDeliveryError
from vaultpay_kyc.adapters.wallet_peer import GrpcWalletEvents


def _failure(code: grpc.StatusCode) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details="refused")


@pytest.fixture
async def events() -> AsyncIterator[GrpcWalletEvents]:
    async def token() -> str:
        return "service-token"

    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:  # never called here
        yield GrpcWalletEvents(channel, token, 1.0)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    ],
)
async def test_a_refusal_of_the_event_dead_letters_it(
    events: GrpcWalletEvents, code: grpc.StatusCode
) -> None:
    error = events._failed("SetKycTier", _failure(code))
    assert isinstance(error, PermanentDeliveryError)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
)
async def test_an_outage_or_a_refused_identity_is_retried(
    events: GrpcWalletEvents, code: grpc.StatusCode
) -> None:
    error = events._failed("SetKycTier", _failure(code))
    assert not isinstance(error, PermanentDeliveryError)
    assert code.name in str(error)
