"""The review queue on fakes: order and filters, the decrypted view (audited, duplicates
shown), approve and reject (pending only, never one's own, events for wallet in the outbox)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.kyc.kyc_world import MOD, PDF, World, key
from vaultpay_common.errors import ValidationError
from vaultpay_kyc.domain.errors import (
    DocumentUnreadableError,
    KycNotPendingError,
    KycSelfReviewError,
    KycSubmissionNotFoundError,
)
from vaultpay_kyc.domain.model import KycStatus, KycTier
from vaultpay_kyc.domain.staff_reads import StaffViewer
from vaultpay_kyc.service_layer.commands import ApproveKyc, RejectKyc
from vaultpay_kyc.service_layer.events import NOTIFICATION_TOPIC, TIER_TOPIC
from vaultpay_kyc.service_layer.ports import QueueCursor, QueueFilter

STAFF = StaffViewer("mod", MOD)
STAFF_AT_HOME = StaffViewer("mod", MOD, "203.0.113.7")


@pytest.fixture
def world() -> World:
    return World()


async def test_the_queue_lists_pending_oldest_first_then_reviewed_newest_first(
    world: World,
) -> None:
    a = await world.submit("alice")
    b = await world.submit("bob", "ZZZPZ9999Z")
    c = await world.submit("carol", "YYYPY8888Y")
    await world.approve(a)
    await world.review.reject(RejectKyc("mod", MOD, c.id, "expired", key("mod")))
    page = await world.review.list_queue(QueueFilter(), None, 10, viewer=STAFF)
    assert [i.submission.id for i in page.items] == [b.id, c.id, a.id]
    assert not page.has_more
    first = await world.review.list_queue(QueueFilter(), None, 2, viewer=STAFF)
    assert first.has_more
    last = first.items[-1].submission
    assert last.reviewed_at is not None
    rest = await world.review.list_queue(
        QueueFilter(), QueueCursor(True, last.reviewed_at, last.id), 2, viewer=STAFF
    )
    assert [i.submission.id for i in rest.items] == [a.id]
    pending = await world.review.list_queue(
        QueueFilter(status=KycStatus.PENDING), None, 10, viewer=STAFF
    )
    assert [i.submission.id for i in pending.items] == [b.id]
    mine = await world.review.list_queue(QueueFilter(user_id="alice"), None, 10, viewer=STAFF)
    assert [i.submission.id for i in mine.items] == [a.id]


async def test_the_same_document_from_two_users_is_flagged_and_shown_to_the_reviewer(
    world: World,
) -> None:
    first = await world.submit("alice", "ABCPE1234F")
    second = await world.submit("bob", "abcpe-1234-f")
    listed = (await world.review.list_queue(QueueFilter(), None, 10, viewer=STAFF)).items
    assert [i.possible_duplicate for i in listed] == [True, True]
    details = await world.view(second.id)
    assert details.duplicate_submission_ids == (first.id,)
    other = await world.submit("carol", "ZZZPZ9999Z")
    assert (await world.view(other.id)).duplicate_submission_ids == ()


async def test_viewing_decrypts_and_audits_who_saw_what_but_never_the_number(
    world: World,
) -> None:
    submission = await world.submit(file=PDF, content_type="application/pdf")
    details = await world.review.view(submission.id, viewer=STAFF_AT_HOME)
    assert (details.document_number, details.document_file) == ("ABCPE1234F", PDF)
    entry = world.uow.audit_entries[-1]
    assert (entry.action, entry.target_id) == ("kyc.submission_viewed", submission.id)
    assert (entry.actor_id, entry.actor_role) == ("mod", "MODERATOR")
    assert dict(entry.details) == {
        "user_id": "alice",
        "document_type": "PAN",
        "file_included": "true",
        "full_number_shown": "true",  # a PAN: in full, a moderator's view too
        "possible_duplicates": "0",
        "hidden_duplicates": "0",
        "ip": "203.0.113.7",
    }
    assert "ABCPE1234F" not in str(entry)


async def test_viewing_a_missing_or_malformed_id(world: World) -> None:
    with pytest.raises(KycSubmissionNotFoundError):
        await world.view("6f1c1a3e-0000-4000-8000-000000000009")
    with pytest.raises(ValidationError):
        await world.view("not-a-uuid")


def _misspelled(sid: str) -> list[str]:
    """Spellings of a UUID that Python's `uuid.UUID` accepts but the ids parser refuses."""
    return [
        "{" + sid + "}",
        "urn:uuid:" + sid,
        sid.replace("-", ""),
        " " + sid,
        sid + "\n",
        "nope",
        "",
    ]


async def _view(world: World, sid: str) -> object:
    return await world.view(sid)


async def _approve(world: World, sid: str) -> object:
    return await world.review.approve(ApproveKyc("mod", MOD, sid, None, "", key("mod")))


async def _reject(world: World, sid: str) -> object:
    return await world.review.reject(RejectKyc("mod", MOD, sid, "blurred", key("mod")))


async def test_every_submission_id_is_parsed_strictly_naming_the_field(world: World) -> None:
    """view, approve and reject refuse what `uuid.UUID` would have taken, and decide nothing;
    upper-case hex is the same id."""
    submission = await world.submit()
    before = world.snapshot()
    for spelling in _misspelled(submission.id):
        for use in (_view, _approve, _reject):
            with pytest.raises(ValidationError) as caught:
                await use(world, spelling)
            assert [v.field for v in caught.value.violations] == ["submission_id"], spelling
    assert world.snapshot() == before
    viewed = await world.view(submission.id.upper())
    assert viewed.submission.id == submission.id


async def test_a_ciphertext_moved_to_another_row_fails_clearly_and_is_audited(
    world: World,
) -> None:
    victim = await world.submit("alice", "ABCPE1234F")
    thief = await world.submit("bob", "ZZZPZ9999Z")
    secrets = world.uow.submissions.secrets
    secrets[thief.id] = dataclasses.replace(
        secrets[thief.id], sealed_number=secrets[victim.id].sealed_number
    )
    with pytest.raises(DocumentUnreadableError, match=f"document_number of submission {thief.id}"):
        await world.view(thief.id)
    secrets = world.uow.submissions.secrets  # the fake replaced its dict on rollback
    secrets[thief.id] = dataclasses.replace(
        secrets[thief.id], wrapped_key=secrets[victim.id].wrapped_key
    )
    with pytest.raises(DocumentUnreadableError, match="does not unwrap"):
        await world.review.view(thief.id, viewer=STAFF_AT_HOME)
    actions = [e.action for e in world.uow.audit_entries]
    assert actions.count("kyc.document_unreadable") == 2
    unreadable = world.uow.audit_entries[-1]
    assert (unreadable.actor_id, unreadable.actor_role) == ("mod", "MODERATOR")
    assert dict(unreadable.details) == {
        "user_id": "bob",
        "key_id": secrets[victim.id].wrapped_key.key_id,
        "ip": "203.0.113.7",
    }
    assert "kyc.submission_viewed" not in actions


async def test_approval_records_the_tier_and_sends_tier_and_notification_events(
    world: World,
) -> None:
    submission = await world.submit()
    k = key("mod")
    approved = await world.review.approve(
        ApproveKyc("mod", MOD, submission.id, KycTier.BASIC, "ok", k)
    )
    assert (approved.status, approved.granted_tier, approved.reviewer_id) == (
        KycStatus.VERIFIED,
        KycTier.BASIC,
        "mod",
    )
    assert world.uow.outbox.topics() == [TIER_TOPIC, NOTIFICATION_TOPIC]
    tier_event, note = world.uow.outbox.messages
    assert dict(tier_event.payload) == {
        "user_id": "alice",
        "kyc_tier": "BASIC",
        "submission_id": submission.id,
    }
    assert note.payload["kind"] == "KYC" and "XXXXXX234F" in note.payload["body"]
    assert "ABCPE1234F" not in str(note.payload)
    assert world.uow.audit_entries[-1].details == {
        "user_id": "alice",
        "kyc_tier": "BASIC",
        "note": "ok",
        "ip": "",
    }
    replay = await world.review.approve(
        ApproveKyc("mod", MOD, submission.id, KycTier.BASIC, "ok", k)
    )
    assert replay == approved
    assert len(world.uow.outbox.messages) == 2


async def test_an_unspecified_tier_grants_full_and_none_is_refused(world: World) -> None:
    submission = await world.submit()
    with pytest.raises(ValidationError):
        await world.review.approve(ApproveKyc("mod", MOD, submission.id, KycTier.NONE, "", None))
    approved = await world.review.approve(ApproveKyc("mod", MOD, submission.id, None, "", None))
    assert approved.granted_tier is KycTier.FULL


async def test_an_approval_never_lowers_the_tier_the_user_holds(world: World) -> None:
    """A pending submission next to a FULL grant cannot arise through SubmitKyc (FULL blocks
    new submissions), so it is stored directly: approving it below FULL is refused on
    kyc_tier and writes nothing; at FULL, or unspecified, it goes through."""
    full = await world.submit()
    await world.approve(full)
    stray = dataclasses.replace(
        full,
        id="6f1c1a3e-0000-4000-8000-00000000000a",
        status=KycStatus.PENDING,
        granted_tier=None,
        reviewer_id="",
        reviewed_at=None,
    )
    await world.uow.submissions.add(stray, await world.sealed_for(stray))
    before = world.snapshot()
    with pytest.raises(ValidationError) as caught:
        await world.review.approve(ApproveKyc("mod", MOD, stray.id, KycTier.BASIC, "", key("mod")))
    assert [v.field for v in caught.value.violations] == ["kyc_tier"]
    assert world.snapshot() == before
    approved = await world.review.approve(ApproveKyc("mod", MOD, stray.id, None, "", key("mod")))
    assert approved.granted_tier is KycTier.FULL


async def test_rejection_needs_a_reason_and_notifies_with_it(world: World) -> None:
    submission = await world.submit()
    before = world.snapshot()
    for reason in ("", "   ", "x" * 501, "ok\u202e", "fine\u200b", "a\x85b", "\x00"):
        with pytest.raises(ValidationError) as caught:
            await world.review.reject(RejectKyc("mod", MOD, submission.id, reason, key("mod")))
        assert [v.field for v in caught.value.violations] == ["reason"]
    assert world.snapshot() == before
    rejected = await world.review.reject(
        RejectKyc("mod", MOD, submission.id, "photo is blurred", None)
    )
    assert rejected.rejection_reason == "photo is blurred"
    (note,) = world.uow.outbox.messages
    assert "photo is blurred" in note.payload["body"]


async def test_only_pending_submissions_are_decided_and_never_by_their_owner(
    world: World,
) -> None:
    mine = await world.submit("mod", "ZZZPZ9999Z")
    with pytest.raises(KycSelfReviewError):
        await world.review.approve(ApproveKyc("mod", MOD, mine.id, None, "", None))
    with pytest.raises(KycSelfReviewError):
        await world.review.reject(RejectKyc("mod", MOD, mine.id, "no", None))
    submission = await world.submit()
    await world.approve(submission)
    before = world.snapshot()
    with pytest.raises(KycNotPendingError):
        await world.review.reject(RejectKyc("mod", MOD, submission.id, "changed my mind", None))
    with pytest.raises(KycNotPendingError):
        await world.review.approve(ApproveKyc("other-mod", MOD, submission.id, None, "", None))
    with pytest.raises(KycSubmissionNotFoundError):
        await world.review.approve(
            ApproveKyc("mod", MOD, "6f1c1a3e-0000-4000-8000-000000000009", None, "", None)
        )
    assert world.snapshot() == before


async def test_stats_count_pending_submissions(world: World) -> None:
    assert (await world.review.stats()).pending_count == 0
    first = await world.submit()
    await world.submit("bob", "ZZZPZ9999Z")
    await world.approve(first)
    stats = await world.review.stats()
    assert stats.pending_count == 1
    assert stats.computed_at == world.clock.now()


async def test_a_rejection_reason_may_run_over_lines(world: World) -> None:
    submission = await world.submit()
    rejected = await world.review.reject(
        RejectKyc("mod", MOD, submission.id, "photo is blurred\n\tretake it", None)
    )
    assert rejected.rejection_reason == "photo is blurred\n\tretake it"


async def test_every_page_of_the_queue_is_audited_with_the_filters_set_and_ids_never_a_number(
    world: World,
) -> None:
    a = await world.submit("alice", "ABCPE1234F")
    b = await world.submit("bob", "ZZZPZ9999Z")
    audited = len(world.uow.audit_entries)
    first = await world.review.list_queue(
        QueueFilter(status=KycStatus.PENDING), None, 1, viewer=STAFF
    )
    last = first.items[-1].submission
    await world.review.list_queue(
        QueueFilter(status=KycStatus.PENDING),
        QueueCursor(False, last.created_at, last.id),
        1,
        viewer=STAFF,
    )
    mine = await world.review.list_queue(QueueFilter(user_id="bob"), None, 10, viewer=STAFF_AT_HOME)
    await world.review.list_queue(QueueFilter(), None, 10, viewer=STAFF)
    entries = world.uow.audit_entries[audited:]
    assert [e.action for e in entries] == ["kyc.queue_listed"] * 4
    assert [(e.target_type, e.target_id) for e in entries] == [("kyc_submissions", "")] * 4
    assert [(e.actor_id, e.actor_role) for e in entries] == [("mod", "MODERATOR")] * 4
    # Only the filters set, as auth's users.listed and wallet's wallets.listed.
    assert [dict(e.details) for e in entries] == [
        {
            "status": "PENDING",
            "continued": "false",
            "count": "1",
            "submission_ids": a.id,
            "ip": "",
        },
        {
            "status": "PENDING",
            "continued": "true",
            "count": "1",
            "submission_ids": b.id,
            "ip": "",
        },
        {
            "user_id": "bob",
            "continued": "false",
            "count": "1",
            "submission_ids": b.id,
            "ip": "203.0.113.7",
        },
        {
            "continued": "false",
            "count": "2",
            "submission_ids": f"{a.id},{b.id}",
            "ip": "",
        },
    ]
    assert [i.submission.id for i in mine.items] == [b.id]
    shown = str(entries)
    for secret in ("ABCPE1234F", "ZZZPZ9999Z", a.masked_number, b.masked_number):
        assert secret not in shown


async def test_decisions_are_audited_with_the_reviewers_address(world: World) -> None:
    """Security review of 2026-12-04 (night): the views had the staff member's address, the
    approvals and rejections they lead to had none."""
    approved = await world.submit()
    rejected = await world.submit("bob", "ZZZPZ9999Z")
    await world.review.approve(
        ApproveKyc("mod", MOD, approved.id, None, "", key("mod"), "203.0.113.7")
    )
    await world.review.reject(
        RejectKyc("mod", MOD, rejected.id, "blurred", key("mod"), "203.0.113.8")
    )
    by_action = {e.action: e for e in world.uow.audit_entries}
    assert (by_action["kyc.approved"].target_id, dict(by_action["kyc.approved"].details)) == (
        approved.id,
        {"user_id": "alice", "kyc_tier": "FULL", "ip": "203.0.113.7"},
    )
    assert (by_action["kyc.rejected"].target_id, dict(by_action["kyc.rejected"].details)) == (
        rejected.id,
        {"user_id": "bob", "reason": "blurred", "ip": "203.0.113.8"},
    )


async def test_an_approval_refuses_a_number_hash_that_is_not_the_numbers(world: World) -> None:
    """The duplicate check compares the stored number_hash, which the ciphertexts' associated
    data does not bind: one edited in the database (here to the hash of a number verified
    for another user) would let that number be approved twice. The approval hashes the
    decrypted number again: refused as tampering, audited, nothing approved (security
    review, 2026-12-04 night)."""
    verified = await world.submit("bob", "ABCPB4321Q")
    await world.approve(verified)
    submission = await world.submit("alice", "ABCPE1234F")
    stored = world.uow.submissions.secrets[submission.id]
    bobs = world.uow.submissions.secrets[verified.id].number_hash
    world.uow.submissions.secrets[submission.id] = dataclasses.replace(stored, number_hash=bobs)
    with pytest.raises(DocumentUnreadableError):
        await world.review.approve(ApproveKyc("mod", MOD, submission.id, None, "", key("mod")))
    after = await world.uow.submissions.get(submission.id)
    assert after is not None and after.status is KycStatus.PENDING
    assert [e.action for e in world.uow.audit_entries].count("kyc.document_unreadable") == 1


async def test_an_approval_refuses_a_document_copied_from_another_submission(
    world: World,
) -> None:
    original = await world.submit("bob", "ABCPB4321Q")
    stray = dataclasses.replace(original, id="6f1c1a3e-0000-4000-8000-00000000000b", user_id="eve")
    await world.uow.submissions.add(stray, world.uow.submissions.secrets[original.id])
    with pytest.raises(DocumentUnreadableError):
        await world.review.approve(ApproveKyc("mod", MOD, stray.id, None, "", key("mod")))
