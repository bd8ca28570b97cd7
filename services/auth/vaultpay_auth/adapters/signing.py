"""Ed25519 signing keys: stored encrypted in the database, rotated without downtime.

Exactly one key is active and signs new tokens; retired keys stay in the JWKS until every
token they signed has expired, so verifiers keep accepting them through a rotation. Each
replica reloads the key set every few seconds, so a rotation reaches all of them.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_auth.adapters.tables import signing_keys
from vaultpay_auth.domain.model import User
from vaultpay_common.grpc.tokens import ACCESS_TOKEN_TYPE, SERVICE_TOKEN_TYPE

__all__ = ["JwtIssuer", "KeyRing", "SigningKey"]

_ROTATION_LOCK = 0x4B455953  # "KEYS"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    public_x: str
    not_before: datetime
    retired_at: datetime | None
    private_key: Ed25519PrivateKey | None  # only while the key may still sign

    def signs_at(self, now: datetime) -> bool:
        live = self.retired_at is None or now < self.retired_at
        return self.private_key is not None and self.not_before <= now and live

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.public_x,
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }


class KeyRing:
    """Loads, creates and rotates signing keys. `kek` encrypts private keys at rest.

    A rotation is announced before it takes effect: the new key is published in the JWKS at
    once but signs only from `now + lead`, when the old key stops signing. Verifiers that
    cache the JWKS (Envoy caches it for minutes and does not refetch on an unknown `kid`)
    therefore know the new key before the first token it signs reaches them.
    """

    def __init__(self, engine: AsyncEngine, kek: bytes, *, verify_window: timedelta) -> None:
        self._engine = engine
        self._aead = AESGCM(kek)
        self._verify_window = verify_window
        self._keys: list[SigningKey] = []

    def _seal(self, kid: str, private: Ed25519PrivateKey) -> bytes:
        raw = private.private_bytes_raw()
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, raw, kid.encode())

    def _open(self, kid: str, sealed: bytes) -> Ed25519PrivateKey:
        raw = self._aead.decrypt(sealed[:12], sealed[12:], kid.encode())
        return Ed25519PrivateKey.from_private_bytes(raw)

    async def _insert_new(self, conn: AsyncConnection, now: datetime, not_before: datetime) -> str:
        kid = f"{now:%Y%m%d}-{uuid.uuid4().hex[:8]}"
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        await conn.execute(
            signing_keys.insert().values(
                kid=kid,
                private_key_encrypted=self._seal(kid, private),
                public_key_x=_b64url(public),
                created_at=now,
                not_before=not_before,
            )
        )
        return kid

    async def ensure_active(self) -> None:
        """Creates the first key if there is none (replicas race safely on a lock)."""
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ROTATION_LOCK})
            active = await conn.execute(
                select(signing_keys.c.kid).where(signing_keys.c.retired_at.is_(None))
            )
            if active.first() is None:
                now = datetime.now(UTC)
                await self._insert_new(conn, now, now)
        await self.reload()

    async def rotate(self, lead: timedelta) -> tuple[str, datetime]:
        """Publishes a new key now that starts signing after `lead` (when the current key
        retires); returns the new kid and when it takes over. A zero lead switches at once.
        """
        now = datetime.now(UTC)
        switch_at = now + lead
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ROTATION_LOCK})
            await conn.execute(
                update(signing_keys)
                .where(signing_keys.c.retired_at.is_(None))
                .values(retired_at=switch_at)
            )
            kid = await self._insert_new(conn, now, switch_at)
        await self.reload()
        return kid, switch_at

    async def withdraw(self, kid: str) -> str | None:
        """Emergency removal of a (compromised) key: it leaves the JWKS at once, so verifiers
        stop accepting its tokens within their key-refresh time. If it was signing, a new key
        takes over immediately. Returns the new kid, if one was made.
        """
        now = datetime.now(UTC)
        replacement = None
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ROTATION_LOCK})
            row = (
                await conn.execute(select(signing_keys).where(signing_keys.c.kid == kid))
            ).first()
            if row is None:
                raise LookupError(f"no signing key {kid!r}")
            if row.retired_at is None or row.retired_at > now:
                others = await conn.execute(
                    select(signing_keys.c.kid).where(
                        signing_keys.c.kid != kid,
                        signing_keys.c.not_before <= now,
                        signing_keys.c.retired_at.is_(None) | (signing_keys.c.retired_at > now),
                    )
                )
                if others.first() is None:
                    replacement = await self._insert_new(conn, now, now)
            long_ago = now - self._verify_window - timedelta(days=1)
            await conn.execute(
                update(signing_keys).where(signing_keys.c.kid == kid).values(retired_at=long_ago)
            )
        await self.reload()
        return replacement

    async def reload(self) -> None:
        now = datetime.now(UTC)
        cutoff = now - self._verify_window
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(signing_keys)
                    .where(
                        signing_keys.c.retired_at.is_(None) | (signing_keys.c.retired_at > cutoff)
                    )
                    .order_by(signing_keys.c.not_before.desc())
                )
            ).all()
        keys = []
        for row in rows:
            may_sign = row.retired_at is None or row.retired_at > now
            private = self._open(row.kid, row.private_key_encrypted) if may_sign else None
            keys.append(
                SigningKey(row.kid, row.public_key_x, row.not_before, row.retired_at, private)
            )
        self._keys = keys

    @property
    def active(self) -> SigningKey:
        """The key that signs now: the newest one whose time has come and not yet gone."""
        now = datetime.now(UTC)
        for key in self._keys:
            if key.signs_at(now):
                return key
        raise RuntimeError("no active signing key; run ensure_active() first")

    def jwks(self) -> list[dict[str, str]]:
        return [key.jwk() for key in self._keys]


class JwtIssuer:
    """Mints access and service tokens with the active key (implements AccessTokenIssuer)."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        access_ttl: timedelta,
        service_ttl: timedelta,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._access_ttl = access_ttl
        self._service_ttl = service_ttl

    def _sign(self, claims: dict[str, Any], ttl: timedelta) -> tuple[str, datetime]:
        key = self._keys.active
        assert key.private_key is not None
        now = datetime.now(UTC)
        expires_at = now + ttl
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": secrets.token_urlsafe(16),
            **claims,
        }
        token = jwt.encode(payload, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
        return token, expires_at.replace(microsecond=0)

    def issue_access_token(self, user: User, session_id: str) -> tuple[str, datetime]:
        claims = {
            "sub": user.id,
            "role": user.role.claim,
            "sid": session_id,
            "typ": ACCESS_TOKEN_TYPE,
        }
        return self._sign(claims, self._access_ttl)

    def issue_service_token(self, client_id: str) -> tuple[str, datetime]:
        return self._sign(
            {"sub": f"service:{client_id}", "typ": SERVICE_TOKEN_TYPE}, self._service_ttl
        )
