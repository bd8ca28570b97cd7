"""GetUserRole's use case on fakes: a peer service's rank rule learns the user's current role,
whether or not the user is active, and whether they are (kyc's approval refuses a deactivated
owner), and nothing else, without a staff read's audit row."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from tests.unit.auth.fakes import FakeAuthUnitOfWork, make_user
from vaultpay_auth.domain.errors import UserNotFoundError
from vaultpay_auth.domain.security_events import EmailFingerprint
from vaultpay_auth.service_layer.admin import AdminService, UserStanding
from vaultpay_common.context import Role
from vaultpay_common.errors import ValidationError


def _admin(uow: FakeAuthUnitOfWork) -> AdminService:
    return AdminService(lambda: uow, fingerprint=EmailFingerprint(b"k" * 32))


@pytest.mark.parametrize("role", list(Role))
async def test_a_peer_service_learns_the_users_current_role(role: Role) -> None:
    uow = FakeAuthUnitOfWork()
    user = make_user("ada@example.com", role=role)
    uow.users.users[user.id] = user
    assert await _admin(uow).role_of(user.id) == UserStanding(role, active=True)


async def test_a_deactivated_user_keeps_their_role_for_the_rank_rule_and_is_said_inactive() -> None:
    """As GetUserContact answered it: a deactivated admin's staff freezes stay protected by
    the role; the state is said beside it, for kyc's approval."""
    uow = FakeAuthUnitOfWork()
    user = dataclasses.replace(
        make_user("ada@example.com", role=Role.ADMIN), active=False, deactivation_reason="left"
    )
    uow.users.users[user.id] = user
    assert await _admin(uow).role_of(user.id) == UserStanding(Role.ADMIN, active=False)


async def test_a_user_auth_does_not_know_is_user_not_found() -> None:
    with pytest.raises(UserNotFoundError):
        await _admin(FakeAuthUnitOfWork()).role_of(str(uuid.uuid4()))


async def test_a_user_id_that_is_not_a_uuid_is_invalid_before_any_read() -> None:
    with pytest.raises(ValidationError):
        await _admin(FakeAuthUnitOfWork()).role_of("not-a-uuid")


async def test_a_role_lookup_is_not_a_staff_read_and_writes_nothing() -> None:
    uow = FakeAuthUnitOfWork()
    user = make_user("ada@example.com", role=Role.MODERATOR)
    uow.users.users[user.id] = user
    await _admin(uow).role_of(user.id)
    assert (uow.audit_entries, uow.commits) == ([], 0)
