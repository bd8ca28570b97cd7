"""Limits, staff actions, settings and the internal use cases against fakes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import json_time
from tests.unit.wallet.wallet_world import STAFF, World, key
from vaultpay_common.context import Role
from vaultpay_common.errors import ErrorKind, ValidationError
from vaultpay_wallet.domain.errors import (
    SettingNotFoundError,
    StaffSelfActionError,
    WalletAlreadyFrozenError,
    WalletNotFoundError,
)
from vaultpay_wallet.domain.limits import (
    ActionLimitsView,
    ActionUsage,
    LimitAction,
    LimitSource,
    LimitView,
)
from vaultpay_wallet.domain.model import KycTier, WalletStatus
from vaultpay_wallet.domain.staff_reads import StaffViewer
from vaultpay_wallet.service_layer.commands import (
    AdminFreezeWallet,
    AdminSetWalletLimits,
    AdminUnfreezeWallet,
    AmountInput,
    DeleteMyLimit,
    LimitValuesInput,
    SetKycTier,
    SetMyLimit,
    UpdateSetting,
)
from vaultpay_wallet.service_layer.ports import LimitOverrideFilter, TransferStats, WalletFilter

INR = "INR"


async def _basic(world: World, user: str = "alice") -> str:
    wallet = await world.open_wallet(user)
    await world.kyc.set_kyc_tier(SetKycTier(user, KycTier.BASIC, "sub-1", key("service:kyc")))
    return wallet.id


async def test_a_user_may_lower_a_limit_but_not_raise_it() -> None:
    world = World()
    await _basic(world)
    lowered = await world.limits.set_my_limit(
        SetMyLimit("alice", "send", None, AmountInput(INR, 50_000), None, key())
    )
    assert (lowered.daily.amount_minor, lowered.daily.source) == (50_000, LimitSource.USER)
    assert lowered.per_transaction.source is LimitSource.TIER_DEFAULT
    before = world.snapshot()
    with pytest.raises(ValidationError) as err:
        await world.limits.set_my_limit(
            SetMyLimit("alice", "send", None, AmountInput(INR, 10**11), None, key())
        )
    assert err.value.violations[0].field == "daily"
    assert world.snapshot() == before


@pytest.mark.parametrize(
    ("action", "amount", "field"),
    [
        ("fly", AmountInput(INR, 1), "action"),
        ("send", AmountInput(INR, 0), "daily.amount_minor"),
        ("send", AmountInput("USD", 1), "daily.currency_code"),
    ],
)
async def test_bad_limit_input_names_the_field(
    action: str, amount: AmountInput, field: str
) -> None:
    world = World()
    await _basic(world)
    with pytest.raises(ValidationError) as err:
        await world.limits.set_my_limit(SetMyLimit("alice", action, None, amount, None, key()))
    assert err.value.violations[0].field == field


async def test_delete_my_limit_goes_back_to_the_tier_default() -> None:
    world = World()
    await _basic(world)
    await world.limits.set_my_limit(
        SetMyLimit("alice", "top_up", AmountInput(INR, 5), None, None, key())
    )
    restored = await world.limits.delete_my_limit(DeleteMyLimit("alice", "top_up", key()))
    assert restored.per_transaction.source is LimitSource.TIER_DEFAULT


async def test_an_admin_override_replaces_the_set_and_caps_the_users_ceiling() -> None:
    world = World()
    wallet_id = await _basic(world)
    limits = await world.limits.admin_set_wallet_limits(
        AdminSetWalletLimits(
            "staff",
            Role.ADMIN,
            wallet_id,
            (LimitValuesInput(LimitAction.SEND, daily=AmountInput(INR, 7_000)),),
            "risk review",
            key("staff"),
        )
    )
    send = next(v for v in limits if v.action is LimitAction.SEND)
    assert (send.daily.amount_minor, send.daily.source) == (7_000, LimitSource.ADMIN_OVERRIDE)
    assert world.uow.audit_entries[-1].action == "wallet.limits_overridden"
    with pytest.raises(ValidationError):
        await world.limits.set_my_limit(
            SetMyLimit("alice", "send", None, AmountInput(INR, 7_001), None, key())
        )
    viewer = StaffViewer("staff", Role.ADMIN, "198.51.100.7")
    page = await world.limits.admin_list_limits(
        LimitOverrideFilter(action=LimitAction.SEND), None, 10, viewer=viewer
    )
    assert [r.override.source for r in page.overrides] == [LimitSource.ADMIN_OVERRIDE]
    listed = world.uow.audit_entries[-1]  # the read is audited, with what it showed
    assert (listed.action, listed.actor_id) == ("limits.listed", "staff")
    assert listed.details == {
        "action": "send",
        "count": "1",
        "wallet_ids": wallet_id,
        "ip": "198.51.100.7",
    }
    # PUT semantics: an empty set removes every override
    await world.limits.admin_set_wallet_limits(
        AdminSetWalletLimits("staff", Role.ADMIN, wallet_id, (), "undo", key("staff"))
    )
    emptied = await world.limits.admin_list_limits(LimitOverrideFilter(), None, 10, viewer=viewer)
    assert emptied.overrides == ()


async def test_admin_limits_need_a_reason_and_one_entry_per_action() -> None:
    world = World()
    wallet_id = await _basic(world)
    entry = LimitValuesInput(LimitAction.SEND, daily=AmountInput(INR, 1))
    with pytest.raises(ValidationError) as no_reason:
        await world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits("s", Role.ADMIN, wallet_id, (entry,), " ", key("s"))
        )
    assert no_reason.value.violations[0].field == "reason"
    with pytest.raises(ValidationError) as twice:
        await world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits("s", Role.ADMIN, wallet_id, (entry, entry), "r", key("s"))
        )
    assert twice.value.violations[0].field == "limits[1].action"


async def test_admin_limits_name_every_bad_field_at_once_before_auth_is_asked() -> None:
    world = World()
    wallet_id = await _basic(world)
    world.roles.down = True  # a refusal the request alone shows does not wait on auth
    entries = (
        LimitValuesInput(LimitAction.SEND, per_transaction=AmountInput(INR, -5)),
        LimitValuesInput(LimitAction.SEND, daily=AmountInput(INR, 9_223_372_036_854_775_807)),
        LimitValuesInput(LimitAction.WITHDRAW),
        LimitValuesInput(
            LimitAction.TOP_UP, per_transaction=AmountInput(INR, 10), daily=AmountInput(INR, 5)
        ),
    )
    before = world.snapshot()
    with pytest.raises(ValidationError) as err:
        await world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits("staff", Role.ADMIN, wallet_id, entries, " ", key("staff"))
        )
    assert [v.field for v in err.value.violations] == [
        "reason",
        "limits[0].per_transaction.amount_minor",
        "limits[1].action",
        "limits[1].daily.amount_minor",
        "limits[2]",
        "limits[3].daily",
    ]
    assert world.roles.asked == []
    assert world.snapshot() == before


async def test_one_bad_window_hides_no_order_error_between_the_other_two() -> None:
    """Review of 1935c5d: a bad window skipped the order check of the whole entry, so
    `perTransaction=0, daily=500, monthly=100` named only the first; each is named now."""
    world = World()
    wallet_id = await _basic(world)
    entry = LimitValuesInput(
        LimitAction.SEND,
        per_transaction=AmountInput(INR, 0),
        daily=AmountInput(INR, 500),
        monthly=AmountInput(INR, 100),
    )
    with pytest.raises(ValidationError) as staff:
        await world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits("staff", Role.ADMIN, wallet_id, (entry,), "r", key("staff"))
        )
    assert [v.field for v in staff.value.violations] == [
        "limits[0].per_transaction.amount_minor",
        "limits[0].monthly",
    ]
    with pytest.raises(ValidationError) as own:
        await world.limits.set_my_limit(
            SetMyLimit(
                "alice",
                "send",
                AmountInput(INR, 0),
                AmountInput(INR, 500),
                AmountInput(INR, 100),
                key(),
            )
        )
    assert [v.field for v in own.value.violations] == [
        "per_transaction.amount_minor",
        "monthly",
    ]


async def test_an_action_the_entrypoint_refused_is_named_with_the_other_bad_fields() -> None:
    world = World()
    wallet_id = await _basic(world)
    unknown = ValidationError.single("limits[0].action", "is not a known limit action")
    entry = LimitValuesInput(unknown, daily=AmountInput(INR, -1))
    with pytest.raises(ValidationError) as err:
        await world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits("staff", Role.ADMIN, wallet_id, (entry,), "", key("staff"))
        )
    assert [v.field for v in err.value.violations] == [
        "reason",
        "limits[0].action",
        "limits[0].daily.amount_minor",
    ]


async def test_a_committed_overrides_retry_replays_though_a_bound_now_refuses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review of 1935c5d: the bound ran before the stored-answer lookup, so a change that
    committed before the bound existed (its reply lost) was answered 400 on its retry."""
    world = World()
    wallet_id = await _basic(world)
    entry = LimitValuesInput(LimitAction.SEND, daily=AmountInput(INR, 5_000))
    change = AdminSetWalletLimits("staff", Role.ADMIN, wallet_id, (entry,), "r", key("staff"))
    first = await world.limits.admin_set_wallet_limits(change)
    monkeypatch.setattr("vaultpay_wallet.service_layer.limits.MAX_LIMIT_MINOR", 1_000)
    world.roles.down = True  # nor is auth asked for a replay
    assert await world.limits.admin_set_wallet_limits(change) == first
    fresh = AdminSetWalletLimits("staff", Role.ADMIN, wallet_id, (entry,), "r", key("staff"))
    with pytest.raises(ValidationError):
        await world.limits.admin_set_wallet_limits(fresh)


async def test_an_override_above_the_largest_limit_is_refused() -> None:
    world = World()
    wallet_id = await _basic(world)
    too_much = AmountInput(INR, 10**12 + 1)
    with pytest.raises(ValidationError) as admin:
        await world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits(
                "staff",
                Role.ADMIN,
                wallet_id,
                (LimitValuesInput(LimitAction.SEND, monthly=too_much),),
                "typo",
                key("staff"),
            )
        )
    assert admin.value.violations[0].field == "limits[0].monthly.amount_minor"
    with pytest.raises(ValidationError) as own:
        await world.limits.set_my_limit(SetMyLimit("alice", "send", None, None, too_much, key()))
    assert own.value.violations[0].field == "monthly.amount_minor"


async def test_the_audit_row_of_an_override_names_the_set_it_replaced() -> None:
    world = World()
    wallet_id = await _basic(world)
    clamp = LimitValuesInput(LimitAction.SEND, per_transaction=AmountInput(INR, 1))
    await world.limits.admin_set_wallet_limits(
        AdminSetWalletLimits("admin-a", Role.ADMIN, wallet_id, (clamp,), "fraud 42", key("a"))
    )
    world.roles.roles["admin-a"] = Role.ADMIN
    other = LimitValuesInput(LimitAction.WITHDRAW, daily=AmountInput(INR, 5_000))
    await world.limits.admin_set_wallet_limits(
        AdminSetWalletLimits("admin-b", Role.ADMIN, wallet_id, (other,), "payouts", key("b"))
    )
    row = world.uow.audit_entries[-1]
    assert row.action == "wallet.limits_overridden"
    assert row.details["limits"] == "withdraw:per_transaction=-,daily=5000,monthly=-"
    assert row.details["replaced"] == "send:per_transaction=1,daily=-,monthly=- by admin-a"


async def test_usage_is_joined_with_the_caps() -> None:
    world = World()
    await _basic(world)
    world.usage.used = [ActionUsage(LimitAction.SEND, 1_000, 5_000)]
    result = await world.limits.get_limits("alice")
    send = next(v for v in result.limits if v.action is LimitAction.SEND)
    assert send.daily.used_minor == 1_000
    assert send.daily.remaining_minor == send.daily.amount_minor - 1_000
    assert send.daily.reset_at is not None and send.per_transaction.reset_at is None


async def test_the_resets_follow_the_time_transfer_counted_the_usage_by() -> None:
    """Transfer counts the windows by the database's clock and says when it read them; a
    wallet host a few seconds ahead, already past midnight in Kolkata, must not show today's
    usage with tomorrow's reset (nor the month's end of the next month)."""
    world = World()
    await _basic(world)
    world.usage.used = [ActionUsage(LimitAction.SEND, 1_000, 5_000)]
    # 30 November, 23:59:58 in Kolkata by the database; 1 December, 00:00:01 by this host.
    world.usage.read_at = datetime(2026, 11, 30, 18, 29, 58, tzinfo=UTC)
    world.clock.current = datetime(2026, 11, 30, 18, 30, 1, tzinfo=UTC)
    send = next(
        v for v in (await world.limits.get_limits("alice")).limits if v.action is LimitAction.SEND
    )
    assert send.daily.reset_at == datetime(2026, 11, 30, 18, 30, tzinfo=UTC)
    assert send.monthly.reset_at == datetime(2026, 11, 30, 18, 30, tzinfo=UTC)
    # Usage unknown (transfer down): this host's clock places the resets.
    world.usage.down = True
    send = next(
        v for v in (await world.limits.get_limits("alice")).limits if v.action is LimitAction.SEND
    )
    assert send.daily.reset_at == datetime(2026, 12, 1, 18, 30, tzinfo=UTC)


def _view(
    per_tx: int, daily: tuple[int, int | None], monthly: tuple[int, int | None]
) -> ActionLimitsView:
    def window(cap: int, used: int | None) -> LimitView:
        remaining = None if used is None else max(0, cap - used)
        return LimitView(cap, LimitSource.TIER_DEFAULT, used, remaining, None)

    return ActionLimitsView(
        LimitAction.SEND,
        "INR",
        LimitView(per_tx, LimitSource.TIER_DEFAULT, None, per_tx, None),
        window(*daily),
        window(*monthly),
    )


@pytest.mark.parametrize(
    ("per_tx", "daily", "monthly", "available"),
    [
        (5_000, (20_000, 0), (50_000, 0), 5_000),  # the per-transaction cap
        (5_000, (20_000, 17_000), (50_000, 17_000), 3_000),  # what is left of the day
        (5_000, (20_000, 0), (12_000, 11_127), 873),  # a month nearly used up caps the day
        (5_000, (20_000, None), (50_000, None), None),  # usage unknown
    ],
)
def test_what_the_limits_let_through_now_is_the_smallest_of_the_three(
    per_tx: int,
    daily: tuple[int, int | None],
    monthly: tuple[int, int | None],
    available: int | None,
) -> None:
    """QA: GetLimits showed a day's remaining of 19,988,873 while the month (the user's own
    lower cap) had 873 left; `available` is what a send may move now."""
    assert _view(per_tx, daily, monthly).available_minor == available


async def test_a_setting_change_applies_to_the_next_read_and_is_audited() -> None:
    world = World()
    await _basic(world)
    updated = await world.settings.update_setting(
        UpdateSetting("root", "limits.tier_basic.send.daily", "4200000", "promo", key("root"))
    )
    assert (updated.value, updated.updated_by) == ("4200000", "root")
    caps = await world.limits.effective_limits(
        (await world.wallets.get_my_wallet("alice")).wallet.id
    )
    send = next(c for c in caps.limits if c.action is LimitAction.SEND)
    assert send.daily.amount_minor == 4_200_000
    entry = world.uow.audit_entries[-1]
    assert entry.action == "setting.updated"
    assert entry.details["new_value"] == "4200000"
    with pytest.raises(SettingNotFoundError):
        await world.settings.update_setting(UpdateSetting("root", "nope", "1", "", key("root")))
    with pytest.raises(ValidationError) as err:
        await world.settings.update_setting(
            UpdateSetting("root", "limits.tier_basic.send.daily", "-5", "promo", key("root"))
        )
    assert err.value.violations[0].field == "value"


async def test_settings_are_listed_by_key_with_a_prefix_and_pages() -> None:
    world = World()
    page = await world.settings.list_settings("limits.tier_full.", "", 5)
    assert len(page.settings) == 5 and page.has_more
    keys = [s.key for s in page.settings]
    assert keys == sorted(keys)
    rest = await world.settings.list_settings("limits.tier_full.", keys[-1], 100)
    assert len(keys) + len(rest.settings) == 9 and not rest.has_more


async def test_admin_freeze_needs_a_reason_and_a_future_end_and_notifies_the_owner() -> None:
    world = World()
    wallet_id = await _basic(world)
    with pytest.raises(ValidationError) as err:
        await world.admin.freeze_wallet(
            AdminFreezeWallet("s", Role.ADMIN, wallet_id, "", None, key("s"))
        )
    assert err.value.violations[0].field == "reason"
    past = world.clock.now() - timedelta(minutes=1)
    with pytest.raises(ValidationError) as err2:
        await world.admin.freeze_wallet(
            AdminFreezeWallet("s", Role.ADMIN, wallet_id, "r", past, key("s"))
        )
    assert err2.value.violations[0].field == "until_time"
    with pytest.raises(WalletNotFoundError):
        await world.admin.freeze_wallet(
            AdminFreezeWallet("s", Role.ADMIN, "VPY-ZZZZZZ", "r", None, key("s"))
        )
    await world.admin.freeze_wallet(
        AdminFreezeWallet("s", Role.ADMIN, wallet_id, "r", None, key("s"))
    )
    (note,) = world.uow.outbox.of_topic("notification.create")
    assert note.payload["user_id"] == "alice" and note.payload["kind"] == "WALLET_STATUS"


async def test_a_staff_freeze_never_shortens_the_staff_freeze_in_force() -> None:
    """A fraud hold with no end is not undone by another staff member's timed freeze (the
    payout worker would pay a held withdrawal once the short one lapsed); a freeze that
    lasts at least as long replaces it, and a lapsed one is no obstacle."""
    world = World()
    wallet_id = await _basic(world)

    async def freeze(reason: str, until: datetime | None) -> None:
        await world.admin.freeze_wallet(
            AdminFreezeWallet("s", Role.ADMIN, wallet_id, reason, until, key("s"))
        )

    async def freeze_in_force() -> tuple[str, datetime | None]:
        view = await world.admin.get_wallet(wallet_id, viewer=STAFF)
        shown = view.wallet.displayed_freeze
        assert shown is not None
        return shown.note, shown.until

    soon = world.clock.now() + timedelta(hours=1)
    later = world.clock.now() + timedelta(hours=2)
    await freeze("fraud hold", None)
    with pytest.raises(WalletAlreadyFrozenError) as refused:
        await freeze("short look", soon)
    assert refused.value.metadata == {"until": ""}
    assert "with no end" in str(refused.value)
    assert await freeze_in_force() == ("fraud hold", None)
    await freeze("still held", None)  # as long: replaces it
    assert await freeze_in_force() == ("still held", None)

    await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet("s", Role.ADMIN, wallet_id, "cleared", key("s"))
    )
    await freeze("two hours", later)
    with pytest.raises(WalletAlreadyFrozenError) as shorter:
        await freeze("one hour", soon)
    # The API's one form of a time (proto3 JSON's, `…Z`), in the metadata and the message.
    assert shorter.value.metadata == {"until": json_time(later)}
    assert f"until {json_time(later)};" in str(shorter.value)
    await freeze("for good", None)  # longer: replaces it
    assert await freeze_in_force() == ("for good", None)

    await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet("s", Role.ADMIN, wallet_id, "cleared", key("s"))
    )
    await freeze("one hour", soon)
    world.clock.advance(timedelta(hours=1, seconds=1))  # lapsed, the sweep not run yet
    await freeze("another", world.clock.now() + timedelta(minutes=5))
    assert (await freeze_in_force())[0] == "another"


async def test_admin_views_list_get_and_stats() -> None:
    world = World()
    first = await _basic(world, "alice")
    world.clock.advance(timedelta(seconds=1))
    second = await world.open_wallet("bob")
    page = await world.admin.list_wallets(WalletFilter(), None, 1, viewer=STAFF)
    assert [w.id for w in page.wallets] == [second.id] and page.has_more
    last = page.wallets[-1]
    page2 = await world.admin.list_wallets(
        WalletFilter(), (last.created_at, last.id), 1, viewer=STAFF
    )
    assert [w.id for w in page2.wallets] == [first] and not page2.has_more
    only_basic = await world.admin.list_wallets(
        WalletFilter(kyc_tier=KycTier.BASIC), None, 10, viewer=STAFF
    )
    assert [w.id for w in only_basic.wallets] == [first]

    world.trusted_ips.broken = True
    view = await world.admin.get_wallet(first, viewer=STAFF)
    assert view.trusted_ip_count is None and view.failed_pin_attempts == 0

    world.uow.wallets.set_balance(first, 500)
    world.transfer_stats.value = TransferStats(1, (), 2, (), 0)
    stats = await world.admin.system_stats()
    assert (stats.wallet_count, stats.active_wallet_count) == (2, 2)
    assert [(b.currency, b.amount_minor) for b in stats.total_balances] == [("INR", 500)]
    assert stats.transfer is not None and stats.pending_kyc_count is None


async def test_set_kyc_tier_is_idempotent_by_event_id_and_audited() -> None:
    world = World()
    await world.open_wallet()
    k = key("service:kyc")
    first = await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.FULL, "sub-9", k))
    again = await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.FULL, "sub-9", k))
    assert first == again and first.kyc_tier is KycTier.FULL
    tier_events = [e for e in world.uow.audit_entries if e.action == "wallet.kyc_tier_set"]
    assert len(tier_events) == 1 and tier_events[0].details["submission_id"] == "sub-9"
    with pytest.raises(ValidationError) as err:
        await world.kyc.set_kyc_tier(SetKycTier("alice", None, "s", key("service:kyc")))
    assert err.value.violations[0].field == "kyc_tier"
    assert first.status is WalletStatus.ACTIVE


async def test_set_kyc_tier_raises_none_basic_full_each_audited() -> None:
    world = World()
    await world.open_wallet()
    basic = await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.BASIC, "sub-1", key("kyc")))
    full = await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.FULL, "sub-2", key("kyc")))
    same = await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.FULL, "sub-2", key("kyc")))
    assert (basic.kyc_tier, full.kyc_tier, same.kyc_tier) == (KycTier.BASIC,) + (KycTier.FULL,) * 2
    assert [
        (e.details["old_tier"], e.details["new_tier"], e.details["submission_id"])
        for e in world.uow.audit_entries
        if e.action == "wallet.kyc_tier_set"
    ] == [("NONE", "BASIC", "sub-1"), ("BASIC", "FULL", "sub-2"), ("FULL", "FULL", "sub-2")]


async def test_a_late_lower_tier_keeps_the_wallet_and_is_audited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kyc's events arrive in any order: a BASIC call in flight may land after the FULL one.
    It is answered with the wallet unchanged (settled, not dead-lettered), and replays the
    same answer under its request id."""
    world = World()
    await world.open_wallet()
    full = await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.FULL, "sub-2", key("kyc")))
    stored = world.uow.wallets.wallets[full.id]
    late_key = key("kyc")
    with caplog.at_level(logging.INFO, logger="vaultpay_wallet.service_layer.internal"):
        late = await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.BASIC, "sub-1", late_key))
    assert late.kyc_tier is KycTier.FULL and late == full
    assert world.uow.wallets.wallets[full.id] == stored  # not written, not even updated_at
    kept = [e for e in world.uow.audit_entries if e.action == "wallet.kyc_tier_kept"]
    assert [(e.target_id, dict(e.details)) for e in kept] == [
        (full.id, {"old_tier": "FULL", "asked_tier": "BASIC", "submission_id": "sub-1"})
    ]
    assert [e.action for e in world.uow.audit_entries].count("wallet.kyc_tier_set") == 1
    assert any(r.levelno == logging.INFO and "kept" in r.getMessage() for r in caplog.records)
    before = world.snapshot()
    again = await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.BASIC, "sub-1", late_key))
    assert again == late and world.snapshot() == before
    none = await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.NONE, "sub-0", key("kyc")))
    assert none.kyc_tier is KycTier.FULL


async def test_staff_never_change_their_own_wallet_through_the_admin_api() -> None:
    world = World()
    own = await _basic(world, "mod")
    await world.admin.freeze_wallet(
        AdminFreezeWallet("root", Role.SUPER_ADMIN, own, "risk", None, key("root"))
    )
    entry = LimitValuesInput(LimitAction.SEND, daily=AmountInput(INR, 10**12))
    before = world.snapshot()
    refused: list[Callable[[], Awaitable[object]]] = [
        lambda: world.admin.unfreeze_wallet(
            AdminUnfreezeWallet("mod", Role.MODERATOR, own, "mine", key("mod"))
        ),
        lambda: world.admin.freeze_wallet(
            AdminFreezeWallet("mod", Role.MODERATOR, own, "r", None, key("mod"))
        ),
        lambda: world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits("mod", Role.MODERATOR, own, (entry,), "raise", key("mod"))
        ),
        lambda: world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits("mod", Role.MODERATOR, own, (), "r", key("mod"))
        ),
    ]
    for call in refused:
        with pytest.raises(StaffSelfActionError) as err:
            await call()
        assert err.value.reason == "CANNOT_MODIFY_SELF"
        assert err.value.kind is ErrorKind.PERMISSION_DENIED
    assert world.snapshot() == before
    lifted = await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet("root", Role.SUPER_ADMIN, own, "ok", key("root"))
    )
    assert lifted.status is WalletStatus.ACTIVE


def _admin_entry(per_tx: int | None, daily: int | None, monthly: int | None) -> LimitValuesInput:
    def amount(value: int | None) -> AmountInput | None:
        return None if value is None else AmountInput(INR, value)

    return LimitValuesInput(LimitAction.SEND, amount(per_tx), amount(daily), amount(monthly))


@pytest.mark.parametrize(
    ("windows", "field", "description"),
    [
        ((5_000, 1_000, None), "limits[0].daily", "must be at least per_transaction"),
        ((None, 9_000, 8_000), "limits[0].monthly", "must be at least daily"),
        ((5_000, None, 4_000), "limits[0].monthly", "must be at least per_transaction"),
    ],
)
async def test_admin_limits_of_one_action_must_be_in_order(
    windows: tuple[int | None, int | None, int | None], field: str, description: str
) -> None:
    world = World()
    wallet_id = await _basic(world)
    before = world.snapshot()
    with pytest.raises(ValidationError) as err:
        await world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits(
                "s", Role.ADMIN, wallet_id, (_admin_entry(*windows),), "r", key("s")
            )
        )
    assert [(v.field, v.description) for v in err.value.violations] == [(field, description)]
    assert world.snapshot() == before
    # A window lowered alone, under the tier's per-transaction default, is fine.
    await world.limits.admin_set_wallet_limits(
        AdminSetWalletLimits(
            "s", Role.ADMIN, wallet_id, (_admin_entry(None, 100, None),), "r", key("s")
        )
    )


async def test_a_users_own_limits_must_be_in_order_and_name_a_window() -> None:
    world = World()
    await _basic(world)
    await world.limits.set_my_limit(
        SetMyLimit("alice", "send", None, AmountInput(INR, 50_000), None, key())
    )
    before = world.snapshot()
    with pytest.raises(ValidationError) as disorder:
        await world.limits.set_my_limit(
            SetMyLimit("alice", "send", AmountInput(INR, 600), AmountInput(INR, 500), None, key())
        )
    assert [v.field for v in disorder.value.violations] == ["daily"]
    # QA of 2026-12-03: a PUT with no window silently deleted the user's own limits.
    with pytest.raises(ValidationError) as empty:
        await world.limits.set_my_limit(SetMyLimit("alice", "send", None, None, None, key()))
    assert [v.field for v in empty.value.violations] == ["per_transaction", "daily", "monthly"]
    assert world.snapshot() == before


@pytest.mark.parametrize(
    ("setting", "value", "description"),
    [
        (
            "limits.tier_basic.send.daily",
            "10",
            "must be at least limits.tier_basic.send.per_transaction (1000000)",
        ),
        (
            "limits.tier_basic.send.per_transaction",
            "2500001",
            "must be at most limits.tier_basic.send.daily (2500000)",
        ),
        (
            "limits.tier_full.top_up.monthly",
            "19999999",
            "must be at least limits.tier_full.top_up.daily (20000000)",
        ),
    ],
)
async def test_a_tier_default_must_stay_in_order_with_its_other_windows(
    setting: str, value: str, description: str
) -> None:
    world = World()
    before = world.snapshot()
    with pytest.raises(ValidationError) as err:
        await world.settings.update_setting(
            UpdateSetting("root", setting, value, "test", key("root"))
        )
    assert [(v.field, v.description) for v in err.value.violations] == [("value", description)]
    assert world.snapshot() == before


async def test_a_lapsed_timed_freeze_counts_as_lifted_in_the_list_filter_and_figures() -> None:
    world = World()
    wallet_id = await _basic(world)
    until = world.clock.now() + timedelta(hours=1)
    await world.admin.freeze_wallet(
        AdminFreezeWallet("s", Role.ADMIN, wallet_id, "r", until, key("s"))
    )
    frozen = await world.admin.list_wallets(
        WalletFilter(status=WalletStatus.FROZEN), None, 10, viewer=STAFF
    )
    assert [w.id for w in frozen.wallets] == [wallet_id]
    world.clock.advance(timedelta(hours=2))  # the sweep has not run yet
    still_frozen = await world.admin.list_wallets(
        WalletFilter(status=WalletStatus.FROZEN), None, 10, viewer=STAFF
    )
    active = await world.admin.list_wallets(
        WalletFilter(status=WalletStatus.ACTIVE), None, 10, viewer=STAFF
    )
    assert still_frozen.wallets == ()
    assert [(w.id, w.status) for w in active.wallets] == [(wallet_id, WalletStatus.ACTIVE)]
    stats = await world.admin.system_stats()
    assert (stats.frozen_wallet_count, stats.active_wallet_count) == (0, 1)


async def test_a_setting_changed_under_older_rules_answers_its_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review of 2026-12-05: UpdateSetting checked its reason before its stored answer, so a
    retry of a change that committed with a reason the one-line rule now refuses was 400."""
    world = World()
    reason = "promo\u2028ends friday"
    update = UpdateSetting("root", "limits.tier_basic.send.daily", "4200000", reason, key("root"))
    with monkeypatch.context() as older:
        older.setattr(
            "vaultpay_wallet.service_layer.settings.clean_text", lambda value, **_: value.strip()
        )
        first = await world.settings.update_setting(update)
    assert await world.settings.update_setting(update) == first


@pytest.mark.parametrize("reason", ["", "   "])
async def test_lifting_a_freeze_or_changing_a_setting_needs_a_reason(reason: str) -> None:
    """Review of 2026-12-05: a staff unfreeze (money a colleague held, released) and a change of
    every user's limits were audited with an empty reason, the part of the record an
    investigation needs most; a freeze, a limit override and a KYC rejection need one."""
    world = World()
    wallet_id = await _basic(world)
    await world.admin.freeze_wallet(
        AdminFreezeWallet("s", Role.ADMIN, wallet_id, "fraud hold", None, key("s"))
    )
    before = world.snapshot()
    with pytest.raises(ValidationError) as unfreeze:
        await world.admin.unfreeze_wallet(
            AdminUnfreezeWallet("s", Role.ADMIN, wallet_id, reason, key("s"))
        )
    with pytest.raises(ValidationError) as setting:
        await world.settings.update_setting(
            UpdateSetting("root", "limits.tier_basic.send.daily", "4200000", reason, key("root"))
        )
    assert [v.field for v in unfreeze.value.violations] == ["reason"]
    assert [v.field for v in setting.value.violations] == ["reason"]
    assert world.snapshot() == before


async def test_a_missing_tier_default_is_a_cap_of_zero_as_the_ledger_reads_it() -> None:
    """transfer_caps (t0020) refuses every movement of a window whose tier default row is
    missing; wallet filled it from the catalogue, so GetLimits showed 25,000.00 INR to spend
    and SetMyLimit accepted own limits that could never apply (review of 2026-12-05)."""
    world = World()
    await _basic(world)
    del world.uow.settings.values_by_key["limits.tier_basic.send.daily"]

    send = next(
        v for v in (await world.limits.get_limits("alice")).limits if v.action is LimitAction.SEND
    )
    assert (send.daily.amount_minor, send.daily.source) == (0, LimitSource.TIER_DEFAULT)
    assert send.per_transaction.amount_minor > 0  # the other windows keep their rows
    before = world.snapshot()
    with pytest.raises(ValidationError) as err:
        await world.limits.set_my_limit(
            SetMyLimit("alice", "send", None, AmountInput(INR, 1_000), None, key())
        )
    assert err.value.violations[0].field == "daily"
    assert world.snapshot() == before
