"""The stream guard of the auth interceptor on a real grpc.aio server and client, for both ways
a server stream can be written (yielding, and `await context.write(...)`, whose behaviour the
interceptor runs as a task of its own): an idle stream whose session is revoked ends with
UNAUTHENTICATED and auth's reason, and the handler is stopped. The revocation is recorded the
way auth's feed records it; tests/integration/auth/test_stream_revocation.py has the real feed.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support import rpc_failure
from vaultpay_common.context import Role
from vaultpay_common.grpc.authz import AuthInterceptor
from vaultpay_common.grpc.errors import ErrorInterceptor
from vaultpay_common.grpc.revocations import Revocation, RevocationSet
from vaultpay_common.grpc.rules import AccessRule
from vaultpay_common.grpc.tokens import Introspection, TokenVerifier

KEY = Ed25519PrivateKey.generate()
SERVICE = "vaultpay.test.v1.Probe"
PATIENCE = 5.0


async def _jwks() -> list[dict[str, str]]:
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k", "alg": "EdDSA"}]


def _token(sid: str) -> str:
    now = int(time.time())
    claims = {
        "iss": "vaultpay-auth",
        "aud": "vaultpay",
        "sub": "user-1",
        "role": "user",
        "sid": sid,
        "jti": f"jti-{sid}",
        "typ": "access",
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k"})


class NeverIntrospected:
    async def introspect(self, token: str) -> Introspection:
        raise AssertionError("these streams are not strict")


class Handlers:
    """Two idle streams that send one message, then wait; `stopped` when the handler ended."""

    def __init__(self) -> None:
        self.stopped: dict[str, asyncio.Event] = {
            "Yielding": asyncio.Event(),
            "Writing": asyncio.Event(),
        }

    async def yielding(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()
        finally:
            self.stopped["Yielding"].set()

    async def writing(self, request: bytes, context: Any) -> None:
        try:
            await context.write(b"first")
            await asyncio.Event().wait()
        finally:
            self.stopped["Writing"].set()

    def generic(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Yielding": grpc.unary_stream_rpc_method_handler(self.yielding),
                "Writing": grpc.unary_stream_rpc_method_handler(self.writing),
            },
        )


@dataclass
class Served:
    channel: grpc.aio.Channel
    revoked: RevocationSet
    handlers: Handlers
    verifier: TokenVerifier

    def __iter__(self) -> Iterator[Any]:
        return iter((self.channel, self.revoked, self.handlers))


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    revoked = RevocationSet(max_staleness=1.0, retention=990.0)
    revoked.confirm(time.monotonic() - 2.0)  # established once, stale now: the token decides
    rules = {f"/{SERVICE}/{name}": AccessRule(min_role=Role.USER) for name in Handlers().stopped}
    verifier = TokenVerifier(_jwks, issuer="vaultpay-auth", audience="vaultpay", service="wallet")
    auth = AuthInterceptor(rules, verifier, NeverIntrospected(), revocations=revoked)
    handlers = Handlers()
    server = grpc.aio.server(interceptors=[ErrorInterceptor("kit"), auth])
    server.add_generic_rpc_handlers((handlers.generic(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(channel, revoked, handlers, verifier)
    finally:
        await server.stop(None)


@pytest.mark.parametrize("style", ["Yielding", "Writing"])
async def test_an_idle_stream_ends_with_unauthenticated_when_its_session_is_revoked(
    served: Served, style: str
) -> None:
    channel, revoked, handlers = served
    call = channel.unary_stream(f"/{SERVICE}/{style}")(
        b"", metadata=(("authorization", f"Bearer {_token('s1')}"),)
    )
    async with asyncio.timeout(PATIENCE):
        assert await call.read() == b"first"
    revoked.record([Revocation("s1", "ACCOUNT_DISABLED")])
    async with asyncio.timeout(PATIENCE):
        ended = await rpc_failure(call.read())
        await handlers.stopped[style].wait()
    assert (ended.code, ended.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ACCOUNT_DISABLED")
    assert revoked.watching() == 0


@pytest.mark.parametrize("style", ["Yielding", "Writing"])
async def test_an_idle_stream_ends_when_its_tokens_signing_key_is_withdrawn(
    served: Served, style: str
) -> None:
    """Review of 2026-12-05: a stream opened with a token of a leaked key (any session id the
    minter liked, never revoked) outlived the key's withdrawal until the token expired,
    while a unary call with the same token was refused at once."""
    call = served.channel.unary_stream(f"/{SERVICE}/{style}")(
        b"", metadata=(("authorization", f"Bearer {_token('made-up')}"),)
    )
    async with asyncio.timeout(PATIENCE):
        assert await call.read() == b"first"
    served.verifier.forget_keys(["k"])  # what the feed does when auth withdraws the key
    async with asyncio.timeout(PATIENCE):
        ended = await rpc_failure(call.read())
        await served.handlers.stopped[style].wait()
    assert (ended.code, ended.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    assert served.verifier._key_watchers == {}
