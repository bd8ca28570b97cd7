"""Login throttling in Redis: failures counted per account and per client IP in a window.

Fails open when Redis is down (logged): bcrypt still bounds guessing speed, and an outage of
the cache must not lock every user out. The account key is hashed so emails never sit in
Redis in the clear.
"""

from __future__ import annotations

import hashlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vaultpay_common.errors import RateLimitedError

__all__ = ["RedisLoginThrottle"]

log = logging.getLogger(__name__)


class LoginThrottledError(RateLimitedError):
    reason = "RATE_LIMITED"
    default_message = "too many failed sign-in attempts, try again later"


class RedisLoginThrottle:
    def __init__(self, redis: Redis, *, per_account: int, per_ip: int, window_seconds: int) -> None:
        self._redis = redis
        self._per_account = per_account
        self._per_ip = per_ip
        self._window = window_seconds

    @staticmethod
    def _account_key(email: str) -> str:
        return "auth:login-fail:acct:" + hashlib.sha256(email.encode()).hexdigest()[:32]

    @staticmethod
    def _ip_key(client_ip: str) -> str:
        return f"auth:login-fail:ip:{client_ip or 'unknown'}"

    async def check(self, email: str, client_ip: str) -> None:
        keys = [self._account_key(email), self._ip_key(client_ip)]
        try:
            account_failures, ip_failures = await self._redis.mget(keys)
            blocked = [
                key
                for key, count, limit in zip(
                    keys,
                    (account_failures, ip_failures),
                    (self._per_account, self._per_ip),
                    strict=True,
                )
                if count is not None and int(count) >= limit
            ]
            if not blocked:
                return
            ttl = max([await self._redis.ttl(key) for key in blocked] + [1])
        except RedisError:
            log.warning("login throttle unavailable, failing open", exc_info=True)
            return
        raise LoginThrottledError(retry_after_seconds=ttl)

    async def record_failure(self, email: str, client_ip: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in (self._account_key(email), self._ip_key(client_ip)):
                    pipe.incr(key)
                    pipe.expire(key, self._window, nx=True)
                await pipe.execute()
        except RedisError:
            log.warning("could not record a login failure", exc_info=True)

    async def reset(self, email: str) -> None:
        try:
            await self._redis.delete(self._account_key(email))
        except RedisError:
            log.warning("could not reset the login throttle", exc_info=True)
