"""proto <-> domain conversion for the wallet service (names mirror each other on purpose)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from vaultpay.type.v1 import kyc_tier_pb2, limit_action_pb2, money_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.errors import FieldViolation, ValidationError
from vaultpay_common.grpc.convert import timestamp
from vaultpay_common.ids import parse_uuid
from vaultpay_wallet.domain.limits import (
    ActionLimitsView,
    LimitAction,
    LimitOverride,
    LimitSource,
    LimitView,
)
from vaultpay_wallet.domain.model import Freeze, FreezeSource, KycTier, Wallet, WalletStatus
from vaultpay_wallet.domain.notifications import Notification, NotificationKind
from vaultpay_wallet.domain.settings_catalog import SettingView
from vaultpay_wallet.service_layer.ip_trust import TrustedIpView
from vaultpay_wallet.service_layer.notifications import CreateNotification

__all__ = [
    "action_from_path",
    "action_from_proto",
    "action_limits_to_proto",
    "action_to_proto",
    "kind_from_proto",
    "money",
    "notification_commands",
    "notification_to_proto",
    "override_to_proto",
    "setting_to_proto",
    "status_from_proto",
    "tier_from_proto",
    "tier_to_proto",
    "trusted_ip_to_proto",
    "wallet_to_proto",
]

E = TypeVar("E")

_STATUS = {
    WalletStatus.ACTIVE: wallet_pb2.WALLET_STATUS_ACTIVE,
    WalletStatus.FROZEN: wallet_pb2.WALLET_STATUS_FROZEN,
    WalletStatus.CLOSED: wallet_pb2.WALLET_STATUS_CLOSED,
}
_FREEZE = {
    FreezeSource.SELF: wallet_pb2.FREEZE_REASON_SELF,
    FreezeSource.ADMIN: wallet_pb2.FREEZE_REASON_ADMIN,
    FreezeSource.PIN_LOCKOUT: wallet_pb2.FREEZE_REASON_PIN_LOCKOUT,
}
_TIER = {
    KycTier.NONE: kyc_tier_pb2.KYC_TIER_NONE,
    KycTier.BASIC: kyc_tier_pb2.KYC_TIER_BASIC,
    KycTier.FULL: kyc_tier_pb2.KYC_TIER_FULL,
}
_ACTION = {
    LimitAction.SEND: limit_action_pb2.LIMIT_ACTION_SEND,
    LimitAction.WITHDRAW: limit_action_pb2.LIMIT_ACTION_WITHDRAW,
    LimitAction.TOP_UP: limit_action_pb2.LIMIT_ACTION_TOP_UP,
}
_SOURCE = {
    LimitSource.TIER_DEFAULT: wallet_pb2.LIMIT_SOURCE_TIER_DEFAULT,
    LimitSource.ADMIN_OVERRIDE: wallet_pb2.LIMIT_SOURCE_ADMIN_OVERRIDE,
    LimitSource.USER: wallet_pb2.LIMIT_SOURCE_USER,
}


def _from_proto(mapping: Mapping[E, int], value: int, field: str, what: str) -> E | None:
    """The domain value of a proto enum number; 0 (UNSPECIFIED) -> None; unknown -> invalid."""
    if value == 0:
        return None
    for key, number in mapping.items():
        if number == value:
            return key
    raise ValidationError.single(field, f"is not a known {what}")


def money(amount_minor: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount_minor=amount_minor)


def tier_to_proto(tier: KycTier) -> kyc_tier_pb2.KycTier.ValueType:
    return _TIER[tier]


def tier_from_proto(value: int, field: str = "kyc_tier") -> KycTier | None:
    """KYC_TIER_UNSPECIFIED -> None ("any"); unknown numbers are invalid input."""
    return _from_proto(_TIER, value, field, "KYC tier")


def status_from_proto(value: int, field: str = "status") -> WalletStatus | None:
    return _from_proto(_STATUS, value, field, "wallet status")


def action_to_proto(action: LimitAction) -> limit_action_pb2.LimitAction.ValueType:
    return _ACTION[action]


def action_from_proto(value: int, field: str = "action") -> LimitAction | None:
    return _from_proto(_ACTION, value, field, "limit action")


def source_from_proto(value: int, field: str = "source") -> LimitSource | None:
    return _from_proto(_SOURCE, value, field, "limit source")


def action_from_path(value: str, field: str = "action") -> LimitAction:
    """The action as it appears in a path ("send", "withdraw", "top_up")."""
    try:
        return LimitAction(value.strip().lower())
    except ValueError as exc:
        raise ValidationError.single(field, "must be one of send, withdraw, top_up") from exc


def kind_from_proto(value: int, field: str = "kind") -> NotificationKind:
    if value == 0 or value not in wallet_pb2.NotificationKind.values():
        raise ValidationError.single(field, "must be a known notification kind")
    name = wallet_pb2.NotificationKind.Name(wallet_pb2.NotificationKind.ValueType(value))
    return NotificationKind(name.removeprefix("NOTIFICATION_KIND_"))


def notification_commands(
    items: Iterable[wallet_pb2.CreateNotificationRequest],
) -> list[CreateNotification]:
    """The items of a CreateNotifications request as commands; the user ids and kinds of all
    items are checked, each bad one named `notifications[i].<field>` (the use case checks the
    other fields the same way)."""
    commands: list[CreateNotification] = []
    violations: list[FieldViolation] = []
    for index, item in enumerate(items):
        user_id, kind = "", NotificationKind.MONEY_RECEIVED
        try:
            user_id = parse_uuid(item.user_id, f"notifications[{index}].user_id")
        except ValidationError as exc:
            violations += exc.violations
        try:
            kind = kind_from_proto(item.kind, f"notifications[{index}].kind")
        except ValidationError as exc:
            violations += exc.violations
        commands.append(CreateNotification(item.request_id, user_id, kind, item.title, item.body))
    if violations:
        raise ValidationError(violations)
    return commands


def _freeze_to_proto(freeze: Freeze, *, staff_view: bool) -> wallet_pb2.WalletFreeze:
    shown = freeze.source is FreezeSource.SELF or staff_view
    message = wallet_pb2.WalletFreeze(
        reason=_FREEZE[freeze.source],
        note=freeze.note if shown else "",
        freeze_time=timestamp(freeze.frozen_at),
    )
    if freeze.until is not None:
        message.until_time.CopyFrom(timestamp(freeze.until))
    return message


def wallet_to_proto(wallet: Wallet, *, staff_view: bool = False) -> wallet_pb2.Wallet:
    """The owner sees the note of a self-freeze only; staff see every note."""
    message = wallet_pb2.Wallet(
        wallet_id=wallet.id,
        user_id=wallet.user_id,
        display_name=wallet.display_name,
        currency_code=wallet.currency,
        balance=money(wallet.balance_minor, wallet.currency),
        status=_STATUS[wallet.status],
        kyc_tier=_TIER[wallet.kyc_tier],
        pin_set=wallet.pin_set,
        create_time=timestamp(wallet.created_at),
        update_time=timestamp(wallet.updated_at),
    )
    freeze = wallet.displayed_freeze
    if freeze is not None and wallet.status is WalletStatus.FROZEN:
        message.freeze.CopyFrom(_freeze_to_proto(freeze, staff_view=staff_view))
    if wallet.closed_at is not None:
        message.close_time.CopyFrom(timestamp(wallet.closed_at))
    return message


def _limit_to_proto(view: LimitView, currency: str) -> wallet_pb2.Limit:
    limit = wallet_pb2.Limit(amount=money(view.amount_minor, currency), source=_SOURCE[view.source])
    if view.used_minor is not None:
        limit.used.CopyFrom(money(view.used_minor, currency))
    if view.remaining_minor is not None:
        limit.remaining.CopyFrom(money(view.remaining_minor, currency))
    if view.reset_at is not None:
        limit.reset_time.CopyFrom(timestamp(view.reset_at))
    return limit


def action_limits_to_proto(view: ActionLimitsView) -> wallet_pb2.ActionLimits:
    """Usage that is unknown (transfer down) leaves `used`, `remaining` and `available` unset."""
    limits = wallet_pb2.ActionLimits(
        action=_ACTION[view.action],
        per_transaction=_limit_to_proto(view.per_transaction, view.currency),
        daily=_limit_to_proto(view.daily, view.currency),
        monthly=_limit_to_proto(view.monthly, view.currency),
    )
    if view.available_minor is not None:
        limits.available.CopyFrom(money(view.available_minor, view.currency))
    return limits


def override_to_proto(override: LimitOverride, currency: str) -> wallet_pb2.LimitOverride:
    values = wallet_pb2.LimitValues(action=_ACTION[override.action])
    if override.per_transaction is not None:
        values.per_transaction.CopyFrom(money(override.per_transaction, currency))
    if override.daily is not None:
        values.daily.CopyFrom(money(override.daily, currency))
    if override.monthly is not None:
        values.monthly.CopyFrom(money(override.monthly, currency))
    return wallet_pb2.LimitOverride(
        wallet_id=override.wallet_id,
        source=_SOURCE[override.source],
        values=values,
        set_by=override.set_by,
        reason=override.reason,
        update_time=timestamp(override.updated_at),
    )


def trusted_ip_to_proto(trusted: TrustedIpView) -> wallet_pb2.TrustedIp:
    return wallet_pb2.TrustedIp(
        ip_hash=trusted.ip_hash,
        first_seen_time=timestamp(trusted.first_seen_at),
        last_seen_time=timestamp(trusted.last_seen_at),
        expire_time=timestamp(trusted.expires_at),
    )


def notification_to_proto(note: Notification) -> wallet_pb2.Notification:
    return wallet_pb2.Notification(
        notification_id=note.notification_id,
        kind=wallet_pb2.NotificationKind.Value(f"NOTIFICATION_KIND_{note.kind.value}"),
        title=note.title,
        body=note.body,
        read=note.read,
        create_time=timestamp(note.created_at),
    )


def setting_to_proto(setting: SettingView) -> wallet_pb2.Setting:
    return wallet_pb2.Setting(
        key=setting.key,
        value=setting.value,
        description=setting.description,
        update_time=timestamp(setting.updated_at),
        update_user_id=setting.updated_by,
    )
