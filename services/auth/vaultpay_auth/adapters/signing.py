"""Ed25519 signing keys: stored encrypted in the database, rotated without downtime, withdrawn
at once in an emergency.

A key's state follows from its `not_before` and `retired_at` columns:

    signing    not_before <= now < retired_at (or no retired_at): exactly one signs at a time
    next       published, signs from not_before (a rotation in progress)
    standby    published, not_before = STANDBY: never signs until promoted
    retired    stopped signing; stays in the JWKS for `verify_window`, so its tokens verify
    withdrawn  retired_at far in the past: out of the JWKS at once

There is always a standby, published ahead of need. Verifiers cache the JWKS (Envoy for minutes,
and it does not refetch on an unknown `kid`), so a key they have never seen makes them refuse
every token it signs. A rotation or an emergency withdrawal therefore promotes the key that has
been published longest (the standby, or a pending next key): every verifier that refreshed its
JWKS since then already holds it. A rotation waits until that key has been published for the
publish lead; a withdrawal cannot wait, and says so when the key it promotes is young.

Every change is announced in its own transaction with NOTIFY on `KEY_CHANGES_CHANNEL`; each
replica's `watch()` LISTENs and reloads at once, and also every `interval` seconds in case a
notification is lost. So a withdrawn key stops signing (and verifying) within milliseconds.

The other services verify tokens with the JWKS they fetched (refreshed every minute), so a
withdrawal also records `withdrawn_at` and wakes the revocation feed's held polls
(`REVOCATION_CHANNEL`): every answer of the feed names the keys withdrawn within its
look-back, and a peer forgets such a key, and every token it verified under it, as soon as
one arrives (vaultpay_common.grpc.revocations).

`rotate` and `withdraw` take an `audit` writer: the audit row is written in the change's own
transaction, so a change is never left without its row (nor a row without its change).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_auth.adapters.revocations import REVOCATION_CHANNEL
from vaultpay_auth.adapters.tables import signing_keys
from vaultpay_auth.domain.model import User
from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock, SystemClock
from vaultpay_common.grpc.tokens import ACCESS_TOKEN_TYPE, SERVICE_TOKEN_TYPE, service_audience

__all__ = [
    "KEY_CHANGES_CHANNEL",
    "STANDBY",
    "AuditWriter",
    "JwtIssuer",
    "KeyRing",
    "SigningKey",
    "UnknownSigningKeyError",
    "Withdrawal",
]

log = logging.getLogger(__name__)

_ROTATION_LOCK = 0x4B455953  # "KEYS"
# `not_before` of a standby key: published, but it signs only once promoted.
STANDBY = datetime(9999, 1, 1, tzinfo=UTC)
KEY_CHANGES_CHANNEL = "vaultpay_auth_signing_keys"
_PROBE_TIMEOUT = 5.0

ChangeListener = Callable[[], Awaitable[object]]
# Appends an audit row on the change's own connection (e.g. `AuditLog().append`).
AuditWriter = Callable[[AsyncConnection, AuditEntry], Awaitable[object]]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    public_x: str
    published_at: datetime
    not_before: datetime
    retired_at: datetime | None
    private_key: Ed25519PrivateKey | None  # only while the key may still sign

    @property
    def is_standby(self) -> bool:
        return self.not_before >= STANDBY and self.retired_at is None

    def signs_at(self, when: datetime) -> bool:
        live = self.retired_at is None or when < self.retired_at
        return self.private_key is not None and self.not_before <= when and live

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.public_x,
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }


@dataclass(frozen=True, slots=True)
class _State:
    """A key's place in the line-up, as stored (no key material)."""

    kid: str
    created_at: datetime
    not_before: datetime
    retired_at: datetime | None


class UnknownSigningKeyError(LookupError):
    """`withdraw` was given a kid the ring has never had (the operator's typo)."""


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """What a withdrawal left behind: the key that signs now and the next standby."""

    kid: str
    signer: SigningKey
    switched: bool  # the withdrawn key was signing or about to: `signer` took over
    standby: SigningKey | None


class KeyRing:
    """Loads, creates, rotates and withdraws signing keys. `kek` encrypts private keys at rest.

    Every change runs under one advisory lock, so replicas and the CLI never race, and ends in
    a consistent line-up: one key signing now with no gap ahead, and a standby published.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        kek: bytes,
        *,
        verify_window: timedelta,
        clock: Clock | None = None,
    ) -> None:
        self._engine = engine
        self._aead = AESGCM(kek)
        self._verify_window = verify_window
        self._clock = clock or SystemClock()
        self._keys: list[SigningKey] = []
        self._listeners: list[ChangeListener] = []
        self._watching = False

    # ----- what this replica holds ------------------------------------------------------------

    @property
    def active(self) -> SigningKey:
        """The key that signs now."""
        return self.signer_at(self._clock.now())

    def signer_at(self, when: datetime) -> SigningKey:
        """The key that signs at `when` as far as the loaded line-up goes: the newest one whose
        time has come and not yet gone."""
        for key in self._keys:
            if key.signs_at(when):
                return key
        raise RuntimeError("no active signing key; run ensure_active() first")

    @property
    def standby(self) -> SigningKey | None:
        """The standby published longest (the one a withdrawal would promote)."""
        standbys = [key for key in self._keys if key.is_standby]
        return min(standbys, key=lambda key: key.published_at, default=None)

    @property
    def watching(self) -> bool:
        """Whether `watch()` listens for key changes (and has loaded the keys since)."""
        return self._watching

    def jwks(self) -> list[dict[str, str]]:
        return [key.jwk() for key in self._keys]

    def on_change(self, listener: ChangeListener) -> None:
        """`listener` is awaited after every reload that changed the keys (e.g. so a verifier
        drops the tokens of a withdrawn key at once)."""
        self._listeners.append(listener)

    # ----- changes ----------------------------------------------------------------------------

    async def ensure_active(self) -> None:
        """Creates the first key and the standby if missing (replicas race safely on a lock)."""
        async with self._engine.begin() as conn:
            await self._lock(conn)
            if await self._repair(conn, self._clock.now()):
                await self._announce(conn, "repaired")
        await self.reload()

    async def rotate(
        self, lead: timedelta, *, audit: AuditWriter | None = None, via: str = ""
    ) -> tuple[str, datetime]:
        """Promotes the key published longest (normally the standby) to sign once it has been
        published for `lead` (at once if it already has, or if `lead` is zero); the key that
        signs now retires then, and a new standby is published. Returns the promoted kid and
        when it takes over. `audit` writes `signing_key.rotated` (details: `via`, `signs_from`)
        in the same transaction.
        """
        now = self._clock.now()
        async with self._engine.begin() as conn:
            await self._lock(conn)
            await self._repair(conn, now)
            rows = await self._rows(conn)
            waiting = sorted(
                (r for r in rows if _is_live(r, now) and r.not_before > now),
                key=lambda r: r.created_at,
            )
            promoted = waiting[0]  # _repair guarantees a standby
            switch_at = now if lead <= timedelta(0) else max(now, promoted.created_at + lead)
            switch_at = min(switch_at, promoted.not_before)
            await conn.execute(
                update(signing_keys)
                .where(
                    signing_keys.c.kid != promoted.kid,
                    signing_keys.c.not_before < STANDBY,
                    signing_keys.c.retired_at.is_(None) | (signing_keys.c.retired_at > switch_at),
                )
                .values(retired_at=switch_at)
            )
            await conn.execute(
                update(signing_keys)
                .where(signing_keys.c.kid == promoted.kid)
                .values(not_before=switch_at, retired_at=None)
            )
            if audit is not None:
                details = {"via": via, "signs_from": switch_at.isoformat()}
                entry = AuditEntry("signing_key.rotated", "signing_key", promoted.kid, details)
                await audit(conn, entry)
            await self._repair(conn, now)
            await self._announce(conn, f"rotated:{promoted.kid}")
        await self.reload()
        return promoted.kid, switch_at

    async def withdraw(
        self, kid: str, *, audit: AuditWriter | None = None, via: str = ""
    ) -> Withdrawal:
        """Emergency removal of a (compromised) key: it leaves the JWKS at once, and the
        revocation feed tells the peers at once. If it was signing (or about to), the key
        published longest takes over now and a new standby is published. `audit` writes
        `signing_key.withdrawn` (details: `via`, `signer`, `switched`, `standby`) in the same
        transaction. Raises UnknownSigningKeyError for an unknown kid.
        """
        now = self._clock.now()
        async with self._engine.begin() as conn:
            await self._lock(conn)
            rows = await self._rows(conn)
            if not any(r.kid == kid for r in rows):
                raise UnknownSigningKeyError(f"no signing key {kid!r}")
            before = _signer(rows, now)
            long_ago = now - self._verify_window - timedelta(days=1)
            await conn.execute(
                update(signing_keys)
                .where(signing_keys.c.kid == kid)
                .values(
                    retired_at=long_ago,
                    # The database's clock: the feed's look-back compares it with clock_timestamp().
                    withdrawn_at=func.coalesce(signing_keys.c.withdrawn_at, func.now()),
                )
            )
            await self._repair(conn, now)
            rows = await self._rows(conn)
            after = _signer(rows, now)
            assert after is not None  # _repair guarantees a signer
            switched = before is None or before.kid != after.kid
            await self._announce(conn, f"withdrawn:{kid}")
            await conn.execute(  # wakes the feed's held polls: the peers hear of it now
                text("SELECT pg_notify(:channel, 'signing_key')"), {"channel": REVOCATION_CHANNEL}
            )
            if audit is not None:
                standby = _longest_published_standby(rows)
                details = {
                    "via": via,
                    "signer": after.kid,
                    "switched": str(switched).lower(),
                    "standby": standby.kid if standby is not None else "",
                }
                await audit(conn, AuditEntry("signing_key.withdrawn", "signing_key", kid, details))
        await self.reload()
        signer = next(key for key in self._keys if key.kid == after.kid)
        return Withdrawal(kid, signer, switched, self.standby)

    # ----- keeping a replica current ----------------------------------------------------------

    async def reload(self) -> None:
        now = self._clock.now()
        cutoff = now - self._verify_window
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(signing_keys)
                    .where(
                        signing_keys.c.retired_at.is_(None) | (signing_keys.c.retired_at > cutoff)
                    )
                    .order_by(signing_keys.c.not_before.desc(), signing_keys.c.created_at.desc())
                )
            ).all()
        keys = []
        for row in rows:
            may_sign = row.retired_at is None or row.retired_at > now
            private = self._open(row.kid, row.private_key_encrypted) if may_sign else None
            keys.append(
                SigningKey(
                    row.kid,
                    row.public_key_x,
                    row.created_at,
                    row.not_before,
                    row.retired_at,
                    private,
                )
            )
        changed = _line_up(keys) != _line_up(self._keys)
        self._keys = keys
        if changed:
            for listener in self._listeners:
                try:
                    await listener()
                except Exception:
                    log.warning("a signing-key change listener failed", exc_info=True)

    async def watch(self, interval: float) -> None:
        """Keeps this replica's keys current until cancelled: LISTENs for key changes and
        reloads as soon as one is committed anywhere, and every `interval` seconds besides.

        Run it as a long-lived job (`runtime.every(interval, lambda: keys.watch(interval))`):
        when its connection is lost it reloads once through the pool and raises, and the job
        runs it again after `interval`.
        """
        changed = asyncio.Event()

        def on_notify(*_: object) -> None:
            changed.set()

        async with self._engine.connect() as conn:
            try:
                raw: Any = (await conn.get_raw_connection()).driver_connection
                await raw.add_listener(KEY_CHANGES_CHANNEL, on_notify)
                raw.add_termination_listener(on_notify)
                while True:
                    changed.clear()
                    await self.reload()  # after LISTEN: nothing committed since is missed
                    self._watching = True
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(interval):  # never swallows a cancel
                            await changed.wait()
                    # A dead link raises here (and ends the job) instead of going quiet.
                    async with asyncio.timeout(_PROBE_TIMEOUT):
                        await raw.fetchval("SELECT 1")
            except Exception:
                # Whatever was committed while the link died, read it through the pool now
                # rather than when the job next runs.
                with contextlib.suppress(Exception):
                    await self.reload()
                raise
            finally:
                self._watching = False
                # The LISTEN connection never goes back to the pool.
                with contextlib.suppress(Exception):
                    await conn.invalidate()

    # ----- internals --------------------------------------------------------------------------

    def _seal(self, kid: str, private: Ed25519PrivateKey) -> bytes:
        raw = private.private_bytes_raw()
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, raw, kid.encode())

    def _open(self, kid: str, sealed: bytes) -> Ed25519PrivateKey:
        raw = self._aead.decrypt(sealed[:12], sealed[12:], kid.encode())
        return Ed25519PrivateKey.from_private_bytes(raw)

    @staticmethod
    async def _lock(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ROTATION_LOCK})

    @staticmethod
    async def _announce(conn: AsyncConnection, what: str) -> None:
        """Delivered to every listening replica when (and only if) the transaction commits."""
        await conn.execute(
            text("SELECT pg_notify(:channel, :what)"),
            {"channel": KEY_CHANGES_CHANNEL, "what": what},
        )

    @staticmethod
    async def _rows(conn: AsyncConnection) -> list[_State]:
        c = signing_keys.c
        query = select(c.kid, c.created_at, c.not_before, c.retired_at)
        return [_State(*row) for row in (await conn.execute(query)).all()]

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

    async def _repair(self, conn: AsyncConnection, now: datetime) -> bool:
        """Restores the line-up (under the lock): a key signing now with no gap ahead, and a
        standby. Returns whether anything changed."""
        changed = False
        rows = await self._rows(conn)
        live = [r for r in rows if _is_live(r, now)]
        if _signer(rows, now) is None:
            waiting = sorted((r for r in live if r.not_before > now), key=lambda r: r.created_at)
            if waiting:
                promoted = waiting[0]
                await conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.kid == promoted.kid)
                    .values(not_before=now, retired_at=None)
                )
                # Any other key that was due to sign goes back to standby: one successor line.
                for other in waiting[1:]:
                    if other.not_before < STANDBY:
                        await conn.execute(
                            update(signing_keys)
                            .where(signing_keys.c.kid == other.kid)
                            .values(not_before=STANDBY, retired_at=None)
                        )
            else:
                await self._insert_new(conn, now, now)
            changed = True
        elif not any(r.retired_at is None and r.not_before < STANDBY for r in live):
            # The key due to take over was withdrawn: the signing key goes on signing.
            signer = _signer(rows, now)
            assert signer is not None
            await conn.execute(
                update(signing_keys).where(signing_keys.c.kid == signer.kid).values(retired_at=None)
            )
            changed = True
        rows = await self._rows(conn)
        if not any(r.not_before >= STANDBY and r.retired_at is None for r in rows):
            await self._insert_new(conn, now, STANDBY)
            changed = True
        return changed


def _is_live(row: _State, now: datetime) -> bool:
    return row.retired_at is None or row.retired_at > now


def _longest_published_standby(rows: Sequence[_State]) -> _State | None:
    standbys = [r for r in rows if r.not_before >= STANDBY and r.retired_at is None]
    return min(standbys, key=lambda r: r.created_at, default=None)


def _signer(rows: Sequence[_State], now: datetime) -> _State | None:
    signing = [r for r in rows if r.not_before <= now and _is_live(r, now)]
    return max(signing, key=lambda r: r.not_before, default=None)


def _line_up(keys: Sequence[SigningKey]) -> list[tuple[str, datetime, datetime | None]]:
    return [(key.kid, key.not_before, key.retired_at) for key in keys]


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

    def _sign(
        self, claims: dict[str, Any], ttl: timedelta, not_after: datetime | None = None
    ) -> tuple[str, datetime]:
        key = self._keys.active
        assert key.private_key is not None
        now = datetime.now(UTC)
        expires_at = now + ttl if not_after is None else min(now + ttl, not_after)
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

    def issue_access_token(
        self, user: User, session_id: str, *, not_after: datetime
    ) -> tuple[str, datetime]:
        """Never valid past `not_after` (its session's end): the services learn of revoked
        sessions from auth's feed, but a session that merely expires is in no feed."""
        claims = {
            "sub": user.id,
            "role": user.role.claim,
            "sid": session_id,
            "typ": ACCESS_TOKEN_TYPE,
        }
        return self._sign(claims, self._access_ttl, not_after)

    def issue_service_token(self, client_id: str, peer: str) -> tuple[str, datetime]:
        """A token `client_id` presents to `peer` alone (`service_audience`); `peer` empty:
        addressed to the whole mesh, as builds before scoped tokens asked for (accepted only
        where `accept_unscoped_service_tokens`)."""
        audience = service_audience(self._audience, peer) if peer else self._audience
        claims = {"sub": f"service:{client_id}", "typ": SERVICE_TOKEN_TYPE, "aud": audience}
        return self._sign(claims, self._service_ttl)
