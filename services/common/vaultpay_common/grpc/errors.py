"""Error interceptor: the one place where domain errors become gRPC statuses.

A DomainError becomes its kind's status code with a google.rpc.Status carrying an
ErrorInfo (reason + domain "vaultpay.<service>"), BadRequest field violations for
ValidationError and RetryInfo for an error whose `retry_after_seconds` is set (a rate limit, a
limit window that resets). Anything unexpected is logged with its
stack and answered INTERNAL with a generic message and the request id, never the stack.
Every status it sends carries the call's `x-request-id` in its trailers: nothing was sent
before a unary call's handler answered (request_context), so a refusal is often trailers-only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from vaultpay_common.context import REQUEST_ID
from vaultpay_common.errors import AbortedError, DomainError, ErrorKind, ValidationError
from vaultpay_common.grpc.request_context import request_id_metadata
from vaultpay_common.grpc.wrapping import CallInterceptor, OpenStream, UnaryCall
from vaultpay_common.pg_failures import sqlstates

__all__ = ["ErrorInterceptor", "TransactionConflictError", "status_for"]

log = logging.getLogger(__name__)

_CODES: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.ABORTED: grpc.StatusCode.ABORTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_DETAILS_KEY = "grpc-status-details-bin"


def status_for(error: DomainError, domain: str) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The gRPC code and rich status for a domain error."""
    code = _CODES[error.kind]
    status = status_pb2.Status(code=code.value[0], message=error.message)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain)
    info.metadata.update(error.metadata)
    status.details.add().Pack(info)
    if isinstance(error, ValidationError):
        bad_request = error_details_pb2.BadRequest()
        for violation in error.violations:
            bad_request.field_violations.add(
                field=violation.field, description=violation.description
            )
        status.details.add().Pack(bad_request)
    if error.retry_after_seconds is not None:
        retry = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=max(1, error.retry_after_seconds))
        )
        status.details.add().Pack(retry)
    return code, status


# serialization_failure, deadlock_detected: the transaction was rolled back whole.
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})


class TransactionConflictError(AbortedError):
    reason = "TRANSACTION_CONFLICT"
    default_message = "the request conflicted with a concurrent one and changed nothing; retry it"


def _transaction_conflict(exc: BaseException) -> str | None:
    """The SQLSTATE of a deadlock or serialization failure along `exc`'s causes, if any."""
    return next((code for code, _ in sqlstates(exc) if code in _CONFLICT_SQLSTATES), None)


class ErrorInterceptor(CallInterceptor):
    def __init__(self, service: str) -> None:
        self._domain = f"vaultpay.{service}"

    async def _abort(self, context: Any, exc: Exception, method: str) -> None:
        if isinstance(exc, NotImplementedError):
            # The generated base servicer's answer for an RPC a service does not implement yet.
            code = grpc.StatusCode.UNIMPLEMENTED
            status = status_pb2.Status(code=code_pb2.UNIMPLEMENTED, message="not implemented yet")
            status.details.add().Pack(
                error_details_pb2.ErrorInfo(reason="NOT_IMPLEMENTED", domain=self._domain)
            )
        elif (conflict := _transaction_conflict(exc)) is not None:
            # PostgreSQL rolled the transaction back to break a deadlock or a serialization
            # conflict: nothing of it committed, and the same request may be sent again.
            # Said at WARNING with its stack: a deadlock is a lock order to look at. INTERNAL
            # told a client that might retry (and a reader of the error table) otherwise.
            log.warning(
                "transaction conflict answered ABORTED",
                exc_info=exc,
                extra={"method": method, "sqlstate": conflict},
            )
            code, status = status_for(TransactionConflictError(), self._domain)
        elif isinstance(exc, DomainError):
            code, status = status_for(exc, self._domain)
            log.info(
                "call refused",
                extra={"method": method, "code": code.name, "reason": exc.reason},
            )
        else:
            log.error("unexpected error", exc_info=exc, extra={"method": method})
            code = grpc.StatusCode.INTERNAL
            status = status_pb2.Status(
                code=code_pb2.INTERNAL,
                message=f"internal error (request id {REQUEST_ID.get()})",
            )
            info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=self._domain)
            status.details.add().Pack(info)
        # abort's trailing metadata replaces any set before, so the request id is passed here.
        trailers = (*request_id_metadata(), (_DETAILS_KEY, status.SerializeToString()))
        await context.abort(code, status.message, trailing_metadata=trailers)

    async def around_unary(self, method: str, context: Any, call: UnaryCall) -> Any:
        try:
            return await call()
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await self._abort(context, exc, method)
            raise AssertionError("context.abort returned") from exc

    async def around_stream(
        self, method: str, context: Any, stream: OpenStream
    ) -> AsyncIterator[Any]:
        try:
            async for item in stream():
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await self._abort(context, exc, method)
