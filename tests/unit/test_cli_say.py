"""A report's lines (`say`) to a reader that went away (`verify-audit | head -1`): the command
goes on and exits with its own code, not a BrokenPipeError read as "the database is
unreachable" (exit 3). Review of 2026-12-05: verify-audit's progress lines printed directly."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
from vaultpay_common.cli import say
for n in range(200_000):
    say(f"... {n:,} seals read")
raise SystemExit(7)  # the verdict's exit code, reached after the reader left
"""


def test_a_reader_that_goes_away_stops_the_printing_not_the_command() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"... 0 seals read")
    process.stdout.close()  # as `head -1` does
    errors = process.stderr.read()
    assert process.wait(timeout=60) == 7
    assert errors == b""
