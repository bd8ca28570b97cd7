"""The client side every other service uses (vaultpay_common.grpc.auth_client), against the
real auth service: service identity, JWKS, the strict path, and failing closed."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import jwt
import pytest

from tests.integration.auth.conftest import SERVICE_SECRET, AuthStack, bearer
from tests.ports import closed_port
from vaultpay.auth.v1 import auth_pb2
from vaultpay_common.context import Role
from vaultpay_common.errors import UnauthenticatedError
from vaultpay_common.grpc.auth_client import (
    AuthUnavailableError,
    GrpcTokenIntrospector,
    PeerAuth,
    ServiceTokenProvider,
)
from vaultpay_common.grpc.authz import AuthInterceptor, InsufficientPermissionsError
from vaultpay_common.grpc.rules import AccessRule

STRICT_ADMIN = "/vaultpay.test.v1.Probe/StrictAdmin"
STRICT_USER = "/vaultpay.test.v1.Probe/StrictUser"


@dataclass
class _Metadatum:
    key: str
    value: str


class _Context:
    def __init__(self, token: str) -> None:
        self._metadata = [_Metadatum("authorization", f"Bearer {token}")]

    def invocation_metadata(self) -> list[_Metadatum]:
        return self._metadata


def _peer_interceptor(channel: grpc.aio.Channel) -> AuthInterceptor:
    """What wallet/transfer/kyc build: public keys from auth, strict path through auth."""
    peer = PeerAuth(
        channel,
        client_id="wallet",
        client_secret=SERVICE_SECRET,
        issuer="vaultpay-auth",
        audience="vaultpay",
        service="wallet",
    )
    rules = {
        STRICT_ADMIN: AccessRule(min_role=Role.ADMIN, strict=True),
        STRICT_USER: AccessRule(min_role=Role.USER, strict=True),
    }
    return AuthInterceptor(rules, peer.verifier, peer.introspector, revocations=peer.revocations)


async def test_a_peer_service_verifies_and_introspects_through_auth(auth: AuthStack) -> None:
    interceptor = _peer_interceptor(auth.channel)
    user, tokens = await auth.user_with_token()
    principal = await interceptor.authorize(STRICT_USER, _Context(tokens.access_token))
    assert principal is not None
    assert (principal.user_id, principal.role) == (user.user_id, Role.USER)


async def test_the_strict_path_sees_revocation_and_the_current_role(auth: AuthStack) -> None:
    interceptor = _peer_interceptor(auth.channel)
    _, tokens = await auth.user_with_token()
    with pytest.raises(InsufficientPermissionsError, match="requires role ADMIN"):
        await interceptor.authorize(STRICT_ADMIN, _Context(tokens.access_token))
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
    with pytest.raises(UnauthenticatedError) as revoked:
        await interceptor.authorize(STRICT_USER, _Context(tokens.access_token))
    assert revoked.value.reason == "TOKEN_REVOKED"


async def test_service_token_is_reused_until_it_nears_expiry(auth: AuthStack) -> None:
    identity = ServiceTokenProvider(auth.channel, "wallet", SERVICE_SECRET)
    assert await identity.token("auth") == await identity.token("auth")
    # One token per peer, each addressed to that peer alone.
    to_transfer = identity.for_peer("transfer")
    assert await to_transfer() == await identity.token("transfer") != await identity.token("auth")
    audiences = {
        peer: jwt.decode(await identity.token(peer), options={"verify_signature": False})["aud"]
        for peer in ("auth", "transfer", "kyc")
    }
    assert audiences == {
        "auth": "vaultpay:auth",
        "transfer": "vaultpay:transfer",
        "kyc": "vaultpay:kyc",
    }
    with pytest.raises(ValueError, match="not a service of the mesh"):
        identity.for_peer("gateway")


async def test_strict_calls_fail_closed_when_auth_is_unreachable(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{closed_port()}") as dead:
        identity = ServiceTokenProvider(dead, "wallet", SERVICE_SECRET)
        introspector = GrpcTokenIntrospector(dead, identity)
        with pytest.raises(AuthUnavailableError):
            await introspector.introspect(tokens.access_token)
