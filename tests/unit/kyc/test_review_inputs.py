"""A decision's input is checked before anything is read or asked (review of kyc, item 3), and
its free text holds no document number (item 2).

AdminRejectKyc with no reason and AdminApproveKyc with KYC_TIER_NONE were checked only after
the stored-reply lookup and the rank check: with auth down they answered AUTH_UNAVAILABLE, and
on one's own submission KYC_SELF_REVIEW, instead of INVALID_ARGUMENT naming the field. Now
every bad field of the request comes in one refusal first, the entrypoint's (request_id, an
unknown tier number) with the use case's.

A reason or note that quotes a document number is refused naming the field, without the number
in the refusal, and nothing is written: no decision, audit row, outbox event or notification.
The submission's own number is refused however it is run into other words."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.unit.kyc.kyc_world import MOD, World, aadhaar, key
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.model import KycStatus, KycTier, Submission
from vaultpay_kyc.service_layer.commands import ApproveKyc, RejectKyc

# The refusal's description (domain.model.QUOTES_A_NUMBER), as the README documents it.
QUOTES_A_NUMBER = (
    "must not contain a document number: describe the problem without quoting the number"
)
BAD_ID = ValidationError.single("request_id", "must be a UUID")
UNKNOWN_TIER = ValidationError.single("kyc_tier", "is not a known KYC tier")


def _fields(caught: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [v.field for v in caught.value.violations]


def _approve(
    world: World,
    sid: str,
    *,
    tier: KycTier | ValidationError | None = None,
    note: str = "",
    reviewer: str = "mod",
    idempotency: IdempotencyKey | ValidationError | None = None,
) -> Awaitable[Submission]:
    return world.review.approve(
        ApproveKyc(reviewer, MOD, sid, tier, note, idempotency or key(reviewer))
    )


def _reject(
    world: World,
    sid: str,
    reason: str,
    *,
    reviewer: str = "mod",
    idempotency: IdempotencyKey | ValidationError | None = None,
) -> Awaitable[Submission]:
    return world.review.reject(RejectKyc(reviewer, MOD, sid, reason, idempotency or key(reviewer)))


async def _refused(world: World, decide: Callable[[], Awaitable[object]]) -> list[str]:
    """The fields `decide` is refused for; it wrote nothing and asked auth nothing."""
    before = world.snapshot()
    with pytest.raises(ValidationError) as caught:
        await decide()
    assert world.snapshot() == before
    assert world.roles.asked == []
    return _fields(caught)


# ----- item 3: checked first, all at once ----------------------------------------------------


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "bidi \u202e override"])
async def test_a_bad_reason_is_named_while_auth_is_down(reason: str) -> None:
    world = World()
    sid = (await world.submit("alice")).id
    world.roles.down = True
    assert await _refused(world, lambda: _reject(world, sid, reason)) == ["reason"]


async def test_a_tier_of_none_is_named_while_auth_is_down() -> None:
    world = World()
    sid = (await world.submit("alice")).id
    world.roles.down = True
    assert await _refused(world, lambda: _approve(world, sid, tier=KycTier.NONE)) == ["kyc_tier"]


async def test_bad_input_on_ones_own_submission_is_named_not_refused_as_self_review() -> None:
    world = World()
    world.wallets.users.add("mod")
    own = (await world.submit("mod")).id
    assert await _refused(world, lambda: _reject(world, own, "", reviewer="mod")) == ["reason"]
    assert await _refused(world, lambda: _approve(world, own, tier=KycTier.NONE)) == ["kyc_tier"]


async def test_every_bad_field_of_a_decision_comes_in_one_refusal_in_request_order() -> None:
    world = World()
    await world.submit("alice")
    world.roles.down = True
    approve = await _refused(
        world,
        lambda: _approve(
            world, "not-a-uuid", tier=UNKNOWN_TIER, note="PAN ABCPE1234F", idempotency=BAD_ID
        ),
    )
    assert approve == ["request_id", "submission_id", "kyc_tier", "note"]
    reject = await _refused(world, lambda: _reject(world, "not-a-uuid", "", idempotency=BAD_ID))
    assert reject == ["request_id", "submission_id", "reason"]


async def test_an_unspecified_tier_still_grants_full() -> None:
    world = World()
    sid = (await world.submit("alice")).id
    approved = await _approve(world, sid, tier=None)
    assert approved.granted_tier is KycTier.FULL


# ----- item 2: no document number in a reason or note --------------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        "the PAN ABCPE1234F is not readable",  # the submission's own, as stored
        "the PAN abcpe 1234-f is not readable",  # the own number, written otherwise
        "wrong card: ZZZPZ9999Z belongs to someone else",  # another PAN
        f"your Aadhaar {aadhaar()} is not a PAN",
        "passport K1234567 was sent instead",
        "the licence MH-14-2011-0062821 is not a PAN",
    ],
)
async def test_a_rejection_reason_with_a_document_number_is_refused_and_writes_nothing(
    reason: str,
) -> None:
    world = World()
    sid = (await world.submit("alice", "ABCPE1234F")).id
    before = world.snapshot()
    with pytest.raises(ValidationError) as caught:
        await _reject(world, sid, reason)
    (violation,) = caught.value.violations
    assert (violation.field, violation.description) == ("reason", QUOTES_A_NUMBER)
    for number in ("ABCPE1234F", "ZZZPZ9999Z", "K1234567", "1234"):
        assert number not in str(caught.value)
    assert world.snapshot() == before
    assert world.uow.submissions.rows[sid].status is KycStatus.PENDING


async def test_an_approval_note_with_a_document_number_is_refused_and_writes_nothing() -> None:
    world = World()
    number = aadhaar()
    sid = (await world.submit("alice", number, document_type=DocumentType.AADHAAR)).id
    spaced = f"{number[:4]} {number[4:8]} {number[8:]}"
    before = world.snapshot()
    with pytest.raises(ValidationError) as caught:
        await _approve(world, sid, note=f"checked Aadhaar {spaced} against the photo")
    assert _fields(caught) == ["note"]
    assert number[4:8] not in str(caught.value)
    assert world.snapshot() == before


async def test_the_submissions_own_number_run_into_other_words_is_refused() -> None:
    """Text the check of every format lets pass (the number does not stand as a word) is still
    refused when it holds the submission's own number: compared in the decision's transaction,
    by the number's keyed hash."""
    world = World()
    sid = (await world.submit("alice", "ABCPE1234F")).id
    before = world.snapshot()
    decisions: list[Callable[[], Awaitable[Submission]]] = [
        lambda: _reject(world, sid, "numberABCPE1234Fmismatch"),
        lambda: _approve(world, sid, note="seen:abcpe1234fok"),
    ]
    for decide in decisions:
        with pytest.raises(ValidationError) as caught:
            await decide()
        assert caught.value.violations[0].description == QUOTES_A_NUMBER
    assert world.snapshot() == before
    # Another PAN run into words is no number of this submission's, and stands as no word.
    rejected = await _reject(world, sid, "numberZZZPZ9999Zmismatch")
    assert rejected.status is KycStatus.REJECTED


@pytest.mark.parametrize(
    "reason",
    [
        "photo is blurred",
        "name mismatch",
        "year of birth 1990 does not match",
        "uploaded on 2024-05-01: the document had expired",
        "Photo 2024 is blurred; page 2 of 3 missing",
    ],
)
async def test_ordinary_reasons_and_notes_pass_and_reach_the_user(reason: str) -> None:
    world = World()
    rejected_id = (await world.submit("alice", "ABCPE1234F")).id
    approved_id = (await world.submit("bob", "ZZZPZ9999Z")).id
    rejected = await _reject(world, rejected_id, reason)
    assert rejected.rejection_reason == reason
    notification = world.uow.outbox.messages[-1]
    assert reason in notification.payload["body"]
    await _approve(world, approved_id, note=reason)
    assert world.uow.audit_entries[-1].details["note"] == reason


async def test_a_committed_decisions_retry_replays_though_its_text_is_now_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review of 8d546b9: the text checks ran before the stored-reply lookup, so a decision
    committed before a rule existed (a reason quoting a number, written by an older replica)
    had its retry refused 400 instead of replayed."""
    world = World()
    rejected_sid = (await world.submit("alice")).id
    approved_sid = (await world.submit("bob")).id
    reject_key, approve_key = key("mod"), key("mod")
    rejected = await _reject(world, rejected_sid, "photo unreadable", idempotency=reject_key)
    approved = await _approve(world, approved_sid, note="all good", idempotency=approve_key)
    monkeypatch.setattr("vaultpay_kyc.domain.model.quotes_a_document_number", lambda *_, **__: True)
    world.roles.down = True  # nor is auth asked
    world.roles.asked.clear()
    assert await _reject(world, rejected_sid, "photo unreadable", idempotency=reject_key) == (
        rejected
    )
    assert await _approve(world, approved_sid, note="all good", idempotency=approve_key) == (
        approved
    )
    assert await _refused(world, lambda: _reject(world, rejected_sid, "again")) == ["reason"]
