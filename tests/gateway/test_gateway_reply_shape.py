"""Every local reply has the shape Envoy chose for the request, through a real Envoy.

Envoy answers a request in gRPC form only when its content-type is native gRPC by Envoy's own
test (`native_grpc`: `application/grpc` or `application/grpc+…`); every other one, those that
only look like gRPC included (`application/grpc; charset=utf-8`, `application/grpc-web`, two
content-types), is transcoded and gets the JSON `google.rpc.Status` a JSON client gets, with
its reason. The local reply mapper's internal marks never reach a client, whatever it sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from tests.gateway.conftest import MAX_REQUEST_BYTES
from tests.gateway.harness import (
    GatewayUnderTest,
    Reply,
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_gateway_json import JSON, assert_gateway_error
from tests.gateway.test_gateway_json_body import violations
from tests.gateway.test_gateway_media_type import (
    BODY,
    REGISTER,
    assert_unsupported_media_type,
    call_with_headers,
)
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_gateway import HostPort, RateLimit
from vaultpay_gateway.filters import INTERNAL_REPLY_HEADERS
from vaultpay_gateway.native_grpc import is_native_grpc

Headers = Sequence[tuple[str, str]]

# Content-types that start like gRPC but are not native gRPC for Envoy: transcoded as JSON.
LOOKALIKES: dict[str, Headers] = {
    "charset": [("content-type", "application/grpc; charset=utf-8")],
    "parameter": [("content-type", "application/grpc;x")],
    "case": [("content-type", "Application/GRPC")],
    "grpc-web": [("content-type", "application/grpc-web")],
    "grpc-web+proto": [("content-type", "application/grpc-web+proto")],
    "grpc-web-text": [("content-type", "application/grpc-web-text")],
    "two": [("content-type", "application/grpc"), ("content-type", "application/grpc")],
}
# An empty gRPC message: one uncompressed frame of length 0.
EMPTY_FRAME = b"\x00\x00\x00\x00\x00"
GET_ME = "/vaultpay.auth.v1.AuthService/GetMe"
CLIENT_BURST = 3


def assert_no_internal_mark(headers: Sequence[str]) -> None:
    leaked = [h for h in headers if h.lower() in INTERNAL_REPLY_HEADERS]
    assert not leaked, leaked


def lookalike_call(
    gateway: GatewayUnderTest, method: str, path: str, body: bytes, kind: str
) -> Reply:
    reply = call_with_headers(gateway, method, path, body, LOOKALIKES[kind])
    assert_no_internal_mark(list(reply.headers))
    return reply


lookalike = pytest.mark.parametrize("kind", list(LOOKALIKES))


def test_the_lookalikes_are_not_native_grpc_by_envoys_test() -> None:
    """Two content-type headers reach Envoy joined by a comma."""
    for headers in LOOKALIKES.values():
        assert not is_native_grpc(",".join(value for _, value in headers))


@lookalike
def test_a_lookalike_body_is_415_with_the_json_status(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, kind: str
) -> None:
    calls_before = auth_double.servicer.register_calls

    reply = lookalike_call(gateway, "POST", REGISTER, BODY.encode(), kind)

    assert_unsupported_media_type(reply)
    assert auth_double.servicer.register_calls == calls_before


@lookalike
def test_a_lookalike_body_over_the_cap_is_413_with_the_json_status(
    gateway: GatewayUnderTest, kind: str
) -> None:
    reply = lookalike_call(gateway, "POST", REGISTER, b"x" * (2 * MAX_REQUEST_BYTES), kind)

    status = assert_gateway_error(reply, 413, 8, "PAYLOAD_TOO_LARGE")
    assert status["message"] == "the request is too large"


@lookalike
def test_a_lookalike_query_on_a_body_route_gets_the_checks_400(
    gateway: GatewayUnderTest, kind: str
) -> None:
    """Without a body the capture lets it through, and the JSON body check answers."""
    reply = lookalike_call(gateway, "POST", "/v1/auth/login?password=pw", b"", kind)

    status = assert_gateway_error(reply, 400, 3, "QUERY_PARAMETER_NOT_ALLOWED")
    assert [v["field"] for v in violations(status)] == ["password"]


@lookalike
def test_a_lookalike_value_of_the_wrong_type_is_named(gateway: GatewayUnderTest, kind: str) -> None:
    """The transcoder's own refusal, reworded by the `replies` filter as for JSON."""
    reply = lookalike_call(gateway, "GET", "/v1/transactions?pageSize=abc", b"", kind)

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert [v["field"] for v in violations(status)] == ["pageSize"]


@lookalike
def test_a_lookalike_path_that_does_not_exist_is_404_with_the_json_status(
    gateway: GatewayUnderTest, kind: str
) -> None:
    reply = lookalike_call(gateway, "POST", "/v1/no/such/route", b"", kind)

    assert_gateway_error(reply, 404, 5, "NOT_FOUND")


@pytest.fixture(scope="module")
def crowded(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
) -> Iterator[GatewayUnderTest]:
    """The client's own bucket is small (refilled every second)."""
    workdir = tmp_path_factory.mktemp("gateway-reply-shape")
    settings = loopback_settings(
        workdir,
        descriptor_set,
        {"auth": HostPort("127.0.0.1", auth_double.port)},
        client_rate_limit=RateLimit(max_tokens=CLIENT_BURST, tokens_per_fill=1),
    )
    running = start_gateway(workdir, settings)
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("kind", ["charset", "grpc-web", "two"])
def test_a_rate_limited_lookalike_is_429_with_the_json_status(
    crowded: GatewayUnderTest, kind: str
) -> None:
    replies = [
        lookalike_call(crowded, "GET", "/v1/auth/jwks", b"", kind) for _ in range(CLIENT_BURST + 3)
    ]

    refused = replies[-1]
    status = assert_gateway_error(refused, 429, 8, "RATE_LIMITED")
    assert status["message"] == "too many requests; try again later"
    assert refused.headers["retry-after"].isdigit()


# --- no reply carries an internal mark: JSON errors and native gRPC ones alike ---


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("GET", "/v1/auth/me", b"", [], 401),
        ("POST", "/v1/no/such/route", b"{}", [("content-type", "application/json")], 404),
        ("POST", REGISTER, b"a=b", [("content-type", "text/plain")], 415),
        # The transcoder's type error: marked for `replies` by the mapper.
        ("GET", "/v1/transactions?pageSize=abc", b"", [], 400),
        ("POST", REGISTER, b"x" * (2 * MAX_REQUEST_BYTES), list(JSON.items()), 413),
        ("GET", "/v1/auth%2Fme", b"", [], 400),
    ],
    ids=["401", "404", "415", "type-error", "413", "bad-path"],
)
def test_json_errors_carry_no_internal_mark(
    gateway: GatewayUnderTest,
    method: str,
    path: str,
    body: bytes,
    headers: Headers,
    status: int,
) -> None:
    reply = call_with_headers(gateway, method, path, body, headers)

    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert_no_internal_mark(list(reply.headers))


@pytest.mark.parametrize(
    ("path", "body", "grpc_status"),
    [
        (GET_ME, EMPTY_FRAME, "16"),  # no token
        ("/vaultpay.auth.v1.AuthService/NoSuchMethod", EMPTY_FRAME, "12"),
        (GET_ME, b"x" * (2 * MAX_REQUEST_BYTES), "8"),  # over the cap
        ("/vaultpay.auth.v1.AuthService%2FGetMe", EMPTY_FRAME, "3"),  # path refused
    ],
    ids=["401", "404", "413", "bad-path"],
)
@pytest.mark.parametrize("content_type", ["application/grpc", "application/grpc+proto"])
def test_native_grpc_errors_are_grpc_and_carry_no_internal_mark(
    gateway: GatewayUnderTest, path: str, body: bytes, grpc_status: str, content_type: str
) -> None:
    """The mapper marks Envoy's own gRPC replies for `replies`; the mark stays inside."""
    reply = call_with_headers(gateway, "POST", path, body, [("content-type", content_type)])

    assert reply.headers["content-type"] == "application/grpc"
    assert reply.headers["grpc-status"] == grpc_status
    assert reply.headers["grpc-message"]
    assert "grpc-status-details-bin" in reply.headers
    assert_no_internal_mark(list(reply.headers))


@pytest.mark.parametrize("content_type", ["application/grpc+proto; x=y", "application/grpc+"])
def test_what_envoy_takes_for_native_grpc_is_not_refused_as_a_body(
    gateway: GatewayUnderTest, content_type: str
) -> None:
    """`application/grpc+` and anything after it is native gRPC for Envoy (the transcoder
    passes it through), so the capture leaves it alone too: jwt_authn answers, in gRPC form,
    not the capture's 415."""
    reply = call_with_headers(
        gateway, "POST", GET_ME, EMPTY_FRAME, [("content-type", content_type)]
    )

    assert reply.headers["content-type"] == "application/grpc"
    assert reply.headers["grpc-status"] == "16"
    assert reply.headers["grpc-message"] == "the request has no access token"
    assert_no_internal_mark(list(reply.headers))


@pytest.fixture
async def channel(gateway: GatewayUnderTest) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield channel


def _metadata_keys(error: grpc.aio.AioRpcError) -> list[str]:
    initial = error.initial_metadata() or ()
    trailing = error.trailing_metadata() or ()
    return [key for key, _ in (*initial, *trailing)]


async def test_a_grpc_clients_errors_are_unchanged(channel: grpc.aio.Channel) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
        await stub.GetMe(auth_pb2.GetMeRequest())
    with pytest.raises(grpc.aio.AioRpcError) as too_large:
        await stub.Register(auth_pb2.RegisterRequest(password="x" * (2 * MAX_REQUEST_BYTES)))

    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert unauthenticated.value.details() == "the request has no access token"
    assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert too_large.value.details() == "the request is too large"
    for error in (unauthenticated.value, too_large.value):
        assert rpc_status.from_call(error) is not None
        assert_no_internal_mark(_metadata_keys(error))
