"""Who set a wallet's admin limits decides who may replace them: AdminSetWalletLimits is a PUT
of the whole set, so an admin must not undo a super_admin's clamp (wallet review of
2026-12-04 night), as a moderator does not lift an admin's freeze."""

from __future__ import annotations

from itertools import product

import pytest

from tests.fakes.wallet import FakeUserRoles
from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.context import Role
from vaultpay_common.errors import AbortedError, ErrorKind, UnavailableError
from vaultpay_wallet.domain.errors import LimitsHeldByHigherRankError
from vaultpay_wallet.domain.limits import LimitAction, LimitSource
from vaultpay_wallet.domain.staff import check_may_replace_staff_limits
from vaultpay_wallet.service_layer.commands import (
    AdminSetWalletLimits,
    AmountInput,
    LimitValuesInput,
)

STAFF_ROLES = (Role.MODERATOR, Role.ADMIN, Role.SUPER_ADMIN)
STAFF = {"mod-1": Role.MODERATOR, "adm-1": Role.ADMIN, "adm-2": Role.ADMIN}
STAFF |= {"root-1": Role.SUPER_ADMIN, "root-2": Role.SUPER_ADMIN}


def _limit(action: LimitAction, per_transaction: int) -> LimitValuesInput:
    return LimitValuesInput(action, per_transaction=AmountInput("INR", per_transaction))


async def _set(world: World, actor: str, wallet_id: str, *limits: LimitValuesInput) -> None:
    await world.limits.admin_set_wallet_limits(
        AdminSetWalletLimits(actor, STAFF[actor], wallet_id, limits, "review", key(actor))
    )


async def _admin_overrides(world: World, wallet_id: str) -> list[tuple[str, str, int | None]]:
    async with world.uow as uow:
        rows = await uow.limits.for_wallet(wallet_id)
    return sorted(
        (o.action.name, o.set_by, o.per_transaction)
        for o in rows
        if o.source is LimitSource.ADMIN_OVERRIDE
    )


@pytest.mark.parametrize(("actor", "setter"), list(product(STAFF_ROLES, STAFF_ROLES)))
def test_staff_replace_only_limits_set_by_no_higher_rank(actor: Role, setter: Role) -> None:
    if setter > actor:
        with pytest.raises(LimitsHeldByHigherRankError):
            check_may_replace_staff_limits(actor, setter)
    else:
        check_may_replace_staff_limits(actor, setter)


@pytest.mark.parametrize("actor", STAFF_ROLES)
def test_limits_without_a_recorded_setter_only_a_super_admin_replaces(actor: Role) -> None:
    if actor is Role.SUPER_ADMIN:
        check_may_replace_staff_limits(actor, None)
    else:
        with pytest.raises(LimitsHeldByHigherRankError) as err:
            check_may_replace_staff_limits(actor, None)
        assert err.value.metadata == {"held_by_role": "unknown"}


def test_the_refusal_is_permission_denied_naming_the_setters_role() -> None:
    with pytest.raises(LimitsHeldByHigherRankError) as err:
        check_may_replace_staff_limits(Role.ADMIN, Role.SUPER_ADMIN)
    assert (err.value.kind, err.value.reason) == (
        ErrorKind.PERMISSION_DENIED,
        "LIMITS_HELD_BY_HIGHER_RANK",
    )
    assert err.value.metadata == {"held_by_role": "super_admin"}


async def test_an_admin_cannot_replace_a_super_admins_clamp_and_nothing_is_written() -> None:
    world = World(roles=FakeUserRoles(STAFF))
    wallet_id = (await world.open_wallet("alice")).id
    await _set(world, "root-1", wallet_id, _limit(LimitAction.SEND, 1))
    before = await _admin_overrides(world, wallet_id)
    for attempt in ((_limit(LimitAction.SEND, 900_000),), ()):  # generous, or none at all
        with pytest.raises(LimitsHeldByHigherRankError):
            await _set(world, "adm-1", wallet_id, *attempt)
    assert await _admin_overrides(world, wallet_id) == before == [("SEND", "root-1", 1)]
    await _set(world, "root-2", wallet_id, _limit(LimitAction.SEND, 5))  # a peer may
    assert await _admin_overrides(world, wallet_id) == [("SEND", "root-2", 5)]


async def test_equal_rank_takes_over_and_ones_own_overrides_ask_nobody() -> None:
    roles = FakeUserRoles(STAFF)
    world = World(roles=roles)
    wallet_id = (await world.open_wallet("alice")).id
    await _set(world, "adm-1", wallet_id, _limit(LimitAction.SEND, 10))
    await _set(world, "adm-2", wallet_id, _limit(LimitAction.WITHDRAW, 20))  # takes over
    assert await _admin_overrides(world, wallet_id) == [("WITHDRAW", "adm-2", 20)]
    roles.asked.clear()
    await _set(world, "adm-2", wallet_id, _limit(LimitAction.WITHDRAW, 30))
    assert "adm-2" not in roles.asked  # the actor's own override needs no rank


async def test_a_setter_auth_cannot_name_fails_closed() -> None:
    roles = FakeUserRoles(STAFF)
    world = World(roles=roles)
    wallet_id = (await world.open_wallet("alice")).id
    await _set(world, "adm-1", wallet_id, _limit(LimitAction.SEND, 10))
    roles.down = True
    with pytest.raises(UnavailableError):
        await _set(world, "adm-2", wallet_id, _limit(LimitAction.SEND, 99))
    assert await _admin_overrides(world, wallet_id) == [("SEND", "adm-1", 10)]


async def test_an_override_committed_while_the_setters_were_checked_aborts() -> None:
    """A super_admin's clamp commits after an admin's setter check and before its lock: the
    admin's change is ABORTED (a retry checks the new setter), nothing written."""
    roles = FakeUserRoles(STAFF)
    world = World(roles=roles)
    wallet_id = (await world.open_wallet("alice")).id
    await _set(world, "adm-2", wallet_id, _limit(LimitAction.SEND, 10))
    asked = roles.role_of

    async def clamp_meanwhile(user_id: str) -> Role:
        role = await asked(user_id)
        if user_id == "adm-2":  # the setter checked; the clamp lands before the lock
            await _set(world, "root-1", wallet_id, _limit(LimitAction.SEND, 1))
        return role

    roles.role_of = clamp_meanwhile  # type: ignore[method-assign]
    with pytest.raises(AbortedError):
        await _set(world, "adm-1", wallet_id, _limit(LimitAction.SEND, 900_000))
    assert await _admin_overrides(world, wallet_id) == [("SEND", "root-1", 1)]
