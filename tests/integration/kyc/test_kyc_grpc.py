"""The kyc service over native gRPC, on real PostgreSQL: submit (inline and streamed, up to the
10 MiB cap), the review queue, decisions delivered to wallet through the outbox, the refusals
that write nothing, and the race between two submissions of one user."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest
from sqlalchemy import text

from tests.integration.kyc.conftest import KycStack, bearer
from tests.integration.kyc.kyc_support import MiB, pan, pdf, rid, submit_request, upload_stream
from tests.support import eventually, rpc_failure
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay.type.v1 import kyc_tier_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.context import Role
from vaultpay_common.db import create_engine

pytestmark = pytest.mark.integration

CAP = 10 * MiB


async def _count_submissions(kyc: KycStack, user_id: str) -> int:
    _, staff = kyc.staff()
    reply = await kyc.admin.AdminListKycSubmissions(
        kyc_pb2.AdminListKycSubmissionsRequest(user_id=user_id), metadata=staff
    )
    return len(reply.submissions)


async def test_submit_view_approve_raises_the_tier_and_notifies(kyc: KycStack) -> None:
    user_id, user = kyc.user()
    number = pan()
    file = pdf(4096, b"scan of a PAN card")
    submitted = await kyc.public.SubmitKyc(submit_request(number, file), metadata=user)
    sub = submitted.submission
    assert sub.status == kyc_pb2.KYC_STATUS_PENDING
    assert sub.masked_document_number == "XXXXXX" + number[-4:]
    assert (sub.has_document_file, sub.document_content_type, sub.document_size_bytes) == (
        True,
        "application/pdf",
        4096,
    )
    assert sub.reviewer_id == ""
    status = await kyc.public.GetKycStatus(kyc_pb2.GetKycStatusRequest(), metadata=user)
    assert (status.status, status.kyc_tier) == (
        kyc_pb2.KYC_STATUS_PENDING,
        kyc_tier_pb2.KYC_TIER_NONE,
    )

    moderator_id, moderator = kyc.staff()
    queue = await kyc.admin.AdminListKycSubmissions(
        kyc_pb2.AdminListKycSubmissionsRequest(status=kyc_pb2.KYC_STATUS_PENDING, page_size=100),
        metadata=moderator,
    )
    assert sub.submission_id in [s.submission_id for s in queue.submissions]
    viewed = await kyc.admin.AdminGetKycSubmission(
        kyc_pb2.AdminGetKycSubmissionRequest(submission_id=sub.submission_id), metadata=moderator
    )
    assert (viewed.document_number, viewed.document_file) == (number, file)

    approved = await kyc.admin.AdminApproveKyc(
        kyc_pb2.AdminApproveKycRequest(
            request_id=rid(), submission_id=sub.submission_id, note="ok"
        ),
        metadata=moderator,
    )
    assert approved.submission.status == kyc_pb2.KYC_STATUS_VERIFIED
    assert approved.submission.granted_kyc_tier == kyc_tier_pb2.KYC_TIER_FULL
    assert approved.submission.reviewer_id == moderator_id

    async def tier_arrived() -> bool:
        return kyc.wallet.tiers.get(user_id) == kyc_tier_pb2.KYC_TIER_FULL

    await eventually(tier_arrived)
    await eventually(lambda: _notified(kyc, user_id))
    (note,) = kyc.wallet.notes_for(user_id)
    assert note.kind == wallet_pb2.NOTIFICATION_KIND_KYC
    assert number not in note.body and number[-4:] in note.body
    # kyc's own identity, addressed to wallet, not the user's
    assert kyc.auth.service_tokens["wallet"] in kyc.wallet.seen_tokens
    (tier_call,) = [c for c in kyc.wallet.tier_calls if c.user_id == user_id]
    assert tier_call.submission_id == sub.submission_id

    engine = create_engine(kyc.dbs.app_dsn("kyc"), application_name="kyc-test")
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT action, actor_id, details::text AS details FROM audit_events"
                        " WHERE target_id = :id ORDER BY sequence"
                    ),
                    {"id": sub.submission_id},
                )
            ).all()
            events = (
                (
                    await conn.execute(
                        text("SELECT event_id::text FROM outbox_events WHERE producer = 'kyc'")
                    )
                )
                .scalars()
                .all()
            )
    finally:
        await engine.dispose()
    assert [r.action for r in rows] == ["kyc.submitted", "kyc.submission_viewed", "kyc.approved"]
    assert rows[1].actor_id == moderator_id
    assert json.loads(rows[1].details)["ip"] == "127.0.0.1"  # the staff member's address
    assert (rows[2].actor_id, json.loads(rows[2].details)["ip"]) == (moderator_id, "127.0.0.1")
    assert all(number not in r.details for r in rows)
    assert tier_call.request_id in events  # deduped by the outbox event id

    status = await kyc.public.GetKycStatus(kyc_pb2.GetKycStatusRequest(), metadata=user)
    assert (status.status, status.kyc_tier) == (
        kyc_pb2.KYC_STATUS_VERIFIED,
        kyc_tier_pb2.KYC_TIER_FULL,
    )


async def _notified(kyc: KycStack, user_id: str) -> bool:
    return bool(kyc.wallet.notes_for(user_id))


async def _audit_details(kyc: KycStack, action: str, target_id: str) -> dict[str, str]:
    engine = create_engine(kyc.dbs.app_dsn("kyc"), application_name="kyc-test")
    try:
        async with engine.connect() as conn:
            details = (
                await conn.execute(
                    text(
                        "SELECT details::text FROM audit_events"
                        " WHERE action = :action AND target_id = :id"
                    ),
                    {"action": action, "id": target_id},
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    return cast(dict[str, str], json.loads(details))


async def test_a_rejected_user_is_told_why_and_may_submit_again(kyc: KycStack) -> None:
    user_id, user = kyc.user()
    first = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    again = await rpc_failure(kyc.public.SubmitKyc(submit_request(pan()), metadata=user))
    assert (again.code, again.reason) == (grpc.StatusCode.ALREADY_EXISTS, "KYC_ALREADY_SUBMITTED")
    _, moderator = kyc.staff()
    await kyc.admin.AdminRejectKyc(
        kyc_pb2.AdminRejectKycRequest(
            request_id=rid(), submission_id=first.submission.submission_id, reason="blurred photo"
        ),
        metadata=moderator,
    )
    status = await kyc.public.GetKycStatus(kyc_pb2.GetKycStatusRequest(), metadata=user)
    assert (status.status, status.rejection_reason) == (
        kyc_pb2.KYC_STATUS_REJECTED,
        "blurred photo",
    )
    rejected = await _audit_details(kyc, "kyc.rejected", first.submission.submission_id)
    assert rejected["ip"] == "127.0.0.1"  # the reviewer's address, as their views have
    await eventually(lambda: _notified(kyc, user_id))
    second = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    assert second.submission.status == kyc_pb2.KYC_STATUS_PENDING


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            kyc_pb2.SubmitKycRequest(
                document_type=kyc_pb2.DOCUMENT_TYPE_PAN, document_number="ABCPE123"
            ),
            "document_number",
        ),
        (
            kyc_pb2.SubmitKycRequest(
                document_type=kyc_pb2.DOCUMENT_TYPE_AADHAAR, document_number="234123412347"
            ),
            "document_number",
        ),
        (
            kyc_pb2.SubmitKycRequest(
                document_type=kyc_pb2.DOCUMENT_TYPE_PASSPORT, document_number="K123456"
            ),
            "document_number",
        ),
        (
            kyc_pb2.SubmitKycRequest(
                document_type=kyc_pb2.DOCUMENT_TYPE_DRIVING_LICENCE, document_number="MH14201100628"
            ),
            "document_number",
        ),
        (kyc_pb2.SubmitKycRequest(document_number="ABCPE1234F"), "document_type"),
        (
            kyc_pb2.SubmitKycRequest(document_type=cast(Any, 99), document_number="ABCPE1234F"),
            "document_type",
        ),
        (
            submit_request("ABCPE1234F", b"hello, just text named .pdf", "application/pdf"),
            "document_file",
        ),
        (submit_request("ABCPE1234F", pdf(CAP + 1), "application/pdf"), "document_file"),
        (
            kyc_pb2.SubmitKycRequest(
                request_id="nope",
                document_type=kyc_pb2.DOCUMENT_TYPE_PAN,
                document_number="ABCPE1234F",
            ),
            "request_id",
        ),
    ],
    ids=[
        "pan",
        "aadhaar-check-digit",
        "passport",
        "licence",
        "no-type",
        "unknown-type",
        "text-as-pdf",
        "over-cap",
        "request-id",
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    kyc: KycStack, request_: kyc_pb2.SubmitKycRequest, field: str
) -> None:
    user_id, user = kyc.user()
    failure = await rpc_failure(kyc.public.SubmitKyc(request_, metadata=user))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert await _count_submissions(kyc, user_id) == 0


def _misspelled(id_: str) -> list[str]:
    """Spellings Python's `uuid.UUID` accepts and the ids parser refuses, and a non-id."""
    return ["{" + id_ + "}", "urn:uuid:" + id_, id_.replace("-", ""), " " + id_, id_ + "\n", "nope"]


async def test_every_id_kyc_takes_is_parsed_strictly_naming_the_field(kyc: KycStack) -> None:
    """Submission ids (view, approve, reject) and the queue's user filter: a misspelled id is
    INVALID_ARGUMENT naming its field, not a decision or a silently empty list."""
    user_id, user = kyc.user()
    sid = (
        await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    ).submission.submission_id
    _, moderator = kyc.staff()
    for spelling in _misspelled(sid):
        calls = [
            kyc.admin.AdminGetKycSubmission(
                kyc_pb2.AdminGetKycSubmissionRequest(submission_id=spelling), metadata=moderator
            ),
            kyc.admin.AdminApproveKyc(
                kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=spelling),
                metadata=moderator,
            ),
            kyc.admin.AdminRejectKyc(
                kyc_pb2.AdminRejectKycRequest(
                    request_id=rid(), submission_id=spelling, reason="blurred"
                ),
                metadata=moderator,
            ),
        ]
        for call in calls:
            failure = await rpc_failure(call)
            assert (failure.code, failure.fields) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                ["submission_id"],
            ), spelling
    for spelling in _misspelled(user_id):
        failure = await rpc_failure(
            kyc.admin.AdminListKycSubmissions(
                kyc_pb2.AdminListKycSubmissionsRequest(user_id=spelling), metadata=moderator
            )
        )
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["user_id"])
    status = await kyc.public.GetKycStatus(kyc_pb2.GetKycStatusRequest(), metadata=user)
    assert status.status == kyc_pb2.KYC_STATUS_PENDING  # nothing was decided
    listed = await kyc.admin.AdminListKycSubmissions(
        kyc_pb2.AdminListKycSubmissionsRequest(user_id=user_id.upper()), metadata=moderator
    )
    assert [s.submission_id for s in listed.submissions] == [sid]  # upper case is the same id


async def test_a_user_without_a_wallet_cannot_submit(kyc: KycStack) -> None:
    """NOT_FOUND (404 through the gateway), as wallet and transfer answer WALLET_NOT_FOUND."""
    stranger = kyc.auth.user_token("no-wallet-user")
    inline = await rpc_failure(
        kyc.public.SubmitKyc(submit_request(pan()), metadata=bearer(stranger))
    )
    data = pdf(4096)
    streamed = await rpc_failure(
        kyc.public.UploadKycDocument(upload_stream(pan(), data), metadata=bearer(stranger))
    )
    for failure in (inline, streamed):
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "WALLET_NOT_FOUND")


async def test_a_retry_that_spells_the_document_otherwise_is_the_same_request(
    kyc: KycStack,
) -> None:
    """The number with spaces or in lower case, the media type or the digest in upper case:
    what the use case reads is the same, so the retry replays the first answer (review of
    2026-12-05: IDEMPOTENCY_KEY_REUSED)."""
    _, user = kyc.user()
    number = pan()
    spaced = f"{number[:5].lower()} {number[5:9]}-{number[9:]}"
    request_id = rid()
    data = pdf(4096, b"spelled twice")
    first = await kyc.public.SubmitKyc(
        submit_request(number, data, request_id=request_id), metadata=user
    )
    again = await kyc.public.SubmitKyc(
        submit_request(spaced, data, "Application/PDF", request_id=request_id), metadata=user
    )
    assert again == first

    _, streaming = kyc.user()
    upload_id = rid()
    digest = hashlib.sha256(data).hexdigest()
    uploaded = await kyc.public.UploadKycDocument(
        upload_stream(number, data, request_id=upload_id), metadata=streaming
    )
    retried = await kyc.public.UploadKycDocument(
        upload_stream(spaced, data, sha256=digest.upper(), request_id=upload_id),
        metadata=streaming,
    )
    assert retried == uploaded


async def test_files_up_to_the_cap_pass_inline_and_streamed_and_read_back_identical(
    kyc: KycStack,
) -> None:
    _, moderator = kyc.staff()
    _, inline_user = kyc.user()
    inline = pdf(CAP, b"inline at the cap")
    first = await kyc.public.SubmitKyc(submit_request(pan(), inline), metadata=inline_user)
    _, stream_user = kyc.user()
    streamed = pdf(CAP, b"streamed at the cap")
    second = await kyc.public.UploadKycDocument(
        upload_stream(pan(), streamed), metadata=stream_user
    )
    assert second.submission.document_size_bytes == CAP
    for submission_id, data in (
        (first.submission.submission_id, inline),
        (second.submission.submission_id, streamed),
    ):
        viewed = await kyc.admin.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=submission_id), metadata=moderator
        )
        assert hashlib.sha256(viewed.document_file).digest() == hashlib.sha256(data).digest()


async def _messages(
    items: list[kyc_pb2.UploadKycDocumentRequest],
) -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
    for item in items:
        yield item


def _chunk(data: bytes) -> kyc_pb2.UploadKycDocumentRequest:
    return kyc_pb2.UploadKycDocumentRequest(chunk=data)


@pytest.mark.parametrize(
    "case",
    [
        "over-cap",
        "too-long",
        "cut-off",
        "chunk-first",
        "metadata-twice",
        "wrong-hash",
        "text",
        "bad-request-id",
        "tiny-chunks",
    ],
)
async def test_a_bad_stream_is_refused_and_creates_nothing(kyc: KycStack, case: str) -> None:
    user_id, user = kyc.user()
    data = pdf(300_000)
    number = pan()
    messages = list(upload_stream(number, data, chunk=64 * 1024))
    expected_field = "chunk"
    if case == "over-cap":
        messages = list(upload_stream(number, data, size=CAP + 1))[:1]
        expected_field = "metadata.document_size_bytes"
    elif case == "too-long":
        messages = list(upload_stream(number, data, size=len(data) - 1, chunk=64 * 1024))
    elif case == "cut-off":
        messages = messages[:-1]
    elif case == "chunk-first":
        messages = [messages[1], messages[0], *messages[2:]]
        expected_field = "metadata"
    elif case == "metadata-twice":
        messages = [messages[0], messages[1], messages[0], *messages[2:]]
        expected_field = "metadata"
    elif case == "wrong-hash":
        messages = list(upload_stream(number, data, sha256="0" * 64))
        expected_field = "metadata.document_sha256"
    elif case == "text":
        text_file = b"plain text " * 1000
        messages = list(upload_stream(number, text_file))
    elif case == "bad-request-id":  # named where the stream holds it (review of 2026-12-04)
        messages = list(upload_stream(number, data, request_id="not-a-uuid"))
        expected_field = "metadata.request_id"
    elif case == "tiny-chunks":  # below 16 KiB before the last (review of kyc, item 1)
        messages = list(upload_stream(number, data, chunk=4096))
    failure = await rpc_failure(kyc.public.UploadKycDocument(_messages(messages), metadata=user))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [expected_field]), (
        failure.message
    )
    assert await _count_submissions(kyc, user_id) == 0


async def test_a_stream_cancelled_by_the_client_creates_nothing(kyc: KycStack) -> None:
    user_id, user = kyc.user()
    data = pdf(3 * MiB)
    sent = asyncio.Event()
    release = asyncio.Event()

    async def half_then_hang() -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
        stream = upload_stream(pan(), data)
        yield next(stream)
        yield next(stream)
        sent.set()
        await release.wait()

    call = kyc.public.UploadKycDocument(half_then_hang(), metadata=user)
    await asyncio.wait_for(sent.wait(), 10)
    call.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    # Had the half stream been stored, this would be KYC_ALREADY_SUBMITTED.
    done = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    assert done.submission.status == kyc_pb2.KYC_STATUS_PENDING
    assert await _count_submissions(kyc, user_id) == 1


async def _flagged(kyc: KycStack, user_id: str) -> list[bool]:
    _, staff = kyc.staff()
    reply = await kyc.admin.AdminListKycSubmissions(
        kyc_pb2.AdminListKycSubmissionsRequest(user_id=user_id), metadata=staff
    )
    return [s.possible_duplicate for s in reply.submissions]


async def test_the_same_document_from_two_users_is_flagged_and_shown_to_the_reviewer(
    kyc: KycStack,
) -> None:
    number = pan()
    alice_id, alice = kyc.user()
    bob_id, bob = kyc.user()
    first = await kyc.public.SubmitKyc(submit_request(number), metadata=alice)
    assert await _flagged(kyc, alice_id) == [False]
    second = await kyc.public.SubmitKyc(submit_request(number.lower()), metadata=bob)
    assert not second.submission.possible_duplicate  # never told to the submitter
    assert await _flagged(kyc, bob_id) == [True]
    # The document is now shared by two users: either of them may be the impostor.
    assert await _flagged(kyc, alice_id) == [True]
    _, moderator = kyc.staff()
    viewed = await kyc.admin.AdminGetKycSubmission(
        kyc_pb2.AdminGetKycSubmissionRequest(submission_id=second.submission.submission_id),
        metadata=moderator,
    )
    assert list(viewed.duplicate_submission_ids) == [first.submission.submission_id]
    assert viewed.hidden_duplicate_count == 0
    assert viewed.submission.possible_duplicate


async def test_staff_cannot_decide_their_own_submission_and_decisions_are_final(
    kyc: KycStack,
) -> None:
    moderator_id = kyc.new_wallet_user()
    moderator = (("authorization", f"Bearer {kyc.auth.user_token(moderator_id, Role.MODERATOR)}"),)
    own = await kyc.public.SubmitKyc(submit_request(pan()), metadata=moderator)
    failure = await rpc_failure(
        kyc.admin.AdminApproveKyc(
            kyc_pb2.AdminApproveKycRequest(
                request_id=rid(), submission_id=own.submission.submission_id
            ),
            metadata=moderator,
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "KYC_SELF_REVIEW")
    _, other = kyc.staff(Role.ADMIN)
    request = kyc_pb2.AdminApproveKycRequest(
        request_id=rid(),
        submission_id=own.submission.submission_id,
        kyc_tier=kyc_tier_pb2.KYC_TIER_BASIC,
    )
    first = await kyc.admin.AdminApproveKyc(request, metadata=other)
    replay = await kyc.admin.AdminApproveKyc(request, metadata=other)
    assert replay == first
    late = await rpc_failure(
        kyc.admin.AdminRejectKyc(
            kyc_pb2.AdminRejectKycRequest(
                request_id=rid(), submission_id=own.submission.submission_id, reason="no"
            ),
            metadata=other,
        )
    )
    assert (late.code, late.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "KYC_NOT_PENDING")
    missing = await rpc_failure(
        kyc.admin.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=rid()), metadata=other
        )
    )
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "KYC_SUBMISSION_NOT_FOUND")


async def test_an_approval_commits_while_wallet_is_down_and_the_tier_follows(
    kyc: KycStack,
) -> None:
    user_id, user = kyc.user()
    submitted = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    _, moderator = kyc.staff()
    kyc.wallet.down = True
    try:
        approved = await kyc.admin.AdminApproveKyc(
            kyc_pb2.AdminApproveKycRequest(
                request_id=rid(), submission_id=submitted.submission.submission_id
            ),
            metadata=moderator,
        )
        assert approved.submission.status == kyc_pb2.KYC_STATUS_VERIFIED
        assert user_id not in kyc.wallet.tiers
    finally:
        kyc.wallet.down = False

    async def tier_arrived() -> bool:
        return kyc.wallet.tiers.get(user_id) == kyc_tier_pb2.KYC_TIER_FULL

    await eventually(tier_arrived, within=30.0)


async def test_two_simultaneous_submissions_of_one_user_store_one(kyc: KycStack) -> None:
    user_id, user = kyc.user()
    results = await asyncio.gather(
        *(kyc.public.SubmitKyc(submit_request(pan()), metadata=user) for _ in range(6)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, kyc_pb2.SubmitKycResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert {r.code() for r in refused} == {grpc.StatusCode.ALREADY_EXISTS}
    assert await _count_submissions(kyc, user_id) == 1


async def _approve(
    kyc: KycStack, submission_id: str, tier: kyc_tier_pb2.KycTier.ValueType
) -> kyc_pb2.KycSubmission:
    _, moderator = kyc.staff()
    reply: kyc_pb2.AdminApproveKycResponse = await kyc.admin.AdminApproveKyc(
        kyc_pb2.AdminApproveKycRequest(
            request_id=rid(), submission_id=submission_id, kyc_tier=tier
        ),
        metadata=moderator,
    )
    return reply.submission


async def test_a_basic_user_is_upgraded_to_full_by_a_second_submission(kyc: KycStack) -> None:
    """Approved at BASIC, the user submits again (PENDING, still BASIC); approved at FULL,
    wallet is told FULL and nothing more can be submitted, inline or streamed."""
    user_id, user = kyc.user()
    first = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    await _approve(kyc, first.submission.submission_id, kyc_tier_pb2.KYC_TIER_BASIC)
    await eventually(lambda: _tier_is(kyc, user_id, kyc_tier_pb2.KYC_TIER_BASIC))

    upgrade = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    assert upgrade.submission.status == kyc_pb2.KYC_STATUS_PENDING
    status = await kyc.public.GetKycStatus(kyc_pb2.GetKycStatusRequest(), metadata=user)
    assert (status.status, status.kyc_tier) == (
        kyc_pb2.KYC_STATUS_PENDING,
        kyc_tier_pb2.KYC_TIER_BASIC,
    )
    pending = await rpc_failure(kyc.public.SubmitKyc(submit_request(pan()), metadata=user))
    assert (pending.code, pending.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "KYC_ALREADY_SUBMITTED",
    )

    approved = await _approve(kyc, upgrade.submission.submission_id, kyc_tier_pb2.KYC_TIER_FULL)
    assert approved.granted_kyc_tier == kyc_tier_pb2.KYC_TIER_FULL
    await eventually(lambda: _tier_is(kyc, user_id, kyc_tier_pb2.KYC_TIER_FULL))
    status = await kyc.public.GetKycStatus(kyc_pb2.GetKycStatusRequest(), metadata=user)
    assert (status.status, status.kyc_tier) == (
        kyc_pb2.KYC_STATUS_VERIFIED,
        kyc_tier_pb2.KYC_TIER_FULL,
    )
    inline = await rpc_failure(kyc.public.SubmitKyc(submit_request(pan()), metadata=user))
    streamed = await rpc_failure(
        kyc.public.UploadKycDocument(upload_stream(pan(), pdf(4096)), metadata=user)
    )
    for failure in (inline, streamed):
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "KYC_ALREADY_SUBMITTED",
        )
    assert await _count_submissions(kyc, user_id) == 2


async def test_a_rejected_upgrade_keeps_basic_and_simultaneous_upgrades_store_one(
    kyc: KycStack,
) -> None:
    user_id, user = kyc.user()
    first = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    await _approve(kyc, first.submission.submission_id, kyc_tier_pb2.KYC_TIER_BASIC)
    results = await asyncio.gather(
        *(kyc.public.SubmitKyc(submit_request(pan()), metadata=user) for _ in range(6)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, kyc_pb2.SubmitKycResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert {r.code() for r in refused} == {grpc.StatusCode.ALREADY_EXISTS}
    _, moderator = kyc.staff()
    await kyc.admin.AdminRejectKyc(
        kyc_pb2.AdminRejectKycRequest(
            request_id=rid(), submission_id=ok[0].submission.submission_id, reason="no address"
        ),
        metadata=moderator,
    )
    status = await kyc.public.GetKycStatus(kyc_pb2.GetKycStatusRequest(), metadata=user)
    assert (status.status, status.rejection_reason, status.kyc_tier) == (
        kyc_pb2.KYC_STATUS_REJECTED,
        "no address",
        kyc_tier_pb2.KYC_TIER_BASIC,
    )
    assert await _count_submissions(kyc, user_id) == 2


async def test_a_late_basic_event_does_not_lower_the_full_tier_in_wallet(kyc: KycStack) -> None:
    """The BASIC approval's event keeps failing while the upgrade is submitted, approved at
    FULL and delivered; when it finally goes through, it carries the tier held then (FULL),
    not the BASIC it was raised for, since wallet sets the tier it is given."""
    user_id, user = kyc.user()
    first = (await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)).submission
    kyc.wallet.tier_unavailable_for.add(first.submission_id)
    try:
        await _approve(kyc, first.submission_id, kyc_tier_pb2.KYC_TIER_BASIC)
        upgrade = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
        await _approve(kyc, upgrade.submission.submission_id, kyc_tier_pb2.KYC_TIER_FULL)
        await eventually(lambda: _tier_is(kyc, user_id, kyc_tier_pb2.KYC_TIER_FULL))
    finally:
        kyc.wallet.tier_unavailable_for.discard(first.submission_id)

    async def late_call() -> wallet_pb2.SetKycTierRequest | None:
        calls = [c for c in kyc.wallet.tier_calls if c.submission_id == first.submission_id]
        return calls[0] if calls else None

    late = await eventually(late_call, within=30.0)
    assert late.kyc_tier == kyc_tier_pb2.KYC_TIER_FULL
    assert kyc.wallet.tiers[user_id] == kyc_tier_pb2.KYC_TIER_FULL


async def test_a_basic_events_retry_after_the_upgrade_is_delivered_not_dead_lettered(
    kyc: KycStack,
) -> None:
    """The BASIC approval's first attempt reaches wallet but its reply is lost; it is retried
    after the upgrade to FULL, so the retry sends FULL. That is another request than the stored
    BASIC one and must not reuse its request_id (IDEMPOTENCY_KEY_REUSED: a dead letter for a
    wallet that is right): the event is delivered and the wallet holds FULL."""
    user_id, user = kyc.user()
    first = (await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)).submission
    kyc.wallet.tier_reply_lost_for.add(first.submission_id)
    try:
        await _approve(kyc, first.submission_id, kyc_tier_pb2.KYC_TIER_BASIC)
        await eventually(lambda: _tier_is(kyc, user_id, kyc_tier_pb2.KYC_TIER_BASIC))
        upgrade = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
        await _approve(kyc, upgrade.submission.submission_id, kyc_tier_pb2.KYC_TIER_FULL)
        await eventually(lambda: _tier_is(kyc, user_id, kyc_tier_pb2.KYC_TIER_FULL))
    finally:
        kyc.wallet.tier_reply_lost_for.discard(first.submission_id)

    async def settled() -> str | None:
        status = await _tier_event_status(kyc, first.submission_id)
        return None if status == "PENDING" else status

    assert await eventually(settled, within=30.0) == "DELIVERED"
    assert kyc.wallet.tiers[user_id] == kyc_tier_pb2.KYC_TIER_FULL
    sent = [c for c in kyc.wallet.tier_calls if c.submission_id == first.submission_id]
    assert [c.kyc_tier for c in sent] == [kyc_tier_pb2.KYC_TIER_BASIC, kyc_tier_pb2.KYC_TIER_FULL]
    assert sent[0].request_id != sent[1].request_id


async def _tier_event_status(kyc: KycStack, submission_id: str) -> str:
    engine = create_engine(kyc.dbs.app_dsn("kyc"), application_name="kyc-test")
    try:
        async with engine.connect() as conn:
            return str(
                (
                    await conn.execute(
                        text(
                            "SELECT status FROM outbox_events WHERE producer = 'kyc'"
                            " AND topic = 'wallet.kyc_tier'"
                            " AND payload->>'submission_id' = :id"
                        ),
                        {"id": submission_id},
                    )
                ).scalar_one()
            )
    finally:
        await engine.dispose()


async def _tier_is(kyc: KycStack, user_id: str, tier: int) -> bool:
    return kyc.wallet.tiers.get(user_id) == tier


async def test_kyc_stats_are_for_services(kyc: KycStack) -> None:
    wallet = (("authorization", f"Bearer {kyc.auth.peer_token('wallet')}"),)
    before = await kyc.internal.GetKycStats(kyc_pb2.GetKycStatsRequest(), metadata=wallet)
    for _ in range(2):  # two users' submissions, pending review
        _, user = kyc.user()
        await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    stats = await kyc.internal.GetKycStats(kyc_pb2.GetKycStatsRequest(), metadata=wallet)
    # The module's other tests leave submissions of their own: the count rose by this test's.
    assert stats.pending_count == before.pending_count + 2
    assert stats.HasField("compute_time")
    # Only wallet asks for the statistics: another service (here kyc's own identity) is refused.
    own = (("authorization", f"Bearer {kyc.auth.peer_token('kyc')}"),)
    refused = await rpc_failure(
        kyc.internal.GetKycStats(kyc_pb2.GetKycStatsRequest(), metadata=own)
    )
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.reason == "INSUFFICIENT_PERMISSIONS"
    assert "service kyc may not call this method" in refused.message
    # wallet's token for another service (one a peer received with wallet's call to it) is
    # not wallet's identity here: a service token works only where it is addressed.
    for elsewhere in ("auth", "transfer"):
        replayed = (("authorization", f"Bearer {kyc.auth.peer_token('wallet', to=elsewhere)}"),)
        stolen = await rpc_failure(
            kyc.internal.GetKycStats(kyc_pb2.GetKycStatsRequest(), metadata=replayed)
        )
        assert (stolen.code, stolen.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    _, admin = kyc.staff(Role.SUPER_ADMIN)
    failure = await rpc_failure(
        kyc.internal.GetKycStats(kyc_pb2.GetKycStatsRequest(), metadata=admin)
    )
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    _, user = kyc.user()
    denied = await rpc_failure(
        kyc.admin.AdminListKycSubmissions(kyc_pb2.AdminListKycSubmissionsRequest(), metadata=user)
    )
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED


async def test_the_queue_pages_pending_oldest_first_then_reviewed_newest_first(
    kyc: KycStack,
) -> None:
    user_id, user = kyc.user()
    _, moderator = kyc.staff()
    rejected: list[str] = []
    for reason in ("first try", "second try"):
        sent = await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
        rejected.append(sent.submission.submission_id)
        await kyc.admin.AdminRejectKyc(
            kyc_pb2.AdminRejectKycRequest(
                request_id=rid(), submission_id=sent.submission.submission_id, reason=reason
            ),
            metadata=moderator,
        )
    pending = (await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)).submission
    seen: list[str] = []
    token = ""
    while True:
        page = await kyc.admin.AdminListKycSubmissions(
            kyc_pb2.AdminListKycSubmissionsRequest(user_id=user_id, page_size=1, page_token=token),
            metadata=moderator,
        )
        seen += [s.submission_id for s in page.submissions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [pending.submission_id, rejected[1], rejected[0]]
    forged = await rpc_failure(
        kyc.admin.AdminListKycSubmissions(
            kyc_pb2.AdminListKycSubmissionsRequest(page_token="abc.def"), metadata=moderator
        )
    )
    assert (forged.code, forged.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])


async def test_an_upload_by_someone_already_submitted_is_refused_with_its_reason(
    kyc: KycStack,
) -> None:
    _, user = kyc.user()
    await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)
    for _ in range(3):  # the refusal comes before the chunks: it must never read as a reset
        failure = await rpc_failure(
            kyc.public.UploadKycDocument(
                upload_stream(pan(), pdf(2 * MiB), chunk=256 * 1024), metadata=user
            )
        )
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "KYC_ALREADY_SUBMITTED",
        )
