"""SubmitKyc, UploadKycDocument and GetKycStatus on fakes: validation before anything is
written, one open submission per user, encryption at rest, idempotent replays, streams that
create nothing when they go wrong."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from tests.unit.kyc.kyc_world import (
    JPEG,
    MAX_CHUNK,
    MAX_FILE,
    MOD,
    PDF,
    PNG,
    World,
    aadhaar,
    chunks_of,
    key,
    upload_command,
)
from tests.unit.kyc.kyc_world import from_list as parts
from vaultpay_common.errors import ErrorKind, ValidationError
from vaultpay_common.idempotency import IdempotencyKeyReusedError
from vaultpay_kyc.domain.crypto import Field, SubmissionRef
from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.errors import (
    KycAlreadySubmittedError,
    WalletRequiredError,
    WalletUnavailableError,
)
from vaultpay_kyc.domain.files import DocumentContentType
from vaultpay_kyc.domain.model import DocumentFile, KycStatus, KycTier
from vaultpay_kyc.service_layer.commands import RejectKyc, SubmitKyc


@pytest.fixture
def world() -> World:
    return World()


def _opened(world: World, submission_id: str) -> tuple[bytes, bytes | None]:
    """The decrypted number and file of a stored submission."""
    row = world.uow.submissions.rows[submission_id]
    sealed = world.uow.submissions.secrets[submission_id]
    dek = world.cipher.unwrap(SubmissionRef(row.id, row.user_id), sealed.wrapped_key)
    number = dek.open(Field.DOCUMENT_NUMBER, sealed.sealed_number)
    file = None if sealed.sealed_file is None else dek.open(Field.DOCUMENT_FILE, sealed.sealed_file)
    return number, file


async def test_a_submission_is_stored_pending_masked_and_encrypted(world: World) -> None:
    submission = await world.submit(file=PDF, content_type="application/pdf")
    assert submission.status is KycStatus.PENDING
    assert submission.masked_number == "XXXXXX234F"
    assert submission.file == DocumentFile(DocumentContentType.PDF, len(PDF))
    assert submission.key_id == next(iter(world.uow.keys.states))
    sealed = world.uow.submissions.secrets[submission.id]
    assert b"ABCPE1234F" not in sealed.sealed_number
    assert sealed.sealed_file is not None and PDF[:64] not in sealed.sealed_file
    assert sealed.number_hash == world.hasher.digest(DocumentType.PAN, "ABCPE1234F")
    assert _opened(world, submission.id) == (b"ABCPE1234F", PDF)
    assert world.uow.keys.write_locks == 1  # the active key was held while writing
    (entry,) = world.uow.audit_entries
    assert entry.action == "kyc.submitted"
    assert "ABCPE1234F" not in str(entry) and "234F" not in str(entry)


async def test_a_submission_without_a_file_needs_no_content_type(world: World) -> None:
    submission = await world.submit("bob", aadhaar(), document_type=DocumentType.AADHAAR)
    assert submission.file is None
    assert submission.masked_number.endswith(aadhaar()[-4:])
    assert world.uow.submissions.secrets[submission.id].sealed_file is None


@pytest.mark.parametrize(
    ("number", "file", "content_type", "field"),
    [
        ("ABCPE1234", b"", "", "document_number"),
        ("ABCPE1234F", b"plain text, named .pdf", "application/pdf", "document_file"),
        ("ABCPE1234F", PNG, "image/jpeg", "document_file"),
        ("ABCPE1234F", PDF, "", "document_content_type"),
        ("ABCPE1234F", b"", "application/pdf", "document_content_type"),
        ("ABCPE1234F", b"%PDF-" + b"x" * MAX_FILE, "application/pdf", "document_file"),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    world: World, number: str, file: bytes, content_type: str, field: str
) -> None:
    before = world.snapshot()
    with pytest.raises(ValidationError) as caught:
        await world.submit(number=number, file=file, content_type=content_type)
    assert [v.field for v in caught.value.violations] == [field]
    assert world.snapshot() == before
    assert world.wallets.checks == 0  # refused before asking wallet


async def test_an_unspecified_document_type_is_refused(world: World) -> None:
    with pytest.raises(ValidationError) as caught:
        await world.submissions.submit(SubmitKyc("alice", None, "ABCPE1234F", b"", "", None))
    assert [v.field for v in caught.value.violations] == ["document_type"]


async def test_a_user_without_a_wallet_cannot_submit(world: World) -> None:
    before = world.snapshot()
    with pytest.raises(WalletRequiredError) as caught:
        await world.submit("dave")
    assert caught.value.kind is ErrorKind.NOT_FOUND  # as wallet's own WALLET_NOT_FOUND
    world.wallets.down = True
    with pytest.raises(WalletUnavailableError):
        await world.submit("alice")
    assert world.snapshot() == before


async def test_one_pending_submission_per_user_none_after_full_and_a_rejected_user_may_resubmit(
    world: World,
) -> None:
    first = await world.submit()
    with pytest.raises(KycAlreadySubmittedError):
        await world.submit(number="ZZZPZ9999Z")
    await world.review.reject(RejectKyc("mod", MOD, first.id, "blurry photo", key("mod")))
    second = await world.submit(number="ZZZPZ9999Z")
    await world.approve(second)
    with pytest.raises(KycAlreadySubmittedError):
        await world.submit(number="YYYPY8888Y")


async def test_a_basic_user_may_submit_again_to_be_upgraded_and_never_loses_the_tier(
    world: World,
) -> None:
    """BASIC is not the end: the user submits again (an identity and address document) while
    keeping BASIC; a pending upgrade still blocks a third submission, a rejected one leaves
    BASIC, an upgrade approved at BASIC again changes nothing, and FULL is final."""
    first = await world.submit()
    await world.approve(first, tier=KycTier.BASIC)
    upgrade = await world.submit(number="ZZZPZ9999Z")
    assert upgrade.status is KycStatus.PENDING
    view = await world.submissions.status("alice")
    assert (view.latest, view.tier) == (upgrade, KycTier.BASIC)
    with pytest.raises(KycAlreadySubmittedError, match="pending"):
        await world.submit(number="YYYPY8888Y")
    await world.review.reject(RejectKyc("mod", MOD, upgrade.id, "no address shown", key("mod")))
    view = await world.submissions.status("alice")
    assert view.latest is not None and view.latest.status is KycStatus.REJECTED
    assert view.tier is KycTier.BASIC
    again = await world.submit(number="YYYPY8888Y")
    await world.approve(again, tier=KycTier.BASIC)  # harmless: BASIC stays BASIC
    assert (await world.submissions.status("alice")).tier is KycTier.BASIC
    last = await world.submit(number="XXXPX7777X")
    await world.approve(last)  # unspecified: FULL
    assert (await world.submissions.status("alice")).tier is KycTier.FULL
    before = world.snapshot()
    with pytest.raises(KycAlreadySubmittedError, match="full"):
        await world.submit(number="WWWPW6666W")
    with pytest.raises(KycAlreadySubmittedError, match="full"):
        await world.submissions.upload(upload_command("alice", PDF), chunks_of(PDF))
    assert world.snapshot() == before


async def test_a_retried_submit_replays_the_first_answer_and_stores_one_submission(
    world: World,
) -> None:
    k = key("alice", b"same")
    cmd = SubmitKyc("alice", DocumentType.PAN, "ABCPE1234F", JPEG, "image/jpeg", k)
    first = await world.submissions.submit(cmd)
    again = await world.submissions.submit(cmd)
    assert again == first
    assert len(world.uow.submissions.rows) == 1
    other = dataclasses.replace(k, fingerprint=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(IdempotencyKeyReusedError):
        await world.submissions.submit(dataclasses.replace(cmd, idempotency=other))


async def test_status_shows_the_latest_submission_reason_and_tier(world: World) -> None:
    empty = await world.submissions.status("alice")
    assert (empty.latest, empty.tier) == (None, KycTier.NONE)
    first = await world.submit()
    await world.review.reject(RejectKyc("mod", MOD, first.id, " unreadable scan ", key("mod")))
    rejected = await world.submissions.status("alice")
    assert rejected.latest is not None
    assert (rejected.latest.status, rejected.latest.rejection_reason) == (
        KycStatus.REJECTED,
        "unreadable scan",
    )
    assert rejected.tier is KycTier.NONE
    second = await world.submit(number="ZZZPZ9999Z")
    pending = await world.submissions.status("alice")
    assert pending.latest is not None and pending.latest.id == second.id
    await world.approve(second)
    verified = await world.submissions.status("alice")
    assert verified.tier is KycTier.FULL
    assert (await world.submissions.status("bob")).latest is None


# ----- streamed uploads -------------------------------------------------------------------


async def test_an_upload_stores_the_file_sealed_as_it_streamed(world: World) -> None:
    data = PDF * 20
    submission = await world.submissions.upload(
        upload_command("alice", data, idempotency=key()), chunks_of(data, MAX_CHUNK)
    )
    assert submission.file == DocumentFile(DocumentContentType.PDF, len(data))
    assert _opened(world, submission.id) == (b"ABCPE1234F", data)
    assert world.uow.audit_entries[-1].details["channel"] == "stream"


@pytest.mark.parametrize(
    ("data_parts", "declared", "message"),
    [
        ([PDF[:500], PDF[500:]], PDF[:500], "more than the declared"),
        ([(PDF * 10)[:MAX_CHUNK]], PDF * 10, f"ended after {MAX_CHUNK} of {len(PDF) * 10}"),
        ([b"hello, I am text pretending"], b"hello, I am text pretending", "not a PDF"),
    ],
    ids=["too long", "cut off", "not a pdf"],
)
async def test_a_bad_stream_creates_nothing(
    world: World, data_parts: list[bytes], declared: bytes, message: str
) -> None:
    before = world.snapshot()
    with pytest.raises(ValidationError, match=message):
        await world.submissions.upload(upload_command("alice", declared), parts(data_parts))
    assert world.snapshot() == before


async def test_a_stream_over_the_cap_is_refused_before_any_chunk(world: World) -> None:
    async def never() -> object:
        raise AssertionError("no chunk should be read")
        yield b""  # pragma: no cover

    with pytest.raises(ValidationError) as caught:
        await world.submissions.upload(
            upload_command("alice", b"", size=MAX_FILE + 1, sha256="a" * 64),
            never(),  # type: ignore[arg-type]
        )
    assert [v.field for v in caught.value.violations] == ["metadata.document_size_bytes"]


async def test_an_upload_by_someone_already_submitted_is_refused_before_the_stream(
    world: World,
) -> None:
    await world.submit()
    consumed: list[bytes] = []

    async def watched() -> object:
        consumed.append(b"x")
        yield PDF

    with pytest.raises(KycAlreadySubmittedError):
        await world.submissions.upload(upload_command("alice", PDF), watched())  # type: ignore[arg-type]
    assert consumed == []


async def test_a_retried_upload_replays_even_though_the_user_now_has_a_submission(
    world: World,
) -> None:
    k = key()
    first = await world.submissions.upload(
        upload_command("alice", PNG, content_type="image/png", idempotency=k), chunks_of(PNG)
    )
    again = await world.submissions.upload(
        upload_command("alice", PNG, content_type="image/png", idempotency=k), chunks_of(PNG)
    )
    assert again == first
    assert len(world.uow.submissions.rows) == 1


async def test_a_retried_submission_replays_while_wallet_is_down(world: World) -> None:
    """The first SubmitKyc committed and its reply was lost; wallet is unreachable when the
    client retries. The retry is answered its submission, not WALLET_UNAVAILABLE: wallet is
    asked only when nothing is stored (KYC review, 2026-12-04 night)."""
    k = key()
    command = SubmitKyc("alice", DocumentType.PAN, "ABCPE1234F", b"", "", k)
    first = await world.submissions.submit(command)
    world.wallets.down = True
    checks = world.wallets.checks
    assert await world.submissions.submit(command) == first
    upload = upload_command("alice", PNG, content_type="image/png", idempotency=key())
    with pytest.raises(WalletUnavailableError):  # a new request still needs wallet
        await world.submissions.upload(upload, chunks_of(PNG))
    assert world.wallets.checks == checks + 1


async def test_a_retried_upload_replays_while_wallet_is_down(world: World) -> None:
    k = key()
    command = upload_command("alice", PNG, content_type="image/png", idempotency=k)
    first = await world.submissions.upload(command, chunks_of(PNG))
    world.wallets.down = True
    assert await world.submissions.upload(command, chunks_of(PNG)) == first


async def test_a_second_inline_submission_is_refused_before_its_file_is_sealed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of 2026-12-05: SubmitKyc sealed the file (a copy of up to 10 MiB, and the CPU)
    before `_store` refused KYC_ALREADY_SUBMITTED; UploadKycDocument already refused first."""
    await world.submit()

    def no_sealing(*_: object) -> None:
        raise AssertionError("a document was sealed for a refused submission")

    monkeypatch.setattr("vaultpay_kyc.service_layer.submissions.DataKey.generate", no_sealing)
    with pytest.raises(KycAlreadySubmittedError):
        await world.submit(number="ZZZPZ9999Z")
