"""A value of the wrong type is explained in plain words, naming the field by its JSON path.

QA of 2026-12-03 found the transcoder's text reaching JSON clients with protobuf internals:
`amount.amountMinor: invalid value "9223372036854775808" for type TYPE_INT64`, `... for type
vaultpay.type.v1.Money`, and for `?startTime=yesterday` the time parser's text with the proto
field name inside (`Field 'start_time', Illegal timestamp format; ...`). jwt_authn's texts
("Jwt is missing", "Jwt verification fails") were the message of 401 replies. A real Envoy,
every upstream the auth double (healthy, so requests reach the transcoder's conversion).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import (
    GatewayUnderTest,
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_gateway_json import BAD_REQUEST, JSON, assert_gateway_error, bearer
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_gateway import HostPort, load_contract
from vaultpay_gateway.contract import EnumValue
from vaultpay_gateway.replies import ENUM_LIST_MAX_NAMES, TYPE_WORDS, enum_words

INT32 = "must be a whole number from -2147483648 to 2147483647"
INT64 = (
    "must be a whole number from -9223372036854775808 to 9223372036854775807"
    ' (a JSON number, or a string of a whole number such as "100")'
)
TIME = "must be an RFC 3339 time such as 2026-12-03T10:00:00Z"
NOT_A_VALUE = "is not one of this field's values"
TOP_UP = "/v1/transactions:topUp"
SET_PIN = "/v1/wallets/me/pin"
REGISTER = "/v1/auth/register"
SUBMIT_KYC = "/v1/kyc/submissions"


@pytest.fixture(scope="module")
def typed_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
    signing_key: SigningKey,
) -> Iterator[GatewayUnderTest]:
    workdir = tmp_path_factory.mktemp("typed-gateway")
    double = HostPort("127.0.0.1", auth_double.port)
    upstreams = dict.fromkeys(load_contract(descriptor_set).upstreams, double)
    running = start_gateway(workdir, loopback_settings(workdir, descriptor_set, upstreams))
    try:
        running.wait_until_token_accepted(signing_key.token())
        yield running
    finally:
        running.stop()


# (method, path, JSON body or None, the field's JSON path, its proto name, the description).
CASES: list[tuple[str, str, Any, str, str, str]] = [
    # The QA report's cases.
    (
        "POST",
        TOP_UP,
        {"amount": {"currencyCode": "INR", "amountMinor": "9223372036854775808"}},
        "amount.amountMinor",
        "amount_minor",
        INT64,
    ),
    ("POST", TOP_UP, {"amount": "100"}, "amount", "amount", "must be an object"),
    (
        "POST",
        TOP_UP,
        {"paymentMethod": "PAYMENT_METHOD_BOGUS"},
        "paymentMethod",
        "payment_method",
        f"{NOT_A_VALUE} (PAYMENT_METHOD_UPI, PAYMENT_METHOD_CARD, PAYMENT_METHOD_NET_BANKING)",
    ),
    ("POST", SET_PIN, {"pin": 2468}, "pin", "pin", "must be a string"),
    ("GET", "/v1/transactions?startTime=yesterday", None, "startTime", "start_time", TIME),
    (
        "GET",
        "/v1/transactions?type=credit",
        None,
        "type",
        "type",
        f"{NOT_A_VALUE} (TRANSACTION_TYPE_CREDIT, TRANSACTION_TYPE_DEBIT)",
    ),
    # More of each kind.
    ("POST", TOP_UP, {"amount": {"amountMinor": 1.5}}, "amount.amountMinor", "amount_minor", INT64),
    (
        "POST",
        TOP_UP,
        {"amount": {"amountMinor": True}},
        "amount.amountMinor",
        "amount_minor",
        INT64,
    ),
    ("POST", TOP_UP, {"amount": 100}, "amount", "amount", "must be an object"),
    ("POST", TOP_UP, {"requestId": True}, "requestId", "request_id", "must be a string"),
    (
        "POST",
        SET_PIN,
        {"pin": "2468", "pinConfirmation": False},
        "pinConfirmation",
        "pin_confirmation",
        "must be a string",
    ),
    (
        "POST",
        SUBMIT_KYC,
        {"documentFile": "!!!"},
        "documentFile",
        "document_file",
        "must be a string of base64-encoded bytes",
    ),
    (
        "GET",
        "/v1/transactions?startTime=2026-12-03T10:00:00",
        None,
        "startTime",
        "start_time",
        TIME,
    ),
    (
        "GET",
        "/v1/transactions?startTime=2026-13-03T10:00:00Z",
        None,
        "startTime",
        "start_time",
        TIME,
    ),
    ("GET", "/v1/admin/auth-audit-logs?endTime=soon", None, "endTime", "end_time", TIME),
    ("GET", "/v1/transactions?pageSize=99999999999", None, "pageSize", "page_size", INT32),
    ("GET", "/v1/admin/users?active=maybe", None, "active", "active", "must be true or false"),
    (
        "GET",
        "/v1/admin/users?role=ROLE_X",
        None,
        "role",
        "role",
        f"{NOT_A_VALUE} (ROLE_USER, ROLE_MODERATOR, ROLE_ADMIN, ROLE_SUPER_ADMIN)",
    ),
]


def _violations(status: dict[str, Any]) -> list[dict[str, str]]:
    (bad_request,) = [d for d in status["details"] if d["@type"] == BAD_REQUEST]
    violations: list[dict[str, str]] = bad_request["fieldViolations"]
    return violations


def _call(gateway: GatewayUnderTest, token: str, method: str, path: str, body: Any) -> Any:
    headers = {**JSON, **bearer(token)}
    return gateway.call(method, path, None if body is None else json.dumps(body), headers)


def assert_plain(text: str, proto_name: str) -> None:
    """No scalar type name (`TYPE_INT64`; an enum value such as TRANSACTION_TYPE_CREDIT is a
    name the client may send), no message or enum type name, no proto field name."""
    assert not re.search(r"\bTYPE_[A-Z0-9]+", text), text
    assert "vaultpay." not in text, text
    assert "google.protobuf" not in text, text
    assert "for type" not in text and "invalid value" not in text, text
    assert not re.search(r"\b[a-z0-9]+_[a-z0-9_]+\b", text), text  # no snake_case at all
    assert "_" not in proto_name or proto_name not in text, text


@pytest.mark.parametrize(("method", "path", "body", "field", "proto_name", "description"), CASES)
def test_a_value_of_the_wrong_type_says_what_the_field_must_be(
    typed_gateway: GatewayUnderTest,
    signing_key: SigningKey,
    method: str,
    path: str,
    body: Any,
    field: str,
    proto_name: str,
    description: str,
) -> None:
    reply = _call(typed_gateway, signing_key.token(), method, path, body)

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert _violations(status) == [{"field": field, "description": description}]
    assert status["message"] == f"{field}: {description}"
    for text in (status["message"], description):
        assert_plain(text, proto_name)


@pytest.mark.parametrize(
    "value",
    ["PAYMENT_METHOD_" + "X" * 5000, "UPI\n\u0000\u001b[31m\u2028", 'a"b\\c'],
)
def test_the_value_sent_is_not_echoed(
    typed_gateway: GatewayUnderTest, signing_key: SigningKey, value: str
) -> None:
    reply = _call(typed_gateway, signing_key.token(), "POST", TOP_UP, {"paymentMethod": value})

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert [v["field"] for v in _violations(status)] == ["paymentMethod"]
    assert len(reply.body) < 1000
    for part in ("XXXX", "UPI\n", "\\u0000", "\\u001b", "[31m", "\\u2028", 'a\\"b'):
        assert part not in reply.body.decode(), reply.body


def test_every_scalar_and_well_known_kind_has_words() -> None:
    for kind, words in TYPE_WORDS.items():
        assert words.startswith(("must be ", "is not ")), kind
        assert_plain(words, "")


def test_enum_lists_leave_out_unspecified_and_long_lists() -> None:
    def values(prefix: str, count: int) -> tuple[EnumValue, ...]:
        rest = (EnumValue(f"{prefix}_{i}", i) for i in range(1, count + 1))
        return (EnumValue(f"{prefix}_UNSPECIFIED", 0), *rest)

    words = enum_words(
        {
            "vaultpay.demo.v1.Short": values("SHORT", 2),
            "vaultpay.demo.v1.Long": values("LONG", ENUM_LIST_MAX_NAMES + 1),
            "vaultpay.demo.v1.Zero": (EnumValue("ZERO_NONE", 0), EnumValue("ZERO_ONE", 1)),
            "google.protobuf.FieldDescriptorProto.Type": values("TYPE", 2),
        }
    )

    assert words == {
        "vaultpay.demo.v1.Short": f"{NOT_A_VALUE} (SHORT_1, SHORT_2)",
        "vaultpay.demo.v1.Long": NOT_A_VALUE,
        "vaultpay.demo.v1.Zero": f"{NOT_A_VALUE} (ZERO_NONE, ZERO_ONE)",
        "google.protobuf.FieldDescriptorProto.Type": NOT_A_VALUE,
    }


# jwt_authn's texts became plain words; the reasons are as they were.
def test_a_missing_token_is_said_plainly(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("GET", "/v1/auth/me")

    status = assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")
    assert status["message"] == "the request has no access token"


def test_an_expired_token_is_said_plainly(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call("GET", "/v1/auth/me", headers=bearer(signing_key.token(lifetime=-120)))

    status = assert_gateway_error(reply, 401, 16, "TOKEN_EXPIRED")
    assert status["message"] == "the access token has expired"


@pytest.mark.parametrize(
    "case", ["garbage", "bad header", "another key", "other issuer", "other audience"]
)
def test_an_invalid_token_is_said_plainly(
    gateway: GatewayUnderTest, signing_key: SigningKey, case: str
) -> None:
    token = {
        "garbage": "not.a.jwt",
        "bad header": "e30K." + signing_key.token().split(".", 1)[1],
        "another key": SigningKey(kid=signing_key.kid).token(),
        "other issuer": signing_key.token(iss="someone-else"),
        "other audience": signing_key.token(aud="someone-else"),
    }[case]

    reply = gateway.call("GET", "/v1/auth/me", headers=bearer(token))

    status = assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")
    assert status["message"] == "the access token is not valid"


async def test_grpc_clients_get_the_same_words(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        expected = {
            None: "the request has no access token",
            signing_key.token(lifetime=-120): "the access token has expired",
            "not.a.jwt": "the access token is not valid",
        }
        for token, message in expected.items():
            metadata = None if token is None else (("authorization", f"Bearer {token}"),)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.GetMe(auth_pb2.GetMeRequest(), metadata=metadata)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error.value.details() == message
