"""Staff reads of wallets are audited, as auth audits staff reads of users (ASVS 5.0 V16)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.context import Role
from vaultpay_wallet.domain.errors import WalletNotFoundError
from vaultpay_wallet.domain.model import KycTier, WalletStatus
from vaultpay_wallet.domain.staff_reads import StaffViewer
from vaultpay_wallet.service_layer.commands import AdminFreezeWallet
from vaultpay_wallet.service_layer.ports import WalletFilter

MOD = StaffViewer("mod-1", Role.MODERATOR, "203.0.113.5")


async def test_viewing_a_wallet_audits_who_saw_which_wallet_from_where_and_commits() -> None:
    world = World()
    wallet = await world.open_wallet("alice")
    world.uow.wallets.set_balance(wallet.id, 123_456)
    commits = world.uow.commits
    await world.admin.get_wallet(wallet.id, viewer=MOD)
    (entry,) = [e for e in world.uow.audit_entries if e.action == "wallet.viewed"]
    assert (entry.target_type, entry.target_id) == ("wallet", wallet.id)
    assert (entry.actor_id, entry.actor_role) == ("mod-1", "MODERATOR")
    assert dict(entry.details) == {"user_id": "alice", "ip": "203.0.113.5"}
    assert "123456" not in repr(entry)  # never the balance
    assert world.uow.commits == commits + 1  # kept, not rolled back with the read


async def test_a_staff_note_never_enters_the_audit_row_of_a_view() -> None:
    world = World()
    wallet = await world.open_wallet("alice")
    await world.admin.freeze_wallet(
        AdminFreezeWallet("adm", Role.ADMIN, wallet.id, "suspected mule account", None, key())
    )
    await world.admin.get_wallet(wallet.id, viewer=MOD)
    assert "mule" not in repr(world.uow.audit_entries[-1])


async def test_viewing_an_unknown_wallet_audits_nothing() -> None:
    world = World()
    before = world.snapshot()
    with pytest.raises(WalletNotFoundError):
        await world.admin.get_wallet("VPY-NOPE00", viewer=MOD)
    assert world.snapshot() == before


async def test_listing_wallets_audits_the_page_shown_and_its_filters() -> None:
    world = World()
    first = await world.open_wallet("alice")
    world.clock.advance(timedelta(seconds=1))
    second = await world.open_wallet("bob")
    page = await world.admin.list_wallets(WalletFilter(), None, 10, viewer=MOD)
    assert [w.id for w in page.wallets] == [second.id, first.id]
    entry = world.uow.audit_entries[-1]
    assert (entry.action, entry.target_type, entry.target_id) == ("wallets.listed", "wallets", "")
    assert (entry.actor_id, entry.actor_role) == ("mod-1", "MODERATOR")
    assert dict(entry.details) == {
        "count": "2",
        "wallet_ids": f"{second.id},{first.id}",
        "ip": "203.0.113.5",
    }

    flt = WalletFilter(status=WalletStatus.ACTIVE, kyc_tier=KycTier.NONE, user_id="alice")
    await world.admin.list_wallets(flt, None, 10, viewer=MOD)
    assert dict(world.uow.audit_entries[-1].details) == {
        "status": "ACTIVE",
        "kyc_tier": "NONE",
        "user_id": "alice",
        "count": "1",
        "wallet_ids": first.id,
        "ip": "203.0.113.5",
    }


async def test_an_empty_listing_is_audited_too() -> None:
    """Who searched for which user is worth keeping even when nothing matched."""
    world = World()
    await world.admin.list_wallets(WalletFilter(user_id="ghost"), None, 10, viewer=MOD)
    assert dict(world.uow.audit_entries[-1].details) == {
        "user_id": "ghost",
        "count": "0",
        "wallet_ids": "",
        "ip": "203.0.113.5",
    }
