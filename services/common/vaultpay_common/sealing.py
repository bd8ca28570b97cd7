"""Small secrets sealed for a short trip through storage (AES-256-GCM).

Some secrets must pass through a table on their way out, e.g. a PIN reset token waiting in the
outbox for its email. They are sealed under a key kept outside the database, with the purpose as
associated data, so a database reader learns nothing and a value sealed for one purpose does not
open for another.

    sealer = AesGcmSealer(settings.derived_key("outbox-secrets"), purpose="mail")
    sealed = sealer.seal(token)         # "v1.<base64 nonce+ciphertext>"
    sealer.open(sealed) == token
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["AesGcmSealer", "UnsealError"]

_PREFIX = "v1."


class UnsealError(ValueError):
    """The sealed value was tampered with, or sealed under another key or purpose."""


class AesGcmSealer:
    def __init__(self, key: bytes, *, purpose: str) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)
        self._aad = purpose.encode()

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)  # random 96-bit nonce; the key seals few values per lifetime
        sealed = nonce + self._aead.encrypt(nonce, plaintext.encode(), self._aad)
        return _PREFIX + base64.urlsafe_b64encode(sealed).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise UnsealError("unknown sealing format")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_PREFIX) :])
            return self._aead.decrypt(raw[:12], raw[12:], self._aad).decode()
        except (InvalidTag, ValueError) as exc:
            raise UnsealError("cannot open the sealed value") from exc
