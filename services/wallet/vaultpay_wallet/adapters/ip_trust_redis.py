"""The Redis fast path of the IP-trust check: "(user, address) is trusted until T".

PostgreSQL is the truth; an entry is written only from what the check just read there, lives
at most `ttl_seconds` (and never past the trust's own expiry), and is deleted on revoke.
A revoke whose delete fails (Redis down), or that races a concurrent check, leaves an entry
that lapses within `ttl_seconds`: keep it short (the default, 5 minutes, is also how stale
`last_seen` may be, since a cache hit does not write to PostgreSQL).

`lookup` turns Redis being unreachable into `TrustCacheUnavailableError`, on which the check
fails open (see `service_layer.ip_trust`), and for a second after that does not ask it again
(`vaultpay_common.redis.RedisOutage`: a hung Redis holds a connection per call); any other failure (this process's connections all
in use, Redis refusing the command) is a miss, and PostgreSQL decides: failing open on a load
the caller controls, or on a misconfiguration for as long as it lasts, would turn the check
off (review of 2026-12-05). `remember`/`forget` never raise: they only log.
Keys hold the user id and the keyed hash, never the address.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vaultpay_common.clock import Clock
from vaultpay_common.redis import RedisPoolExhaustedError, outage_of, redis_unreachable
from vaultpay_wallet.service_layer.ip_trust import TrustCacheUnavailableError

__all__ = ["RedisTrustedIpCache"]

log = logging.getLogger(__name__)

_FAILURES = (RedisError, OSError, TimeoutError)


class RedisTrustedIpCache:
    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        *,
        ttl_seconds: int = 300,
        prefix: str = "wallet:ip-trust:",
    ) -> None:
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be positive")
        self._redis = redis
        self._clock = clock
        self._ttl = ttl_seconds
        self._prefix = prefix

    def _key(self, user_id: str, ip_hash: str) -> str:
        return f"{self._prefix}{user_id}:{ip_hash}"

    async def lookup(self, user_id: str, ip_hash: str) -> datetime | None:
        outage = outage_of(self._redis)
        if outage.skipping:  # unreachable a moment ago: not waited on again (a hung Redis)
            raise TrustCacheUnavailableError("Redis was unreachable a moment ago")
        try:
            value = await self._redis.get(self._key(user_id, ip_hash))
        except _FAILURES as exc:
            if redis_unreachable(exc):
                outage.noticed()
                raise TrustCacheUnavailableError(str(exc)) from exc
            if isinstance(exc, RedisPoolExhaustedError) and outage.recent:
                raise TrustCacheUnavailableError("Redis hangs: its calls hold the pool") from exc
            log.warning("IP trust cache refused a lookup: PostgreSQL decides", exc_info=True)
            return None
        if value is None:
            return None
        try:
            return datetime.fromtimestamp(int(value), UTC)
        except (TypeError, ValueError):
            return None  # not ours: treat as a miss, PostgreSQL decides

    async def remember(self, user_id: str, ip_hash: str, expires_at: datetime) -> None:
        left = math.floor((expires_at - self._clock.now()).total_seconds())
        ttl = min(self._ttl, left)
        if ttl < 1:
            return
        try:
            await self._redis.set(
                self._key(user_id, ip_hash), str(math.floor(expires_at.timestamp())), ex=ttl
            )
        except _FAILURES:
            log.warning("could not cache a trusted IP", exc_info=True)

    async def forget(self, user_id: str, ip_hash: str) -> None:
        try:
            await self._redis.delete(self._key(user_id, ip_hash))
        except _FAILURES:
            log.warning(
                "could not drop a revoked IP from the cache; it lapses within its TTL",
                extra={"user_id": user_id, "ip_hash": ip_hash[:16]},
                exc_info=True,
            )
