"""Attempt throttling in Redis, in fixed windows: password attempts (per account and per client
IP) and sign-ups (per client IP and for the whole service).

An attempt is *reserved* before any work is done for it, in one atomic script: the counters
are incremented and, if one is over its limit, the reservation is undone and the attempt is
refused with the seconds until that window ends (a RetryInfo). So a burst of concurrent
attempts cannot all slip past a check made before any of them was counted, and refused
attempts do not use up a quota.

Password attempts: a successful attempt gives its reservation back (the IP counter) and clears
the account counter; a failed one stays counted. The first refusal of a window is flagged
(a marker key with the window's lifetime), so the service audits "this account is now
throttled" once rather than every refused attempt.

Sign-ups: counted per address first (so one address over its limit spends nothing of the
global budget), then globally. Every valid Register counts, a taken email included: that
answer tells whether an account exists, so probing for accounts is throttled too.

Both fail open when Redis cannot be reached (logged): bcrypt and its bounded admission still
bound the cost of each attempt, and an outage of the cache must not lock every user out. They
fail closed on every other failure (`vaultpay_common.redis.redis_unreachable`): this process's
Redis connections all in use (ThrottleBusyError, 429: a burst of Logins above the pool was let
through uncounted, review of 2026-12-05), or Redis refusing the script (a read-only replica
after a failover, out of memory, a wrong password: ThrottleUnavailableError, 503, logged at
ERROR; idle connections are dropped so that the next call connects afresh, to a new primary). The account key
is hashed so emails never sit in Redis in the clear. A client's address counts as IPv4 or
as its IPv6 /64 (`address_block`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vaultpay_auth.domain.errors import (
    LoginThrottledError,
    SignUpThrottledError,
    ThrottleBusyError,
    ThrottleUnavailableError,
)
from vaultpay_common.redis import (
    RedisOutage,
    RedisPoolExhaustedError,
    outage_of,
    redis_unreachable,
)

__all__ = ["LoginThrottledError", "RedisLoginThrottle", "RedisSignUpThrottle", "address_block"]

log = logging.getLogger(__name__)

# KEYS: account counter, ip counter, account refusal marker, ip refusal marker.
# ARGV: account limit, ip limit, window seconds.
# Returns {0, 0, 0} when reserved, else {seconds until the blocking window ends,
# 1 if this is the first refusal of a blocking counter's window, bit 1 account / bit 2 ip over}.
_RESERVE_ATTEMPT = """
local function count(key, window)
  local n = redis.call('INCR', key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
  return n
end
local account = count(KEYS[1], ARGV[3])
local ip = count(KEYS[2], ARGV[3])
local over = 0
if account > tonumber(ARGV[1]) then over = over + 1 end
if ip > tonumber(ARGV[2]) then over = over + 2 end
if over == 0 then return {0, 0, 0} end
redis.call('DECR', KEYS[1])
redis.call('DECR', KEYS[2])
local wait, first = 1, 0
local function refuse(counter, marker)
  local ttl = math.max(1, redis.call('TTL', counter))
  wait = math.max(wait, ttl)
  if redis.call('SET', marker, '1', 'NX', 'EX', ttl) then first = 1 end
end
if account > tonumber(ARGV[1]) then refuse(KEYS[1], KEYS[3]) end
if ip > tonumber(ARGV[2]) then refuse(KEYS[2], KEYS[4]) end
return {wait, first, over}
"""

# KEYS: ip counter, global counter. ARGV: ip limit, ip window, global limit, global window.
# Returns 0 when reserved, else the seconds until the blocking window ends.
_RESERVE_SIGN_UP = """
local function count(key, window)
  local n = redis.call('INCR', key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
  return n
end
if count(KEYS[1], ARGV[2]) > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return math.max(1, redis.call('TTL', KEYS[1]))
end
if count(KEYS[2], ARGV[4]) > tonumber(ARGV[3]) then
  redis.call('DECR', KEYS[2])
  redis.call('DECR', KEYS[1])
  return math.max(1, redis.call('TTL', KEYS[2]))
end
return 0
"""

# KEYS: counters to give one attempt back to (never below zero, never left without expiry).
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0
"""

_SCOPES = {1: ("account",), 2: ("ip",), 3: ("account", "ip")}


async def _fail_open_or_raise(
    redis: Redis, exc: RedisError, throttle: str, outage: RedisOutage
) -> None:
    """Returns (fail open) when Redis could not be reached, or when the pool is full just
    after it could not (the calls of a hung Redis hold every connection); raises otherwise
    (fail closed)."""
    if redis_unreachable(exc):
        if not outage.recent:
            log.warning("%s unavailable, failing open", throttle, exc_info=True)
        outage.noticed()
        return
    if isinstance(exc, RedisPoolExhaustedError):
        if outage.recent:
            return  # Redis hangs: its calls hold the connections
        log.warning("%s: every Redis connection in use, refusing the attempt", throttle)
        raise ThrottleBusyError(retry_after_seconds=1) from exc
    log.error(
        "%s refused by Redis, failing closed (%s)", throttle, type(exc).__name__, exc_info=True
    )
    try:
        await redis.connection_pool.disconnect(inuse_connections=False)
    except RedisError:  # pragma: no cover - dropping idle sockets
        log.warning("could not drop idle Redis connections", exc_info=True)
    raise ThrottleUnavailableError() from exc


def address_block(client_ip: str) -> str:
    """What a per-address limit counts for `client_ip`: an IPv4 address as it is, an IPv6
    address's /64 (one subscriber's network: an ordinary connection is given a /64 and may
    take a new address from it for every request, so counting whole addresses bound no
    client), "unknown" without one."""
    if not client_ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RedisLoginThrottle:
    def __init__(
        self,
        redis: Redis,
        *,
        per_account: int,
        per_ip: int,
        window_seconds: int,
        outage: RedisOutage | None = None,
    ) -> None:
        """`outage`: when Redis was last found unreachable; the client's own by default
        (`outage_of`), shared with everything using it."""
        self._redis = redis
        self._per_account = per_account
        self._per_ip = per_ip
        self._window = window_seconds
        self._reserve = redis.register_script(_RESERVE_ATTEMPT)
        self._give_back = redis.register_script(_GIVE_BACK)
        self.outage = outage or outage_of(redis)

    @staticmethod
    def _account_key(account: str) -> str:
        return "auth:pw-attempts:acct:" + hashlib.sha256(account.encode()).hexdigest()[:32]

    @staticmethod
    def _ip_key(client_ip: str) -> str:
        return f"auth:pw-attempts:ip:{address_block(client_ip)}"

    async def reserve(self, account: str, client_ip: str) -> None:
        """Counts one password attempt, or raises LoginThrottledError (RetryInfo) if over."""
        if self.outage.skipping:
            return  # Redis was unreachable a moment ago: fail open without waiting on it
        account_key, ip_key = self._account_key(account), self._ip_key(client_ip)
        keys = [account_key, ip_key, account_key + ":refused", ip_key + ":refused"]
        try:
            wait, first, over = await self._reserve(
                keys, [self._per_account, self._per_ip, self._window]
            )
        except RedisError as exc:
            await _fail_open_or_raise(self._redis, exc, "password-attempt throttle", self.outage)
            return
        if int(wait):
            raise LoginThrottledError(
                retry_after_seconds=int(wait),
                scopes=_SCOPES.get(int(over), ()),
                first_refusal=bool(int(first)),
            )

    async def succeeded(self, account: str, client_ip: str) -> None:
        """The attempt was right: forget the account's failures, give the IP its slot back."""
        if self.outage.skipping:
            return
        account_key = self._account_key(account)
        try:
            await self._redis.delete(account_key, account_key + ":refused")
            await self._give_back([self._ip_key(client_ip)])
        except RedisError as exc:
            self._could_not_give_back(exc)

    async def release(self, account: str, client_ip: str) -> None:
        """No password was checked: give both counters their slot back."""
        if self.outage.skipping:
            return
        try:
            await self._give_back([self._account_key(account), self._ip_key(client_ip)])
        except RedisError as exc:
            self._could_not_give_back(exc)

    def _could_not_give_back(self, exc: RedisError) -> None:
        if redis_unreachable(exc):
            self.outage.noticed()
        log.warning("could not release a password-attempt reservation", exc_info=True)


class RedisSignUpThrottle:
    def __init__(
        self,
        redis: Redis,
        *,
        per_ip: int,
        per_ip_window_seconds: int,
        global_limit: int,
        global_window_seconds: int,
        namespace: str = "auth:sign-ups",
        outage: RedisOutage | None = None,
    ) -> None:
        self._redis = redis
        self._args = [per_ip, per_ip_window_seconds, global_limit, global_window_seconds]
        self._namespace = namespace
        self._reserve = redis.register_script(_RESERVE_SIGN_UP)
        self.outage = outage or outage_of(redis)

    def address_key(self, client_ip: str) -> str:
        return f"{self._namespace}:ip:{address_block(client_ip)}"

    async def reserve(self, client_ip: str) -> None:
        """Counts one sign-up attempt, or raises SignUpThrottledError (RetryInfo) if over."""
        if self.outage.skipping:
            return  # Redis was unreachable a moment ago: fail open without waiting on it
        keys = [self.address_key(client_ip), f"{self._namespace}:all"]
        try:
            wait = int(await self._reserve(keys, self._args))
        except RedisError as exc:
            await _fail_open_or_raise(self._redis, exc, "sign-up throttle", self.outage)
            return
        if wait:
            raise SignUpThrottledError(retry_after_seconds=wait)
