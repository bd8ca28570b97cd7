"""The fast path rejects every forged or misused token (ARCHITECTURE: Identity, tokens)."""

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vaultpay_common.context import Role
from vaultpay_common.grpc.tokens import TokenExpiredError, TokenInvalidError, TokenVerifier

ISS, AUD = "vaultpay-auth", "vaultpay"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Keys:
    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.kid = "k1"
        self.public_raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.fetches = 0

    async def jwks(self) -> list[dict[str, str]]:
        self.fetches += 1
        return [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64(self.public_raw),
                "kid": self.kid,
                "alg": "EdDSA",
            }
        ]


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "role": "admin",
        "sid": "session-1",
        "jti": "j1",
        "typ": "access",
        "iat": now,
        "exp": now + 900,
    }
    claims.update(overrides)
    return claims


def _sign(keys: Keys, **overrides: Any) -> str:
    return jwt.encode(
        _claims(**overrides), keys.private, algorithm="EdDSA", headers={"kid": keys.kid}
    )


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def verifier(keys: Keys) -> TokenVerifier:
    return TokenVerifier(keys.jwks, issuer=ISS, audience=AUD, min_refresh_interval=0)


async def test_valid_token_yields_subject_role_and_session(
    keys: Keys, verifier: TokenVerifier
) -> None:
    claims = await verifier.verify(_sign(keys))
    assert (claims.subject, claims.role, claims.session_id) == ("user-1", Role.ADMIN, "session-1")


async def test_alg_none_is_rejected(verifier: TokenVerifier) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": "k1", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(role="super_admin")).encode())
    with pytest.raises(TokenInvalidError):
        await verifier.verify(f"{header}.{body}.")


async def test_token_signed_by_another_key_is_rejected(keys: Keys, verifier: TokenVerifier) -> None:
    forged = jwt.encode(
        _claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": keys.kid}
    )
    with pytest.raises(TokenInvalidError):
        await verifier.verify(forged)


async def test_expired_token_is_rejected_as_expired(keys: Keys, verifier: TokenVerifier) -> None:
    with pytest.raises(TokenExpiredError):
        await verifier.verify(_sign(keys, iat=int(time.time()) - 4000, exp=int(time.time()) - 3000))


async def test_tampered_claims_break_the_signature(keys: Keys, verifier: TokenVerifier) -> None:
    header, _, signature = _sign(keys).split(".")
    body = _b64(json.dumps(_claims(role="super_admin")).encode())
    with pytest.raises(TokenInvalidError):
        await verifier.verify(f"{header}.{body}.{signature}")


async def test_hs256_signed_with_the_public_key_is_rejected(
    keys: Keys, verifier: TokenVerifier
) -> None:
    header = _b64(json.dumps({"alg": "HS256", "kid": keys.kid, "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(role="super_admin")).encode())
    import hashlib
    import hmac

    mac = hmac.new(
        _b64(keys.public_raw).encode(), f"{header}.{body}".encode(), hashlib.sha256
    ).digest()
    with pytest.raises(TokenInvalidError):
        await verifier.verify(f"{header}.{body}.{_b64(mac)}")


async def test_refresh_token_is_not_an_access_token(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify("vprt_" + "A" * 43)


async def test_wrong_audience_is_rejected(keys: Keys, verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, aud="someone-else"))


async def test_unknown_token_type_is_rejected(keys: Keys, verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, typ="refresh"))


async def test_unknown_kid_refreshes_the_key_set_once(keys: Keys, verifier: TokenVerifier) -> None:
    await verifier.verify(_sign(keys))
    keys.private, keys.kid = Ed25519PrivateKey.generate(), "k2"
    keys.public_raw = keys.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    claims = await verifier.verify(_sign(keys))
    assert claims.subject == "user-1"
    assert keys.fetches == 2


async def test_verified_tokens_are_cached(keys: Keys, verifier: TokenVerifier) -> None:
    token = _sign(keys)
    await verifier.verify(token)
    await verifier.verify(token)
    assert keys.fetches == 1


async def test_a_key_withdrawn_from_the_jwks_stops_verifying_after_the_key_age(keys: Keys) -> None:
    verifier = TokenVerifier(
        keys.jwks, issuer=ISS, audience=AUD, min_refresh_interval=0, max_key_age=0
    )
    token = _sign(keys)
    await verifier.verify(token)  # cached
    withdrawn = keys.private
    keys.private, keys.kid = Ed25519PrivateKey.generate(), "k2"
    keys.public_raw = keys.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with pytest.raises(TokenInvalidError):
        await verifier.verify(token)  # the cached claims went with the key
    fresh = jwt.encode(_claims(), withdrawn, algorithm="EdDSA", headers={"kid": "k1"})
    with pytest.raises(TokenInvalidError):
        await verifier.verify(fresh)


async def test_the_key_set_is_not_refetched_while_young(keys: Keys) -> None:
    verifier = TokenVerifier(keys.jwks, issuer=ISS, audience=AUD, max_key_age=3600)
    for _ in range(3):
        await verifier.verify(_sign(keys))
    assert keys.fetches == 1
