"""Who set a staff freeze decides who may lift or replace it: a moderator does not undo an
admin's fraud hold (security review of 2026-12-04). PIN lockouts and the owner's own freeze
stay liftable by any staff member."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from tests.fakes.wallet import FakeUserRoles
from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.context import Role
from vaultpay_common.errors import AbortedError, ErrorKind, UnavailableError
from vaultpay_wallet.domain.errors import (
    FreezeHeldByHigherRankError,
    FreezeSetterUnknownError,
    InvalidPinError,
    PinLockedError,
)
from vaultpay_wallet.domain.model import Freeze, FreezeSource, Wallet, WalletStatus
from vaultpay_wallet.domain.staff import check_may_override_staff_freeze, check_setter_recorded
from vaultpay_wallet.service_layer.commands import (
    AdminFreezeWallet,
    AdminUnfreezeWallet,
    FreezeMyWallet,
    VerifyPin,
)

STAFF_ROLES = (Role.MODERATOR, Role.ADMIN, Role.SUPER_ADMIN)
# The staff member of each role in these tests, by user id.
STAFF = {"mod-1": Role.MODERATOR, "mod-2": Role.MODERATOR, "adm-1": Role.ADMIN}
STAFF |= {"adm-2": Role.ADMIN, "root-1": Role.SUPER_ADMIN, "root-2": Role.SUPER_ADMIN}
FIRST = {role: f"{role.name.lower()[:3]}-1" for role in STAFF_ROLES}
SECOND = {role: f"{role.name.lower()[:3]}-2" for role in STAFF_ROLES}
FIRST[Role.SUPER_ADMIN], SECOND[Role.SUPER_ADMIN] = "root-1", "root-2"


def _world() -> World:
    return World(roles=FakeUserRoles(STAFF))


async def _freeze(
    world: World, actor: str, wallet_id: str, until: datetime | None = None, note: str = "hold"
) -> Wallet:
    return await world.admin.freeze_wallet(
        AdminFreezeWallet(actor, STAFF[actor], wallet_id, note, until, key(actor))
    )


async def _unfreeze(world: World, actor: str, wallet_id: str) -> Wallet:
    return await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet(actor, STAFF[actor], wallet_id, "cleared", key(actor))
    )


async def _lock_out(world: World) -> None:
    for _ in range(3):
        with pytest.raises((InvalidPinError, PinLockedError)):
            await world.pins.verify_pin(VerifyPin("alice", "1357", key("alice")))


# ----- the rule --------------------------------------------------------------------------


@pytest.mark.parametrize(("actor", "setter"), list(product(STAFF_ROLES, STAFF_ROLES)))
def test_staff_override_only_staff_freezes_set_by_no_higher_rank(actor: Role, setter: Role) -> None:
    if setter > actor:
        with pytest.raises(FreezeHeldByHigherRankError):
            check_may_override_staff_freeze(actor, setter)
    else:
        check_may_override_staff_freeze(actor, setter)


def test_the_refusal_is_permission_denied_naming_the_setters_role_not_the_setter() -> None:
    with pytest.raises(FreezeHeldByHigherRankError) as err:
        check_may_override_staff_freeze(Role.MODERATOR, Role.ADMIN)
    assert (err.value.kind, err.value.reason) == (
        ErrorKind.PERMISSION_DENIED,
        "FREEZE_HELD_BY_HIGHER_RANK",
    )
    assert err.value.metadata == {"held_by_role": "admin"}


# ----- unfreeze --------------------------------------------------------------------------


async def test_a_moderator_cannot_lift_an_admins_freeze_and_nothing_is_lifted() -> None:
    """The review's case: an admin's fraud hold under the owner's own freeze and a PIN
    lockout; a moderator's unfreeze lifts none of them (not the two it could lift either),
    writes no audit row, no notification, no idempotency record."""
    world = _world()
    wallet = await world.open_wallet_with_pin("alice")
    await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", "lost my phone", key("alice")))
    await _freeze(world, "adm-1", wallet.id, note="fraud hold")
    await _lock_out(world)
    held = world.uow.wallets.wallets[wallet.id]
    assert {f.source for f in held.freezes} == set(FreezeSource)
    before = world.snapshot()

    with pytest.raises(FreezeHeldByHigherRankError) as err:
        await _unfreeze(world, "mod-1", wallet.id)
    assert err.value.metadata == {"held_by_role": "admin"}
    assert "adm-1" not in str(err.value)
    assert world.snapshot() == before
    assert world.roles.asked[-2:] == ["alice", "adm-1"]  # the owner, then the setter


@pytest.mark.parametrize(
    ("actor_role", "setter_role"),
    list(product(STAFF_ROLES, STAFF_ROLES)),
    ids=lambda role: role.name.lower(),
)
async def test_staff_lift_the_staff_freeze_of_a_colleague_of_no_higher_rank(
    actor_role: Role, setter_role: Role
) -> None:
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, FIRST[setter_role], wallet.id)
    actor = SECOND[actor_role]
    if setter_role > actor_role:
        before = world.snapshot()
        with pytest.raises(FreezeHeldByHigherRankError):
            await _unfreeze(world, actor, wallet.id)
        assert world.snapshot() == before
    else:
        lifted = await _unfreeze(world, actor, wallet.id)
        assert lifted.status is WalletStatus.ACTIVE and lifted.freezes == ()


async def test_a_moderator_lifts_a_pin_lockout_and_the_owners_own_freeze() -> None:
    """Support's daily work stays possible: no staff freeze, nothing to ask of the rank."""
    world = _world()
    wallet = await world.open_wallet_with_pin("alice")
    await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", "lost my phone", key("alice")))
    await _lock_out(world)
    lifted = await _unfreeze(world, "mod-1", wallet.id)
    assert lifted.status is WalletStatus.ACTIVE
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    assert world.roles.asked[-1:] == ["alice"]  # only the owner's role was asked


async def test_a_lapsed_admin_freeze_does_not_stop_a_moderator() -> None:
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, "adm-1", wallet.id, until=world.clock.now() + timedelta(hours=1))
    world.clock.advance(timedelta(hours=1, seconds=1))  # the sweep has not run
    lifted = await _unfreeze(world, "mod-1", wallet.id)
    assert lifted.status is WalletStatus.ACTIVE


async def test_a_super_admin_lifts_anything_without_asking_auth_anything() -> None:
    """Neither the setter's role nor the owner's can refuse a super_admin, so auth is not
    asked: the hold is lifted while auth is down."""
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, "root-1", wallet.id)
    world.roles.asked.clear()
    world.roles.down = True
    lifted = await _unfreeze(world, "root-2", wallet.id)
    assert lifted.status is WalletStatus.ACTIVE
    assert world.roles.asked == []


async def test_staff_lift_their_own_freeze_without_asking_their_rank() -> None:
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, "mod-1", wallet.id)
    world.roles.asked.clear()
    await _unfreeze(world, "mod-1", wallet.id)
    assert world.roles.asked == ["alice"]


async def test_the_setters_rank_is_the_one_auth_has_now() -> None:
    """An admin demoted since the hold no longer protects it with admin rank; auth is the
    one source of roles, as for the owner's rank."""
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, "adm-1", wallet.id)
    world.roles.roles["adm-1"] = Role.USER
    assert (await _unfreeze(world, "mod-1", wallet.id)).status is WalletStatus.ACTIVE


async def test_the_unfreeze_fails_closed_writing_nothing_while_auth_cannot_tell_the_setter() -> (
    None
):
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, "adm-1", wallet.id)

    class SetterUnknown(FakeUserRoles):
        async def role_of(self, user_id: str) -> Role:
            if user_id == "adm-1":
                raise UnavailableError("auth cannot tell")
            return await super().role_of(user_id)

    world.admin._roles = SetterUnknown(STAFF)
    before = world.snapshot()
    with pytest.raises(UnavailableError):
        await _unfreeze(world, "mod-1", wallet.id)
    assert world.snapshot() == before


async def test_a_staff_freeze_that_commits_while_the_setter_is_checked_aborts_the_change() -> None:
    """The setter is asked before the change's transaction (no lock held while auth
    answers); under the lock the freeze must be the one checked. Here a moderator's hold is
    replaced by an admin's while auth answers: the unfreeze is ABORTED and lifts nothing."""
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, "mod-1", wallet.id)
    repo = world.uow.wallets

    class AdminFreezesMeanwhile(FakeUserRoles):
        async def role_of(self, user_id: str) -> Role:
            if user_id == "mod-1":
                now = world.clock.now()
                hold = Freeze(FreezeSource.ADMIN, "fraud", now, None, "adm-1")
                repo.wallets[wallet.id] = repo.wallets[wallet.id].frozen(hold, now)
            return await super().role_of(user_id)

    world.admin._roles = AdminFreezesMeanwhile(STAFF)
    with pytest.raises(AbortedError):
        await _unfreeze(world, "mod-2", wallet.id)
    held = repo.wallets[wallet.id].freeze_by(FreezeSource.ADMIN)
    assert held is not None and held.set_by == "adm-1"
    world.admin._roles = FakeUserRoles(STAFF)
    with pytest.raises(FreezeHeldByHigherRankError):  # the retry sees the admin's hold
        await _unfreeze(world, "mod-2", wallet.id)


async def test_a_staff_freeze_that_commits_while_a_freeze_is_checked_aborts_it_too() -> None:
    """AdminFreezeWallet's replacement is checked the same way (proto: ABORTED)."""
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, "mod-1", wallet.id)
    repo = world.uow.wallets

    class AdminFreezesMeanwhile(FakeUserRoles):
        async def role_of(self, user_id: str) -> Role:
            if user_id == "mod-1":
                now = world.clock.now()
                hold = Freeze(FreezeSource.ADMIN, "fraud", now, None, "adm-1")
                repo.wallets[wallet.id] = repo.wallets[wallet.id].frozen(hold, now)
            return await super().role_of(user_id)

    world.admin._roles = AdminFreezesMeanwhile(STAFF)
    audited = len(world.uow.audit_entries)
    with pytest.raises(AbortedError) as err:
        await _freeze(world, "mod-2", wallet.id, note="mine")
    assert (err.value.kind, err.value.reason) == (ErrorKind.ABORTED, "ABORTED")
    held = repo.wallets[wallet.id].freeze_by(FreezeSource.ADMIN)
    assert held is not None and held.set_by == "adm-1"  # the admin's hold, not replaced
    assert len(world.uow.audit_entries) == audited


# ----- freeze: replacing the staff freeze in force -----------------------------------------


async def test_a_moderator_cannot_replace_an_admins_freeze_even_with_a_longer_one() -> None:
    """Replacing would make the hold the moderator's own, theirs to lift next."""
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, "adm-1", wallet.id, until=world.clock.now() + timedelta(days=1))
    before = world.snapshot()
    with pytest.raises(FreezeHeldByHigherRankError):
        await _freeze(world, "mod-1", wallet.id, until=None, note="mine now")
    assert world.snapshot() == before


@pytest.mark.parametrize(
    ("actor_role", "setter_role"),
    list(product(STAFF_ROLES, STAFF_ROLES)),
    ids=lambda role: role.name.lower(),
)
async def test_staff_replace_the_staff_freeze_of_a_colleague_of_no_higher_rank(
    actor_role: Role, setter_role: Role
) -> None:
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, FIRST[setter_role], wallet.id, note="first")
    actor = SECOND[actor_role]
    if setter_role > actor_role:
        with pytest.raises(FreezeHeldByHigherRankError):
            await _freeze(world, actor, wallet.id, note="second")
    else:
        replaced = await _freeze(world, actor, wallet.id, note="second")
        held = replaced.freeze_by(FreezeSource.ADMIN)
        assert held is not None and (held.note, held.set_by) == ("second", actor)


# ----- retries: a change that committed is answered its stored reply ----------------------


async def test_a_retried_unfreeze_gets_its_stored_reply_after_a_higher_rank_froze_again() -> None:
    """The review's case: a moderator's unfreeze committed, its reply was lost, and an admin
    then froze the wallet. The retry with the same request id is answered the stored reply
    (as kyc answers a retried decision that is no longer pending), not
    FREEZE_HELD_BY_HIGHER_RANK; the admin's hold stays and auth is not asked."""
    world = _world()
    wallet = await world.open_wallet("alice")
    await _freeze(world, "mod-2", wallet.id)
    unfreeze = AdminUnfreezeWallet("mod-1", Role.MODERATOR, wallet.id, "cleared", key("mod-1"))
    first = await world.admin.unfreeze_wallet(unfreeze)
    await _freeze(world, "adm-1", wallet.id, note="fraud hold")
    world.roles.asked.clear()
    before = world.snapshot()

    assert await world.admin.unfreeze_wallet(unfreeze) == first
    assert world.snapshot() == before and world.roles.asked == []
    held = world.uow.wallets.wallets[wallet.id].freeze_by(FreezeSource.ADMIN)
    assert held is not None and held.set_by == "adm-1"


async def test_a_retried_freeze_gets_its_stored_reply_after_a_higher_rank_replaced_it() -> None:
    world = _world()
    wallet = await world.open_wallet("alice")
    freeze = AdminFreezeWallet("mod-1", Role.MODERATOR, wallet.id, "hold", None, key("mod-1"))
    first = await world.admin.freeze_wallet(freeze)
    await _freeze(world, "adm-1", wallet.id, note="fraud hold")
    before = world.snapshot()
    assert await world.admin.freeze_wallet(freeze) == first
    assert world.snapshot() == before


async def test_a_retried_freeze_gets_its_stored_reply_after_its_end_passed() -> None:
    """The end had to be in the future when the freeze was made, not when it is retried."""
    world = _world()
    wallet = await world.open_wallet("alice")
    until = world.clock.now() + timedelta(hours=1)
    freeze = AdminFreezeWallet("mod-1", Role.MODERATOR, wallet.id, "hold", until, key("mod-1"))
    first = await world.admin.freeze_wallet(freeze)
    world.clock.advance(timedelta(hours=2))
    assert await world.admin.freeze_wallet(freeze) == first


async def test_a_new_request_after_a_higher_rank_froze_again_is_still_refused() -> None:
    """Only a retry of a committed change is replayed: the same unfreeze under a new
    request id is checked as any."""
    world = _world()
    wallet = await world.open_wallet("alice")
    await _unfreeze(world, "mod-1", wallet.id)
    await _freeze(world, "adm-1", wallet.id)
    with pytest.raises(FreezeHeldByHigherRankError):
        await _unfreeze(world, "mod-1", wallet.id)


# ----- a staff freeze that records no setter ----------------------------------------------


def _frozen_by_no_one(world: World, wallet_id: str) -> None:
    """A staff freeze as a row written outside the API leaves it: `set_by` empty."""
    repo, now = world.uow.wallets, world.clock.now()
    repo.wallets[wallet_id] = repo.wallets[wallet_id].frozen(
        Freeze(FreezeSource.ADMIN, "legacy hold", now), now
    )


@pytest.mark.parametrize("actor", ["mod-1", "adm-1"])
@pytest.mark.parametrize("change", [_unfreeze, _freeze], ids=["unfreeze", "replace"])
async def test_only_a_super_admin_overrides_a_staff_freeze_with_no_recorded_setter(
    actor: str, change: Callable[[World, str, str], Awaitable[Wallet]]
) -> None:
    """Its setter may have been a super_admin: below super_admin the change is refused with
    its own reason (not AUTH_UNAVAILABLE, which blamed auth), writes nothing, and auth is
    asked about the owner only, never about an empty id."""
    world = _world()
    wallet = await world.open_wallet("alice")
    _frozen_by_no_one(world, wallet.id)
    world.roles.asked.clear()
    before = world.snapshot()
    with pytest.raises(FreezeSetterUnknownError) as err:
        await change(world, actor, wallet.id)
    assert (err.value.kind, err.value.reason) == (
        ErrorKind.PERMISSION_DENIED,
        "FREEZE_SETTER_UNKNOWN",
    )
    assert world.snapshot() == before
    assert world.roles.asked == ["alice"]


async def test_a_super_admin_lifts_a_staff_freeze_with_no_recorded_setter() -> None:
    world = _world()
    wallet = await world.open_wallet("alice")
    _frozen_by_no_one(world, wallet.id)
    world.roles.asked.clear()
    lifted = await _unfreeze(world, "root-1", wallet.id)
    assert lifted.status is WalletStatus.ACTIVE and world.roles.asked == []


@pytest.mark.parametrize("role", STAFF_ROLES, ids=lambda role: role.name.lower())
def test_the_unrecorded_setter_rule_refuses_every_role_below_super_admin(role: Role) -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    unrecorded = Freeze(FreezeSource.ADMIN, "legacy hold", now)
    if role is Role.SUPER_ADMIN:
        check_setter_recorded(unrecorded, role)
    else:
        with pytest.raises(FreezeSetterUnknownError):
            check_setter_recorded(unrecorded, role)
    check_setter_recorded(Freeze(FreezeSource.ADMIN, "hold", now, None, "adm-1"), role)
