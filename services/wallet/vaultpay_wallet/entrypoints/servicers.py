"""gRPC servicers of the wallet service. Each method: convert the request, await a use case,
convert the result. No SQL, no try/except, no context.abort here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.context import CLIENT_IP
from vaultpay_common.grpc.convert import current_principal, page_scope, timestamp
from vaultpay_common.grpc.idempotency import idempotency_key
from vaultpay_common.grpc.servicer import ServicerContext
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_common.ids import parse_optional_uuid, parse_uuid
from vaultpay_common.pagination import PageTokens, paginate, times_checked
from vaultpay_wallet.domain.currency import DEFAULT_CURRENCY
from vaultpay_wallet.domain.ip_trust import TrustedIpCursor, canonical_ip_hash
from vaultpay_wallet.domain.notifications import NotificationCursor
from vaultpay_wallet.entrypoints.convert import (
    action_from_path,
    action_limits_to_proto,
    money,
    notification_to_proto,
    trusted_ip_to_proto,
    wallet_to_proto,
)
from vaultpay_wallet.service_layer import commands as cmd
from vaultpay_wallet.service_layer import ip_trust as ip
from vaultpay_wallet.service_layer import notifications as notes
from vaultpay_wallet.service_layer.ip_trust import IpTrustService
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.notifications import NotificationService
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.wallets import WalletService

__all__ = ["WalletServicer", "amount_input"]

Ctx = ServicerContext


def amount_input(request: Any, field: str) -> cmd.AmountInput | None:
    """An optional Money field of a request as the use cases take it."""
    if not request.HasField(field):
        return None
    value = getattr(request, field)
    return cmd.AmountInput(value.currency_code, value.amount_minor)


# Fields as the use cases read them, so that a retry spelt otherwise is the same request (the
# README: ids and text enter a fingerprint in the one spelling the service reads them in).
_CREATE_WALLET: Mapping[str, Callable[[str], str]] = {
    "display_name": str.strip,
    # Empty is read as the default: the default enters as empty (an empty field is never
    # rewritten, `idempotency_key`), so "", "INR" and " INR" are one request.
    "currency_code": lambda code: "" if code.strip() == DEFAULT_CURRENCY else code.strip(),
}
_ACTION: Mapping[str, Callable[[str], str]] = {"action": lambda action: action.strip().lower()}


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(
        self,
        wallets: WalletService,
        pins: PinService,
        limits: LimitsService,
        ip_trust: IpTrustService,
        notifications: NotificationService,
        page_tokens: PageTokens,
        *,
        fingerprint_key: bytes,
    ) -> None:
        self._fingerprint_key = fingerprint_key
        self._wallets = wallets
        self._pins = pins
        self._limits = limits
        self._ip = ip_trust
        self._notes = notifications
        self._tokens = page_tokens

    # ----- the wallet ---------------------------------------------------------------------

    async def CreateWallet(
        self, request: wallet_pb2.CreateWalletRequest, context: Ctx
    ) -> wallet_pb2.CreateWalletResponse:
        wallet = await self._wallets.create_wallet(
            cmd.CreateWallet(
                current_principal().user_id,
                request.display_name,
                request.currency_code,
                idempotency_key(request, canonical=_CREATE_WALLET),
            )
        )
        return wallet_pb2.CreateWalletResponse(wallet=wallet_to_proto(wallet))

    async def GetMyWallet(
        self, request: wallet_pb2.GetMyWalletRequest, context: Ctx
    ) -> wallet_pb2.GetMyWalletResponse:
        view = await self._wallets.get_my_wallet(current_principal().user_id)
        return wallet_pb2.GetMyWalletResponse(
            wallet=wallet_to_proto(view.wallet),
            limits=[action_limits_to_proto(a) for a in view.limits],
        )

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: Ctx
    ) -> wallet_pb2.GetBalanceResponse:
        balance = await self._wallets.get_balance(current_principal().user_id)
        return wallet_pb2.GetBalanceResponse(
            wallet_id=balance.wallet_id,
            balance=money(balance.balance_minor, balance.currency),
            read_time=timestamp(balance.read_at),
        )

    async def LookupWallet(
        self, request: wallet_pb2.LookupWalletRequest, context: Ctx
    ) -> wallet_pb2.LookupWalletResponse:
        view = await self._wallets.lookup_wallet(request.wallet_id)
        return wallet_pb2.LookupWalletResponse(
            wallet=wallet_pb2.WalletPublicView(
                wallet_id=view.wallet_id,
                display_name=view.display_name,
                currency_code=view.currency,
                can_receive=view.can_receive,
            )
        )

    async def FreezeMyWallet(
        self, request: wallet_pb2.FreezeMyWalletRequest, context: Ctx
    ) -> wallet_pb2.FreezeMyWalletResponse:
        wallet = await self._wallets.freeze_my_wallet(
            cmd.FreezeMyWallet(
                current_principal().user_id,
                request.note,
                idempotency_key(request, canonical={"note": str.strip}),
            )
        )
        return wallet_pb2.FreezeMyWalletResponse(wallet=wallet_to_proto(wallet))

    async def UnfreezeMyWallet(
        self, request: wallet_pb2.UnfreezeMyWalletRequest, context: Ctx
    ) -> wallet_pb2.UnfreezeMyWalletResponse:
        wallet = await self._wallets.unfreeze_my_wallet(
            cmd.UnfreezeMyWallet(current_principal().user_id, idempotency_key(request))
        )
        return wallet_pb2.UnfreezeMyWalletResponse(wallet=wallet_to_proto(wallet))

    async def CloseMyWallet(
        self, request: wallet_pb2.CloseMyWalletRequest, context: Ctx
    ) -> wallet_pb2.CloseMyWalletResponse:
        wallet = await self._wallets.close_my_wallet(
            cmd.CloseMyWallet(current_principal().user_id, idempotency_key(request))
        )
        return wallet_pb2.CloseMyWalletResponse(wallet=wallet_to_proto(wallet))

    # ----- the PIN ------------------------------------------------------------------------

    def _pin_key(
        self,
        request: Message,
        *pins: str,
        canonical: dict[str, Callable[[str], str]] | None = None,
    ) -> IdempotencyKey | None:
        """The call's key with its PINs keyed into the fingerprint (grpc/idempotency.py)."""
        return idempotency_key(
            request, secret=pins, secret_key=self._fingerprint_key, canonical=canonical
        )

    async def SetPin(
        self, request: wallet_pb2.SetPinRequest, context: Ctx
    ) -> wallet_pb2.SetPinResponse:
        done = await self._pins.set_pin(
            cmd.SetPin(
                current_principal().user_id,
                request.pin,
                request.pin_confirmation,
                self._pin_key(request, "pin", "pin_confirmation"),
            )
        )
        return wallet_pb2.SetPinResponse(pin_update_time=timestamp(done.pin_updated_at))

    async def VerifyPin(
        self, request: wallet_pb2.VerifyPinRequest, context: Ctx
    ) -> wallet_pb2.VerifyPinResponse:
        await self._pins.verify_pin(
            cmd.VerifyPin(
                current_principal().user_id,
                request.pin,
                self._pin_key(request, "pin"),
                client_ip=CLIENT_IP.get(),
            )
        )
        return wallet_pb2.VerifyPinResponse()

    async def ChangePin(
        self, request: wallet_pb2.ChangePinRequest, context: Ctx
    ) -> wallet_pb2.ChangePinResponse:
        done = await self._pins.change_pin(
            cmd.ChangePin(
                current_principal().user_id,
                request.current_pin,
                request.new_pin,
                request.new_pin_confirmation,
                self._pin_key(request, "current_pin", "new_pin", "new_pin_confirmation"),
                client_ip=CLIENT_IP.get(),
            )
        )
        return wallet_pb2.ChangePinResponse(pin_update_time=timestamp(done.pin_updated_at))

    async def RequestPinReset(
        self, request: wallet_pb2.RequestPinResetRequest, context: Ctx
    ) -> wallet_pb2.RequestPinResetResponse:
        done = await self._pins.request_pin_reset(
            cmd.RequestPinReset(current_principal().user_id, idempotency_key(request))
        )
        return wallet_pb2.RequestPinResetResponse(
            token_expire_time=timestamp(done.token_expires_at)
        )

    async def ResetPin(
        self, request: wallet_pb2.ResetPinRequest, context: Ctx
    ) -> wallet_pb2.ResetPinResponse:
        done = await self._pins.reset_pin(
            cmd.ResetPin(
                request.token,
                request.new_pin,
                request.new_pin_confirmation,
                # The token as the use case reads it (trimmed): a retry pasted with a
                # trailing newline is the same request (review of 2026-12-05).
                self._pin_key(
                    request, "new_pin", "new_pin_confirmation", canonical={"token": str.strip}
                ),
            )
        )
        return wallet_pb2.ResetPinResponse(
            pin_update_time=timestamp(done.pin_updated_at), lockout_lifted=done.lockout_lifted
        )

    # ----- limits -------------------------------------------------------------------------

    async def GetLimits(
        self, request: wallet_pb2.GetLimitsRequest, context: Ctx
    ) -> wallet_pb2.GetLimitsResponse:
        view = await self._limits.get_limits(current_principal().user_id)
        return wallet_pb2.GetLimitsResponse(
            kyc_tier=wallet_to_proto(view.wallet).kyc_tier,
            limits=[action_limits_to_proto(a) for a in view.limits],
        )

    async def SetMyLimit(
        self, request: wallet_pb2.SetMyLimitRequest, context: Ctx
    ) -> wallet_pb2.SetMyLimitResponse:
        view = await self._limits.set_my_limit(
            cmd.SetMyLimit(
                current_principal().user_id,
                request.action,
                amount_input(request, "per_transaction"),
                amount_input(request, "daily"),
                amount_input(request, "monthly"),
                idempotency_key(request, canonical=_ACTION),
            )
        )
        return wallet_pb2.SetMyLimitResponse(limits=action_limits_to_proto(view))

    async def DeleteMyLimit(
        self, request: wallet_pb2.DeleteMyLimitRequest, context: Ctx
    ) -> wallet_pb2.DeleteMyLimitResponse:
        action_from_path(request.action)
        view = await self._limits.delete_my_limit(
            cmd.DeleteMyLimit(
                current_principal().user_id,
                request.action,
                idempotency_key(request, canonical=_ACTION),
            )
        )
        return wallet_pb2.DeleteMyLimitResponse(limits=action_limits_to_proto(view))

    # ----- IP trust -----------------------------------------------------------------------

    async def ListTrustedIps(
        self, request: wallet_pb2.ListTrustedIpsRequest, context: Ctx
    ) -> wallet_pb2.ListTrustedIpsResponse:
        user_id = current_principal().user_id
        page = await paginate(
            self._tokens,
            page_size=request.page_size,
            page_token=request.page_token,
            scope=page_scope(),
            filters={"user": user_id},
            fetch_slice=lambda after, limit: self._ip.list_trusted_ips(
                ip.ListTrustedIps(user_id, limit, after)
            ),
            cursor_of=lambda v: TrustedIpCursor(v.first_seen_at, v.ip_hash).position(),
            parse=times_checked(TrustedIpCursor.from_position, "f"),
        )
        return wallet_pb2.ListTrustedIpsResponse(
            trusted_ips=[trusted_ip_to_proto(v) for v in page.items],
            next_page_token=page.next_page_token,
        )

    async def ConfirmIp(
        self, request: wallet_pb2.ConfirmIpRequest, context: Ctx
    ) -> wallet_pb2.ConfirmIpResponse:
        key = idempotency_key(request, canonical={"token": str.strip})  # as the use case reads it
        confirmed = await self._ip.confirm_ip(ip.ConfirmIp(request.token, key))
        return wallet_pb2.ConfirmIpResponse(trusted_ip=trusted_ip_to_proto(confirmed.trusted_ip))

    async def RevokeTrustedIp(
        self, request: wallet_pb2.RevokeTrustedIpRequest, context: Ctx
    ) -> wallet_pb2.RevokeTrustedIpResponse:
        revoked = await self._ip.revoke_trusted_ip(
            ip.RevokeTrustedIp(
                current_principal().user_id,
                request.ip_hash,
                idempotency_key(request, canonical={"ip_hash": canonical_ip_hash}),
            )
        )
        return wallet_pb2.RevokeTrustedIpResponse(
            trusted_ip=trusted_ip_to_proto(revoked.trusted_ip)
        )

    # ----- notifications ------------------------------------------------------------------

    async def ListNotifications(
        self, request: wallet_pb2.ListNotificationsRequest, context: Ctx
    ) -> wallet_pb2.ListNotificationsResponse:
        user_id = current_principal().user_id
        unread = request.unread_only
        page = await paginate(
            self._tokens,
            page_size=request.page_size,
            page_token=request.page_token,
            scope=page_scope(),
            filters={"user": user_id, "unread": unread},
            fetch_slice=lambda after, limit: self._notes.list_notifications(
                notes.ListNotifications(user_id, limit, unread, after)
            ),
            cursor_of=lambda n: NotificationCursor.after(n).position(),
            parse=times_checked(NotificationCursor.from_position, "t"),
        )
        return wallet_pb2.ListNotificationsResponse(
            notifications=[notification_to_proto(n) for n in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetUnreadCount(
        self, request: wallet_pb2.GetUnreadCountRequest, context: Ctx
    ) -> wallet_pb2.GetUnreadCountResponse:
        count = await self._notes.get_unread_count(
            notes.GetUnreadCount(current_principal().user_id)
        )
        return wallet_pb2.GetUnreadCountResponse(unread_count=count)

    async def MarkNotificationRead(
        self, request: wallet_pb2.MarkNotificationReadRequest, context: Ctx
    ) -> wallet_pb2.MarkNotificationReadResponse:
        marked = await self._notes.mark_read(
            notes.MarkNotificationRead(
                current_principal().user_id,
                parse_uuid(request.notification_id, "notification_id"),
                # parse_uuid has lowered any upper-case hex: a retry so spelled is the same
                idempotency_key(request, canonical={"notification_id": str.lower}),
            )
        )
        return wallet_pb2.MarkNotificationReadResponse(
            notification=notification_to_proto(marked.notification)
        )

    async def MarkAllNotificationsRead(
        self, request: wallet_pb2.MarkAllNotificationsReadRequest, context: Ctx
    ) -> wallet_pb2.MarkAllNotificationsReadResponse:
        marked = await self._notes.mark_all_read(
            notes.MarkAllNotificationsRead(
                current_principal().user_id,
                # parse_optional_uuid lowers upper-case hex: a retry so spelled is the same
                idempotency_key(request, canonical={"up_to_notification_id": str.lower}),
                parse_optional_uuid(request.up_to_notification_id, "up_to_notification_id"),
            )
        )
        return wallet_pb2.MarkAllNotificationsReadResponse(marked_count=marked.marked_count)

    async def WatchNotifications(
        self, request: wallet_pb2.WatchNotificationsRequest, context: Ctx
    ) -> AsyncIterator[wallet_pb2.WatchNotificationsResponse]:
        watch = notes.WatchNotifications(current_principal().user_id)
        async with self._notes.watch(watch) as events:
            async for event in events:
                message = wallet_pb2.WatchNotificationsResponse(unread_count=event.unread_count)
                if event.notification is not None:
                    message.notification.CopyFrom(notification_to_proto(event.notification))
                yield message
