"""Each user's money movements, a token bucket in this process (no Redis on the money path).

    buckets = TokenBuckets(rate_per_second=5.0, burst=20)
    wait = buckets.take(user_id)   # 0.0: admitted; else seconds until a token is there

A user's bucket holds up to `burst` tokens and gains `rate_per_second`; each call takes one.
A user with no bucket has a full one, so a full bucket need not be kept: every `burst / rate`
seconds (the time an empty bucket takes to fill) the buckets that have filled up since are
dropped, on the next `take`. The buckets held are those of users who moved money in about the
last two such periods, however many users there are; the sweep is one pass over them.

Per process: with N transfer replicas a user gets N times the rate (a guard against a runaway
client, not a global quota).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from vaultpay_transfer.domain.errors import MovementRateLimitedError

__all__ = ["MovementThrottle", "TokenBuckets"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float  # the clock's reading when `tokens` was right


class TokenBuckets:
    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._fill_seconds = burst / rate_per_second
        self._buckets: dict[str, _Bucket] = {}
        self._next_sweep = clock() + self._fill_seconds

    def __len__(self) -> int:
        """How many buckets are held (the ones not full at the last sweep, and newer)."""
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Takes a token from `key`'s bucket: 0.0 if there was one, else the seconds until
        there will be one (nothing is taken)."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        else:
            bucket.tokens = self._level(bucket, now)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def _level(self, bucket: _Bucket, now: float) -> float:
        return min(self._burst, bucket.tokens + (now - bucket.stamp) * self._rate)

    def _sweep(self, now: float) -> None:
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if self._level(bucket, now) < self._burst
        }
        self._next_sweep = now + self._fill_seconds


class MovementThrottle:
    """Admits a user's movement or raises RATE_LIMITED with whole seconds to wait (>= 1)."""

    def __init__(self, buckets: TokenBuckets) -> None:
        self._buckets = buckets

    def admit(self, user_id: str) -> None:
        wait = self._buckets.take(user_id)
        if wait > 0.0:
            raise MovementRateLimitedError(max(1, math.ceil(wait)))
