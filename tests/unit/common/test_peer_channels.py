"""Peer channels balance round-robin over every address a peer's name resolves to.

On Kubernetes the services dial each other at `dns:///<service>:<port>`, a headless Service
whose name resolves to every ready pod. gRPC's default policy, pick_first, sends all of a
process's calls to the first address while it stays up; the peer channels ask for round_robin
(review of 2026-12-04: the manifests claimed per-pod balancing the code did not do).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.support import peer_service_fields
from vaultpay_common.config import PeerServiceSettings
from vaultpay_common.grpc.server import server_options
from vaultpay_common.runtime import PEER_CHANNEL_OPTIONS, ServiceRuntime

ROUND_ROBIN = ("grpc.lb_policy_name", "round_robin")


class ChannelSpy:
    """Records how each channel is made; makes the real one (creating it opens no connection)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[tuple[str, dict[str, Any]]] = []
        self._real = grpc.aio.insecure_channel
        monkeypatch.setattr(grpc.aio, "insecure_channel", self)

    def __call__(self, target: str, **kwargs: Any) -> grpc.aio.Channel:
        self.made.append((target, kwargs))
        return self._real(target, **kwargs)


async def _closed(runtime: ServiceRuntime) -> None:
    await runtime._close_channels()
    await runtime.engine.dispose()
    await runtime.redis.aclose()


def test_the_peer_channel_options_ask_for_round_robin() -> None:
    assert ROUND_ROBIN in PEER_CHANNEL_OPTIONS


async def test_every_peer_channel_balances_round_robin_and_keeps_its_interceptors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = ChannelSpy(monkeypatch)
    settings = PeerServiceSettings(
        **peer_service_fields(), auth_address="dns:///auth:50051", revocation_feed=False
    )
    runtime = ServiceRuntime("wallet", settings)
    try:
        runtime.peer_auth()  # the channel to auth
        runtime.channel("dns:///transfer:50053")
        runtime.channel("127.0.0.1:50054")  # `make run`'s form: one address
    finally:
        await _closed(runtime)

    assert [target for target, _ in spy.made] == [
        "dns:///auth:50051",
        "dns:///transfer:50053",
        "127.0.0.1:50054",
    ]
    for target, kwargs in spy.made:
        assert ROUND_ROBIN in kwargs.get("options", ()), target
        # A refused service token is still renewed on every peer channel.
        assert len(kwargs["interceptors"]) == 1, target


# ----- keepalive (review of 2026-12-05) -------------------------------------------------------
# A peer that vanished without closing its connections (a node that died, no FIN) left them
# open: calls round-robined to one waited for their deadline for as long as the kernel kept
# retransmitting (~15 minutes). Keepalive pings find such a connection dead within 40 s.

KEEPALIVE = {
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    # What gRPC waits for a ping's answer (else a minute): the keepalive timeout in effect.
    "grpc.http2.ping_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
}


def test_the_peer_channel_options_ping_every_30_s_calls_or_not() -> None:
    options = dict(PEER_CHANNEL_OPTIONS)
    assert {k: options.get(k) for k in KEEPALIVE} == KEEPALIVE
    # Unlimited pings while no data flows: gRPC's default stops after two on an idle
    # connection, and a dead pod's idle connection would wait for the next call sent to it.
    assert options["grpc.http2.max_pings_without_data"] == 0


def test_the_pings_stay_within_every_servers_ping_policy() -> None:
    """A server answers pings closer together than its minimum interval with strikes, then
    GOAWAY `too_many_pings` (every call on the connection UNAVAILABLE); without
    keepalive_permit_without_calls, every ping on a connection with no call is one."""
    client = {
        key: int(value) for key, value in PEER_CHANNEL_OPTIONS if key != "grpc.lb_policy_name"
    }
    server = dict(server_options(4 * 1024 * 1024))
    assert server["grpc.keepalive_permit_without_calls"] == 1
    minimum = server["grpc.http2.min_ping_interval_without_data_ms"]
    assert client["grpc.keepalive_time_ms"] >= minimum
    # An unanswered ping gives up before the next one is due.
    assert client["grpc.http2.ping_timeout_ms"] < client["grpc.keepalive_time_ms"]


async def test_every_peer_channel_pings_its_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = ChannelSpy(monkeypatch)
    settings = PeerServiceSettings(**peer_service_fields(), revocation_feed=False)
    runtime = ServiceRuntime("wallet", settings)
    try:
        runtime.peer_auth()
        runtime.channel("dns:///transfer:50053")
    finally:
        await _closed(runtime)

    assert len(spy.made) == 2
    for target, kwargs in spy.made:
        options = dict(kwargs["options"])
        assert {k: options.get(k) for k in KEEPALIVE} == KEEPALIVE, target
