"""Results of the use cases: frozen dataclasses that `DataclassCodec` can store as replies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from vaultpay_wallet.domain.limits import ActionCaps, ActionLimitsView
from vaultpay_wallet.domain.model import KycTier, Wallet
from vaultpay_wallet.domain.settings_catalog import SettingView
from vaultpay_wallet.service_layer.ports import CurrencyAmount, ListedOverride, TransferStats

__all__ = [
    "AdminWalletView",
    "Balance",
    "EffectiveLimits",
    "LimitOverridePage",
    "MovementAddress",
    "PinChanged",
    "PinCheckOutcome",
    "PinCheckResult",
    "PinReservation",
    "PinReset",
    "PinResetRequested",
    "PinSet",
    "PinVerified",
    "SettingsPage",
    "SystemStats",
    "WalletLimits",
    "WalletPage",
    "WalletPublicView",
]


@dataclass(frozen=True, slots=True)
class WalletLimits:
    """A wallet with its effective limits and usage (GetMyWallet, GetLimits)."""

    wallet: Wallet
    limits: tuple[ActionLimitsView, ...]
    usage_known: bool


@dataclass(frozen=True, slots=True)
class Balance:
    wallet_id: str
    currency: str
    balance_minor: int
    read_at: datetime


@dataclass(frozen=True, slots=True)
class WalletPublicView:
    wallet_id: str
    display_name: str
    currency: str
    can_receive: bool


@dataclass(frozen=True, slots=True)
class PinSet:
    pin_updated_at: datetime


@dataclass(frozen=True, slots=True)
class PinChanged:
    pin_updated_at: datetime


@dataclass(frozen=True, slots=True)
class PinVerified:
    wallet_id: str
    # Whether the movement's address (MovementAddress) is trusted, as read in the PIN's own
    # settlement; None when it was not read there (no address given, or the general path).
    address_trusted: bool | None = None


@dataclass(frozen=True, slots=True)
class MovementAddress:
    """A money movement's client address, looked up once its PIN matched: the user (a
    canonical UUID) and the address's keyed hash (domain.ip_trust.IpHasher)."""

    user_id: str
    ip_hash: str


@dataclass(frozen=True, slots=True)
class PinResetRequested:
    token_expires_at: datetime


@dataclass(frozen=True, slots=True)
class PinReset:
    pin_updated_at: datetime
    lockout_lifted: bool


class PinCheckResult(Enum):
    OK = "OK"
    INVALID = "INVALID"
    LOCKED = "LOCKED"


@dataclass(frozen=True, slots=True)
class PinReservation:
    """Phase one of a PIN check: an attempt counted (stored so a retry counts once)."""

    wallet_id: str
    attempt: int
    pin_updated_at: datetime


@dataclass(frozen=True, slots=True)
class PinCheckOutcome:
    """Phase two: what the check decided. Stored as the reply even when the answer is an
    error, so a retried wrong PIN answers the same error without counting again."""

    wallet_id: str
    result: PinCheckResult
    remaining_attempts: int
    locked_until: datetime | None = None
    pin_updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """GetEffectiveLimits: every action's caps, no usage (transfer owns usage)."""

    wallet_id: str
    currency: str
    kyc_tier: KycTier
    limits: tuple[ActionCaps, ...]


@dataclass(frozen=True, slots=True)
class WalletPage:
    """A page of AdminListWallets; the next page starts after the last wallet's
    (created_at, id) when `has_more`."""

    wallets: tuple[Wallet, ...]
    has_more: bool


@dataclass(frozen=True, slots=True)
class AdminWalletView:
    wallet: Wallet
    limits: tuple[ActionLimitsView, ...]
    usage_known: bool
    failed_pin_attempts: int
    pin_updated_at: datetime | None
    trusted_ip_count: int | None  # None when the IP-trust store could not answer


@dataclass(frozen=True, slots=True)
class LimitOverridePage:
    """A page of AdminListLimits, most recently created first; the next page starts after
    the last row's position when `has_more`."""

    overrides: tuple[ListedOverride, ...]
    has_more: bool


@dataclass(frozen=True, slots=True)
class SettingsPage:
    """Settings ordered by key; the next page starts after the last key when `has_more`."""

    settings: tuple[SettingView, ...]
    has_more: bool


@dataclass(frozen=True, slots=True)
class SystemStats:
    """Wallet figures from this service; peer figures None when the peer is unavailable."""

    wallet_count: int
    active_wallet_count: int
    frozen_wallet_count: int
    closed_wallet_count: int
    total_balances: tuple[CurrencyAmount, ...]
    transfer: TransferStats | None
    pending_kyc_count: int | None
    computed_at: datetime
