"""JSON clients through a real Envoy in front of the auth double."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt

from tests.gateway.auth_double import SigningKey
from tests.gateway.conftest import ALLOWED_ORIGIN, JWKS_CACHE_SECONDS, MAX_REQUEST_BYTES
from tests.gateway.harness import GatewayUnderTest, Reply, ThreadedAuthDouble

JSON = {"content-type": "application/json"}
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_gateway_error(reply: Reply, http_status: int, code: int, reason: str) -> dict[str, Any]:
    """The reply is a google.rpc.Status JSON made by the gateway, without gRPC headers."""
    assert reply.status == http_status, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert not [h for h in reply.headers if h.startswith("grpc-")]
    status: dict[str, Any] = reply.json()
    assert status["code"] == code
    assert status["message"]
    assert {
        "@type": ERROR_INFO,
        "reason": reason,
        "domain": "vaultpay.gateway",
    } in status["details"]
    return status


def register(
    gateway: GatewayUnderTest, body: dict[str, Any], *, source: str | None = None, **headers: str
) -> Reply:
    return gateway.call(
        "POST", "/v1/auth/register", json.dumps(body), {**JSON, **headers}, source=source
    )


def unsigned_token(kid: str) -> str:
    def segment(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": "vaultpay-auth", "aud": "vaultpay", "sub": "u", "iat": now, "exp": now + 60}
    return f"{segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{segment(claims)}."


def test_public_route_works_without_a_token(gateway: GatewayUnderTest) -> None:
    reply = register(gateway, {"email": "ada@example.com", "password": "pw", "fullName": "Ada"})

    assert reply.status == 200, reply.body
    assert reply.json()["user"]["email"] == "ada@example.com"
    assert not [h for h in reply.headers if h.startswith("grpc-")]


def test_jwks_is_served_as_a_jwk_set(gateway: GatewayUnderTest, signing_key: SigningKey) -> None:
    reply = gateway.call("GET", "/v1/auth/jwks")

    assert reply.status == 200
    assert signing_key.kid in {key["kid"] for key in reply.json()["keys"]}


def test_protected_route_without_token_is_401_status_json(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("GET", "/v1/auth/me")

    assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")


def test_protected_post_without_token_is_401_status_json(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("POST", "/v1/auth/logout", "{}", JSON)

    assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")


def test_valid_eddsa_token_with_kid_passes(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call("GET", "/v1/auth/me", headers=bearer(signing_key.token()))

    assert reply.status == 200, reply.body
    seen = json.loads(reply.json()["user"]["fullName"])
    assert seen["bearer"] == "True", "the token must still reach the service"


def test_tokens_the_edge_must_refuse(gateway: GatewayUnderTest, signing_key: SigningKey) -> None:
    stranger = SigningKey(kid=signing_key.kid)
    refused = {
        "signed with another key": stranger.token(),
        "alg none": unsigned_token(signing_key.kid),
        "HS256 keyed with the kid": jwt.encode(
            {"iss": "vaultpay-auth", "aud": "vaultpay", "exp": int(time.time()) + 60},
            signing_key.kid * 4,
            algorithm="HS256",
            headers={"kid": signing_key.kid},
        ),
        "other issuer": signing_key.token(iss="someone-else"),
        "garbage": "not.a.jwt",
    }
    for case, token in refused.items():
        reply = gateway.call("GET", "/v1/auth/me", headers=bearer(token))
        assert reply.status == 401, case
        assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")


def test_access_token_query_parameter_is_not_a_credential(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    token = signing_key.token()

    reply = gateway.call("GET", f"/v1/auth/me?access_token={token}")

    assert reply.status != 200
    assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")


def test_rotated_signing_key_is_picked_up(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble
) -> None:
    rotated = SigningKey()
    auth_double.servicer.keys.insert(0, rotated)

    gateway.wait_until_token_accepted(rotated.token(), timeout=10)


def test_fetched_keys_outlive_a_failing_jwks_refresh(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, signing_key: SigningKey
) -> None:
    """Keys from the background fetch never expire on their own: a refresh that fails (auth
    down) keeps the last good set, where an on-demand fetch would start refusing tokens."""
    calls_before = auth_double.servicer.jwks_calls
    auth_double.servicer.jwks_down = True
    try:
        # Two calls since: the second comes only after the first was answered UNAVAILABLE
        # (a retry or the next refresh), so at least one refresh attempt has failed. The
        # refresh runs every JWKS_CACHE_SECONDS; the deadline only guards against a hang.
        _poll_until(
            lambda: auth_double.servicer.jwks_calls >= calls_before + 2,
            within=30 + 4 * JWKS_CACHE_SECONDS,
            what="a background JWKS refresh failing",
        )
        reply = gateway.call("GET", "/v1/auth/me", headers=bearer(signing_key.token()))
    finally:
        auth_double.servicer.jwks_down = False

    assert reply.status == 200, reply.body


def _poll_until(check: Callable[[], bool], *, within: float, what: str) -> None:
    """Polls `check` every 50 ms until it holds; fails at the deadline (never a fixed sleep)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.05)


def test_unknown_path_is_404_status_json(gateway: GatewayUnderTest) -> None:
    assert_gateway_error(gateway.call("GET", "/v1/nope"), 404, 5, "NOT_FOUND")
    assert_gateway_error(gateway.call("DELETE", "/v1/auth/register"), 404, 5, "NOT_FOUND")


def test_internal_service_path_is_404_even_with_a_token(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call(
        "POST",
        "/vaultpay.auth.v1.AuthInternalService/IntrospectToken",
        "{}",
        {**JSON, **bearer(signing_key.token())},
    )

    assert_gateway_error(reply, 404, 5, "NOT_FOUND")


def test_service_error_details_come_back_as_status_json(gateway: GatewayUnderTest) -> None:
    reply = register(gateway, {"email": "not-an-email", "password": "pw", "fullName": "A"})

    assert reply.status == 400
    assert reply.headers["content-type"] == "application/json"
    assert not [h for h in reply.headers if h.startswith("grpc-")]
    status = reply.json()
    assert status["code"] == 3
    info = next(d for d in status["details"] if d["@type"] == ERROR_INFO)
    assert (info["reason"], info["domain"]) == ("INVALID_EMAIL", "vaultpay.auth")
    bad_request = next(d for d in status["details"] if d["@type"] == BAD_REQUEST)
    assert bad_request["fieldViolations"][0]["field"] == "email"


def test_malformed_json_is_400_status_json(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("POST", "/v1/auth/register", "{not json", JSON)

    assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")


def test_wrongly_typed_field_is_400_status_json(gateway: GatewayUnderTest) -> None:
    reply = register(gateway, {"email": {"nested": 1}})

    assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")


def test_unknown_query_parameter_is_400_status_json_naming_it(gateway: GatewayUnderTest) -> None:
    status = assert_gateway_error(
        gateway.call("GET", "/v1/auth/jwks?debug=1"), 400, 3, "INVALID_REQUEST"
    )
    assert status["message"] == "debug: is not a parameter of this request", status
    assert {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [
            {"field": "debug", "description": "is not a parameter of this request"}
        ],
    } in status["details"]
    assert "vaultpay." not in json.dumps(status).replace("vaultpay.gateway", "")  # no type name


def test_an_unknown_query_parameter_with_a_long_name_is_not_echoed(
    gateway: GatewayUnderTest,
) -> None:
    name = "x" * 65
    status = assert_gateway_error(
        gateway.call("GET", f"/v1/auth/jwks?{name}=1"), 400, 3, "INVALID_REQUEST"
    )
    assert name not in json.dumps(status)


def test_unknown_body_field_is_400_status_json(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble
) -> None:
    """Envoy's transcoder would drop the key (envoyproxy/envoy#46623); the gateway's JSON body
    check refuses it before routing. More cases in test_gateway_json_body.py."""
    calls_before = auth_double.servicer.register_calls

    reply = register(gateway, {"email": "a@example.com", "isAdmin": True})

    status = assert_gateway_error(reply, 400, 3, "UNKNOWN_FIELD")
    bad_request = next(d for d in status["details"] if d["@type"] == BAD_REQUEST)
    assert bad_request["fieldViolations"] == [{"field": "isAdmin", "description": "unknown field"}]
    assert auth_double.servicer.register_calls == calls_before


def test_body_over_the_cap_is_413_status_json(gateway: GatewayUnderTest) -> None:
    reply = register(gateway, {"email": "a@example.com", "fullName": "x" * MAX_REQUEST_BYTES})

    assert_gateway_error(reply, 413, 8, "PAYLOAD_TOO_LARGE")


def test_client_address_and_request_id_are_set_by_the_gateway(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    spoofed = {"x-envoy-external-address": "203.0.113.9", "x-request-id": "client-chosen"}

    reply = gateway.call("GET", "/v1/auth/me", headers={**bearer(signing_key.token()), **spoofed})

    assert reply.status == 200
    seen = json.loads(reply.json()["user"]["fullName"])
    assert seen["x-envoy-external-address"] == "127.0.0.1"
    assert seen["x-request-id"] == reply.headers["x-request-id"]
    assert seen["x-request-id"] != "client-chosen"


def test_cors_preflight_for_an_allowed_origin(gateway: GatewayUnderTest) -> None:
    reply = gateway.call(
        "OPTIONS",
        "/v1/auth/me",
        headers={
            "origin": ALLOWED_ORIGIN,
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        },
    )

    assert reply.status == 204
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in reply.headers["access-control-allow-headers"]
    assert "x-request-id" in reply.headers["access-control-allow-headers"]


def test_cors_response_exposes_request_id_and_retry_after(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("GET", "/v1/auth/jwks", headers={"origin": ALLOWED_ORIGIN})

    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert reply.headers["access-control-expose-headers"] == "x-request-id, retry-after"


def test_cors_disallowed_origin_gets_no_allow_origin(gateway: GatewayUnderTest) -> None:
    preflight = gateway.call(
        "OPTIONS",
        "/v1/auth/me",
        headers={"origin": "https://evil.test", "access-control-request-method": "GET"},
    )
    simple = gateway.call("GET", "/v1/auth/jwks", headers={"origin": "https://evil.test"})

    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


def test_access_log_is_json_with_request_id_and_without_the_token(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    token = signing_key.token()
    forged_method = {"x-envoy-original-method": "DELETE"}  # clients cannot choose what is logged
    reply = gateway.call("GET", "/v1/auth/me", headers={**bearer(token), **forged_method})
    gateway.call("GET", f"/v1/auth/me?access_token={token}")
    request_id = reply.headers["x-request-id"]

    entry = gateway.logged(request_id)

    assert entry["method"] == "GET"
    assert entry["path"] == "/v1/auth/me"
    assert entry["rpc"] == "/vaultpay.auth.v1.AuthService/GetMe"
    assert entry["status"] == 200
    assert entry["grpc_status"] == 0
    assert entry["upstream_cluster"] == "auth"
    assert isinstance(entry["duration_ms"], int)
    log = gateway.access_log.read_text()
    assert token not in log
    assert token.split(".")[2] not in log
    assert "Bearer" not in log


def test_public_rpc_of_another_service_skips_jwt_and_reaches_its_cluster(
    gateway: GatewayUnderTest,
) -> None:
    """ResetPin is public; the wallet upstream is down in this setup, so 503, not 401."""
    reply = gateway.call("POST", "/v1/wallets/pin:reset", "{}", JSON)

    assert_gateway_error(reply, 503, 14, "UNAVAILABLE")
    entry = gateway.logged(reply.headers["x-request-id"])
    assert entry["upstream_cluster"] == "wallet"
    assert entry["rpc"] == "/vaultpay.wallet.v1.WalletService/ResetPin"


def test_public_path_under_another_method_still_needs_a_token(gateway: GatewayUnderTest) -> None:
    """GET /v1/wallets/pin:reset is LookupWallet(wallet_id="pin:reset"), which is protected."""
    reply = gateway.call("GET", "/v1/wallets/pin:reset")

    assert reply.status in (401, 404), reply.body
    assert reply.status != 503


def test_protected_rpc_of_another_service_needs_a_token(gateway: GatewayUnderTest) -> None:
    assert_gateway_error(gateway.call("GET", "/v1/wallets/me"), 401, 16, "TOKEN_INVALID")


def test_json_reply_larger_than_the_transcoders_default_buffer_is_delivered(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    padded = {**bearer(signing_key.token()), "x-test-reply-padding": "40000"}

    reply = gateway.call("GET", "/v1/auth/me", headers=padded)

    assert reply.status == 200, reply.body[:200]
    assert len(reply.json()["user"]["deactivationReason"]) == 40_000
