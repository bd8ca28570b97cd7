"""Redis client construction (redis-py asyncio). Redis is a fast path, never the truth.

What a caller may do when Redis fails depends on *how* it failed, so `redis_unreachable` tells
the two apart:

- Redis could not be reached (down, restarting, loading its data, the network): a throttle
  fails open, as recorded, so an outage of the cache does not lock every user out.
- Anything else: this process's own pool is full (a load the caller's clients control), or
  Redis answered and refused (a read-only replica after a failover, out of memory, a wrong
  password or ACL). Failing open on those turned the login and sign-up throttles off for as
  long as they lasted: 128 concurrent Logins took every connection of redis-py's default
  pool, and every call above them was let through uncounted, at bcrypt's speed (review of
  2026-12-05). A throttle fails closed on them.

The pool is bounded (`max_connections`) and a call waits for a free connection up to twice
the socket timeout, then raises `RedisPoolExhaustedError`: longer than a call on a hung Redis
holds its connection, so while Redis hangs the waiting calls get a connection (and fail open
on it) rather than a full pool (which would refuse them). A caller that fails open keeps a
`RedisOutage`: once a call found Redis unreachable the next second's calls skip it, and a
full pool soon after such a failure is the outage, not a burst (review of 2026-12-05: a Redis
that stopped answering held every connection for its 0.5 s timeout, and the calls behind
them were refused 429 in the very outage that must lock nobody out).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis

__all__ = [
    "RedisOutage",
    "RedisPoolExhaustedError",
    "create_redis",
    "outage_of",
    "redis_unreachable",
]

# Seconds for a connection and a command; a wait for a free pooled connection takes twice that.
_TIMEOUT = 0.5
_POOL_WAIT = 2 * _TIMEOUT
DEFAULT_MAX_CONNECTIONS = 64


class RedisPoolExhaustedError(redis_errors.RedisError):
    """Every pooled connection stayed in use for the whole wait: this process is overloaded,
    Redis is not down."""


class _BoundedPool(BlockingConnectionPool):
    """redis-py's blocking pool, whose wait for a connection raises RedisPoolExhaustedError
    (it raises a plain ConnectionError, which reads as Redis being down)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis_errors.ConnectionError as exc:
            # The wait's own timeout (asyncio's, the builtin TimeoutError since 3.11).
            if isinstance(exc.__cause__, TimeoutError):
                raise RedisPoolExhaustedError("no pooled Redis connection came free") from exc
            raise


class RedisOutage:
    """When Redis was last found unreachable, for a caller that fails open: `skipping` for
    `skip_seconds` after (ask nothing of Redis, fail open at once: a hung Redis would hold a
    connection for the whole timeout per call), `recent` for twice that (a full pool then is
    the outage's doing)."""

    def __init__(
        self, *, skip_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._skip = skip_seconds
        self._clock = clock
        self._noticed_at: float | None = None

    def noticed(self) -> None:
        self._noticed_at = self._clock()

    def _since(self) -> float | None:
        return None if self._noticed_at is None else self._clock() - self._noticed_at

    @property
    def skipping(self) -> bool:
        since = self._since()
        return since is not None and since < self._skip

    @property
    def recent(self) -> bool:
        since = self._since()
        return since is not None and since < 2 * self._skip


_OUTAGES: weakref.WeakKeyDictionary[Redis, RedisOutage] = weakref.WeakKeyDictionary()


def outage_of(client: Redis) -> RedisOutage:
    """The one RedisOutage of `client`, shared by everything that uses it: its calls share one
    pool, so one caller's hung calls fill the pool for the others too."""
    if client not in _OUTAGES:
        _OUTAGES[client] = RedisOutage()
    return _OUTAGES[client]


def redis_unreachable(exc: BaseException) -> bool:
    """True when `exc` says Redis could not be reached at all (what a throttle may fail open
    on); False for a full pool of this process and for Redis refusing a command."""
    refused = (
        RedisPoolExhaustedError,
        redis_errors.MaxConnectionsError,
        redis_errors.AuthenticationError,
    )
    if isinstance(exc, refused):
        return False
    return isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError)


def create_redis(url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> Redis:
    """A pooled client with short timeouts, so a slow Redis degrades rather than hangs, and a
    bounded pool whose callers wait their turn briefly rather than fail as if Redis were down."""
    pool = _BoundedPool.from_url(
        url,
        max_connections=max_connections,
        timeout=_POOL_WAIT,
        socket_timeout=_TIMEOUT,
        socket_connect_timeout=_TIMEOUT,
        health_check_interval=30,
        decode_responses=True,
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the pool
