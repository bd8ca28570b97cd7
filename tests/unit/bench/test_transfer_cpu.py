"""CPU accounting of processes that end mid-window (tests/bench/cpu.py): the transfer bench's
services open and close database connections, whose PostgreSQL backends exit and are reaped
by the postmaster while a cell runs; their CPU must still count as the bench's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.bench.cpu import sample, usage_between


def test_a_child_that_exited_and_was_reaped_still_counts() -> None:
    first = sample()
    if first is None:
        pytest.skip("no /proc here")
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)  # exits, and is reaped by us
    last = sample()
    assert last is not None
    usage = usage_between(first, last)
    assert usage.ours * usage.seconds >= 0.25  # the child's 0.3 s of CPU, in our total
