"""bcrypt password hashing in a bounded thread pool, behind an admission that puts sign-ins first.

Passwords are pre-hashed with HMAC-SHA256 under a server-side pepper (bcrypt reads only 72
bytes; the pepper means a stolen database alone cannot be brute-forced).

bcrypt is the service's most expensive work (cost 12 ≈ 260 ms of a core), so who gets a worker
decides who waits. The pool has one thread per core, and `HashingAdmission` hands its workers
out: a waiting sign-in (login, password change) is admitted before any waiting sign-up; sign-ups
never hold the last worker (when there are two or more), so a sign-in never waits for a
sign-up's hash to finish; and each queue is bounded, beyond which a caller is refused at once
with RESOURCE_EXHAUSTED and a RetryInfo estimated from the queue and the measured hash time.
Once a flood of Register calls, each queued behind the other in one FIFO pool, made a user's
Login take 8 s instead of 0.25 s. The pool's threads run at a lower CPU priority than the event
loop (`vaultpay_common.cpu_pool`), so the service's cheap calls (and its neighbours on the
machine) are not held up behind hashes' time slices while sign-ins saturate the cores.

    hasher = BcryptPasswordHasher(pepper, rounds=12, max_waiting_sign_ups=16)
    password_hash = await hasher.hash(password, priority=HashPriority.SIGN_UP)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TypeVar

import bcrypt

from vaultpay_auth.domain.errors import PasswordHashingBusyError
from vaultpay_auth.service_layer.ports import HashPriority
from vaultpay_common.cpu_pool import DEFAULT_NICENESS, low_priority_executor, usable_cpus

__all__ = ["BcryptPasswordHasher", "HashingAdmission"]

T = TypeVar("T")
SIGN_IN, SIGN_UP = HashPriority.SIGN_IN, HashPriority.SIGN_UP


class HashingAdmission:
    """Which password computation may start now. Used from the event loop only.

    `acquire(priority)` returns once the caller holds a worker, or raises
    PasswordHashingBusyError when that priority's queue is full; `release(priority)` gives the
    worker back (with how long the computation took, for the retry estimates).
    """

    def __init__(
        self,
        workers: int,
        *,
        max_waiting_sign_ins: int,
        max_waiting_sign_ups: int,
        expected_seconds: float = 0.25,
    ) -> None:
        if workers < 1 or max_waiting_sign_ins < 0 or max_waiting_sign_ups < 0:
            raise ValueError("workers must be positive and queue bounds not negative")
        self._workers = workers
        self._limits = {SIGN_IN: workers, SIGN_UP: max(1, workers - 1)}
        self._max_waiting = {SIGN_IN: max_waiting_sign_ins, SIGN_UP: max_waiting_sign_ups}
        self._running = {SIGN_IN: 0, SIGN_UP: 0}
        self._queues: dict[HashPriority, deque[asyncio.Future[None]]] = {
            SIGN_IN: deque(),
            SIGN_UP: deque(),
        }
        self._seconds = expected_seconds  # moving average of one computation

    def running(self, priority: HashPriority) -> int:
        return self._running[priority]

    def waiting(self, priority: HashPriority) -> int:
        return sum(not w.done() for w in self._queues[priority])

    def _may_start(self, priority: HashPriority) -> bool:
        if sum(self._running.values()) >= self._workers:
            return False
        if self._running[priority] >= self._limits[priority]:
            return False
        return priority is SIGN_IN or not self.waiting(SIGN_IN)

    async def acquire(self, priority: HashPriority) -> None:
        queue = self._queues[priority]
        if not self.waiting(priority) and self._may_start(priority):
            self._running[priority] += 1
            return
        if self.waiting(priority) >= self._max_waiting[priority]:
            raise PasswordHashingBusyError(retry_after_seconds=self._retry_after(priority))
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(priority)  # admitted just as the caller gave up
            elif waiter in queue:
                queue.remove(waiter)
            raise

    def release(self, priority: HashPriority, seconds: float | None = None) -> None:
        self._running[priority] -= 1
        if seconds is not None:
            self._seconds = 0.8 * self._seconds + 0.2 * seconds
        self._admit_waiters()

    def _admit_waiters(self) -> None:
        for priority in (SIGN_IN, SIGN_UP):
            queue = self._queues[priority]
            while queue and self._may_start(priority):
                waiter = queue.popleft()
                if waiter.done():  # cancelled while waiting
                    continue
                self._running[priority] += 1
                waiter.set_result(None)

    def _retry_after(self, priority: HashPriority) -> int:
        ahead = self.waiting(priority) + self._running[priority] + 1
        if priority is SIGN_UP:
            ahead += self.waiting(SIGN_IN)
        return max(1, math.ceil(ahead * self._seconds / self._limits[priority]))


class BcryptPasswordHasher:
    def __init__(
        self,
        pepper: bytes,
        rounds: int,
        workers: int | None = None,
        *,
        max_waiting_sign_ins: int = 128,
        max_waiting_sign_ups: int = 16,
        niceness: int = DEFAULT_NICENESS,
    ) -> None:
        self._pepper = pepper
        self._rounds = rounds
        count = workers or usable_cpus()
        self._pool = low_priority_executor(count, thread_name_prefix="bcrypt", niceness=niceness)
        self.admission = HashingAdmission(
            count,
            max_waiting_sign_ins=max_waiting_sign_ins,
            max_waiting_sign_ups=max_waiting_sign_ups,
        )

    def _prehash(self, password: str) -> bytes:
        digest = hmac.new(self._pepper, password.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest)

    async def _run(
        self, priority: HashPriority, work: Callable[[], T], admitted: asyncio.Event | None = None
    ) -> T:
        """Runs `work` on a bcrypt thread once admitted (then `admitted` is set); the worker is
        given back when the thread is done, even if the caller stopped waiting (the thread
        cannot be stopped)."""
        await self.admission.acquire(priority)
        if admitted is not None:
            admitted.set()
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            future = self._pool.submit(work)
        except BaseException:
            self.admission.release(priority)
            raise

        def finished(_: Future[T]) -> None:
            elapsed = time.monotonic() - started
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(self.admission.release, priority, elapsed)

        future.add_done_callback(finished)
        return await asyncio.wrap_future(future)

    async def hash(
        self,
        password: str,
        *,
        priority: HashPriority = SIGN_IN,
        admitted: asyncio.Event | None = None,
    ) -> str:
        prehashed, salt = self._prehash(password), bcrypt.gensalt(self._rounds)
        hashed = await self._run(priority, lambda: bcrypt.hashpw(prehashed, salt), admitted)
        return hashed.decode()

    async def verify(
        self,
        password: str,
        password_hash: str,
        *,
        priority: HashPriority = SIGN_IN,
        admitted: asyncio.Event | None = None,
    ) -> bool:
        prehashed, stored = self._prehash(password), password_hash.encode()
        return await self._run(priority, lambda: bcrypt.checkpw(prehashed, stored), admitted)

    async def first_match(
        self,
        candidates: Sequence[str],
        password_hash: str,
        *,
        priority: HashPriority = SIGN_IN,
        admitted: asyncio.Event | None = None,
    ) -> str | None:
        """The first of `candidates` that `password_hash` was made from, or None: every check
        in one worker's turn, so a later candidate is never refused a worker (nor queued again
        behind every other sign-in) once the first was checked."""
        stored = password_hash.encode()
        prehashed = [(candidate, self._prehash(candidate)) for candidate in candidates]

        def work() -> str | None:
            return next((c for c, p in prehashed if bcrypt.checkpw(p, stored)), None)

        return await self._run(priority, work, admitted)

    def needs_rehash(self, password_hash: str) -> bool:
        """A hash of another cost (`$2b$12$…` made before the setting became 13), or one
        this hasher cannot read the cost of."""
        parts = password_hash.split("$")
        return len(parts) < 4 or not parts[2].isdigit() or int(parts[2]) != self._rounds

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
