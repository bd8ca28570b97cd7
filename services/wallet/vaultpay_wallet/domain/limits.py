"""Limits: per-transaction, daily and monthly caps for each kind of money movement.

Each window's cap comes from up to three sources:

    base      = the admin override for that window if set, else the KYC tier's default
    effective = min(user's own limit, base) if the user set one, else base

A user may only lower a limit (a value above `base` is refused); staff overrides may raise
or lower the tier default. Amounts are integer minor units of the wallet's currency.
Daily and monthly windows are calendar days and months in Asia/Kolkata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TypeVar
from zoneinfo import ZoneInfo

from vaultpay_wallet.domain.model import KycTier

__all__ = [
    "BUSINESS_TIME_ZONE",
    "ActionCaps",
    "ActionLimitsView",
    "ActionUsage",
    "EffectiveCap",
    "LimitAction",
    "LimitOverride",
    "LimitSource",
    "LimitView",
    "LimitWindow",
    "WindowResets",
    "base_cap",
    "effective_caps",
    "limits_view",
    "loosens",
    "tier_default_key",
    "tier_order_conflicts",
    "tier_settings_prefix",
    "window_order_conflicts",
    "window_resets",
]

BUSINESS_TIME_ZONE = ZoneInfo("Asia/Kolkata")


class LimitAction(Enum):
    """Value = the spelling in HTTP paths and setting keys."""

    SEND = "send"
    WITHDRAW = "withdraw"
    TOP_UP = "top_up"


class LimitWindow(Enum):
    PER_TRANSACTION = "per_transaction"
    DAILY = "daily"
    MONTHLY = "monthly"


class LimitSource(Enum):
    TIER_DEFAULT = "TIER_DEFAULT"
    ADMIN_OVERRIDE = "ADMIN_OVERRIDE"
    USER = "USER"


def tier_settings_prefix(tier: KycTier) -> str:
    """What every default setting of a tier starts with, e.g. "limits.tier_basic."."""
    return f"limits.tier_{tier.value.lower()}."


def tier_default_key(tier: KycTier, action: LimitAction, window: LimitWindow) -> str:
    """The system setting holding a tier's default, e.g. "limits.tier_basic.send.daily"."""
    return f"{tier_settings_prefix(tier)}{action.value}.{window.value}"


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """A stored override (admin or the owner's own) for one wallet and action.

    A window left None falls through to the next source.
    """

    wallet_id: str
    source: LimitSource
    action: LimitAction
    per_transaction: int | None
    daily: int | None
    monthly: int | None
    set_by: str
    reason: str
    updated_at: datetime

    def window(self, window: LimitWindow) -> int | None:
        value: int | None = getattr(self, window.value)
        return value


@dataclass(frozen=True, slots=True)
class EffectiveCap:
    amount_minor: int
    source: LimitSource


@dataclass(frozen=True, slots=True)
class ActionCaps:
    action: LimitAction
    per_transaction: EffectiveCap
    daily: EffectiveCap
    monthly: EffectiveCap

    def cap(self, window: LimitWindow) -> EffectiveCap:
        cap: EffectiveCap = getattr(self, window.value)
        return cap


def base_cap(
    tier_defaults: Mapping[str, int],
    tier: KycTier,
    admin: LimitOverride | None,
    action: LimitAction,
    window: LimitWindow,
) -> EffectiveCap:
    """The admin override's value if set, else the tier default (the user's ceiling)."""
    if admin is not None and admin.window(window) is not None:
        value = admin.window(window)
        assert value is not None
        return EffectiveCap(value, LimitSource.ADMIN_OVERRIDE)
    return EffectiveCap(
        tier_defaults[tier_default_key(tier, action, window)], LimitSource.TIER_DEFAULT
    )


def effective_caps(
    tier: KycTier,
    tier_defaults: Mapping[str, int],
    overrides: Sequence[LimitOverride],
) -> tuple[ActionCaps, ...]:
    """The effective cap of every action and window. `tier_defaults` maps setting keys to
    values and must hold every `tier_default_key` of `tier`."""
    result = []
    for action in LimitAction:
        admin = _find(overrides, LimitSource.ADMIN_OVERRIDE, action)
        user = _find(overrides, LimitSource.USER, action)
        caps: dict[str, EffectiveCap] = {}
        for window in LimitWindow:
            cap = base_cap(tier_defaults, tier, admin, action, window)
            own = None if user is None else user.window(window)
            if own is not None and own <= cap.amount_minor:
                cap = EffectiveCap(own, LimitSource.USER)
            caps[window.value] = cap
        result.append(ActionCaps(action, **caps))
    return tuple(result)


def window_order_conflicts(
    values: Mapping[LimitWindow, int | None],
) -> list[tuple[LimitWindow, LimitWindow]]:
    """The pairs (narrower, wider) of windows whose caps are out of order: a per-transaction
    cap above the daily or monthly one, or a daily cap above the monthly one. Such a set
    reads as a promise the narrower cap cannot keep (a 10,000 send "allowed" under a daily cap
    of 10), so whoever sets caps together sets them in order. Windows left None are not
    compared: they fall through to another source, and lowering one window alone (a daily
    cap under the tier's per-transaction default) is how caps are tightened.

        window_order_conflicts({PER_TRANSACTION: 500, DAILY: 100})  # [(PER_TRANSACTION, DAILY)]
    """
    return _order_conflicts(list(LimitWindow), values)  # narrowest first


def tier_order_conflicts(values: Mapping[KycTier, int | None]) -> list[tuple[KycTier, KycTier]]:
    """The pairs (lower, higher) of KYC tiers whose defaults of one action and window are out
    of order (NONE <= BASIC <= FULL). A BASIC default above FULL's lets a partly verified user
    move more than a fully verified one, and makes the FULL approval lower their limit. Tiers
    left None are not compared.

        tier_order_conflicts({BASIC: 20_000_000, FULL: 10_000_000})  # [(BASIC, FULL)]
    """
    return _order_conflicts(list(KycTier), values)  # lowest first


_Ranked = TypeVar("_Ranked")


def _order_conflicts(
    ranks: Sequence[_Ranked], values: Mapping[_Ranked, int | None]
) -> list[tuple[_Ranked, _Ranked]]:
    """Every pair (earlier, later) of `ranks` whose values are set and decrease."""
    conflicts = []
    for i, earlier in enumerate(ranks):
        for later in ranks[i + 1 :]:
            low, high = values.get(earlier), values.get(later)
            if low is not None and high is not None and low > high:
                conflicts.append((earlier, later))
    return conflicts


def _find(
    overrides: Sequence[LimitOverride], source: LimitSource, action: LimitAction
) -> LimitOverride | None:
    return next((o for o in overrides if o.source is source and o.action is action), None)


@dataclass(frozen=True, slots=True)
class WindowResets:
    day_end: datetime
    month_end: datetime


def window_resets(now: datetime) -> WindowResets:
    """When today's and this month's windows end (Asia/Kolkata midnight), in UTC."""
    local = now.astimezone(BUSINESS_TIME_ZONE)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = (day_start + timedelta(days=1)).replace(tzinfo=BUSINESS_TIME_ZONE)
    month_start = day_start.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return WindowResets(day_end.astimezone(UTC), next_month.astimezone(UTC))


@dataclass(frozen=True, slots=True)
class ActionUsage:
    """How much of an action's daily and monthly windows has been used (minor units)."""

    action: LimitAction
    daily_used_minor: int
    monthly_used_minor: int


@dataclass(frozen=True, slots=True)
class UsageReading:
    """The usage transfer counted, and the time it read it by (None: it did not say). The
    windows are the ledger's, taken from the database's clock: `read_at` places the resets."""

    read_at: datetime | None
    actions: Sequence[ActionUsage]


@dataclass(frozen=True, slots=True)
class LimitView:
    """One effective cap as GetLimits shows it. `used_minor`/`remaining_minor` are None when
    usage is unknown (transfer unavailable) and `used_minor`/`reset_at` for per-transaction
    caps; a per-transaction cap's remaining equals its amount."""

    amount_minor: int
    source: LimitSource
    used_minor: int | None
    remaining_minor: int | None
    reset_at: datetime | None


@dataclass(frozen=True, slots=True)
class ActionLimitsView:
    action: LimitAction
    currency: str
    per_transaction: LimitView
    daily: LimitView
    monthly: LimitView

    @property
    def available_minor(self) -> int | None:
        """The largest single movement the limits let through now (None: usage unknown)."""
        day, month = self.daily.remaining_minor, self.monthly.remaining_minor
        if day is None or month is None:
            return None
        return min(self.per_transaction.amount_minor, day, month)


def limits_view(
    currency: str,
    caps: Sequence[ActionCaps],
    usage: Sequence[ActionUsage] | None,
    now: datetime,
) -> tuple[ActionLimitsView, ...]:
    """Caps joined with usage; `usage=None` means unknown (never a reason to fail)."""
    resets = window_resets(now)
    by_action = {u.action: u for u in usage} if usage is not None else None
    views = []
    for action_caps in caps:
        known = None if by_action is None else by_action.get(action_caps.action)
        if by_action is not None and known is None:
            known = ActionUsage(action_caps.action, 0, 0)
        per_tx = action_caps.per_transaction
        views.append(
            ActionLimitsView(
                action=action_caps.action,
                currency=currency,
                per_transaction=LimitView(
                    per_tx.amount_minor, per_tx.source, None, per_tx.amount_minor, None
                ),
                daily=_windowed(
                    action_caps.daily,
                    None if known is None else known.daily_used_minor,
                    resets.day_end,
                ),
                monthly=_windowed(
                    action_caps.monthly,
                    None if known is None else known.monthly_used_minor,
                    resets.month_end,
                ),
            )
        )
    return tuple(views)


def _windowed(cap: EffectiveCap, used: int | None, reset_at: datetime) -> LimitView:
    remaining = None if used is None else max(0, cap.amount_minor - used)
    return LimitView(cap.amount_minor, cap.source, used, remaining, reset_at)


def loosens(earlier: LimitOverride, later: LimitOverride) -> bool:
    """Whether `later` allows more than `earlier` in some window: one that `earlier` capped
    is uncapped, or capped higher (the owner's guard loosened)."""
    for window in LimitWindow:
        before, after = earlier.window(window), later.window(window)
        if before is not None and (after is None or after > before):
            return True
    return False
