"""Limit usage from transfer is never cached; only "transfer could not answer" is remembered,
briefly, so reads during an outage do not each pay for a doomed call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc

from vaultpay.transfer.v1 import transfer_pb2
from vaultpay.type.v1 import limit_action_pb2, money_pb2
from vaultpay_wallet.adapters.peers import GrpcTransferFigures
from vaultpay_wallet.domain.limits import ActionUsage, LimitAction

NOW = datetime(2026, 12, 2, tzinfo=UTC)


class _Transfer:
    """A stand-in for transfer's stub: answers `used` (minor units), or fails while `down`."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.used = 0
        self.read_at: datetime | None = None

    async def GetLimitUsage(self, request: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionError("transfer is down")
        money = money_pb2.Money(currency_code="INR", amount_minor=self.used)
        reply = transfer_pb2.GetLimitUsageResponse(
            usage=[
                transfer_pb2.ActionUsage(
                    action=limit_action_pb2.LIMIT_ACTION_SEND, daily_used=money, monthly_used=money
                )
            ]
        )
        if self.read_at is not None:
            reply.read_time.FromDatetime(self.read_at)
        return reply


async def _token() -> str:
    return "service-token"


def _figures(retry_seconds: float) -> tuple[GrpcTransferFigures, _Transfer]:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    figures = GrpcTransferFigures(channel, _token, 1.0, usage_retry_seconds=retry_seconds)
    stand_in = _Transfer()
    figures._stub = stand_in  # type: ignore[assignment]
    return figures, stand_in


async def _actions(figures: GrpcTransferFigures) -> list[ActionUsage] | None:
    reading = await figures.usage("VPY-AAAAAA")
    return None if reading is None else list(reading.actions)


async def test_usage_is_asked_for_on_every_read_never_cached() -> None:
    figures, transfer = _figures(retry_seconds=60.0)
    transfer.used = 100
    assert await _actions(figures) == [ActionUsage(LimitAction.SEND, 100, 100)]
    transfer.used = 250  # a send happened
    assert await _actions(figures) == [ActionUsage(LimitAction.SEND, 250, 250)]
    assert transfer.calls == 2


async def test_after_a_failure_usage_is_unknown_without_asking_until_the_retry_time() -> None:
    figures, transfer = _figures(retry_seconds=60.0)
    transfer.down = True
    assert await figures.usage("VPY-AAAAAA") is None
    transfer.down = False
    assert await figures.usage("VPY-AAAAAA") is None  # still within the retry time
    assert transfer.calls == 1


async def test_once_the_retry_time_passed_transfer_is_asked_again_and_trusted_again() -> None:
    figures, transfer = _figures(retry_seconds=0.0)
    transfer.down = True
    assert await figures.usage("VPY-AAAAAA") is None
    transfer.down = False
    transfer.used = 7
    assert await _actions(figures) == [ActionUsage(LimitAction.SEND, 7, 7)]
    assert await _actions(figures) == [ActionUsage(LimitAction.SEND, 7, 7)]
    assert transfer.calls == 3


async def test_the_usage_carries_the_time_transfer_read_it_by() -> None:
    figures, transfer = _figures(retry_seconds=60.0)
    transfer.read_at = datetime(2026, 12, 2, 18, 29, 58, tzinfo=UTC)
    reading = await figures.usage("VPY-AAAAAA")
    assert reading is not None and reading.read_at == transfer.read_at
    transfer.read_at = None  # a transfer that does not say: the caller's clock stands in
    reading = await figures.usage("VPY-AAAAAA")
    assert reading is not None and reading.read_at is None
