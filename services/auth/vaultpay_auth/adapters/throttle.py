"""Password-attempt throttling in Redis, per account and per client IP, in a fixed window.

An attempt is *reserved* before the password is checked, in one atomic script: both counters
are incremented and, if either is over its limit, the reservation is undone and the attempt is
refused. So a burst of concurrent guesses cannot all slip past a check made before any failure
was recorded. A successful attempt gives its reservation back (the IP counter) and clears the
account counter; a failed one stays counted.

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

__all__ = ["LoginThrottledError", "RedisLoginThrottle"]

log = logging.getLogger(__name__)

# KEYS: account key, ip key. ARGV: account limit, ip limit, window seconds.
# Returns 0 when reserved, else the seconds until the blocking window ends.
_RESERVE = """
local account = redis.call('INCR', KEYS[1])
local ip = redis.call('INCR', KEYS[2])
if account == 1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if ip == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
if account > tonumber(ARGV[1]) or ip > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  redis.call('DECR', KEYS[2])
  local wait = 1
  if account > tonumber(ARGV[1]) then wait = math.max(wait, redis.call('TTL', KEYS[1])) end
  if ip > tonumber(ARGV[2]) then wait = math.max(wait, redis.call('TTL', KEYS[2])) end
  return wait
end
return 0
"""


class LoginThrottledError(RateLimitedError):
    reason = "RATE_LIMITED"
    default_message = "too many failed password attempts, try again later"


class RedisLoginThrottle:
    def __init__(self, redis: Redis, *, per_account: int, per_ip: int, window_seconds: int) -> None:
        self._redis = redis
        self._per_account = per_account
        self._per_ip = per_ip
        self._window = window_seconds
        self._reserve = redis.register_script(_RESERVE)

    @staticmethod
    def _account_key(account: str) -> str:
        return "auth:pw-attempts:acct:" + hashlib.sha256(account.encode()).hexdigest()[:32]

    @staticmethod
    def _ip_key(client_ip: str) -> str:
        return f"auth:pw-attempts:ip:{client_ip or 'unknown'}"

    async def reserve(self, account: str, client_ip: str) -> None:
        """Counts one password attempt, or raises LoginThrottledError (RetryInfo) if over."""
        keys = [self._account_key(account), self._ip_key(client_ip)]
        try:
            wait = int(await self._reserve(keys, [self._per_account, self._per_ip, self._window]))
        except RedisError:
            log.warning("password-attempt throttle unavailable, failing open", exc_info=True)
            return
        if wait:
            raise LoginThrottledError(retry_after_seconds=wait)

    async def succeeded(self, account: str, client_ip: str) -> None:
        """The attempt was right: forget the account's failures, give the IP its slot back."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._account_key(account))
                pipe.decr(self._ip_key(client_ip))
                await pipe.execute()
        except RedisError:
            log.warning("could not release a password-attempt reservation", exc_info=True)
