"""A server stream through the gateway stays open while nothing is sent.

Envoy pings each service connection (HTTP/2 keepalive) so that it notices a dead one. A gRPC
server counts pings that arrive closer together than its minimum ping interval as strikes
and, after `grpc.http2.max_ping_strikes`, closes the connection with GOAWAY
`too_many_pings`: every stream on it ends with UNAVAILABLE, which Envoy passes on. An idle
WatchNotifications stream through the gateway was cut after 2-8 minutes that way (the
services' minimum was misspelled, so gRPC's default of 5 minutes applied against Envoy's
30 s pings). Here Envoy pings every 0.3 s and the stream's server, built with the services'
own `server_options`, allows one every 0.1 s: the stream must outlive many pings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import (
    GatewayUnderTest,
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from tests.gateway.wallet_double import ThreadedWallet
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_gateway import HostPort

KEEPALIVE_SECONDS = 0.3
MIN_PING_INTERVAL_MS = 100
# gRPC's default max_ping_strikes is 2 (the services' too): well past it.
PINGS_TO_OUTLIVE = 12


@pytest.fixture(scope="module")
def wallet() -> Iterator[ThreadedWallet]:
    running = ThreadedWallet(min_ping_interval_ms=MIN_PING_INTERVAL_MS)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def pinging(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
    wallet: ThreadedWallet,
    signing_key: SigningKey,
) -> Iterator[GatewayUnderTest]:
    workdir = tmp_path_factory.mktemp("gateway-streams")
    settings = loopback_settings(
        workdir,
        descriptor_set,
        {
            "auth": HostPort("127.0.0.1", auth_double.port),
            "wallet": HostPort("127.0.0.1", wallet.wallet_port),
        },
        upstream_keepalive_seconds=KEEPALIVE_SECONDS,
    )
    running = start_gateway(workdir, settings)
    try:
        running.wait_until_token_accepted(signing_key.token())
        yield running
    finally:
        running.stop()


async def _open_watch(
    channel: grpc.aio.Channel, token: str
) -> grpc.aio.UnaryStreamCall[
    wallet_pb2.WatchNotificationsRequest, wallet_pb2.WatchNotificationsResponse
]:
    """A watch whose first message arrived (retried while Envoy's first health check of the
    wallet is pending: until then the cluster has no healthy host)."""
    stub = wallet_pb2_grpc.WalletServiceStub(channel)
    deadline = time.monotonic() + 10
    while True:
        call = stub.WatchNotifications(
            wallet_pb2.WatchNotificationsRequest(),
            metadata=[("authorization", f"Bearer {token}")],
        )
        try:
            first = await call.read()
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        assert isinstance(first, wallet_pb2.WatchNotificationsResponse)
        return call


async def test_an_idle_stream_outlives_envoys_keepalive_pings(
    pinging: GatewayUnderTest, signing_key: SigningKey
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pinging.port}") as channel:
        call = await _open_watch(channel, signing_key.token())
        deadline = time.monotonic() + PINGS_TO_OUTLIVE * KEEPALIVE_SECONDS
        while time.monotonic() < deadline:
            assert not call.done(), f"the stream ended: {await call.code()} {await call.details()}"
            await asyncio.sleep(0.1)
        call.cancel()
