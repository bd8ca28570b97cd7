"""System settings use cases (super_admin): list with a prefix filter, update one value.

Values are validated against the typed catalogue (`domain/settings_catalog.py`); unknown
keys answer NOT_FOUND. A tier's default limits of one action stay in order across windows (per
transaction <= daily <= monthly) and across tiers (NONE <= BASIC <= FULL for each window),
checked under the row locks of all the action's defaults. Readers (limits) read the table on
every call, so a change applies to the next request without a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import DataclassCodec, run_once, stored_reply
from vaultpay_wallet.domain.errors import SettingNotFoundError
from vaultpay_wallet.domain.limits import (
    LimitAction,
    LimitWindow,
    tier_default_key,
    tier_order_conflicts,
    window_order_conflicts,
)
from vaultpay_wallet.domain.model import KycTier
from vaultpay_wallet.domain.settings_catalog import (
    LIMIT_SETTINGS,
    SETTINGS,
    SettingView,
    parse_setting_value,
    setting_spec,
)
from vaultpay_wallet.domain.validation import clean_text
from vaultpay_wallet.service_layer.commands import UpdateSetting
from vaultpay_wallet.service_layer.ports import StoredSetting, WalletUnitOfWork
from vaultpay_wallet.service_layer.results import SettingsPage

__all__ = ["SettingsService"]

_SETTING = DataclassCodec(SettingView)


def _view(stored: StoredSetting) -> SettingView:
    spec = SETTINGS.get(stored.key)
    description = spec.description if spec is not None else ""
    return SettingView(stored.key, stored.value, description, stored.updated_at, stored.updated_by)


_Default = tuple[KycTier, LimitWindow]


async def _lock_action_defaults(uow: WalletUnitOfWork, action: LimitAction) -> dict[_Default, int]:
    """Every tier's default of `action` in every window, each row locked, in the one order
    every update of the action takes them: tier (NONE, BASIC, FULL), then window (per
    transaction, daily, monthly). Two concurrent updates of the action, whatever tier and
    window each changes, so wait for each other instead of each passing against the other's
    old value, and cannot deadlock. Limit readers do not lock these rows. A missing row is 0,
    the cap the ledger and GetLimits read it as (`limits.defaults_from_stored`): judged
    against the catalogue's default instead, a BASIC default could be raised above a FULL
    one that, missing, let FULL users move nothing (review of 2026-12-05)."""
    values = {}
    for tier in KycTier:
        for window in LimitWindow:
            key = tier_default_key(tier, action, window)
            stored = await uow.settings.get(key, for_update=True)
            values[tier, window] = int(stored.value) if stored is not None else 0
    return values


def _crossed_bound(
    values: Mapping[_Default, int], tier: KycTier, window: LimitWindow
) -> tuple[str, _Default] | None:
    """The tightest default that (tier, window) is out of order with, among the same tier's
    other windows and the same window of the other tiers (on a tie, the tier's own window):
    the one message then names the value that fits. Conflicts between two other defaults are
    left alone: an old inconsistency must not block the update that may fix it."""
    crossed: list[tuple[str, _Default]] = []
    for narrower, wider in window_order_conflicts({w: values[tier, w] for w in LimitWindow}):
        if window is narrower:
            crossed.append(("at most", (tier, wider)))
        elif window is wider:
            crossed.append(("at least", (tier, narrower)))
    for lower, higher in tier_order_conflicts({t: values[t, window] for t in KycTier}):
        if tier is lower:
            crossed.append(("at most", (higher, window)))
        elif tier is higher:
            crossed.append(("at least", (lower, window)))
    if not crossed:
        return None
    relation = crossed[0][0]  # both only when the other defaults are out of order themselves
    bounds = [c for c in crossed if c[0] == relation]
    tightest = min if relation == "at most" else max
    return tightest(bounds, key=lambda c: values[c[1]])


async def _check_limit_order(uow: WalletUnitOfWork, key: str, value: str) -> None:
    """A tier's default limit must not cross the same action's other windows, nor the same
    window of another tier. A daily default of 10 under a per-transaction default of 1,000,000
    reads as nonsense; a BASIC default above FULL's lets a partly verified user move more than
    a fully verified one, and makes the FULL approval lower their limit."""
    where = LIMIT_SETTINGS.get(key)
    if where is None:
        return
    tier, action, window = where
    values = await _lock_action_defaults(uow, action)
    values[tier, window] = int(value)
    crossed = _crossed_bound(values, tier, window)
    if crossed is None:
        return
    relation, bound = crossed
    bound_key = tier_default_key(bound[0], action, bound[1])
    raise ValidationError.single("value", f"must be {relation} {bound_key} ({values[bound]})")


class SettingsService:
    def __init__(self, uow: Callable[[], WalletUnitOfWork], clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def list_settings(self, key_prefix: str, after_key: str, limit: int) -> SettingsPage:
        """Ordered by key; `after_key` is the previous page's last key ("" for the first)."""
        async with self._uow() as uow:
            rows = await uow.settings.list(key_prefix, after_key, limit + 1)
        return SettingsPage(tuple(_view(r) for r in rows[:limit]), len(rows) > limit)

    async def update_setting(self, cmd: UpdateSetting) -> SettingView:
        """Audited as "setting.updated" with the old and new value and the reason."""
        spec = setting_spec(cmd.key)
        if spec is None:
            raise SettingNotFoundError()
        try:
            value = parse_setting_value(spec, cmd.value)
            reason = clean_text(cmd.reason, field="reason", min_length=1, max_length=500)
        except ValidationError:
            # A retry of a change that committed gets its answer whatever the checks now
            # say (a rule added since, such as one-line reasons; review of 2026-12-05).
            async with self._uow() as uow:
                stored_view = await stored_reply(uow, cmd.idempotency, _SETTING)
            if stored_view is None:
                raise
            return stored_view

        async def work(uow: WalletUnitOfWork) -> SettingView:
            await _check_limit_order(uow, spec.key, value)
            current = await uow.settings.get(spec.key, for_update=True)
            if current is None:
                raise SettingNotFoundError("the setting is not seeded; run the migrations")
            stored = await uow.settings.update(
                spec.key, current.value, value, cmd.actor_id, reason, self._clock.now()
            )
            await uow.audit(
                AuditEntry(
                    "setting.updated",
                    "setting",
                    spec.key,
                    {"old_value": current.value, "new_value": value, "reason": reason},
                )
            )
            return _view(stored)

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _SETTING, lambda: work(uow))
