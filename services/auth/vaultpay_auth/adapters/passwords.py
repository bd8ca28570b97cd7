"""bcrypt password hashing, run in a bounded thread pool so it never blocks the event loop.

Passwords are pre-hashed with HMAC-SHA256 under a server-side pepper (bcrypt reads only 72
bytes; the pepper means a stolen database alone cannot be brute-forced).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor

import bcrypt

__all__ = ["BcryptPasswordHasher"]


class BcryptPasswordHasher:
    def __init__(self, pepper: bytes, rounds: int, workers: int | None = None) -> None:
        self._pepper = pepper
        self._rounds = rounds
        self._pool = ThreadPoolExecutor(
            max_workers=workers or os.cpu_count() or 1, thread_name_prefix="bcrypt"
        )

    def _prehash(self, password: str) -> bytes:
        digest = hmac.new(self._pepper, password.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest)

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        salt = bcrypt.gensalt(self._rounds)
        hashed = await loop.run_in_executor(
            self._pool, bcrypt.hashpw, self._prehash(password), salt
        )
        return hashed.decode()

    async def verify(self, password: str, password_hash: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, bcrypt.checkpw, self._prehash(password), password_hash.encode()
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
