"""The gateway when things go wrong around it: a dead upstream, a spent rate limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.gateway.harness import (
    GatewayUnderTest,
    ThreadedAuthDouble,
    closed_port,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_gateway_json import JSON, assert_gateway_error
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_gateway import HostPort, RateLimit


def _running(
    factory: pytest.TempPathFactory,
    name: str,
    descriptor_set: Path,
    auth: HostPort,
    **overrides: Any,
) -> Iterator[GatewayUnderTest]:
    workdir = factory.mktemp(name)
    running = start_gateway(
        workdir, loopback_settings(workdir, descriptor_set, {"auth": auth}, **overrides)
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def gateway_with_auth_down(
    tmp_path_factory: pytest.TempPathFactory, descriptor_set: Path
) -> Iterator[GatewayUnderTest]:
    """Every upstream, auth included, points at a port that stays closed."""
    closed = HostPort("127.0.0.1", closed_port())
    yield from _running(tmp_path_factory, "gateway-auth-down", descriptor_set, closed)


@pytest.fixture(scope="module")
def rate_limited_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
) -> Iterator[GatewayUnderTest]:
    """A bucket of two tokens that refills once a minute."""
    yield from _running(
        tmp_path_factory,
        "gateway-rate-limited",
        descriptor_set,
        HostPort("127.0.0.1", auth_double.port),
        rate_limit=RateLimit(max_tokens=2, tokens_per_fill=1, fill_interval_seconds=60),
    )


@pytest.fixture(scope="module")
def impatient_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
) -> Iterator[GatewayUnderTest]:
    """Unary calls may take one second."""
    yield from _running(
        tmp_path_factory,
        "gateway-impatient",
        descriptor_set,
        HostPort("127.0.0.1", auth_double.port),
        unary_timeout_seconds=1,
    )


def test_json_call_without_a_deadline_is_cut_at_the_unary_timeout(
    impatient_gateway: GatewayUnderTest,
) -> None:
    body = '{"email": "slow@example.com", "password": "pw", "fullName": "S"}'
    reply = impatient_gateway.call(
        "POST", "/v1/auth/register", body, {"content-type": "application/json"}
    )

    # Envoy also passes the deadline upstream as grpc-timeout, so either side may end the call
    # first: Envoy (reason UPSTREAM_TIMEOUT) or the service's own DEADLINE_EXCEEDED.
    assert reply.status == 504, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["code"] == 4


async def test_grpc_call_without_a_deadline_is_cut_at_the_unary_timeout(
    impatient_gateway: GatewayUnderTest,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{impatient_gateway.port}") as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Register(auth_pb2.RegisterRequest(email="slow@example.com", password="pw"))
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_gateway_starts_while_auth_is_down(gateway_with_auth_down: GatewayUnderTest) -> None:
    assert gateway_with_auth_down.envoy.process.poll() is None


def test_route_to_a_down_upstream_is_503_status_json(
    gateway_with_auth_down: GatewayUnderTest,
) -> None:
    reply = gateway_with_auth_down.call("POST", "/v1/auth/register", "{}", JSON)

    status = assert_gateway_error(reply, 503, 14, "UNAVAILABLE")
    assert status["message"] == "service unavailable"


def test_unknown_path_is_still_404_while_auth_is_down(
    gateway_with_auth_down: GatewayUnderTest,
) -> None:
    assert_gateway_error(gateway_with_auth_down.call("GET", "/v1/nope"), 404, 5, "NOT_FOUND")


async def test_grpc_call_to_a_down_upstream_is_unavailable(
    gateway_with_auth_down: GatewayUnderTest,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_with_auth_down.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await auth_pb2_grpc.AuthServiceStub(channel).Register(auth_pb2.RegisterRequest())

    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_spent_rate_limit_is_429_json_and_resource_exhausted_grpc(
    rate_limited_gateway: GatewayUnderTest,
) -> None:
    replies = [rate_limited_gateway.call("GET", "/v1/auth/jwks") for _ in range(3)]

    assert [r.status for r in replies[:2]] == [200, 200]
    assert_gateway_error(replies[2], 429, 8, "RATE_LIMITED")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rate_limited_gateway.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await auth_pb2_grpc.AuthServiceStub(channel).Register(auth_pb2.RegisterRequest())
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
