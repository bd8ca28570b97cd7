"""kyc's client of the wallet service, with its failures translated at the boundary.

- `GrpcWalletDirectory` answers "does this user have a wallet?" for a submission. It asks
  WalletService.GetBalance *on the user's behalf*, with the caller's own access token: the
  contract has no internal lookup by user id, and the user may read their own wallet anyway.
  NOT_FOUND means no wallet; anything else means wallet cannot say (UNAVAILABLE).
- `GrpcWalletEvents` delivers the outbox's events with kyc's service identity:
  WalletInternalService.SetKycTier and CreateNotification, each with the request_id the
  handler gives (the event id, or for a tier above the event's own a key derived from it:
  deliveries.py), which wallet dedupes. Transient failures are retried by the relay; a
  refusal that retrying cannot change (unknown user, invalid event) dead-letters the event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from vaultpay.type.v1 import kyc_tier_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.context import PRINCIPAL
from vaultpay_common.grpc.auth_client import outgoing_metadata
from vaultpay_common.outbox import DeliveryError, PermanentDeliveryError
from vaultpay_kyc.domain.errors import WalletRequiredError, WalletUnavailableError
from vaultpay_kyc.domain.model import KycTier

__all__ = ["GrpcWalletDirectory", "GrpcWalletEvents"]

log = logging.getLogger(__name__)

TokenSource = Callable[[], Awaitable[str]]
# wallet's refusals of one event. PERMISSION_DENIED is not among them: it refuses our identity
# or our right to the method (a deployment fault, the same for every event, fixed by a
# deploy), so the relay retries it rather than dead-letter every event at its first attempt.
_PERMANENT = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
}
_TIERS = {
    KycTier.NONE: kyc_tier_pb2.KYC_TIER_NONE,
    KycTier.BASIC: kyc_tier_pb2.KYC_TIER_BASIC,
    KycTier.FULL: kyc_tier_pb2.KYC_TIER_FULL,
}


class GrpcWalletDirectory:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)
        self._timeout = timeout

    async def require_wallet(self, user_id: str) -> None:
        principal = PRINCIPAL.get()
        if principal is None or principal.user_id != user_id or not principal.token:
            raise RuntimeError("the wallet check runs on behalf of the calling user only")
        try:
            await self._stub.GetBalance(
                wallet_pb2.GetBalanceRequest(),
                metadata=outgoing_metadata(principal.token),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise WalletRequiredError() from exc
            log.warning("wallet check failed", extra={"peer": "wallet", "code": exc.code().name})
            raise WalletUnavailableError() from exc


class GrpcWalletEvents:
    def __init__(self, channel: grpc.aio.Channel, token: TokenSource, timeout: float) -> None:
        self._stub = wallet_pb2_grpc.WalletInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            return outgoing_metadata(await self._token())
        except Exception as exc:  # auth down: the relay retries later
            raise DeliveryError(f"no service token: {type(exc).__name__}") from exc

    def _failed(self, what: str, exc: grpc.aio.AioRpcError) -> DeliveryError:
        message = f"wallet {what} failed: {exc.code().name}"
        if exc.code() in _PERMANENT:
            return PermanentDeliveryError(message)
        return DeliveryError(message)

    async def set_kyc_tier(
        self, request_id: str, user_id: str, tier: KycTier, submission_id: str
    ) -> None:
        request = wallet_pb2.SetKycTierRequest(
            request_id=request_id,
            user_id=user_id,
            kyc_tier=_TIERS[tier],
            submission_id=submission_id,
        )
        try:
            await self._stub.SetKycTier(
                request, metadata=await self._metadata(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise self._failed("SetKycTier", exc) from exc

    async def create_notification(self, event_id: str, user_id: str, title: str, body: str) -> None:
        request = wallet_pb2.CreateNotificationRequest(
            request_id=event_id,
            user_id=user_id,
            kind=wallet_pb2.NOTIFICATION_KIND_KYC,
            title=title,
            body=body,
        )
        try:
            await self._stub.CreateNotification(
                request, metadata=await self._metadata(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise self._failed("CreateNotification", exc) from exc
