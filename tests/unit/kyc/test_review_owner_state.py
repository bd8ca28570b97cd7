"""An approval asks auth whether the submission's owner is still active, whoever approves (a
super_admin too), and refuses a deactivated owner (KYC_OWNER_DEACTIVATED, writing nothing, the
submission still pending), after the rank rule; a rejection is allowed. When auth cannot tell,
the approval fails closed. Before, a user deactivated for identity fraud was verified (their
wallet's tier raised) and the document's real holder then refused KYC_DOCUMENT_IN_USE."""

from __future__ import annotations

import pytest

from tests.unit.kyc.kyc_world import World, key
from vaultpay_common.context import Role
from vaultpay_common.errors import ErrorKind, UnavailableError
from vaultpay_kyc.domain.errors import KycOwnerDeactivatedError, KycReviewerOutrankedError
from vaultpay_kyc.domain.model import KycStatus
from vaultpay_kyc.service_layer.commands import ApproveKyc, RejectKyc

STAFF = (Role.MODERATOR, Role.ADMIN, Role.SUPER_ADMIN)


async def _approve(world: World, reviewer: str, role: Role, sid: str) -> object:
    return await world.review.approve(ApproveKyc(reviewer, role, sid, None, "", key(reviewer)))


@pytest.mark.parametrize("role", STAFF, ids=lambda r: r.name.lower())
async def test_no_approver_verifies_a_deactivated_user(role: Role) -> None:
    world = World()
    sid = (await world.submit("alice")).id
    world.roles.deactivated.add("alice")
    before = world.snapshot()
    with pytest.raises(KycOwnerDeactivatedError) as err:
        await _approve(world, "staffer", role, sid)
    assert (err.value.kind, err.value.reason) == (
        ErrorKind.FAILED_PRECONDITION,
        "KYC_OWNER_DEACTIVATED",
    )
    # No decision, tier event, notification, audit row or idempotency record.
    assert world.snapshot() == before
    assert world.uow.submissions.rows[sid].status is KycStatus.PENDING
    assert world.roles.asked == ["alice"]  # a super_admin's approval asks auth too
    rejected = await world.review.reject(RejectKyc("staffer", role, sid, "fraud", key("staffer")))
    assert rejected.status is KycStatus.REJECTED


async def test_the_real_holder_is_verified_once_the_impostors_submission_is_rejected() -> None:
    world = World()
    impostor = await world.submit("alice", "ABCPE1234F")
    holder = await world.submit("bob", "ABCPE1234F")
    world.roles.deactivated.add("alice")  # deactivated in auth for identity fraud
    with pytest.raises(KycOwnerDeactivatedError):
        await _approve(world, "root", Role.SUPER_ADMIN, impostor.id)
    await world.review.reject(RejectKyc("mod", Role.MODERATOR, impostor.id, "fraud", key("mod")))
    approved = await world.approve(holder)  # not KYC_DOCUMENT_IN_USE
    assert approved.status is KycStatus.VERIFIED


async def test_the_rank_rule_answers_before_the_owners_state() -> None:
    """A moderator learns nothing of the state of an admin they cannot review."""
    world = World()
    world.wallets.users.add("boss")
    world.roles.roles["boss"] = Role.ADMIN
    sid = (await world.submit("boss")).id
    world.roles.deactivated.add("boss")
    with pytest.raises(KycReviewerOutrankedError):
        await _approve(world, "mod", Role.MODERATOR, sid)


@pytest.mark.parametrize("role", STAFF, ids=lambda r: r.name.lower())
async def test_an_approval_fails_closed_while_auth_cannot_tell_the_owners_state(
    role: Role,
) -> None:
    world = World()
    sid = (await world.submit("alice")).id
    world.roles.down = True
    before = world.snapshot()
    with pytest.raises(UnavailableError):
        await _approve(world, "staffer", role, sid)
    assert world.snapshot() == before
    world.roles.down = False
    approved = await world.review.approve(
        ApproveKyc("staffer", role, sid, None, "", key("staffer"))
    )
    assert approved.status is KycStatus.VERIFIED


async def test_an_approval_that_committed_replays_after_the_owner_is_deactivated() -> None:
    world = World()
    sid = (await world.submit("alice")).id
    k = key("mod")
    first = await world.review.approve(ApproveKyc("mod", Role.MODERATOR, sid, None, "", k))
    world.roles.deactivated.add("alice")
    world.roles.asked.clear()
    again = await world.review.approve(ApproveKyc("mod", Role.MODERATOR, sid, None, "", k))
    assert again == first and world.roles.asked == []


async def test_a_retry_overlapping_an_approval_that_commits_gets_its_answer() -> None:
    """Review of the change: a retry that found nothing stored, while its first attempt was
    still running, asked auth before it could wait for that attempt; told the owner was
    deactivated meanwhile (or auth was down), it refused a decision already made. Refused by
    the owner's state or auth, it looks for the stored answer once more."""
    world = World()
    sid = (await world.submit("alice")).id
    k = key("root")
    command = ApproveKyc("root", Role.SUPER_ADMIN, sid, None, "", k)
    standing_of = world.roles.standing_of
    first: list[object] = []

    async def first_attempt_commits_meanwhile(user_id: str) -> object:
        if not first:  # the retry asks auth; meanwhile the first attempt commits
            first.append(None)
            first.append(await world.review.approve(command))
            world.roles.deactivated.add("alice")
        return await standing_of(user_id)

    world.roles.standing_of = first_attempt_commits_meanwhile  # type: ignore[method-assign,assignment]
    retried = await world.review.approve(command)
    assert retried == first[1] and retried.status is KycStatus.VERIFIED
