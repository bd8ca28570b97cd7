"""The service's own tokens: one per peer, each asked for that peer; one unscoped token for
every peer while a rolling update needs it; and a scoped token auth answered unscoped (an
auth older than scoped tokens, rolled back) said at ERROR instead of failing unexplained at
every peer (review of 2026-12-05)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import jwt
import pytest

from vaultpay.auth.v1 import auth_pb2
from vaultpay_common.grpc.auth_client import ServiceTokenProvider
from vaultpay_common.grpc.tokens import AuthUnavailableError

_LOGGER = "vaultpay_common.grpc.auth_client"


class _Auth:
    """IssueServiceToken: a JWT addressed as `addressed(asked)` says; records the asks."""

    def __init__(self, *, honours_audience: bool = True) -> None:
        self.asked: list[str] = []
        self._honours = honours_audience

    async def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, **_: Any
    ) -> auth_pb2.IssueServiceTokenResponse:
        self.asked.append(request.audience)
        scoped = self._honours and request.audience
        audience = f"vaultpay:{request.audience}" if scoped else "vaultpay"
        now = int(time.time())
        claims = {"aud": audience, "sub": "service:wallet", "n": len(self.asked), "iat": now}
        reply = auth_pb2.IssueServiceTokenResponse(
            access_token=jwt.encode(claims, "k" * 32, algorithm="HS256")
        )
        reply.expire_time.seconds = now + 600
        return reply


def _provider(auth: _Auth, **options: Any) -> ServiceTokenProvider:
    provider = ServiceTokenProvider(
        grpc.aio.insecure_channel("127.0.0.1:9"), "wallet", "secret", **options
    )
    provider._stub = auth  # type: ignore[assignment]
    return provider


def _audience(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["aud"])


async def test_one_token_per_peer_each_asked_for_that_peer() -> None:
    auth = _Auth()
    provider = _provider(auth, audience="vaultpay")
    to_kyc = provider.for_peer("kyc")
    tokens = {peer: await provider.token(peer) for peer in ("auth", "transfer")}
    assert await to_kyc() == await provider.token("kyc")
    assert {p: _audience(t) for p, t in tokens.items()} == {
        "auth": "vaultpay:auth",
        "transfer": "vaultpay:transfer",
    }
    assert auth.asked == ["auth", "transfer", "kyc"]  # each once, then held
    provider.forget(tokens["transfer"])
    await provider.token("transfer")
    assert auth.asked[-1] == "transfer" and await provider.token("auth") == tokens["auth"]


async def test_unscoped_while_a_rolling_update_needs_it_one_token_for_every_peer() -> None:
    auth = _Auth()
    provider = _provider(auth, scoped=False, audience="vaultpay")
    tokens = {await provider.token(peer) for peer in ("auth", "wallet", "transfer", "kyc")}
    assert len(tokens) == 1 and _audience(tokens.pop()) == "vaultpay"
    assert auth.asked == [""]


async def test_a_scoped_token_auth_answered_unscoped_is_said_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = _provider(_Auth(honours_audience=False), audience="vaultpay")
    with caplog.at_level(logging.ERROR, logger=_LOGGER):
        token = await provider.token("wallet")
    assert _audience(token) == "vaultpay"
    [said] = caplog.records
    assert "older than scoped service tokens" in said.getMessage()
    assert (said.expected_audience, said.audience) == ("vaultpay:wallet", "vaultpay")  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=_LOGGER):
        await _provider(_Auth(), audience="vaultpay").token("wallet")
    assert caplog.records == []


class _FailingAuth(_Auth):
    """Answers until `down`, then fails every IssueServiceToken as an unreachable auth."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.failed = 0

    async def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, **options: Any
    ) -> auth_pb2.IssueServiceTokenResponse:
        if self.down:
            self.failed += 1
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
            )
        return await super().IssueServiceToken(request, **options)


async def test_a_failed_renewal_keeps_the_held_token_while_it_is_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review of 2026-12-05: a renewal due (80 % of the life) that failed refused every call
    AUTH_UNAVAILABLE though the held token had two minutes left, and each caller queued on
    the lock asked auth in turn, waiting out a call's timeout each."""
    now = [time.time()]
    monkeypatch.setattr("vaultpay_common.grpc.auth_client.time.time", lambda: now[0])
    auth = _FailingAuth()
    provider = _provider(auth, audience="vaultpay")
    held = await provider.token("wallet")
    auth.down = True
    now[0] += 500  # renewal due at 480 s of 600
    assert [await provider.token("wallet") for _ in range(5)] == [held] * 5
    assert auth.failed == 1  # asked once, then not again within the pause
    now[0] += 3
    assert await provider.token("wallet") == held
    assert auth.failed == 2
    now[0] += 90  # 593 s: too close to the expiry to hand out
    with pytest.raises(AuthUnavailableError):
        await provider.token("wallet")
    with pytest.raises(AuthUnavailableError):  # a moment later: refused without asking
        await provider.token("wallet")
    assert auth.failed == 3
    auth.down = False
    now[0] += 3
    assert await provider.token("wallet") != held


async def test_callers_are_not_held_up_by_a_renewal_a_valid_token_covers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review of 2026-12-05: with auth hung, every caller of a peer waited on the lock while
    one renewal ran its timeout, and a renewal of auth's token held up calls to wallet."""
    now = [time.time()]
    monkeypatch.setattr("vaultpay_common.grpc.auth_client.time.time", lambda: now[0])
    auth = _Auth()
    provider = _provider(auth, audience="vaultpay")
    held = {peer: await provider.token(peer) for peer in ("wallet", "auth")}
    now[0] += 500  # both due for renewal (80 % of 600 s)
    asked, answer = asyncio.Event(), asyncio.Event()
    original = auth.IssueServiceToken

    async def hung(request: auth_pb2.IssueServiceTokenRequest, **options: Any) -> Any:
        asked.set()
        await answer.wait()
        return await original(request, **options)

    auth.IssueServiceToken = hung  # type: ignore[method-assign]
    renewing = asyncio.ensure_future(provider.token("auth"))
    await asyncio.wait_for(asked.wait(), 5)
    for _ in range(5):  # never queued behind the renewal in flight
        assert await asyncio.wait_for(provider.token("auth"), 1) == held["auth"]
    auth.IssueServiceToken = original  # type: ignore[method-assign]
    assert await asyncio.wait_for(provider.token("wallet"), 1) != held["wallet"]  # its own lock
    answer.set()
    assert await renewing != held["auth"]
