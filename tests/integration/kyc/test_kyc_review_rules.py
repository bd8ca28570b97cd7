"""The review rules over native gRPC on real PostgreSQL: staff decide only the submissions of
users they outrank (the owner's role asked of auth, failing closed while auth is down); no one
approves a deactivated user's submission; the decrypted view lists only the duplicates its
viewer could open and shows an Aadhaar number in full only from admin up; one document is
verified for one user, also when two approvals race."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from tests.integration.kyc.conftest import KycStack, bearer
from tests.integration.kyc.kyc_support import aadhaar, pan, rid, submit_request
from tests.support import eventually, rpc_failure
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay.type.v1 import kyc_tier_pb2
from vaultpay_common.context import Role
from vaultpay_common.db import create_engine

pytestmark = pytest.mark.integration


async def _submitted_by_staff(
    kyc: KycStack, role: Role, number: str | None = None
) -> tuple[str, Any, str]:
    """A staff member with a wallet, their call metadata, and their pending submission's id."""
    staff_id = kyc.new_wallet_user()
    metadata = bearer(kyc.auth.user_token(staff_id, role))
    reply = await kyc.public.SubmitKyc(submit_request(number or pan()), metadata=metadata)
    return staff_id, metadata, reply.submission.submission_id


async def _audited(kyc: KycStack, target_id: str) -> list[str]:
    engine = create_engine(kyc.dbs.app_dsn("kyc"), application_name="kyc-test")
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT action FROM audit_events WHERE target_id = :id ORDER BY sequence"),
                {"id": target_id},
            )
            return list(rows.scalars())
    finally:
        await engine.dispose()


async def _approval_refused(kyc: KycStack, submission_id: str, staff: Any) -> Any:
    """The refusal of an AdminApproveKyc of `submission_id` by `staff` (its metadata)."""
    return await rpc_failure(
        kyc.admin.AdminApproveKyc(
            kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=submission_id),
            metadata=staff,
        )
    )


async def _status(kyc: KycStack, submission_id: str) -> int:
    _, root = kyc.staff(Role.SUPER_ADMIN)
    reply = await kyc.admin.AdminListKycSubmissions(
        kyc_pb2.AdminListKycSubmissionsRequest(), metadata=root
    )
    (found,) = [s for s in reply.submissions if s.submission_id == submission_id]
    return int(found.status)


async def test_two_moderators_cannot_approve_each_others_submissions(kyc: KycStack) -> None:
    _, first, first_sid = await _submitted_by_staff(kyc, Role.MODERATOR)
    _, second, second_sid = await _submitted_by_staff(kyc, Role.MODERATOR)
    for metadata, sid in ((first, second_sid), (second, first_sid)):
        failure = await _approval_refused(kyc, sid, metadata)
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_PERMISSIONS",
        )
        assert await _status(kyc, sid) == kyc_pb2.KYC_STATUS_PENDING
        assert await _audited(kyc, sid) == ["kyc.submitted"]
    _, admin = kyc.staff(Role.ADMIN)
    approved = await kyc.admin.AdminApproveKyc(
        kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=first_sid), metadata=admin
    )
    assert approved.submission.status == kyc_pb2.KYC_STATUS_VERIFIED


@pytest.mark.parametrize("owner", [Role.ADMIN, Role.SUPER_ADMIN], ids=["admin", "super_admin"])
async def test_a_moderator_neither_decides_nor_opens_an_admins_submission(
    kyc: KycStack, owner: Role
) -> None:
    _, _, sid = await _submitted_by_staff(kyc, owner)
    _, moderator = kyc.staff(Role.MODERATOR)
    calls = [
        kyc.admin.AdminApproveKyc(
            kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=sid), metadata=moderator
        ),
        kyc.admin.AdminRejectKyc(
            kyc_pb2.AdminRejectKycRequest(request_id=rid(), submission_id=sid, reason="no"),
            metadata=moderator,
        ),
        kyc.admin.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=sid), metadata=moderator
        ),
    ]
    for call in calls:
        failure = await rpc_failure(call)
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_PERMISSIONS",
        )
    assert await _status(kyc, sid) == kyc_pb2.KYC_STATUS_PENDING
    assert await _audited(kyc, sid) == ["kyc.submitted"]  # no decision, no view


async def test_a_decision_fails_closed_while_auth_is_down(kyc: KycStack) -> None:
    user_id, user = kyc.user()
    sid = (await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)).submission
    _, admin = kyc.staff(Role.ADMIN)
    kyc.auth_peer.down = True
    try:
        failure = await _approval_refused(kyc, sid.submission_id, admin)
    finally:
        kyc.auth_peer.down = False
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "AUTH_UNAVAILABLE")
    assert await _status(kyc, sid.submission_id) == kyc_pb2.KYC_STATUS_PENDING
    assert user_id in kyc.auth_peer.asked
    approved = await kyc.admin.AdminApproveKyc(
        kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=sid.submission_id),
        metadata=admin,
    )
    assert approved.submission.status == kyc_pb2.KYC_STATUS_VERIFIED


async def test_a_super_admin_rejects_while_auth_is_down_but_does_not_approve(
    kyc: KycStack,
) -> None:
    """A super_admin outranks any owner, so kyc does not ask auth for their rejection; an
    approval needs the owner's state, whoever approves, and fails closed."""
    user_id, user = kyc.user()
    sid = (await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)).submission
    _, root = kyc.staff(Role.SUPER_ADMIN)
    kyc.auth_peer.down = True
    try:
        failure = await _approval_refused(kyc, sid.submission_id, root)
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "AUTH_UNAVAILABLE",
        )
        assert kyc.auth_peer.asked.count(user_id) == 1
        rejected = await kyc.admin.AdminRejectKyc(
            kyc_pb2.AdminRejectKycRequest(
                request_id=rid(), submission_id=sid.submission_id, reason="blurred"
            ),
            metadata=root,
        )
    finally:
        kyc.auth_peer.down = False
    assert rejected.submission.status == kyc_pb2.KYC_STATUS_REJECTED
    assert kyc.auth_peer.asked.count(user_id) == 1  # the rejection asked nothing


# ----- a deactivated owner ---------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.MODERATOR, Role.SUPER_ADMIN], ids=["moderator", "root"])
async def test_no_one_approves_a_deactivated_users_submission(kyc: KycStack, role: Role) -> None:
    """The impostor is deactivated in auth: their submission is not verified, their wallet's
    tier not raised; once it is rejected, the document's real holder is verified."""
    number = pan()
    impostor_id, impostor = kyc.user()
    _, holder = kyc.user()
    fraud = (await kyc.public.SubmitKyc(submit_request(number), metadata=impostor)).submission
    real = (await kyc.public.SubmitKyc(submit_request(number), metadata=holder)).submission
    kyc.auth_peer.deactivated.add(impostor_id)
    _, staff = kyc.staff(role)
    failure = await _approval_refused(kyc, fraud.submission_id, staff)
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "KYC_OWNER_DEACTIVATED",
    )
    assert await _status(kyc, fraud.submission_id) == kyc_pb2.KYC_STATUS_PENDING
    assert await _audited(kyc, fraud.submission_id) == ["kyc.submitted"]
    rejected = await kyc.admin.AdminRejectKyc(
        kyc_pb2.AdminRejectKycRequest(
            request_id=rid(), submission_id=fraud.submission_id, reason="identity fraud"
        ),
        metadata=staff,
    )
    assert rejected.submission.status == kyc_pb2.KYC_STATUS_REJECTED
    approved = await kyc.admin.AdminApproveKyc(
        kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=real.submission_id),
        metadata=staff,
    )
    assert approved.submission.status == kyc_pb2.KYC_STATUS_VERIFIED
    assert impostor_id not in {call.user_id for call in kyc.wallet.tier_calls}


async def test_an_approval_fails_closed_when_auth_does_not_say_whether_the_owner_is_active(
    kyc: KycStack,
) -> None:
    """An auth older than GetUserRole's `active`: approvals wait for it, rejections do not."""
    _, user = kyc.user()
    sid = (await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)).submission
    _, admin = kyc.staff(Role.ADMIN)
    kyc.auth_peer.without_state = True
    try:
        failure = await _approval_refused(kyc, sid.submission_id, admin)
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "AUTH_UNAVAILABLE",
        )
        assert await _status(kyc, sid.submission_id) == kyc_pb2.KYC_STATUS_PENDING
        rejected = await kyc.admin.AdminRejectKyc(
            kyc_pb2.AdminRejectKycRequest(
                request_id=rid(), submission_id=sid.submission_id, reason="blurred"
            ),
            metadata=admin,
        )
    finally:
        kyc.auth_peer.without_state = False
    assert rejected.submission.status == kyc_pb2.KYC_STATUS_REJECTED


# ----- the duplicates a view lists ---------------------------------------------------------


async def test_a_view_lists_only_the_duplicates_its_viewer_could_open(kyc: KycStack) -> None:
    """A user's document, also submitted by an admin and another user: a moderator is listed
    the user's and told only that one more exists; a super_admin is listed both."""
    number = pan()
    _, alice = kyc.user()
    _, bob = kyc.user()
    _, boss_metadata, boss_sid = await _submitted_by_staff(kyc, Role.ADMIN, number)
    first = (await kyc.public.SubmitKyc(submit_request(number), metadata=alice)).submission
    viewed = (await kyc.public.SubmitKyc(submit_request(number), metadata=bob)).submission
    request = kyc_pb2.AdminGetKycSubmissionRequest(submission_id=viewed.submission_id)
    _, moderator = kyc.staff()
    seen = await kyc.admin.AdminGetKycSubmission(request, metadata=moderator)
    assert list(seen.duplicate_submission_ids) == [first.submission_id]
    assert seen.hidden_duplicate_count == 1 and seen.submission.possible_duplicate
    refused = await rpc_failure(
        kyc.admin.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=boss_sid), metadata=moderator
        )
    )
    assert refused.reason == "INSUFFICIENT_PERMISSIONS"  # what the listing no longer leaks
    _, root = kyc.staff(Role.SUPER_ADMIN)
    seen = await kyc.admin.AdminGetKycSubmission(request, metadata=root)
    assert list(seen.duplicate_submission_ids) == [boss_sid, first.submission_id]
    assert seen.hidden_duplicate_count == 0
    # The admin's view of their own submission: the users' are theirs to open.
    own = await kyc.admin.AdminGetKycSubmission(
        kyc_pb2.AdminGetKycSubmissionRequest(submission_id=boss_sid), metadata=boss_metadata
    )
    assert list(own.duplicate_submission_ids) == [first.submission_id, viewed.submission_id]


# ----- what the view shows of an Aadhaar number -----------------------------------------------


async def _viewed_details(kyc: KycStack, submission_id: str) -> list[tuple[str, dict[str, str]]]:
    """The actor and details of each `kyc.submission_viewed` row of `submission_id`."""
    engine = create_engine(kyc.dbs.app_dsn("kyc"), application_name="kyc-test")
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT actor_id, details::text AS details FROM audit_events"
                    " WHERE target_id = :id AND action = 'kyc.submission_viewed'"
                    " ORDER BY sequence"
                ),
                {"id": submission_id},
            )
            return [(r.actor_id, json.loads(r.details)) for r in rows]
    finally:
        await engine.dispose()


async def test_a_moderator_sees_an_aadhaar_masked_an_admin_in_full_and_the_audit_says_which(
    kyc: KycStack,
) -> None:
    """The Aadhaar Act s.29 and UIDAI's masked-Aadhaar rules: the full 12 digits only where
    needed (an admin's or super_admin's escalation), the last four to a moderator, as the
    queue shows them. Before, a moderator's view returned the full number."""
    number = aadhaar()
    _, user = kyc.user()
    submitted = await kyc.public.SubmitKyc(
        kyc_pb2.SubmitKycRequest(
            request_id=rid(),
            document_type=kyc_pb2.DOCUMENT_TYPE_AADHAAR,
            document_number=f"{number[:4]} {number[4:8]} {number[8:]}",
        ),
        metadata=user,
    )
    sid = submitted.submission.submission_id
    request = kyc_pb2.AdminGetKycSubmissionRequest(submission_id=sid)
    moderator_id, moderator = kyc.staff(Role.MODERATOR)
    admin_id, admin = kyc.staff(Role.ADMIN)
    root_id, root = kyc.staff(Role.SUPER_ADMIN)
    masked = await kyc.admin.AdminGetKycSubmission(request, metadata=moderator)
    assert masked.document_number == "XXXXXXXX" + number[-4:]
    assert masked.document_number == masked.submission.masked_document_number
    for metadata in (admin, root):
        full = await kyc.admin.AdminGetKycSubmission(request, metadata=metadata)
        assert full.document_number == number
    viewed = await _viewed_details(kyc, sid)
    assert [(actor, details["full_number_shown"]) for actor, details in viewed] == [
        (moderator_id, "false"),
        (admin_id, "true"),
        (root_id, "true"),
    ]
    assert all(number not in json.dumps(d) and "XXXX" not in json.dumps(d) for _, d in viewed)
    # A PAN is still shown in full to a moderator, and the row says so.
    pan_number = pan()
    pan_sid = (
        await kyc.public.SubmitKyc(submit_request(pan_number), metadata=kyc.user()[1])
    ).submission.submission_id
    seen = await kyc.admin.AdminGetKycSubmission(
        kyc_pb2.AdminGetKycSubmissionRequest(submission_id=pan_sid), metadata=moderator
    )
    assert seen.document_number == pan_number
    [(_, details)] = await _viewed_details(kyc, pan_sid)
    assert details["full_number_shown"] == "true"


async def test_a_decisions_bad_input_is_named_before_auth_or_the_self_review_rule(
    kyc: KycStack,
) -> None:
    """Review of kyc (item 3): an empty reason and KYC_TIER_NONE were checked only after the
    rank check, so with auth down they answered AUTH_UNAVAILABLE, and on one's own submission
    KYC_SELF_REVIEW."""
    _, user = kyc.user()
    sid = (await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)).submission
    _, admin = kyc.staff(Role.ADMIN)
    _, own_metadata, own = await _submitted_by_staff(kyc, Role.MODERATOR)
    kyc.auth_peer.down = True
    try:
        no_reason = await rpc_failure(
            kyc.admin.AdminRejectKyc(
                kyc_pb2.AdminRejectKycRequest(request_id=rid(), submission_id=sid.submission_id),
                metadata=admin,
            )
        )
        no_tier = await rpc_failure(
            kyc.admin.AdminApproveKyc(
                kyc_pb2.AdminApproveKycRequest(
                    request_id=rid(),
                    submission_id=sid.submission_id,
                    kyc_tier=kyc_tier_pb2.KYC_TIER_NONE,
                ),
                metadata=admin,
            )
        )
        own_no_reason = await rpc_failure(
            kyc.admin.AdminRejectKyc(
                kyc_pb2.AdminRejectKycRequest(request_id=rid(), submission_id=own, reason=" "),
                metadata=own_metadata,
            )
        )
        everything = await rpc_failure(
            kyc.admin.AdminApproveKyc(
                kyc_pb2.AdminApproveKycRequest(
                    request_id="nope",
                    submission_id=own,
                    kyc_tier=kyc_tier_pb2.KYC_TIER_NONE,
                    note="\u202e",
                ),
                metadata=own_metadata,
            )
        )
    finally:
        kyc.auth_peer.down = False
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert (no_reason.code, no_reason.fields) == (invalid, ["reason"])
    assert (no_tier.code, no_tier.fields) == (invalid, ["kyc_tier"])
    assert (own_no_reason.code, own_no_reason.fields) == (invalid, ["reason"])
    assert (everything.code, everything.fields) == (invalid, ["request_id", "kyc_tier", "note"])
    assert await _status(kyc, sid.submission_id) == kyc_pb2.KYC_STATUS_PENDING
    assert await _audited(kyc, own) == ["kyc.submitted"]


async def test_a_reason_or_note_quoting_a_document_number_is_refused_and_writes_nothing(
    kyc: KycStack,
) -> None:
    """Review of kyc (item 2): a moderator's reason went to the audit row, the outbox and the
    user's notification as typed, number and all."""
    user_id, user = kyc.user()
    number = pan()
    sid = (
        await kyc.public.SubmitKyc(submit_request(number), metadata=user)
    ).submission.submission_id
    _, moderator = kyc.staff()
    spelled = f"{number[:5].lower()} {number[5:9]}-{number[9:]}"
    calls = [
        kyc.admin.AdminRejectKyc(
            kyc_pb2.AdminRejectKycRequest(
                request_id=rid(), submission_id=sid, reason=f"the PAN {spelled} is not legible"
            ),
            metadata=moderator,
        ),
        kyc.admin.AdminRejectKyc(
            kyc_pb2.AdminRejectKycRequest(
                request_id=rid(), submission_id=sid, reason=f"mismatch{number}"
            ),
            metadata=moderator,
        ),
        kyc.admin.AdminApproveKyc(
            kyc_pb2.AdminApproveKycRequest(
                request_id=rid(), submission_id=sid, note="passport K1234567 seen too"
            ),
            metadata=moderator,
        ),
    ]
    for call, field in zip(calls, ["reason", "reason", "note"], strict=True):
        failure = await rpc_failure(call)
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
        assert number[5:9] not in failure.message and "1234567" not in failure.message
    assert await _status(kyc, sid) == kyc_pb2.KYC_STATUS_PENDING
    assert await _audited(kyc, sid) == ["kyc.submitted"]

    rejected = await kyc.admin.AdminRejectKyc(
        kyc_pb2.AdminRejectKycRequest(
            request_id=rid(), submission_id=sid, reason="photo is blurred; name mismatch"
        ),
        metadata=moderator,
    )
    assert rejected.submission.rejection_reason == "photo is blurred; name mismatch"
    await eventually(lambda: _notified(kyc, user_id))
    (note,) = kyc.wallet.notes_for(user_id)
    assert "photo is blurred; name mismatch" in note.body and number not in note.body


async def _notified(kyc: KycStack, user_id: str) -> bool:
    return bool(kyc.wallet.notes_for(user_id))


# ----- one document, one verified user ---------------------------------------------------

# The class of kyc's document locks (adapters/submissions_sql.py: bytes "VPKD").
_DOCUMENT_LOCK_CLASS = int.from_bytes(b"VPKD", "big")


async def _same_document_from_two_users(kyc: KycStack) -> list[str]:
    number = pan()
    ids = []
    for spelling in (number, number.lower()):
        _, user = kyc.user()
        reply = await kyc.public.SubmitKyc(submit_request(spelling), metadata=user)
        ids.append(reply.submission.submission_id)
    return ids


async def _approve_each(kyc: KycStack, submission_ids: list[str]) -> list[Any]:
    """One approval per submission, all at once, each by its own moderator."""
    calls = []
    for sid in submission_ids:
        _, moderator = kyc.staff()
        calls.append(
            kyc.admin.AdminApproveKyc(
                kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=sid),
                metadata=moderator,
            )
        )
    return list(await asyncio.gather(*(_outcome(c) for c in calls)))


async def _outcome(call: Any) -> Any:
    """The reply, or the failure's (code, reason)."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        failure = await rpc_failure(_raise(exc))
        return (failure.code, failure.reason)


async def _raise(exc: Exception) -> None:
    raise exc


async def _verified(kyc: KycStack, submission_ids: list[str]) -> int:
    engine = create_engine(kyc.dbs.app_dsn("kyc"), application_name="kyc-test")
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM kyc_submissions"
                    " WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'VERIFIED'"
                ),
                {"ids": submission_ids},
            )
            return int(found.scalar_one())
    finally:
        await engine.dispose()


def _one_won(outcomes: list[Any]) -> None:
    replies = [o for o in outcomes if isinstance(o, kyc_pb2.AdminApproveKycResponse)]
    refusals = [o for o in outcomes if isinstance(o, tuple)]
    assert len(replies) == 1, outcomes
    assert refusals == [(grpc.StatusCode.FAILED_PRECONDITION, "KYC_DOCUMENT_IN_USE")]


async def test_a_document_verified_for_one_user_is_refused_for_another(kyc: KycStack) -> None:
    first, second = await _same_document_from_two_users(kyc)
    (approved,) = await _approve_each(kyc, [first])
    assert approved.submission.status == kyc_pb2.KYC_STATUS_VERIFIED
    (refused,) = await _approve_each(kyc, [second])
    assert refused == (grpc.StatusCode.FAILED_PRECONDITION, "KYC_DOCUMENT_IN_USE")
    assert await _verified(kyc, [first, second]) == 1
    assert await _audited(kyc, second) == ["kyc.submitted"]  # nothing written
    _, moderator = kyc.staff()
    rejected = await kyc.admin.AdminRejectKyc(
        kyc_pb2.AdminRejectKycRequest(request_id=rid(), submission_id=second, reason="not yours"),
        metadata=moderator,
    )
    assert rejected.submission.status == kyc_pb2.KYC_STATUS_REJECTED


async def test_two_approvals_of_one_document_for_two_users_waiting_together_one_wins(
    kyc: KycStack,
) -> None:
    """Both approvals are made to wait on the document's lock (held here), so both have
    passed every other check before either decides; released, exactly one passes."""
    first, second = await _same_document_from_two_users(kyc)
    engine = create_engine(kyc.dbs.app_dsn("kyc"), application_name="kyc-test")
    try:
        async with engine.connect() as holder, engine.connect() as watcher:
            await holder.execute(
                text(
                    "SELECT pg_advisory_xact_lock(:c, hashtext(number_hash))"
                    " FROM kyc_submissions WHERE id = :id"
                ),
                {"c": _DOCUMENT_LOCK_CLASS, "id": first},
            )
            racing = asyncio.ensure_future(_approve_each(kyc, [first, second]))

            async def both_wait() -> bool:
                waiting = await watcher.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND classid = :c AND NOT granted"
                    ),
                    {"c": _DOCUMENT_LOCK_CLASS},
                )
                await watcher.commit()
                return int(waiting.scalar_one()) == 2

            await eventually(both_wait, within=10.0)
            await holder.rollback()  # releases the lock
            outcomes = await racing
    finally:
        await engine.dispose()
    _one_won(outcomes)
    assert await _verified(kyc, [first, second]) == 1


async def test_simultaneous_approvals_of_one_document_for_two_users_verify_one(
    kyc: KycStack,
) -> None:
    for _ in range(5):
        pair = await _same_document_from_two_users(kyc)
        _one_won(await _approve_each(kyc, pair))
        assert await _verified(kyc, pair) == 1


# ----- the queue's reads are audited -----------------------------------------------------


async def test_a_page_of_the_queue_is_audited_with_who_the_filters_set_and_the_ids(
    kyc: KycStack,
) -> None:
    number = pan()
    user_id, user = kyc.user()
    sid = (await kyc.public.SubmitKyc(submit_request(number), metadata=user)).submission
    moderator_id, moderator = kyc.staff()
    listed = await kyc.admin.AdminListKycSubmissions(
        kyc_pb2.AdminListKycSubmissionsRequest(user_id=user_id, status=kyc_pb2.KYC_STATUS_PENDING),
        metadata=moderator,
    )
    assert [s.submission_id for s in listed.submissions] == [sid.submission_id]
    await kyc.admin.AdminListKycSubmissions(
        kyc_pb2.AdminListKycSubmissionsRequest(page_size=1), metadata=moderator
    )
    engine = create_engine(kyc.dbs.app_dsn("kyc"), application_name="kyc-test")
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT actor_id, actor_role, target_type, details::text AS raw,"
                        " details ? 'user_id' AS by_user, details ? 'status' AS by_status,"
                        " details->>'user_id' AS user_id, details->>'status' AS status,"
                        " details->>'submission_ids' AS ids, details->>'ip' AS ip"
                        " FROM audit_events"
                        " WHERE action = 'kyc.queue_listed' AND actor_id = :actor"
                        " ORDER BY sequence"
                    ),
                    {"actor": moderator_id},
                )
            ).all()
    finally:
        await engine.dispose()
    row, unfiltered = rows
    assert (row.actor_role, row.target_type) == ("MODERATOR", "kyc_submissions")
    assert (row.user_id, row.status, row.ids) == (user_id, "PENDING", sid.submission_id)
    assert row.ip == unfiltered.ip == "127.0.0.1"  # the staff member's address
    # Only the filters set, as auth's users.listed and wallet's wallets.listed.
    assert not unfiltered.by_user and not unfiltered.by_status
    assert number not in row.raw and sid.masked_document_number not in row.raw
