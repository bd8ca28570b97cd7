"""Server reflection through the gateway: the trimmed descriptors and the rendered routes.

The reflection server itself is called with grpcurl through a real mesh in
tests/e2e/test_reflection_through_gateway.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from tests.gateway.test_config import _render, _routes, demo_descriptor
from tests.support import health_checks_with_metadata_all_pass
from vaultpay_gateway import HostPort
from vaultpay_gateway.__main__ import parse_settings
from vaultpay_gateway.reflection import (
    REFLECTION_SERVICES,
    public_descriptors,
    reflection_paths,
    start_server,
)
from vaultpay_gateway.routes import REFLECTION_CLUSTER

__all__ = ["demo_descriptor"]  # the fixture, shared with test_config

JWT = "envoy.filters.http.jwt_authn"


def test_only_routed_rpcs_of_public_services_are_described(demo_descriptor: Path) -> None:
    public = public_descriptors(demo_descriptor)

    assert public.services == ("vaultpay.demo.v1.DemoService",)
    service = public.pool.FindServiceByName("vaultpay.demo.v1.DemoService")
    # Sync is `internal`, Forgotten has no rule: the gateway routes neither.
    assert sorted(m.name for m in service.methods) == ["Open", "Peek", "Watch"]
    for hidden in ("DemoInternalService", "DemoPeerService"):
        with pytest.raises(KeyError):
            public.pool.FindServiceByName(f"vaultpay.demo.v1.{hidden}")
    # Messages stay whole: they are plain types.
    assert public.pool.FindMessageTypeByName("vaultpay.demo.v1.Req").fields_by_name["demo_id"]


def test_the_real_contract_lists_exactly_its_public_services(descriptor_set: Path) -> None:
    services = set(public_descriptors(descriptor_set).services)

    assert {
        "vaultpay.auth.v1.AuthService",
        "vaultpay.auth.v1.AuthAdminService",
        "vaultpay.wallet.v1.WalletService",
        "vaultpay.wallet.v1.WalletAdminService",
    } <= services
    assert not [s for s in services if s.endswith("InternalService")]


@pytest.mark.parametrize(
    "internal",
    [
        "vaultpay.auth.v1.IssueServiceTokenRequest",
        "vaultpay.auth.v1.PollSessionRevocationsResponse",
        "vaultpay.wallet.v1.VerifyTransferPinRequest",
        "vaultpay.wallet.v1.CreateNotificationRequest",
    ],
)
def test_the_internal_services_messages_are_not_described(
    descriptor_set: Path, internal: str
) -> None:
    """Review of 2026-12-04: `describe vaultpay.auth.v1.IssueServiceTokenRequest` through the
    gateway named `client_secret`, and VerifyTransferPinRequest its `pin` and `client_ip`."""
    pool = public_descriptors(descriptor_set).pool

    with pytest.raises(KeyError):
        pool.FindMessageTypeByName(internal)
    # What the routed RPCs use is all there, nested and shared types included.
    login = pool.FindMessageTypeByName("vaultpay.auth.v1.LoginRequest")
    assert login.fields_by_name["password"]
    send = pool.FindMethodByName("vaultpay.transfer.v1.TransferService.SendMoney")
    amount = send.input_type.fields_by_name["amount"].message_type
    assert amount is not None and amount.full_name
    assert pool.FindMessageTypeByName("vaultpay.transfer.v1.Transaction")


def test_without_a_reflection_server_reflection_is_not_routed(descriptor_set: Path) -> None:
    config = _render(descriptor_set)

    assert not [n for n in _routes(config) if n.startswith("reflection")]
    assert REFLECTION_CLUSTER not in {c["name"] for c in config["static_resources"]["clusters"]}


def test_reflection_routes_go_to_the_reflection_cluster(descriptor_set: Path) -> None:
    config = _render(descriptor_set, reflection=HostPort("127.0.0.1", 9090))
    routes = _routes(config)

    for path in reflection_paths():
        route: dict[str, Any] = routes[f"reflection {path}"]
        assert route["match"] == {"path": path, "grpc": {}}
        assert route["route"]["cluster"] == REFLECTION_CLUSTER
        assert route["route"]["timeout"] == "0s"  # a stream, open as long as grpcurl wants
        disabled = route["typed_per_filter_config"]
        assert disabled[JWT]["disabled"] is True
        assert disabled["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
    (cluster,) = [
        c for c in config["static_resources"]["clusters"] if c["name"] == REFLECTION_CLUSTER
    ]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9090}
    assert cluster["health_checks"][0]["grpc_health_check"] == {"service_name": ""}


def test_reflection_flag(tmp_path: Path) -> None:
    settings, _, _ = parse_settings(
        [
            "--descriptor",
            "x.binpb",
            "--out",
            str(tmp_path / "e.json"),
            "--reflection",
            "127.0.0.1:9",
        ]
    )

    assert settings.reflection == HostPort("127.0.0.1", 9)


async def test_the_server_answers_v1alpha_and_v1(demo_descriptor: Path) -> None:
    server, port = await start_server(demo_descriptor, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for service in REFLECTION_SERVICES:
                call = channel.stream_stream(
                    f"/{service}/ServerReflectionInfo",
                    request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                    response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
                )
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                replies = [r async for r in call(iter([request]))]
                names = {s.name for s in replies[0].list_services_response.service}
                assert names == {"vaultpay.demo.v1.DemoService", *REFLECTION_SERVICES}
    finally:
        await server.stop(None)


def test_the_reflection_server_starts_without_a_runpy_warning() -> None:
    """`python -m vaultpay_gateway.reflection` (the mesh, compose and k8s start it so) must not
    find its module imported by the package first: runpy warned on every start."""
    started = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "vaultpay_gateway.reflection", "-h"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    assert "RuntimeWarning" not in started.stderr


async def test_the_server_takes_what_the_edge_lets_through(demo_descriptor: Path) -> None:
    """The edge passes up to 12 KiB of headers, which reach the server with Envoy's own and
    gRPC's 32 bytes per entry past gRPC's default 8 KiB soft limit, where it refused at random
    (review of 2026-12-05)."""
    server, port = await start_server(demo_descriptor, "127.0.0.1:0")
    try:
        await health_checks_with_metadata_all_pass(port)
    finally:
        await server.stop(0)
