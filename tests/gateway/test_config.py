"""The rendered config, checked as data: no Envoy process except `envoy --mode validate`."""

from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from vaultpay.authz.v1 import authz_pb2
from vaultpay_common.grpc.request_context import MIN_GATEWAY_SECRET_LENGTH
from vaultpay_gateway import (
    DEFAULT_RPC_LIMITS,
    DEFAULT_RPC_RATE_LIMITS,
    DEFAULT_UPSTREAMS,
    GATEWAY_ERRORS,
    GATEWAY_SECRET_ENV_PREFIX,
    IDENTITY_HEADER,
    ContractError,
    EnvoyConfigError,
    GatewaySettings,
    HostPort,
    MiB,
    RateLimit,
    SettingsError,
    UnixSocket,
    build_config,
    gateway_secret_env,
    identity_env_problems,
    load_contract,
    render_bootstrap,
    validate,
)
from vaultpay_gateway.__main__ import main, parse_settings
from vaultpay_gateway.bootstrap import NO_INTERNAL_ADDRESSES
from vaultpay_gateway.errors import UPGRADE_NOT_SUPPORTED_REASON as UPGRADE_REASON
from vaultpay_gateway.filters import HEADER_MUTATION_FILTER, INTERNAL_REPLY_HEADERS
from vaultpay_gateway.native_grpc import (
    NATIVE_GRPC_LUA,
    is_native_grpc,
    native_grpc_content_type,
)

# --- a synthetic contract, to pin derivation rules independently of the real protos ---


def _method(
    name: str,
    rule: dict[str, Any] | None,
    http: tuple[str, str] | None = None,
    *,
    server_streaming: bool = False,
) -> descriptor_pb2.MethodDescriptorProto:
    method = descriptor_pb2.MethodDescriptorProto(
        name=name,
        input_type=".vaultpay.demo.v1.Req",
        output_type=".vaultpay.demo.v1.Res",
        server_streaming=server_streaming,
    )
    if rule is not None:
        method.options.Extensions[authz_pb2.rule].CopyFrom(authz_pb2.AccessRule(**rule))
    if http is not None:
        setattr(method.options.Extensions[annotations_pb2.http], http[0], http[1])
    return method


@pytest.fixture(scope="module")
def demo_descriptor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = descriptor_pb2.FileDescriptorProto(name="vaultpay/demo/v1/demo.proto")
    file.package = "vaultpay.demo.v1"
    file.message_type.add(name="Req").field.add(
        name="demo_id",
        json_name="demoId",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    )
    file.message_type.add(name="Res")
    file.service.add(
        name="DemoService",
        method=[
            _method("Open", {"public": True}, ("post", "/v1/demo/{demo_id}:open")),
            _method("Watch", {"min_role": 1}, ("get", "/v1/demo:watch"), server_streaming=True),
            _method("Peek", {"min_role": 2, "strict": True}, ("get", "/v1/demo/{demo_id}")),
            _method("Sync", {"internal": True}),
            _method("Forgotten", None, ("get", "/v1/forgotten")),
        ],
    )
    file.service.add(name="DemoPeerService", method=[_method("Pull", {"internal": True})])
    file.service.add(name="DemoInternalService", method=[_method("Mint", {"public": True})])
    other = descriptor_pb2.FileDescriptorProto(name="acme/v1/acme.proto", package="acme.v1")
    other.service.add(name="AcmeService", method=[_method("Do", {"public": True})])
    path = tmp_path_factory.mktemp("demo") / "demo.binpb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[file, other]).SerializeToString())
    return path


def _routes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hcm = _public_hcm(config)
    return {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}


def _public_hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        f["typed_config"] for f in _public_hcm(config)["http_filters"] if f["name"] == name
    )
    return found


def _render(descriptor: Path, **overrides: Any) -> dict[str, Any]:
    upstreams = {**DEFAULT_UPSTREAMS, "demo": HostPort("127.0.0.1", 50099)}
    settings = GatewaySettings(descriptor_set=descriptor, upstreams=upstreams, **overrides)
    return render_bootstrap(settings, load_contract(descriptor))


def test_only_vaultpay_packages_are_read(demo_descriptor: Path) -> None:
    contract = load_contract(demo_descriptor)

    assert {s.full_name for s in contract.services} == {
        "vaultpay.demo.v1.DemoService",
        "vaultpay.demo.v1.DemoPeerService",
        "vaultpay.demo.v1.DemoInternalService",
    }
    assert contract.upstreams == ("demo",)


def test_internal_services_are_neither_transcoded_nor_routed(demo_descriptor: Path) -> None:
    config = _render(demo_descriptor, jwt=_demo_jwt())

    transcoder = _filter(config, "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["services"] == ["vaultpay.demo.v1.DemoService"]
    routed = {r["match"].get("path") for r in _routes(config).values()}
    assert "/vaultpay.demo.v1.DemoInternalService/Mint" not in routed
    assert "/vaultpay.demo.v1.DemoPeerService/Pull" not in routed


def test_internal_and_ruleless_rpcs_of_a_public_service_are_not_routed(
    demo_descriptor: Path,
) -> None:
    routes = _routes(_render(demo_descriptor, jwt=_demo_jwt()))

    assert "vaultpay.demo.v1.DemoService.Sync" not in routes
    assert "vaultpay.demo.v1.DemoService.Forgotten" not in routes
    assert {"vaultpay.demo.v1.DemoService.Open", "vaultpay.demo.v1.DemoService.Peek"} <= set(routes)


def test_every_routed_rpc_decides_its_jwt_requirement(demo_descriptor: Path) -> None:
    routes = _routes(_render(demo_descriptor, jwt=_demo_jwt()))

    def jwt_of(name: str) -> dict[str, Any]:
        config: dict[str, Any] = routes[name]["typed_per_filter_config"][
            "envoy.filters.http.jwt_authn"
        ]
        return config

    assert jwt_of("vaultpay.demo.v1.DemoService.Open")["disabled"] is True
    assert jwt_of("vaultpay.demo.v1.DemoService.Peek")["requirement_name"] == "access_token"
    assert jwt_of("vaultpay.demo.v1.DemoService.Watch")["requirement_name"] == "access_token"
    assert routes["vaultpay.demo.v1.DemoService.Peek"]["match"] == {
        "path": "/vaultpay.demo.v1.DemoService/Peek",
        "grpc": {},
    }
    assert routes["vaultpay.demo.v1.DemoService.Peek"]["route"]["cluster"] == "demo"


def test_streaming_routes_have_no_timeout(demo_descriptor: Path) -> None:
    routes = _routes(_render(demo_descriptor, jwt=_demo_jwt()))

    assert routes["vaultpay.demo.v1.DemoService.Watch"]["route"]["timeout"] == "0s"
    assert routes["vaultpay.demo.v1.DemoService.Peek"]["route"]["timeout"] == "15s"


def test_missing_upstream_address_is_a_settings_error(demo_descriptor: Path) -> None:
    settings = GatewaySettings(descriptor_set=demo_descriptor, jwt=_demo_jwt())

    with pytest.raises(SettingsError, match="demo"):
        render_bootstrap(settings, load_contract(demo_descriptor))


def test_jwks_rpc_without_get_binding_is_a_contract_error(demo_descriptor: Path) -> None:
    from vaultpay_gateway import JwtSettings

    with pytest.raises(ContractError, match="GET"):
        _render(demo_descriptor, jwt=JwtSettings(jwks_rpc="vaultpay.demo.v1.DemoService.Open"))


def _demo_jwt() -> Any:
    from vaultpay_gateway import JwtSettings

    return JwtSettings(jwks_rpc="vaultpay.demo.v1.DemoService.Peek")


# --- the real contract ---


def test_real_contract_routes_public_auth_rpcs_without_jwt(descriptor_set: Path) -> None:
    contract = load_contract(descriptor_set)

    public = {r.name for r in contract.routed_rpcs() if r.rule is not None and r.rule.public}
    assert {"Register", "Login", "RefreshToken", "GetJwks"} <= public
    assert all(not s.full_name.endswith("InternalService") for s in contract.public_services)


def test_real_contract_every_route_follows_its_rpc(descriptor_set: Path) -> None:
    contract = load_contract(descriptor_set)
    routes = _routes(_render(descriptor_set))
    routed = {r.full_name: r for r in contract.routed_rpcs()}

    rpc_routes = {
        name: route
        for name, route in routes.items()
        if "match" in route and "path" in route["match"] and "grpc" in route["match"]
    }
    assert set(rpc_routes) == set(routed)
    for name, route in rpc_routes.items():
        rpc = routed[name]
        upstream = contract.service_of(rpc).upstream
        expected = f"{upstream}_streams" if rpc.server_streaming else upstream
        assert route["route"]["cluster"] == expected
        jwt = route["typed_per_filter_config"]["envoy.filters.http.jwt_authn"]
        assert jwt.get("disabled", False) is (rpc.rule is not None and rpc.rule.public)
        # Streams are unbounded, except the upload of a KYC file (body_limits).
        unbounded = rpc.is_streaming and name not in DEFAULT_RPC_LIMITS
        assert (route["route"]["timeout"] == "0s") is unbounded
    internal_paths = {
        rpc.grpc_path
        for service in contract.services
        if service.is_internal
        for rpc in service.rpcs
    }
    assert internal_paths
    assert not internal_paths & {route["match"].get("path") for route in routes.values()}


def test_jwt_tokens_come_only_from_the_authorization_header(descriptor_set: Path) -> None:
    jwt = _filter(_render(descriptor_set), "envoy.filters.http.jwt_authn")
    provider = jwt["providers"]["vaultpay_auth"]

    assert provider["from_headers"] == [{"name": "Authorization", "value_prefix": "Bearer "}]
    assert "from_params" not in provider
    assert "from_cookies" not in provider
    assert provider["issuer"] == "vaultpay-auth"
    assert provider["audiences"] == ["vaultpay"]
    assert provider["forward"] is True
    remote = provider["remote_jwks"]
    assert remote["http_uri"]["uri"].endswith("/v1/auth/jwks")
    assert remote["async_fetch"]["fast_listener"] is True
    assert remote["cache_duration"] == "60s"


def test_transcoder_rejects_unknown_methods_and_query_parameters(descriptor_set: Path) -> None:
    transcoder = _filter(_render(descriptor_set), "envoy.filters.http.grpc_json_transcoder")

    assert transcoder["convert_grpc_status"] is True
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": True,
    }
    assert transcoder["print_options"]["stream_newline_delimited"] is True
    assert Path(transcoder["proto_descriptor"]).is_absolute()


def test_filter_order(descriptor_set: Path) -> None:
    names = [f["name"] for f in _public_hcm(_render(descriptor_set))["http_filters"]]

    assert names == [
        "envoy.filters.http.header_mutation",
        "vaultpay.replies",
        "envoy.filters.http.cors",
        "envoy.filters.http.local_ratelimit",
        # Before either jwt_authn: the bearer scheme in any case.
        "vaultpay.request_guard",
        # Off unless a route turns it on: the KYC file's JSON route checks its token first.
        "vaultpay.jwt_authn.before_body",
        "envoy.filters.http.body_size_limit",
        # Off unless a route turns them on: the KYC file routes' caps (gRPC, JSON).
        f"vaultpay.body_size_limit.{10 * MiB + 64 * 1024}",
        f"vaultpay.body_size_limit.{14 * MiB}",
        "vaultpay.json_body.capture",
        "envoy.filters.http.grpc_json_transcoder",
        "vaultpay.rpc_ratelimit",
        "envoy.filters.http.jwt_authn",
        "vaultpay.json_body.check",
        "envoy.filters.http.router",
    ]


def test_json_body_check_is_generated_from_the_contract(descriptor_set: Path) -> None:
    hcm = _public_hcm(_render(descriptor_set, max_request_bytes=65536))
    check = _filter(_render(descriptor_set), "vaultpay.json_body.check")
    lua = check["default_source_code"]["inline_string"]

    assert '["/vaultpay.auth.v1.AuthService/Register"]' in lua
    assert '["fullName"] = "s"' in lua  # a single value: a list is refused
    assert '["full_name"] = "s"' in lua
    # The capture holds whole bodies on the REST catch-all route, up to the body cap.
    json_route = next(
        r
        for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
        if r["name"] == "json_not_found"
    )
    assert json_route["request_body_buffer_limit"] == 65536


def test_json_body_check_replies_are_kept_by_the_local_reply_mapper(descriptor_set: Path) -> None:
    first = _public_hcm(_render(descriptor_set))["local_reply_config"]["mappers"][0]

    assert first["filter"]["metadata_filter"]["matcher"]["filter"] == "vaultpay.json_body"
    assert first["body_format_override"]["text_format_source"]["inline_string"] == (
        "%LOCAL_REPLY_BODY%"
    )


def test_every_gateway_error_has_a_json_and_a_grpc_mapper(descriptor_set: Path) -> None:
    mappers = _public_hcm(_render(descriptor_set))["local_reply_config"]["mappers"]
    rendered = json.dumps(mappers)

    for error in GATEWAY_ERRORS:
        assert f'"reason": "{error.reason}"' in rendered
        assert {"key": "grpc-status", "value": str(error.grpc_code)} in [
            h["header"] for m in mappers for h in m.get("headers_to_add", [])
        ]


def _reasons_of_403_replies(mappers: list[dict[str, Any]]) -> dict[str, str]:
    """The JSON mappers that match an HTTP 403 reply: their filter's text -> their reason."""
    found = {}
    for mapper in mappers:
        text = json.dumps(mapper["filter"])
        if '"default_value": 403' not in text or "grpc" in text:
            continue
        status = mapper["body_format_override"]["json_format"]
        found[text] = status["details"][0]["reason"]
    return found


def test_envoys_own_403_is_never_read_as_a_refused_token(descriptor_set: Path) -> None:
    """Review: Envoy's 403 for a WebSocket upgrade fell to the catch-all 403 mapper, reason
    TOKEN_INVALID with an empty message, and a client may sign its user out on that."""
    mappers = _public_hcm(_render(descriptor_set))["local_reply_config"]["mappers"]
    reasons = _reasons_of_403_replies(mappers)
    (forbidden,) = [e for e in GATEWAY_ERRORS if e.http_status == 403]

    assert sorted(reasons.values()) == ["PERMISSION_DENIED", "TOKEN_INVALID", UPGRADE_REASON]
    # TOKEN_INVALID only for jwt_authn's own 403 (a token for another audience)...
    (jwt_filter,) = [f for f, r in reasons.items() if r == "TOKEN_INVALID"]
    assert "jwt_authn_access_denied" in jwt_filter
    (upgrade_filter,) = [f for f, r in reasons.items() if r == UPGRADE_REASON]
    assert "upgrade_failed" in upgrade_filter
    # ... and the catch-all says something fixed that is not about tokens.
    assert (forbidden.reason, forbidden.code, forbidden.grpc_code) == ("PERMISSION_DENIED", 7, 7)
    assert forbidden.message and "token" not in forbidden.message
    assert forbidden.grpc_text == forbidden.message


@pytest.mark.parametrize(
    ("content_type", "native"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("application/grpc+", True),
        ("application/grpc+proto; charset=utf-8", True),
        ("application/grpc+proto,application/json", True),
        ("application/grpc; charset=utf-8", False),
        ("application/grpc;x", False),
        ("Application/GRPC", False),
        ("application/grpc-web", False),
        ("application/grpc-web+proto", False),
        ("application/grpc,application/grpc", False),
        (" application/grpc", False),
        ("application/json", False),
        (None, False),
    ],
)
def test_native_grpc_is_envoys_test(content_type: str | None, native: bool) -> None:
    """Grpc::Common::hasGrpcContentType: exactly `application/grpc`, or `application/grpc+`
    and anything after it; case-sensitive; two headers arrive joined by a comma."""
    assert is_native_grpc(content_type) is native


def _lua_sources(config: dict[str, Any]) -> dict[str, str]:
    return {
        f["name"]: f["typed_config"]["default_source_code"]["inline_string"]
        for f in _public_hcm(config)["http_filters"]
        if f["typed_config"]["@type"].endswith(".lua.v3.Lua")
    }


def test_every_filter_tells_native_grpc_apart_by_the_one_shared_rule(
    descriptor_set: Path,
) -> None:
    config = _render(descriptor_set)
    sources = _lua_sources(config)

    # The Lua filters that ask carry the generated helper, and no test of their own.
    for name in ("vaultpay.replies", "vaultpay.json_body.capture"):
        assert NATIVE_GRPC_LUA in sources[name], name
    for name, source in sources.items():
        rest = source.replace(NATIVE_GRPC_LUA, "")
        assert '"application/grpc' not in rest, name  # a string literal, not a comment
    # The local reply mapper: the same test as a header matcher, on the request.
    mappers = json.dumps(_public_hcm(config)["local_reply_config"]["mappers"])
    assert json.dumps(native_grpc_content_type()) in mappers
    assert '{"prefix": "application/grpc"}' not in mappers


def test_no_reply_keeps_an_internal_mark(descriptor_set: Path) -> None:
    """header_mutation, the last filter on the way back, removes the mapper's marks."""
    config = _render(descriptor_set)
    mutations = _filter(config, HEADER_MUTATION_FILTER)["mutations"]["response_mutations"]

    assert set(INTERNAL_REPLY_HEADERS) == {"x-vaultpay-local-reply", "x-vaultpay-transcode-failure"}
    for header in INTERNAL_REPLY_HEADERS:
        assert {"remove": header} in mutations
    assert _public_hcm(config)["http_filters"][0]["name"] == HEADER_MUTATION_FILTER


def test_access_log_never_records_credentials_or_query_strings(descriptor_set: Path) -> None:
    hcm = _public_hcm(_render(descriptor_set, access_log_path=Path("/tmp/x.log")))
    log_format = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]

    rendered = json.dumps(log_format).upper()
    assert "AUTHORIZATION" not in rendered
    assert "%REQ(:PATH)%" not in rendered
    assert log_format["request_id"] == "%REQ(X-REQUEST-ID)%"
    assert log_format["method"] == "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%"


def test_defaults_bind_to_loopback(descriptor_set: Path) -> None:
    config = _render(descriptor_set)

    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
    assert _public_hcm(config)["use_remote_address"] is True


def test_health_checks_probe_often_even_without_traffic(descriptor_set: Path) -> None:
    auth = next(
        c for c in _render(descriptor_set)["static_resources"]["clusters"] if c["name"] == "auth"
    )

    check = auth["health_checks"][0]
    assert "grpc_health_check" in check
    assert check["no_traffic_interval"] == "5s"
    assert check["interval"] == "5s"


# --- settings, CLI, validation ---


@pytest.mark.parametrize("origin", ["*", "example.com", "https://example.com/"])
def test_cors_origins_must_be_exact(origin: str) -> None:
    with pytest.raises(SettingsError):
        GatewaySettings(descriptor_set=Path("x"), cors_origins=(origin,))


def test_host_port_parsing() -> None:
    assert HostPort.parse("127.0.0.1:8080") == HostPort("127.0.0.1", 8080)
    assert HostPort.parse("[::1]:9901") == HostPort("::1", 9901)
    assert str(HostPort("::1", 9901)) == "[::1]:9901"
    with pytest.raises(SettingsError):
        HostPort.parse("localhost")
    with pytest.raises(SettingsError):
        HostPort.parse("localhost:70000")


def test_cli_writes_a_config_envoy_accepts(descriptor_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "gateway" / "envoy.yaml"

    code = main(
        [
            "--descriptor",
            str(descriptor_set),
            "--out",
            str(out),
            "--listen",
            "127.0.0.1:18080",
            "--upstream",
            "auth=127.0.0.1:60051",
            "--cors-origin",
            "http://localhost:3000",
            "--access-log",
            str(tmp_path / "access.log"),
            "--rate-limit",
            "50/100",
            "--validate",
        ]
    )

    assert code == 0
    config = json.loads(out.read_text())
    auth = next(c for c in config["static_resources"]["clusters"] if c["name"] == "auth")
    endpoint = auth["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == 60051


def test_cli_reports_a_missing_descriptor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--descriptor", str(tmp_path / "nope.binpb"), "--out", str(tmp_path / "e.yaml")])

    assert code == 1
    assert "cannot read descriptor set" in capsys.readouterr().err


def test_validate_raises_with_envoys_explanation(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps({"static_resources": {"clusters": [{"name": "x", "type": "NOPE"}]}})
    )

    with pytest.raises(EnvoyConfigError, match="NOPE"):
        validate(broken)


# --- API docs ---


def _docs_config(descriptor_set: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    settings = GatewaySettings(descriptor_set=descriptor_set, **overrides)
    config: dict[str, Any] = json.loads(build_config(settings, out).read_text())
    return config


def test_docs_are_public_direct_responses_from_files_beside_the_config(
    descriptor_set: Path, tmp_path: Path
) -> None:
    config = _docs_config(descriptor_set, tmp_path / "gateway" / "envoy.json")
    route_config = _public_hcm(config)["route_config"]
    docs = [r for r in route_config["virtual_hosts"][0]["routes"] if "direct_response" in r]
    docs = [r for r in docs if r["match"].get("path", "").startswith("/docs")]

    paths = {r["match"]["path"] for r in docs}
    assert {"/docs", "/docs/", "/docs/openapi.json", "/docs/swagger-ui-bundle.js"} <= paths
    sizes = []
    for route in docs:
        body = Path(route["direct_response"]["body"]["filename"])
        assert body.is_absolute() and body.parent == (tmp_path / "gateway" / "docs").resolve()
        sizes.append(body.stat().st_size)
        assert route["match"]["headers"] == [
            {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}
        ]
        disabled = route["typed_per_filter_config"]
        for name in (
            "vaultpay.json_body.capture",
            "envoy.filters.http.grpc_json_transcoder",
            "envoy.filters.http.jwt_authn",
            "vaultpay.json_body.check",
        ):
            assert disabled[name]["disabled"] is True, (route["name"], name)
        headers = {
            h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]
        }
        assert headers["content-type"]
    assert route_config["max_direct_response_body_size_bytes"] == max(sizes) > 1_000_000
    # The docs' bodies pass the local reply mapper untouched (after the body check's).
    mappers = _public_hcm(config)["local_reply_config"]["mappers"]
    verbatim = mappers[1]["filter"]["and_filter"]["filters"]
    assert {
        "header_filter": {"header": {"name": ":path", "string_match": {"prefix": "/docs"}}}
    } in verbatim


def test_docs_can_be_switched_off(descriptor_set: Path, tmp_path: Path) -> None:
    config = _docs_config(descriptor_set, tmp_path / "envoy.json", serve_docs=False)
    route_config = _public_hcm(config)["route_config"]

    assert not [
        r
        for r in route_config["virtual_hosts"][0]["routes"]
        if "direct_response" in r and r["match"].get("path", "").startswith("/docs")
    ]
    assert "max_direct_response_body_size_bytes" not in route_config
    assert not (tmp_path / "docs").exists()
    assert (
        main(["--descriptor", str(descriptor_set), "--out", str(tmp_path / "e.json"), "--no-docs"])
        == 0
    )
    assert not (tmp_path / "docs").exists()


def test_client_address_trusts_no_forwarded_for_unless_told_how_many_proxies(
    descriptor_set: Path,
) -> None:
    assert _public_hcm(_render(descriptor_set))["xff_num_trusted_hops"] == 0
    behind_lb = _public_hcm(_render(descriptor_set, trusted_proxy_hops=1))
    assert behind_lb["xff_num_trusted_hops"] == 1
    with pytest.raises(SettingsError):
        _render(descriptor_set, trusted_proxy_hops=-1)


# --- hardening: rate limits, caps, identity, admin, caching ---

_EXPENSIVE = {
    "vaultpay.auth.v1.AuthService.Register",
    "vaultpay.auth.v1.AuthService.Login",
    "vaultpay.auth.v1.AuthService.RefreshToken",
    "vaultpay.wallet.v1.WalletService.ResetPin",
    "vaultpay.wallet.v1.WalletService.ConfirmIp",
}
# Needs a session, but each call mails the user: budgeted per client address too (review of
# 9e17f85: a loop of them mail-bombed whatever address an account was registered with).
_MAILS = {"vaultpay.wallet.v1.WalletService.RequestPinReset"}
# Need a session, but each hashes a PIN at the production cost: budgeted per client address
# (review of 2026-12-05: a burst of SetPin calls queued hashing in front of money movements).
_HASHES = {
    "vaultpay.wallet.v1.WalletService.SetPin",
    "vaultpay.wallet.v1.WalletService.ChangePin",
}


def test_every_client_address_has_a_bucket_under_a_global_backstop(descriptor_set: Path) -> None:
    limit = _filter(_render(descriptor_set), "envoy.filters.http.local_ratelimit")

    by_address = {"masked_remote_address": {"v4_prefix_mask_len": 32, "v6_prefix_mask_len": 64}}
    assert limit["rate_limits"] == [{"actions": [by_address]}]
    (client,) = limit["descriptors"]
    assert client["entries"] == [{"key": "masked_remote_address"}], "blank: one per address"
    assert client["token_bucket"]["max_tokens"] < limit["token_bucket"]["max_tokens"]
    assert limit["always_consume_default_token_bucket"] is True
    assert limit["max_dynamic_descriptors"] >= 10_000


def test_expensive_public_rpcs_have_budgets_per_client_on_their_grpc_path(
    descriptor_set: Path,
) -> None:
    contract = load_contract(descriptor_set)
    by_name = {rpc.full_name: rpc for rpc in contract.routed_rpcs()}
    limit = _filter(_render(descriptor_set), "vaultpay.rpc_ratelimit")

    assert set(DEFAULT_RPC_RATE_LIMITS) == _EXPENSIVE | _MAILS | _HASHES
    assert all(by_name[name].rule.public for name in _EXPENSIVE)  # type: ignore[union-attr]
    assert not any(by_name[name].rule.public for name in _HASHES)  # type: ignore[union-attr]
    budgets = {d["entries"][1]["value"]: d for d in limit["descriptors"]}
    assert set(budgets) == _EXPENSIVE | _MAILS | _HASHES
    for descriptor in budgets.values():
        assert descriptor["entries"][0] == {"key": "masked_remote_address"}
        assert descriptor["token_bucket"]["max_tokens"] <= 30
    matched = {
        action["header_value_match"]["descriptor_value"]: action["header_value_match"]["headers"]
        for entry in limit["rate_limits"]
        for action in entry["actions"]
        if "header_value_match" in action
    }
    for name, headers in matched.items():
        assert headers == [{"name": ":path", "string_match": {"exact": by_name[name].grpc_path}}]
    assert "token_bucket" not in limit, "other RPCs only spend their client's general bucket"
    assert limit["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"


def test_a_pin_reset_request_has_a_budget_per_client_as_tight_as_the_reset(
    descriptor_set: Path,
) -> None:
    """RequestPinReset mails a code each time: no client address gets more of them than of
    ResetPin, which uses one. The rule still asks for a session (the budget is spent before
    the token is checked, as every budget of the RPC filter)."""
    [name] = _MAILS
    contract = load_contract(descriptor_set)
    rpc = {r.full_name: r for r in contract.routed_rpcs()}[name]
    assert rpc.rule is not None and not rpc.rule.public

    budget = DEFAULT_RPC_RATE_LIMITS[name]
    reset = DEFAULT_RPC_RATE_LIMITS["vaultpay.wallet.v1.WalletService.ResetPin"]
    assert budget.max_tokens <= reset.max_tokens
    assert budget.fill_interval_seconds / budget.tokens_per_fill >= (
        reset.fill_interval_seconds / reset.tokens_per_fill
    )
    limit = _filter(_render(descriptor_set), "vaultpay.rpc_ratelimit")
    [descriptor] = [d for d in limit["descriptors"] if d["entries"][1]["value"] == name]
    assert descriptor["token_bucket"]["max_tokens"] == budget.max_tokens
    [path] = [
        action["header_value_match"]["headers"][0]["string_match"]["exact"]
        for entry in limit["rate_limits"]
        for action in entry["actions"]
        if action.get("header_value_match", {}).get("descriptor_value") == name
    ]
    assert path == "/vaultpay.wallet.v1.WalletService/RequestPinReset"


def test_a_budget_for_an_rpc_the_gateway_does_not_route_is_an_error(descriptor_set: Path) -> None:
    typo = {"vaultpay.auth.v1.AuthService.Logni": RateLimit.per_minute(5)}

    with pytest.raises(ContractError, match="Logni"):
        _render(descriptor_set, rpc_rate_limits=typo)
    none = _public_hcm(_render(descriptor_set, rpc_rate_limits={}))["http_filters"]
    assert "vaultpay.rpc_ratelimit" not in [f["name"] for f in none]


def test_rate_limit_buckets_retry_after_rounds_up() -> None:
    assert RateLimit.per_minute(10).retry_after_seconds == 6
    assert RateLimit.per_minute(7).retry_after_seconds == 9
    assert RateLimit(max_tokens=5, tokens_per_fill=100).retry_after_seconds == 1
    with pytest.raises(SettingsError):
        RateLimit(fill_interval_seconds=0.01)


def test_request_line_and_headers_are_capped_below_the_services_metadata_limit(
    descriptor_set: Path,
) -> None:
    config = _render(descriptor_set)
    guard = _filter(config, "vaultpay.request_guard")["default_source_code"]["inline_string"]

    assert "local MAX_PATH = 2048" in guard
    assert "local MAX_HEADERS = 8192" in guard
    assert _public_hcm(config)["max_request_headers_kb"] == 32
    with pytest.raises(SettingsError):
        _render(descriptor_set, max_header_bytes=40_000)
    # Within Envoy's parser limit but past what the services' metadata limit takes with
    # Envoy's own headers (review of 2026-12-05).
    with pytest.raises(SettingsError, match="at most 12288"):
        _render(descriptor_set, max_header_bytes=16_384)


def _identity_variable(route: dict[str, Any]) -> str:
    """The variable of Envoy's environment a route's identity header is read from."""
    [added] = route["request_headers_to_add"]
    assert added["header"]["key"] == IDENTITY_HEADER
    assert added["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    value: str = added["header"]["value"]
    assert value.startswith("%ENVIRONMENT(") and value.endswith(")%"), value
    return value.removeprefix("%ENVIRONMENT(").removesuffix(")%")


def test_rpc_routes_carry_their_own_services_identity_from_envoys_environment(
    descriptor_set: Path,
) -> None:
    """Review of 2026-12-05: every route sent the one secret every service held, so any
    service (a compromised kyc pod) could vouch for a client address at any other. Each route
    now sends its own service's secret (a server stream's route, on the streams cluster, too),
    and an empty variable still sends the header (`keep_empty_value`), which the service
    then says it does not believe."""
    contract = load_contract(descriptor_set)
    routes = _routes(_render(descriptor_set))
    rpcs = contract.routed_rpcs()

    by_upstream: dict[str, set[str]] = {}
    for rpc in rpcs:
        route = routes[rpc.full_name]
        upstream = contract.service_of(rpc).upstream
        by_upstream.setdefault(upstream, set()).add(_identity_variable(route))
        assert route["request_headers_to_add"][0]["keep_empty_value"] is True
    assert by_upstream == {
        upstream: {f"{GATEWAY_SECRET_ENV_PREFIX}_{upstream.upper()}"}
        for upstream in ("auth", "wallet", "transfer", "kyc")
    }
    assert _identity_variable(routes["vaultpay.auth.v1.AuthService.Login"]) == (
        "VAULTPAY_GATEWAY_SECRET_AUTH"
    )
    watch = routes["vaultpay.wallet.v1.WalletService.WatchNotifications"]
    assert watch["route"]["cluster"] == "wallet_streams"
    assert _identity_variable(watch) == "VAULTPAY_GATEWAY_SECRET_WALLET"
    assert gateway_secret_env("kyc") == "VAULTPAY_GATEWAY_SECRET_KYC"
    # Nothing reads the old shared variable any more.
    assert f"%ENVIRONMENT({GATEWAY_SECRET_ENV_PREFIX})%" not in json.dumps(_render(descriptor_set))
    without = _routes(_render(descriptor_set, identity_secret_env_prefix=None))
    assert without["vaultpay.auth.v1.AuthService.Login"]["request_headers_to_remove"] == [
        IDENTITY_HEADER
    ]


def test_a_prefix_is_checked_as_a_variable_name_for_every_upstream(descriptor_set: Path) -> None:
    with pytest.raises(SettingsError, match="not an environment variable name"):
        _render(descriptor_set, identity_secret_env_prefix="VAULTPAY GATEWAY")
    with pytest.raises(SettingsError, match="not an environment variable name"):
        GatewaySettings(
            descriptor_set=descriptor_set,
            upstreams={**DEFAULT_UPSTREAMS, "a-b": HostPort("127.0.0.1", 1)},
        )
    with pytest.raises(SettingsError, match="share a secret variable"):
        GatewaySettings(
            descriptor_set=descriptor_set,
            upstreams={**DEFAULT_UPSTREAMS, "Auth": HostPort("127.0.0.1", 1)},
        )


_SECRETS = {
    f"VAULTPAY_GATEWAY_SECRET_{name}": f"{name.lower()}-own-gateway-secret-0123456789abcdef"
    for name in ("AUTH", "WALLET", "TRANSFER", "KYC")
}


def test_envoys_environment_needs_a_distinct_secret_per_service_and_not_the_shared_one(
    descriptor_set: Path,
) -> None:
    settings = GatewaySettings(descriptor_set=descriptor_set)

    assert identity_env_problems(settings, _SECRETS) == []
    assert (
        identity_env_problems(GatewaySettings(descriptor_set, identity_secret_env_prefix=None), {})
        == []
    )
    shared = identity_env_problems(settings, {"VAULTPAY_GATEWAY_SECRET": "x" * 40})
    assert "VAULTPAY_GATEWAY_SECRET is set" in shared[0]
    assert len(shared) == 5  # and each service's own is missing
    alongside = identity_env_problems(settings, {**_SECRETS, "VAULTPAY_GATEWAY_SECRET": "x" * 40})
    assert len(alongside) == 1
    kyc_as_transfer = {
        **_SECRETS,
        "VAULTPAY_GATEWAY_SECRET_TRANSFER": _SECRETS["VAULTPAY_GATEWAY_SECRET_KYC"],
    }
    [same] = identity_env_problems(settings, kyc_as_transfer)
    assert "the same as" in same and "of its own" in same
    assert _SECRETS["VAULTPAY_GATEWAY_SECRET_KYC"] not in same
    [short] = identity_env_problems(settings, {**_SECRETS, "VAULTPAY_GATEWAY_SECRET_KYC": "k"})
    assert f"VAULTPAY_GATEWAY_SECRET_KYC is shorter than {MIN_GATEWAY_SECRET_LENGTH}" in short


@pytest.mark.parametrize(
    "environment",
    [
        {"VAULTPAY_GATEWAY_SECRET": "x" * 40},
        {**_SECRETS, "VAULTPAY_GATEWAY_SECRET": "x" * 40},
        {"VAULTPAY_GATEWAY_SECRET_AUTH": "a" * 40},
    ],
    ids=["the shared one alone", "the shared one beside", "one service's alone"],
)
def test_the_generator_refuses_gateway_secrets_envoy_would_send_wrongly(
    descriptor_set: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environment: dict[str, str],
) -> None:
    """Run by hand beside Envoy (the gateway README's way), the generator's environment is
    Envoy's: the old shared variable is refused, never used for every service."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "envoy.json"

    code = main(["--descriptor", str(descriptor_set), "--out", str(out)])

    assert code == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert "VAULTPAY_GATEWAY_SECRET" in err
    assert "x" * 40 not in err and "a" * 40 not in err


def test_the_generator_renders_beside_a_secret_per_service(
    descriptor_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _SECRETS.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "envoy.json"

    assert main(["--descriptor", str(descriptor_set), "--out", str(out)]) == 0
    for value in _SECRETS.values():
        assert value not in out.read_text()


def test_the_old_single_variable_flag_is_refused_with_a_word(
    descriptor_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--descriptor", str(descriptor_set), "--out", "x.json"]
    with pytest.raises(SystemExit):
        parse_settings([*argv, "--identity-secret-env", "VAULTPAY_GATEWAY_SECRET"])
    assert "--identity-secret-env-prefix" in capsys.readouterr().err
    settings, _, _ = parse_settings([*argv, "--identity-secret-env-prefix", "GW_SECRET"])
    assert settings.identity_secret_env("wallet") == "GW_SECRET_WALLET"
    assert parse_settings([*argv, "--no-identity"])[0].identity_secret_env("auth") is None


def test_no_client_address_counts_as_internal(descriptor_set: Path) -> None:
    """An internal client keeps the x-envoy-external-address it sends, which the services then
    record as its address. The public listener pins its internal addresses to the unspecified
    ones (no connection's source), and not to an empty list: Envoy 1.40 reads an
    internal_address_config without CIDR ranges as RFC 1918 and 127.0.0.1 (tests/gateway/
    test_gateway_hardening.py: a loopback client's forged address)."""
    internal = _public_hcm(_render(descriptor_set))["internal_address_config"]

    assert internal == NO_INTERNAL_ADDRESSES
    assert internal["unix_sockets"] is False
    ranges = [
        ipaddress.ip_network(f"{r['address_prefix']}/{r['prefix_len']}")
        for r in internal["cidr_ranges"]
    ]
    assert ranges, "an empty list falls back to Envoy's RFC 1918 and loopback default"
    assert all(net.num_addresses == 1 and net.network_address.is_unspecified for net in ranges)
    assert {net.version for net in ranges} == {4, 6}


def test_the_admin_interface_can_be_a_private_unix_socket(
    descriptor_set: Path, tmp_path: Path
) -> None:
    socket = tmp_path / "private" / "admin.sock"
    settings = GatewaySettings(
        descriptor_set=descriptor_set,
        admin=UnixSocket(socket),
        ready_listen=HostPort("127.0.0.1", 19902),
    )

    config = json.loads(build_config(settings, tmp_path / "envoy.json").read_text())

    assert config["admin"]["address"] == {"pipe": {"path": str(socket), "mode": 0o600}}
    assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700
    ready = next(x for x in config["static_resources"]["listeners"] if x["name"] == "ready")
    routes = ready["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    (host,) = routes["virtual_hosts"]
    assert host["routes"][0]["match"]["path"] == "/ready"
    assert host["routes"][-1]["direct_response"] == {"status": 404}
    admin = next(c for c in config["static_resources"]["clusters"] if c["name"] == "envoy_admin")
    endpoint = admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": str(socket), "mode": 0o600}}
    with pytest.raises(SettingsError):
        UnixSocket(Path("relative/admin.sock"))
    with pytest.raises(SettingsError):
        UnixSocket(Path("/" + "x" * 120))


def test_cli_takes_a_unix_admin_socket_and_rpc_budgets(
    descriptor_set: Path, tmp_path: Path
) -> None:
    out = tmp_path / "envoy.json"
    code = main(
        [
            "--descriptor",
            str(descriptor_set),
            "--out",
            str(out),
            "--admin",
            f"unix:{tmp_path / 'admin' / 'admin.sock'}",
            "--ready-listen",
            "127.0.0.1:19903",
            "--client-rate-limit",
            "5/10",
            "--rpc-rate-limit",
            "*=600/100",
            "--rpc-rate-limit",
            "vaultpay.wallet.v1.WalletService.ConfirmIp=off",
            "--validate",
        ]
    )

    assert code == 0
    config = json.loads(out.read_text())
    assert "pipe" in config["admin"]["address"]
    client = _filter(config, "envoy.filters.http.local_ratelimit")["descriptors"][0]
    assert client["token_bucket"]["max_tokens"] == 10
    budgets = _filter(config, "vaultpay.rpc_ratelimit")["descriptors"]
    assert {d["entries"][1]["value"] for d in budgets} == (_EXPENSIVE | _MAILS | _HASHES) - {
        "vaultpay.wallet.v1.WalletService.ConfirmIp"
    }
    assert {d["token_bucket"]["max_tokens"] for d in budgets} == {100}


def test_replies_without_a_cache_control_of_their_own_are_no_store(descriptor_set: Path) -> None:
    mutation = _filter(_render(descriptor_set), "envoy.filters.http.header_mutation")

    assert {
        "append": {
            "header": {"key": "cache-control", "value": "no-store"},
            "append_action": "ADD_IF_ABSENT",
        }
    } in mutation["mutations"]["response_mutations"]


def test_the_wrong_audience_mappers_answer_401(descriptor_set: Path) -> None:
    mappers = _public_hcm(_render(descriptor_set))["local_reply_config"]["mappers"]
    to_401 = [m for m in mappers if m.get("status_code") == 401]

    assert len(to_401) == 1
    assert "jwt_authn_access_denied" in json.dumps(to_401[0]["filter"])


def test_envoy_bounds_its_heap_and_connections_and_a_trickling_request(
    descriptor_set: Path, tmp_path: Path
) -> None:
    """Review of 2026-12-04: bodies that trickle in (a byte every few minutes restarts every
    idle timer) could hold 14 MiB buffers each until Envoy's memory ran out: the whole
    request must arrive within the longest RPC timeout (60 s, KYC files) and 15 s, and the
    overload manager acts on the heap before the kernel's OOM killer would."""
    config = _render(descriptor_set, max_heap_bytes=192 * MiB, max_downstream_connections=500)

    assert _public_hcm(config)["request_timeout"] == "75s"
    overload = config["overload_manager"]
    monitors = {m["name"]: m["typed_config"] for m in overload["resource_monitors"]}
    heap = monitors["envoy.resource_monitors.fixed_heap"]
    assert heap["max_heap_size_bytes"] == 192 * MiB
    connections = monitors["envoy.resource_monitors.global_downstream_max_connections"]
    assert connections["max_active_downstream_connections"] == 500
    actions = {a["name"] for a in overload["actions"]}
    assert {
        "envoy.overload_actions.stop_accepting_requests",
        "envoy.overload_actions.reset_high_memory_stream",
        "envoy.overload_actions.reduce_timeouts",
    } <= actions
    out = tmp_path / "envoy.json"
    flags = ["--max-heap-bytes", str(192 * MiB), "--max-connections", "500", "--validate"]
    code = main(["--descriptor", str(descriptor_set), "--out", str(out), *flags])
    assert code == 0  # Envoy accepts it
    assert json.loads(out.read_text())["overload_manager"] == overload


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "gateway.internal"])
def test_the_admin_interface_is_never_bound_beyond_loopback(
    descriptor_set: Path, host: str
) -> None:
    with pytest.raises(SettingsError, match="admin interface"):
        GatewaySettings(descriptor_set=descriptor_set, admin=HostPort(host, 9901))
    GatewaySettings(descriptor_set=descriptor_set, admin=HostPort("::1", 9901))


def test_open_streams_do_not_use_up_a_services_request_budget(descriptor_set: Path) -> None:
    """Review of 2026-12-04: Envoy's default of 1,024 requests in flight per cluster counted
    every open WatchNotifications stream, so a few hundred watching users would have made
    every other wallet call 503."""
    config = _render(descriptor_set)

    services = {"auth", "wallet", "transfer", "kyc"}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert services <= clusters.keys()
    for name in services:
        (thresholds,) = clusters[name]["circuit_breakers"]["thresholds"]
        assert thresholds["max_requests"] >= 20_000, name
