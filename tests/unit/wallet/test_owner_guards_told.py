"""An owner's own guards (a self-freeze after losing a phone, a limit set lower than the
defaults) loosened from their session are told on every device and audited (wallet review of
2026-12-04 night): whoever holds a stolen session could otherwise undo them silently."""

from __future__ import annotations

from tests.unit.wallet.wallet_world import World, key
from vaultpay_wallet.domain.model import KycTier
from vaultpay_wallet.service_layer.commands import (
    AmountInput,
    DeleteMyLimit,
    FreezeMyWallet,
    SetKycTier,
    SetMyLimit,
    UnfreezeMyWallet,
)
from vaultpay_wallet.service_layer.notify import NOTIFICATION_TOPIC

INR = "INR"


def _security_titles(world: World) -> list[str]:
    return [
        str(m.payload["title"])
        for m in world.uow.outbox.of_topic(NOTIFICATION_TOPIC)
        if m.payload["kind"] == "SECURITY"
    ]


def _actions(world: World) -> list[str]:
    return [entry.action for entry in world.uow.audit_entries]


async def _basic(world: World) -> None:
    await world.open_wallet("alice")
    await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.BASIC, "sub-1", key("service:kyc")))


def _daily(amount: int | None) -> SetMyLimit:
    daily = None if amount is None else AmountInput(INR, amount)
    return SetMyLimit("alice", "send", AmountInput(INR, 100), daily, None, key())


async def test_lifting_ones_own_freeze_is_told_as_a_security_notice() -> None:
    world = World()
    await world.open_wallet("alice")
    await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", "lost my phone", key()))
    assert _security_titles(world) == []
    await world.wallets.unfreeze_my_wallet(UnfreezeMyWallet("alice", key()))
    assert _security_titles(world) == ["Your wallet was unfrozen"]
    await world.wallets.unfreeze_my_wallet(UnfreezeMyWallet("alice", key()))  # not frozen
    assert _security_titles(world) == ["Your wallet was unfrozen"]


async def test_raising_ones_own_limit_is_told_and_lowering_it_only_audited() -> None:
    world = World()
    await _basic(world)
    await world.limits.set_my_limit(_daily(5_000))  # a first guard
    await world.limits.set_my_limit(_daily(1_000))  # tighter
    assert _security_titles(world) == []
    assert _actions(world).count("wallet.own_limit_set") == 2
    await world.limits.set_my_limit(_daily(9_000))  # looser
    assert _security_titles(world) == ["Your own limit was raised"]
    await world.limits.set_my_limit(_daily(None))  # the daily cap dropped: looser again
    assert _security_titles(world) == ["Your own limit was raised"] * 2
    assert _actions(world).count("wallet.own_limit_set") == 4


async def test_removing_ones_own_limit_is_told_and_audited_and_nothing_to_remove_is_not() -> None:
    world = World()
    await _basic(world)
    await world.limits.delete_my_limit(DeleteMyLimit("alice", "send", key()))
    assert (_security_titles(world), _actions(world).count("wallet.own_limit_removed")) == ([], 0)
    await world.limits.set_my_limit(_daily(5_000))
    await world.limits.delete_my_limit(DeleteMyLimit("alice", "send", key()))
    assert _security_titles(world) == ["Your own limit was raised"]
    assert _actions(world).count("wallet.own_limit_removed") == 1
