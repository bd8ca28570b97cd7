"""transfer's client of the wallet service, with its failures translated at the boundary.

- `GrpcWalletGate`: WalletInternalService.VerifyTransferPin and CheckIpTrust with our service
  identity. wallet's refusals of the caller (INVALID_PIN with its remaining attempts,
  PIN_LOCKED, PIN_NOT_SET, PIN_CHECK_IN_PROGRESS, WALLET_FROZEN, IDEMPOTENCY_KEY_*, invalid
  input) reach the client unchanged: same code, reason, message and metadata. Anything else
  (wallet down, our identity refused, a deadline) is WALLET_UNAVAILABLE: the movement did
  not happen.
- `GrpcWalletNotifications`: CreateNotification for the outbox relay, the event id as the
  request_id (wallet dedupes). Transient failures are retried; a refusal dead-letters.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
from google.rpc import error_details_pb2, status_pb2

from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.errors import DomainError, ErrorKind, FieldViolation, ValidationError
from vaultpay_common.grpc.auth_client import outgoing_metadata
from vaultpay_common.outbox import DeliveryError, PermanentDeliveryError
from vaultpay_transfer.domain.errors import PassedThroughError, WalletUnavailableError
from vaultpay_transfer.domain.notifications import NotificationText
from vaultpay_transfer.service_layer.ports import IpCheck

__all__ = ["GrpcWalletGate", "GrpcWalletNotifications", "wallet_refusal"]

log = logging.getLogger(__name__)

TokenSource = Callable[[], Awaitable[str]]
_DETAILS_KEY = "grpc-status-details-bin"
# wallet's answers about the caller's own request or wallet: handed on as they are.
_CALLER_CODES: dict[grpc.StatusCode, ErrorKind] = {
    grpc.StatusCode.FAILED_PRECONDITION: ErrorKind.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    grpc.StatusCode.ABORTED: ErrorKind.ABORTED,
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorKind.RESOURCE_EXHAUSTED,
}
_PERMANENT = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}
_KINDS = {
    "MONEY_SENT": wallet_pb2.NOTIFICATION_KIND_MONEY_SENT,
    "MONEY_RECEIVED": wallet_pb2.NOTIFICATION_KIND_MONEY_RECEIVED,
    "TOP_UP": wallet_pb2.NOTIFICATION_KIND_TOP_UP,
    "WITHDRAWAL": wallet_pb2.NOTIFICATION_KIND_WITHDRAWAL,
}


def _rich_status(exc: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for item in exc.trailing_metadata() or ():
        key, value = item
        if key == _DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def wallet_refusal(exc: grpc.aio.AioRpcError) -> DomainError:
    """The domain error a failed wallet call becomes (see the module docstring)."""
    kind = _CALLER_CODES.get(exc.code())
    status = _rich_status(exc)
    if kind is None or status is None:
        log.warning("wallet call failed", extra={"peer": "wallet", "code": exc.code().name})
        return WalletUnavailableError()
    info = error_details_pb2.ErrorInfo()
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    if kind is ErrorKind.INVALID_ARGUMENT:
        error: DomainError = ValidationError(violations or [FieldViolation("pin", status.message)])
        error.reason = info.reason or error.reason
        return error
    return PassedThroughError(
        kind, info.reason or exc.code().name, status.message, dict(info.metadata)
    )


class GrpcWalletGate:
    def __init__(self, channel: grpc.aio.Channel, token: TokenSource, timeout: float) -> None:
        self._stub = wallet_pb2_grpc.WalletInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            return outgoing_metadata(await self._token())
        except Exception as exc:  # auth down: no identity, no check, nothing moved
            raise WalletUnavailableError() from exc

    async def verify_pin(self, user_id: str, pin: str, check_id: str) -> str:
        request = wallet_pb2.VerifyTransferPinRequest(request_id=check_id, user_id=user_id, pin=pin)
        try:
            reply = await self._stub.VerifyTransferPin(
                request, metadata=await self._metadata(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise wallet_refusal(exc) from exc
        return str(reply.wallet_id)

    async def check_ip(self, user_id: str, client_ip: str, check_id: str) -> IpCheck:
        request = wallet_pb2.CheckIpTrustRequest(
            request_id=check_id, user_id=user_id, client_ip=client_ip
        )
        try:
            reply = await self._stub.CheckIpTrust(
                request, metadata=await self._metadata(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise wallet_refusal(exc) from exc
        return IpCheck(bool(reply.trusted), bool(reply.confirmation_sent))


class GrpcWalletNotifications:
    def __init__(self, channel: grpc.aio.Channel, token: TokenSource, timeout: float) -> None:
        self._stub = wallet_pb2_grpc.WalletInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout

    async def notify(self, event_id: str, user_id: str, text: NotificationText) -> None:
        try:
            metadata = outgoing_metadata(await self._token())
        except Exception as exc:
            raise DeliveryError(f"no service token: {type(exc).__name__}") from exc
        request = wallet_pb2.CreateNotificationRequest(
            request_id=event_id,
            user_id=user_id,
            kind=_KINDS[text.kind],
            title=text.title,
            body=text.body,
        )
        try:
            await self._stub.CreateNotification(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            message = f"wallet CreateNotification failed: {exc.code().name}"
            if exc.code() in _PERMANENT:
                raise PermanentDeliveryError(message) from exc
            raise DeliveryError(message) from exc
