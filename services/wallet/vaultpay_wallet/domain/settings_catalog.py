"""The typed catalogue of system settings that staff may change at run time.

The catalogue is the truth about which keys exist, their type, range, default and meaning;
the `system_settings` table holds only current values (seeded from `SETTINGS` by the
migration). Values travel as text ("1000000", "true") and are parsed here, so an UpdateSetting
with a value out of range is refused before anything is written.

Limits are minor units of the wallet's currency (paise for INR).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from vaultpay_common.errors import ValidationError
from vaultpay_wallet.domain.limits import LimitAction, LimitWindow, tier_default_key
from vaultpay_wallet.domain.model import KycTier

__all__ = [
    "LIMIT_SETTINGS",
    "MAX_LIMIT_MINOR",
    "SETTINGS",
    "SettingSpec",
    "SettingType",
    "SettingView",
    "parse_setting_value",
    "setting_spec",
]

_INTEGER = re.compile(r"^-?[0-9]{1,19}\Z")
MAX_LIMIT_MINOR = 10**12  # 10 billion INR: far above any tier, far below BIGINT


class SettingType(Enum):
    INT = "int"
    BOOL = "bool"


@dataclass(frozen=True, slots=True)
class SettingSpec:
    key: str
    type: SettingType
    default: str
    description: str
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True, slots=True)
class SettingView:
    """A setting as staff see it: catalogue description plus the stored value."""

    key: str
    value: str
    description: str
    updated_at: datetime
    updated_by: str


def _rupees(amount: int) -> str:
    return str(amount * 100)


# (per_transaction, daily, monthly) in rupees per tier and action. NONE cannot move money
# (KYC gates top-up, send and withdraw), so its defaults are zero. Stored and applied as
# minor units of whatever currency the wallet holds: that is why wallets open only in the
# currencies WALLET_CURRENCIES lists (INR alone by default; wallet's settings.py).
_TIER_DEFAULTS: dict[KycTier, dict[LimitAction, tuple[int, int, int]]] = {
    KycTier.NONE: {action: (0, 0, 0) for action in LimitAction},
    KycTier.BASIC: {
        LimitAction.SEND: (10_000, 25_000, 100_000),
        LimitAction.WITHDRAW: (10_000, 25_000, 100_000),
        LimitAction.TOP_UP: (10_000, 50_000, 100_000),
    },
    KycTier.FULL: {
        LimitAction.SEND: (100_000, 200_000, 1_000_000),
        LimitAction.WITHDRAW: (100_000, 200_000, 1_000_000),
        LimitAction.TOP_UP: (100_000, 200_000, 1_000_000),
    },
}

_WINDOW_TEXT = {
    LimitWindow.PER_TRANSACTION: "largest single",
    LimitWindow.DAILY: "largest daily total of",
    LimitWindow.MONTHLY: "largest monthly total of",
}
_ACTION_TEXT = {
    LimitAction.SEND: "sends",
    LimitAction.WITHDRAW: "withdrawals",
    LimitAction.TOP_UP: "top-ups",
}


def _limit_specs() -> list[SettingSpec]:
    specs = []
    for tier, actions in _TIER_DEFAULTS.items():
        for action, values in actions.items():
            for window, rupees in zip(LimitWindow, values, strict=True):
                specs.append(
                    SettingSpec(
                        key=tier_default_key(tier, action, window),
                        type=SettingType.INT,
                        default=_rupees(rupees),
                        description=(
                            f"Default {_WINDOW_TEXT[window]} {_ACTION_TEXT[action]} at KYC "
                            f"tier {tier.value}, in minor units (paise for INR); "
                            f"0 to {MAX_LIMIT_MINOR}."
                        ),
                        minimum=0,
                        maximum=MAX_LIMIT_MINOR,
                    )
                )
    return specs


SETTINGS: dict[str, SettingSpec] = {
    spec.key: spec for spec in sorted(_limit_specs(), key=lambda s: s.key)
}


# Which tier, action and window each limit default is, e.g. "limits.tier_basic.send.daily".
LIMIT_SETTINGS: dict[str, tuple[KycTier, LimitAction, LimitWindow]] = {
    tier_default_key(tier, action, window): (tier, action, window)
    for tier in KycTier
    for action in LimitAction
    for window in LimitWindow
}


def setting_spec(key: str) -> SettingSpec | None:
    return SETTINGS.get(key)


def parse_setting_value(spec: SettingSpec, raw: str) -> str:
    """The canonical text of a valid value; ValidationError on field "value" otherwise."""
    text = raw.strip()
    if spec.type is SettingType.BOOL:
        lowered = text.lower()
        if lowered not in ("true", "false"):
            raise ValidationError.single("value", "must be true or false")
        return lowered
    if not _INTEGER.match(text):
        raise ValidationError.single("value", "must be a whole number")
    number = int(text)
    if spec.minimum is not None and number < spec.minimum:
        raise ValidationError.single("value", f"must be at least {spec.minimum}")
    if spec.maximum is not None and number > spec.maximum:
        raise ValidationError.single("value", f"must be at most {spec.maximum}")
    return str(number)
