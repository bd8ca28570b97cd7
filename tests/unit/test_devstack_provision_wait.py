"""Provisioning waits, for a bounded time, for a server that is not taking connections yet
(review of 2026-12-05: compose's postgres reported healthy through its Unix socket while the
image's first-start server kept TCP closed, and `provision` made one attempt and failed). It
polls, says on stderr what it waits for, and gives up at its deadline; any other failure stops
it at once."""

from __future__ import annotations

import itertools
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from vaultpay_devstack import postgres
from vaultpay_devstack.postgres import main, provision
from vaultpay_devstack.procs import StartupError

ADMIN_URL = "postgresql://postgres:s3cret-admin-pw@postgres:5432/postgres"
POLL = 0.02


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "CONNECT_POLL_SECONDS", POLL)


def _server(failures: list[BaseException]) -> tuple[Callable[..., Any], list[float]]:
    """A run_sql whose first calls raise `failures` in turn (then succeed), and the times of
    its calls."""
    calls: list[float] = []

    def run_sql(dsn: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
        calls.append(time.monotonic())
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]

    return run_sql, calls


def test_a_server_that_opens_its_port_late_is_waited_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    starting = asyncpg.CannotConnectNowError("the database system is starting up")
    run_sql, calls = _server([refused, refused, starting])
    monkeypatch.setattr(postgres, "run_sql", run_sql)

    result = provision(ADMIN_URL, password="provisioning-secret", wait_seconds=5)

    assert result.auth_database == "vaultpay_auth"
    # The three refusals, the first step, then the two lock-downs.
    assert len(calls) == 3 + 1 + 2
    assert all(b - a >= POLL * 0.9 for a, b in itertools.pairwise(calls[:4]))
    err = capsys.readouterr().err
    # Said once per reason, not once per attempt.
    assert err.count("for PostgreSQL at postgres:5432 to take connections") == 2
    assert "(Connection refused)" in err
    assert "(the database system is starting up)" in err
    assert "PostgreSQL at postgres:5432 takes connections" in err
    assert "s3cret-admin-pw" not in err


def test_the_wait_is_bounded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_sql, calls = _server([ConnectionRefusedError(111, "Connection refused")] * 10_000)
    monkeypatch.setattr(postgres, "run_sql", run_sql)
    started = time.monotonic()

    with pytest.raises(StartupError) as failed:
        provision(ADMIN_URL, wait_seconds=0.3)

    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.5
    assert len(calls) >= 3  # polled, not one attempt and a sleep
    message = str(failed.value)
    assert "creating roles and databases, after waiting 0.3 s" in message
    assert "Connection refused" in message
    assert "waiting up to 0.3 s for PostgreSQL at postgres:5432" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InvalidPasswordError("password authentication failed for user postgres"),
        asyncpg.InsufficientPrivilegeError("permission denied to create role"),
        # An OSError too, but no wait mends a certificate (review of the change: a wrong CA
        # or host name was retried for a minute as "not taking connections").
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
    ],
    ids=["wrong password", "missing privilege", "certificate refused"],
)
def test_a_server_that_answers_no_is_not_asked_again(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    run_sql, calls = _server([error])
    monkeypatch.setattr(postgres, "run_sql", run_sql)

    with pytest.raises(StartupError) as failed:
        provision(ADMIN_URL, wait_seconds=5)

    assert len(calls) == 1
    assert failed.value.__cause__ is error


def test_no_wait_fails_at_the_first_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    run_sql, calls = _server([ConnectionRefusedError(111, "Connection refused")])
    monkeypatch.setattr(postgres, "run_sql", run_sql)

    with pytest.raises(StartupError, match=r"\(creating roles and databases\): "):
        provision(ADMIN_URL, wait_seconds=0)

    assert len(calls) == 1


def test_the_provision_command_waits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What compose and the Kubernetes Job run: `python -m vaultpay_devstack.postgres
    provision`, with the default wait."""
    monkeypatch.setattr(postgres, "CONNECT_WAIT_SECONDS", 5.0)
    run_sql, calls = _server([ConnectionRefusedError(111, "Connection refused")] * 2)
    monkeypatch.setattr(postgres, "run_sql", run_sql)

    assert main(["provision", "--admin-url", ADMIN_URL]) == 0

    assert len(calls) == 2 + 1 + 2
    assert "waiting up to 5 s for PostgreSQL at postgres:5432" in capsys.readouterr().err
