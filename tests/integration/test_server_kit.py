"""The platform's server kit end to end in one process: the real interceptor chain around a
streaming RPC (yielding and `context.write` styles), error mapping mid-stream, health,
reflection and deny-by-default. The servicer here is a small stand-in used only to exercise
the kit; the real wallet service arrives with its own issue."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import rpc_failure
from vaultpay.kyc.v1 import kyc_pb2, kyc_pb2_grpc
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.errors import NotFoundError
from vaultpay_common.grpc.revocations import RevocationSet
from vaultpay_common.grpc.server import GrpcServiceHost, standard_interceptors
from vaultpay_common.grpc.tokens import Introspection, TokenVerifier

WALLET = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"]
KYC = kyc_pb2.DESCRIPTOR.services_by_name["KycService"]
KEY = Ed25519PrivateKey.generate()


class NoStreamError(NotFoundError):
    reason = "STREAM_DONE"


class StreamingStandIn(wallet_pb2_grpc.WalletServiceServicer):
    async def WatchNotifications(
        self, request: wallet_pb2.WatchNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[wallet_pb2.WatchNotificationsResponse]:
        for count in (1, 2):
            yield wallet_pb2.WatchNotificationsResponse(unread_count=count)
        raise NoStreamError("no more notifications")

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.GetBalanceResponse:
        raise RuntimeError("db password is hunter2")  # an unexpected bug, with a secret

    async def LookupWallet(
        self, request: wallet_pb2.LookupWalletRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.LookupWalletResponse:
        return wallet_pb2.LookupWalletResponse()


class UploadStandIn(kyc_pb2_grpc.KycServiceServicer):
    async def UploadKycDocument(
        self,
        requests: AsyncIterator[kyc_pb2.UploadKycDocumentRequest],
        context: grpc.aio.ServicerContext,
    ) -> kyc_pb2.UploadKycDocumentResponse:
        async for _ in requests:
            pass
        return kyc_pb2.UploadKycDocumentResponse()


class NeverIntrospected:
    async def introspect(self, token: str) -> Introspection:
        raise AssertionError("WatchNotifications is not strict")


async def _jwks() -> list[dict[str, str]]:
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k", "alg": "EdDSA"}]


def _user_token() -> str:
    now = int(time.time())
    claims = {
        "iss": "vaultpay-auth",
        "aud": "vaultpay",
        "sub": "u1",
        "role": "user",
        "sid": "s1",
        "jti": "j1",
        "typ": "access",
        "iat": now,
        "exp": now + 60,
    }
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k"})


def established_revocations() -> RevocationSet:
    """A feed that once completed a poll (and is stale now): no call needs introspection."""
    revoked = RevocationSet(max_staleness=1.0, retention=60.0)
    revoked.confirm(time.monotonic() - 2.0)
    return revoked


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    verifier = TokenVerifier(_jwks, issuer="vaultpay-auth", audience="vaultpay", service="wallet")
    host = GrpcServiceHost(
        "kit",
        address="127.0.0.1:0",
        interceptors=standard_interceptors(
            "kit",
            [WALLET, KYC],
            verifier,
            NeverIntrospected(),
            revocations=established_revocations(),
        ),
        max_message_bytes=1 << 20,
        shutdown_grace_seconds=0.5,
    )
    host.add(
        WALLET,
        lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(StreamingStandIn(), s),  # type: ignore[abstract]
    )
    host.add(KYC, lambda s: kyc_pb2_grpc.add_KycServiceServicer_to_server(UploadStandIn(), s))  # type: ignore[abstract]
    port = await host.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await host.stop()


async def test_a_yielding_stream_passes_the_chain_and_maps_an_error_mid_stream(
    channel: grpc.aio.Channel,
) -> None:
    stub = wallet_pb2_grpc.WalletServiceStub(channel)
    call = stub.WatchNotifications(
        wallet_pb2.WatchNotificationsRequest(),
        metadata=(("authorization", f"Bearer {_user_token()}"),),
    )
    received = [await call.read(), await call.read()]
    assert [r.unread_count for r in received] == [1, 2]
    failure = await rpc_failure(call.read())
    assert (failure.code, failure.reason, failure.domain) == (
        grpc.StatusCode.NOT_FOUND,
        "STREAM_DONE",
        "vaultpay.kit",
    )


async def test_a_stream_without_a_token_is_refused_before_it_starts(
    channel: grpc.aio.Channel,
) -> None:
    stub = wallet_pb2_grpc.WalletServiceStub(channel)
    call = stub.WatchNotifications(wallet_pb2.WatchNotificationsRequest())
    failure = await rpc_failure(call.read())
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_an_unimplemented_rpc_is_unimplemented_not_a_crash(channel: grpc.aio.Channel) -> None:
    stub = wallet_pb2_grpc.WalletServiceStub(channel)
    failure = await rpc_failure(
        stub.GetMyWallet(
            wallet_pb2.GetMyWalletRequest(),
            metadata=(("authorization", f"Bearer {_user_token()}"),),
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED")


async def test_health_watch_and_reflection_work_through_the_chain(
    channel: grpc.aio.Channel,
) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=WALLET.full_name)
    )
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(ask())
    reply = await stream.read()
    names = {s.name for s in reply.list_services_response.service}
    assert WALLET.full_name in names


async def test_an_unexpected_error_is_internal_with_the_request_id_and_no_details(
    channel: grpc.aio.Channel,
) -> None:
    stub = wallet_pb2_grpc.WalletServiceStub(channel)
    metadata = (("authorization", f"Bearer {_user_token()}"), ("x-request-id", "req-kit-1"))
    failure = await rpc_failure(stub.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=metadata))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    assert "req-kit-1" in failure.message
    assert "hunter2" not in failure.message
    assert "Traceback" not in failure.message


async def test_every_message_of_a_client_stream_passes_the_hygiene_check(
    channel: grpc.aio.Channel,
) -> None:
    async def upload() -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
        metadata = kyc_pb2.UploadKycDocumentMetadata(document_number="ABCDE1234F")
        yield kyc_pb2.UploadKycDocumentRequest(metadata=metadata)
        yield kyc_pb2.UploadKycDocumentRequest(
            metadata=kyc_pb2.UploadKycDocumentMetadata(document_number="AB\x00")
        )

    stub = kyc_pb2_grpc.KycServiceStub(channel)
    failure = await rpc_failure(
        stub.UploadKycDocument(upload(), metadata=(("authorization", f"Bearer {_user_token()}"),))
    )
    assert (failure.code, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["metadata.document_number"],
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"\x0a\x02\xff\xfe", "wallet_id"), (b"\x0a\x05ab", "request")],
    ids=["bad-utf8", "truncated"],
)
async def test_a_request_that_does_not_parse_is_invalid_argument_not_unknown(
    channel: grpc.aio.Channel, body: bytes, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    """grpc would answer UNKNOWN and log a traceback for every such call; the chain answers
    INVALID_ARGUMENT, once the caller is authenticated, naming the string field that is not
    UTF-8 (the gateway passes `GET /v1/...%FF` on as such a field), else `request`, never
    with the parser's words (they name the internal message type)."""
    raw = channel.unary_unary(
        "/vaultpay.wallet.v1.WalletService/LookupWallet",
        request_serializer=lambda data: data,
        response_deserializer=wallet_pb2.LookupWalletResponse.FromString,
    )
    token = (("authorization", f"Bearer {_user_token()}"),)
    failure = await rpc_failure(raw(body, metadata=token))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert "vaultpay." not in failure.message and "parsing" not in failure.message
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    anonymous = await rpc_failure(raw(body))
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED
    assert await raw(b"\x0a\x02ab", metadata=token) == wallet_pb2.LookupWalletResponse()
