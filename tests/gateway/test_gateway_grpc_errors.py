"""The gateway's own refusals, as a native gRPC client reads them: every one carries a
`google.rpc.Status` in `grpc-status-details-bin` with the ErrorInfo reason (domain
`vaultpay.gateway`) a JSON client gets for the same case, and a RetryInfo where the JSON
reply says `Retry-After`. Read with grpcio's own `rpc_status.from_call`, which also checks that
the Status agrees with `grpc-status` and `grpc-message`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.gateway.auth_double import SigningKey
from tests.gateway.conftest import MAX_REQUEST_BYTES
from tests.gateway.harness import (
    GatewayUnderTest,
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_gateway_json import JSON, register
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_gateway import HostPort, RateLimit

REGISTER = "vaultpay.auth.v1.AuthService.Register"
REGISTER_BURST = 2
REGISTER_REFILL_SECONDS = 30
CLIENT_BURST = 3


@pytest.fixture
async def channel(gateway: GatewayUnderTest) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield channel


def _start(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
    **overrides: object,
) -> GatewayUnderTest:
    workdir = tmp_path_factory.mktemp("gateway-grpc-errors")
    settings = loopback_settings(
        workdir,
        descriptor_set,
        {"auth": HostPort("127.0.0.1", auth_double.port)},
        **overrides,
    )
    return start_gateway(workdir, settings)


@pytest.fixture(scope="module")
def budgeted(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
) -> Iterator[GatewayUnderTest]:
    """Register's budget is small; the client's own bucket is not."""
    running = _start(
        tmp_path_factory,
        descriptor_set,
        auth_double,
        rpc_rate_limits={
            REGISTER: RateLimit(
                max_tokens=REGISTER_BURST,
                tokens_per_fill=1,
                fill_interval_seconds=REGISTER_REFILL_SECONDS,
            )
        },
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def crowded(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
) -> Iterator[GatewayUnderTest]:
    """The client's own bucket is small (refilled every second)."""
    running = _start(
        tmp_path_factory,
        descriptor_set,
        auth_double,
        client_rate_limit=RateLimit(max_tokens=CLIENT_BURST, tokens_per_fill=1),
    )
    try:
        yield running
    finally:
        running.stop()


def _gateway_status(
    error: grpc.aio.AioRpcError, code: grpc.StatusCode, reason: str
) -> status_pb2.Status:
    """The call failed with `code`, and its Status details name the gateway's `reason`."""
    assert error.code() == code, error
    status = rpc_status.from_call(error)
    assert status is not None, f"no grpc-status-details-bin: {error!r}"
    assert status.code == code.value[0]
    assert status.message == error.details()
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info), status
    assert (info.reason, info.domain) == (reason, "vaultpay.gateway")
    return status


def _retry_seconds(status: status_pb2.Status) -> int | None:
    for detail in status.details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            assert retry.retry_delay.nanos == 0
            return int(retry.retry_delay.seconds)
    return None


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def _get_me_error(
    channel: grpc.aio.Channel, metadata: list[tuple[str, str]]
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await auth_pb2_grpc.AuthServiceStub(channel).GetMe(
            auth_pb2.GetMeRequest(), metadata=metadata
        )
    return error.value


async def test_a_missing_token_is_token_invalid(channel: grpc.aio.Channel) -> None:
    error = await _get_me_error(channel, [])

    _gateway_status(error, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    assert error.details() == "the request has no access token"


async def test_an_expired_token_is_token_expired(
    channel: grpc.aio.Channel, signing_key: SigningKey
) -> None:
    error = await _get_me_error(channel, _bearer(signing_key.token(lifetime=-120)))

    _gateway_status(error, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    assert "expired" in error.details().lower()


@pytest.mark.parametrize("token", ["foreign-key", "not.a.jwt"])
async def test_other_bad_tokens_are_token_invalid(
    channel: grpc.aio.Channel, signing_key: SigningKey, token: str
) -> None:
    if token == "foreign-key":
        token = SigningKey(kid=signing_key.kid).token()

    error = await _get_me_error(channel, _bearer(token))

    _gateway_status(error, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_a_method_the_gateway_does_not_route_is_not_found(
    channel: grpc.aio.Channel,
) -> None:
    stub = auth_pb2_grpc.AuthInternalServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.IssueServiceToken(auth_pb2.IssueServiceTokenRequest())

    _gateway_status(error.value, grpc.StatusCode.UNIMPLEMENTED, "NOT_FOUND")


async def test_a_message_over_the_cap_is_payload_too_large(channel: grpc.aio.Channel) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Register(
            auth_pb2.RegisterRequest(email="a@example.com", full_name="x" * MAX_REQUEST_BYTES)
        )

    _gateway_status(error.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "PAYLOAD_TOO_LARGE")


async def test_a_spent_rpc_budget_is_rate_limited_with_the_buckets_wait(
    budgeted: GatewayUnderTest,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{budgeted.port}") as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        for _ in range(REGISTER_BURST):
            await stub.Register(auth_pb2.RegisterRequest(email="grpc@example.com"))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Register(auth_pb2.RegisterRequest(email="grpc@example.com"))
    json_reply = register(budgeted, {"email": "json@example.com"}, **JSON)

    status = _gateway_status(error.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    wait = _retry_seconds(status)
    assert wait is not None, status
    assert 1 < wait <= REGISTER_REFILL_SECONDS, "the bucket's own wait, not the 1 s default"
    assert json_reply.status == 429
    assert abs(int(json_reply.headers["retry-after"]) - wait) <= 1


async def test_a_flooding_client_is_rate_limited_with_retry_info(
    crowded: GatewayUnderTest,
) -> None:
    refused: grpc.aio.AioRpcError | None = None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{crowded.port}") as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        for _ in range(CLIENT_BURST * 10):
            try:
                await stub.GetJwks(auth_pb2.GetJwksRequest())
            except grpc.aio.AioRpcError as error:
                refused = error
                break

    assert refused is not None, "the client's bucket never ran dry"
    status = _gateway_status(refused, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert _retry_seconds(status) == 1
    assert "local_rate_limited" not in refused.details()
