"""The access log's `grpc_status` is the status the caller was given.

For a transcoded call Envoy's `%GRPC_STATUS_NUMBER%` finds no `grpc-status` (the transcoder
turned it into an HTTP status and a JSON body, and `header_mutation` strips `grpc-*` from JSON
replies), so it guessed from the HTTP status: a 400 was logged as 13, a 429 as 14. The log
now takes the code of the `google.rpc.Status` body the JSON client got.
"""

from __future__ import annotations

import json

import grpc
import pytest

from tests.gateway.conftest import MAX_REQUEST_BYTES
from tests.gateway.harness import GatewayUnderTest, Reply
from tests.gateway.test_gateway_json import register
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc


@pytest.mark.parametrize(
    ("call", "http_status", "grpc_status"),
    [
        # A service's INVALID_ARGUMENT and RESOURCE_EXHAUSTED, transcoded.
        (lambda g: register(g, {"email": "not-an-email"}), 400, 3),
        (lambda g: register(g, {"email": "throttled@example.com"}), 429, 8),
        # The gateway's own replies: after the transcoder, and before it (the body cap).
        (lambda g: g.call("GET", "/v1/no/such/route"), 404, 5),
        (lambda g: g.call("GET", "/v1/auth/me"), 401, 16),
        (
            lambda g: register(g, {"email": "a@example.com", "fullName": "x" * MAX_REQUEST_BYTES}),
            413,
            8,
        ),
        (lambda g: register(g, {"email": "ok@example.com"}), 200, 0),
    ],
    ids=["invalid-argument", "throttled", "no-route", "no-token", "too-large", "ok"],
)
def test_a_json_call_logs_the_grpc_status_its_client_was_given(
    gateway: GatewayUnderTest, call: object, http_status: int, grpc_status: int
) -> None:
    assert callable(call)
    reply: Reply = call(gateway)

    assert reply.status == http_status, reply.body
    if http_status >= 400:
        assert json.loads(reply.body)["code"] == grpc_status
    entry = gateway.logged(reply.headers["x-request-id"])
    assert entry["status"] == http_status
    assert entry["grpc_status"] == grpc_status


async def test_a_native_grpc_error_logs_its_status(gateway: GatewayUnderTest) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        call = auth_pb2_grpc.AuthServiceStub(channel).Register(
            auth_pb2.RegisterRequest(email="not-an-email-grpc")
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        metadata = {
            **dict(await call.initial_metadata() or ()),
            **dict(await call.trailing_metadata() or ()),
        }

    entry = gateway.logged(str(metadata["x-request-id"]))
    assert entry["grpc_status"] == 3
