"""Opaque refresh tokens: random, shown to the client once, stored only as a SHA-256 hash.

A 256-bit random token needs no slow hash: guessing it is as hard as guessing the key.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["hash_refresh_token", "new_refresh_token"]

_PREFIX = "vprt_"


def new_refresh_token() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
