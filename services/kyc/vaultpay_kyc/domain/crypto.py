"""Envelope encryption of documents, and the keyed hash that finds the same document twice.

Every submission gets its own random 256-bit data key (DEK). The document number and the file
are sealed with AES-256-GCM under the DEK; the DEK itself is wrapped (AES-256-GCM again) under
a key-encryption key (KEK) that never enters the database. The row records the KEK's id, so a
key rotation only re-wraps 48-byte DEKs, never re-encrypts files, and every row stays readable
under whichever key it names while a rotation runs.

Nonces are 96 bits from the OS's CSPRNG, fresh for every seal. A DEK seals at most two values
and a KEK wraps one DEK per row, far below the 2^32 random-nonce bound of one GCM key.

Associated data binds each ciphertext to where it belongs:
- a field: ("vaultpay.kyc.field.v1", submission id, owner, field name);
- a wrapped DEK: ("vaultpay.kyc.dek.v1", submission id, owner, KEK id).
So a ciphertext (or a whole DEK) copied to another submission, another owner or another field
fails authentication, and the reader gets `DocumentUnreadableError`, never garbage.

    ring = KeyRing(lambda key_id: settings.derived_key(f"kyc-kek/{key_id}"))
    cipher = EnvelopeCipher(ring)
    ref = SubmissionRef(submission_id, user_id)
    dek = DataKey.generate(ref)
    sealed = dek.seal(Field.DOCUMENT_NUMBER, b"ABCPE1234F")
    wrapped = cipher.wrap(dek, key_id)                 # stored with the row
    cipher.unwrap(ref, wrapped).open(Field.DOCUMENT_NUMBER, sealed) == b"ABCPE1234F"
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.errors import DocumentUnreadableError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "DataKey",
    "DocumentHasher",
    "EnvelopeCipher",
    "Field",
    "KeyRing",
    "StreamSealer",
    "SubmissionRef",
    "WrappedKey",
    "new_key_id",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_FIELD_PURPOSE = "vaultpay.kyc.field.v1"
_DEK_PURPOSE = "vaultpay.kyc.dek.v1"


class Field(Enum):
    """The sealed fields of a submission (the value goes into the associated data)."""

    DOCUMENT_NUMBER = "document_number"
    DOCUMENT_FILE = "document_file"


@dataclass(frozen=True, slots=True)
class SubmissionRef:
    """What a ciphertext is bound to: the submission and its owner."""

    submission_id: str
    owner_id: str

    def associated_data(self, purpose: str, label: str) -> bytes:
        # JSON of a list: unambiguous whatever the ids contain.
        return json.dumps([purpose, self.submission_id, self.owner_id, label]).encode()


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A DEK wrapped under the KEK `key_id`: nonce || ciphertext || tag."""

    key_id: str
    blob: bytes


def new_key_id() -> str:
    """A fresh KEK id; random, so a new id always derives a new key."""
    return f"kek-{secrets.token_hex(8)}"


class KeyRing:
    """KEKs by id, derived on demand from the root key in settings (and cached).

    `derive(key_id)` must return 32 bytes that depend on the id; in the service it is
    `settings.derived_key(f"kyc-kek/{key_id}")` (HKDF-SHA256 of the root key).
    """

    def __init__(self, derive: Callable[[str], bytes]) -> None:
        self._derive = derive
        self._cache: dict[str, AESGCM] = {}

    def aead(self, key_id: str) -> AESGCM:
        cached = self._cache.get(key_id)
        if cached is None:
            key = self._derive(key_id)
            if len(key) != KEY_BYTES:
                raise ValueError("a key-encryption key must be 32 bytes")
            cached = self._cache[key_id] = AESGCM(key)
        return cached


def _seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, aad)


class StreamSealer:
    """Seals a field as it arrives in pieces, holding only the ciphertext (no plaintext).

    The result has the same layout as `DataKey.seal` (nonce || ciphertext || tag), so it is
    opened by `DataKey.open` like any other sealed field.
    """

    def __init__(self, key: bytes, aad: bytes) -> None:
        nonce = os.urandom(NONCE_BYTES)
        self._encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        self._encryptor.authenticate_additional_data(aad)
        self._out = bytearray(nonce)
        self._done = False

    def update(self, piece: bytes) -> None:
        if self._done:
            raise RuntimeError("the sealer is finished")
        self._out += self._encryptor.update(piece)

    @property
    def sealed_bytes(self) -> int:
        return len(self._out)

    def finish(self) -> bytes:
        self._out += self._encryptor.finalize()
        self._out += self._encryptor.tag
        self._done = True
        return bytes(self._out)


@dataclass(frozen=True, slots=True)
class DataKey:
    """One submission's data key, in clear: lives in memory only for one use case."""

    ref: SubmissionRef
    key: bytes = field(repr=False)

    @classmethod
    def generate(cls, ref: SubmissionRef) -> DataKey:
        return cls(ref, AESGCM.generate_key(bit_length=256))

    def _aad(self, which: Field) -> bytes:
        return self.ref.associated_data(_FIELD_PURPOSE, which.value)

    def seal(self, which: Field, plaintext: bytes) -> bytes:
        return _seal(AESGCM(self.key), plaintext, self._aad(which))

    def sealer(self, which: Field) -> StreamSealer:
        return StreamSealer(self.key, self._aad(which))

    def open(self, which: Field, sealed: bytes) -> bytes:
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise DocumentUnreadableError(self._unreadable(which))
        try:
            return AESGCM(self.key).decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._aad(which)
            )
        except InvalidTag as exc:
            raise DocumentUnreadableError(self._unreadable(which)) from exc

    def _unreadable(self, which: Field) -> str:
        return (
            f"the {which.value} of submission {self.ref.submission_id} does not decrypt: it "
            "was altered or copied from another submission or field"
        )


class EnvelopeCipher:
    """Wraps and unwraps data keys under the KEKs of a `KeyRing`."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def wrap(self, dek: DataKey, key_id: str) -> WrappedKey:
        aad = dek.ref.associated_data(_DEK_PURPOSE, key_id)
        return WrappedKey(key_id, _seal(self._ring.aead(key_id), dek.key, aad))

    def unwrap(self, ref: SubmissionRef, wrapped: WrappedKey) -> DataKey:
        aad = ref.associated_data(_DEK_PURPOSE, wrapped.key_id)
        blob = wrapped.blob
        try:
            if len(blob) != NONCE_BYTES + KEY_BYTES + TAG_BYTES:
                raise InvalidTag()
            key = self._ring.aead(wrapped.key_id).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad
            )
        except InvalidTag as exc:
            raise DocumentUnreadableError(
                f"the data key of submission {ref.submission_id} does not unwrap under key "
                f"{wrapped.key_id}: the row was altered or copied from another submission"
            ) from exc
        return DataKey(ref, key)

    def rewrap(self, ref: SubmissionRef, wrapped: WrappedKey, new_key_id: str) -> WrappedKey:
        """The same DEK under another KEK (a rotation); the sealed fields stay as they are."""
        return self.wrap(self.unwrap(ref, wrapped), new_key_id)


class DocumentHasher:
    """HMAC-SHA256 of (type, normalised number) under a key outside the database.

    A bare SHA-256 of a 10-character PAN is reversed by enumeration from a DB dump; the key
    makes that impossible without the settings. The key never rotates with the KEKs (the
    hashes of old and new submissions must stay comparable).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError("the document hash key must be at least 32 bytes")
        self._key = key

    def digest(self, document_type: DocumentType, number: str) -> str:
        message = f"{document_type.value}:{number}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
