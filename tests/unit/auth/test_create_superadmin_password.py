"""`vaultpay-auth create-superadmin` without --password-stdin asks for the password twice. Two
that differ, or no terminal with stdin at its end (a script forgot --password-stdin), are bad
input: exit 2 with one line on stderr, never 1 (which the CLIs keep for a broken invariant) nor
a traceback and 70 (a bug). Review: the first was `SystemExit("the passwords differ")`, exit 1;
the second an EOFError from getpass, exit 70."""

from __future__ import annotations

import base64
import getpass
import os
import subprocess
import sys

import pytest

from vaultpay_auth.entrypoints import cli as auth_cli
from vaultpay_common.cli import EXIT_USAGE

EMAIL = "root@example.com"


def _auth_env() -> dict[str, str]:
    """auth's settings, complete; the database is never reached (a closed port)."""
    return {
        "AUTH_DATABASE_URL": "postgresql+asyncpg://app:canary-db@127.0.0.1:1/vaultpay_auth",
        "AUTH_REDIS_URL": "redis://127.0.0.1:1/0",
        "AUTH_KEY_ENCRYPTION_KEY": base64.b64encode(bytes(32)).decode(),
        "AUTH_BCRYPT_ROUNDS": "4",
    }


@pytest.fixture
def auth_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AUTH_"):
            monkeypatch.delenv(name)
    for name, value in _auth_env().items():
        monkeypatch.setenv(name, value)


def _typed(monkeypatch: pytest.MonkeyPatch, *answers: str) -> None:
    """getpass answers `answers`, one a prompt."""
    given = iter(answers)

    def fake_getpass(prompt: str = "Password: ", stream: object = None) -> str:
        return next(given)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)


def test_passwords_that_differ_exit_2_with_one_line(
    auth_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _typed(monkeypatch, "first Secret 123 horse", "second Secret 123 horse")

    assert auth_cli.main(["create-superadmin", "--email", EMAIL]) == EXIT_USAGE == 2

    said = capsys.readouterr()
    assert said.out == ""
    assert said.err == "error: the passwords differ; nothing was changed\n"


def test_no_terminal_and_an_empty_stdin_exit_2_pointing_at_password_stdin(
    auth_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_input(prompt: str = "Password: ", stream: object = None) -> str:
        raise EOFError

    monkeypatch.setattr(getpass, "getpass", no_input)

    assert auth_cli.main(["create-superadmin", "--email", EMAIL]) == 2

    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: no password was read")
    assert "--password-stdin" in line


def test_a_script_without_a_terminal_gets_exit_2_and_the_hint_not_a_traceback() -> None:
    """The reviewer's case as it happens: a process with no controlling terminal (a new
    session) and stdin at its end; getpass falls back to stdin and meets EOF."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTH_")},
        **_auth_env(),
    }
    argv = ["create-superadmin", "--email", EMAIL]
    ran = subprocess.run(
        [sys.executable, "-m", "vaultpay_auth.entrypoints.cli", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        start_new_session=True,
    )

    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    assert "error: no password was read" in ran.stderr
    assert "--password-stdin" in ran.stderr
    assert "canary" not in ran.stderr + ran.stdout
