"""Provisioning that fails is a StartupError saying what failed and what the admin role needs,
without a password (review of 2026-12-05: with VAULTPAY_POSTGRES_ADMIN_URL naming a role
without the privileges, `make run` ended in asyncpg's InsufficientPrivilegeError traceback)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from vaultpay_devstack import postgres
from vaultpay_devstack.postgres import provision, role_password
from vaultpay_devstack.procs import StartupError

ADMIN_PASSWORD = "s3cret-admin-pw"
SECRET = "provisioning-secret"
ADMIN_URL = f"postgresql://vaultpay_admin:{ADMIN_PASSWORD}@db.internal:6543/postgres"


def _failing_with(exc: BaseException) -> Callable[[str, Callable[[Any], Awaitable[Any]]], Any]:
    def run_sql(dsn: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
        raise exc

    return run_sql


def test_an_admin_role_that_may_not_create_roles_is_told_what_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    denied = asyncpg.InsufficientPrivilegeError("permission denied to create role")
    monkeypatch.setattr(postgres, "run_sql", _failing_with(denied))

    with pytest.raises(StartupError) as failed:
        provision(ADMIN_URL, password=SECRET)

    message = str(failed.value)
    assert "db.internal:6543 as 'vaultpay_admin'" in message
    assert "(creating roles and databases): permission denied to create role" in message
    assert "VAULTPAY_POSTGRES_ADMIN_URL" in message
    assert "must be a superuser" in message
    assert failed.value.__cause__ is denied


def test_a_provisioning_error_never_shows_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    leaked = role_password(SECRET, "vaultpay_auth_owner")
    reason = f"odd server message quoting {ADMIN_PASSWORD}, {SECRET} and {leaked}"
    monkeypatch.setattr(postgres, "run_sql", _failing_with(asyncpg.PostgresError(reason)))

    with pytest.raises(StartupError) as failed:
        provision(ADMIN_URL, password=SECRET)

    message = str(failed.value)
    assert "odd server message quoting ***, *** and ***" in message
    for secret in (ADMIN_PASSWORD, SECRET, leaked):
        assert secret not in message


def test_a_server_gone_while_locking_down_names_that_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def run_sql(dsn: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
        calls.append(dsn)
        if len(calls) > 1:
            raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(postgres, "run_sql", run_sql)

    with pytest.raises(StartupError) as failed:
        provision(ADMIN_URL, password=SECRET)

    message = str(failed.value)
    assert "(locking down database vaultpay_auth): [Errno 111] Connection refused" in message
    assert "superuser" not in message  # a privilege was not what failed
