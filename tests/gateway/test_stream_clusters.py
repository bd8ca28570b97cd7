"""WatchNotifications has a cluster of its own, so open streams never fill wallet's breaker.

Review: every open WatchNotifications stream counted against the wallet cluster's one circuit
breaker (`MAX_UPSTREAM_REQUESTS`), which every other wallet call shares: enough open streams
and GetBalance, SetPin and every admin wallet call answered 503 at once. Server streams now go
to `wallet_streams` (same endpoint, health check and HTTP/2 options, a breaker of its own).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import vaultpay_gateway
from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import (
    GatewayUnderTest,
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from tests.gateway.wallet_double import ThreadedWallet
from tests.support import eventually
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_gateway import (
    DEFAULT_UPSTREAMS,
    ApiContract,
    GatewaySettings,
    HostPort,
    load_contract,
    render_bootstrap,
)
from vaultpay_gateway.clusters import MAX_STREAM_REQUESTS, MAX_UPSTREAM_REQUESTS

WATCH = "vaultpay.wallet.v1.WalletService.WatchNotifications"
WATCH_PATH = "/vaultpay.wallet.v1.WalletService/WatchNotifications"
JWT = "envoy.filters.http.jwt_authn"


def _config(descriptor: Path) -> dict[str, Any]:
    settings = GatewaySettings(descriptor_set=descriptor, upstreams=dict(DEFAULT_UPSTREAMS))
    return render_bootstrap(settings, load_contract(descriptor))


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes: list[dict[str, Any]] = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def test_watch_routes_go_to_the_streams_cluster_and_the_rest_of_wallet_to_wallet(
    descriptor_set: Path,
) -> None:
    contract = load_contract(descriptor_set)
    routes = _routes(_config(descriptor_set))
    by_name = {r["name"]: r for r in routes if "name" in r}

    # gRPC: the watch route. JSON: `GET /v1/notifications:watch` is transcoded to the same
    # gRPC path and re-matched against these routes; no route of its own sends it elsewhere.
    watch = by_name[WATCH]
    assert watch["match"] == {"path": WATCH_PATH, "grpc": {}}
    assert watch["route"]["cluster"] == "wallet_streams"
    watch_json = contract.find_rpc(WATCH).http
    assert [(b.method, b.template) for b in watch_json] == [("GET", "/v1/notifications:watch")]
    for route in routes:
        target = route.get("route", {}).get("cluster")
        if route.get("name") != WATCH:
            assert target != "wallet_streams", route.get("name")

    wallet_rpcs = [r for r in contract.routed_rpcs() if contract.service_of(r).upstream == "wallet"]
    assert {r.service for r in wallet_rpcs} >= {
        "vaultpay.wallet.v1.WalletService",
        "vaultpay.wallet.v1.WalletAdminService",
    }
    for rpc in wallet_rpcs:
        if rpc.full_name != WATCH:
            assert by_name[rpc.full_name]["route"]["cluster"] == "wallet", rpc.full_name


def test_the_watch_route_is_otherwise_unchanged(descriptor_set: Path) -> None:
    """Still an unbounded, JWT-protected stream with the gateway identity header."""
    watch = next(r for r in _routes(_config(descriptor_set)) if r.get("name") == WATCH)

    assert watch["route"]["timeout"] == "0s"
    assert "idle_timeout" in watch["route"]
    assert "max_stream_duration" not in watch["route"]
    assert watch["route"]["retry_policy"] == {
        "retry_on": "connect-failure,refused-stream",
        "num_retries": 2,
    }
    assert watch["typed_per_filter_config"][JWT]["requirement_name"] == "access_token"
    assert "request_headers_to_remove" in watch or "request_headers_to_add" in watch


def test_both_wallet_clusters_exist_with_their_own_breakers(descriptor_set: Path) -> None:
    clusters = _clusters(_config(descriptor_set))
    wallet, streams = clusters["wallet"], clusters["wallet_streams"]

    assert wallet["circuit_breakers"] == {"thresholds": [{"max_requests": MAX_UPSTREAM_REQUESTS}]}
    assert streams["circuit_breakers"] == {"thresholds": [{"max_requests": MAX_STREAM_REQUESTS}]}
    assert MAX_UPSTREAM_REQUESTS == 20_000
    assert MAX_STREAM_REQUESTS == 20_000
    # Same endpoint, health check, HTTP/2 options and the rest: only the name and breaker differ.
    same = {
        k: v for k, v in wallet.items() if k not in ("name", "load_assignment", "circuit_breakers")
    }
    assert {k: v for k, v in streams.items() if k in same} == same
    assert set(streams) == set(wallet)
    assert streams["load_assignment"]["endpoints"] == wallet["load_assignment"]["endpoints"]
    assert streams["load_assignment"]["cluster_name"] == "wallet_streams"
    # Only services with a routed server stream get a streams cluster.
    assert not {"auth_streams", "transfer_streams", "kyc_streams"} & clusters.keys()


def test_a_contract_whose_service_takes_a_streams_clusters_name_is_refused(
    descriptor_set: Path,
) -> None:
    contract = load_contract(descriptor_set)
    wallet = next(s for s in contract.services if s.upstream == "wallet")
    clash = type(wallet)(
        full_name="vaultpay.wallet_streams.v1.ClashService",
        package="vaultpay.wallet_streams.v1",
        rpcs=(),
    )
    clashing = ApiContract(services=(*contract.services, clash), messages=contract.messages)
    upstreams = {**DEFAULT_UPSTREAMS, "wallet_streams": HostPort("127.0.0.1", 50098)}
    settings = GatewaySettings(descriptor_set=descriptor_set, upstreams=upstreams)

    with pytest.raises(vaultpay_gateway.ContractError, match="share a name"):
        render_bootstrap(settings, clashing)


# --- through a real Envoy: open streams fill their own breaker, not the unary calls' ---

SMALL_BREAKER = 2


@pytest.fixture(scope="module")
def small_breakers(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
    signing_key: SigningKey,
) -> Iterator[GatewayUnderTest]:
    """A gateway whose wallet clusters (both, or the one on code without a streams cluster)
    admit `SMALL_BREAKER` requests at once."""
    wallet = ThreadedWallet()
    workdir = tmp_path_factory.mktemp("gateway-stream-clusters")
    settings = loopback_settings(
        workdir,
        descriptor_set,
        {
            "auth": HostPort("127.0.0.1", auth_double.port),
            "wallet": HostPort("127.0.0.1", wallet.wallet_port),
        },
    )

    def shrunk(*args: Any, **kwargs: Any) -> dict[str, Any]:
        config = render_bootstrap(*args, **kwargs)
        for cluster in config["static_resources"]["clusters"]:
            if cluster["name"].startswith("wallet"):
                cluster["circuit_breakers"] = {"thresholds": [{"max_requests": SMALL_BREAKER}]}
        return config

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vaultpay_gateway, "render_bootstrap", shrunk)
        try:
            running = start_gateway(workdir, settings)
        except BaseException:
            wallet.stop()
            raise
    try:
        running.wait_until_token_accepted(signing_key.token())
        yield running
    finally:
        running.stop()
        wallet.stop()


async def _until_healthy(stub: wallet_pb2_grpc.WalletServiceStub, token: str) -> None:
    """Until Envoy's first health checks of both clusters pass, calls get UNAVAILABLE."""
    deadline = time.monotonic() + 10
    metadata = [("authorization", f"Bearer {token}")]
    while True:
        try:
            await stub.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=metadata)
            call = stub.WatchNotifications(
                wallet_pb2.WatchNotificationsRequest(), metadata=metadata
            )
            await call.read()
            call.cancel()
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_open_watches_leave_wallets_unary_calls_alone(
    small_breakers: GatewayUnderTest, signing_key: SigningKey
) -> None:
    token = signing_key.token()
    metadata = [("authorization", f"Bearer {token}")]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_breakers.port}") as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        await _until_healthy(stub, token)

        async def probe_gone() -> bool:  # the probe watch's slot is given back
            return small_breakers.active_requests("wallet_streams") == 0

        await eventually(probe_gone, within=10, what="the probe watch let go")

        watches = []
        for _ in range(SMALL_BREAKER):
            call = stub.WatchNotifications(
                wallet_pb2.WatchNotificationsRequest(), metadata=metadata
            )
            first = await call.read()
            assert isinstance(first, wallet_pb2.WatchNotificationsResponse)
            watches.append(call)
        try:
            # The streams' breaker is full: the next watch is refused at once...
            extra = stub.WatchNotifications(
                wallet_pb2.WatchNotificationsRequest(), metadata=metadata
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await extra.read()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            # ...while the unary calls' breaker has all its room.
            for _ in range(3):
                reply = await stub.GetBalance(
                    wallet_pb2.GetBalanceRequest(), metadata=metadata, timeout=5
                )
                assert reply.wallet_id == "w-1"
            # JSON: the watch's JSON route meets the streams' full breaker, GetBalance's not.
            bearer = {"authorization": f"Bearer {token}"}
            json_watch = small_breakers.call("GET", "/v1/notifications:watch", headers=bearer)
            json_balance = small_breakers.call("GET", "/v1/wallets/me/balance", headers=bearer)
            assert json_watch.status == 503, json_watch.body
            assert json_balance.status == 200, json_balance.body
            watch_id, balance_id = (r.headers["x-request-id"] for r in (json_watch, json_balance))
            assert small_breakers.logged(watch_id)["upstream_cluster"] == "wallet_streams"
            assert small_breakers.logged(balance_id)["upstream_cluster"] == "wallet"
            assert all(not w.done() for w in watches)
        finally:
            for call in watches:
                call.cancel()
