"""Access-token verification with public keys only (EdDSA), plus the strict-path port.

The key set is refreshed when it is older than `max_key_age` (so a key withdrawn from the JWKS
stops verifying within that time, and tokens it signed are dropped from the cache) and when a
token names an unknown `kid` (rate-limited, so random kids cannot hammer auth). A service that
follows auth's revocation feed hears of a withdrawal sooner: `forget_keys` drops the key and
its cached tokens at once, and keeps it out of every key set fetched later.

Verified tokens are cached until they expire (PyJWT costs 0.05-0.3 ms a call); an unknown
`kid` triggers one JWKS refresh (rate-limited) so rotated keys are picked up at once.

A key set whose refreshes have failed for `max_unconfirmed_key_age` since the first of them
(auth unreachable: neither the refresh nor the revocation feed can tell of a withdrawal
meanwhile) stops verifying anything, cached tokens included (AUTH_UNAVAILABLE, retryable):
otherwise a key withdrawn during the outage (a leak) would keep verifying the tokens an
attacker mints with it, on every RPC that is not strict. Measured from the first failed
refresh, not the last success: a peer idle for hours whose first refresh meets a blip is not
refused for it. The default outlives any token auth issued before the outage began.

Header and payload are parsed at least as strictly as Envoy parses them at the edge, so the
service never reads a claim the gateway did not check: strict base64url, UTF-8 JSON objects
without duplicate keys (a lenient parser keeps the last `role`), NumericDates that are JSON
integers (PyJWT alone would `int()` a numeric string), string-valued claims, and a lifetime
`exp - iat` no longer than the longest token auth issues (`max_token_lifetime`).

Audiences: a user's access token is addressed to the whole mesh (`audience`, "vaultpay"); a
service's token to the one service it calls (`service_audience`, "vaultpay:wallet"), and only
that service's verifier (`service`) accepts it. A peer that receives a call therefore cannot
replay the caller's token elsewhere as the caller (transfer presenting wallet's token to
auth's GetUserContact, which names only wallet among its callers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from jwt.algorithms import OKPAlgorithm

from vaultpay_common.context import Role
from vaultpay_common.errors import UnauthenticatedError, UnavailableError

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DEFAULT_MAX_TOKEN_LIFETIME",
    "DEFAULT_MAX_UNCONFIRMED_KEY_AGE",
    "MESH_SERVICES",
    "SERVICE_TOKEN_TYPE",
    "AuthUnavailableError",
    "Introspection",
    "TokenClaims",
    "TokenExpiredError",
    "TokenIntrospector",
    "TokenInvalidError",
    "TokenRevokedError",
    "TokenVerifier",
    "service_audience",
]

log = logging.getLogger(__name__)

ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - a token type, not a secret
SERVICE_TOKEN_TYPE = "service"  # noqa: S105
# The services a service token may be addressed to (`service_audience`).
MESH_SERVICES = ("auth", "wallet", "transfer", "kyc")
_ALGORITHMS = ["EdDSA"]
_REQUIRED = ["exp", "iat", "sub", "jti", "iss", "aud", "typ"]
# The access-token lifetime (ARCHITECTURE: 15 min); service tokens live 10 min.
DEFAULT_MAX_TOKEN_LIFETIME = 15 * 60
# How long a key set may go unconfirmed (auth unreachable) and still verify: past the longest
# token issued before the outage (and its leeway), as long as the revocation feed's look-back.
DEFAULT_MAX_UNCONFIRMED_KEY_AGE = 20 * 60
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_MAX_SEGMENT_CHARS = 8192
_TIME_CLAIMS = ("exp", "iat", "nbf")
_STRING_CLAIMS = ("iss", "sub", "jti", "typ", "sid", "role")
_MAX_NUMERIC_DATE = 2**53 - 1  # the largest integer every JSON parser reads exactly


class TokenInvalidError(UnauthenticatedError):
    reason = "TOKEN_INVALID"
    default_message = "the access token is missing or invalid"


class TokenExpiredError(UnauthenticatedError):
    reason = "TOKEN_EXPIRED"
    default_message = "the access token has expired"


class TokenRevokedError(UnauthenticatedError):
    reason = "TOKEN_REVOKED"
    default_message = "the access token has been revoked"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    token_type: str
    role: Role | None
    session_id: str
    token_id: str
    expires_at: float
    key_id: str = ""


@dataclass(frozen=True, slots=True)
class Introspection:
    """auth's answer on the strict path."""

    active: bool
    reason: str = ""  # an UPPER_SNAKE reason when inactive, e.g. TOKEN_REVOKED
    role: Role | None = None
    user_id: str = ""
    session_id: str = ""


class AuthUnavailableError(UnavailableError):
    reason = "AUTH_UNAVAILABLE"
    default_message = "the auth service is unavailable, retry later"


class TokenIntrospector(Protocol):
    async def introspect(self, token: str) -> Introspection: ...


JwksFetcher = Callable[[], Awaitable[list[dict[str, str]]]]


# How long a call waits for a key-set refresh it started while the keys it holds are good.
_INLINE_REFRESH_PATIENCE = 0.2


class TokenVerifier:
    def __init__(
        self,
        fetch_jwks: JwksFetcher,
        *,
        issuer: str,
        audience: str,
        service: str,
        accept_unscoped_service_tokens: bool = False,
        leeway_seconds: int = 30,
        cache_size: int = 10_000,
        min_refresh_interval: float = 2.0,
        max_key_age: float = 60.0,
        max_unconfirmed_key_age: float = DEFAULT_MAX_UNCONFIRMED_KEY_AGE,
        max_token_lifetime: float = DEFAULT_MAX_TOKEN_LIFETIME,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._monotonic = monotonic  # the key set's age; a test's seam
        self._wall = wall  # the key set's age too: the monotonic clock stands still in a pause
        self._max_token_lifetime = max_token_lifetime
        self._issuer = issuer
        self._audience = audience
        # What each kind of token must be addressed to (`_check_audience`).
        self._service_audiences = {service_audience(audience, service)}
        if accept_unscoped_service_tokens:
            self._service_audiences.add(audience)
        self._leeway = leeway_seconds
        self._keys: dict[str, Any] = {}
        self._withdrawn: set[str] = set()  # forgotten for good (`forget_keys`)
        self._cache: OrderedDict[str, TokenClaims] = OrderedDict()
        self._cache_size = cache_size
        # Never refreshed: minus infinity, not 0.0. time.monotonic() counts from boot, so on a
        # machine up for less than the interval 0.0 would read as "just refreshed".
        # The last refresh that succeeded (when it began): the key set's age.
        self._last_refresh = -math.inf
        self._last_refresh_wall = -math.inf
        # The last attempt, failed or not (when it ended, if it failed): what the refresh
        # interval counts from.
        self._last_attempt = -math.inf
        self._last_attempt_wall = -math.inf
        self._last_refresh_failed = False
        # The first refresh that failed since one last read the key set (None: none failed).
        self._failing_since: float | None = None
        self._failing_since_wall = 0.0
        self._min_refresh_interval = min_refresh_interval
        self._max_key_age = max_key_age
        # Never below the refresh interval: a set is not refreshed before it is that old.
        self._max_unconfirmed_key_age = max(max_unconfirmed_key_age, max_key_age)
        self._refresh_lock = asyncio.Lock()
        self._background_refresh: asyncio.Future[None] | None = None
        # Open streams' tokens, by signing key: told when the key is withdrawn (`watch_key`).
        self._key_watchers: dict[str, set[Callable[[], None]]] = {}

    @property
    def leeway_seconds(self) -> int:
        """How long past `exp` a token is still accepted (clock skew between auth and us)."""
        return self._leeway

    async def refresh_keys(self, *, force: bool = False) -> None:
        async with self._refresh_lock:
            if not force and self._since_last_attempt() < self._min_refresh_interval:
                return
            now, now_wall = self._monotonic(), self._wall()
            self._last_attempt, self._last_attempt_wall = now, now_wall
            self._last_refresh_failed = True
            if self._failing_since is None:  # until the fetch below succeeds
                self._failing_since, self._failing_since_wall = now, now_wall
            try:
                jwks = await self._fetch_jwks()
            except BaseException:
                # The interval counts from the failed attempt's end: with auth hung (each
                # fetch waits out its timeout, longer than the interval) every caller queued
                # on the lock started a fetch of its own, one after another. The set's age
                # goes on: the next call past the interval tries again, and a key withdrawn
                # meanwhile (a VM pause past the feed's look-back) goes once auth answers,
                # not a key age later (reviews of 2026-12-05).
                self._last_attempt, self._last_attempt_wall = self._monotonic(), self._wall()
                raise
            self._last_refresh, self._last_refresh_wall = now, now_wall
            self._last_refresh_failed = False
            self._failing_since = None
            keys: dict[str, Any] = {}
            for jwk in jwks:
                usable = jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519"
                if usable and jwk.get("kid") and jwk["kid"] not in self._withdrawn:
                    keys[jwk["kid"]] = OKPAlgorithm.from_jwk(jwk)
            withdrawn = self._keys.keys() - keys.keys()
            self._keys = keys
            self._drop_cached(withdrawn)

    def forget_keys(self, kids: Iterable[str]) -> None:
        """Forgets signing keys auth withdrew, for good: the tokens they signed, cached ones
        too, are refused from now on (TOKEN_INVALID), and no key set fetched later (say, from
        an auth replica that has not reloaded yet) brings them back. Called with the same
        kids on every poll of the revocation feed; only news costs anything."""
        news = set(kids) - self._withdrawn
        if not news:
            return
        self._withdrawn |= news
        for kid in news & self._keys.keys():
            del self._keys[kid]
        self._drop_cached(news)
        log.warning("signing keys withdrawn by auth: %s", ", ".join(sorted(news)))

    def _drop_cached(self, kids: set[str]) -> None:
        if kids:
            for token in [t for t, c in self._cache.items() if c.key_id in kids]:
                del self._cache[token]
            for kid in kids:
                for on_withdrawn in self._key_watchers.pop(kid, ()):
                    on_withdrawn()

    def watch_key(self, kid: str, on_withdrawn: Callable[[], None]) -> Callable[[], None]:
        """Calls `on_withdrawn()` once, when the key `kid` is withdrawn (named by the feed,
        or gone from a key set fetched later); returns the function that cancels the watch.
        An open stream ends with its token's key, as a unary call with that token is refused
        (review of 2026-12-05: a stream opened with a leaked key's token outlived the key's
        withdrawal until the token expired). The caller checks `check_key` first, with no
        await between; the callback runs inside the withdrawal, so it must only note it."""
        watchers = self._key_watchers.setdefault(kid, set())
        watchers.add(on_withdrawn)

        def unwatch() -> None:
            current = self._key_watchers.get(kid)
            if current is not None:
                current.discard(on_withdrawn)
                if not current:
                    del self._key_watchers[kid]

        return unwatch

    def check_key(self, kid: str) -> None:
        """Refuses a token already verified, as `verify` would refuse it now: its key since
        withdrawn (TOKEN_INVALID), or auth's keys unconfirmed past their bound
        (AUTH_UNAVAILABLE). No await: what an open stream checks before each message."""
        if kid in self._withdrawn or (self._keys and kid not in self._keys):
            raise TokenInvalidError("the token was signed with a withdrawn key")
        if self._unconfirmed_too_long():
            raise AuthUnavailableError(
                "auth's signing keys could not be confirmed for too long; retry later"
            )

    async def _refresh_if_stale(self) -> None:
        if (
            self._key_set_age() < self._max_key_age
            or self._refresh_lock.locked()
            or self._since_last_attempt() < self._min_refresh_interval
        ):
            # Fresh enough, being refreshed or just tried: the keys held serve meanwhile
            # (within the unconfirmed bound, which `verify` checks).
            return
        if self._keys and not self._unconfirmed_too_long():
            # Keys are held and still good: the refresh runs as a task of its own, awaited
            # for a moment only (auth answers in milliseconds; then this call already sees
            # its answer). Awaited whole, a hung auth (each fetch waiting out its 3 s
            # timeout) stalled one call in every few seconds, service tokens on the money
            # path among them (review of 2026-12-05); past the moment the keys held serve.
            if self._background_refresh is None or self._background_refresh.done():
                self._background_refresh = asyncio.ensure_future(self._refresh_quietly())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(self._background_refresh), _INLINE_REFRESH_PATIENCE
                )
            return
        await self._refresh_quietly()

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh_keys()
        except Exception:
            log.warning("could not refresh the JWKS", exc_info=True)

    async def _key_for(self, kid: str) -> Any:
        if kid in self._withdrawn:
            raise TokenInvalidError("the token was signed with a withdrawn key")
        if kid not in self._keys:
            try:
                await self.refresh_keys()
            except Exception:
                log.warning("could not refresh the JWKS", exc_info=True)
        key = self._keys.get(kid)
        if key is None:
            if self._last_refresh_failed:
                # auth's keys could not be read (auth down, or we started before it): the
                # key may well be auth's, so "sign in again" would be wrong. Retryable.
                raise AuthUnavailableError("auth's signing keys cannot be read, retry later")
            raise TokenInvalidError("the token was signed with an unknown key")
        return key

    async def verify(self, token: str) -> TokenClaims:
        if self._key_set_age() >= self._max_key_age:
            await self._refresh_if_stale()
        if self._unconfirmed_too_long() and not self._refresh_lock.locked():
            # Ask auth again before refusing (at most once per `min_refresh_interval`): the
            # stale-set refresh above waits `max_key_age` after each failure, which held every
            # call refused up to a minute after auth answered again (review of 2026-12-05).
            # A call that finds a refresh under way is refused at once, not queued behind it.
            try:
                await self.refresh_keys()
            except Exception:
                log.warning("could not refresh the JWKS", exc_info=True)
        if self._unconfirmed_too_long():
            raise AuthUnavailableError(
                "auth's signing keys could not be confirmed for too long: a key withdrawn"
                " meanwhile would go unnoticed; retry later"
            )
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + self._leeway > time.time():
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
        header = self._checked_shape(token)
        key = await self._key_for(header["kid"])
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=_ALGORITHMS,
                audience=[self._audience, *self._service_audiences],
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpiredError() from exc
        except jwt.PyJWTError as exc:
            raise TokenInvalidError() from exc
        # After the expiry check, so an expired token is reported as expired whatever it claims.
        if not 0 < payload["exp"] - payload["iat"] <= self._max_token_lifetime:
            raise TokenInvalidError("the token's lifetime is not one auth issues")
        claims = _claims_from(payload, header["kid"])
        self._check_audience(claims.token_type, payload["aud"])
        if claims.key_id in self._withdrawn:  # forgotten while this call awaited the key set
            raise TokenInvalidError("the token was signed with a withdrawn key")
        self._cache[token] = claims
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return claims

    def _key_set_age(self) -> float:
        """Since the last successful refresh began, by the older of two clocks:
        CLOCK_MONOTONIC stands still while the VM is paused, so after a pause longer than the
        feed's look-back a key withdrawn during it (no longer named by the feed) verified
        until a minute of monotonic time had passed (review of 2026-12-05; RevocationSet
        reads both too)."""
        return max(self._monotonic() - self._last_refresh, self._wall() - self._last_refresh_wall)

    def _since_last_attempt(self) -> float:
        return max(self._monotonic() - self._last_attempt, self._wall() - self._last_attempt_wall)

    def _unconfirmed_too_long(self) -> bool:
        """The key set has gone unconfirmed (every refresh failing) past its bound, counted
        from the first failed refresh, by the older of two clocks as the key set's age is: a
        key withdrawn meanwhile would go unnoticed, and CLOCK_MONOTONIC stands still while the
        VM is paused (an hour's pause in an outage left the bound's 20 minutes to run: review
        of 2026-12-05)."""
        failing_since = self._failing_since
        if not self._keys or failing_since is None:
            return False
        unconfirmed = max(
            self._monotonic() - failing_since, self._wall() - self._failing_since_wall
        )
        return unconfirmed > self._max_unconfirmed_key_age

    def _check_audience(self, token_type: str, audience: object) -> None:
        """A user's access token is addressed to the mesh (`audience`: every service, and
        the gateway, take it); a service's token to one service, this one
        (`service_audience`): a peer that receives it with a call cannot present it anywhere
        else, as its sender, for the rest of its life. An unscoped service token (a build
        before scoped ones, mid-rollout) only where `accept_unscoped_service_tokens`."""
        if token_type == SERVICE_TOKEN_TYPE:
            if audience not in self._service_audiences:
                raise TokenInvalidError("the service token is addressed to another service")
        elif audience != self._audience:
            raise TokenInvalidError("the token is not addressed to the mesh")

    def _checked_shape(self, token: str) -> dict[str, Any]:
        """The header, once header and payload pass the strict checks (before any key work)."""
        segments = token.split(".")
        if len(segments) != 3:
            raise TokenInvalidError()
        header, payload = _json_object(segments[0]), _json_object(segments[1])
        if header.get("alg") not in _ALGORITHMS or not isinstance(header.get("kid"), str):
            raise TokenInvalidError("the token's algorithm or key id is not accepted")
        for name in _TIME_CLAIMS:
            value = payload.get(name, 0)
            if type(value) is not int or not 0 <= value <= _MAX_NUMERIC_DATE:
                raise TokenInvalidError(f"the token's `{name}` is not a NumericDate")
        for name in _STRING_CLAIMS:
            if name in payload and not isinstance(payload[name], str):
                raise TokenInvalidError(f"the token's `{name}` is not a string")
        return header


class _NotStrictJsonError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _NotStrictJsonError("duplicate key")
    return result


def _no_constants(name: str) -> Any:
    raise _NotStrictJsonError(f"{name} is not JSON")


def _json_object(segment: str) -> dict[str, Any]:
    """One token segment: unpadded base64url of a UTF-8 JSON object with unique keys."""
    if len(segment) > _MAX_SEGMENT_CHARS or not _B64URL.fullmatch(segment):
        raise TokenInvalidError()
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constants
        )
    except (ValueError, binascii.Error) as exc:  # UnicodeDecodeError is a ValueError
        raise TokenInvalidError() from exc
    if not isinstance(value, dict):
        raise TokenInvalidError()
    return value


def service_audience(audience: str, service: str) -> str:
    """The audience of a service token for `service` ("vaultpay:wallet"): only that
    service's verifier accepts it."""
    if service not in MESH_SERVICES:
        raise ValueError(f"not a service of the mesh: {service!r}")
    return f"{audience}:{service}"


def _claims_from(payload: dict[str, Any], key_id: str) -> TokenClaims:
    token_type = payload.get("typ")
    role: Role | None = None
    if token_type == ACCESS_TOKEN_TYPE:
        try:
            role = Role.from_claim(str(payload["role"]))
        except KeyError as exc:
            raise TokenInvalidError("the token carries no valid role") from exc
        if not payload.get("sid"):
            raise TokenInvalidError("the token carries no session")
    elif token_type != SERVICE_TOKEN_TYPE:
        raise TokenInvalidError("not an access token")
    return TokenClaims(
        subject=str(payload["sub"]),
        token_type=str(token_type),
        role=role,
        session_id=str(payload.get("sid", "")),
        token_id=str(payload["jti"]),
        expires_at=float(payload["exp"]),
        key_id=key_id,
    )
