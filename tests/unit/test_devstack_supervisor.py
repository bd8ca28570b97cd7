"""How `make stop`/`make status`/`make run` recognise the mesh supervisor of a state file
(review of 2026-12-04): any command line mentioning `vaultpay_devstack` counted
(`tail -f deploy/local/vaultpay_devstack/mesh.py` was taken for it), and a pid reused after a
SIGKILL was signalled. Now the state file names the supervisor by pid and start time; an older
state file falls back to the supervisor's exact command lines."""

from __future__ import annotations

import os

import pytest

from vaultpay_devstack import cli
from vaultpay_devstack.procs import _start_time_in_stat, process_start_time

_STAT_TAIL = (
    b"S 1 2 3 0 -1 4194304 101 0 0 0 5 6 0 0 20 0 1 0 86960 3133440 417 18446744073709551615"
)


@pytest.mark.parametrize(
    "comm",
    [
        b"python3",
        b"tmux: server",
        b"a) b (c",
        b"x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
    ],
)
def test_the_start_time_is_field_22_counted_after_the_last_parenthesis(comm: bytes) -> None:
    line = b"4242 (" + comm + b") " + _STAT_TAIL + b"\n"

    assert _start_time_in_stat(line) == 86960


def test_a_stat_line_without_its_fields_has_no_start_time() -> None:
    assert _start_time_in_stat(b"") is None
    assert _start_time_in_stat(b"4242 (sleep) S 1 2") is None


def test_a_process_started_after_another_has_a_later_start_time() -> None:
    started, init = process_start_time(os.getpid()), process_start_time(1)
    assert started is not None
    assert init is not None
    assert init <= started
    assert process_start_time(2**22 + 1) is None  # above any pid_max: no such process


def _argv(*args: str) -> list[bytes]:
    return [os.fsencode(arg) for arg in args]


@pytest.mark.parametrize(
    "argv",
    [
        ("/w/.venv/bin/python", "-m", "vaultpay_devstack.cli", "run"),  # make run
        ("python3.11", "-X", "dev", "-u", "-m", "vaultpay_devstack.cli", "--var", "/x", "run"),
        ("python", "-mvaultpay_devstack.cli", "run", "--var=/x"),
        ("/w/.venv/bin/python", "/w/.venv/bin/vaultpay-local", "run"),  # vaultpay-local run
        ("/w/.venv/bin/python", "/w/.venv/bin/vaultpay-local", "--var", "run", "run"),
    ],
)
def test_a_supervisors_command_line_is_recognised(argv: tuple[str, ...]) -> None:
    assert cli._runs_the_supervisor(_argv(*argv))


@pytest.mark.parametrize(
    "argv",
    [
        ("tail", "-f", "deploy/local/vaultpay_devstack/mesh.py"),  # the reviewer's example
        ("less", "var/log/vaultpay-local.log"),
        ("vim", "deploy/local/vaultpay_devstack/cli.py", "run"),
        ("python", "-m", "vaultpay_devstack.cli", "stop"),
        ("python", "-m", "vaultpay_devstack.cli", "status"),
        ("python", "-m", "vaultpay_devstack.cli", "env", "run"),
        ("python", "-m", "vaultpay_devstack.protogen", "run"),
        ("python", "-m", "pytest", "tests/unit/test_vaultpay_devstack.py", "run"),
        ("python", "-c", "import vaultpay_devstack.cli", "run"),
        ("python", "deploy/local/vaultpay_devstack/cli.py.orig", "run"),
        ("python", "/w/.venv/bin/vaultpay-local", "var/log/vaultpay-local.log"),
        ("python",),
        (),
    ],
)
def test_a_command_line_that_only_mentions_the_mesh_is_no_supervisor(
    argv: tuple[str, ...],
) -> None:
    assert not cli._runs_the_supervisor(_argv(*argv))


def test_status_help_documents_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for code, meaning in [
        (0, "the mesh runs"),
        (3, "no mesh runs"),
        (4, "the mesh is still starting"),
    ]:
        assert f"  {code}  {meaning}" in text
    assert "  5  the mesh runs degraded" in text
