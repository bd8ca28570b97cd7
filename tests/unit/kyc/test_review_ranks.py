"""The rank rule of reviews on fakes: staff decide (and open decrypted) only the submissions
of users they outrank, a super_admin anyone's; the rule and its reason are wallet's; a refusal,
or auth not answering, decides and writes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import product

import pytest

from tests.unit.kyc.kyc_world import World, key
from vaultpay_common.context import Role
from vaultpay_common.errors import DomainError, ErrorKind, UnavailableError
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_kyc.domain.errors import KycReviewerOutrankedError, KycSelfReviewError
from vaultpay_kyc.domain.model import KycStatus, check_reviewer_outranks_owner
from vaultpay_kyc.domain.staff_reads import StaffViewer
from vaultpay_kyc.service_layer.commands import ApproveKyc, RejectKyc
from vaultpay_kyc.service_layer.review import ReviewService
from vaultpay_wallet.domain.staff import check_staff_outranks_owner

STAFF = (Role.MODERATOR, Role.ADMIN, Role.SUPER_ADMIN)
ALLOWED = {
    (Role.MODERATOR, Role.USER),
    (Role.ADMIN, Role.USER),
    (Role.ADMIN, Role.MODERATOR),
    (Role.SUPER_ADMIN, Role.USER),
    (Role.SUPER_ADMIN, Role.MODERATOR),
    (Role.SUPER_ADMIN, Role.ADMIN),
    (Role.SUPER_ADMIN, Role.SUPER_ADMIN),
}


def _refusal(check: Callable[[], None]) -> tuple[ErrorKind, str] | None:
    try:
        check()
    except DomainError as exc:
        return exc.kind, exc.reason
    return None


@pytest.mark.parametrize(("actor", "owner"), list(product(Role, Role)))
def test_the_rule_and_its_refusal_are_wallets_on_every_pair(actor: Role, owner: Role) -> None:
    kycs = _refusal(lambda: check_reviewer_outranks_owner(actor, owner))
    wallets = _refusal(lambda: check_staff_outranks_owner(actor, owner))
    assert kycs == wallets
    assert kycs == (
        None
        if (actor, owner) in ALLOWED
        else (ErrorKind.PERMISSION_DENIED, "INSUFFICIENT_PERMISSIONS")
    )


# ----- the use cases ---------------------------------------------------------------------

Call = Callable[[World, str, Role, str], Awaitable[object]]


def _approve(world: World, reviewer: str, role: Role, sid: str) -> Awaitable[object]:
    return world.review.approve(ApproveKyc(reviewer, role, sid, None, "", key(reviewer)))


def _reject(world: World, reviewer: str, role: Role, sid: str) -> Awaitable[object]:
    return world.review.reject(RejectKyc(reviewer, role, sid, "blurred", key(reviewer)))


def _view(world: World, reviewer: str, role: Role, sid: str) -> Awaitable[object]:
    return world.view(sid, reviewer, role=role)


DECISIONS = pytest.mark.parametrize("act", [_approve, _reject], ids=["approve", "reject"])
REVIEWS = pytest.mark.parametrize(
    "act", [_approve, _reject, _view], ids=["approve", "reject", "view"]
)


async def _submitted_by(world: World, owner: str, role: Role) -> str:
    world.wallets.users.add(owner)
    world.roles.roles[owner] = role
    return (await world.submit(owner)).id


@REVIEWS
@pytest.mark.parametrize(
    ("reviewer_role", "owner_role"), list(product(STAFF, Role)), ids=lambda r: r.name.lower()
)
async def test_staff_review_a_submission_only_when_they_outrank_its_owner(
    act: Call, reviewer_role: Role, owner_role: Role
) -> None:
    world = World()
    sid = await _submitted_by(world, "owner", owner_role)
    before, audited = world.snapshot(), len(world.uow.audit_entries)
    if (reviewer_role, owner_role) in ALLOWED:
        await act(world, "staffer", reviewer_role, sid)
        assert len(world.uow.audit_entries) == audited + 1
    else:
        with pytest.raises(KycReviewerOutrankedError) as err:
            await act(world, "staffer", reviewer_role, sid)
        assert (err.value.kind, err.value.reason) == (
            ErrorKind.PERMISSION_DENIED,
            "INSUFFICIENT_PERMISSIONS",
        )
        assert world.snapshot() == before  # nothing decided, no audit row, no idempotency record
    # A super_admin outranks anyone: auth's answer could not change it, so it is not asked,
    # except by an approval, which needs the owner's state whoever approves.
    asks = reviewer_role is not Role.SUPER_ADMIN or act is _approve
    assert world.roles.asked == (["owner"] if asks else [])


async def test_two_moderators_cannot_approve_each_others_submissions() -> None:
    world = World()
    first = await _submitted_by(world, "mod-a", Role.MODERATOR)
    second = await _submitted_by(world, "mod-b", Role.MODERATOR)
    for reviewer, sid in (("mod-a", second), ("mod-b", first)):
        with pytest.raises(KycReviewerOutrankedError):
            await _approve(world, reviewer, Role.MODERATOR, sid)
    assert {s.status for s in world.uow.submissions.rows.values()} == {KycStatus.PENDING}
    approved = await world.review.approve(ApproveKyc("boss", Role.ADMIN, first, None, "", None))
    assert approved.status is KycStatus.VERIFIED


@REVIEWS
@pytest.mark.parametrize("role", [Role.MODERATOR, Role.ADMIN], ids=lambda r: r.name.lower())
async def test_a_review_fails_closed_writing_nothing_while_auth_is_down(
    act: Call, role: Role
) -> None:
    world = World()
    sid = (await world.submit("alice")).id
    world.roles.down = True
    before = world.snapshot()
    with pytest.raises(UnavailableError) as err:
        await act(world, "staffer", role, sid)
    assert err.value.kind is ErrorKind.UNAVAILABLE
    assert world.snapshot() == before


@pytest.mark.parametrize("act", [_reject, _view], ids=["reject", "view"])
async def test_a_super_admin_rejects_and_opens_while_auth_is_down_asking_it_nothing(
    act: Call,
) -> None:
    """Whatever the owner's role, a super_admin outranks them: auth being down (or not
    knowing the owner) cannot stop the one role the rank rule never refuses. Their approval
    asks auth (the owner's state: test_review_owner_state.py)."""
    world = World()
    sid = await _submitted_by(world, "root-2", Role.SUPER_ADMIN)
    world.roles.down = True
    audited = len(world.uow.audit_entries)
    await act(world, "root", Role.SUPER_ADMIN, sid)
    assert len(world.uow.audit_entries) == audited + 1
    assert world.roles.asked == []


@DECISIONS
async def test_deciding_ones_own_submission_is_refused_without_asking_auth(act: Call) -> None:
    world = World()
    sid = await _submitted_by(world, "root", Role.SUPER_ADMIN)
    world.roles.down = True  # not needed to refuse it
    before = world.snapshot()
    with pytest.raises(KycSelfReviewError):
        await act(world, "root", Role.SUPER_ADMIN, sid)
    assert world.snapshot() == before and world.roles.asked == []


async def test_staff_open_their_own_submission_without_asking_auth() -> None:
    world = World()
    sid = await _submitted_by(world, "mod", Role.MODERATOR)
    world.roles.down = True
    details = await world.view(sid, "mod", role=Role.MODERATOR)
    assert details.document_number == "ABCPE1234F"
    assert world.roles.asked == []


async def test_a_replayed_approval_still_answers_its_stored_reply() -> None:
    """The rank is asked before the transaction, but pending-only is the transaction's rule:
    a retry of an approval that committed gets the same reply, not KYC_NOT_PENDING."""
    world = World()
    sid = (await world.submit("alice")).id
    k = key("mod")
    first = await world.review.approve(ApproveKyc("mod", Role.MODERATOR, sid, None, "", k))
    again = await world.review.approve(ApproveKyc("mod", Role.MODERATOR, sid, None, "", k))
    assert again == first


@pytest.mark.parametrize(
    "decide",
    [
        lambda w, sid, k: w.review.approve(ApproveKyc("mod", Role.MODERATOR, sid, None, "", k)),
        lambda w, sid, k: w.review.reject(RejectKyc("mod", Role.MODERATOR, sid, "blurred", k)),
    ],
    ids=["approve", "reject"],
)
async def test_a_retried_decision_gets_its_stored_reply_whatever_changed_since(
    decide: Callable[[World, str, IdempotencyKey], Awaitable[object]],
) -> None:
    """The decision committed but its reply was lost; since then the owner was promoted
    above the moderator and auth went down. The retry is answered the stored reply, not
    INSUFFICIENT_PERMISSIONS or AUTH_UNAVAILABLE, and asks auth nothing."""
    world = World()
    sid = (await world.submit("alice")).id
    k = key("mod")
    first = await decide(world, sid, k)
    world.roles.roles["alice"] = Role.ADMIN
    world.roles.down = True
    world.roles.asked.clear()
    before = world.snapshot()
    assert await decide(world, sid, k) == first
    assert world.snapshot() == before and world.roles.asked == []


async def test_a_review_service_built_without_a_role_source_refuses_decisions() -> None:
    world = World()
    sid = (await world.submit("alice")).id
    review = ReviewService(lambda: world.uow, world.clock, world.cipher, hasher=world.hasher)
    before = world.snapshot()
    for call in (
        lambda: review.approve(ApproveKyc("adm", Role.ADMIN, sid, None, "", None)),
        lambda: review.reject(RejectKyc("adm", Role.ADMIN, sid, "no", None)),
        lambda: review.view(sid, viewer=StaffViewer("adm", Role.ADMIN)),
    ):
        with pytest.raises(UnavailableError):
            await call()
    assert world.snapshot() == before
