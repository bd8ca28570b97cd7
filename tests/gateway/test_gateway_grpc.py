"""Native gRPC clients (generated stubs over grpc.aio) through the same Envoy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.gateway.auth_double import SigningKey
from tests.gateway.conftest import MAX_REQUEST_BYTES
from tests.gateway.harness import GatewayUnderTest
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc


@pytest.fixture
async def channel(gateway: GatewayUnderTest) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield channel


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_public_rpc_works_without_a_token(channel: grpc.aio.Channel) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    reply = await stub.Register(auth_pb2.RegisterRequest(email="ada@example.com"))

    assert reply.user.email == "ada@example.com"


async def test_protected_rpc_without_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetMe(auth_pb2.GetMeRequest())

    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.value.details() == "the request has no access token"


async def test_protected_rpc_with_foreign_token_is_unauthenticated(
    channel: grpc.aio.Channel,
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(SigningKey().token()))

    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_protected_rpc_with_valid_token_reaches_the_service(
    channel: grpc.aio.Channel, signing_key: SigningKey
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    reply = await stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(signing_key.token()))

    seen = json.loads(reply.user.full_name)
    assert seen["x-envoy-external-address"] == "127.0.0.1"
    assert seen["x-request-id"]


async def test_internal_service_is_not_reachable(
    channel: grpc.aio.Channel, signing_key: SigningKey
) -> None:
    stub = auth_pb2_grpc.AuthInternalServiceStub(channel)
    calls = {
        "IntrospectToken": stub.IntrospectToken(
            auth_pb2.IntrospectTokenRequest(), metadata=bearer(signing_key.token())
        ),
        "IssueServiceToken (public rule, internal service)": stub.IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest()
        ),
    }
    for case, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, case


async def test_error_details_pass_through_untouched(channel: grpc.aio.Channel) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Register(auth_pb2.RegisterRequest(email="not-an-email"))

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "INVALID_EMAIL"


async def test_message_over_the_cap_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Register(
            auth_pb2.RegisterRequest(email="a@example.com", full_name="x" * MAX_REQUEST_BYTES)
        )

    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
