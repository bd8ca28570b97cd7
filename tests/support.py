"""Helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "RpcFailure",
    "eventually",
    "json_time",
    "peer_service_fields",
    "pooled_drivers",
    "rpc_failure",
    "until_seen_ended",
    "use_transfer_settings",
]

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within: float = 20.0, what: str = "condition"
) -> T:
    """Polls `check` until it returns something other than None/False, or fails at the deadline
    (never a fixed sleep: the delay grows from 20 ms to 0.5 s)."""
    deadline = time.monotonic() + within
    delay = 0.02
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def json_time(moment: datetime) -> str:
    """`moment` (aware) as proto3 JSON writes a Timestamp: the one form of a time in the API."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp.ToJsonString()


async def pooled_drivers(engine: AsyncEngine, count: int) -> list[asyncpg.Connection]:
    """Fills the engine's pool with `count` connections (checked out at once, then returned)
    and gives their asyncpg connections, to watch what happens to them."""
    held = [await engine.connect() for _ in range(count)]
    try:
        return [(await conn.get_raw_connection()).driver_connection for conn in held]
    finally:
        for conn in held:
            await conn.close()


async def until_seen_ended(drivers: list[asyncpg.Connection], *, within: float = 10.0) -> None:
    """Polls until asyncpg has read the end of file of every one of `drivers` (PostgreSQL may
    list a backend as gone a moment before its socket closes)."""

    async def ended() -> bool:
        return all(driver.is_closed() for driver in drivers)

    await eventually(ended, within=within, what="the pooled connections seen ended")


def peer_service_fields() -> dict[str, Any]:
    """The required fields of a peer service's settings (wallet, transfer, kyc), none reachable:
    enough to build the settings and check how they parse."""
    return {
        "database_url": SecretStr("postgresql+asyncpg://u:p@127.0.0.1/db"),
        "redis_url": SecretStr("redis://127.0.0.1:6379/1"),
        "key_encryption_key": SecretStr(base64.b64encode(bytes(32)).decode()),
        "audit_chain_key": SecretStr(base64.b64encode(b"c" * 32).decode()),
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


def use_transfer_settings(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """transfer's settings, complete and valid, in the environment for a CLI run, with
    `database_url`; none of the process's own TRANSFER_* survive, a secret is a canary."""
    for name in list(os.environ):
        if name.startswith("TRANSFER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRANSFER_DATABASE_URL", database_url)
    monkeypatch.setenv("TRANSFER_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TRANSFER_KEY_ENCRYPTION_KEY", "A" * 43 + "=")
    monkeypatch.setenv("TRANSFER_AUDIT_CHAIN_KEY", base64.b64encode(b"c" * 32).decode())
    monkeypatch.setenv("TRANSFER_SERVICE_CLIENT_ID", "transfer")
    monkeypatch.setenv("TRANSFER_SERVICE_CLIENT_SECRET", "canary-secret-value")


async def health_checks_with_metadata_all_pass(port: int, *, calls: int = 20) -> None:
    """`calls` health checks on the server at `port`, each with ~14.5 KiB of metadata (14
    entries of 1,000 bytes, and gRPC's 32 bytes each): what a JSON call within the gateway's
    header caps carries upstream at most. gRPC's default limits (8 KiB soft, 16 KiB hard)
    refuse about half of them, at random."""
    metadata = [(f"x-test-{n}", "v" * 1000) for n in range(14)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(calls):
            reply = await stub.Check(health_pb2.HealthCheckRequest(), metadata=metadata, timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
