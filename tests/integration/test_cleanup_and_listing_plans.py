"""The outbox cleanup and the audit listing read one range of an index, never the table
(platform p0004), on a `vaultpay` database migrated as the services' `migrate` does it: each
service logs in as its own role, and row-level security shows it only its own events.

Each statement is the one the code sends (captured from the engine), prepared and explained as
the service's role prepares it, in its generic and its custom plan. Plan shapes, never timing.
Before p0004 a batch of the purge matched its victims by `event_id IN (SELECT ... LIMIT n)`:
a hash semi join over a scan of the whole table, every batch; and a listing filtered by action
had no index on action.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text

from tests.integration.transfer.sql_capture import CapturedStatement, prepared_plan_scans
from vaultpay_common.audit import AuditQuery, list_audit_events
from vaultpay_common.db import create_engine
from vaultpay_common.migrations import PLATFORM_CHAIN, upgrade_all
from vaultpay_common.outbox import purge_delivered_outbox_events
from vaultpay_common.outbox.sql import OUTBOX_RETENTION
from vaultpay_devstack.postgres import Provisioned
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN, WALLET_CHAIN

pytestmark = pytest.mark.integration

CHAINS = [PLATFORM_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN, KYC_CHAIN]
PURGE_INDEX = "outbox_events_producer_delivered_idx"
ACTION_INDEX = "audit_events_action_idx"
# Delivered events, one a minute over 30 days: transfer's most of them, wallet's and kyc's few.
EVENTS = 30 * 24 * 60
ACTIONS = 40  # audit rows cycle through this many actions...
RARE_EVERY = 500  # ...but for one in this many, a rare one


class _Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
def migrated(databases: Provisioned) -> Provisioned:
    upgrade_all(
        CHAINS,
        databases.vaultpay_owner_dsn,
        databases.vaultpay_app_role,
        chain_roles=databases.chain_roles(),
    )
    return databases


async def _fill_outbox(dbs: Provisioned, now: datetime) -> None:
    """As the owner (test data only): EVENTS delivered events a minute apart (of every
    producer, transfer's 18 in 20), a few pending and dead ones, then ANALYZE."""
    owner = await asyncpg.connect(_plain(dbs.vaultpay_owner_dsn))
    try:
        await owner.execute(
            "INSERT INTO outbox_events (event_id, producer, topic, payload, status,"
            " created_at, delivered_at)"
            " SELECT gen_random_uuid(),"
            " CASE i % 20 WHEN 0 THEN 'wallet' WHEN 1 THEN 'kyc' ELSE 'transfer' END,"
            " 'plan.test', '{}', 'DELIVERED', t.at, t.at"
            " FROM generate_series(1, $1) AS i,"
            " LATERAL (SELECT $2::timestamptz - i * interval '1 minute' AS at) AS t",
            EVENTS,
            now,
        )
        await owner.execute(
            "INSERT INTO outbox_events (event_id, producer, topic, payload, status, dead_at)"
            " SELECT gen_random_uuid(), p, 'plan.test', '{}', s,"
            " CASE s WHEN 'DEAD' THEN $1::timestamptz - interval '20 days' END"
            " FROM unnest(ARRAY['wallet', 'transfer', 'kyc']) AS p,"
            " unnest(ARRAY['PENDING', 'DEAD']) AS s",
            now,
        )
        await owner.execute("ANALYZE outbox_events")
    finally:
        await owner.close()


async def _counts(dbs: Provisioned) -> dict[tuple[str, str], int]:
    owner = await asyncpg.connect(_plain(dbs.vaultpay_owner_dsn))
    try:
        rows = await owner.fetch(
            "SELECT producer, status, count(*) AS n FROM outbox_events"
            " WHERE topic = 'plan.test' GROUP BY 1, 2"
        )
    finally:
        await owner.close()
    return {(r["producer"], r["status"]): r["n"] for r in rows}


async def test_each_producers_purge_is_a_range_of_its_index_and_a_tid_scan(
    migrated: Provisioned,
) -> None:
    """Each service's role purges its own delivered events past the retention, in batches,
    and nobody else's; a batch, in its generic and its custom plan, reads p0004's index for its
    producer and deletes by row address (never a scan of the table, never a join)."""
    now = datetime.now(UTC).replace(microsecond=0)
    await _fill_outbox(migrated, now)
    clock = _Clock(now)
    kept = (OUTBOX_RETENTION.days * 24 * 60) + 1  # minutes 1..7 days are within the retention
    # Event i (minutes ago) is wallet's when i % 20 is 0, kyc's when 1, transfer's otherwise.
    residues = {"wallet": {0}, "kyc": {1}, "transfer": set(range(2, 20))}
    due = {
        producer: sum(1 for i in range(kept, EVENTS + 1) if i % 20 in picked)
        for producer, picked in residues.items()
    }
    before = await _counts(migrated)
    for producer in ("kyc", "wallet", "transfer"):
        engine = create_engine(migrated.app_dsn(producer), pool_size=1, application_name="purge")
        try:
            with CapturedStatement(engine) as captured:
                purged = await purge_delivered_outbox_events(
                    engine, producer, clock=clock, batch_size=500
                )
        finally:
            await engine.dispose()
        assert purged == due[producer], producer
        plans = await prepared_plan_scans(
            _plain(migrated.app_dsn(producer)), f"purge_{producer}", captured
        )
        for mode, scans in plans.items():
            # The victims: the producer's range of the index (an index or a bitmap scan of
            # it, as the planner prices the batch against the range); the delete: their
            # addresses. Nothing else is read.
            victims = [(node, index) for node, index in scans if "Index" in node]
            assert victims and {index for _, index in victims} == {PURGE_INDEX}, (mode, scans)
            assert ("Tid Scan", "outbox_events") in scans, (producer, mode, scans)
            assert all(node != "Seq Scan" for node, _ in scans), (producer, mode, scans)
    after = await _counts(migrated)
    for (producer, status), n in before.items():
        expected = n - due[producer] if status == "DELIVERED" else n
        assert after[(producer, status)] == expected, (producer, status)


async def _fill_audit(dbs: Provisioned, now: datetime, rows: int) -> None:
    """As the owner (the table is append-only; test data only): `rows` events a minute apart,
    cycling through ACTIONS actions but for a rare one every RARE_EVERY, then ANALYZE."""
    owner = await asyncpg.connect(_plain(dbs.vaultpay_owner_dsn))
    try:
        await owner.execute(
            "INSERT INTO audit_events (sequence, created_at, xact_id, actor_id, actor_role,"
            " action, target_type, target_id, request_id, details)"
            " SELECT nextval('audit_events_sequence_seq'),"
            " $2::timestamptz - ($1 - i) * interval '1 minute', pg_current_xact_id(),"
            " 'staff-' || i % 7, 'ADMIN',"
            " CASE WHEN i % $4 = 0 THEN 'plan.rare' ELSE 'plan.action_' || i % $3 END,"
            " 'wallet', 'w-' || i,"
            " '', '{}'"
            " FROM generate_series(1, $1) AS i",
            rows,
            now,
            ACTIONS,
            RARE_EVERY,
        )
        await owner.execute("ANALYZE audit_events")
    finally:
        await owner.close()


async def test_the_audit_listing_by_action_reads_a_range_of_the_action_index(
    migrated: Provisioned,
) -> None:
    """A page filtered by a rare action (the next page's keyset given; with a time window or
    not) reads `(action, sequence)` backwards from the keyset in its custom plan, the plan that
    sees the action it looks for: before p0004 it walked the primary key back until it had a
    page, most of the table. (A common action's page is as cheap on the primary key, and the
    generic plan cannot see which action it is: it prices every one as common, and a window
    as half a percent of the table, so it may walk the primary key or the time index; never a
    scan of the table.) Either way, that action's rows newest first, none skipped."""
    now = datetime.now(UTC).replace(microsecond=0)
    await _fill_audit(migrated, now, 40_000)
    engine = create_engine(migrated.app_dsn("wallet"), pool_size=1, application_name="audit")
    action = "plan.rare"
    windows = {"no window": AuditQuery(action=action)}
    windows["20 days"] = AuditQuery(action=action, start=now - timedelta(days=20), end=now)
    captured: dict[str, CapturedStatement] = {}
    try:
        async with engine.connect() as conn:
            [newest] = await list_audit_events(conn, AuditQuery(), None, 1)
            before = newest.sequence - 1_000
            for name, query in windows.items():
                with CapturedStatement(engine) as captured[name]:
                    page = await list_audit_events(conn, query, before, 50)
                assert len(page) == 50, name
                assert all(r.action == action and r.sequence < before for r in page), name
                sequences = [r.sequence for r in page]
                assert sequences == sorted(sequences, reverse=True), name
                assert sequences[0] > before - RARE_EVERY - 1, name  # none skipped
                # Planned for the action it looks for, never by the generic plan.
                planned = await conn.execute(text("SHOW plan_cache_mode"))
                assert planned.scalar_one() == "force_custom_plan", name
    finally:
        await engine.dispose()
    dsn = _plain(migrated.app_dsn("wallet"))
    for n, (name, statement) in enumerate(captured.items()):
        plans = await prepared_plan_scans(dsn, f"audit_{n}", statement)
        for mode, scans in plans.items():
            assert ("Seq Scan", "audit_events") not in scans, (name, mode, scans)
            if mode == "force_custom_plan":
                # The action's range (backwards, or a bitmap of it and a sort of those rows).
                read = {
                    index for node, index in scans if "Index" in node and "audit_events" in index
                }
                assert read == {ACTION_INDEX}, (name, mode, scans)
