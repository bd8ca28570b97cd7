"""The gateway's own messages are plain words and never echo what the client sent.

QA found: a `%2F` in the path answered 400 with an empty message; a body of `[]` or `null`
said ": Root element must be a message."; a body that is not UTF-8 came back inside the
message, raw; a rate-limited JSON call said `local_rate_limited`.
"""

from __future__ import annotations

import pytest

from tests.gateway.harness import GatewayUnderTest
from tests.gateway.test_gateway_json import JSON, assert_gateway_error


@pytest.mark.parametrize("encoded", ["%2F", "%5C", "%00"])
def test_an_encoded_slash_or_nul_in_the_path_is_explained(
    gateway: GatewayUnderTest, encoded: str
) -> None:
    reply = gateway.call("GET", f"/v1/wallets/VPY-a{encoded}b")

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert encoded in status["message"], status


@pytest.mark.parametrize("body", ["[]", "null", "[{}]", '"text"', "5"])
def test_a_body_that_is_not_an_object_is_explained(gateway: GatewayUnderTest, body: str) -> None:
    reply = gateway.call("POST", "/v1/auth/register", body, JSON)

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert status["message"] == "the request body must be a JSON object", status


@pytest.mark.parametrize(
    "body",
    [
        b'{"email": "\xff\xfeabc@example.com"}',
        b'{"email": "a@example.com", "fullName": "\xc3"}',
    ],
)
def test_a_body_that_is_not_utf8_is_not_echoed(gateway: GatewayUnderTest, body: bytes) -> None:
    reply = gateway.call("POST", "/v1/auth/register", body, JSON)

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert "UTF-8" in status["message"], status
    for raw in (b"\xff", b"\xfe", b"\xc3", "\u00ff".encode(), "\u00c3".encode()):
        assert raw not in reply.body
    assert "\\u00" not in reply.body.decode()
    assert "abc" not in status["message"]
