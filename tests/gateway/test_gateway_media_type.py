"""A request body must be sent as `application/json` (json_body.py's capture), through a real
Envoy: the transcoder would read any body as JSON, whatever its content-type says."""

from __future__ import annotations

import http.client
import json
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from tests.gateway.auth_double import SigningKey
from tests.gateway.conftest import ALLOWED_ORIGIN
from tests.gateway.harness import GatewayUnderTest, Reply, ThreadedAuthDouble
from tests.gateway.test_gateway_json import JSON, assert_gateway_error, bearer
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc

REGISTER = "/v1/auth/register"
BODY = json.dumps({"email": "media@example.com", "password": "pw", "fullName": "Media"})
UNSUPPORTED = "UNSUPPORTED_MEDIA_TYPE"


def call_with_headers(
    gateway: GatewayUnderTest,
    method: str,
    path: str,
    body: bytes,
    headers: Sequence[tuple[str, str]],
) -> Reply:
    """One HTTP/1.1 request whose header lines are sent exactly as listed (repeats too)."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.putrequest(method, path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def assert_unsupported_media_type(reply: Reply) -> None:
    status = assert_gateway_error(reply, 415, 3, UNSUPPORTED)
    assert "content-type: application/json" in status["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        None,
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/merge-patch+json",
        "application/jsonp",
        "application/json; charset=iso-8859-1",
        "application/json, text/plain",
    ],
)
def test_a_body_not_sent_as_json_is_415_and_never_reaches_the_service(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, content_type: str | None
) -> None:
    calls_before = auth_double.servicer.register_calls
    headers = {} if content_type is None else {"content-type": content_type}

    reply = gateway.call("POST", REGISTER, BODY, headers)

    assert_unsupported_media_type(reply)
    assert auth_double.servicer.register_calls == calls_before


def test_login_with_a_form_body_is_415(gateway: GatewayUnderTest) -> None:
    """What `curl -d` sends by default."""
    form = {"content-type": "application/x-www-form-urlencoded"}

    assert_unsupported_media_type(
        gateway.call("POST", "/v1/auth/login", "email=a%40b.c&password=pw", form)
    )
    assert_unsupported_media_type(
        gateway.call("POST", "/v1/auth/login", '{"email": "a@b.c", "password": "pw"}', form)
    )


@pytest.mark.parametrize(
    "content_types",
    [("application/json", "text/plain"), ("application/json", "application/json")],
)
def test_two_content_type_headers_with_a_body_are_415(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, content_types: tuple[str, str]
) -> None:
    calls_before = auth_double.servicer.register_calls
    headers = [("content-type", value) for value in content_types]

    reply = call_with_headers(gateway, "POST", REGISTER, BODY.encode(), headers)

    assert_unsupported_media_type(reply)
    assert auth_double.servicer.register_calls == calls_before


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        'application/json;charset="UTF-8"',
        "application/json ; foo=bar",
    ],
)
def test_a_json_media_type_passes_in_any_case_and_with_parameters(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, content_type: str
) -> None:
    calls_before = auth_double.servicer.register_calls

    reply = gateway.call("POST", REGISTER, BODY, {"content-type": content_type})

    assert reply.status == 200, reply.body
    assert reply.json()["user"]["email"] == "media@example.com"
    assert auth_double.servicer.register_calls == calls_before + 1


@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_a_post_without_a_body_is_not_refused_whatever_its_content_type(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, content_type: str | None
) -> None:
    """Nothing to misread: the service gets an empty request (and refuses the empty email)."""
    calls_before = auth_double.servicer.register_calls
    headers = [] if content_type is None else [("content-type", content_type)]

    reply = call_with_headers(gateway, "POST", REGISTER, b"", headers)

    assert reply.status == 400, reply.body
    assert auth_double.servicer.register_calls == calls_before + 1


def test_a_get_without_a_body_is_not_refused_whatever_its_content_type(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    headers = {"content-type": "text/plain", **bearer(signing_key.token())}

    assert gateway.call("GET", "/v1/auth/me", headers=headers).status == 200


def test_a_get_with_a_body_not_sent_as_json_is_415(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    """Envoy decodes a body sent with GET into the request as well."""
    reply = gateway.call("GET", "/v1/auth/me", "{}", bearer(signing_key.token()))

    assert_unsupported_media_type(reply)


def test_the_media_type_is_refused_before_the_token_and_the_route_are_checked(
    gateway: GatewayUnderTest,
) -> None:
    """It depends on the request's headers alone: it tells nothing about routes or schema."""
    text = {"content-type": "text/plain"}

    assert_unsupported_media_type(gateway.call("POST", "/v1/transactions:topUp", "{}", text))
    assert_unsupported_media_type(gateway.call("POST", "/v1/no/such/route", "{}", text))
    assert gateway.call("POST", "/v1/transactions:topUp", "{}", JSON).status == 401


def test_a_browser_sees_the_refusal_of_a_cross_origin_text_post(
    gateway: GatewayUnderTest,
) -> None:
    """A `text/plain` POST is a CORS "simple request": no preflight stops it."""
    headers = {"content-type": "text/plain;charset=UTF-8", "origin": ALLOWED_ORIGIN}

    reply = gateway.call("POST", "/v1/auth/login", '{"email":"a@b.c","password":"pw"}', headers)

    assert_unsupported_media_type(reply)
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_the_docs_ignore_a_body_whatever_its_content_type(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("GET", "/docs/openapi.json", "x=1", {"content-type": "text/plain"})

    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "content_type", ["application/grpc; charset=utf-8", "Application/GRPC", "application/grpc-web"]
)
def test_a_content_type_that_only_looks_like_grpc_is_415(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, content_type: str
) -> None:
    """Envoy transcodes these as JSON (native_grpc.py: not native gRPC), so they get the
    JSON Status a JSON client gets (more in test_gateway_reply_shape.py)."""
    calls_before = auth_double.servicer.register_calls

    reply = gateway.call("POST", REGISTER, BODY, {"content-type": content_type})

    assert_unsupported_media_type(reply)
    assert auth_double.servicer.register_calls == calls_before


@pytest.fixture
async def channel(gateway: GatewayUnderTest) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield channel


async def test_native_grpc_is_not_affected(channel: grpc.aio.Channel) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    reply = await stub.Register(
        auth_pb2.RegisterRequest(email="grpc@example.com", password="pw", full_name="G")
    )

    assert reply.user.email == "grpc@example.com"
