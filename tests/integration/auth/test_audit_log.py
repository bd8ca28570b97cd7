"""The audit table is append-only for the app role, and the verifier catches tampering."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.integration.auth.conftest import AuthStack
from vaultpay_devstack.postgres import run_sql


def _app_dsn(auth: AuthStack) -> str:
    return auth.dbs.url(auth.dbs.auth_app_role, auth.dbs.auth_database, driver="postgresql")


def _superuser_dsn(auth: AuthStack) -> str:
    return auth.admin_dsn.rsplit("/", 1)[0] + "/" + auth.dbs.auth_database


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'forged' WHERE sequence = 1",
        "DELETE FROM audit_events WHERE sequence = 1",
        "TRUNCATE audit_events",
    ],
)
async def test_app_role_cannot_change_audit_rows(auth: AuthStack, statement: str) -> None:
    await auth.register()

    async def attempt(conn: Any) -> None:
        await conn.execute(statement)

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        run_sql(_app_dsn(auth), attempt)


async def test_even_the_owner_is_refused_by_the_trigger(auth: AuthStack) -> None:
    await auth.register()
    owner = auth.dbs.url(auth.dbs.auth_owner_role, auth.dbs.auth_database, driver="postgresql")

    async def attempt(conn: Any) -> None:
        await conn.execute("DELETE FROM audit_events WHERE sequence = 1")

    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        run_sql(owner, attempt)


async def test_verifier_finds_a_row_tampered_with_in_the_database(auth: AuthStack) -> None:
    await auth.register()
    await auth.register()
    intact = auth.cli("verify-audit")
    assert intact.returncode == 0, intact.stdout + intact.stderr

    async def tamper(conn: Any) -> None:
        # Only a superuser can get past the trigger, and even then the chain tells.
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("UPDATE audit_events SET target_id = 'someone-else' WHERE sequence = 2")

    run_sql(_superuser_dsn(auth), tamper)
    broken = auth.cli("verify-audit")
    assert broken.returncode == 1
    assert "BROKEN at sequence 2" in broken.stdout
