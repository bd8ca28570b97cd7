"""UpdateSetting of a tier's default limit keeps the tiers in order, NONE <= BASIC <= FULL for
each action and window, as well as the tier's own windows (review of 2026-12: a BASIC
per-transaction default above FULL's was accepted, so a FULL approval lowered the limit)."""

from __future__ import annotations

import pytest

from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.errors import ValidationError
from vaultpay_wallet.domain.limits import (
    LimitAction,
    LimitWindow,
    tier_default_key,
    tier_order_conflicts,
)
from vaultpay_wallet.domain.model import KycTier
from vaultpay_wallet.domain.settings_catalog import SETTINGS
from vaultpay_wallet.service_layer.commands import UpdateSetting
from vaultpay_wallet.service_layer.ports import StoredSetting

BASIC_SEND = "limits.tier_basic.send."
FULL_SEND = "limits.tier_full.send."


async def _update(world: World, setting: str, value: str) -> str:
    updated = await world.settings.update_setting(
        UpdateSetting("root", setting, value, "test", key("root"))
    )
    return updated.value


async def _refusal(world: World, setting: str, value: str) -> list[tuple[str, str]]:
    before = world.snapshot()
    with pytest.raises(ValidationError) as err:
        await _update(world, setting, value)
    assert world.snapshot() == before
    return [(v.field, v.description) for v in err.value.violations]


def test_tiers_out_of_order_are_named_lowest_first() -> None:
    assert tier_order_conflicts({KycTier.BASIC: 20_000_000, KycTier.FULL: 10_000_000}) == [
        (KycTier.BASIC, KycTier.FULL)
    ]
    assert tier_order_conflicts({KycTier.NONE: 5, KycTier.BASIC: 3, KycTier.FULL: 4}) == [
        (KycTier.NONE, KycTier.BASIC),
        (KycTier.NONE, KycTier.FULL),
    ]
    assert tier_order_conflicts({KycTier.NONE: 9, KycTier.BASIC: None, KycTier.FULL: 9}) == []


def test_the_catalogue_defaults_are_in_tier_order() -> None:
    """The migration seeds these: a default the check refuses could never be set back."""
    for action in LimitAction:
        for window in LimitWindow:
            defaults = {
                tier: int(SETTINGS[tier_default_key(tier, action, window)].default)
                for tier in KycTier
            }
            assert tier_order_conflicts(defaults) == [], (action, window)


async def test_basic_may_equal_full_but_not_exceed_it() -> None:
    """The review's case: BASIC's per-transaction send of 200,000 INR over FULL's 100,000."""
    world = World()
    assert await _update(world, BASIC_SEND + "monthly", "100000000") == "100000000"  # = FULL
    assert await _update(world, BASIC_SEND + "daily", "20000000") == "20000000"  # = FULL
    assert await _update(world, BASIC_SEND + "per_transaction", "10000000") == "10000000"
    assert await _refusal(world, BASIC_SEND + "per_transaction", "20000000") == [
        ("value", "must be at most limits.tier_full.send.per_transaction (10000000)")
    ]
    # Above BASIC's daily too: FULL's per transaction is the tighter bound, and is named.
    assert await _refusal(world, BASIC_SEND + "per_transaction", "30000000") == [
        ("value", "must be at most limits.tier_full.send.per_transaction (10000000)")
    ]


async def test_full_may_be_lowered_to_basic_but_not_below_it() -> None:
    world = World()
    assert await _refusal(world, FULL_SEND + "per_transaction", "999999") == [
        ("value", "must be at least limits.tier_basic.send.per_transaction (1000000)")
    ]
    assert await _update(world, FULL_SEND + "per_transaction", "1000000") == "1000000"


@pytest.mark.parametrize(
    ("setting", "value", "description"),
    [
        (  # NONE cannot move money, and must not be promised more than BASIC either
            "limits.tier_none.withdraw.monthly",
            "10000001",
            "must be at most limits.tier_basic.withdraw.monthly (10000000)",
        ),
        (
            "limits.tier_basic.top_up.monthly",
            "100000001",
            "must be at most limits.tier_full.top_up.monthly (100000000)",
        ),
        (
            "limits.tier_full.withdraw.monthly",
            "9999999",  # under FULL's per transaction and BASIC's monthly too: the tightest
            "must be at least limits.tier_full.withdraw.daily (20000000)",
        ),
        (  # above BASIC's monthly and FULL's per transaction too: the tightest is named
            BASIC_SEND + "per_transaction",
            "20000000",
            "must be at most limits.tier_basic.send.daily (2500000)",
        ),
    ],
)
async def test_a_tier_default_crossing_another_tier_or_window_is_refused(
    setting: str, value: str, description: str
) -> None:
    assert await _refusal(World(), setting, value) == [("value", description)]


async def test_an_old_disorder_between_other_tiers_does_not_block_a_fix() -> None:
    """Rows stored out of order before the check (or by hand) are left; only an update that
    itself crosses a bound is refused, so the update that repairs them goes through."""
    world = World()
    rows = world.uow.settings.values_by_key
    for window, value in (("monthly", "100000000"), ("daily", "30000000")):
        stale = StoredSetting(BASIC_SEND + window, value, rows[BASIC_SEND + window].updated_at, "x")
        rows[BASIC_SEND + window] = stale  # BASIC's daily is above FULL's 20,000,000
    assert await _update(world, "limits.tier_none.send.daily", "0") == "0"
    assert await _update(world, FULL_SEND + "per_transaction", "5000000") == "5000000"
    assert await _refusal(world, FULL_SEND + "daily", "25000000") == [
        ("value", "must be at least limits.tier_basic.send.daily (30000000)")
    ]
    assert await _update(world, BASIC_SEND + "daily", "20000000") == "20000000"


@pytest.mark.parametrize(
    "setting", ["limits.tier_full.send.monthly", "limits.tier_basic.send.per_transaction"]
)
async def test_every_update_of_an_action_locks_all_its_defaults_in_one_order(
    setting: str,
) -> None:
    """Tier order, then window order, whichever default changes: two concurrent updates of
    the action wait for each other and cannot deadlock (the race itself is proven on
    PostgreSQL in tests/integration/wallet/test_wallet_repositories.py)."""
    world = World()
    repository = world.uow.settings
    locked: list[str] = []
    read = repository.get

    async def get(key: str, *, for_update: bool = False) -> StoredSetting | None:
        if for_update and key not in locked:
            locked.append(key)
        return await read(key, for_update=for_update)

    repository.get = get  # type: ignore[method-assign]
    current = SETTINGS[setting].default
    await _update(world, setting, current)
    assert locked == [
        tier_default_key(tier, LimitAction.SEND, window)
        for tier in KycTier
        for window in LimitWindow
    ]


async def test_a_missing_default_is_judged_as_the_cap_of_0_it_is() -> None:
    """With FULL's send daily row missing, the ledger and GetLimits read FULL's daily cap as 0:
    raising BASIC's daily above it would let a partly verified user move more than a fully
    verified one (review of 2026-12-05: the check compared with the catalogue's default)."""
    world = World()
    del world.uow.settings.values_by_key[FULL_SEND + "daily"]
    assert await _refusal(world, BASIC_SEND + "daily", "30000000") == [
        ("value", "must be at most limits.tier_full.send.daily (0)")
    ]
