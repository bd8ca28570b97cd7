"""Forged and misused tokens are refused by Envoy (401) and by the service itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.e2e.conftest import Gateway
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_auth.adapters.signing import KeyRing
from vaultpay_common.db import create_engine
from vaultpay_devstack.mesh import Mesh


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(segment: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, body, signature = token.split(".")
    return _decode(header), _decode(body), signature


def _alg_none(token: str, _: Any) -> str:
    header, claims, _sig = _parts(token)
    claims["role"] = "super_admin"
    return f"{_b64(json.dumps(dict(header, alg='none')).encode())}.{_b64(json.dumps(claims).encode())}."


def _wrong_key(token: str, _: Any) -> str:
    header, claims, _sig = _parts(token)
    return jwt.encode(
        claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": header["kid"]}
    )


def _tampered(token: str, _: Any) -> str:
    _header, claims, signature = _parts(token)
    claims["role"] = "super_admin"
    return f"{token.split('.')[0]}.{_b64(json.dumps(claims).encode())}.{signature}"


def _hs256_with_public_key(token: str, jwks: Any) -> str:
    header, claims, _sig = _parts(token)
    signing_input = f"{_b64(json.dumps(dict(header, alg='HS256')).encode())}.{_b64(json.dumps(claims).encode())}"
    secret = jwks["keys"][0]["x"].encode()
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _refresh_as_access(_token: str, refresh: Any) -> str:
    return str(refresh)


FORGERIES: dict[str, Callable[[str, Any], str]] = {
    "alg-none": _alg_none,
    "wrong-key": _wrong_key,
    "tampered-claims": _tampered,
    "hs256-with-public-key": _hs256_with_public_key,
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_forged_tokens_are_401_at_the_gateway_and_unauthenticated_at_the_service(
    forgery: str, gateway: Gateway, mesh: Mesh
) -> None:
    genuine = gateway.user_token()
    forged = FORGERIES[forgery](genuine, gateway.call("GET", "/v1/auth/jwks").body)
    reply = gateway.call("GET", "/v1/auth/me", token=forged)
    assert reply.status == 401
    assert reply.body["code"] == 16
    await _service_refuses(mesh, forged)


async def test_refresh_token_is_not_an_access_token(gateway: Gateway, mesh: Mesh) -> None:
    email, _ = gateway.register()
    tokens = gateway.login(email)
    reply = gateway.call("GET", "/v1/auth/me", token=tokens["refreshToken"])
    assert reply.status == 401
    await _service_refuses(mesh, tokens["refreshToken"])


async def test_expired_token_signed_with_the_real_key_is_refused(
    gateway: Gateway, mesh: Mesh
) -> None:
    env = mesh.env_for("auth")
    engine = create_engine(env["AUTH_DATABASE_URL"], pool_size=1, application_name="e2e-forger")
    try:
        keys = KeyRing(
            engine,
            base64.b64decode(env["AUTH_KEY_ENCRYPTION_KEY"]),
            verify_window=timedelta(hours=1),
        )
        await keys.reload()
        active = keys.active
        assert active.private_key is not None
        _, claims, _sig = _parts(gateway.user_token())
        now = int(time.time())
        claims.update(iat=now - 3600, exp=now - 1800)
        expired = jwt.encode(
            claims, active.private_key, algorithm="EdDSA", headers={"kid": active.kid}
        )
    finally:
        await engine.dispose()
    reply = gateway.call("GET", "/v1/auth/me", token=expired)
    assert reply.status == 401
    await _service_refuses(mesh, expired, reason_hint="expired")


async def _service_refuses(mesh: Mesh, token: str, reason_hint: str = "") -> None:
    async with grpc.aio.insecure_channel(mesh.grpc_address("auth")) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetMe(
                auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    if reason_hint:
        assert reason_hint in (caught.value.details() or "")


def test_access_token_in_the_query_string_is_never_used(gateway: Gateway) -> None:
    token = gateway.user_token()
    reply = gateway.call("GET", f"/v1/auth/me?access_token={token}")
    # Unknown query parameters are refused outright, so the token is never read from there.
    assert reply.status in (400, 401)
    assert "user" not in reply.body


def test_logout_refuses_the_old_token_on_strict_routes_at_once(gateway: Gateway) -> None:
    token = gateway.user_token()
    assert gateway.call("GET", "/v1/auth/me", token=token).status == 200
    assert gateway.call("POST", "/v1/auth/logout", {}, token=token).status == 200
    after = gateway.call("GET", "/v1/auth/me", token=token)
    assert after.status == 401
    assert after.error_reason() == "TOKEN_REVOKED"
