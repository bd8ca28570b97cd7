"""`vaultpay_common.single_flight`: one run per key, shared by every caller with that key,
shielded from each caller's cancellation, forgotten as it ends."""

from __future__ import annotations

import asyncio

import pytest

from vaultpay_common.errors import ErrorKind
from vaultpay_common.single_flight import FlightCancelledError, SingleFlight, shared_outcome


class _Work:
    """Work that waits for `release`, counting how often it was started."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.starts = 0

    async def __call__(self) -> str:
        self.starts += 1
        await self.release.wait()
        return "done"


async def test_one_key_shares_one_run_forgotten_before_its_callers_resume() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = _Work()
    first, started = flights.start("k", work)
    again, joined_started = flights.start("k", work)
    other, other_started = flights.start("other", work)
    assert (first is again, started, joined_started, other_started) == (True, True, False, True)
    assert flights.running("k") is first and len(flights) == 2
    work.release.set()
    assert await shared_outcome(first) == "done"
    assert flights.running("k") is None  # already gone when the caller resumes
    assert await shared_outcome(again) == "done" and await shared_outcome(other) == "done"
    assert work.starts == 2 and len(flights) == 0


async def test_a_callers_cancellation_never_reaches_the_run() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = _Work()
    run, _ = flights.start("k", work)
    waiting = asyncio.ensure_future(shared_outcome(run))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not run.cancelled() and flights.running("k") is run
    work.release.set()
    assert await shared_outcome(run) == "done"


async def test_a_failed_run_raises_in_every_caller_and_is_forgotten() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def fails() -> str:
        raise RuntimeError("boom")

    run, _ = flights.start("k", fails)
    callers = [asyncio.ensure_future(shared_outcome(run)) for _ in range(2)]
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert len(flights) == 0


async def test_a_cancelled_run_tells_its_callers_to_retry_rather_than_leave_them_waiting() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    run, _ = flights.start("k", _Work())
    callers = [asyncio.ensure_future(shared_outcome(run)) for _ in range(2)]
    await asyncio.sleep(0)
    run.cancel()  # the event loop shutting down
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, FlightCancelledError) for o in outcomes)
    assert FlightCancelledError().kind is ErrorKind.UNAVAILABLE
    assert len(flights) == 0
