"""Helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import base64
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from pydantic import SecretStr

__all__ = ["RpcFailure", "peer_service_fields", "rpc_failure"]


def peer_service_fields() -> dict[str, Any]:
    """The required fields of a peer service's settings (wallet, transfer, kyc), none reachable:
    enough to build the settings and check how they parse."""
    return {
        "database_url": SecretStr("postgresql+asyncpg://u:p@127.0.0.1/db"),
        "redis_url": SecretStr("redis://127.0.0.1:6379/1"),
        "key_encryption_key": SecretStr(base64.b64encode(bytes(32)).decode()),
        "service_client_id": "wallet",
        "service_client_secret": SecretStr("s" * 24),
    }


@dataclass
class RpcFailure:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    fields: list[str] = field(default_factory=list)
    retry_seconds: int | None = None


def _parse_details(code: grpc.StatusCode, message: str, raw: bytes | None) -> RpcFailure:
    failure = RpcFailure(code, message)
    if not raw:
        return failure
    status = status_pb2.Status.FromString(raw)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            failure.reason, failure.domain = info.reason, info.domain
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            failure.fields = [v.field for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            failure.retry_seconds = retry.retry_delay.seconds
    return failure


async def rpc_failure(call: Awaitable[Any]) -> RpcFailure:
    """Awaits a call that must fail and returns its code, ErrorInfo reason and fields."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        raw = None
        for key, value in exc.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                raw = value if isinstance(value, bytes) else value.encode()
        return _parse_details(exc.code(), exc.details() or "", raw)
    raise AssertionError("the call succeeded but was expected to fail")
