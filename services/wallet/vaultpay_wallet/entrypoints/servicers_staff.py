"""gRPC servicers for staff (WalletAdminService) and the mesh (WalletInternalService).

Translation only: convert the request, await a use case, convert the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.context import CLIENT_IP
from vaultpay_common.grpc.audit_listing import list_audit_events
from vaultpay_common.grpc.convert import (
    current_principal,
    current_staff,
    datetime_or_none,
    page_scope,
    timestamp,
)
from vaultpay_common.grpc.idempotency import idempotency_key
from vaultpay_common.grpc.servicer import ServicerContext
from vaultpay_common.ids import parse_optional_uuid, parse_uuid
from vaultpay_common.input_checks import InputChecks, refusal_or
from vaultpay_common.pagination import (
    PageTokens,
    SliceOf,
    created_id_cursor,
    page_size,
    paginate,
    position_int,
    position_text,
)
from vaultpay_wallet.domain.ids import normalize_wallet_id
from vaultpay_wallet.domain.model import Wallet
from vaultpay_wallet.domain.settings_catalog import SettingView
from vaultpay_wallet.domain.staff_reads import StaffViewer
from vaultpay_wallet.entrypoints.convert import (
    action_from_proto,
    action_limits_to_proto,
    action_to_proto,
    kind_from_proto,
    money,
    notification_commands,
    notification_to_proto,
    override_to_proto,
    setting_to_proto,
    source_from_proto,
    status_from_proto,
    tier_from_proto,
    tier_to_proto,
    wallet_to_proto,
)
from vaultpay_wallet.entrypoints.servicers import amount_input
from vaultpay_wallet.service_layer import commands as cmd
from vaultpay_wallet.service_layer import ip_trust as ip
from vaultpay_wallet.service_layer import notifications as notes
from vaultpay_wallet.service_layer._shared import clean_wallet_id
from vaultpay_wallet.service_layer.admin import AdminService
from vaultpay_wallet.service_layer.audit_log import AuditEvents
from vaultpay_wallet.service_layer.internal import KycTierService, MovementChecks
from vaultpay_wallet.service_layer.ip_trust import IpTrustService
from vaultpay_wallet.service_layer.limits import LimitsService, check_override_count
from vaultpay_wallet.service_layer.notifications import NotificationService
from vaultpay_wallet.service_layer.ports import LimitOverrideFilter, ListedOverride, WalletFilter
from vaultpay_wallet.service_layer.settings import SettingsService

__all__ = ["WalletAdminServicer", "WalletInternalServicer"]

Ctx = ServicerContext
# Staff type wallet ids in any case; a retry spelled otherwise is the same request.
_WALLET_ID = {"wallet_id": normalize_wallet_id}
# A staff change's reason as it is kept (trimmed), beside the wallet id.
_WALLET_ID_AND_REASON: Mapping[str, Callable[[str], str]] = {**_WALLET_ID, "reason": str.strip}


def _setting_cursor(position: Mapping[str, Any]) -> str:
    return position_text(position, "k", max_length=200)


def _override_cursor(position: Mapping[str, Any]) -> int:
    """AdminListLimits' position: the row's `position`, under "p". A token of the older order
    ({"c": updated_at, "n": position}) has no "p": refused as invalid (INVALID_ARGUMENT on
    `page_token`), never read in the new order, where its page 1 would not line up."""
    return position_int(position, "p", minimum=1)


def _limit_entries(
    entries: Sequence[wallet_pb2.LimitValues],
) -> tuple[cmd.LimitValuesInput, ...]:
    """AdminSetWalletLimits' entries as the use case takes them; more entries than actions is
    refused on the count alone, before any is converted (a 1 MiB request holds ~250,000
    entries, which cost wallet's event loop 2.3 s)."""
    check_override_count(len(entries))
    return tuple(
        cmd.LimitValuesInput(
            refusal_or(action_from_proto, values.action, f"limits[{i}].action"),
            amount_input(values, "per_transaction"),
            amount_input(values, "daily"),
            amount_input(values, "monthly"),
        )
        for i, values in enumerate(entries)
    )


def _viewer() -> StaffViewer:
    """The staff member reading wallets and their address, for the audit row of the read."""
    return StaffViewer(*current_staff(), CLIENT_IP.get())


class WalletAdminServicer(wallet_pb2_grpc.WalletAdminServiceServicer):
    def __init__(
        self,
        admin: AdminService,
        limits: LimitsService,
        settings: SettingsService,
        audit: AuditEvents,
        page_tokens: PageTokens,
    ) -> None:
        self._admin = admin
        self._limits = limits
        self._settings = settings
        self._audit = audit
        self._tokens = page_tokens

    async def _wallet_slice(
        self,
        flt: WalletFilter,
        after: tuple[datetime, str] | None,
        limit: int,
        viewer: StaffViewer,
    ) -> SliceOf[Wallet]:
        page = await self._admin.list_wallets(flt, after, limit, viewer=viewer)
        return SliceOf(page.wallets, page.has_more)

    async def _override_slice(
        self, flt: LimitOverrideFilter, after: int | None, limit: int
    ) -> SliceOf[ListedOverride]:
        page = await self._limits.admin_list_limits(flt, after, limit, viewer=_viewer())
        return SliceOf(page.overrides, page.has_more)

    async def _setting_slice(
        self, prefix: str, after: str | None, limit: int
    ) -> SliceOf[SettingView]:
        page = await self._settings.list_settings(prefix, after or "", limit)
        return SliceOf(page.settings, page.has_more)

    async def AdminListWallets(
        self, request: wallet_pb2.AdminListWalletsRequest, context: Ctx
    ) -> wallet_pb2.AdminListWalletsResponse:
        with InputChecks() as checks:  # one refusal names every bad field
            checks.run(lambda: page_size(request.page_size))
            status = checks.run(lambda: status_from_proto(request.status))
            tier = checks.run(lambda: tier_from_proto(request.kyc_tier))
            user_id = checks.run(lambda: parse_optional_uuid(request.user_id, "user_id"))
        flt = WalletFilter(status=status.value, kyc_tier=tier.value, user_id=user_id.value)
        viewer = _viewer()
        page = await paginate(
            self._tokens,
            page_size=request.page_size,
            page_token=request.page_token,
            scope=page_scope(),
            filters={"status": flt.status, "tier": flt.kyc_tier, "user": flt.user_id},
            fetch_slice=lambda after, limit: self._wallet_slice(flt, after, limit, viewer),
            cursor_of=lambda w: {"c": w.created_at.isoformat(), "i": w.id},
            parse=created_id_cursor,
        )
        return wallet_pb2.AdminListWalletsResponse(
            wallets=[wallet_to_proto(w, staff_view=True) for w in page.items],
            next_page_token=page.next_page_token,
        )

    async def AdminGetWallet(
        self, request: wallet_pb2.AdminGetWalletRequest, context: Ctx
    ) -> wallet_pb2.AdminGetWalletResponse:
        view = await self._admin.get_wallet(request.wallet_id, viewer=_viewer())
        reply = wallet_pb2.AdminGetWalletResponse(
            wallet=wallet_to_proto(view.wallet, staff_view=True),
            limits=[action_limits_to_proto(a) for a in view.limits],
            failed_pin_attempts=view.failed_pin_attempts,
            trusted_ip_count=view.trusted_ip_count or 0,
        )
        if view.pin_updated_at is not None:
            reply.pin_update_time.CopyFrom(timestamp(view.pin_updated_at))
        return reply

    async def AdminFreezeWallet(
        self, request: wallet_pb2.AdminFreezeWalletRequest, context: Ctx
    ) -> wallet_pb2.AdminFreezeWalletResponse:
        wallet = await self._admin.freeze_wallet(
            cmd.AdminFreezeWallet(
                *current_staff(),
                request.wallet_id,
                request.reason,
                datetime_or_none(request, "until_time"),
                idempotency_key(request, canonical=_WALLET_ID_AND_REASON),
            )
        )
        return wallet_pb2.AdminFreezeWalletResponse(wallet=wallet_to_proto(wallet, staff_view=True))

    async def AdminUnfreezeWallet(
        self, request: wallet_pb2.AdminUnfreezeWalletRequest, context: Ctx
    ) -> wallet_pb2.AdminUnfreezeWalletResponse:
        wallet = await self._admin.unfreeze_wallet(
            cmd.AdminUnfreezeWallet(
                *current_staff(),
                request.wallet_id,
                request.reason,
                idempotency_key(request, canonical=_WALLET_ID_AND_REASON),
            )
        )
        return wallet_pb2.AdminUnfreezeWalletResponse(
            wallet=wallet_to_proto(wallet, staff_view=True)
        )

    async def AdminListLimits(
        self, request: wallet_pb2.AdminListLimitsRequest, context: Ctx
    ) -> wallet_pb2.AdminListLimitsResponse:
        with InputChecks() as checks:  # one refusal names every bad field
            checks.run(lambda: page_size(request.page_size))
            wallet_id = checks.run(
                lambda: clean_wallet_id(request.wallet_id) if request.wallet_id else ""
            )
            source = checks.run(lambda: source_from_proto(request.source))
            action = checks.run(lambda: action_from_proto(request.action))
        flt = LimitOverrideFilter(
            wallet_id=wallet_id.value, source=source.value, action=action.value
        )
        page = await paginate(
            self._tokens,
            page_size=request.page_size,
            page_token=request.page_token,
            scope=page_scope(),
            filters={"wallet": flt.wallet_id, "source": flt.source, "action": flt.action},
            fetch_slice=lambda after, limit: self._override_slice(flt, after, limit),
            cursor_of=lambda o: {"p": o.position},
            parse=_override_cursor,
        )
        return wallet_pb2.AdminListLimitsResponse(
            overrides=[override_to_proto(o.override, o.currency) for o in page.items],
            next_page_token=page.next_page_token,
        )

    async def AdminSetWalletLimits(
        self, request: wallet_pb2.AdminSetWalletLimitsRequest, context: Ctx
    ) -> wallet_pb2.AdminSetWalletLimitsResponse:
        views = await self._limits.admin_set_wallet_limits(
            cmd.AdminSetWalletLimits(
                *current_staff(),
                request.wallet_id,
                refusal_or(_limit_entries, request.limits),
                request.reason,
                refusal_or(idempotency_key, request, canonical=_WALLET_ID_AND_REASON),
            )
        )
        return wallet_pb2.AdminSetWalletLimitsResponse(
            limits=[action_limits_to_proto(a) for a in views]
        )

    async def ListSettings(
        self, request: wallet_pb2.ListSettingsRequest, context: Ctx
    ) -> wallet_pb2.ListSettingsResponse:
        prefix = request.key_prefix.strip()
        page = await paginate(
            self._tokens,
            page_size=request.page_size,
            page_token=request.page_token,
            scope=page_scope(),
            filters={"prefix": prefix},
            fetch_slice=lambda after, limit: self._setting_slice(prefix, after, limit),
            cursor_of=lambda s: {"k": s.key},
            parse=_setting_cursor,
        )
        return wallet_pb2.ListSettingsResponse(
            settings=[setting_to_proto(s) for s in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateSetting(
        self, request: wallet_pb2.UpdateSettingRequest, context: Ctx
    ) -> wallet_pb2.UpdateSettingResponse:
        setting = await self._settings.update_setting(
            cmd.UpdateSetting(
                current_principal().user_id,
                request.key,
                request.value,
                request.reason,
                idempotency_key(request, canonical={"reason": str.strip}),
            )
        )
        return wallet_pb2.UpdateSettingResponse(setting=setting_to_proto(setting))

    async def GetSystemStats(
        self, request: wallet_pb2.GetSystemStatsRequest, context: Ctx
    ) -> wallet_pb2.GetSystemStatsResponse:
        stats = await self._admin.system_stats()
        figures = wallet_pb2.SystemStats(
            wallet_count=stats.wallet_count,
            active_wallet_count=stats.active_wallet_count,
            frozen_wallet_count=stats.frozen_wallet_count,
            closed_wallet_count=stats.closed_wallet_count,
            total_balances=[money(t.amount_minor, t.currency) for t in stats.total_balances],
            compute_time=timestamp(stats.computed_at),
        )
        if stats.transfer is None:
            figures.unavailable_sources.append("transfer")
        else:
            t = stats.transfer
            figures.daily_transaction_count = t.daily_transaction_count
            figures.daily_volumes.extend(money(v.amount_minor, v.currency) for v in t.daily_volumes)
            figures.monthly_transaction_count = t.monthly_transaction_count
            figures.monthly_volumes.extend(
                money(v.amount_minor, v.currency) for v in t.monthly_volumes
            )
            figures.open_dispute_count = t.open_dispute_count
        if stats.pending_kyc_count is None:
            figures.unavailable_sources.append("kyc")
        else:
            figures.pending_kyc_count = stats.pending_kyc_count
        return wallet_pb2.GetSystemStatsResponse(stats=figures)

    async def ListAuditEvents(
        self, request: wallet_pb2.ListAuditEventsRequest, context: Ctx
    ) -> wallet_pb2.ListAuditEventsResponse:
        viewer = _viewer()
        events, next_token = await list_audit_events(
            self._tokens,
            request,
            fetch_slice=lambda query, before, limit: self._audit.list(
                query, before, limit, viewer=viewer
            ),
        )
        return wallet_pb2.ListAuditEventsResponse(events=events, next_page_token=next_token)


class WalletInternalServicer(wallet_pb2_grpc.WalletInternalServiceServicer):
    def __init__(
        self,
        checks: MovementChecks,
        ip_trust: IpTrustService,
        limits: LimitsService,
        tiers: KycTierService,
        notifications: NotificationService,
        *,
        fingerprint_key: bytes,
    ) -> None:
        self._fingerprint_key = fingerprint_key
        self._checks = checks
        self._ip = ip_trust
        self._limits = limits
        self._tiers = tiers
        self._notes = notifications

    async def VerifyTransferPin(
        self, request: wallet_pb2.VerifyTransferPinRequest, context: Ctx
    ) -> wallet_pb2.VerifyTransferPinResponse:
        checked = await self._checks.check(
            cmd.VerifyTransferPin(
                parse_uuid(request.user_id, "user_id"),
                request.pin,
                # A retry from another address is the same check of the same movement; the
                # PIN enters the stored fingerprint keyed (grpc/idempotency.py).
                idempotency_key(
                    request,
                    required=True,
                    unkeyed=("client_ip",),
                    secret=("pin",),
                    secret_key=self._fingerprint_key,
                ),
                client_ip=request.client_ip,
            ),
            request.client_ip,
        )
        reply = wallet_pb2.VerifyTransferPinResponse(wallet_id=checked.wallet_id)
        if checked.ip is not None:
            reply.ip_trust.trusted = checked.ip.trusted
            reply.ip_trust.confirmation_sent = checked.ip.confirmation_sent
        if checked.kyc_tier is not None:
            reply.kyc_tier = tier_to_proto(checked.kyc_tier)
        return reply

    async def CheckIpTrust(
        self, request: wallet_pb2.CheckIpTrustRequest, context: Ctx
    ) -> wallet_pb2.CheckIpTrustResponse:
        check = await self._ip.check_ip_trust(
            ip.CheckIpTrust(
                request.request_id, parse_uuid(request.user_id, "user_id"), request.client_ip
            )
        )
        return wallet_pb2.CheckIpTrustResponse(
            trusted=check.trusted, confirmation_sent=check.confirmation_sent
        )

    async def GetEffectiveLimits(
        self, request: wallet_pb2.GetEffectiveLimitsRequest, context: Ctx
    ) -> wallet_pb2.GetEffectiveLimitsResponse:
        caps = await self._limits.effective_limits(request.wallet_id)
        reply = wallet_pb2.GetEffectiveLimitsResponse(kyc_tier=tier_to_proto(caps.kyc_tier))
        for action in caps.limits:
            reply.limits.add(
                action=action_to_proto(action.action),
                per_transaction=money(action.per_transaction.amount_minor, caps.currency),
                daily=money(action.daily.amount_minor, caps.currency),
                monthly=money(action.monthly.amount_minor, caps.currency),
            )
        return reply

    async def SetKycTier(
        self, request: wallet_pb2.SetKycTierRequest, context: Ctx
    ) -> wallet_pb2.SetKycTierResponse:
        wallet = await self._tiers.set_kyc_tier(
            cmd.SetKycTier(
                parse_uuid(request.user_id, "user_id"),
                tier_from_proto(request.kyc_tier),
                request.submission_id,
                idempotency_key(request, required=True),
            )
        )
        return wallet_pb2.SetKycTierResponse(wallet=wallet_to_proto(wallet, staff_view=True))

    async def CreateNotification(
        self, request: wallet_pb2.CreateNotificationRequest, context: Ctx
    ) -> wallet_pb2.CreateNotificationResponse:
        created = await self._notes.create_notification(
            notes.CreateNotification(
                request.request_id,
                parse_uuid(request.user_id, "user_id"),
                kind_from_proto(request.kind),
                request.title,
                request.body,
            )
        )
        return wallet_pb2.CreateNotificationResponse(
            notification=notification_to_proto(created.notification)
        )

    async def CreateNotifications(
        self, request: wallet_pb2.CreateNotificationsRequest, context: Ctx
    ) -> wallet_pb2.CreateNotificationsResponse:
        notes.check_batch_size(len(request.notifications))  # before any item is parsed
        created = await self._notes.create_notifications(
            notification_commands(request.notifications)
        )
        return wallet_pb2.CreateNotificationsResponse(
            notifications=[notification_to_proto(c.notification) for c in created]
        )
