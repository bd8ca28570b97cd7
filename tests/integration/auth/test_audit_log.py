"""Auth's audit log: append-only for the app role, sealed in the background, and
`vaultpay-auth verify-audit` catches tampering and (with a checkpoint directory) deletions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.auth.conftest import AuthStack
from vaultpay_auth.settings import AuthSettings
from vaultpay_common.audit import AuditSealer, FileCheckpointStore, verify_audit
from vaultpay_common.db import create_engine
from vaultpay_devstack.postgres import run_sql


def _app_dsn(auth: AuthStack) -> str:
    return auth.dbs.url(auth.dbs.auth_app_role, auth.dbs.auth_database, driver="postgresql")


def _superuser_dsn(auth: AuthStack) -> str:
    return auth.admin_dsn.rsplit("/", 1)[0] + "/" + auth.dbs.auth_database


@dataclass
class Sealing:
    """A sealer with a checkpoint directory, keyed like the auth service, and the CLI env."""

    engine: AsyncEngine
    sealer: AuditSealer
    chain_key: bytes
    checkpoints: FileCheckpointStore
    env: dict[str, str]

    async def seal_everything(self, *, anchored: bool = True, within: float = 10.0) -> None:
        """Seals until nothing committed is left unsealed (the server's sealer helps).

        `anchored=False` seals without the checkpoints (once a test has broken the chain on
        purpose, the anchored sealer refuses to go on).
        """
        sealer = self.sealer if anchored else AuditSealer(self.engine, self.chain_key, None)
        deadline = time.monotonic() + within
        while True:
            await sealer.seal_once()
            result = await verify_audit(self.engine, self.chain_key, self.checkpoints)
            if result.unsealed == 0:
                return
            assert time.monotonic() < deadline, result.report()


@pytest.fixture(scope="module")
async def sealing(
    auth: AuthStack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Sealing]:
    settings = AuthSettings(
        database_url=auth.env["AUTH_DATABASE_URL"],
        redis_url=auth.env["AUTH_REDIS_URL"],
        key_encryption_key=auth.env["AUTH_KEY_ENCRYPTION_KEY"],
    )
    directory: Path = tmp_path_factory.mktemp("audit-checkpoints")
    checkpoints = FileCheckpointStore(directory, settings.audit_checkpoint_key)
    engine = create_engine(auth.env["AUTH_DATABASE_URL"], pool_size=2, application_name="t-seal")
    try:
        yield Sealing(
            engine,
            AuditSealer(engine, settings.audit_key, checkpoints),
            settings.audit_key,
            checkpoints,
            {"AUTH_AUDIT_CHECKPOINT_DIR": str(directory)},
        )
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'forged' WHERE sequence = 1",
        "DELETE FROM audit_events WHERE sequence = 1",
        "TRUNCATE audit_events",
        "INSERT INTO audit_events (sequence, created_at, xact_id, actor_id, actor_role, action,"
        " target_type, target_id, request_id, details) VALUES (9223372036854775807, now(),"
        " pg_current_xact_id(), 'x', '', 'forged', 'user', 'u', '', '{}')",
        "DELETE FROM audit_seals",
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


async def test_verify_audit_reports_an_intact_anchored_chain_once_sealed(
    auth: AuthStack, sealing: Sealing
) -> None:
    await auth.register()
    await sealing.seal_everything()
    intact = auth.cli("verify-audit", env=sealing.env)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit chain intact" in intact.stdout
    assert "reached, hash matches" in intact.stdout


async def test_verifier_finds_the_newest_rows_deleted_thanks_to_the_checkpoint(
    auth: AuthStack, sealing: Sealing
) -> None:
    await auth.register()
    await auth.register()
    await sealing.seal_everything()
    assert auth.cli("verify-audit", env=sealing.env).returncode == 0

    async def delete_newest(conn: Any) -> None:
        # Only someone who can switch the triggers off gets this far; the chain that is left
        # is valid, but shorter than the signed checkpoint says.
        await conn.execute("SET session_replication_role = replica")
        newest = "SELECT sequence FROM audit_seals ORDER BY position DESC LIMIT 2"
        await conn.execute(f"DELETE FROM audit_events WHERE sequence IN ({newest})")
        await conn.execute(
            "DELETE FROM audit_seals WHERE position > (SELECT max(position) - 2 FROM audit_seals)"
        )

    run_sql(_superuser_dsn(auth), delete_newest)
    broken = auth.cli("verify-audit", env=sealing.env)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "rows deleted after position" in broken.stdout


async def test_verifier_finds_a_row_tampered_with_in_the_database(
    auth: AuthStack, sealing: Sealing
) -> None:
    await auth.register()
    await auth.register()
    await sealing.seal_everything(anchored=False)  # the test before deleted the newest rows

    async def tamper(conn: Any) -> None:
        # Only a superuser can get past the trigger, and even then the chain tells.
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            "UPDATE audit_events SET target_id = 'someone-else' "
            "WHERE sequence = (SELECT sequence FROM audit_seals WHERE position = 2)"
        )

    run_sql(_superuser_dsn(auth), tamper)
    broken = auth.cli("verify-audit")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "BROKEN at position 2" in broken.stdout
