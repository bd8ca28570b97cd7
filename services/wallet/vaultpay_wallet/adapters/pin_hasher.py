"""bcrypt PIN hashing in a bounded thread pool, so it never blocks the event loop.

A PIN has 10,000 values: bcrypt alone would fall to a stolen database in minutes, so the PIN
is first keyed with HMAC-SHA256 under a server-side pepper kept outside the database. bcrypt
releases the GIL, so a pool of at most one thread per core uses every core and no more; the
cost (rounds) is a setting, since it fixes the PIN-checked transfer rate (cores / bcrypt time).
The pool's threads run at a lower CPU priority than the event loop
(`vaultpay_common.cpu_pool`): while PIN checks saturate the cores, a GetBalance is not held
up behind a hash's time slice at each of its hops, and the hashes still get every cycle that
nothing else wants.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac

import bcrypt

from vaultpay_common.cpu_pool import DEFAULT_NICENESS, low_priority_executor, usable_cpus

__all__ = ["BcryptPinHasher"]


class BcryptPinHasher:
    def __init__(
        self,
        pepper: bytes,
        rounds: int,
        workers: int | None = None,
        *,
        niceness: int = DEFAULT_NICENESS,
    ) -> None:
        if len(pepper) < 32:
            raise ValueError("the PIN pepper must be at least 32 bytes")
        if not 4 <= rounds <= 31:
            raise ValueError("bcrypt rounds must be between 4 and 31")
        cores = usable_cpus()
        self._pepper = pepper
        self._rounds = rounds
        self._pool = low_priority_executor(
            min(workers or cores, cores), thread_name_prefix="pin-bcrypt", niceness=niceness
        )

    def _prehash(self, pin: str) -> bytes:
        digest = hmac.new(self._pepper, pin.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest)

    async def hash(self, pin: str) -> str:
        loop = asyncio.get_running_loop()
        salt = bcrypt.gensalt(self._rounds)
        hashed = await loop.run_in_executor(self._pool, bcrypt.hashpw, self._prehash(pin), salt)
        return hashed.decode()

    async def verify(self, pin: str, pin_hash: str) -> bool:
        loop = asyncio.get_running_loop()
        try:
            encoded = pin_hash.encode()
            return await loop.run_in_executor(
                self._pool, bcrypt.checkpw, self._prehash(pin), encoded
            )
        except ValueError:  # a corrupt stored hash never matches
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
