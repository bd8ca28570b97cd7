"""A periodic job survives its failures; an integrity alarm is logged at ERROR."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.audit.sealer import AuditChainBrokenError
from vaultpay_common.outbox import OutboxRelay
from vaultpay_common.runtime import PeriodicJob, _run_periodically, stop_tasks


class Runs:
    """Counts a job's runs; `reached` is set at the wanted count."""

    def __init__(self, wanted: int) -> None:
        self.count = 0
        self.wanted = wanted
        self.reached = asyncio.Event()

    def tick(self) -> None:
        self.count += 1
        if self.count >= self.wanted:
            self.reached.set()


async def _run_until(job: PeriodicJob, runs: Runs) -> None:
    task = asyncio.create_task(_run_periodically(job))
    try:
        async with asyncio.timeout(5):
            await runs.reached.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failing_job_is_logged_as_a_warning_and_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = Runs(3)

    async def flaky() -> None:
        runs.tick()
        raise ConnectionError("database restarting")

    with caplog.at_level(logging.WARNING, logger="vaultpay_common.runtime"):
        await _run_until(PeriodicJob("flaky", 0, flaky), runs)

    levels = {r.levelno for r in caplog.records if r.name == "vaultpay_common.runtime"}
    assert levels == {logging.WARNING}


async def test_an_alarm_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    runs = Runs(2)

    async def broken_chain() -> None:
        runs.tick()
        raise AuditChainBrokenError("the chain no longer reaches checkpoint 7")

    job = PeriodicJob("audit sealer", 0, broken_chain, alarms=(AuditChainBrokenError,))
    with caplog.at_level(logging.WARNING, logger="vaultpay_common.runtime"):
        await _run_until(job, runs)

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "checkpoint 7" in str(errors[0].exc_info[1])


class Stubborn:
    """A loop that, like a 3.11 `asyncio.wait_for` racing its own event, returns normally
    from the next `swallow` cancellations and runs on; it ends at the one after."""

    def __init__(self, swallow: int) -> None:
        self.swallow = swallow
        self.stopped = False

    async def run(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallow == 0:
                    self.stopped = True
                    raise
                self.swallow -= 1


async def test_stopping_cancels_again_a_task_that_swallowed_its_cancellation() -> None:
    stubborn = Stubborn(swallow=2)
    task = asyncio.create_task(stubborn.run(), name="stubborn")
    await asyncio.sleep(0)
    assert await stop_tasks([task], within=5, recancel_every=0.01) == []
    assert task.cancelled() and stubborn.stopped


async def test_stopping_gives_up_on_a_task_that_does_not_stop_in_time_and_names_it() -> None:
    stubborn = Stubborn(swallow=10**9)
    task = asyncio.create_task(stubborn.run(), name="never")
    await asyncio.sleep(0)
    assert await stop_tasks([task], within=0.1, recancel_every=0.01) == ["never"]
    assert not task.done()
    stubborn.swallow = 0  # now it gives in
    assert await stop_tasks([task], within=5, recancel_every=0.01) == []


async def test_a_relay_woken_as_it_is_cancelled_stops() -> None:
    """The outbox relay waits for a commit's wake-up or its poll interval; a wake-up that
    lands in the same loop turn as the cancel must not keep it running (wait_for's 3.11
    race, which hung a service's shutdown in the test suite)."""
    relay = _IdleRelay()
    for turns in range(6):  # every interleaving of the wake-up's callbacks and the cancel
        task = asyncio.create_task(relay.run())
        await relay.waiting.wait()
        relay.wake()
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1)
        assert done, f"the relay ran on after its cancel ({turns} loop turns after the wake-up)"
        relay.waiting.clear()


class _IdleRelay(OutboxRelay):
    """A relay whose rounds find nothing due (no database), telling when it waits."""

    def __init__(self) -> None:
        super().__init__(cast(AsyncEngine, None), "test", {}, poll_interval=3600)
        self.waiting = asyncio.Event()

    async def _round(self) -> tuple[int, int]:
        self.waiting.set()
        return 0, 0
