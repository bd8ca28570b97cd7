"""Envelope encryption (a data key per submission, wrapped under a KEK; associated data binding
submission, owner and field), the keyed duplicate hash, and the streamed upload's checks."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from tests.fakes.kyc import key_ring_for_tests
from tests.unit.kyc.kyc_world import PDF, PNG
from vaultpay_common.errors import ValidationError
from vaultpay_kyc.domain.crypto import (
    NONCE_BYTES,
    TAG_BYTES,
    DataKey,
    DocumentHasher,
    EnvelopeCipher,
    Field,
    SubmissionRef,
    WrappedKey,
    new_key_id,
)
from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.errors import DocumentUnreadableError
from vaultpay_kyc.domain.upload import UploadAssembler, plan_upload

REF = SubmissionRef("6f1c1a3e-0000-4000-8000-000000000001", "alice")
OTHER = SubmissionRef("6f1c1a3e-0000-4000-8000-000000000002", "alice")
NUMBER = b"ABCPE1234F"


@pytest.fixture
def cipher() -> EnvelopeCipher:
    return EnvelopeCipher(key_ring_for_tests())


def test_a_sealed_number_opens_only_with_its_data_key_field_and_submission(
    cipher: EnvelopeCipher,
) -> None:
    dek = DataKey.generate(REF)
    sealed = dek.seal(Field.DOCUMENT_NUMBER, NUMBER)
    assert NUMBER not in sealed
    assert len(sealed) == NONCE_BYTES + len(NUMBER) + TAG_BYTES
    assert dek.open(Field.DOCUMENT_NUMBER, sealed) == NUMBER
    with pytest.raises(DocumentUnreadableError, match="document_file of submission"):
        dek.open(Field.DOCUMENT_FILE, sealed)  # moved to another field
    moved = DataKey(OTHER, dek.key)  # same key, another row: the associated data differs
    with pytest.raises(DocumentUnreadableError):
        moved.open(Field.DOCUMENT_NUMBER, sealed)
    with pytest.raises(DocumentUnreadableError):
        DataKey.generate(REF).open(Field.DOCUMENT_NUMBER, sealed)


def test_every_seal_uses_a_fresh_nonce() -> None:
    dek = DataKey.generate(REF)
    nonces = {dek.seal(Field.DOCUMENT_NUMBER, NUMBER)[:NONCE_BYTES] for _ in range(200)}
    assert len(nonces) == 200


def test_a_wrapped_data_key_unwraps_only_for_its_submission_owner_and_key_id(
    cipher: EnvelopeCipher,
) -> None:
    dek = DataKey.generate(REF)
    wrapped = cipher.wrap(dek, "kek-a")
    assert dek.key not in wrapped.blob
    assert cipher.unwrap(REF, wrapped).key == dek.key
    for ref in (OTHER, SubmissionRef(REF.submission_id, "mallory")):
        with pytest.raises(DocumentUnreadableError, match="does not unwrap under key kek-a"):
            cipher.unwrap(ref, wrapped)
    relabelled = WrappedKey("kek-b", wrapped.blob)
    with pytest.raises(DocumentUnreadableError):
        cipher.unwrap(REF, relabelled)
    with pytest.raises(DocumentUnreadableError):
        cipher.unwrap(REF, WrappedKey("kek-a", wrapped.blob[:-1]))


def test_a_rewrap_moves_the_data_key_to_another_kek_and_the_data_still_opens(
    cipher: EnvelopeCipher,
) -> None:
    dek = DataKey.generate(REF)
    sealed = dek.seal(Field.DOCUMENT_FILE, PDF)
    rewrapped = cipher.rewrap(REF, cipher.wrap(dek, "kek-old"), "kek-new")
    assert rewrapped.key_id == "kek-new"
    assert cipher.unwrap(REF, rewrapped).open(Field.DOCUMENT_FILE, sealed) == PDF


def test_different_key_ids_derive_different_keks() -> None:
    ring = key_ring_for_tests()
    first, second = new_key_id(), new_key_id()
    assert first != second and first.startswith("kek-")
    dek = DataKey.generate(REF)
    wrapped = EnvelopeCipher(ring).wrap(dek, first)
    with pytest.raises(DocumentUnreadableError):
        EnvelopeCipher(ring).unwrap(REF, WrappedKey(second, wrapped.blob))
    other_root = EnvelopeCipher(key_ring_for_tests(b"another root"))
    with pytest.raises(DocumentUnreadableError):
        other_root.unwrap(REF, wrapped)


def test_a_streamed_seal_opens_like_a_whole_one() -> None:
    dek = DataKey.generate(REF)
    sealer = dek.sealer(Field.DOCUMENT_FILE)
    for start in range(0, len(PDF), 7):
        sealer.update(PDF[start : start + 7])
    sealed = sealer.finish()
    assert dek.open(Field.DOCUMENT_FILE, sealed) == PDF
    with pytest.raises(DocumentUnreadableError):
        dek.open(Field.DOCUMENT_NUMBER, sealed)


def test_the_duplicate_hash_is_keyed_and_depends_on_type_and_number() -> None:
    hasher = DocumentHasher(b"k" * 32)
    digest = hasher.digest(DocumentType.PAN, "ABCPE1234F")
    assert digest == hasher.digest(DocumentType.PAN, "ABCPE1234F")
    assert digest != hashlib.sha256(b"PAN:ABCPE1234F").hexdigest()
    assert digest != hashlib.sha256(b"ABCPE1234F").hexdigest()
    assert digest != DocumentHasher(b"j" * 32).digest(DocumentType.PAN, "ABCPE1234F")
    assert digest != hasher.digest(DocumentType.PASSPORT, "ABCPE1234F")
    with pytest.raises(ValueError, match="32 bytes"):
        DocumentHasher(b"short")


# ----- the streamed upload ----------------------------------------------------------------


def _assembler(
    data: bytes, *, size: int | None = None, sha: str | None = None, min_chunk: int = 1
) -> UploadAssembler:
    """Chunks of up to 256 bytes; of any size by default, so that the tests of other rules
    may send small ones."""
    plan = plan_upload(
        len(data) if size is None else size,
        hashlib.sha256(data).hexdigest() if sha is None else sha,
        "application/pdf",
        max_bytes=4096,
    )
    return UploadAssembler(
        plan,
        DataKey.generate(REF).sealer(Field.DOCUMENT_FILE),
        max_chunk_bytes=256,
        min_chunk_bytes=min_chunk,
    )


def _fields(error: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [v.field for v in error.value.violations]


def test_an_upload_that_delivers_what_it_declared_is_sealed() -> None:
    data = PDF[:1000]
    assembler = _assembler(data)
    for start in range(0, len(data), 100):
        assembler.add(data[start : start + 100])
    sealed = assembler.finish()
    assert len(sealed) == NONCE_BYTES + len(data) + TAG_BYTES
    assert data not in sealed


def test_the_metadata_of_an_upload_is_checked_all_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        plan_upload(5000, "not-hex", "text/plain", max_bytes=4096)
    assert _fields(caught) == [
        "metadata.document_size_bytes",
        "metadata.document_sha256",
        "metadata.document_content_type",
    ]
    with pytest.raises(ValidationError) as caught:
        plan_upload(0, "a" * 64, "image/png", max_bytes=4096)
    assert _fields(caught) == ["metadata.document_size_bytes"]


def test_a_stream_longer_than_declared_is_refused_at_the_overflowing_chunk() -> None:
    assembler = _assembler(PDF[:300], size=300)
    assembler.add(PDF[:200])
    with pytest.raises(ValidationError, match="more than the declared 300 bytes"):
        assembler.add(PDF[200:400])


def test_a_stream_cut_off_early_is_refused_at_the_end() -> None:
    assembler = _assembler(PDF[:300])
    assembler.add(PDF[:200])
    with pytest.raises(ValidationError, match="ended after 200 of 300 bytes"):
        assembler.finish()


def test_a_chunk_over_the_chunk_cap_or_empty_is_refused() -> None:
    assembler = _assembler(PDF[:1000])
    with pytest.raises(ValidationError, match="at most 256 bytes"):
        assembler.add(PDF[:257])
    with pytest.raises(ValidationError, match="must not be empty"):
        assembler.add(b"")


def test_the_magic_bytes_are_checked_even_when_they_arrive_one_byte_at_a_time() -> None:
    data = PNG[:100]
    plan = plan_upload(
        len(data), hashlib.sha256(data).hexdigest(), "application/pdf", max_bytes=4096
    )
    assembler = UploadAssembler(
        plan,
        DataKey.generate(REF).sealer(Field.DOCUMENT_FILE),
        max_chunk_bytes=256,
        min_chunk_bytes=1,
    )
    for i in range(7):
        assembler.add(data[i : i + 1])
    with pytest.raises(ValidationError, match="image/png, not the declared application/pdf"):
        assembler.add(data[7:8])


def test_a_tiny_file_is_sniffed_at_the_end() -> None:
    data = b"%PDF-"  # no PDF: its content is refused, but its magic bytes pass
    assembler = _assembler(data)
    assembler.add(data)
    assert len(assembler.finish(inspect=False)) == NONCE_BYTES + 5 + TAG_BYTES
    text = b"hi!"
    plain = _assembler(text)
    plain.add(text)
    with pytest.raises(ValidationError, match="not a PDF, JPEG or PNG"):
        plain.finish()


def test_a_file_whose_hash_differs_from_the_declared_one_is_refused() -> None:
    data = PDF[:200]
    assembler = _assembler(data, sha="0" * 64)
    assembler.add(data)
    with pytest.raises(ValidationError) as caught:
        assembler.finish()
    assert _fields(caught) == ["metadata.document_sha256"]


def test_the_data_key_is_not_in_its_repr() -> None:
    dek = DataKey.generate(REF)
    assert dek.key.hex() not in repr(dek)
    assert "key=" not in repr(dataclasses.replace(dek))


# The smallest chunk but the last (domain.upload.MIN_CHUNK_BYTES), as the README documents it.
MIN_CHUNK_BYTES = 16 * 1024


def _pdf(size: int) -> bytes:
    """A PDF (as the content check reads one) of exactly `size` bytes."""
    head, tail = b"%PDF-1.7\n", b"\n%%EOF\n"
    return head + b"A" * (size - len(head) - len(tail)) + tail


def _sized_assembler(data: bytes, *, max_chunk: int) -> UploadAssembler:
    """The service's assembler: the default smallest chunk."""
    plan = plan_upload(
        len(data), hashlib.sha256(data).hexdigest(), "application/pdf", max_bytes=1 << 20
    )
    return UploadAssembler(
        plan, DataKey.generate(REF).sealer(Field.DOCUMENT_FILE), max_chunk_bytes=max_chunk
    )


def test_a_chunk_below_the_minimum_is_refused_unless_it_ends_the_file() -> None:
    """Review of kyc (item 1): any chunk size was accepted, so a 1 MB file could arrive as a
    million 1-byte messages, each costing the service as much as a full one."""
    data = _pdf(2 * MIN_CHUNK_BYTES + 100)
    tiny = _sized_assembler(data, max_chunk=1 << 20)
    with pytest.raises(ValidationError) as caught:
        tiny.add(data[:1])
    (violation,) = caught.value.violations
    assert violation.field == "chunk"
    assert violation.description == (
        f"must be at least {MIN_CHUNK_BYTES} bytes, except the last chunk of the file"
    )
    short = _sized_assembler(data, max_chunk=1 << 20)
    short.add(data[:MIN_CHUNK_BYTES])
    with pytest.raises(ValidationError, match="at least"):
        short.add(data[MIN_CHUNK_BYTES : 2 * MIN_CHUNK_BYTES - 1])

    sized = _sized_assembler(data, max_chunk=1 << 20)
    sized.add(data[:MIN_CHUNK_BYTES])
    sized.add(data[MIN_CHUNK_BYTES : 2 * MIN_CHUNK_BYTES])
    sized.add(data[2 * MIN_CHUNK_BYTES :])  # 100 bytes: the last chunk
    assert len(sized.finish()) == NONCE_BYTES + len(data) + TAG_BYTES
    whole = _sized_assembler(_pdf(300), max_chunk=1 << 20)
    whole.add(_pdf(300))  # a small file in one chunk
    assert len(whole.finish()) == NONCE_BYTES + 300 + TAG_BYTES


def test_the_smallest_chunk_is_never_above_the_chunk_cap() -> None:
    """KYC_UPLOAD_CHUNK_MAX_BYTES may be as low as 1 KiB: the minimum follows it down."""
    data = _pdf(5000)
    capped = _sized_assembler(data, max_chunk=1024)
    for start in range(0, len(data), 1024):
        capped.add(data[start : start + 1024])
    assert len(capped.finish()) == NONCE_BYTES + len(data) + TAG_BYTES
    with pytest.raises(ValidationError, match="at least 1024 bytes"):
        _sized_assembler(data, max_chunk=1024).add(data[:1023])
