"""An open server stream through the real interceptor chain, against a real auth stack: the
stream ends with UNAUTHENTICATED when its token expires (an auth whose access tokens live a few
seconds; no message needed to notice: a timer at the expiry) and when its session is revoked
(an auth whose tokens live two minutes, so that a logout plus the feed's delay under load
cannot be overtaken by the expiry; auth's revocation feed, held in memory by the peer, wakes
it; the deactivation and role-change cases are in tests/e2e/test_revocation_feed.py). The
stream here idles after its first message, as a notification stream usually does, so nothing
but the guard can end it.

The verifier takes no leeway here, so "expired" is the token's own `exp`; the services run
with 30 s (tests/unit/test_auth_interceptor_revocations.py checks the leeway on a fake clock).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from tests.integration.auth.conftest import SERVICE_SECRET, AuthStack, bearer
from tests.integration.auth.stacks import own_auth_stack
from tests.support import RpcFailure, rpc_failure
from vaultpay.auth.v1 import auth_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.grpc.auth_client import GrpcJwksFetcher, PeerAuth
from vaultpay_common.grpc.server import GrpcServiceHost, standard_interceptors
from vaultpay_common.grpc.tokens import TokenVerifier
from vaultpay_devstack.infra import Infra

WALLET = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"]
SHORT_TTL = 5  # seconds an access token lives in the expiry case
LONG_TTL = 120  # seconds it lives in the revocation case: far beyond PATIENCE
PATIENCE = 15.0  # how long a test waits for the stream to end before it gives up


@pytest.fixture(scope="module")
async def auth(infra: Infra, request: pytest.FixtureRequest) -> AsyncIterator[AuthStack]:
    """An auth whose access tokens live `request.param` seconds (each test picks its own)."""
    ttl: int = request.param
    async with own_auth_stack(infra, f"authstream{ttl}", access_token_ttl_seconds=ttl) as stack:
        yield stack


class IdleWatcher(wallet_pb2_grpc.WalletServiceServicer):
    """WatchNotifications that sends the badge count, then waits for news that never come."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def WatchNotifications(
        self, request: wallet_pb2.WatchNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[wallet_pb2.WatchNotificationsResponse]:
        try:
            yield wallet_pb2.WatchNotificationsResponse(unread_count=0)
            await asyncio.Event().wait()
        finally:
            self.closed.set()


@dataclass
class Wallet:
    stub: wallet_pb2_grpc.WalletServiceStub
    watcher: IdleWatcher
    peer: PeerAuth


@pytest.fixture
async def wallet(auth: AuthStack) -> AsyncIterator[Wallet]:
    """What wallet runs: PeerAuth with its feed, the standard chain, one streaming RPC."""
    auth_channel = grpc.aio.insecure_channel(f"127.0.0.1:{auth.port}")
    peer = PeerAuth(
        auth_channel,
        client_id="wallet",
        client_secret=SERVICE_SECRET,
        issuer="vaultpay-auth",
        audience="vaultpay",
        service="wallet",
    )
    verifier = TokenVerifier(
        GrpcJwksFetcher(auth_channel),
        issuer="vaultpay-auth",
        audience="vaultpay",
        service="wallet",
        leeway_seconds=0,
    )
    watcher = IdleWatcher()  # type: ignore[abstract]
    host = GrpcServiceHost(
        "wallet",
        address="127.0.0.1:0",
        interceptors=standard_interceptors(
            "wallet", [WALLET], verifier, peer.introspector, revocations=peer.revocations
        ),
        max_message_bytes=1 << 20,
        shutdown_grace_seconds=0.5,
    )
    host.add(WALLET, lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(watcher, s))
    feed = asyncio.create_task(peer.feed.run())
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Wallet(wallet_pb2_grpc.WalletServiceStub(channel), watcher, peer)
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed
        await host.stop()
        await auth_channel.close()


async def _open(wallet: Wallet, tokens: auth_pb2.TokenPair) -> grpc.aio.UnaryStreamCall:
    call = wallet.stub.WatchNotifications(
        wallet_pb2.WatchNotificationsRequest(), metadata=bearer(tokens)
    )
    first = await call.read()
    assert first.unread_count == 0
    return call


async def _end_of(call: grpc.aio.UnaryStreamCall) -> RpcFailure:
    async with asyncio.timeout(PATIENCE):
        return await rpc_failure(call.read())


async def _until_closed(wallet: Wallet) -> None:
    """The handler's generator was closed (a notification subscription would be released)."""
    async with asyncio.timeout(PATIENCE):
        await wallet.watcher.closed.wait()


@pytest.mark.parametrize("auth", [SHORT_TTL], indirect=True)
async def test_an_open_stream_ends_when_its_token_expires(auth: AuthStack, wallet: Wallet) -> None:
    _, tokens = await auth.user_with_token()
    call = await _open(wallet, tokens)
    ended = await _end_of(call)
    assert (ended.code, ended.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    await _until_closed(wallet)


@pytest.mark.parametrize("auth", [LONG_TTL], indirect=True)
async def test_an_open_stream_ends_when_its_session_is_logged_out(
    auth: AuthStack, wallet: Wallet
) -> None:
    _, tokens = await auth.user_with_token()
    # The token must outlive the wait below, or under load the logout plus the feed's delay
    # could reach its expiry first and the stream end with TOKEN_EXPIRED (a flaky test).
    left = tokens.access_token_expire_time.ToDatetime(UTC) - datetime.now(UTC)
    assert left > timedelta(seconds=PATIENCE * 2)
    call = await _open(wallet, tokens)
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
    ended = await _end_of(call)
    # Long before the token's expiry: the feed, not the expiry, ended it.
    assert (ended.code, ended.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    await _until_closed(wallet)
    assert wallet.peer.revocations.watching() == 0
