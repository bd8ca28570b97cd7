"""In-process single flight: while a piece of work runs under a key, a second caller with the
same key awaits that run's outcome instead of starting the work again.

    checks: SingleFlight[IdempotencyKey, Outcome] = SingleFlight()

    flight, started = checks.start(key, lambda: check_pin(pin))  # joins a run under `key`
    outcome = await shared_outcome(flight)

Why: a retry that arrives while the first call is still working (its caller's deadline
passed, a client sent the request again) would otherwise redo work that may be the
bottleneck, such as a bcrypt hash, exactly when the system is slowest.

- The work runs as a task of its own. Every caller awaits it through `shared_outcome`, which
  shields it: a caller's cancellation (its deadline, a cancelled RPC) ends only that caller's
  wait, never the run the others await, whichever caller started it.
- Every caller gets the run's result or raises its exception. A run that is itself cancelled
  (the event loop shutting down) raises `FlightCancelledError` (UNAVAILABLE: retry) in each
  caller not cancelled itself, so nobody waits forever or mistakes it for its own cancel.
- The key is forgotten as the run ends, before any caller resumes: an outcome is never served
  from memory afterwards, and a later caller starts afresh (reading, say, the reply the run
  stored).

One process only: callers in another process (another replica) are not seen, and whatever
rule already holds between processes (a stored reply, a database lock) still decides there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from vaultpay_common.errors import UnavailableError

__all__ = ["FlightCancelledError", "SingleFlight", "shared_outcome"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FlightCancelledError(UnavailableError):
    """The shared run was cancelled before it had an outcome; a retry starts it again."""

    default_message = "the work this call was waiting for was cancelled, retry"


class SingleFlight(Generic[K, V]):
    """The runs in progress, one per key (see the module docstring)."""

    def __init__(self) -> None:
        self._runs: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def running(self, key: K) -> asyncio.Future[V] | None:
        """The run in progress under `key`, or None."""
        return self._runs.get(key)

    def start(
        self, key: K, work: Callable[[], Coroutine[Any, Any, V]]
    ) -> tuple[asyncio.Future[V], bool]:
        """The run under `key`: the one in progress, or `work()` started now (then True).
        `work` is called only when it starts."""
        run = self._runs.get(key)
        if run is not None:
            return run, False
        run = asyncio.ensure_future(work())
        self._runs[key] = run
        # Registered first, so it runs before any caller's shielded wait is woken.
        run.add_done_callback(lambda done: self._forget(key, done))
        return run, True

    def _forget(self, key: K, done: asyncio.Future[V]) -> None:
        if self._runs.get(key) is done:
            del self._runs[key]


async def shared_outcome(run: asyncio.Future[V]) -> V:
    """Awaits `run` without letting this caller's cancellation reach it."""
    try:
        return await asyncio.shield(run)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if run.cancelled() and (current is None or current.cancelling() == 0):
            raise FlightCancelledError() from None
        raise
