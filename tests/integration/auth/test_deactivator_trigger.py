"""auth 0012: a user who is (or becomes) active has no deactivator on record, whatever code
wrote the row, on real PostgreSQL with auth's chain at its head.

Auth from before 0010 (a rolling update, a rollback) neither writes nor clears
`users.deactivated_by`: its reactivation left the old deactivator on the row, and its later
deactivation (a super_admin's) kept that stale name, which let an admin lift it (review of
2026-12-05). The old code's statements are played here as it sends them: no column but
`active`, the reason and the times.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from vaultpay_auth.entrypoints.cli import AUTH_CHAIN
from vaultpay_common.migrations import migrate_chain
from vaultpay_devstack.postgres import Provisioned

pytestmark = pytest.mark.integration

_OLD_REACTIVATION = (
    "UPDATE users SET active = true, deactivation_reason = '', updated_at = now() WHERE id = $1"
)
_OLD_DEACTIVATION = (
    "UPDATE users SET active = false, deactivation_reason = 'fraud', updated_at = now()"
    " WHERE id = $1"
)


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
async def owner(databases: Provisioned) -> AsyncIterator[asyncpg.Connection]:
    await asyncio.to_thread(
        migrate_chain, AUTH_CHAIN, databases.auth_owner_dsn, databases.auth_app_role
    )
    conn = await asyncpg.connect(_plain(databases.auth_owner_dsn))
    try:
        yield conn
    finally:
        await conn.close()


async def _user(conn: asyncpg.Connection, role: str = "USER") -> str:
    user_id = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO users (id, email, password_hash, full_name, role)"
        " VALUES ($1, $2, 'x', 'Test', $3)",
        user_id,
        f"{user_id}@example.com",
        role,
    )
    return user_id


async def _deactivator(conn: asyncpg.Connection, user_id: str) -> str | None:
    value = await conn.fetchval("SELECT deactivated_by FROM users WHERE id = $1", user_id)
    return None if value is None else str(value)


async def test_an_older_auths_reactivation_clears_the_deactivator(
    owner: asyncpg.Connection,
) -> None:
    admin, user = await _user(owner, "ADMIN"), await _user(owner)
    # Deactivated by the admin, through today's code.
    await owner.execute(
        "UPDATE users SET active = false, deactivated_by = $2 WHERE id = $1", user, admin
    )
    assert await _deactivator(owner, user) == admin

    await owner.execute(_OLD_REACTIVATION, user)
    assert await _deactivator(owner, user) is None
    # A super_admin's deactivation through the older code: no deactivator, not the admin.
    await owner.execute(_OLD_DEACTIVATION, user)
    assert await _deactivator(owner, user) is None


async def test_an_active_user_is_never_written_with_a_deactivator(
    owner: asyncpg.Connection,
) -> None:
    admin, user = await _user(owner, "ADMIN"), await _user(owner)
    await owner.execute("UPDATE users SET deactivated_by = $2 WHERE id = $1", user, admin)
    assert await _deactivator(owner, user) is None


async def test_the_downgrade_drops_the_trigger_and_the_upgrade_builds_it(
    databases: Provisioned, owner: asyncpg.Connection
) -> None:
    async def triggers() -> set[str]:
        rows = await owner.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'users'::regclass AND NOT tgisinternal"
        )
        return {row["tgname"] for row in rows}

    assert "users_active_has_no_deactivator" in await triggers()
    await asyncio.to_thread(
        migrate_chain,
        AUTH_CHAIN,
        databases.auth_owner_dsn,
        databases.auth_app_role,
        action="downgrade",
        revision="0011",
    )
    assert "users_active_has_no_deactivator" not in await triggers()
    await asyncio.to_thread(
        migrate_chain, AUTH_CHAIN, databases.auth_owner_dsn, databases.auth_app_role
    )
    assert "users_active_has_no_deactivator" in await triggers()
