"""Protocol upgrades (WebSocket) and CONNECT, which the gateway does not carry: a clear 400,
never a refused token. A real Envoy in front of the auth double, plain HTTP/1.1 requests.

Review: Envoy refused them itself with a bare 403 (`upgrade_failed`), which the catch-all 403
mapper answered as reason TOKEN_INVALID with an empty message: a client may sign its user out.
"""

from __future__ import annotations

import base64
import socket
import time

import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import GatewayUnderTest
from tests.gateway.test_gateway_json import assert_gateway_error, bearer
from vaultpay_gateway.errors import UPGRADE_NOT_SUPPORTED_REASON, UPGRADE_NOT_SUPPORTED_TEXT

WEBSOCKET = {
    "connection": "Upgrade",
    "upgrade": "websocket",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.mark.parametrize("path", ["/v1/notifications:watch", "/v1/auth/me", "/v1/auth/jwks"])
def test_a_websocket_upgrade_is_400_upgrade_not_supported(
    gateway: GatewayUnderTest, path: str
) -> None:
    reply = gateway.call("GET", path, headers=WEBSOCKET)

    status = assert_gateway_error(reply, 400, 3, UPGRADE_NOT_SUPPORTED_REASON)
    assert status["message"] == UPGRADE_NOT_SUPPORTED_TEXT
    assert "use GET /v1/notifications:watch (NDJSON)" in status["message"]


def test_a_websocket_upgrade_with_a_valid_token_is_not_a_token_problem(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call(
        "GET", "/v1/notifications:watch", headers={**WEBSOCKET, **bearer(signing_key.token())}
    )

    status = assert_gateway_error(reply, 400, 3, UPGRADE_NOT_SUPPORTED_REASON)
    assert status["message"] == UPGRADE_NOT_SUPPORTED_TEXT
    assert "TOKEN" not in reply.body.decode()


def _raw_exchange(port: int, request: bytes, timeout: float) -> bytes:
    """Sends `request` as is and reads until Envoy closes the connection (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def test_a_connect_request_is_refused_at_once(gateway: GatewayUnderTest) -> None:
    """A CONNECT matched no route and waited in the JSON body capture for a body that never
    ends, until the request timeout (75 s by default)."""
    started = time.monotonic()
    raw = _raw_exchange(
        gateway.port, b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n", 10
    )
    took = time.monotonic() - started

    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), raw
    assert b"content-type: application/json" in head.lower()
    assert UPGRADE_NOT_SUPPORTED_REASON.encode() in body
    assert UPGRADE_NOT_SUPPORTED_TEXT.encode() in body
    assert took < 5


def test_a_grpc_request_with_an_upgrade_gets_the_reason_in_its_status(
    gateway: GatewayUnderTest,
) -> None:
    reply = gateway.call(
        "POST",
        "/vaultpay.auth.v1.AuthService/GetJwks",
        body=b"\x00\x00\x00\x00\x00",
        headers={**WEBSOCKET, "content-type": "application/grpc", "te": "trailers"},
    )

    assert reply.headers["grpc-status"] == "3"
    assert reply.headers["grpc-message"] == UPGRADE_NOT_SUPPORTED_TEXT
    status = status_pb2.Status.FromString(
        base64.b64decode(reply.headers["grpc-status-details-bin"])
    )
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == (UPGRADE_NOT_SUPPORTED_REASON, "vaultpay.gateway")
    assert status.message == UPGRADE_NOT_SUPPORTED_TEXT


def test_an_h2c_upgrade_offer_is_ignored(gateway: GatewayUnderTest) -> None:
    """An `Upgrade: h2c` offer is the one upgrade Envoy drops by itself: the call is served."""
    reply = gateway.call(
        "GET",
        "/v1/auth/jwks",
        headers={"connection": "Upgrade, HTTP2-Settings", "upgrade": "h2c", "http2-settings": ""},
    )

    assert reply.status == 200
    assert reply.json()["keys"]
