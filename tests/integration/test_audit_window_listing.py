"""An audit listing with a time window reads the window, not every event newer than it (nor,
for a short page, every event older than it too), and returns what the plain query returns
even where times and sequences disagree. On the platform's audit log, as a service's role.

The listing is newest first by `sequence`, its window on `created_at`. The planner prices the
events of a window as spread evenly over the sequence, so it walked the primary key back from
the newest event until it had a page: a window a month old read a month of events first, and a
window holding fewer events than the page (an empty one, the last page of any) read the log
back to its first event. A row's time and sequence are taken one after the other by
`audit_append()`, so they rise together but not strictly (concurrent appends, a clock stepped
back): the log below holds such rows, and every page equals the plain query's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.transfer.sql_capture import CapturedStatement, prepared_plan_scans
from vaultpay_common.audit import AuditQuery, list_audit_events
from vaultpay_common.db import create_engine
from vaultpay_common.migrations import PLATFORM_CHAIN, upgrade_all
from vaultpay_devstack.postgres import Provisioned

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
EVENTS = 60_000  # event i (sequence 2i) was appended EVENTS - i minutes before NOW
TIME_INDEX = "audit_events_created_idx"
MONTH_AGO = NOW - timedelta(days=30)
# Out of order: two events appended last with times of an hour a month ago, and one with an
# early sequence (between events 100 and 101) and a time of the last two hours.
LATE_AT = (MONTH_AGO + timedelta(minutes=10, seconds=30), MONTH_AGO + timedelta(minutes=50))
EARLY = (201, NOW - timedelta(minutes=61, seconds=30))
PAGE = 50


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
async def migrated(databases: Provisioned) -> Provisioned:
    """The platform chain at its head and the log above, sealed, written as the owner (the
    tables are append-only; test data only), then ANALYZE."""
    await asyncio.to_thread(
        upgrade_all, [PLATFORM_CHAIN], databases.vaultpay_owner_dsn, databases.vaultpay_app_role
    )
    owner = await asyncpg.connect(_plain(databases.vaultpay_owner_dsn))
    insert = (
        "INSERT INTO audit_events (sequence, created_at, xact_id, actor_id, actor_role, action,"
        " target_type, target_id, request_id, details)"
        " SELECT {sequence}, {at}, pg_current_xact_id(), 'staff', 'ADMIN', 'plan.window',"
        " 'wallet', 'w', '', '{{}}' {rows}"
    )
    try:
        await owner.execute(
            insert.format(
                sequence="2 * i",
                at="$1::timestamptz - ($2 - i) * interval '1 minute'",
                rows="FROM generate_series(1, $2) AS i",
            ),
            NOW,
            EVENTS,
        )
        await owner.execute("SELECT setval('audit_events_sequence_seq', $1)", 2 * EVENTS)
        for at in LATE_AT:
            await owner.execute(
                insert.format(sequence="nextval('audit_events_sequence_seq')", at="$1", rows=""),
                at,
            )
        await owner.execute(insert.format(sequence="$1", at="$2", rows=""), *EARLY)
        # Every event sealed, as the sealer leaves the log within seconds.
        await owner.execute(
            "INSERT INTO audit_seals (position, sequence, prev_hash, row_hash, sealed_at)"
            " SELECT row_number() OVER (ORDER BY sequence), sequence, repeat('0', 64),"
            " repeat('a', 64), created_at FROM audit_events"
        )
        await owner.execute("ANALYZE audit_events, audit_seals")
    finally:
        await owner.close()
    return databases


@pytest.fixture(scope="module")
async def engine(migrated: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated.app_dsn("wallet"), pool_size=1, application_name="windows")
    try:
        yield engine
    finally:
        await engine.dispose()


async def _plain_query(dsn: str, query: AuditQuery, before: int | None) -> list[int]:
    """The page as the listing's filters say it, by the plain query (no estimate of anything)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT sequence FROM audit_events WHERE ($1::timestamptz IS NULL OR created_at >= $1)"
            " AND ($2::timestamptz IS NULL OR created_at < $2)"
            " AND ($3::bigint IS NULL OR sequence < $3) ORDER BY sequence DESC LIMIT $4",
            query.start,
            query.end,
            before,
            PAGE,
        )
    finally:
        await conn.close()
    return [row["sequence"] for row in rows]


WINDOWS = {
    "an hour a month ago": AuditQuery(start=MONTH_AGO, end=MONTH_AGO + timedelta(hours=1)),
    "the last two hours": AuditQuery(start=NOW - timedelta(hours=2), end=NOW + timedelta(hours=1)),
    "since a month ago": AuditQuery(start=MONTH_AGO),
    "until a month ago": AuditQuery(end=MONTH_AGO),
    "a day before the first event": AuditQuery(
        start=NOW - timedelta(minutes=EVENTS + 1440), end=NOW - timedelta(minutes=EVENTS)
    ),
    "tomorrow": AuditQuery(start=NOW + timedelta(days=1), end=NOW + timedelta(days=2)),
    "a month ago, one action": AuditQuery(
        action="plan.window", start=MONTH_AGO, end=MONTH_AGO + timedelta(hours=1)
    ),
}


@pytest.mark.parametrize("query", WINDOWS.values(), ids=WINDOWS.keys())
async def test_every_page_of_a_window_is_the_plain_querys(
    engine: AsyncEngine, migrated: Provisioned, query: AuditQuery
) -> None:
    """Up to ten pages of each window, keyset after keyset: the same events in the same order
    as the plain query, the out-of-order ones included where their sequence puts them."""
    dsn = _plain(migrated.vaultpay_owner_dsn)
    before: int | None = None
    seen: list[int] = []
    async with engine.connect() as conn:
        for _ in range(10):
            page = [r.sequence for r in await list_audit_events(conn, query, before, PAGE)]
            assert page == await _plain_query(dsn, query, before), before
            seen += page
            if len(page) < PAGE:
                break
            before = page[-1]
            await conn.rollback()
    if query.start == MONTH_AGO and query.end is not None:
        late = sorted((2 * EVENTS + 1, 2 * EVENTS + 2), reverse=True)
        assert seen[:2] == late and len(seen) == 60 + 2
    if query.start == NOW - timedelta(hours=2):
        assert seen[-1] == EARLY[0] and len(seen) == 121 + 1


@dataclass(frozen=True, slots=True)
class Read:
    query: AuditQuery
    pages_before: int  # the page explained follows this many
    index: str | None  # what each plan reads of audit_events; None: the planner's choice


READS = {
    # The window, never the month of events newer than it.
    "an hour a month ago": Read(WINDOWS["an hour a month ago"], 0, TIME_INDEX),
    "an hour a month ago, next page": Read(WINDOWS["an hour a month ago"], 1, TIME_INDEX),
    # Fewer events than a page: the window, never the log back to its first event.
    "a day before the first event": Read(WINDOWS["a day before the first event"], 0, TIME_INDEX),
    "tomorrow": Read(WINDOWS["tomorrow"], 0, TIME_INDEX),
    "the last two hours, last page": Read(WINDOWS["the last two hours"], 2, TIME_INDEX),
    # A recent window's page is the newest events: as before, the planner may walk the primary
    # key back (PAGE events) or, for a small window, read it from the time index.
    "the last two hours": Read(WINDOWS["the last two hours"], 0, None),
    "since a month ago": Read(WINDOWS["since a month ago"], 0, None),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
async def test_a_page_reads_the_window_or_the_newest_events(
    engine: AsyncEngine, migrated: Provisioned, read: Read
) -> None:
    """The page's statement (captured from the engine), prepared as the service's role, in its
    generic and its custom plan: the range of the time index where the window is the smaller
    read, the primary key where the page is the newest events. Plan shapes, never timing."""
    before: int | None = None
    async with engine.connect() as conn:
        for _ in range(read.pages_before):
            before = (await list_audit_events(conn, read.query, before, PAGE))[-1].sequence
        with CapturedStatement(engine) as captured:
            await list_audit_events(conn, read.query, before, PAGE)
    dsn = _plain(migrated.app_dsn("wallet"))
    plans = await prepared_plan_scans(dsn, "window_page", captured)
    for mode, scans in sorted(plans.items()):
        assert ("Seq Scan", "audit_events") not in scans, (mode, scans)
        read_of_events = {name for node, name in scans if name.startswith("audit_events_")}
        if read.index is not None:
            assert read_of_events == {read.index}, (mode, scans)
    # The time index's range is chosen by the listing, not left to the planner.
    ordered_as_is = "ORDER BY audit_events.sequence DESC" in captured.statement
    assert ordered_as_is == (read.index is None), captured.statement
