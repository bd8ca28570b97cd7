"""A periodic job survives its failures; an integrity alarm is logged at ERROR."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from vaultpay_common.audit.sealer import AuditChainBrokenError
from vaultpay_common.runtime import PeriodicJob, _run_periodically


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
