"""An active IntrospectToken answer without a role this build knows fails closed as an auth
outage (AUTH_UNAVAILABLE), not INTERNAL with a traceback (review of 2026-12-05: `Role(0)`
raised ValueError out of the strict path)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from vaultpay.auth.v1 import auth_pb2
from vaultpay_common.context import Role
from vaultpay_common.grpc.auth_client import AuthUnavailableError, GrpcTokenIntrospector


class _Identity:
    async def token(self, peer: str) -> str:
        assert peer == "auth"
        return "service-token"


class _Stub:
    def __init__(self, reply: auth_pb2.IntrospectTokenResponse) -> None:
        self._reply = reply

    async def IntrospectToken(self, request: Any, **_: Any) -> auth_pb2.IntrospectTokenResponse:
        return self._reply


def _introspector(reply: auth_pb2.IntrospectTokenResponse) -> GrpcTokenIntrospector:
    introspector = GrpcTokenIntrospector(grpc.aio.insecure_channel("127.0.0.1:9"), _Identity())  # type: ignore[arg-type]
    introspector._stub = _Stub(reply)  # type: ignore[assignment]
    return introspector


@pytest.mark.parametrize("role", [0, 99])
async def test_an_active_token_without_a_known_role_is_auth_unavailable(role: int) -> None:
    introspector = _introspector(auth_pb2.IntrospectTokenResponse(active=True, role=role))  # type: ignore[arg-type]
    with pytest.raises(AuthUnavailableError):
        await introspector.introspect("a-token")


async def test_a_known_role_is_the_callers() -> None:
    reply = auth_pb2.IntrospectTokenResponse(active=True, role=Role.ADMIN.value)  # type: ignore[arg-type]
    seen = await _introspector(reply).introspect("a-token")
    assert seen.active and seen.role is Role.ADMIN
