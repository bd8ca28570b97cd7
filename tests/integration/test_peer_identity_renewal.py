"""A service token a peer refuses (its key was withdrawn) is renewed on the next call, instead
of being reused until it expires: real gRPC servers on loopback, the runtime's interceptor."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay.kyc.v1 import kyc_pb2, kyc_pb2_grpc
from vaultpay_common.grpc.auth_client import (
    RenewRejectedIdentity,
    ServiceTokenProvider,
    outgoing_metadata,
)


class Auth(auth_pb2_grpc.AuthInternalServiceServicer):
    """Issues token-1, token-2, ... valid for 15 minutes."""

    def __init__(self) -> None:
        self.issued = 0

    async def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.IssueServiceTokenResponse:
        self.issued += 1
        reply = auth_pb2.IssueServiceTokenResponse(access_token=f"token-{self.issued}")
        reply.expire_time.seconds = int(time.time()) + 900
        return reply


class Kyc(kyc_pb2_grpc.KycInternalServiceServicer):
    """Accepts only the tokens in `valid`."""

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.refuse_with: grpc.StatusCode | None = None

    async def GetKycStats(
        self, request: kyc_pb2.GetKycStatsRequest, context: grpc.aio.ServicerContext
    ) -> kyc_pb2.GetKycStatsResponse:
        if self.refuse_with is not None:
            await context.abort(self.refuse_with, "not for you")
        presented = dict(context.invocation_metadata() or ()).get("authorization", "")
        if str(presented).removeprefix("Bearer ") not in self.valid:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "token signed by a withdrawn key")
        return kyc_pb2.GetKycStatsResponse(pending_count=7)


@pytest.fixture
async def peers() -> AsyncIterator[tuple[Auth, Kyc, str]]:
    auth, kyc = Auth(), Kyc()  # type: ignore[abstract]  # only the RPCs these tests call
    server = grpc.aio.server()
    auth_pb2_grpc.add_AuthInternalServiceServicer_to_server(auth, server)
    kyc_pb2_grpc.add_KycInternalServiceServicer_to_server(kyc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield auth, kyc, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_a_refused_service_token_is_renewed_on_the_next_call(
    peers: tuple[Auth, Kyc, str],
) -> None:
    auth, kyc, address = peers
    renew = RenewRejectedIdentity()
    auth_channel = grpc.aio.insecure_channel(address, interceptors=[renew])
    kyc_channel = grpc.aio.insecure_channel(address, interceptors=[renew])
    identity = ServiceTokenProvider(auth_channel, "wallet", "s3cret-s3cret-s3cret")
    renew.provider = identity
    stub = kyc_pb2_grpc.KycInternalServiceStub(kyc_channel)
    try:
        kyc.valid = {"token-1"}
        first = await stub.GetKycStats(
            kyc_pb2.GetKycStatsRequest(), metadata=outgoing_metadata(await identity.token("kyc"))
        )
        assert first.pending_count == 7

        kyc.valid = {"token-2"}  # token-1's key is withdrawn; auth now signs with another
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetKycStats(
                kyc_pb2.GetKycStatsRequest(),
                metadata=outgoing_metadata(await identity.token("kyc")),
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        again = await stub.GetKycStats(
            kyc_pb2.GetKycStatsRequest(), metadata=outgoing_metadata(await identity.token("kyc"))
        )
        assert again.pending_count == 7
        assert auth.issued == 2
    finally:
        await kyc_channel.close()
        await auth_channel.close()


async def test_other_refusals_keep_the_token(peers: tuple[Auth, Kyc, str]) -> None:
    auth, kyc, address = peers
    renew = RenewRejectedIdentity()
    auth_channel = grpc.aio.insecure_channel(address, interceptors=[renew])
    kyc_channel = grpc.aio.insecure_channel(address, interceptors=[renew])
    identity = ServiceTokenProvider(auth_channel, "wallet", "s3cret-s3cret-s3cret")
    renew.provider = identity
    stub = kyc_pb2_grpc.KycInternalServiceStub(kyc_channel)
    try:
        kyc.refuse_with = grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetKycStats(
                kyc_pb2.GetKycStatsRequest(),
                metadata=outgoing_metadata(await identity.token("kyc")),
            )
        identity.forget("a token this service does not hold")
        assert await identity.token("kyc") == "token-1"
        assert auth.issued == 1
    finally:
        await kyc_channel.close()
        await auth_channel.close()
