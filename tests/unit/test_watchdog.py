"""The suite's time limit per test (tests/watchdog.py), run on throwaway tests in a child."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.watchdog import ENV_VARIABLE, time_limit

ROOT = Path(__file__).resolve().parents[2]

HUNG_TEARDOWN = """
import asyncio

import pytest


async def parked_forever() -> None:
    await asyncio.Event().wait()


@pytest.fixture
async def stuck():
    yield
    await parked_forever()


async def test_hangs_in_its_teardown(stuck):
    pass


@pytest.mark.time_limit(60)
def test_never_reached():
    pass
"""


_EXEC_WITH_SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN);"
    " os.execv(sys.argv[1], sys.argv[1:])"
)


def run_child(
    argv: list[str], *, limit: str, cwd: Path, sigint_ignored: bool = False
) -> subprocess.CompletedProcess[str]:
    """`sigint_ignored`: started as a shell starts a background job (`make test &`, nohup),
    SIGINT ignored, which exec keeps. A small Python ignores it and execs the child: no
    `preexec_fn`, which runs Python in the forked child, where gRPC's fork handlers (this
    suite has gRPC threads running) aborted it once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAULTPAY_TEST_TIME_LIMIT": limit}
    if sigint_ignored:
        argv = [sys.executable, "-c", _EXEC_WITH_SIGINT_IGNORED, *argv]
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["foreground", "background"])
def test_a_hung_teardown_is_reported_with_its_awaits_and_interrupts_the_session(
    tmp_path: Path, sigint_ignored: bool
) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG_TEARDOWN)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.watchdog"]
    argv += ["-o", "asyncio_mode=auto", "test_hung.py"]

    started = time.monotonic()
    child = run_child(argv, limit="1", cwd=tmp_path, sigint_ignored=sigint_ignored)

    output = child.stdout + child.stderr
    assert child.returncode == 2, output  # pytest's "interrupted", never a pass
    assert time.monotonic() - started < 60, output
    assert "test_hung.py::test_hangs_in_its_teardown is still running after 1 s" in output
    assert "in parked_forever" in output  # the await the fixture is parked on
    assert "KeyboardInterrupt" in output
    assert "test_never_reached" not in output


HUNG_SESSION_TEARDOWN = """
import asyncio

import pytest


@pytest.fixture(scope="session")
async def stuck_for_the_session():
    yield
    await asyncio.Event().wait()


async def test_hangs(stuck_for_the_session):
    await asyncio.Event().wait()
"""


def test_a_session_teardown_that_hangs_after_the_interrupt_ends_after_the_grace(
    tmp_path: Path,
) -> None:
    # The interrupted test's hook ends at once; the session's fixtures are torn down after
    # it, and a teardown that hangs there must not outlive the grace (review of 2026-12-03).
    (tmp_path / "test_hung.py").write_text(HUNG_SESSION_TEARDOWN)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.watchdog"]
    argv += ["-o", "asyncio_mode=auto", "-o", "vaultpay_time_limit_grace=1", "test_hung.py"]

    child = run_child(argv, limit="1", cwd=tmp_path)

    output = child.stdout + child.stderr
    assert child.returncode == 3, output
    assert "test_hung.py::test_hangs is still running after 1 s" in output
    assert "the session did not end 1 s after the interrupt" in output
    assert "in stuck_for_the_session" in output  # where the teardown hangs


def test_a_session_that_ignores_the_interrupt_exits_after_the_grace(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import signal, sys, time
        from tests.watchdog import Watchdog

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        Watchdog("deaf::test", 0.5, grace=0.5, out=sys.stderr).start()
        time.sleep(60)  # deaf to the interrupt: only the watchdog's exit ends this
        print("still alive")
        """
    )
    child = run_child([sys.executable, "-c", script], limit="", cwd=tmp_path)

    assert child.returncode == 3, child.stdout + child.stderr
    assert "deaf::test is still running after 0.5 s" in child.stderr
    assert "did not end 0.5 s after the interrupt" in child.stderr
    assert "still alive" not in child.stdout


def test_the_environments_limit_lifts_a_tests_own_lower_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review of 2026-12-05: the bank test's own limit won over VAULTPAY_TEST_TIME_LIMIT, so
    a slow machine could not give the test most likely to need it more time."""

    class Item:
        def __init__(self, own: float | None) -> None:
            self.own = own
            self.config = type("Config", (), {"getini": staticmethod(lambda name: "")})()

        def get_closest_marker(self, name: str) -> object:
            return None if self.own is None else pytest.mark.time_limit(self.own).mark

    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    assert time_limit(Item(285)) == 285  # type: ignore[arg-type]
    monkeypatch.setenv(ENV_VARIABLE, "900")
    assert time_limit(Item(285)) == 900  # type: ignore[arg-type]
    assert time_limit(Item(1200)) == 1200  # type: ignore[arg-type]
    assert time_limit(Item(None)) == 900  # type: ignore[arg-type]
