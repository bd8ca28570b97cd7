"""kyc k0005 on a fresh database: one PENDING submission per user instead of one PENDING or
VERIFIED, so a user approved at BASIC can hold an upgrade request; and its downgrade, which
restores k0001's index and refuses while a user holds both. And a revision whose DDL locks a
table the service writes (k0008's trigger) gives up within `LOCK_WAIT_LIMIT` behind a long
transaction instead of queueing every later write behind its lock request."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from vaultpay_common.migrations import (
    LOCK_WAIT_LIMIT,
    PLATFORM_CHAIN,
    migrate_chain,
    upgrade_all,
)
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, deprovision, provision, run_sql, unique_suffix
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN

pytestmark = pytest.mark.integration

_INSERT = """
INSERT INTO kyc_submissions (id, user_id, document_type, masked_number, number_hash, status,
    granted_tier, created_at, reviewed_at, key_id, wrapped_key, sealed_number)
SELECT $1::uuid, $2, 'PAN', 'XXXXXX234F', repeat('a', 64), $3, $4, now(),
    CASE WHEN $3 = 'PENDING' THEN NULL ELSE now() END, key_id, '\\x00'::bytea, '\\x00'::bytea
  FROM kyc_keys WHERE state = 'ACTIVE'
"""


@pytest.fixture
def dbs(infra: Infra) -> Iterator[Provisioned]:
    admin = infra.postgres.admin_dsn
    fresh = provision(admin, suffix=unique_suffix("k"), password=secrets.token_urlsafe(24))
    try:
        upgrade_all(
            [PLATFORM_CHAIN, KYC_CHAIN],
            fresh.vaultpay_owner_dsn,
            fresh.vaultpay_app_role,
            chain_roles=fresh.chain_roles(),
        )
        yield fresh
    finally:
        deprovision(admin, fresh)


def _owner(dbs: Provisioned, sql: str, *args: Any) -> list[Any]:
    owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")

    async def run(conn: Any) -> list[Any]:
        return list(await conn.fetch(sql, *args))

    return run_sql(owner, run)


def _add(dbs: Provisioned, user_id: str, status: str, tier: str | None = None) -> str:
    submission_id = str(uuid.uuid4())
    _owner(dbs, _INSERT, submission_id, user_id, status, tier)
    return submission_id


def _indexes(dbs: Provisioned) -> list[str]:
    rows = _owner(
        dbs,
        "SELECT indexname FROM pg_indexes WHERE tablename = 'kyc_submissions'"
        " AND indexname LIKE 'kyc_submissions_one_%'",
    )
    return sorted(r["indexname"] for r in rows)


def _downgrade(dbs: Provisioned) -> None:
    migrate_chain(
        KYC_CHAIN,
        dbs.vaultpay_owner_dsn,
        dbs.chain_roles()["kyc"],
        shared_role=dbs.chain_roles()["platform"],
        action="downgrade",
        revision="k0004",
    )


def test_an_approved_user_may_hold_one_pending_upgrade_and_the_downgrade_waits_for_it(
    dbs: Provisioned,
) -> None:
    assert _indexes(dbs) == ["kyc_submissions_one_pending"]
    user = str(uuid.uuid4())
    _add(dbs, user, "VERIFIED", "BASIC")
    upgrade = _add(dbs, user, "PENDING")  # k0001's index refused this
    with pytest.raises(asyncpg.UniqueViolationError):
        _add(dbs, user, "PENDING")
    # The unique violation of k0001's index surfaces as itself, not as the migration
    # runner's unlock failing in the aborted transaction (vaultpay_common.migrations.run_env).
    with pytest.raises(DBAPIError) as refused:
        _downgrade(dbs)
    assert "kyc_submissions_one_open" in str(refused.value), str(refused.value)
    assert "current transaction is aborted" not in str(refused.value)
    assert _indexes(dbs) == ["kyc_submissions_one_pending"]  # rolled back whole
    _owner(dbs, "DELETE FROM kyc_submissions WHERE id = $1::uuid", upgrade)
    _downgrade(dbs)
    assert _indexes(dbs) == ["kyc_submissions_one_open"]
    with pytest.raises(asyncpg.UniqueViolationError):
        _add(dbs, user, "PENDING")


def _migrate_kyc(dbs: Provisioned, action: str, revision: str) -> None:
    migrate_chain(
        KYC_CHAIN,
        dbs.vaultpay_owner_dsn,
        dbs.chain_roles()["kyc"],
        shared_role=dbs.chain_roles()["platform"],
        action=action,  # type: ignore[arg-type]
        revision=revision,
    )


def _triggers(dbs: Provisioned) -> list[str]:
    rows = _owner(
        dbs,
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'kyc_submissions'::regclass"
        " AND NOT tgisinternal ORDER BY tgname",
    )
    return [r["tgname"] for r in rows]


def test_a_revision_behind_a_long_transaction_gives_up_instead_of_stalling_writes(
    dbs: Provisioned,
) -> None:
    """Review of 2026-12-05: the DDL's lock request waited, without bound, behind any open
    transaction on the table, and every submission queued behind it meanwhile."""
    _migrate_kyc(dbs, "downgrade", "k0007")
    assert "kyc_submissions_new_pending" not in _triggers(dbs)
    owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")
    locked, release = threading.Event(), threading.Event()

    async def hold(conn: Any) -> None:  # an open write transaction on the table, for minutes
        async with conn.transaction():
            await conn.execute("LOCK TABLE kyc_submissions IN ROW EXCLUSIVE MODE")
            locked.set()
            await asyncio.to_thread(release.wait)

    holder = threading.Thread(target=run_sql, args=(owner, hold))
    holder.start()
    try:
        assert locked.wait(30)
        started = time.monotonic()
        with pytest.raises(DBAPIError, match="lock timeout"):
            _migrate_kyc(dbs, "upgrade", "head")
        limit = float(LOCK_WAIT_LIMIT.removesuffix("s"))
        assert time.monotonic() - started < limit + 25  # a bound, not forever
        assert "kyc_submissions_new_pending" not in _triggers(dbs)  # nothing half-done
    finally:
        release.set()
        holder.join()
    _migrate_kyc(dbs, "upgrade", "head")
    assert "kyc_submissions_new_pending" in _triggers(dbs)
