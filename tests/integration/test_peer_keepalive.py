"""A peer channel finds a connection whose peer went silent without closing it (a node that
died: no FIN, no RST) by its keepalive pings (review of 2026-12-05: the peer channels had no
keepalive, so calls sent on such a connection waited for their deadline for as long as TCP
kept retransmitting, about 15 minutes).

The peer is reached through a proxy that, once "blackholed", keeps both connections open and
forwards nothing: its kernel still acknowledges every segment, so only a ping that goes
unanswered tells. The channel uses `PEER_CHANNEL_OPTIONS` with every time divided by 20 (the
server's minimum ping interval too): a ping after 1.5 s without reads, answered within 0.5 s,
so the options' keys and their combination are the real ones. With keepalive_time_ms and
keepalive_timeout_ms alone, gRPC 1.85 waited a minute (`grpc.http2.ping_timeout_ms`'s default)
for the answer: the first test failed at its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.blackhole import BlackholeProxy
from tests.support import eventually, health_checks_with_metadata_all_pass
from vaultpay_common.grpc.server import server_options
from vaultpay_common.runtime import PEER_CHANNEL_OPTIONS

pytestmark = pytest.mark.integration

SCALE = 20


def _scaled(options: list[tuple[str, int]] | tuple[tuple[str, str | int], ...]) -> list[Any]:
    return [
        (key, value // SCALE if key.endswith("_ms") and isinstance(value, int) else value)
        for key, value in options
    ]


@contextlib.asynccontextmanager
async def _peer_behind_proxy(
    options: list[Any], health_servicer: health.aio.HealthServicer
) -> AsyncIterator[BlackholeProxy]:
    server = grpc.aio.server(options=options)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    proxy = BlackholeProxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
        await server.stop(0)


@pytest.fixture
async def proxied_peer() -> AsyncIterator[BlackholeProxy]:
    """A server with the services' options (its minimum ping interval scaled down too), behind
    a proxy."""
    async with _peer_behind_proxy(
        _scaled(server_options(1 << 20)), health.aio.HealthServicer()
    ) as proxy:
        yield proxy


def _peer_channel(proxy: BlackholeProxy) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{proxy.port}", options=_scaled(PEER_CHANNEL_OPTIONS)
    )


async def test_a_call_on_a_silent_connection_fails_fast_not_at_its_deadline(
    proxied_peer: BlackholeProxy,
) -> None:
    async with _peer_channel(proxied_peer) as channel:
        health_stub = health_pb2_grpc.HealthStub(channel)
        await health_stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        proxied_peer.blackhole()

        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await health_stub.Check(health_pb2.HealthCheckRequest(), timeout=10)

    # Found dead by an unanswered ping (about 2 s at this scale), not at the deadline: a call
    # that ran into its deadline would end DEADLINE_EXCEEDED.
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value


async def test_an_idle_connection_to_a_silent_peer_is_found_dead_before_any_call(
    proxied_peer: BlackholeProxy,
) -> None:
    """Pings go on while no call is in flight, past gRPC's default of two without data: the
    connection to a vanished pod is dropped before round_robin sends a call on it."""
    async with _peer_channel(proxied_peer) as channel:
        health_stub = health_pb2_grpc.HealthStub(channel)
        await health_stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        # Idle until three pings went through (one more than gRPC's default without data).
        sent = proxied_peer.chunks_up

        async def three_more() -> bool:
            return proxied_peer.chunks_up >= sent + 3

        await eventually(three_more, what="three pings through the proxy")
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        proxied_peer.blackhole()

        async def left_ready() -> None:
            state = channel.get_state()
            while state == grpc.ChannelConnectivity.READY:
                await channel.wait_for_state_change(state)
                state = channel.get_state()

        await asyncio.wait_for(left_ready(), timeout=6)


async def test_an_old_connection_is_replaced_and_its_open_stream_runs_on() -> None:
    """A server asks a connection to go once it is `max_connection_age_ms` old, so a channel
    reconnects (and, resolving a headless Service again, meets the pods a scale-up added); a
    stream opened on the old connection runs on past its age (the grace is unbounded). Before
    the option, the first connection served every call for as long as it stayed up: the proxy
    never saw a second one."""
    servicer = health.aio.HealthServicer()
    options = _scaled(server_options(1 << 20, max_connection_age_ms=1_000 * SCALE))
    async with _peer_behind_proxy(options, servicer) as proxy, _peer_channel(proxy) as channel:
        health_stub = health_pb2_grpc.HealthStub(channel)
        stream = health_stub.Watch(health_pb2.HealthCheckRequest(), timeout=60)
        first = await stream.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING

        async def reconnected_and_served() -> bool:
            await health_stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            return proxy.connections >= 2

        await eventually(reconnected_and_served, what="a second connection after the first aged")

        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        changed = await asyncio.wait_for(stream.read(), timeout=10)
        assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stream.cancel()


async def test_a_call_with_about_fifteen_kib_of_metadata_is_always_taken() -> None:
    """What a JSON call within the gateway's header caps carries to a service at most (review
    of 2026-12-05): gRPC's default refused metadata between 8 and 16 KiB at random, answering
    RESOURCE_EXHAUSTED."""
    server = grpc.aio.server(options=server_options(1 << 20))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await health_checks_with_metadata_all_pass(port)
    finally:
        await server.stop(0)
