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
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.gateway.test_config import _render, _routes, demo_descriptor
from tests.support import health_checks_with_metadata_all_pass
from vaultpay_gateway import HostPort
from vaultpay_gateway.__main__ import parse_settings
from vaultpay_gateway.clusters import MAX_REFLECTION_REQUESTS, MAX_UPSTREAM_REQUESTS
from vaultpay_gateway.reflection import (
    MAX_CONCURRENT_RPCS,
    MAX_MESSAGES_PER_STREAM,
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
        disabled = route["typed_per_filter_config"]
        assert disabled[JWT]["disabled"] is True
        assert disabled["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
    (cluster,) = [
        c for c in config["static_resources"]["clusters"] if c["name"] == REFLECTION_CLUSTER
    ]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9090}
    assert cluster["health_checks"][0]["grpc_health_check"] == {"service_name": ""}


def test_a_reflection_stream_lives_briefly(descriptor_set: Path) -> None:
    """Review: anyone could hold reflection streams open for an hour (`timeout: 0s`, the
    streams' idle timeout, no max_stream_duration)."""
    routes = _routes(_render(descriptor_set, reflection=HostPort("127.0.0.1", 9090)))

    for path in reflection_paths():
        action: dict[str, Any] = routes[f"reflection {path}"]["route"]
        assert action["idle_timeout"] == "30s"
        # Envoy's RouteAction.MaxStreamDuration; with it set, `timeout` is not used.
        assert action["max_stream_duration"] == {"max_stream_duration": "60s"}
        assert action["timeout"] == "60s"


def test_the_reflection_idle_timeout_is_never_longer_than_the_streams(
    descriptor_set: Path,
) -> None:
    config = _render(
        descriptor_set, reflection=HostPort("127.0.0.1", 9090), stream_idle_timeout_seconds=10
    )

    (path, *_) = reflection_paths()
    assert _routes(config)[f"reflection {path}"]["route"]["idle_timeout"] == "10s"


def test_the_reflection_cluster_has_a_small_breaker_of_its_own(descriptor_set: Path) -> None:
    """Review: the reflection cluster had the services' 20,000-request breaker."""
    clusters = {
        c["name"]: c
        for c in _render(descriptor_set, reflection=HostPort("127.0.0.1", 9090))[
            "static_resources"
        ]["clusters"]
    }

    (reflection_breaker,) = clusters[REFLECTION_CLUSTER]["circuit_breakers"]["thresholds"]
    assert reflection_breaker == {"max_requests": MAX_REFLECTION_REQUESTS}
    assert MAX_REFLECTION_REQUESTS == 100
    (auth_breaker,) = clusters["auth"]["circuit_breakers"]["thresholds"]
    assert auth_breaker == {"max_requests": MAX_UPSTREAM_REQUESTS}
    # Envoy's breaker fills before the server's own cap: its health checks still get through.
    assert MAX_REFLECTION_REQUESTS < MAX_CONCURRENT_RPCS


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


def _reflection_call(channel: grpc.aio.Channel, service: str = REFLECTION_SERVICES[0]) -> Any:
    return channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )


async def _read_into(replies: list[Any], call: Any) -> None:
    async for reply in call:
        replies.append(reply)


@pytest.mark.parametrize("service", REFLECTION_SERVICES)
async def test_a_stream_answers_200_requests_and_refuses_the_201st(
    demo_descriptor: Path, service: str
) -> None:
    """Review: one stream answered every message it carried (some 150,000 `list_services`
    within the edge's 1 MiB body cap)."""
    server, port = await start_server(demo_descriptor, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            call = _reflection_call(channel, service)(iter([request] * 201))
            replies: list[Any] = []
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _read_into(replies, call)
    finally:
        await server.stop(None)

    assert MAX_MESSAGES_PER_STREAM == 200
    assert len(replies) == 200
    assert all(r.HasField("list_services_response") for r in replies)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == (
        "a reflection stream answers at most 200 requests; open a new stream"
    )
    assert error_info(refused.value) == ("RESOURCE_EXHAUSTED", "vaultpay.gateway")


def error_info(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    """The (reason, domain) of the ErrorInfo in an error's `grpc-status-details-bin`; the
    Status there must agree with the error's code and message."""
    (details,) = [v for k, v in error.trailing_metadata() if k == "grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    assert (status.code, status.message) == (error.code().value[0], error.details())
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason, info.domain


async def test_a_new_stream_is_answered_after_one_was_refused(demo_descriptor: Path) -> None:
    server, port = await start_server(demo_descriptor, "127.0.0.1:0", max_messages_per_stream=2)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                _ = [r async for r in _reflection_call(channel)(iter([request] * 3))]
            replies = [r async for r in _reflection_call(channel)(iter([request] * 2))]
    finally:
        await server.stop(None)

    assert len(replies) == 2


async def test_the_server_runs_a_bounded_number_of_calls_at_once(demo_descriptor: Path) -> None:
    """Streams over the cap are refused by grpc at once instead of queueing without end."""
    server, port = await start_server(demo_descriptor, "127.0.0.1:0", max_concurrent_rpcs=3)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            held = [_reflection_call(channel)() for _ in range(3)]
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            for call in held:  # each one answered: running on the server
                await call.write(request)
                assert (await call.read()).HasField("list_services_response")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                _ = [r async for r in _reflection_call(channel)(iter([request]))]
            for call in held:
                call.cancel()
    finally:
        await server.stop(None)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert MAX_CONCURRENT_RPCS == 128


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


@pytest.mark.parametrize("service", REFLECTION_SERVICES)
async def test_the_reflection_services_it_lists_are_described(
    demo_descriptor: Path, service: str
) -> None:
    """`grpcurl describe` (every listed service) failed on "Symbol not found:
    grpc.reflection.v1.ServerReflection": the server listed the reflection services but had
    no descriptor of them (noticed by the review of 2026-12-05)."""
    server, port = await start_server(demo_descriptor, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
            [reply] = [r async for r in _reflection_call(channel)(iter([request]))]
    finally:
        await server.stop(None)
    assert reply.WhichOneof("message_response") == "file_descriptor_response"
    [raw] = reply.file_descriptor_response.file_descriptor_proto
    described = descriptor_pb2.FileDescriptorProto.FromString(raw)
    package, name = service.rsplit(".", 1)
    assert described.package == package
    [method] = next(s for s in described.service if s.name == name).method
    assert method.input_type == f".{package}.ServerReflectionRequest"
    assert method.output_type == f".{package}.ServerReflectionResponse"
