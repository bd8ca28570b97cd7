"""Unknown JSON body fields are refused at the edge (json_body.py), through a real Envoy."""

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
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_gateway_json import (
    BAD_REQUEST,
    JSON,
    assert_gateway_error,
    bearer,
    register,
)
from vaultpay_gateway import HostPort

TOP_UP = "/v1/transactions:topUp"
BIG_CAP = 128 * 1024


def violations(status: dict[str, Any]) -> list[dict[str, str]]:
    bad_request = next(d for d in status["details"] if d["@type"] == BAD_REQUEST)
    found: list[dict[str, str]] = bad_request["fieldViolations"]
    return found


def assert_unknown_fields(reply: Any, *fields: str) -> dict[str, Any]:
    status = assert_gateway_error(reply, 400, 3, "UNKNOWN_FIELD")
    assert [v["field"] for v in violations(status)] == list(fields)
    return status


def test_unknown_nested_field_is_400_before_routing(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    """transfer is down in this setup: a body that passes the check gets 503 from routing."""
    token = bearer(signing_key.token())
    good = {"requestId": "r-1", "amount": {"currencyCode": "INR", "amount_minor": "500"}}
    bad = {"requestId": "r-1", "amount": {"currencyCode": "INR", "units": 5}}

    passed = gateway.call("POST", TOP_UP, json.dumps(good), {**JSON, **token})
    refused = gateway.call("POST", TOP_UP, json.dumps(bad), {**JSON, **token})

    assert_gateway_error(passed, 503, 14, "UNAVAILABLE")
    status = assert_unknown_fields(refused, "amount.units")
    assert status["message"] == "unknown field in the request body: amount.units"
    assert violations(status) == [{"field": "amount.units", "description": "unknown field"}]


def test_a_list_for_a_single_value_is_400_naming_the_field(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    """The transcoder names at most the parent ("amount: Proto field is not repeating") or
    nothing; the check names the field, and a repeated field still takes its list."""
    token = bearer(signing_key.token())
    bad = {
        "requestId": "r-1",
        "amount": {"currencyCode": ["INR"], "amountMinor": []},
        "paymentMethod": ["PAYMENT_METHOD_UPI"],
    }

    reply = gateway.call("POST", TOP_UP, json.dumps(bad), {**JSON, **token})

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert violations(status) == [
        {"field": f, "description": "a list where a single value is expected"}
        for f in ("amount.currencyCode", "amount.amountMinor", "paymentMethod")
    ]
    assert status["message"].startswith(
        "amount.currencyCode: a list where a single value is expected; amount.amountMinor: "
    )
    mixed = gateway.call(
        "POST", TOP_UP, json.dumps({"zz": 1, "paymentMethod": ["x"]}), {**JSON, **token}
    )
    assert json.loads(mixed.body)["message"] == (
        "zz: unknown field; paymentMethod: a list where a single value is expected"
    )
    limits = {"reason": "r", "limits": [{"action": "LIMIT_ACTION_SEND"}]}
    passed = gateway.call(
        "PUT", "/v1/admin/wallets/VPY-ABC123/limits", json.dumps(limits), {**JSON, **token}
    )
    assert passed.status != 400, passed.body


def test_known_fields_pass_in_both_spellings(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble
) -> None:
    calls_before = auth_double.servicer.register_calls

    camel = register(gateway, {"email": "a@example.com", "password": "pw", "fullName": "Ada"})
    snake = register(gateway, {"email": "b@example.com", "password": "pw", "full_name": "Bob"})
    escaped = gateway.call(
        "POST", "/v1/auth/register", '{"email": "c@example.com", "full\\u005fname": "Cy"}', JSON
    )

    assert [r.status for r in (camel, snake, escaped)] == [200, 200, 200]
    assert [r.json()["user"]["fullName"] for r in (camel, snake, escaped)] == ["Ada", "Bob", "Cy"]
    assert auth_double.servicer.register_calls == calls_before + 3


def test_every_offending_key_is_listed_with_its_path(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    """A repeated message element, and a field the URL path binds (refused in the body)."""
    body = {"walletId": "VPY-OTHER", "reason": "r", "limits": [{}, {"foo": 1}], "zz": None}

    reply = gateway.call(
        "PUT",
        "/v1/admin/wallets/VPY-ABC123/limits",
        json.dumps(body),
        {**JSON, **bearer(signing_key.token())},
    )

    status = assert_unknown_fields(reply, "walletId", "limits[1].foo", "zz")
    assert violations(status)[0]["description"] == "set by the URL path, not by the body"


def test_token_is_checked_before_the_body(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("POST", TOP_UP, '{"isAdmin": true}', JSON)

    assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")


@pytest.mark.parametrize("content_type", ["text/plain", "application/grpc-web", None])
def test_other_content_types_are_refused_before_the_check(
    gateway: GatewayUnderTest, content_type: str | None
) -> None:
    """The transcoder transcodes every request that is not native gRPC, whatever it says:
    a body not sent as JSON is refused (415, test_gateway_media_type.py)."""
    headers = {} if content_type is None else {"content-type": content_type}

    reply = gateway.call("POST", "/v1/auth/register", '{"isAdmin": true}', headers)

    assert reply.status == 415, reply.body


def test_body_sent_to_a_binding_without_body_is_checked(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    """Envoy decodes a body sent with GET into the request message as well."""
    token = {**JSON, **bearer(signing_key.token())}

    assert_unknown_fields(gateway.call("GET", "/v1/auth/me", '{"role": "ADMIN"}', token), "role")
    assert gateway.call("GET", "/v1/auth/me", "{}", token).status == 200


@pytest.mark.parametrize(
    "body",
    [
        '{email: "a@example.com", isAdmin: true}',
        "{'email': 'a@example.com', 'isAdmin': true}",
        '{"email": "a@example.com", "isAdmin": true,}',
        '{"fullName": ' + "[" * 200 + "]" * 200 + "}",
        '{"fullName": "a\\ud800b"}',
        '{"fullName": "a\\udc00\\ud800b"}',
    ],
    ids=[
        "unquoted keys",
        "single quotes",
        "trailing comma",
        "too deep",
        "lone high surrogate",
        "surrogates out of order",
    ],
)
def test_json_the_transcoder_would_tolerate_is_refused(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, body: str
) -> None:
    """Envoy's JSON parser is lenient; a check that skipped what it cannot parse would let
    `{isAdmin: true}` through unchecked."""
    calls_before = auth_double.servicer.register_calls

    reply = gateway.call("POST", "/v1/auth/register", body, JSON)

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert status["message"].startswith("the request body is not valid JSON")
    assert "\n" not in status["message"] and "^" not in status["message"]  # no body excerpt
    assert auth_double.servicer.register_calls == calls_before


def test_reported_keys_are_escaped_into_valid_json(gateway: GatewayUnderTest) -> None:
    key = 'a"b\\c\n\u00e9'
    body = b'{"' + json.dumps(key)[1:-1].encode() + b'": 1, "\xff": 2}'

    reply = gateway.call("POST", "/v1/auth/register", body, JSON)

    status = assert_unknown_fields(reply, key, "\ufffd")
    assert len(violations(status)) == 2


def test_many_unknown_fields_are_capped(gateway: GatewayUnderTest) -> None:
    reply = register(gateway, {f"k{i}": i for i in range(25)})

    status = assert_gateway_error(reply, 400, 3, "UNKNOWN_FIELD")
    assert len(violations(status)) == 10
    assert status["message"].endswith(", ...")


def test_refusal_keeps_cors_and_request_id(gateway: GatewayUnderTest) -> None:
    reply = gateway.call(
        "POST", "/v1/auth/register", '{"isAdmin": true}', {**JSON, "origin": ALLOWED_ORIGIN}
    )

    assert_unknown_fields(reply, "isAdmin")
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert reply.headers["x-request-id"]


# --- bodies larger than Envoy's per-connection buffer (32 KiB) ---


@pytest.fixture(scope="module")
def big_body_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
) -> Iterator[GatewayUnderTest]:
    workdir = tmp_path_factory.mktemp("gateway-big-body")
    settings = loopback_settings(
        workdir,
        descriptor_set,
        {"auth": HostPort("127.0.0.1", auth_double.port)},
        max_request_bytes=BIG_CAP,
    )
    running = start_gateway(workdir, settings)
    try:
        yield running
    finally:
        running.stop()


def test_bodies_up_to_the_cap_are_checked_and_pass(big_body_gateway: GatewayUnderTest) -> None:
    # The password is not echoed back: the reply stays small.
    filler = "x" * (BIG_CAP - 1024)

    passed = register(big_body_gateway, {"email": "a@example.com", "password": filler})
    refused = register(big_body_gateway, {"password": filler, "isAdmin": True})
    too_big = register(big_body_gateway, {"password": filler + "x" * 2048})

    assert passed.status == 200, passed.body
    assert_unknown_fields(refused, "isAdmin")
    assert_gateway_error(too_big, 413, 8, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    "content_type",
    ["application/grpc; charset=utf-8", "application/grpc;x", "Application/GRPC;x"],
)
def test_a_content_type_that_only_looks_like_grpc_is_still_checked(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, content_type: str
) -> None:
    calls_before = auth_double.servicer.register_calls
    body = json.dumps({"email": "eve@example.com", "password": "pw", "isAdmin": True})

    reply = gateway.call("POST", "/v1/auth/register", body, {"content-type": content_type})

    # Not native gRPC, so not JSON either: refused before the transcoder (415).
    assert reply.status == 415, reply.body
    assert auth_double.servicer.register_calls == calls_before


def test_a_query_parameter_cannot_override_a_path_field(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call(
        "GET", "/v1/wallets/VPY-AAAAAA?walletId=VPY-BBBBBB", headers=bearer(signing_key.token())
    )

    status = assert_gateway_error(reply, 400, 3, "UNKNOWN_FIELD")
    assert violations(status) == [
        {"field": "walletId", "description": "set by the URL path, not by the query"}
    ]


def test_a_nul_byte_in_the_body_is_refused(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble
) -> None:
    calls_before = auth_double.servicer.register_calls

    reply = gateway.call(
        "POST", "/v1/auth/register", b'{"email":"a@b.c","fullName":"A\x00B"}', JSON
    )

    assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert auth_double.servicer.register_calls == calls_before


def test_a_body_with_too_many_values_is_refused(
    big_body_gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble
) -> None:
    calls_before = auth_double.servicer.register_calls
    body = '{"email":[' + ",".join(["0"] * 25_000) + "]}"  # ~50 KB, over the value budget

    reply = big_body_gateway.call("POST", "/v1/auth/register", body, JSON)

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert "too many values" in status["message"]
    assert auth_double.servicer.register_calls == calls_before
