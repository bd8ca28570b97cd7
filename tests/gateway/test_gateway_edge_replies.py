"""Replies the gateway makes itself: CORS preflights, expired tokens, JSON values of the
wrong type. A real Envoy in front of the auth double."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.auth_double import SigningKey
from tests.gateway.conftest import ALLOWED_ORIGIN
from tests.gateway.harness import (
    GatewayUnderTest,
    Reply,
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_gateway_json import BAD_REQUEST, JSON, assert_gateway_error, bearer
from vaultpay_gateway import HostPort

OTHER_ORIGIN = "https://evil.example"


def _preflight(gateway: GatewayUnderTest, origin: str, path: str = "/v1/auth/me") -> Reply:
    return gateway.call(
        "OPTIONS",
        path,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-request-id",
        },
    )


@pytest.mark.parametrize("path", ["/v1/auth/me", "/v1/auth/register", "/v1/wallets/me"])
def test_preflight_from_an_allowed_origin_is_204_with_the_cors_headers(
    gateway: GatewayUnderTest, path: str
) -> None:
    reply = _preflight(gateway, ALLOWED_ORIGIN, path)

    assert reply.status == 204
    assert reply.body == b""
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    methods = {m.strip() for m in reply.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
    allowed = {h.strip() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-request-id"} <= allowed
    assert int(reply.headers["access-control-max-age"]) > 0


def test_another_origin_gets_no_cors_headers(gateway: GatewayUnderTest) -> None:
    preflight = _preflight(gateway, OTHER_ORIGIN)
    simple = gateway.call("GET", "/v1/auth/jwks", headers={"origin": OTHER_ORIGIN})

    assert preflight.status != 204
    assert simple.status == 200
    for reply in (preflight, simple):
        assert not [h for h in reply.headers if h.startswith("access-control-")], reply.headers


def test_a_simple_request_from_an_allowed_origin_is_allowed(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("GET", "/v1/auth/jwks", headers={"origin": ALLOWED_ORIGIN})

    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_an_expired_token_is_401_token_expired(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    # Past the edge's clock skew (30 s), signed with the real key.
    expired = signing_key.token(lifetime=-120)

    reply = gateway.call("GET", "/v1/auth/me", headers=bearer(expired))

    status = assert_gateway_error(reply, 401, 16, "TOKEN_EXPIRED")
    assert "expired" in status["message"].lower()


def test_other_bad_tokens_stay_token_invalid(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    for token in (SigningKey(kid=signing_key.kid).token(), "not.a.jwt"):
        reply = gateway.call("GET", "/v1/auth/me", headers=bearer(token))
        assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")


def _violations(status: dict[str, Any]) -> list[dict[str, str]]:
    bad = [d for d in status["details"] if d["@type"] == BAD_REQUEST]
    assert len(bad) == 1, status
    violations: list[dict[str, str]] = bad[0]["fieldViolations"]
    return violations


def test_a_query_parameter_of_the_wrong_type_is_named(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call("GET", "/v1/admin/users?pageSize=abc", headers=bearer(signing_key.token()))

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert [v["field"] for v in _violations(status)] == ["pageSize"]
    assert "pageSize" in status["message"]
    assert not [h for h in reply.headers if h.startswith("x-vaultpay-")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com", "fullName": 5}, "fullName"),
        ({"email": {"address": "a@example.com"}}, "email"),
        ({"email": ["a@example.com"]}, "email"),  # the body check's, not the transcoder's
    ],
)
def test_a_body_value_of_the_wrong_type_is_400_naming_the_field(
    gateway: GatewayUnderTest, body: dict[str, Any], field: str
) -> None:
    reply = gateway.call("POST", "/v1/auth/register", json.dumps(body), JSON)

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    (violation,) = _violations(status)
    assert violation["field"] == field
    assert violation["description"]
    assert status["message"].startswith(f"{field}: ")


def test_an_object_where_an_enum_belongs_is_named(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call(
        "POST",
        "/v1/admin/users/user-1:setRole",
        json.dumps({"role": {"name": "ROLE_ADMIN"}}),
        {**JSON, **bearer(signing_key.token())},
    )

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert [v["field"] for v in _violations(status)] == ["role"]


@pytest.fixture(scope="module")
def wallet_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
    signing_key: SigningKey,
) -> Iterator[GatewayUnderTest]:
    """A gateway whose wallet upstream is healthy (the auth double answers its health
    checks), so wallet requests reach the transcoder's body conversion instead of a 503."""
    workdir = tmp_path_factory.mktemp("wallet-gateway")
    double = HostPort("127.0.0.1", auth_double.port)
    settings = loopback_settings(workdir, descriptor_set, {"auth": double, "wallet": double})
    running = start_gateway(workdir, settings)
    try:
        running.wait_until_token_accepted(signing_key.token())
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/wallets/me/limits/SEND", {"daily": "100"}, "daily"),
        ("/v1/wallets/me/limits/SEND", {"daily": {"amountMinor": "abc"}}, "daily.amountMinor"),
        ("/v1/wallets/me/limits/SEND", {"daily": {"currencyCode": {}}}, "daily.currencyCode"),
        (
            "/v1/admin/wallets/VPY-ABC123/limits",
            {"limits": [{}, {"monthly": {"amountMinor": 1.5}}]},
            "limits[1].monthly.amountMinor",
        ),
    ],
)
def test_a_nested_value_of_the_wrong_type_is_named_by_its_json_path(
    wallet_gateway: GatewayUnderTest,
    signing_key: SigningKey,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    reply = wallet_gateway.call(
        "PUT", path, json.dumps(body), {**JSON, **bearer(signing_key.token())}
    )

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert [v["field"] for v in _violations(status)] == [field]
