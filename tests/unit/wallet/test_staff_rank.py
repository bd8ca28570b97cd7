"""The rank rule of staff changes of a wallet, pure and through the use cases with fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import product

import pytest

from tests.unit.wallet.wallet_world import World, key
from vaultpay_auth.domain.policies import check_may_manage
from vaultpay_common.context import Role
from vaultpay_common.errors import DomainError, ErrorKind, UnavailableError
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_wallet.domain.errors import StaffOutrankedError, StaffSelfActionError
from vaultpay_wallet.domain.limits import LimitAction
from vaultpay_wallet.domain.model import WalletStatus
from vaultpay_wallet.domain.staff import check_staff_outranks_owner
from vaultpay_wallet.service_layer.commands import (
    AdminFreezeWallet,
    AdminSetWalletLimits,
    AdminUnfreezeWallet,
    AmountInput,
    LimitValuesInput,
)

# Every (actor, owner) pair the rule allows; every other pair is refused.
ALLOWED = {
    (Role.MODERATOR, Role.USER),
    (Role.ADMIN, Role.USER),
    (Role.ADMIN, Role.MODERATOR),
    (Role.SUPER_ADMIN, Role.USER),
    (Role.SUPER_ADMIN, Role.MODERATOR),
    (Role.SUPER_ADMIN, Role.ADMIN),
    (Role.SUPER_ADMIN, Role.SUPER_ADMIN),
}


def _refusal(check: Callable[[], None]) -> str | None:
    """The reason `check` refuses with, or None when it allows."""
    try:
        check()
    except DomainError as exc:
        return exc.reason
    return None


def _allowed(actor: Role, owner: Role) -> bool:
    return _refusal(lambda: check_staff_outranks_owner(actor, owner)) is None


@pytest.mark.parametrize(("actor", "owner"), list(product(Role, Role)))
def test_staff_act_only_on_owners_ranked_below_them_and_super_admins_on_anyone(
    actor: Role, owner: Role
) -> None:
    assert _allowed(actor, owner) is ((actor, owner) in ALLOWED)


def test_the_refusal_is_auths_permission_denied_insufficient_permissions() -> None:
    with pytest.raises(StaffOutrankedError) as err:
        check_staff_outranks_owner(Role.MODERATOR, Role.ADMIN)
    assert (err.value.kind, err.value.reason) == (
        ErrorKind.PERMISSION_DENIED,
        "INSUFFICIENT_PERMISSIONS",
    )


@pytest.mark.parametrize(("actor", "owner"), list(product((Role.ADMIN, Role.SUPER_ADMIN), Role)))
def test_the_rule_agrees_with_auths_on_every_pair_auths_actions_admit(
    actor: Role, owner: Role
) -> None:
    """auth's SetUserRole/DeactivateUser are admin+; on those callers, deactivating a user
    (new_role None) is refused exactly when wallet refuses the same caller their wallet, and
    with the same reason."""
    auths = _refusal(
        lambda: check_may_manage(
            actor_id="a", actor_role=actor, target_id="t", target_role=owner, new_role=None
        )
    )
    wallets = _refusal(lambda: check_staff_outranks_owner(actor, owner))
    assert auths == wallets
    assert auths in {None, "INSUFFICIENT_PERMISSIONS"}


# ----- the use cases ---------------------------------------------------------------------

_LIMIT = LimitValuesInput(LimitAction.SEND, daily=AmountInput("INR", 5_000))
Call = Callable[[World, str, Role, str], Awaitable[object]]


def _freeze(world: World, actor: str, role: Role, wallet_id: str) -> Awaitable[object]:
    return world.admin.freeze_wallet(
        AdminFreezeWallet(actor, role, wallet_id, "r", None, key(actor))
    )


def _unfreeze(world: World, actor: str, role: Role, wallet_id: str) -> Awaitable[object]:
    return world.admin.unfreeze_wallet(AdminUnfreezeWallet(actor, role, wallet_id, "r", key(actor)))


def _set_limits(world: World, actor: str, role: Role, wallet_id: str) -> Awaitable[object]:
    return world.limits.admin_set_wallet_limits(
        AdminSetWalletLimits(actor, role, wallet_id, (_LIMIT,), "r", key(actor))
    )


ACTIONS = pytest.mark.parametrize(
    "act", [_freeze, _unfreeze, _set_limits], ids=["freeze", "unfreeze", "limits"]
)


async def _staff_wallet(world: World, owner: str, role: Role) -> str:
    world.roles.roles[owner] = role
    return (await world.open_wallet(owner)).id


@ACTIONS
@pytest.mark.parametrize(
    ("actor_role", "owner_role"),
    list(product((Role.MODERATOR, Role.ADMIN, Role.SUPER_ADMIN), Role)),
    ids=lambda role: role.name.lower(),
)
async def test_staff_change_a_wallet_only_when_they_outrank_its_owner(
    act: Call, actor_role: Role, owner_role: Role
) -> None:
    world = World()
    wallet_id = await _staff_wallet(world, "owner", owner_role)
    before, audited = world.snapshot(), len(world.uow.audit_entries)
    if (actor_role, owner_role) in ALLOWED:
        await act(world, "staffer", actor_role, wallet_id)
        assert len(world.uow.audit_entries) == audited + 1
    else:
        with pytest.raises(StaffOutrankedError) as err:
            await act(world, "staffer", actor_role, wallet_id)
        assert err.value.reason == "INSUFFICIENT_PERMISSIONS"
        assert world.snapshot() == before  # no change, no audit row, no idempotency record
    # A super_admin acts on anyone: auth's answer could not change it, so it is not asked.
    assert world.roles.asked == ([] if actor_role is Role.SUPER_ADMIN else ["owner"])


MOD = Role.MODERATOR
Retried = Callable[[World, str, IdempotencyKey], Awaitable[object]]
RETRIED = pytest.mark.parametrize(
    "act",
    [
        lambda w, wid, k: w.admin.freeze_wallet(AdminFreezeWallet("mod", MOD, wid, "r", None, k)),
        lambda w, wid, k: w.admin.unfreeze_wallet(AdminUnfreezeWallet("mod", MOD, wid, "r", k)),
        lambda w, wid, k: w.limits.admin_set_wallet_limits(
            AdminSetWalletLimits("mod", MOD, wid, (_LIMIT,), "r", k)
        ),
    ],
    ids=["freeze", "unfreeze", "limits"],
)


@RETRIED
async def test_a_retry_of_a_committed_change_gets_its_stored_reply_whatever_changed_since(
    act: Retried,
) -> None:
    """The change committed but its reply was lost; since then the owner was promoted above
    the moderator and auth went down. The retry with the same request id is answered the
    first reply, as every idempotent call is, not INSUFFICIENT_PERMISSIONS or
    AUTH_UNAVAILABLE; it writes nothing again and asks auth nothing."""
    world = World()
    wallet_id = (await world.open_wallet("alice")).id
    k = key("mod")
    first = await act(world, wallet_id, k)
    world.roles.roles["alice"] = Role.ADMIN
    world.roles.down = True
    world.roles.asked.clear()
    before = world.snapshot()
    assert await act(world, wallet_id, k) == first
    assert world.snapshot() == before and world.roles.asked == []


async def test_a_moderator_freezes_and_unfreezes_a_users_wallet() -> None:
    world = World()
    wallet_id = (await world.open_wallet("alice")).id
    frozen = await world.admin.freeze_wallet(
        AdminFreezeWallet("mod", Role.MODERATOR, wallet_id, "check", None, key("mod"))
    )
    assert frozen.status is WalletStatus.FROZEN
    lifted = await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet("mod", Role.MODERATOR, wallet_id, "ok", key("mod"))
    )
    assert lifted.status is WalletStatus.ACTIVE


@ACTIONS
@pytest.mark.parametrize("role", [Role.MODERATOR, Role.ADMIN], ids=lambda r: r.name.lower())
async def test_a_staff_change_fails_closed_writing_nothing_while_auth_is_down(
    act: Call, role: Role
) -> None:
    world = World()
    wallet_id = (await world.open_wallet("alice")).id
    world.roles.down = True
    before = world.snapshot()
    with pytest.raises(UnavailableError) as err:
        await act(world, "staffer", role, wallet_id)
    assert err.value.kind is ErrorKind.UNAVAILABLE
    assert world.snapshot() == before


@ACTIONS
async def test_a_super_admin_changes_a_wallet_while_auth_is_down_asking_it_nothing(
    act: Call,
) -> None:
    """Whatever the owner's role, a super_admin outranks them: auth being down (or not
    knowing the owner) cannot stop the one role the rank rule never refuses."""
    world = World()
    wallet_id = await _staff_wallet(world, "root-2", Role.SUPER_ADMIN)
    world.roles.down = True
    audited = len(world.uow.audit_entries)
    await act(world, "root", Role.SUPER_ADMIN, wallet_id)
    assert len(world.uow.audit_entries) == audited + 1
    assert world.roles.asked == []


@ACTIONS
async def test_acting_on_ones_own_wallet_is_refused_as_before_without_asking_auth(
    act: Call,
) -> None:
    world = World()
    wallet_id = await _staff_wallet(world, "admin", Role.ADMIN)
    world.roles.down = True  # not needed to refuse it
    before = world.snapshot()
    with pytest.raises(StaffSelfActionError):
        await act(world, "admin", Role.ADMIN, wallet_id)
    assert world.snapshot() == before and world.roles.asked == []


async def test_a_wallet_built_without_a_role_source_refuses_staff_changes() -> None:
    """The default of AdminService and LimitsService fails closed rather than skip the rule
    (for every caller it must ask: a super_admin's changes ask nothing)."""
    from vaultpay_wallet.service_layer.admin import AdminService
    from vaultpay_wallet.service_layer.limits import LimitsService

    world = World()
    wallet_id = (await world.open_wallet("alice")).id
    factory = lambda: world.uow  # noqa: E731
    limits = LimitsService(factory, world.clock, world.usage)
    admin = AdminService(
        factory, world.clock, limits, world.trusted_ips, world.transfer_stats, world.kyc_stats
    )
    before = world.snapshot()
    for call in (
        lambda: admin.freeze_wallet(
            AdminFreezeWallet("adm", Role.ADMIN, wallet_id, "r", None, key("adm"))
        ),
        lambda: limits.admin_set_wallet_limits(
            AdminSetWalletLimits("adm", Role.ADMIN, wallet_id, (_LIMIT,), "r", key("adm"))
        ),
    ):
        with pytest.raises(UnavailableError):
            await call()
    assert world.snapshot() == before
