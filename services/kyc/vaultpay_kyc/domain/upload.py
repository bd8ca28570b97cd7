"""A streamed document file, checked as its chunks arrive, inspected whole and sealed at the end.

The client declares the size, SHA-256 and media type up front; each chunk is counted and
hashed at once, and the magic bytes are checked as soon as they arrived. The file is kept
(at most the cap) until the stream ends: only then can it be read whole for what it carries
(`files.inspect_document`: a PDF's scripts, a file appended to an image, ...) and an image's
Exif location removed before it is sealed, so the server holds the received file, then
briefly its sealed copy too (it used to seal chunks as they came and hold only the
ciphertext, which left nothing whole to inspect). A stream that carries more than it declared
is refused at the chunk that overflows; one that ends early, whose hash or magic bytes
disagree with the metadata, or whose content is refused, is refused at the end. Nothing is
stored before `finish()` returned.

Every chunk but the one that completes the file carries at least `MIN_CHUNK_BYTES` (16 KiB, or
the chunk cap if that is smaller): each message costs the service about as much whatever it
carries, so a file of 10 MiB takes at most 641 messages, not ten million 1-byte ones.

    plan = plan_upload(size, sha256, "image/png", max_bytes=cap)
    assembler = UploadAssembler(plan, dek.sealer(Field.DOCUMENT_FILE), max_chunk_bytes=1 << 20)
    for chunk in chunks:
        assembler.add(chunk)
    sealed_file = assembler.finish()      # CPU: the use case runs it in a worker thread
    stored_size = assembler.stored_bytes  # without the Exif block an image had
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from vaultpay_common.errors import FieldViolation, ValidationError
from vaultpay_kyc.domain.crypto import StreamSealer
from vaultpay_kyc.domain.files import (
    SNIFF_BYTES,
    DocumentContentType,
    check_sniffed,
    inspect_document,
    parse_content_type,
)

__all__ = [
    "CHUNK_FIELD",
    "METADATA_FIELD",
    "MIN_CHUNK_BYTES",
    "UploadAssembler",
    "UploadPlan",
    "plan_upload",
    "smallest_chunk",
]

METADATA_FIELD = "metadata"
CHUNK_FIELD = "chunk"
# The smallest chunk but the last: the documented clients send 1 MiB, grpcurl's halves of a
# 50 kB file are 25 kB.
MIN_CHUNK_BYTES = 16 * 1024


def smallest_chunk(max_chunk_bytes: int) -> int:
    """The least a chunk but the last must carry under a chunk cap of `max_chunk_bytes`
    (KYC_UPLOAD_CHUNK_MAX_BYTES may be as low as 1 KiB)."""
    return min(MIN_CHUNK_BYTES, max_chunk_bytes)


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class UploadPlan:
    """The validated promise of the metadata message."""

    content_type: DocumentContentType
    size_bytes: int
    sha256: str  # lower-case hex
    max_bytes: int  # the file cap, which bounds the inspection's work too


def plan_upload(size_bytes: int, sha256: str, content_type: str, *, max_bytes: int) -> UploadPlan:
    """Checks the metadata's file fields; every violation is reported at once."""
    problems: list[FieldViolation] = []
    if size_bytes <= 0:
        problems.append(
            _meta("document_size_bytes", "must be positive (the stream carries a file)")
        )
    elif size_bytes > max_bytes:
        problems.append(_meta("document_size_bytes", f"must be at most {max_bytes} bytes"))
    digest = sha256.strip().lower()
    if not _SHA256_HEX.fullmatch(digest):
        problems.append(_meta("document_sha256", "must be the file's SHA-256 as 64 hex digits"))
    kind: DocumentContentType | None = None
    try:
        kind = parse_content_type(content_type, field=f"{METADATA_FIELD}.document_content_type")
    except ValidationError as exc:
        problems += exc.violations
    if problems or kind is None:
        raise ValidationError(problems)
    return UploadPlan(kind, size_bytes, digest, max_bytes)


def _meta(name: str, description: str) -> FieldViolation:
    return FieldViolation(f"{METADATA_FIELD}.{name}", description)


class UploadAssembler:
    def __init__(
        self,
        plan: UploadPlan,
        sealer: StreamSealer,
        *,
        max_chunk_bytes: int,
        min_chunk_bytes: int = MIN_CHUNK_BYTES,
    ) -> None:
        self._plan = plan
        self._sealer = sealer
        self._max_chunk = max_chunk_bytes
        self._min_chunk = min(min_chunk_bytes, max_chunk_bytes)
        self._hash = hashlib.sha256()
        self._head = b""
        self._sniffed = False
        self._file = bytearray()
        self.received = 0
        self.stored_bytes = 0  # the size of the file sealed, once `finish()` returned

    def add(self, chunk: bytes) -> None:
        if not chunk:
            raise ValidationError.single(CHUNK_FIELD, "must not be empty")
        if len(chunk) > self._max_chunk:
            raise ValidationError.single(CHUNK_FIELD, f"must be at most {self._max_chunk} bytes")
        if self.received + len(chunk) > self._plan.size_bytes:
            raise ValidationError.single(
                CHUNK_FIELD,
                f"the stream carries more than the declared {self._plan.size_bytes} bytes",
            )
        if len(chunk) < self._min_chunk and self.received + len(chunk) < self._plan.size_bytes:
            raise ValidationError.single(
                CHUNK_FIELD,
                f"must be at least {self._min_chunk} bytes, except the last chunk of the file",
            )
        self.received += len(chunk)
        if not self._sniffed:
            self._head += chunk[: SNIFF_BYTES - len(self._head)]
            if len(self._head) >= SNIFF_BYTES:
                self._check_head()
        self._hash.update(chunk)
        self._file += chunk

    def _check_head(self) -> None:
        check_sniffed(self._head, self._plan.content_type, field=CHUNK_FIELD)
        self._sniffed = True

    def finish(self, *, inspect: bool = True) -> bytes:
        """The sealed file, once the stream delivered exactly what the metadata promised and
        its content passed `inspect_document` (skipped with `inspect=False`: a retry whose
        first answer is replayed, its file dropped)."""
        if self.received < self._plan.size_bytes:
            raise ValidationError.single(
                CHUNK_FIELD,
                f"the stream ended after {self.received} of {self._plan.size_bytes} bytes",
            )
        if not self._sniffed:
            self._check_head()
        if self._hash.hexdigest() != self._plan.sha256:
            raise ValidationError.single(
                f"{METADATA_FIELD}.document_sha256", "does not match the file received"
            )
        data = bytes(self._file)
        self._file = bytearray()
        if inspect:
            data = inspect_document(
                self._plan.content_type, data, max_bytes=self._plan.max_bytes, field=CHUNK_FIELD
            )
        self.stored_bytes = len(data)
        self._sealer.update(data)
        return self._sealer.finish()
