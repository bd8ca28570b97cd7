"""Retry delays: exponential, capped, with "equal jitter".

The n-th failure waits `d/2 + random(0, d/2)` seconds with `d = min(max_delay, base * 2**(n-1))`.
Half of the delay is random, so relays that failed together do not retry together, yet the
delay never shrinks from one failure to the next (the smallest n+1-th delay is the largest
n-th one) until it reaches the cap.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay"]


def backoff_delay(
    failures: int,
    *,
    base_delay: float,
    max_delay: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after the `failures`-th consecutive failure (1 for the first)."""
    if failures < 1:
        raise ValueError("failures counts from 1")
    if base_delay <= 0 or max_delay < base_delay:
        raise ValueError("need 0 < base_delay <= max_delay")
    # Cap the exponent before computing it: 2**1000 is fine for ints but not for floats.
    ceiling = min(max_delay, base_delay * 2.0 ** min(failures - 1, 64))
    return ceiling / 2 + rand() * ceiling / 2
