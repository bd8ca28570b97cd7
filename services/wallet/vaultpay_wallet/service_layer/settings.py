"""System settings use cases (super_admin): list with a prefix filter, update one value.

Values are validated against the typed catalogue (`domain/settings_catalog.py`); unknown
keys answer NOT_FOUND. Readers (limits) read the table on every call, so a change applies to
the next request without a restart.
"""

from __future__ import annotations

from collections.abc import Callable

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.idempotency import DataclassCodec, run_once
from vaultpay_wallet.domain.errors import SettingNotFoundError
from vaultpay_wallet.domain.settings_catalog import (
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
