"""System settings use cases (super_admin): list with a prefix filter, update one value.

Values are validated against the typed catalogue (`domain/settings_catalog.py`); unknown
keys answer NOT_FOUND. A tier's default limits of one action stay in order (per transaction
<= daily <= monthly), checked against the other two under their row locks. Readers (limits) read the table on every call, so a change applies to
the next request without a restart.
"""

from __future__ import annotations

from collections.abc import Callable

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import DataclassCodec, run_once
from vaultpay_wallet.domain.errors import SettingNotFoundError
from vaultpay_wallet.domain.limits import LimitWindow, tier_default_key, window_order_conflicts
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


async def _check_limit_order(uow: WalletUnitOfWork, key: str, value: str) -> None:
    """A tier's default limit must not cross the same action's other windows: a daily default
    of 10 under a per-transaction default of 1,000,000 makes the tier's limits read as nonsense.
    The action's three rows are locked in one order (per transaction, daily, monthly) before
    the check, so two concurrent updates of one action cannot each pass against the other's
    old value, nor deadlock. Limit readers do not lock these rows."""
    where = LIMIT_SETTINGS.get(key)
    if where is None:
        return
    tier, action, window = where
    values: dict[LimitWindow, int | None] = {}
    for other in LimitWindow:
        other_key = tier_default_key(tier, action, other)
        stored = await uow.settings.get(other_key, for_update=True)
        if other is window:
            values[other] = int(value)
        else:
            default = SETTINGS[other_key].default
            values[other] = int(stored.value if stored is not None else default)
    for narrower, wider in window_order_conflicts(values):
        if window is narrower:
            bound, relation = wider, "at most"
        elif window is wider:
            bound, relation = narrower, "at least"
        else:
            continue  # an old inconsistency between the other two; this update may fix it
        bound_key = tier_default_key(tier, action, bound)
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
        value = parse_setting_value(spec, cmd.value)
        reason = clean_text(cmd.reason, field="reason", min_length=0, max_length=500)

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
