"""The unread side of an inbox reads the partial index of unread notifications, on real
PostgreSQL with the real wallet chain at its head, as wallet's own role.

`notifications_user_unread_idx` is declared `WHERE NOT read`. PostgreSQL proves a query may use
a partial index only from a predicate that implies the index's: `read IS false` does not
(the planner knows `x = false` and `NOT x` as the same, not `IS false`), so a query written so
walked the user's whole inbox to find the few unread ones. The busy payee below holds thousands
of read notifications and two unread: the unread page, the unread count (the app's badge) and
"mark all read" (with a bound too: one statement that finds the bound by its key and marks the
unread ones up to it) each read the partial index, in the generic plan of the prepared statement
too (what asyncpg runs after its fifth execution). Plan shapes, never timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.integration.transfer.sql_capture import (
    CapturedStatement,
    prepared_plan_index_conditions,
    prepared_plan_scans,
)
from tests.integration.wallet.wallet_chain import migrate_to_head
from vaultpay_common.db import create_engine
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters.notifications_sql import SqlNotificationRepository

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PAYEE = "0f0f0f0f-0000-4000-8000-00000000beef"
READ = 5_000  # the payee's read notifications
OTHERS = 2_000  # other users' notifications, ten each
UNREAD_INDEX = "notifications_user_unread_idx"
SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
async def filled(databases: Provisioned) -> Provisioned:
    """The payee's READ read notifications and two unread ones, other users' OTHERS, written as
    the owner (test data only), then ANALYZE."""
    migrated = migrate_to_head(databases)
    owner = migrated.url(
        migrated.vaultpay_owner_role, migrated.vaultpay_database, driver="postgresql"
    )
    conn = await asyncpg.connect(owner)
    try:
        insert = (
            "INSERT INTO notifications (id, user_id, kind, title, body, read, read_at,"
            " created_at, dedupe_key)"
            " SELECT gen_random_uuid(), {user}, 'MONEY_RECEIVED', 'Money received',"
            " 'You received money.', {read}, CASE WHEN {read} THEN $1::timestamptz END,"
            " $1::timestamptz - interval '1 minute' * i, {key} || i"
            " FROM generate_series(1, $2) AS i"
        )
        await conn.execute(
            insert.format(user=f"'{PAYEE}'::uuid", read="true", key="'read-'"), NOW, READ
        )
        await conn.execute(
            insert.format(user=f"'{PAYEE}'::uuid", read="false", key="'unread-'"), NOW, 2
        )
        await conn.execute(
            insert.format(
                user="md5('other-' || (i % 200))::uuid", read="i % 2 = 0", key="'other-'"
            ),
            NOW,
            OTHERS,
        )
        await conn.execute("ANALYZE notifications")
    finally:
        await conn.close()
    return migrated


@pytest.fixture(scope="module")
async def engine(filled: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(filled.app_dsn("wallet"), pool_size=2, application_name="inbox-plans")
    try:
        yield engine
    finally:
        await engine.dispose()


async def _unread_page(conn: AsyncConnection) -> object:
    page = await SqlNotificationRepository(conn).list(PAYEE, unread_only=True, after=None, limit=20)
    assert len(page) == 2
    return page


async def _unread_count(conn: AsyncConnection) -> object:
    count = await SqlNotificationRepository(conn).count_unread(PAYEE)
    assert count == 2
    return count


async def _mark_all_read(conn: AsyncConnection) -> object:
    marked = await SqlNotificationRepository(conn).mark_all_read(PAYEE)
    assert marked == 2
    await conn.rollback()  # the next test finds both unread again
    return marked


async def _mark_all_read_up_to(conn: AsyncConnection) -> object:
    repository = SqlNotificationRepository(conn)
    _newer, older = await repository.list(PAYEE, unread_only=True, after=None, limit=2)
    marked = await repository.mark_all_read(PAYEE, up_to=older.notification_id)
    assert marked == 1
    await conn.rollback()
    return marked


@pytest.mark.parametrize(
    "statement",
    [_unread_page, _unread_count, _mark_all_read, _mark_all_read_up_to],
    ids=["unread page", "unread count", "mark all read", "mark all read up to"],
)
async def test_the_unread_side_of_an_inbox_reads_the_unread_index(
    engine: AsyncEngine,
    filled: Provisioned,
    statement: Callable[[AsyncConnection], Awaitable[object]],
) -> None:
    with CapturedStatement(engine) as captured:
        async with engine.connect() as conn:
            await statement(conn)
            await conn.rollback()
    plans = await prepared_plan_scans(_plain(filled.app_dsn("wallet")), "unread", captured)
    for mode, scans in plans.items():
        assert ("Seq Scan", "notifications") not in scans, (mode, scans)
        assert any(node in SCANS and name == UNREAD_INDEX for node, name in scans), (mode, scans)


async def test_mark_all_read_up_to_a_bound_reads_only_the_unread_up_to_it(
    engine: AsyncEngine, filled: Provisioned
) -> None:
    """The bound is found by its key and limits the range read from the unread index (an
    Index Cond, not a Filter over every unread notification of the user), in one statement."""
    with CapturedStatement(engine) as captured:
        async with engine.connect() as conn:
            await _mark_all_read_up_to(conn)
    plans = await prepared_plan_index_conditions(
        _plain(filled.app_dsn("wallet")), "up_to", captured
    )
    for mode, conditions in plans.items():
        assert "notifications_pkey" in conditions, (mode, conditions)
        assert "ROW(created_at, id) <=" in conditions[UNREAD_INDEX], (mode, conditions)
