"""Per-RPC body caps and timeouts in the rendered config, checked as data (`body_limits`).

The caps of the KYC RPCs that carry a file are derived from one number, kyc's file cap; the
real-Envoy behaviour is in test_gateway_body_limits.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from vaultpay_gateway import (
    DEFAULT_RPC_LIMITS,
    KYC_DOCUMENT_MAX_BYTES,
    ContractError,
    GatewaySettings,
    MiB,
    RpcLimits,
    SettingsError,
    build_config,
    kyc_file_limits,
    load_contract,
    render_bootstrap,
    validate,
)
from vaultpay_gateway.__main__ import parse_settings
from vaultpay_gateway.body_limits import template_regex
from vaultpay_kyc.settings import KycSettings

SUBMIT = "vaultpay.kyc.v1.KycService.SubmitKyc"
UPLOAD = "vaultpay.kyc.v1.KycService.UploadKycDocument"
VIEW = "vaultpay.kyc.v1.KycAdminService.AdminGetKycSubmission"
DEFAULT_LIMIT = "envoy.filters.http.body_size_limit"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
GRPC_CAP = 10 * MiB + 64 * 1024
JSON_CAP = 14 * MiB


def _hcm(settings: GatewaySettings) -> dict[str, Any]:
    config = render_bootstrap(settings, load_contract(settings.descriptor_set))
    hcm: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][
        0
    ]["typed_config"]
    return hcm


def _routes(settings: GatewaySettings) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in _hcm(settings)["route_config"]["virtual_hosts"][0]["routes"]}


def _per_filter(route: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = route.get("typed_per_filter_config", {})
    return found


def _raised(route: dict[str, Any]) -> list[str]:
    """The body limit instances a route turns on (the default one then is off)."""
    return [name for name in _per_filter(route) if name.startswith("vaultpay.body_size_limit.")]


@pytest.fixture
def settings(descriptor_set: Path) -> GatewaySettings:
    return GatewaySettings(descriptor_set=descriptor_set)


def test_the_gateways_file_cap_is_kycs_and_its_grpc_cap_kycs_message_limit() -> None:
    fields = KycSettings.model_fields
    assert fields["document_max_bytes"].default == KYC_DOCUMENT_MAX_BYTES
    assert DEFAULT_RPC_LIMITS[SUBMIT].grpc_request_bytes == fields["max_message_bytes"].default


def test_the_caps_follow_the_file_cap() -> None:
    assert kyc_file_limits() == DEFAULT_RPC_LIMITS
    assert {
        SUBMIT: RpcLimits(
            grpc_request_bytes=GRPC_CAP, json_request_bytes=JSON_CAP, timeout_seconds=60
        ),
        UPLOAD: RpcLimits(grpc_request_bytes=GRPC_CAP, timeout_seconds=60),
        VIEW: RpcLimits(json_response_bytes=JSON_CAP, timeout_seconds=60),
    } == DEFAULT_RPC_LIMITS
    twenty = kyc_file_limits(20 * MiB)[SUBMIT]
    # base64 of (20 MiB + 64 KiB) is 26.75 MiB: whole MiB, rounded up.
    assert (twenty.grpc_request_bytes, twenty.json_request_bytes) == (20 * MiB + 65536, 27 * MiB)
    with pytest.raises(SettingsError):
        kyc_file_limits(0)


def test_the_command_line_takes_kycs_file_cap(tmp_path: Path) -> None:
    base = ["--descriptor", str(tmp_path / "d.binpb"), "--out", str(tmp_path / "envoy.json")]

    default, _, _ = parse_settings(base)
    bigger, _, _ = parse_settings([*base, "--kyc-document-max-bytes", str(20 * MiB)])

    assert default.rpc_limits == DEFAULT_RPC_LIMITS
    assert bigger.rpc_limits == kyc_file_limits(20 * MiB)


def test_the_file_routes_of_grpc_clients_get_the_message_cap_and_a_minute(
    settings: GatewaySettings,
) -> None:
    routes = _routes(settings)

    for name in (SUBMIT, UPLOAD):
        route = routes[name]
        assert _per_filter(route)[DEFAULT_LIMIT]["disabled"] is True
        assert _raised(route) == [f"vaultpay.body_size_limit.{GRPC_CAP}"]
        assert route["route"]["timeout"] == "60s"
        assert route["route"]["max_stream_duration"] == {
            "max_stream_duration": "60s",
            "grpc_timeout_header_max": "60s",
        }
    view = routes[VIEW]
    assert not _raised(view)  # a GET: nothing to raise for gRPC clients
    assert view["route"]["timeout"] == "60s"


def test_the_rest_bindings_of_the_file_rpcs_get_their_own_json_routes(
    settings: GatewaySettings,
) -> None:
    routes = _routes(settings)
    names = list(routes)
    submit = routes["json POST /v1/kyc/submissions"]
    view = routes["json GET /v1/admin/kyc/{submission_id}"]

    assert submit["match"] == {
        "path": "/v1/kyc/submissions",
        "headers": [
            {"name": ":method", "string_match": {"exact": "POST"}},
            # Buffered whole before jwt_authn runs: only for requests that bring a token.
            {"name": "authorization", "present_match": True},
        ],
    }
    assert submit["request_body_buffer_limit"] == JSON_CAP
    assert _raised(submit) == [f"vaultpay.body_size_limit.{JSON_CAP}"]
    assert _per_filter(submit)[TRANSCODER]["max_request_body_size"] == JSON_CAP
    assert view["match"]["safe_regex"] == {"regex": "/v1/admin/kyc/[^/]+"}
    assert view["request_body_buffer_limit"] == MiB
    assert not _raised(view)
    assert _per_filter(view)[TRANSCODER]["max_response_body_size"] == JSON_CAP
    for route in (submit, view):
        # Like the JSON catch-all: no upstream, grpc-* headers dropped from replies.
        assert route["route"] == routes["json_not_found"]["route"]
        assert "envoy.filters.http.header_mutation" in _per_filter(route)
        # After the RPC routes (never shadowing them), before the catch-all.
        assert names.index("grpc_not_found") < names.index(route["name"])
        assert names.index(route["name"]) < names.index("json_not_found")


def test_every_other_route_keeps_the_defaults(settings: GatewaySettings) -> None:
    hcm = _hcm(settings)
    routes = _routes(settings)
    special = {SUBMIT, UPLOAD, VIEW, "json POST /v1/kyc/submissions"}
    special |= {"json GET /v1/admin/kyc/{submission_id}"}

    for name, route in routes.items():
        if name not in special:
            assert not _raised(route), name
            assert DEFAULT_LIMIT not in _per_filter(route), name
            assert route.get("request_body_buffer_limit", MiB) == MiB, name
            assert TRANSCODER not in _per_filter(route) or "reflection" in name, name
    filters = {f["name"]: f for f in hcm["http_filters"]}
    assert filters[DEFAULT_LIMIT]["typed_config"]["max_request_bytes"] == MiB
    assert "disabled" not in filters[DEFAULT_LIMIT]
    for cap in (GRPC_CAP, JSON_CAP):
        raised = filters[f"vaultpay.body_size_limit.{cap}"]
        assert raised["disabled"] is True
        assert raised["typed_config"]["max_request_bytes"] == cap
    assert filters[TRANSCODER]["typed_config"]["max_response_body_size"] == 4 * MiB
    assert "max_request_body_size" not in filters[TRANSCODER]["typed_config"]


def test_a_bigger_file_cap_renders_and_envoy_accepts_it(
    descriptor_set: Path, tmp_path: Path
) -> None:
    settings = GatewaySettings(descriptor_set=descriptor_set, rpc_limits=kyc_file_limits(20 * MiB))

    routes = _routes(settings)
    validate(build_config(settings, tmp_path / "envoy.json"))

    assert routes["json POST /v1/kyc/submissions"]["request_body_buffer_limit"] == 27 * MiB
    assert _raised(routes[UPLOAD]) == [f"vaultpay.body_size_limit.{20 * MiB + 65536}"]


def test_limits_for_rpcs_the_gateway_does_not_route_are_refused(descriptor_set: Path) -> None:
    unknown = GatewaySettings(
        descriptor_set=descriptor_set,
        rpc_limits={"vaultpay.kyc.v1.KycService.SubmitKcy": RpcLimits(grpc_request_bytes=MiB)},
    )
    internal = GatewaySettings(
        descriptor_set=descriptor_set,
        rpc_limits={
            "vaultpay.kyc.v1.KycInternalService.GetKycStats": RpcLimits(grpc_request_bytes=MiB)
        },
    )
    json_without_route = GatewaySettings(
        descriptor_set=descriptor_set, rpc_limits={UPLOAD: RpcLimits(json_request_bytes=2 * MiB)}
    )

    for settings in (unknown, internal, json_without_route):
        with pytest.raises(ContractError):
            _hcm(settings)


@pytest.mark.parametrize(
    "value",
    [
        {"grpc_request_bytes": 0},
        {"json_request_bytes": -1},
        {"json_response_bytes": 2 << 30},
        {"timeout_seconds": 0},
    ],
)
def test_rpc_limits_are_validated(value: dict[str, Any]) -> None:
    with pytest.raises(SettingsError):
        RpcLimits(**value)


@pytest.mark.parametrize(
    ("template", "matches", "misses"),
    [
        (
            "/v1/admin/kyc/{submission_id}",
            ["/v1/admin/kyc/abc"],
            ["/v1/admin/kyc", "/v1/admin/kyc/a/b"],
        ),
        ("/v1/{name=wallets/*}:freeze", ["/v1/wallets/VPY-1:freeze"], ["/v1/wallets/VPY-1"]),
        ("/v1/files/**", ["/v1/files/a/b/c", "/v1/files/"], ["/v1/filesx"]),
        ("/v1/a.b/*/c", ["/v1/a.b/x/c"], ["/v1/aXb/x/c"]),
    ],
)
def test_path_templates_become_anchored_regexes(
    template: str, matches: list[str], misses: list[str]
) -> None:
    regex = template_regex(template)

    assert all(re.fullmatch(regex, path) for path in matches), regex
    assert not any(re.fullmatch(regex, path) for path in misses), regex


def test_an_unreadable_path_template_is_refused() -> None:
    with pytest.raises(ContractError):
        template_regex("v1/no-slash")
    with pytest.raises(ContractError):
        template_regex("/v1/{unclosed")


def test_http2_clients_are_pinged_so_a_dead_one_ends_its_streams(
    settings: GatewaySettings,
) -> None:
    """Review of 2026-12-05: without PINGs a client gone silent kept its notification streams
    open until their tokens expired, and five filled the user's cap. A dead connection closes
    within the interval and the timeout, well inside a stream's idle time."""
    keepalive = _hcm(settings)["http2_protocol_options"]["connection_keepalive"]
    interval, timeout = (int(keepalive[k].rstrip("s")) for k in ("interval", "timeout"))
    assert interval + timeout <= 60
