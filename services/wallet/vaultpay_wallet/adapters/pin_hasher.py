"""bcrypt PIN hashing in a bounded thread pool, so it never blocks the event loop.

A PIN has 10,000 values: bcrypt alone would fall to a stolen database in minutes, so the PIN
is first keyed with HMAC-SHA256 under a server-side pepper kept outside the database. bcrypt
releases the GIL, so a pool of at most one thread per core uses every core and no more; the
cost (rounds) is a setting, since it fixes the PIN-checked transfer rate (cores / bcrypt time).
The pool's threads run at a lower CPU priority than the event loop
(`vaultpay_common.cpu_pool`): while PIN checks saturate the cores, a GetBalance is not held
up behind a hash's time slice at each of its hops, and the hashes still get every cycle that
nothing else wants.

Two pools of `workers` threads each: the money movements' checks (VerifyTransferPin), and the
owner's work (SetPin, ResetPin, VerifyPin, ChangePin) five nice levels lower still, so that
under both the kernel gives the movements about three parts in four of the cores, and either
alone gets them all. They
shared one pool whose queue had no bound: 200 concurrent SetPin calls of a fresh account (each
refused PIN_ALREADY_SET only after its hash) put tens of seconds of hashing in front of every
send and withdrawal of the replica, past the gateway's deadline (review of 2026-12-05). Now the
owner's hashes for which nothing is written yet (`refusable`: SetPin, ResetPin) wait at most
`max_owner_waiting` deep beyond the running ones, refused PinHashingBusyError past it, and none
of the owner's work is ever ahead of a movement; the checks that follow a reserved attempt
(VerifyPin, ChangePin) are never refused, nor counted toward that bound.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from typing import TypeVar

import bcrypt

from vaultpay_common.cpu_pool import DEFAULT_NICENESS, MAX_NICE, low_priority_executor, usable_cpus
from vaultpay_wallet.domain.errors import PinHashingBusyError

__all__ = ["MAX_OWNER_WAITING", "BcryptPinHasher"]

T = TypeVar("T")

MAX_OWNER_WAITING = 16
# The owner's threads yield to the movements' (nice 10 against 15: about three to one).
_OWNER_EXTRA_NICENESS = 5


class BcryptPinHasher:
    def __init__(
        self,
        pepper: bytes,
        rounds: int,
        workers: int | None = None,
        *,
        niceness: int = DEFAULT_NICENESS,
        max_owner_waiting: int = MAX_OWNER_WAITING,
    ) -> None:
        if len(pepper) < 32:
            raise ValueError("the PIN pepper must be at least 32 bytes")
        if not 4 <= rounds <= 31:
            raise ValueError("bcrypt rounds must be between 4 and 31")
        cores = usable_cpus()
        self._pepper = pepper
        self._rounds = rounds
        threads = min(workers or cores, cores)
        self._pool = low_priority_executor(
            threads, thread_name_prefix="pin-bcrypt", niceness=niceness
        )
        self._owner_pool = low_priority_executor(
            threads,
            thread_name_prefix="pin-bcrypt-owner",
            niceness=min(MAX_NICE, niceness + _OWNER_EXTRA_NICENESS),
        )
        self._owner_threads = threads
        self._owner_in_flight = 0  # all of the owner's work, running or waiting
        # Only the work that may be refused (`refusable`: nothing written for it yet) counts
        # toward the bound: checks after a reserved attempt, never refused, must not fill it
        # (six accounts keeping three VerifyPin calls each in flight refused every SetPin and
        # ResetPin of the replica: review of this change).
        self._refusable_in_flight = 0
        self._max_refusable_in_flight = threads + max_owner_waiting
        self._seconds = 0.25  # one owner computation's elapsed time, a moving average

    def _refuse_if_full(self) -> None:
        if self._refusable_in_flight >= self._max_refusable_in_flight:
            backlog = self._owner_in_flight * self._seconds / self._owner_threads
            raise PinHashingBusyError(retry_after_seconds=max(1, math.ceil(backlog)))

    async def _run(self, movement: bool, work: Callable[[], T], *, refusable: bool = False) -> T:
        loop = asyncio.get_running_loop()
        if movement:
            return await loop.run_in_executor(self._pool, work)
        if refusable:
            self._refuse_if_full()
            self._refusable_in_flight += 1
        self._owner_in_flight += 1
        try:
            result, seconds = await loop.run_in_executor(self._owner_pool, _timed(work))
            self._seconds = 0.8 * self._seconds + 0.2 * seconds
            return result
        finally:
            self._owner_in_flight -= 1
            if refusable:
                self._refusable_in_flight -= 1

    def _prehash(self, pin: str) -> bytes:
        digest = hmac.new(self._pepper, pin.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest)

    async def hash(self, pin: str, *, movement: bool = False, refusable: bool = False) -> str:
        secret, salt = self._prehash(pin), bcrypt.gensalt(self._rounds)
        hashed = await self._run(movement, lambda: bcrypt.hashpw(secret, salt), refusable=refusable)
        return hashed.decode()

    async def verify(self, pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        secret, encoded = self._prehash(pin), pin_hash.encode()
        try:
            return await self._run(movement, lambda: bcrypt.checkpw(secret, encoded))
        except ValueError:  # a corrupt stored hash never matches
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._owner_pool.shutdown(wait=False, cancel_futures=True)


def _timed(work: Callable[[], T]) -> Callable[[], tuple[T, float]]:
    """`work` with its elapsed time (not its CPU time: behind the movements' threads a hash
    of the owner's takes several times its CPU time, and Retry-After must say so)."""

    def timed() -> tuple[T, float]:
        started = time.perf_counter()
        result = work()
        return result, time.perf_counter() - started

    return timed
