"""Each filter of AdminListLimits reads a range of an index in the listing's order (position
DESC), on real PostgreSQL with the real wallet chain at its head, as wallet's own role.

The rows asked for are sparse and old: every wallet's own send and withdraw limits are the
bulk, written last; the few admin overrides and top_up limits were written first, so a walk
of the primary key filtering row by row would read the whole table to find them. w0012's
indexes serve a source, an action and both; a wallet's rows come from its unique key; no
filter reads the primary key backwards. The first page and a later one (a position cursor),
in the generic plan of the prepared statement too (what asyncpg runs after its fifth
execution). Plan shapes, never timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.databases import fresh_databases
from tests.integration.transfer.sql_capture import (
    CapturedStatement,
    prepared_plan_index_conditions,
    prepared_plan_scans,
)
from tests.integration.wallet.wallet_chain import migrate_to_head
from vaultpay_common.db import create_engine
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_wallet.adapters.repositories import SqlLimitOverrideRepository
from vaultpay_wallet.domain.limits import LimitAction, LimitSource
from vaultpay_wallet.entrypoints.cli import WALLET_CHAIN
from vaultpay_wallet.service_layer.ports import LimitOverrideFilter

pytestmark = pytest.mark.integration

WALLETS = 20_000  # each with its own send and withdraw limits
HOT = "VPY-00000B"  # one of them, with an admin top_up override too
TABLE = "wallet_limit_overrides"


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
async def filled(databases: Provisioned) -> Provisioned:
    """WALLETS wallets; first 20 admin overrides (send, withdraw, top_up) and 10 users' own
    top_up limits, then every wallet's own send and withdraw limits; written as the owner
    (test data only), then ANALYZE."""
    migrated = migrate_to_head(databases)
    owner = migrated.url(
        migrated.vaultpay_owner_role, migrated.vaultpay_database, driver="postgresql"
    )
    conn = await asyncpg.connect(owner)
    try:
        await conn.execute(
            "INSERT INTO wallets (id, user_id, display_name, currency, status, kyc_tier,"
            " created_at, updated_at)"
            " SELECT 'VPY-' || upper(lpad(to_hex(i), 6, '0')), 'plan-' || i, 'Plan', 'INR',"
            " 'ACTIVE', 'BASIC', now(), now() FROM generate_series(1, $1) AS i",
            WALLETS,
        )
        rows = (
            "INSERT INTO wallet_limit_overrides (wallet_id, source, action, daily, set_by,"
            " updated_at)"
            " SELECT 'VPY-' || upper(lpad(to_hex(i), 6, '0')), '{source}', {action}, 1000,"
            " 'seed', now() FROM generate_series({first}, {last}) AS i"
        )
        admin_action = "(ARRAY['send', 'withdraw', 'top_up'])[1 + i % 3]"
        await conn.execute(
            rows.format(source="ADMIN_OVERRIDE", action=admin_action, first=1, last=20)
        )
        await conn.execute(rows.format(source="USER", action="'top_up'", first=1, last=10))
        for action in ("send", "withdraw"):
            await conn.execute(
                rows.format(source="USER", action=f"'{action}'", first=1, last=WALLETS)
            )
        await conn.execute(f"ANALYZE wallets, {TABLE}")
    finally:
        await conn.close()
    return migrated


@pytest.fixture(scope="module")
async def engine(filled: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(filled.app_dsn("wallet"), pool_size=2, application_name="limit-plans")
    try:
        yield engine
    finally:
        await engine.dispose()


ADMIN, USER, TOP_UP = LimitSource.ADMIN_OVERRIDE, LimitSource.USER, LimitAction.TOP_UP
_KEY = f"{TABLE}_key"
_BOTH = f"{TABLE}_source_action_idx"
# filter: {an index it may read: the filter's columns its Index Cond must name}
CASES: dict[str, tuple[LimitOverrideFilter, dict[str, tuple[str, ...]]]] = {
    "none": (LimitOverrideFilter(), {f"{TABLE}_pkey": ()}),
    "wallet": (LimitOverrideFilter(wallet_id=HOT), {_KEY: ("wallet_id",)}),
    "wallet source action": (  # the wallet's key, or the few rows of the source and action
        LimitOverrideFilter(wallet_id=HOT, source=ADMIN, action=TOP_UP),
        {_KEY: ("wallet_id", "source", "action"), _BOTH: ("source", "action")},
    ),
    "source": (LimitOverrideFilter(source=ADMIN), {f"{TABLE}_source_idx": ("source",)}),
    "action": (LimitOverrideFilter(action=TOP_UP), {f"{TABLE}_action_idx": ("action",)}),
    "source action": (
        LimitOverrideFilter(source=USER, action=TOP_UP),
        {_BOTH: ("source", "action")},
    ),
}


@pytest.mark.parametrize("after", [None, 5_000], ids=["first page", "later page"])
@pytest.mark.parametrize("case", list(CASES))
async def test_each_filter_reads_an_index_range_in_the_listing_order(
    engine: AsyncEngine, filled: Provisioned, case: str, after: int | None
) -> None:
    flt, allowed = CASES[case]
    with CapturedStatement(engine) as captured:
        async with engine.connect() as conn:
            rows = await SqlLimitOverrideRepository(conn).list(flt, after, 51)
            await conn.rollback()
    assert rows  # each case finds rows
    assert [r.position for r in rows] == sorted((r.position for r in rows), reverse=True)
    dsn = _plain(filled.app_dsn("wallet"))
    scans = await prepared_plan_scans(dsn, "limits", captured)
    conditions = await prepared_plan_index_conditions(dsn, "limits", captured)
    for mode in scans:
        assert not [s for s in scans[mode] if s[0] == "Seq Scan"], (mode, scans[mode])
        ours = {n: c for n, c in conditions[mode].items() if n.startswith(TABLE)}
        assert len(ours) == 1 and set(ours) <= set(allowed), (mode, ours)
        [(index, condition)] = ours.items()
        for column in allowed[index]:
            assert column in condition, (mode, ours)
        if after is not None and index != _KEY:
            assert "position" in condition, (mode, ours)  # the cursor bounds the range


def _override_indexes(dbs: Provisioned) -> list[str]:
    owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")

    async def run(conn: Any) -> Any:
        return await conn.fetch(
            "SELECT indexname::text AS name FROM pg_indexes WHERE tablename = $1", TABLE
        )

    return sorted(r["name"] for r in run_sql(owner, run))


def test_w0012_goes_down_to_the_older_index_and_up_again(infra: Infra) -> None:
    with fresh_databases(infra, "l") as dbs:
        migrate_chain(PLATFORM_CHAIN, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role)

        def wallet_chain(action: Literal["upgrade", "downgrade"], revision: str) -> None:
            migrate_chain(
                WALLET_CHAIN,
                dbs.vaultpay_owner_dsn,
                dbs.app_role("wallet"),
                shared_role=dbs.vaultpay_app_role,
                action=action,
                revision=revision,
            )

        kept = [f"{TABLE}_key", f"{TABLE}_pkey"]
        listing = [f"{TABLE}_action_idx", f"{TABLE}_source_action_idx", f"{TABLE}_source_idx"]
        # The previous release's order stays while its wallets may run (expand, then contract).
        older = [f"{TABLE}_recent_idx"]
        wallet_chain("upgrade", "w0012")
        assert _override_indexes(dbs) == sorted(kept + older + listing)
        wallet_chain("downgrade", "w0011")
        assert _override_indexes(dbs) == sorted(kept + older)
        wallet_chain("upgrade", "w0012")
        assert _override_indexes(dbs) == sorted(kept + older + listing)
