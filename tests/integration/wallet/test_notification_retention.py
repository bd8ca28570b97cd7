"""The retention of notifications, on real PostgreSQL with the real wallet chain at its head
(w0010), as wallet's own role.

The hourly cleanup (`purge_old_notifications`) deletes the notifications created more than the
retention ago, read or unread, in bounded batches, oldest first; a notification within the
retention stays and still lists, counts and is marked read. Which ones are due is decided by
the injected clock alone: moved on, it makes the next one due. Each batch reads
`notifications_created_idx`, in the generic plan of the prepared statement too (what asyncpg
runs after its fifth execution), never a scan.

Plan shapes, never timing: the inbox holds many recent notifications of many users (`FILL`)
next to the few under test.
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
from vaultpay_wallet.adapters.notification_retention_sql import (
    delete_old_notifications_batch,
    purge_old_notifications,
)
from vaultpay_wallet.adapters.notifications_sql import SqlNotificationRepository, notifications

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=180)
FILL = 20_000  # notifications within the retention, of FILL // 10 users
BATCH = 100
INDEX = "notifications_created_idx"
SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
def migrated(databases: Provisioned) -> Provisioned:
    return migrate_to_head(databases)


@pytest.fixture(scope="module")
async def filled(migrated: Provisioned) -> Provisioned:
    """FILL notifications of FILL // 10 users, every one created within the retention of NOW
    (one every 12 minutes back to some 167 days ago), one in three read; written as the owner
    (test data only), then ANALYZE."""
    owner = migrated.url(
        migrated.vaultpay_owner_role, migrated.vaultpay_database, driver="postgresql"
    )
    conn = await asyncpg.connect(owner)
    try:
        await conn.execute(
            "INSERT INTO notifications (id, user_id, kind, title, body, read, read_at,"
            " created_at, dedupe_key)"
            " SELECT gen_random_uuid(), md5('filler-' || (i % $2))::uuid, 'MONEY_RECEIVED',"
            " 'Money received', 'You received money.', i % 3 = 0,"
            " CASE WHEN i % 3 = 0 THEN $1::timestamptz END,"
            " $1::timestamptz - interval '12 minutes' * i, 'fill-' || i"
            " FROM generate_series(1, $3) AS i",
            NOW,
            FILL // 10,
            FILL,
        )
        await conn.execute("ANALYZE notifications")
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


def _notification(user: str, key: str, created_at: datetime, *, read: bool) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "user_id": user,
        "kind": "MONEY_SENT",
        "title": "Money sent",
        "body": f"Notification {key}.",
        "read": read,
        "read_at": created_at + timedelta(minutes=5) if read else None,
        "created_at": created_at,
        "dedupe_key": key,
    }


async def _count(engine: AsyncEngine, *where: Any) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(notifications).where(*where)
        return int((await conn.execute(query)).scalar_one())


async def test_old_notifications_go_read_or_unread_and_recent_ones_stay_and_work(
    engine: AsyncEngine,
) -> None:
    user = str(uuid.uuid4())
    long_ago = NOW - RETENTION - timedelta(hours=1)  # older than the retention: goes
    lately = NOW - RETENTION + timedelta(hours=1)  # within it, by an hour: stays, for now
    # More than two batches of old ones, read and unread; one within the retention by an hour;
    # a recent read one and a recent unread one.
    old = [
        _notification(user, f"old-{i}", long_ago - timedelta(minutes=i), read=i % 2 == 0)
        for i in range(2 * BATCH + 50)
    ]
    kept = [
        _notification(user, "lately", lately, read=False),
        _notification(user, "recent-read", NOW - timedelta(days=3), read=True),
        _notification(user, "recent-unread", NOW - timedelta(hours=2), read=False),
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(notifications), [*old, *kept])
    assert await _count(engine, notifications.c.user_id == user) == len(old) + 3

    # One batch takes BATCH notifications, no more, the oldest first.
    async with engine.begin() as conn:
        assert await delete_old_notifications_batch(conn, NOW - RETENTION, BATCH) == BATCH
    newest_old = [f"old-{i}" for i in range(len(old) - BATCH)]  # created last of the old
    assert await _count(engine, notifications.c.dedupe_key.like("old-%")) == len(newest_old)
    assert await _count(engine, notifications.c.dedupe_key.in_(newest_old)) == len(newest_old)

    clock = FixedClock(NOW)
    deleted = await purge_old_notifications(
        engine, clock=clock, retention=RETENTION, batch_size=BATCH
    )
    assert deleted == len(old) - BATCH

    # What stayed: the filler (all within the retention) and the three under test, which still
    # list (newest first), count as unread and are marked read.
    assert await _count(engine) == FILL + 3
    async with engine.begin() as conn:
        inbox = SqlNotificationRepository(conn)
        listed = await inbox.list(user, unread_only=False, after=None, limit=50)
        assert [n.created_at for n in listed] == [
            NOW - timedelta(hours=2),
            NOW - timedelta(days=3),
            lately,
        ]
        assert await inbox.count_unread(user) == 2
        assert await inbox.mark_all_read(user) == 2
        assert await inbox.count_unread(user) == 0

    # Nothing more is due: a second run deletes nothing.
    assert await purge_old_notifications(engine, clock=clock, retention=RETENTION) == 0

    # Two hours on, the one that was within the retention by an hour is due too, read or not.
    clock.advance(timedelta(hours=2))
    assert await purge_old_notifications(engine, clock=clock, retention=RETENTION) == 1
    async with engine.connect() as conn:
        listed = await SqlNotificationRepository(conn).list(
            user, unread_only=False, after=None, limit=50
        )
    assert [n.created_at for n in listed] == [NOW - timedelta(hours=2), NOW - timedelta(days=3)]
    assert await _count(engine, notifications.c.dedupe_key == "lately") == 0
    assert await _count(engine) == FILL + 2


async def test_a_purge_batch_reads_the_creation_index_in_generic_plans_too(
    engine: AsyncEngine, filled: Provisioned
) -> None:
    with CapturedStatement(engine) as captured:
        async with engine.begin() as conn:
            # Nothing of the filler is due: the batch is empty, as most hourly runs are.
            assert await delete_old_notifications_batch(conn, NOW - RETENTION, BATCH) == 0
    plans = await prepared_plan_scans(_plain(filled.app_dsn("wallet")), "purge", captured)
    for mode, scans in plans.items():
        assert ("Seq Scan", "notifications") not in scans, (mode, scans)
        assert any(node in SCANS and name == INDEX for node, name in scans), (mode, scans)
        assert ("Tid Scan", "notifications") in scans, (mode, scans)


async def test_the_retention_keeps_at_least_a_day(engine: AsyncEngine) -> None:
    # The service's setting refuses less too (WalletSettings.notification_retention_days).
    with pytest.raises(ValueError, match="at least a day"):
        await purge_old_notifications(engine, clock=FixedClock(NOW), retention=timedelta(hours=23))
