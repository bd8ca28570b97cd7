"""DeactivateUser of a user already deactivated: the deactivator's retry changes nothing, a
higher rank takes the deactivation over (then only their rank may lift it), anyone else is
refused USER_ALREADY_DEACTIVATED.

It answered OK and wrote nothing: a super_admin deactivating for fraud a moderator an admin
had deactivated "on leave" was told it was done, the admin's deactivation stayed on record,
and any admin could then bring the moderator back, staff powers and all, the fraud nowhere
in the audit log (review of 2026-12-05, helper 281).
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.auth.test_reactivation_rank import IP, Staff
from vaultpay_auth.domain.errors import DeactivatedByHigherRankError, UserAlreadyDeactivatedError
from vaultpay_auth.domain.policies import check_may_redeactivate
from vaultpay_common.context import Role


@pytest.mark.parametrize(
    ("actor", "deactivator", "outcome"),
    [
        (Role.SUPER_ADMIN, Role.ADMIN, "take over"),
        (Role.ADMIN, Role.MODERATOR, "take over"),  # a deactivator since demoted: their role now
        (Role.SUPER_ADMIN, None, "take over"),
        (Role.ADMIN, Role.ADMIN, "refused"),
        (Role.ADMIN, Role.SUPER_ADMIN, "refused"),
        (Role.SUPER_ADMIN, Role.SUPER_ADMIN, "refused"),
        (Role.ADMIN, None, "refused"),
    ],
)
def test_the_rule(actor: Role, deactivator: Role | None, outcome: str) -> None:
    def decide() -> None:
        check_may_redeactivate(
            actor_id="a", actor_role=actor, deactivator_id="d", deactivator_role=deactivator
        )

    if outcome == "take over":
        decide()
        return
    with pytest.raises(UserAlreadyDeactivatedError) as refused:
        decide()
    expected = "unknown" if deactivator is None else deactivator.claim
    assert refused.value.metadata == {"deactivated_by_role": expected}


def test_the_deactivator_may_always_make_it_theirs_again() -> None:
    check_may_redeactivate(
        actor_id="a", actor_role=Role.ADMIN, deactivator_id="a", deactivator_role=Role.ADMIN
    )


async def test_a_super_admin_takes_over_an_admins_deactivation_and_an_admin_cannot_lift_it() -> (
    None
):
    staff = Staff()
    root = staff.add("root@example.com", Role.SUPER_ADMIN)
    first = staff.add("first@example.com", Role.ADMIN)
    second = staff.add("second@example.com", Role.ADMIN)
    moderator = staff.add("mod@example.com", Role.MODERATOR)
    await staff.admin.deactivate(staff.acting(first), moderator.id, "on leave", client_ip=IP)

    await staff.admin.deactivate(staff.acting(root), moderator.id, "fraud #9", client_ip=IP)
    held = staff.stored(moderator)
    assert (held.active, held.deactivated_by, held.deactivation_reason) == (
        False,
        root.id,
        "fraud #9",
    )
    _, taken_over = staff.uow.entries("user.deactivated")
    assert dict(taken_over.details) == {
        "reason": "fraud #9",
        "revoked_sessions": "0",
        "replaces_reason": "on leave",
        "replaces_deactivated_by": first.id,
        "ip": IP,
    }
    assert taken_over.target_id == moderator.id

    with pytest.raises(DeactivatedByHigherRankError):
        await staff.admin.reactivate(staff.acting(second), moderator.id, "back", client_ip=IP)
    assert not staff.stored(moderator).active


async def test_an_equal_rank_is_refused_and_nothing_changes() -> None:
    staff = Staff()
    first = staff.add("first@example.com", Role.ADMIN)
    second = staff.add("second@example.com", Role.ADMIN)
    user = staff.add("ada@example.com")
    await staff.admin.deactivate(staff.acting(first), user.id, "chargebacks", client_ip=IP)
    before = dataclasses.replace(staff.stored(user))

    with pytest.raises(UserAlreadyDeactivatedError) as refused:
        await staff.admin.deactivate(staff.acting(second), user.id, "spam", client_ip=IP)
    assert refused.value.metadata == {"deactivated_by_role": "admin"}
    assert staff.stored(user) == before
    assert len(staff.uow.entries("user.deactivated")) == 1


async def test_the_deactivators_retry_with_the_same_reason_writes_nothing() -> None:
    staff = Staff()
    admin = staff.add("admin@example.com", Role.ADMIN)
    user = staff.add("ada@example.com")
    await staff.admin.deactivate(staff.acting(admin), user.id, "chargebacks", client_ip=IP)
    before = dataclasses.replace(staff.stored(user))
    again = await staff.admin.deactivate(staff.acting(admin), user.id, "chargebacks", client_ip=IP)
    assert again == before == staff.stored(user)
    assert len(staff.uow.entries("user.deactivated")) == 1


async def test_the_deactivators_new_reason_is_recorded_and_audited() -> None:
    """Review of this change: an admin who deactivated "on leave" and then found fraud was
    answered OK and the fraud reason recorded nowhere."""
    staff = Staff()
    admin = staff.add("admin@example.com", Role.ADMIN)
    user = staff.add("ada@example.com")
    await staff.admin.deactivate(staff.acting(admin), user.id, "on leave", client_ip=IP)
    await staff.admin.deactivate(staff.acting(admin), user.id, "fraud #9", client_ip=IP)
    held = staff.stored(user)
    assert (held.active, held.deactivated_by, held.deactivation_reason) == (
        False,
        admin.id,
        "fraud #9",
    )
    _, updated = staff.uow.entries("user.deactivated")
    assert updated.details["replaces_reason"] == "on leave"
    assert updated.details["replaces_deactivated_by"] == admin.id
