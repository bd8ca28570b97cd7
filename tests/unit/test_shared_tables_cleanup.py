"""The hourly cleanup of the shared tables runs each purge whatever the other did."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vaultpay_common import cleanup
from vaultpay_common.cleanup import run_purges, shared_tables_cleanup


class _Clock:
    def now(self) -> datetime:
        return datetime(2026, 12, 4, tzinfo=UTC)


async def test_a_failing_idempotency_purge_still_lets_the_other_purges_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, str]] = []

    async def failing_idempotency(_engine: Any, service: str, **_: Any) -> int:
        calls.append(("idempotency", service))
        raise TimeoutError("statement timeout")

    async def outbox(_engine: Any, producer: str, **_: Any) -> int:
        calls.append(("outbox", producer))
        return 3

    async def own_rows() -> int:
        calls.append(("own", "kyc"))
        return 1

    monkeypatch.setattr(cleanup, "purge_expired_idempotency_records", failing_idempotency)
    monkeypatch.setattr(cleanup, "purge_delivered_outbox_events", outbox)
    job = shared_tables_cleanup(
        object(),  # type: ignore[arg-type]
        service="kyc",
        producer="kyc",
        clock=_Clock(),
        idempotency_retention=timedelta(hours=24),
        own={"the service's own rows": own_rows},
    )
    with caplog.at_level(logging.INFO, logger="vaultpay_common.cleanup"):
        await job()  # the failure is logged, not raised: the periodic job does not log it twice
    assert calls == [("idempotency", "kyc"), ("outbox", "kyc"), ("own", "kyc")]
    failed = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [getattr(r, "purge", None) for r in failed] == ["idempotency records"]
    assert failed[0].exc_info is not None and isinstance(failed[0].exc_info[1], TimeoutError)


async def test_a_failing_outbox_purge_does_not_hide_the_idempotency_purges_count() -> None:
    async def outbox() -> int:
        raise ConnectionError("lost")

    async def records() -> int:
        return 7

    assert await run_purges({"outbox events": outbox, "idempotency records": records}) == {
        "idempotency records": 7
    }


async def test_a_cancelled_cleanup_stops_at_once() -> None:
    ran: list[str] = []

    async def cancelled() -> int:
        raise asyncio.CancelledError

    async def after() -> int:
        ran.append("after")
        return 0

    with pytest.raises(asyncio.CancelledError):
        await run_purges({"first": cancelled, "second": after})
    assert ran == []
