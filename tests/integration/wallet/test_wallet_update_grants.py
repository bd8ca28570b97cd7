"""wallet's role may UPDATE only the columns of `wallets` that wallet's code changes (w0008):
status, kyc_tier, updated_at and closed_at. A wallet's id, owner, name, currency, balance and
creation time are refused to it, while every change its use cases make (self and staff
freezes, unfreezes, the KYC tier, the close) still goes through, as wallet's role, on the real
wallet chain at its head. The downgrade gives the table-level UPDATE back; both with a role
per service and with one role for every service.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import (
    FakeKycStats,
    FakeTransferStats,
    FakeTrustedIps,
    FakeUsage,
    FakeUserRoles,
    FixedClock,
)
from tests.integration.databases import fresh_databases
from tests.integration.wallet.wallet_chain import migrate_to_head
from vaultpay_common.context import Role
from vaultpay_common.db import create_engine
from vaultpay_common.idempotency import IdempotencyKey, request_fingerprint
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain, upgrade_all
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.model import KycTier, WalletStatus
from vaultpay_wallet.entrypoints.cli import WALLET_CHAIN
from vaultpay_wallet.service_layer.admin import AdminService
from vaultpay_wallet.service_layer.commands import (
    AdminFreezeWallet,
    AdminUnfreezeWallet,
    CloseMyWallet,
    CreateWallet,
    FreezeMyWallet,
    SetKycTier,
    UnfreezeMyWallet,
)
from vaultpay_wallet.service_layer.internal import KycTierService
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.ports import WalletUnitOfWork
from vaultpay_wallet.service_layer.wallets import WalletService

pytestmark = pytest.mark.integration

# What wallet's repository writes (SqlWalletRepository.update), and nothing else.
UPDATABLE = {"status", "kyc_tier", "updated_at", "closed_at"}
# Set once, at INSERT: each with a value wallet's role must not write.
IMMUTABLE = {
    "id": "'VPY-ZZZZZ9'",
    "user_id": "'someone-else'",
    "display_name": "'Renamed'",
    "currency": "'USD'",
    "balance": "balance",  # the ledger's; refused even unchanged
    "created_at": "now()",
}


def _key(caller: str, method: str) -> IdempotencyKey:
    return IdempotencyKey(
        caller,
        f"/vaultpay.wallet.v1.WalletService/{method}",
        str(uuid.uuid4()),
        request_fingerprint(b""),
    )


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
def migrated(databases: Provisioned) -> Provisioned:
    return migrate_to_head(databases)


@pytest.fixture(scope="module")
async def engine(migrated: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated.app_dsn("wallet"), pool_size=2, application_name="grants")
    try:
        yield engine
    finally:
        await engine.dispose()


class _World:
    def __init__(self, engine: AsyncEngine) -> None:
        clock = FixedClock()
        uow: Callable[[], WalletUnitOfWork] = lambda: SqlWalletUnitOfWork(engine)  # noqa: E731
        roles = FakeUserRoles()
        limits = LimitsService(uow, clock, FakeUsage(), roles=roles)
        self.wallets = WalletService(uow, clock, limits)
        self.admin = AdminService(
            uow,
            clock,
            limits,
            FakeTrustedIps(),
            FakeTransferStats(),
            FakeKycStats(),
            roles=roles,
        )
        self.tiers = KycTierService(uow, clock)


def _owner_fetch(dbs: Provisioned, sql: str, *args: Any) -> list[Any]:
    owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")

    async def fetch(conn: Any) -> list[Any]:
        return list(await conn.fetch(sql, *args))

    return run_sql(owner, fetch)


def _update_grants(dbs: Provisioned, role: str) -> tuple[bool, set[str]]:
    """Whether `role` holds UPDATE on `wallets` itself, and the columns it may UPDATE."""
    table = _owner_fetch(dbs, "SELECT has_table_privilege($1, 'wallets', 'UPDATE') AS held", role)
    columns = _owner_fetch(
        dbs,
        "SELECT a.attname, has_column_privilege($1, 'wallets', a.attname, 'UPDATE') AS held"
        " FROM pg_attribute AS a WHERE a.attrelid = 'wallets'::regclass AND a.attnum > 0"
        " AND NOT a.attisdropped",
        role,
    )
    return table[0]["held"], {r["attname"] for r in columns if r["held"]}


@pytest.mark.parametrize("column", sorted(IMMUTABLE))
async def test_wallets_role_cannot_update_a_column_set_at_creation(
    migrated: Provisioned, engine: AsyncEngine, column: str
) -> None:
    user = f"imm-{uuid.uuid4()}"
    wallet = await _World(engine).wallets.create_wallet(
        CreateWallet(user, "Imm", "INR", _key(user, "CreateWallet"))
    )
    conn = await asyncpg.connect(_plain(migrated.app_dsn("wallet")))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                f"UPDATE wallets SET {column} = {IMMUTABLE[column]} WHERE id = $1", wallet.id
            )
        # The columns wallet changes, in one statement as its repository writes them.
        assert (
            await conn.execute(
                "UPDATE wallets SET status = status, kyc_tier = kyc_tier,"
                " updated_at = updated_at, closed_at = closed_at WHERE id = $1",
                wallet.id,
            )
            == "UPDATE 1"
        )
        row = await conn.fetchrow(
            "SELECT currency, user_id, display_name FROM wallets WHERE id = $1", wallet.id
        )
        assert tuple(row) == ("INR", user, "Imm")
    finally:
        await conn.close()


async def test_every_change_of_wallets_use_cases_still_goes_through(
    migrated: Provisioned, engine: AsyncEngine
) -> None:
    world = _World(engine)
    user = f"uc-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(
        CreateWallet(user, "Cases", "INR", _key(user, "CreateWallet"))
    )
    frozen = await world.wallets.freeze_my_wallet(
        FreezeMyWallet(user, "lost phone", _key(user, "FreezeMyWallet"))
    )
    assert frozen.status is WalletStatus.FROZEN
    active = await world.wallets.unfreeze_my_wallet(
        UnfreezeMyWallet(user, _key(user, "UnfreezeMyWallet"))
    )
    assert active.status is WalletStatus.ACTIVE
    held = await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "check", None, _key("staff", "F"))
    )
    assert held.status is WalletStatus.FROZEN
    released = await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet("staff", Role.ADMIN, wallet.id, "ok", _key("staff", "U"))
    )
    assert released.status is WalletStatus.ACTIVE
    tiered = await world.tiers.set_kyc_tier(
        SetKycTier(user, KycTier.FULL, "sub-1", _key("kyc", "SetKycTier"))
    )
    assert tiered.kyc_tier is KycTier.FULL
    closed = await world.wallets.close_my_wallet(CloseMyWallet(user, _key(user, "Close")))
    assert closed.status is WalletStatus.CLOSED
    rows = _owner_fetch(
        migrated,
        "SELECT status, kyc_tier, closed_at IS NOT NULL AS closed, currency, display_name"
        " FROM wallets WHERE id = $1",
        wallet.id,
    )
    assert tuple(rows[0]) == ("CLOSED", "FULL", True, "INR", "Cases")


def test_wallets_role_holds_update_of_the_changing_columns_only(migrated: Provisioned) -> None:
    assert _update_grants(migrated, migrated.app_role("wallet")) == (False, UPDATABLE)


@pytest.mark.parametrize("per_service", [True, False], ids=["role_per_service", "one_role"])
def test_w0008_is_undone_by_its_downgrade_and_done_again(infra: Infra, per_service: bool) -> None:
    with fresh_databases(infra, "g") as dbs:
        roles = dbs.chain_roles() if per_service else {}
        role = roles.get("wallet", dbs.vaultpay_app_role)
        upgrade_all(
            [PLATFORM_CHAIN, WALLET_CHAIN],
            dbs.vaultpay_owner_dsn,
            dbs.vaultpay_app_role,
            chain_roles=roles,
        )
        shared = dbs.vaultpay_app_role
        assert _update_grants(dbs, role) == (False, UPDATABLE)

        migrate_chain(
            WALLET_CHAIN,
            dbs.vaultpay_owner_dsn,
            role,
            shared_role=shared,
            action="downgrade",
            revision="w0007",
        )
        everything = _update_grants(dbs, role)
        assert everything[0]
        assert everything[1] >= UPDATABLE | set(IMMUTABLE)
        # No column grant is left behind: the table's grant is the only one.
        leftover = _owner_fetch(
            dbs,
            "SELECT t.attname FROM pg_attribute AS t, aclexplode(t.attacl) AS a"
            " WHERE t.attrelid = 'wallets'::regclass AND a.grantee = $1::regrole",
            role,
        )
        assert leftover == []

        migrate_chain(WALLET_CHAIN, dbs.vaultpay_owner_dsn, role, shared_role=shared)
        assert _update_grants(dbs, role) == (False, UPDATABLE)
