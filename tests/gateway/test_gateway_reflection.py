"""Server reflection through a real Envoy: the reflection server (in-process, on its own event
loop thread) behind the gateway's reflection routes, with their short stream life, the
cluster's own breaker, and the server's cap on the requests of one stream."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from tests.gateway.harness import (
    GatewayUnderTest,
    ServerThread,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_reflection_config import error_info
from tests.support import eventually
from vaultpay_gateway import HostPort
from vaultpay_gateway.clusters import MAX_REFLECTION_REQUESTS
from vaultpay_gateway.reflection import (
    MAX_MESSAGES_PER_STREAM,
    REFLECTION_SERVICES,
    start_server,
)
from vaultpay_gateway.routes import REFLECTION_CLUSTER


class _ThreadedReflection(ServerThread):
    """The reflection server on 127.0.0.1:<any port>, served from a private event loop
    thread (Envoy health checks it while a test blocks)."""

    def __init__(self, descriptor_set: Path) -> None:
        super().__init__()
        self._server, self.port = self.run(start_server(descriptor_set, "127.0.0.1:0"))


@pytest.fixture(scope="module")
def reflection_gateway(
    tmp_path_factory: pytest.TempPathFactory, descriptor_set: Path
) -> Iterator[GatewayUnderTest]:
    server = _ThreadedReflection(descriptor_set)
    try:
        workdir = tmp_path_factory.mktemp("reflection_gateway")
        settings = loopback_settings(
            workdir, descriptor_set, {}, reflection=HostPort("127.0.0.1", server.port)
        )
        running = start_gateway(workdir, settings)
        try:
            yield running
        finally:
            running.stop()
    finally:
        server.stop()


@pytest.fixture
async def channel(reflection_gateway: GatewayUnderTest) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{reflection_gateway.port}") as opened:
        yield opened


def _reflection_call(channel: grpc.aio.Channel, service: str) -> Any:
    return channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )


_LIST = reflection_pb2.ServerReflectionRequest(list_services="")


async def _read_into(replies: list[Any], call: Any) -> None:
    async for reply in call:
        replies.append(reply)


@pytest.mark.parametrize("service", REFLECTION_SERVICES)
async def test_reflection_lists_the_public_services_through_the_gateway(
    channel: grpc.aio.Channel, service: str
) -> None:
    replies = [r async for r in _reflection_call(channel, service)(iter([_LIST]))]

    names = {s.name for s in replies[0].list_services_response.service}
    assert "vaultpay.auth.v1.AuthService" in names
    assert not [n for n in names if n.endswith("InternalService")]


def _grpcurl(gateway: GatewayUnderTest, *words: str) -> str:
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    done = subprocess.run(
        [grpcurl, "-plaintext", f"127.0.0.1:{gateway.port}", *words],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_grpcurl_describes_every_service_within_one_streams_cap(
    reflection_gateway: GatewayUnderTest,
) -> None:
    """grpcurl asks what one command needs on one stream (a service's file and every file it
    imports): well within `MAX_MESSAGES_PER_STREAM` for each public service."""
    listed = _grpcurl(reflection_gateway, "list").split()
    services = [s for s in listed if s.startswith("vaultpay.")]

    assert len(services) >= 8
    for service in services:
        assert f"{service} is a service:" in _grpcurl(reflection_gateway, "describe", service)
    # Every listed service at once, the reflection services too (they were listed, not
    # described: "Symbol not found: grpc.reflection.v1.ServerReflection").
    everything = _grpcurl(reflection_gateway, "describe")
    assert all(f"{service} is a service:" in everything for service in listed)


async def test_a_streams_requests_past_the_cap_are_refused_through_the_gateway(
    channel: grpc.aio.Channel,
) -> None:
    call = _reflection_call(channel, REFLECTION_SERVICES[0])(
        iter([_LIST] * (MAX_MESSAGES_PER_STREAM + 1))
    )
    replies: list[Any] = []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _read_into(replies, call)

    assert len(replies) == MAX_MESSAGES_PER_STREAM
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server's own words, not the generic text the gateway gives errors without ErrorInfo.
    assert refused.value.details() == (
        f"a reflection stream answers at most {MAX_MESSAGES_PER_STREAM} requests; open a new stream"
    )
    assert error_info(refused.value) == ("RESOURCE_EXHAUSTED", "vaultpay.gateway")


async def test_streams_past_the_clusters_breaker_are_refused_at_once(
    reflection_gateway: GatewayUnderTest,
) -> None:
    """Review: the reflection cluster had the services' 20,000-request breaker, so anyone
    could hold that many streams on the small reflection server. The streams are spread over
    connections: the edge takes 100 streams at once on one HTTP/2 connection."""
    target = f"127.0.0.1:{reflection_gateway.port}"
    # Own connections (grpc shares one between channels to the same address otherwise).
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(3)
    ]
    service = REFLECTION_SERVICES[0]
    held = [_reflection_call(channels[i % 2], service)() for i in range(MAX_REFLECTION_REQUESTS)]
    try:
        for call in held:  # each one answered: open up to the server
            await call.write(_LIST)
            assert (await call.read()).HasField("list_services_response")
        # Read, not written: Envoy refuses at the headers, and a message sent meanwhile could
        # fail in the client's own core (INTERNAL "execute_batch") before the status is read.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _reflection_call(channels[2], service)().read()
        for call in held:
            call.cancel()
        # Once they are gone (Envoy counts none in flight), reflection answers again.

        async def all_gone() -> bool:
            return reflection_gateway.active_requests(REFLECTION_CLUSTER) == 0

        await eventually(all_gone, within=10, what="the cancelled streams let go")
        replies = [r async for r in _reflection_call(channels[2], service)(iter([_LIST]))]
    finally:
        for call in held:
            call.cancel()
        for channel in channels:
            await channel.close()

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(refused.value) == ("UNAVAILABLE", "vaultpay.gateway")
    assert replies[0].HasField("list_services_response")
