"""A time limit per test, so a hang fails the run in minutes instead of waiting for CI's.

Each test (its fixtures' set-up and teardown included) gets `time_limit` seconds: the ini
option `vaultpay_time_limit` (default 300), the environment's VAULTPAY_TEST_TIME_LIMIT, or the
test's own `@pytest.mark.time_limit(seconds)` (VAULTPAY_TEST_TIME_LIMIT lifts it when larger). When a test runs past it, a watchdog thread
prints every thread's stack and every pending asyncio task's chain of awaits (a hung
`await` shows where it waits, which a thread's stack alone never does: the loop just sits
in select) and interrupts the session as Ctrl-C would, so pytest reports the test, runs
the fixtures' teardown (stopping the processes they started) and exits non-zero. If the
session has still not ended `grace` seconds later (`vaultpay_time_limit_grace`, 60), a
teardown that hangs included, it prints the stacks again and exits at once (the servers the
suite starts die with it: the devstack's, the gateway tests' Envoys and a test's own service
run under a parent-death signal; test_devstack's short-lived stand-ins, which test how the
devstack recognises processes by their command line, are ended by their tests).
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import inspect
import os
import signal
import sys
import threading
import time
from collections.abc import Generator
from typing import TextIO

import pytest

INI_OPTION = "vaultpay_time_limit"
GRACE_OPTION = "vaultpay_time_limit_grace"
ENV_VARIABLE = "VAULTPAY_TEST_TIME_LIMIT"
DEFAULT_LIMIT = 300.0
DEFAULT_GRACE = 60.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI_OPTION, f"seconds a test may take (default {DEFAULT_LIMIT:.0f})")
    parser.addini(
        GRACE_OPTION,
        f"seconds the session may take to end once interrupted (default {DEFAULT_GRACE:.0f})",
    )


REPORT_STREAM = pytest.StashKey[TextIO]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "time_limit(seconds): this test's own limit instead of the suite's"
    )
    # A shell starts a background job (`make test &`, nohup) with SIGINT ignored, and an
    # ignored signal stays ignored across exec: the watchdog's interrupt would then do nothing
    # and a hung teardown would wait out the whole grace. Python's own handler makes it work.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # The terminal's stderr, as pytest's faulthandler plugin keeps it: a test's captured
    # stderr would swallow the report along with the interrupted test.
    terminal = os.dup(sys.__stderr__.fileno() if sys.__stderr__ else 2)
    config.stash[REPORT_STREAM] = os.fdopen(terminal, "w")


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[REPORT_STREAM].close()


def time_limit(item: pytest.Item) -> float:
    """The test's own limit (its marker) or the suite's; VAULTPAY_TEST_TIME_LIMIT, when set,
    also lifts a marker's lower limit (a slow machine's bank test needs it more than any)."""
    from_env = os.environ.get(ENV_VARIABLE)
    marker = item.get_closest_marker("time_limit")
    if marker is not None:
        own = float(marker.args[0])
        return max(own, float(from_env)) if from_env else own
    configured = from_env or item.config.getini(INI_OPTION)
    return float(configured) if configured else DEFAULT_LIMIT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    grace = float(item.config.getini(GRACE_OPTION) or DEFAULT_GRACE)
    watchdog = Watchdog(
        item.nodeid, time_limit(item), grace=grace, out=item.config.stash[REPORT_STREAM]
    )
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


class Watchdog:
    """Interrupts the session when `nodeid` outlives `limit`; exits `grace` seconds later."""

    def __init__(self, nodeid: str, limit: float, *, grace: float, out: TextIO):
        self.nodeid = nodeid
        self.limit = limit
        self.grace = grace
        self.out = out
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="test-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """The test ended in time: the watch stops. Once it has fired, nothing stops the
        grace's countdown: the interrupted test's hook ends at once, and the teardown that
        may hang (the session's fixtures) runs after it."""
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(self.limit):
            return
        self._report(f"{self.nodeid} is still running after {self.limit:g} s")
        os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(self.grace)  # a deadline, not a poll: nothing sets it
        self._report(f"the session did not end {self.grace:g} s after the interrupt")
        self.out.flush()
        os._exit(3)

    def _report(self, headline: str) -> None:
        print(f"\n=== watchdog: {headline}; stacks follow", file=self.out, flush=True)
        dump_asyncio_tasks(self.out)
        faulthandler.dump_traceback(file=self.out, all_threads=True)
        self.out.flush()


def dump_asyncio_tasks(out: TextIO) -> None:
    """Every pending task with the chain of awaits it is parked on, then every async generator
    parked in an await (a task awaiting an async generator's step, as pytest-asyncio's
    fixture teardown does, shows only its own frame: the step does not name its generator)."""
    tasks = _pending_tasks()
    print(f"--- {len(tasks)} pending asyncio task(s)", file=out)
    for task in tasks:
        print(f"task {task.get_name()}:", file=out)
        for line in await_chain(task.get_coro()):
            print(f"    {line}", file=out)
    generators = [g for g in gc.get_objects() if inspect.isasyncgen(g) and g.ag_await is not None]
    print(f"--- {len(generators)} async generator(s) parked in an await", file=out)
    for generator in generators:
        for line in await_chain(generator):
            print(f"    {line}", file=out)


def await_chain(awaitable: object) -> list[str]:
    """`file:line in function` for each coroutine or generator from `awaitable` down to the
    innermost await."""
    lines: list[str] = []
    while awaitable is not None and len(lines) < 100:
        frame = next(
            (f for f in (getattr(awaitable, a, None) for a in _FRAMES) if f is not None), None
        )
        if frame is not None:
            code = frame.f_code
            lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        awaitable = next(
            (a for a in (getattr(awaitable, n, None) for n in _AWAITING) if a is not None), None
        )
    return lines


_FRAMES = ("cr_frame", "gi_frame", "ag_frame")
_AWAITING = ("cr_await", "gi_yieldfrom", "ag_await")


def _pending_tasks() -> list[asyncio.Task[object]]:
    # The loop's thread may add or drop tasks while we read; a few tries get a stable copy.
    for _ in range(5):
        try:
            every: list[asyncio.Task[object]] = list(getattr(asyncio.tasks, "_all_tasks", ()))
            return [task for task in every if not task.done()]
        except RuntimeError:
            time.sleep(0.01)
    return []
