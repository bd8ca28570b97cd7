"""The stale PIN-lock sweep and the retention of expired rows, on real PostgreSQL with the real
wallet chain at its head (w0009), as wallet's own role.

* The freeze sweep's look for counters left at 3 (`SqlPinRepository.stale_lock_wallet_ids`,
  every 30 s) read every row of `wallet_pins`; it now reads `wallet_pins_stale_lock_idx`, in
  the generic plan of the prepared statement too (what asyncpg runs after its fifth execution),
  and still finds exactly the stale counters.
* The hourly cleanup (`purge_expired_wallet_rows`) deletes PIN reset tokens, IP confirmations
  and trusted IPs expired for more than the margin, used or not, in bounded batches; a live
  token, a live confirmation, a trusted address in force and a row expired within the margin
  stay, and still work. Each batch reads its table's `expires_at` index, never a scan.

Plan shapes, never timing: the tables hold many live rows (`FILL`) next to the few under test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import FixedClock
from tests.integration.transfer.sql_capture import CapturedStatement, prepared_plan_scans
from tests.integration.wallet.wallet_chain import migrate_to_head
from vaultpay_common.db import create_engine
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters.ip_trust_sql import (
    SqlIpConfirmationRepository,
    SqlTrustedIpRepository,
    ip_confirmations,
    trusted_ips,
)
from vaultpay_wallet.adapters.repositories import SqlPinRepository, SqlPinResetTokenRepository
from vaultpay_wallet.adapters.retention_sql import (
    PURGED_TABLES,
    delete_expired_batch,
    purge_expired_wallet_rows,
)
from vaultpay_wallet.adapters.tables import pin_reset_tokens
from vaultpay_wallet.domain.pin import PIN_LOCKOUT_DURATION

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
MARGIN = timedelta(days=1)
FILL = 20_000  # live rows per table (and wallets with an unused PIN counter)
BATCH = 100
STALE_LOCK_INDEX = "wallet_pins_stale_lock_idx"
SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


def _owner_dsn(dbs: Provisioned) -> str:
    return dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")


def _hex64(seed: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, seed).hex * 2


@pytest.fixture(scope="module")
def migrated(databases: Provisioned) -> Provisioned:
    return migrate_to_head(databases)


@pytest.fixture(scope="module")
async def filled(migrated: Provisioned) -> Provisioned:
    """FILL wallets with an unused PIN counter, and FILL live rows in each purged table, all
    far from what the tests look for; written as the owner (test data only), then ANALYZE."""
    conn = await asyncpg.connect(_owner_dsn(migrated))
    try:
        await conn.execute(
            "INSERT INTO wallets (id, user_id, display_name, currency, status, kyc_tier,"
            " created_at, updated_at)"
            " SELECT 'VPY-F' || lpad(upper(to_hex(i)), 5, '0'), 'filler-' || i, 'Filler',"
            " 'INR', 'ACTIVE', 'BASIC', $1, $1 FROM generate_series(1, $2) AS i",
            NOW - timedelta(days=400),
            FILL,
        )
        await conn.execute(
            "INSERT INTO wallet_pins (wallet_id, pin_hash, failed_attempts, updated_at,"
            " last_attempt_at)"
            " SELECT id, 'x', (row_number() OVER (ORDER BY id)) % 3, $1,"
            " $1::timestamptz - interval '1 day' * (row_number() OVER (ORDER BY id) % 300)"
            " FROM wallets WHERE id LIKE 'VPY-F%'",
            NOW,
        )
        # Live: each expires after NOW (a purge at NOW never takes one).
        await conn.execute(
            "INSERT INTO pin_reset_tokens (token_hash, wallet_id, created_at, expires_at)"
            " SELECT 'fill-' || id, id, $1,"
            " $1::timestamptz + interval '1 minute' * (row_number() OVER ())"
            " FROM wallets WHERE id LIKE 'VPY-F%'",
            NOW,
        )
        await conn.execute(
            "INSERT INTO trusted_ips (user_id, ip_hash, first_seen_at, last_seen_at, expires_at)"
            " SELECT gen_random_uuid(), encode(sha256(i::text::bytea), 'hex'),"
            " $1::timestamptz, $1, $1 + interval '1 minute' * i"
            " FROM generate_series(1, $2) AS i",
            NOW,
            FILL,
        )
        await conn.execute(
            "INSERT INTO ip_confirmations (user_id, ip_hash, token_hash, request_id, sent_at,"
            " expires_at)"
            " SELECT gen_random_uuid(), encode(sha256(i::text::bytea), 'hex'), 'fill-' || i,"
            " 'r', $1::timestamptz, $1 + interval '1 minute' * i"
            " FROM generate_series(1, $2) AS i",
            NOW,
            FILL,
        )
        for table in ("wallets", "wallet_pins", "wallet_freezes", *PURGED_TABLES):
            await conn.execute(f"ANALYZE {table}")
    finally:
        await conn.close()
    return migrated


@pytest.fixture(scope="module")
async def engine(filled: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(filled.app_dsn("wallet"), pool_size=2, application_name="retention")
    try:
        yield engine
    finally:
        await engine.dispose()


# ----- the stale PIN-lock sweep -------------------------------------------------------------


async def test_the_stale_lock_sweep_reads_its_partial_index_in_generic_plans_too(
    engine: AsyncEngine, filled: Provisioned
) -> None:
    before = NOW - PIN_LOCKOUT_DURATION
    stale, locked, recent = "VPY-STALE1", "VPY-LOCKD1", "VPY-RECNT1"
    conn = await asyncpg.connect(_owner_dsn(filled))
    try:
        for wallet_id, last_attempt in (
            (stale, before - timedelta(hours=1)),
            (locked, before - timedelta(hours=1)),
            (recent, before + timedelta(hours=1)),
        ):
            await conn.execute(
                "INSERT INTO wallets (id, user_id, display_name, currency, status, kyc_tier,"
                " created_at, updated_at) VALUES ($1, $1, 'T', 'INR', 'ACTIVE', 'BASIC', $2, $2)",
                wallet_id,
                NOW - timedelta(days=10),
            )
            await conn.execute(
                "INSERT INTO wallet_pins (wallet_id, pin_hash, failed_attempts, updated_at,"
                " last_attempt_at) VALUES ($1, 'x', 3, $2, $2)",
                wallet_id,
                last_attempt,
            )
        await conn.execute(
            "INSERT INTO wallet_freezes (wallet_id, source, frozen_at, until)"
            " VALUES ($1, 'PIN_LOCKOUT', $2, $3)",
            locked,
            before,
            NOW + timedelta(hours=1),
        )
    finally:
        await conn.close()

    with CapturedStatement(engine) as captured:
        async with engine.connect() as session:
            found = await SqlPinRepository(session).stale_lock_wallet_ids(before, 500)
    # Only the counter left at 3 with no lockout written, its last attempt over a day ago; no
    # filler (none is at 3).
    assert list(found) == [stale]

    plans = await prepared_plan_scans(_plain(filled.app_dsn("wallet")), "stale_locks", captured)
    for mode, scans in plans.items():
        assert ("Seq Scan", "wallet_pins") not in scans, (mode, scans)
        assert any(node in SCANS and name == STALE_LOCK_INDEX for node, name in scans), (
            mode,
            scans,
        )


# ----- retention of expired rows ------------------------------------------------------------


async def _insert(engine: AsyncEngine, table: Any, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(table), rows)


async def _count(engine: AsyncEngine, table: Any, *where: Any) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
        )


async def test_expired_rows_go_in_bounded_batches_and_live_ones_stay_and_work(
    engine: AsyncEngine, filled: Provisioned
) -> None:
    wallet_id = "VPY-RETN01"
    conn = await asyncpg.connect(_owner_dsn(filled))
    try:
        await conn.execute(
            "INSERT INTO wallets (id, user_id, display_name, currency, status, kyc_tier,"
            " created_at, updated_at) VALUES ($1, $1, 'T', 'INR', 'ACTIVE', 'BASIC', $2, $2)",
            wallet_id,
            NOW - timedelta(days=90),
        )
    finally:
        await conn.close()
    long_ago = NOW - MARGIN - timedelta(hours=1)  # expired more than the margin ago: goes
    lately = NOW - MARGIN + timedelta(hours=1)  # expired, but within the margin: stays
    live = NOW + timedelta(minutes=10)
    user = str(uuid.uuid4())

    # PIN reset tokens: many long expired (more than two batches), one used and long expired,
    # one expired lately, one live and unused.
    old_tokens = [
        {
            "token_hash": f"old-{i}",
            "wallet_id": wallet_id,
            "created_at": long_ago - timedelta(minutes=15 + i),
            "expires_at": long_ago - timedelta(minutes=i),
            "used_at": None,
        }
        for i in range(2 * BATCH + 50)
    ]
    kept_tokens = [
        {
            "token_hash": "lately",
            "wallet_id": wallet_id,
            "created_at": lately - timedelta(minutes=15),
            "expires_at": lately,
            "used_at": None,
        },
        {
            "token_hash": "live",
            "wallet_id": wallet_id,
            "created_at": NOW - timedelta(minutes=5),
            "expires_at": live,
            "used_at": None,
        },
    ]
    used = {
        "token_hash": "used-long-ago",
        "wallet_id": wallet_id,
        "created_at": long_ago - timedelta(minutes=15),
        "expires_at": long_ago,
        "used_at": long_ago - timedelta(minutes=10),
    }
    await _insert(engine, pin_reset_tokens, [*old_tokens, used, *kept_tokens])

    def confirmation(seed: str, expires_at: datetime, used_at: datetime | None) -> dict[str, Any]:
        return {
            "user_id": user,
            "ip_hash": _hex64(seed),
            "token_hash": f"ipc-{seed}",
            "request_id": str(uuid.uuid4()),
            "sent_at": expires_at - timedelta(minutes=30),
            "expires_at": expires_at,
            "used_at": used_at,
        }

    await _insert(
        engine,
        ip_confirmations,
        [
            confirmation("c-old", long_ago, None),
            confirmation("c-used", long_ago, long_ago - timedelta(minutes=20)),
            confirmation("c-lately", lately, None),
            confirmation("c-live", live, None),
        ],
    )

    def trusted(seed: str, expires_at: datetime) -> dict[str, Any]:
        return {
            "user_id": user,
            "ip_hash": _hex64(seed),
            "first_seen_at": expires_at - timedelta(days=60),
            "last_seen_at": expires_at - timedelta(days=30),
            "expires_at": expires_at,
        }

    await _insert(
        engine,
        trusted_ips,
        [
            trusted("t-old", long_ago - timedelta(days=10)),
            trusted("t-lately", lately),
            trusted("t-live", NOW + timedelta(days=20)),
        ],
    )

    # One batch takes BATCH rows, no more, the oldest first.
    older_than = NOW - MARGIN
    async with engine.begin() as conn:
        assert await delete_expired_batch(conn, "pin_reset_tokens", older_than, BATCH) == BATCH
    left = await _count(engine, pin_reset_tokens, pin_reset_tokens.c.token_hash.like("old-%"))
    assert left == len(old_tokens) - BATCH
    oldest_left = await _count(
        engine,
        pin_reset_tokens,
        pin_reset_tokens.c.token_hash.in_([f"old-{i}" for i in range(len(old_tokens) - BATCH)]),
    )
    assert oldest_left == len(old_tokens) - BATCH  # the newest of them were kept for later

    deleted = await purge_expired_wallet_rows(
        engine, clock=FixedClock(NOW), margin=MARGIN, batch_size=BATCH
    )
    assert deleted == {
        "pin_reset_tokens": len(old_tokens) - BATCH + 1,
        "ip_confirmations": 2,
        "trusted_ips": 1,
    }

    # What went: every row expired more than the margin ago, used or not.
    assert await _count(engine, pin_reset_tokens, pin_reset_tokens.c.wallet_id == wallet_id) == 2
    assert await _count(engine, ip_confirmations, ip_confirmations.c.user_id == user) == 2
    assert await _count(engine, trusted_ips, trusted_ips.c.user_id == user) == 2
    # What stayed: the filler (all live) and the rows under test that are live or expired lately.
    assert await _count(engine, pin_reset_tokens) == FILL + 2
    assert await _count(engine, ip_confirmations) == FILL + 2
    assert await _count(engine, trusted_ips) == FILL + 2

    # The live ones still work for the live flows.
    async with engine.begin() as conn:
        token = await SqlPinResetTokenRepository(conn).get("live", for_update=True)
        assert token is not None and token.usable(NOW)
        pending = await SqlIpConfirmationRepository(conn).get_for_update("ipc-c-live")
        assert pending is not None
        pending.check_usable(NOW)
        address = await SqlTrustedIpRepository(conn).get(user, _hex64("t-live"))
        assert address is not None and address.is_trusted_at(NOW)
        listed = await SqlTrustedIpRepository(conn).list(user, now=NOW, after=None, limit=10)
        assert [t.ip_hash for t in listed] == [_hex64("t-live")]

    # Nothing more to do: a second run deletes nothing.
    again = await purge_expired_wallet_rows(
        engine, clock=FixedClock(NOW), margin=MARGIN, batch_size=BATCH
    )
    assert again == dict.fromkeys(PURGED_TABLES, 0)


@pytest.mark.parametrize("table", PURGED_TABLES)
async def test_a_purge_batch_reads_the_expiry_index_in_generic_plans_too(
    engine: AsyncEngine, filled: Provisioned, table: str
) -> None:
    with CapturedStatement(engine) as captured:
        async with engine.begin() as conn:
            # Nothing of the filler has expired: the batch is empty, as most hourly runs are.
            assert await delete_expired_batch(conn, table, NOW - MARGIN - MARGIN, BATCH) == 0
    plans = await prepared_plan_scans(_plain(filled.app_dsn("wallet")), "purge", captured)
    for mode, scans in plans.items():
        assert ("Seq Scan", table) not in scans, (mode, scans)
        assert any(node in SCANS and name == f"{table}_expires_idx" for node, name in scans), (
            mode,
            scans,
        )
        assert ("Tid Scan", table) in scans, (mode, scans)


async def test_the_margin_keeps_at_least_an_hour(engine: AsyncEngine) -> None:
    # The service's setting refuses less too (WalletSettings.expired_row_retention_hours).
    with pytest.raises(ValueError, match="at least an hour"):
        await purge_expired_wallet_rows(engine, clock=FixedClock(NOW), margin=timedelta(minutes=30))
