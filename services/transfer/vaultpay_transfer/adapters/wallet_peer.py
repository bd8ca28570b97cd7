"""transfer's client of the wallet service, with its failures translated at the boundary.

- `GrpcWalletGate`: a movement's PIN and IP checks, as one WalletInternalService
  VerifyTransferPin call with the client_ip (with a wallet that does not answer ip_trust yet,
  a CheckIpTrust call follows), under our service identity. Its kyc_tier, set when the
  address was not found trusted, becomes `MovementChecked.kyc_verified`. wallet's refusals of the caller (INVALID_PIN with its remaining attempts,
  PIN_LOCKED, PIN_NOT_SET, PIN_CHECK_IN_PROGRESS, WALLET_FROZEN, IDEMPOTENCY_KEY_*, a bad
  `pin`) reach the client unchanged: same code, reason, message, metadata and retry delay.
  wallet's INVALID_ARGUMENT about any other field is about what transfer sent (its user id,
  check id or address), not the client's request: logged as an ERROR and answered INTERNAL.
  A caller's deadline too short for the check and the ledger call is DEADLINE_EXCEEDED
  before wallet is asked; a request without a client address (a caller on a unix socket) is
  an untrusted address, never a CheckIpTrust with an empty one. Anything else (wallet down,
  our identity refused, a deadline) is WALLET_UNAVAILABLE: the movement did not happen.
- `GrpcWalletNotifications`: notifications for the outbox relay, the event id as the
  request_id (wallet dedupes). The deliveries asked for in the same event-loop turn (the
  relay starts up to 8 at once) go as one CreateNotifications call (one alone: a
  CreateNotification), and each caller gets its own outcome. A transient failure of the call
  (UNAVAILABLE, DEADLINE_EXCEEDED, PERMISSION_DENIED: our identity refused, ...) fails every
  event of it, to be retried; a refusal of the batch (INVALID_ARGUMENT, FAILED_PRECONDITION,
  NOT_FOUND, or a wallet without CreateNotifications) is followed by one CreateNotification
  per event, so only the events wallet refuses dead-letter. Each call has the same deadline (`timeout`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import grpc
from google.rpc import error_details_pb2, status_pb2

from vaultpay.type.v1 import kyc_tier_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.context import remaining_seconds
from vaultpay_common.errors import (
    DeadlineExceededError,
    DomainError,
    ErrorKind,
    FieldViolation,
    ValidationError,
)
from vaultpay_common.grpc.auth_client import outgoing_metadata
from vaultpay_common.outbox import DeliveryError, PermanentDeliveryError, UnknownToThisBuildError
from vaultpay_transfer.domain.errors import (
    PassedThroughError,
    WalletNotFoundError,
    WalletUnavailableError,
)
from vaultpay_transfer.domain.notifications import NotificationText
from vaultpay_transfer.service_layer.ports import IpCheck, MovementChecked

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
# wallet's refusals of one event. PERMISSION_DENIED is not among them: it refuses our identity
# or our right to the method (a deployment fault, the same for every event, fixed by a
# deploy), so the relay retries it rather than dead-letter every event at its first attempt.
_PERMANENT = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
}
# A batch wallet refuses as a whole is sent again one event at a time, so each event gets
# its own outcome; UNIMPLEMENTED: a wallet that predates CreateNotifications.
_BATCH_REFUSED = _PERMANENT | {grpc.StatusCode.UNIMPLEMENTED}
# wallet's cap on the items of one CreateNotifications call.
MAX_NOTIFICATIONS_PER_CALL = 100
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


# The one field of wallet's check that is the client's own: the movement's `pin`.
_CLIENT_FIELDS = frozenset({"pin"})


class WalletRefusedOurRequestError(RuntimeError):
    """wallet found what transfer sent invalid (not the client's PIN): a bug between the two
    services, answered INTERNAL, never blamed on a field the client did not send."""


def wallet_refusal(exc: grpc.aio.AioRpcError) -> Exception:
    """The error a failed wallet call becomes (see the module docstring): a DomainError the
    client is answered with, or WalletRefusedOurRequestError (INTERNAL)."""
    kind = _CALLER_CODES.get(exc.code())
    status = _rich_status(exc)
    if kind is None or status is None:
        log.warning("wallet call failed", extra={"peer": "wallet", "code": exc.code().name})
        return WalletUnavailableError()
    info = error_details_pb2.ErrorInfo()
    retry = error_details_pb2.RetryInfo()
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            detail.Unpack(retry)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    if kind is ErrorKind.INVALID_ARGUMENT:
        others = sorted({v.field for v in violations} - _CLIENT_FIELDS)
        if others or not violations:
            log.error(
                "wallet refused transfer's PIN check as invalid",
                extra={"peer": "wallet", "fields": ",".join(others), "reason": info.reason},
            )
            return WalletRefusedOurRequestError(f"wallet refused the check: {status.message}")
        error: DomainError = ValidationError(violations)
        error.reason = info.reason or error.reason
        return error
    if info.reason == WalletNotFoundError.reason:
        # wallet's "no such wallet" is about the caller's own wallet here (a movement checks
        # its sender's PIN), not the recipient: said as TopUp says it.
        return WalletNotFoundError()
    passed = PassedThroughError(
        kind, info.reason or exc.code().name, status.message, dict(info.metadata)
    )
    if retry.HasField("retry_delay"):
        delay = retry.retry_delay  # whole seconds, rounded up (never sooner than told)
        passed.retry_after_seconds = max(1, delay.seconds + (1 if delay.nanos > 0 else 0))
    return passed


def _kyc_verified(tier: int) -> bool | None:
    """VerifyTransferPinResponse.kyc_tier as the movement reads it: UNSPECIFIED (a trusted
    address, no address, or a wallet that predates the field) tells nothing."""
    if tier == kyc_tier_pb2.KYC_TIER_UNSPECIFIED:
        return None
    return tier != kyc_tier_pb2.KYC_TIER_NONE


# What a movement keeps of its caller's deadline for its ledger call after wallet answers.
LEDGER_CALL_RESERVE = 0.25  # seconds


class GrpcWalletGate:
    def __init__(self, channel: grpc.aio.Channel, token: TokenSource, timeout: float) -> None:
        self._stub = wallet_pb2_grpc.WalletInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout

    def _call_timeout(self) -> float:
        """The peer timeout, or what is left of our caller's deadline less the ledger call's
        reserve if that is shorter (gRPC's deadline propagation): wallet then knows when
        nobody waits any more, and a check that passes leaves time to move the money. A
        deadline that leaves no time for both is DEADLINE_EXCEEDED here, not wallet's
        failure: nothing was asked, nothing moved."""
        left = remaining_seconds()
        if left is None:
            return self._timeout
        timeout = min(self._timeout, left - LEDGER_CALL_RESERVE)
        if timeout <= 0:
            raise DeadlineExceededError(
                "too little of the request's deadline is left to check the PIN and move the money"
            )
        return timeout

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            return outgoing_metadata(await self._token())
        except Exception as exc:  # auth down: no identity, no check, nothing moved
            raise WalletUnavailableError() from exc

    async def check_movement(
        self, user_id: str, pin: str, client_ip: str, check_id: str
    ) -> MovementChecked:
        metadata = await self._metadata()
        request = wallet_pb2.VerifyTransferPinRequest(
            request_id=check_id, user_id=user_id, pin=pin, client_ip=client_ip
        )
        timeout = self._call_timeout()
        try:
            reply = await self._stub.VerifyTransferPin(request, metadata=metadata, timeout=timeout)
            if reply.HasField("ip_trust"):
                ip = IpCheck(bool(reply.ip_trust.trusted), bool(reply.ip_trust.confirmation_sent))
            elif not client_ip:  # no address to trust (wallet checked only the PIN)
                ip = IpCheck(trusted=False, confirmation_sent=False)
            else:  # a wallet that checks only the PIN
                timeout = self._call_timeout()
                answer = await self._stub.CheckIpTrust(
                    wallet_pb2.CheckIpTrustRequest(
                        request_id=check_id, user_id=user_id, client_ip=client_ip
                    ),
                    metadata=metadata,
                    timeout=timeout,
                )
                ip = IpCheck(bool(answer.trusted), bool(answer.confirmation_sent))
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED and timeout < self._timeout:
                # The caller's own deadline ran out while wallet checked (a short grpc-timeout
                # against a bcrypt check): 504 DEADLINE_EXCEEDED, as when no time was left at
                # all, not 503 WALLET_UNAVAILABLE with a WARNING blaming a healthy wallet
                # (review of 2026-12-05). Nothing moved.
                raise DeadlineExceededError(
                    "the request's deadline passed while its PIN was being checked"
                ) from exc
            raise wallet_refusal(exc) from exc
        return MovementChecked(str(reply.wallet_id), ip, _kyc_verified(reply.kyc_tier))


@dataclass(frozen=True, slots=True)
class _Delivery:
    request: wallet_pb2.CreateNotificationRequest
    outcome: asyncio.Future[None]


# How much of wallet's message a failed delivery keeps (it names the field and the rule, never
# the notification's text): what `dead-letters` shows an operator about why wallet refused.
_DETAILS_KEPT = 200


def _failed(call: str, exc: grpc.aio.AioRpcError) -> DeliveryError:
    details = (exc.details() or "")[:_DETAILS_KEPT]
    message = f"wallet {call} failed: {exc.code().name}" + (f": {details}" if details else "")
    error = PermanentDeliveryError(message) if exc.code() in _PERMANENT else DeliveryError(message)
    error.__cause__ = exc
    return error


class GrpcWalletNotifications:
    """The relay's notifier; batches what is asked for in one event-loop turn (see the module
    docstring). Each caller awaits only its own outcome: a caller cancelled (its delivery
    timed out) leaves the call it is part of to end on its own."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: TokenSource,
        timeout: float,
        *,
        max_batch: int = MAX_NOTIFICATIONS_PER_CALL,
    ) -> None:
        if not 1 <= max_batch <= MAX_NOTIFICATIONS_PER_CALL:
            raise ValueError(f"max_batch must be between 1 and {MAX_NOTIFICATIONS_PER_CALL}")
        self._stub = wallet_pb2_grpc.WalletInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout
        self._max_batch = max_batch
        self._waiting: list[_Delivery] = []
        self._calls: set[asyncio.Task[None]] = set()

    async def notify(self, event_id: str, user_id: str, text: NotificationText) -> None:
        loop = asyncio.get_running_loop()
        request = wallet_pb2.CreateNotificationRequest(
            request_id=event_id,
            user_id=user_id,
            kind=_KINDS[text.kind],
            title=text.title,
            body=text.body,
        )
        delivery = _Delivery(request, loop.create_future())
        self._waiting.append(delivery)
        if len(self._waiting) == 1:
            loop.call_soon(self._send_waiting)  # after the others asked for in this turn
        await delivery.outcome

    def _send_waiting(self) -> None:
        waiting = [d for d in self._waiting if not d.outcome.done()]  # not given up meanwhile
        self._waiting = []
        for start in range(0, len(waiting), self._max_batch):
            call = asyncio.create_task(self._deliver(waiting[start : start + self._max_batch]))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _deliver(self, batch: Sequence[_Delivery]) -> None:
        try:
            try:
                metadata = outgoing_metadata(await self._token())
            except Exception as exc:
                error = f"no service token: {type(exc).__name__}"
                _settle(batch, lambda: DeliveryError(error))
                return
            if len(batch) == 1:
                await self._deliver_one(batch[0], metadata)
            else:
                await self._deliver_batch(batch, metadata)
        finally:  # a bug or a cancellation: no caller is left waiting
            _settle(batch, lambda: DeliveryError("wallet notification call ended unanswered"))

    async def _deliver_batch(
        self, batch: Sequence[_Delivery], metadata: tuple[tuple[str, str], ...]
    ) -> None:
        request = wallet_pb2.CreateNotificationsRequest(notifications=[d.request for d in batch])
        try:
            await self._stub.CreateNotifications(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _BATCH_REFUSED:
                _settle(batch, partial(_failed, "CreateNotifications", exc))
                return
            log.warning(
                "wallet refused a notification batch; delivering its events one by one",
                extra={"peer": "wallet", "code": exc.code().name, "events": len(batch)},
            )
            await asyncio.gather(*(self._deliver_one(d, metadata) for d in batch))
            return
        _settle(batch, None)

    async def _deliver_one(
        self, delivery: _Delivery, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        try:
            await self._stub.CreateNotification(
                delivery.request, metadata=metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if delivery.request.kind and _refused_only(exc, "kind"):
                # A kind of ours a wallet of an older build does not know (mid-rollout):
                # retried, for a wallet that knows it, not dead-lettered.
                message = f"wallet does not know notification kind {delivery.request.kind}"
                _settle([delivery], partial(UnknownToThisBuildError, message))
                return
            _settle([delivery], partial(_failed, "CreateNotification", exc))
            return
        _settle([delivery], None)


def _refused_only(exc: grpc.aio.AioRpcError, field: str) -> bool:
    """wallet answered INVALID_ARGUMENT naming `field` and nothing else."""
    status = _rich_status(exc)
    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT or status is None:
        return False
    fields: set[str] = set()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields |= {v.field for v in bad.field_violations}
    return fields == {field}


def _settle(batch: Sequence[_Delivery], error: Callable[[], Exception] | None) -> None:
    """Resolves the outcomes not yet resolved (or given up): delivered, or failed with a fresh
    error each (an exception object is raised in one caller only)."""
    for delivery in batch:
        if delivery.outcome.done():
            continue
        if error is None:
            delivery.outcome.set_result(None)
        else:
            delivery.outcome.set_exception(error())
