"""ReactivateUser lifts a deactivation only at its deactivator's rank or above, with a reason;
SetUserRole needs a reason too.

An admin could bring back a moderator a super_admin had deactivated for fraud, staff powers
and all, and the audit row said neither why nor what it lifted (review of 2026-12-05). As
wallet's staff freezes: an equal rank may take over a colleague's decision, a lower rank may
not undo it, and a deactivation with no deactivator on record (made before auth kept one)
is lifted by a super_admin only. A refusal writes nothing.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.auth.fakes import FakeAuthUnitOfWork, make_user
from vaultpay_auth.domain.errors import DeactivatedByHigherRankError, DeactivatorUnknownError
from vaultpay_auth.domain.model import User
from vaultpay_auth.domain.policies import check_may_reactivate
from vaultpay_auth.domain.security_events import EmailFingerprint
from vaultpay_auth.service_layer.admin import AdminService
from vaultpay_common.context import Principal, Role
from vaultpay_common.errors import ValidationError

IP = "192.0.2.10"


class Staff:
    def __init__(self) -> None:
        self.uow = FakeAuthUnitOfWork()
        self.admin = AdminService(lambda: self.uow, fingerprint=EmailFingerprint(b"k" * 32))

    def add(self, email: str, role: Role = Role.USER) -> User:
        user = make_user(email, role=role)
        self.uow.users.users[user.id] = user
        return user

    @staticmethod
    def acting(user: User) -> Principal:
        return Principal(subject=user.id, role=user.role, session_id=f"s-{user.id}")

    def stored(self, user: User) -> User:
        return self.uow.users.users[user.id]


@pytest.mark.parametrize(
    ("actor", "deactivator", "allowed"),
    [
        (Role.ADMIN, Role.ADMIN, True),
        (Role.SUPER_ADMIN, Role.ADMIN, True),
        (Role.SUPER_ADMIN, Role.SUPER_ADMIN, True),
        (Role.ADMIN, Role.SUPER_ADMIN, False),
        (Role.ADMIN, Role.MODERATOR, True),  # a deactivator since demoted: their role now
        (Role.SUPER_ADMIN, None, True),
        (Role.ADMIN, None, False),
    ],
)
def test_the_rule(actor: Role, deactivator: Role | None, allowed: bool) -> None:
    if allowed:
        check_may_reactivate(actor_role=actor, deactivator_role=deactivator)
        return
    expected = DeactivatorUnknownError if deactivator is None else DeactivatedByHigherRankError
    with pytest.raises(expected):
        check_may_reactivate(actor_role=actor, deactivator_role=deactivator)


async def test_an_admin_cannot_bring_back_whom_a_super_admin_deactivated() -> None:
    staff = Staff()
    root = staff.add("root@example.com", Role.SUPER_ADMIN)
    admin = staff.add("admin@example.com", Role.ADMIN)
    moderator = staff.add("mod@example.com", Role.MODERATOR)
    await staff.admin.deactivate(staff.acting(root), moderator.id, "fraud #123", client_ip=IP)
    assert staff.stored(moderator).deactivated_by == root.id
    before = dataclasses.replace(staff.stored(moderator))

    with pytest.raises(DeactivatedByHigherRankError) as refused:
        await staff.admin.reactivate(staff.acting(admin), moderator.id, "mistake", client_ip=IP)
    assert refused.value.metadata == {"deactivated_by_role": "super_admin"}
    assert staff.stored(moderator) == before
    assert staff.uow.entries("user.reactivated") == []

    await staff.admin.reactivate(staff.acting(root), moderator.id, "cleared", client_ip=IP)
    back = staff.stored(moderator)
    assert (back.active, back.deactivation_reason, back.deactivated_by) == (True, "", None)
    [entry] = staff.uow.entries("user.reactivated")
    assert dict(entry.details) == {
        "reason": "cleared",
        "deactivation_reason": "fraud #123",
        "deactivated_by": root.id,
        "ip": IP,
    }


async def test_an_admin_takes_over_a_colleagues_deactivation() -> None:
    staff = Staff()
    first = staff.add("first@example.com", Role.ADMIN)
    second = staff.add("second@example.com", Role.ADMIN)
    user = staff.add("ada@example.com")
    await staff.admin.deactivate(staff.acting(first), user.id, "chargebacks", client_ip=IP)
    await staff.admin.reactivate(staff.acting(second), user.id, "resolved", client_ip=IP)
    assert staff.stored(user).active


async def test_a_deactivation_without_a_deactivator_on_record_is_a_super_admins_to_lift() -> None:
    staff = Staff()
    root = staff.add("root@example.com", Role.SUPER_ADMIN)
    admin = staff.add("admin@example.com", Role.ADMIN)
    user = staff.add("ada@example.com")
    staff.uow.users.users[user.id] = dataclasses.replace(
        user, active=False, deactivation_reason="before 0010", deactivated_by=None
    )
    with pytest.raises(DeactivatorUnknownError):
        await staff.admin.reactivate(staff.acting(admin), user.id, "mistake", client_ip=IP)
    assert not staff.stored(user).active
    await staff.admin.reactivate(staff.acting(root), user.id, "cleared", client_ip=IP)
    assert staff.stored(user).active


@pytest.mark.parametrize("reason", ["", "   ", "two\nlines"])
async def test_a_reactivation_needs_a_one_line_reason(reason: str) -> None:
    staff = Staff()
    root = staff.add("root@example.com", Role.SUPER_ADMIN)
    user = staff.add("ada@example.com")
    await staff.admin.deactivate(staff.acting(root), user.id, "fraud", client_ip=IP)
    with pytest.raises(ValidationError) as refused:
        await staff.admin.reactivate(staff.acting(root), user.id, reason, client_ip=IP)
    assert [v.field for v in refused.value.violations] == ["reason"]
    assert not staff.stored(user).active


async def test_a_role_change_needs_a_reason() -> None:
    """Review of 2026-12-05: SetUserRole (super_admin handed out included) was audited with an
    empty reason."""
    staff = Staff()
    root = staff.add("root@example.com", Role.SUPER_ADMIN)
    user = staff.add("ada@example.com")
    with pytest.raises(ValidationError) as refused:
        await staff.admin.set_role(staff.acting(root), user.id, Role.ADMIN, " ", client_ip=IP)
    assert [v.field for v in refused.value.violations] == ["reason"]
    assert staff.stored(user).role is Role.USER
    assert staff.uow.entries("user.role_changed") == []


def test_the_refusal_names_no_rank_above_super_admin() -> None:
    assert "super_admin or higher" not in str(DeactivatedByHigherRankError(Role.SUPER_ADMIN))
    assert "admin or higher" in str(DeactivatedByHigherRankError(Role.ADMIN))
