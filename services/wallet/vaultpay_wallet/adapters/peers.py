"""Clients of the wallet's peers, with their failures translated at the boundary.

Each answers what the service layer asks in its own terms: a user's contact for mail and
their role for staff actions (auth), limit usage and transfer figures (transfer), pending KYC
(kyc). Figures for display degrade to "unknown" (None) when the peer is down or not deployed
yet, because a dashboard or a limits screen must still work; the mail contact raises, so the
outbox retries the delivery later; the role raises AUTH_UNAVAILABLE, so a staff action whose
rank cannot be checked fails closed.

Limit usage (GetMyWallet, GetLimits) is asked for on every call and never cached: it changes
with every money movement. What is remembered is only that transfer could not answer: for
`usage_retry_seconds` after a failure, usage is reported unknown without calling again, so
during an outage each read does not pay for a doomed call (or, with a slow transfer, wait its
whole timeout), and the outage is logged once, not once per read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay.kyc.v1 import kyc_pb2, kyc_pb2_grpc
from vaultpay.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from vaultpay.type.v1 import limit_action_pb2, money_pb2
from vaultpay_common.context import Role
from vaultpay_common.grpc.auth_client import outgoing_metadata
from vaultpay_common.grpc.user_roles import GrpcUserRoles
from vaultpay_common.outbox import DeliveryError, PermanentDeliveryError
from vaultpay_wallet.domain.limits import ActionUsage, LimitAction, UsageReading
from vaultpay_wallet.service_layer.ports import CurrencyAmount, TransferStats

__all__ = ["GrpcKycStats", "GrpcTransferFigures", "GrpcUserContacts", "UserContact"]

log = logging.getLogger(__name__)

TokenSource = Callable[[], Awaitable[str]]
_GONE = {grpc.StatusCode.NOT_FOUND}


@dataclass(frozen=True, slots=True)
class UserContact:
    email: str
    full_name: str
    active: bool


class GrpcUserContacts:
    """auth's GetUserContact for the contact mail needs, and its GetUserRole (through
    `GrpcUserRoles`) for the role staff actions need (`UserRoleSource`)."""

    def __init__(self, channel: grpc.aio.Channel, token: TokenSource, timeout: float) -> None:
        self._stub = auth_pb2_grpc.AuthInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout
        self._roles = GrpcUserRoles(channel, token, timeout, whose="wallet owner")

    async def _get(self, user_id: str) -> auth_pb2.GetUserContactResponse:
        reply: auth_pb2.GetUserContactResponse = await self._stub.GetUserContact(
            auth_pb2.GetUserContactRequest(user_id=user_id),
            metadata=outgoing_metadata(await self._token()),
            timeout=self._timeout,
        )
        return reply

    async def role_of(self, user_id: str) -> Role:
        """Any failure is AUTH_UNAVAILABLE (fail closed; `vaultpay_common.grpc.user_roles`)."""
        return await self._roles.role_of(user_id)

    async def contact(self, user_id: str) -> UserContact:
        try:
            reply = await self._get(user_id)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _GONE:
                raise PermanentDeliveryError(f"user {user_id} is unknown to auth") from exc
            raise DeliveryError(f"auth GetUserContact failed: {exc.code().name}") from exc
        return UserContact(reply.email, reply.full_name, reply.active)


_ACTIONS = {
    limit_action_pb2.LIMIT_ACTION_SEND: LimitAction.SEND,
    limit_action_pb2.LIMIT_ACTION_WITHDRAW: LimitAction.WITHDRAW,
    limit_action_pb2.LIMIT_ACTION_TOP_UP: LimitAction.TOP_UP,
}


def _amounts(values: Iterable[money_pb2.Money]) -> tuple[CurrencyAmount, ...]:
    return tuple(CurrencyAmount(m.currency_code, m.amount_minor) for m in values)


class GrpcTransferFigures:
    """transfer's GetLimitUsage and GetTransferStats; None while transfer cannot answer."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: TokenSource,
        timeout: float,
        *,
        usage_retry_seconds: float = 1.0,
    ) -> None:
        self._stub = transfer_pb2_grpc.TransferInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout
        self._usage_retry_seconds = usage_retry_seconds
        self._usage_down_until: float | None = None  # monotonic; None while transfer answers

    async def usage(self, wallet_id: str) -> UsageReading | None:
        down_until = self._usage_down_until
        if down_until is not None and time.monotonic() < down_until:
            return None
        try:
            reply = await self._stub.GetLimitUsage(
                transfer_pb2.GetLimitUsageRequest(wallet_id=wallet_id),
                metadata=outgoing_metadata(await self._token()),
                timeout=self._timeout,
            )
        except Exception as exc:  # any failure of an optional peer: usage is unknown
            if down_until is None:
                log.info(
                    "limit usage unknown until transfer answers again",
                    extra={"peer": "transfer", "error": type(exc).__name__},
                )
            self._usage_down_until = time.monotonic() + self._usage_retry_seconds
            return None
        if down_until is not None:
            log.info("limit usage known again", extra={"peer": "transfer"})
            self._usage_down_until = None
        read_at = reply.read_time.ToDatetime(tzinfo=UTC) if reply.HasField("read_time") else None
        return UsageReading(
            read_at,
            [
                ActionUsage(
                    _ACTIONS[u.action], u.daily_used.amount_minor, u.monthly_used.amount_minor
                )
                for u in reply.usage
                if u.action in _ACTIONS
            ],
        )

    async def stats(self, now: datetime) -> TransferStats | None:
        try:
            reply = await self._stub.GetTransferStats(
                transfer_pb2.GetTransferStatsRequest(),
                metadata=outgoing_metadata(await self._token()),
                timeout=self._timeout,
            )
        except Exception as exc:
            log.info(
                "transfer figures missing", extra={"peer": "transfer", "error": type(exc).__name__}
            )
            return None
        return TransferStats(
            reply.daily_transaction_count,
            _amounts(reply.daily_volumes),
            reply.monthly_transaction_count,
            _amounts(reply.monthly_volumes),
            reply.open_dispute_count,
        )


class GrpcKycStats:
    """kyc's GetKycStats; None while kyc cannot answer."""

    def __init__(self, channel: grpc.aio.Channel, token: TokenSource, timeout: float) -> None:
        self._stub = kyc_pb2_grpc.KycInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout

    async def pending_count(self) -> int | None:
        try:
            reply = await self._stub.GetKycStats(
                kyc_pb2.GetKycStatsRequest(),
                metadata=outgoing_metadata(await self._token()),
                timeout=self._timeout,
            )
        except Exception as exc:
            log.info("kyc figures missing", extra={"peer": "kyc", "error": type(exc).__name__})
            return None
        return int(reply.pending_count)
