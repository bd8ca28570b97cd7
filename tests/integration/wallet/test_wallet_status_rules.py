"""A CLOSED wallet holds no money and never opens again, in the database (w0011), on the real
wallet chain at its head, as wallet's own role.

* wallet's role cannot close a wallet that holds money (CHECK
  `wallets_closed_with_zero_balance`), nor set a CLOSED wallet's status to another (trigger
  `wallets_closed_is_final`); nor can the owner, whose money functions are transfer's.
* A CLOSED wallet's other columns still change as wallet writes them (its status written
  again as it is), and the close at zero through wallet's own use case still goes through.
* The migration on a database holding a CLOSED wallet with money stops at the validation,
  and runs again from the start once the money is gone; its downgrade drops both rules.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import FakeUsage, FixedClock
from tests.integration.databases import fresh_databases
from tests.integration.wallet.wallet_chain import migrate_to_head
from vaultpay_common.db import create_engine
from vaultpay_common.idempotency import IdempotencyKey, request_fingerprint
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.errors import WalletHasBalanceError
from vaultpay_wallet.domain.model import WalletStatus
from vaultpay_wallet.entrypoints.cli import WALLET_CHAIN
from vaultpay_wallet.service_layer.commands import CloseMyWallet
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.ports import WalletUnitOfWork
from vaultpay_wallet.service_layer.wallets import WalletService

pytestmark = pytest.mark.integration

ZERO_BALANCE = "wallets_closed_with_zero_balance"
FINAL = "wallets_closed_is_final"
_CLOSE = "UPDATE wallets SET status = 'CLOSED', closed_at = now() WHERE id = $1"


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
def migrated(databases: Provisioned) -> Provisioned:
    return migrate_to_head(databases)


@pytest.fixture
async def wallet_role(migrated: Provisioned) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(_plain(migrated.app_dsn("wallet")))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def owner(migrated: Provisioned) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(_plain(migrated.vaultpay_owner_dsn))
    try:
        yield conn
    finally:
        await conn.close()


async def _wallet(owner: Any, balance: int, status: str = "ACTIVE") -> tuple[str, str]:
    """A wallet (id, user id) made as the owner: its balance is the ledger's to set."""
    wallet_id, user_id = f"VPY-{secrets.token_hex(3).upper()}", str(uuid.uuid4())
    await owner.execute(
        "INSERT INTO wallets (id, user_id, display_name, currency, balance, status, kyc_tier,"
        " created_at, updated_at, closed_at) VALUES ($1, $2, 'Rules', 'INR', $3, $4, 'NONE',"
        " now(), now(), CASE WHEN $4 = 'CLOSED' THEN now() END)",
        wallet_id,
        user_id,
        balance,
        status,
    )
    return wallet_id, user_id


async def _refused(conn: Any, sql: str, *args: Any) -> str:
    """The constraint name of the database's refusal of `sql` (check_violation)."""
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await conn.execute(sql, *args)
    return str(refused.value.constraint_name)


async def _status(owner: Any, wallet_id: str) -> tuple[str, int]:
    row = await owner.fetchrow("SELECT status, balance FROM wallets WHERE id = $1", wallet_id)
    return row["status"], row["balance"]


async def test_a_wallet_holding_money_is_not_closed(wallet_role: Any, owner: Any) -> None:
    wallet_id, _ = await _wallet(owner, 700)
    assert await _refused(wallet_role, _CLOSE, wallet_id) == ZERO_BALANCE
    assert await _status(owner, wallet_id) == ("ACTIVE", 700)


@pytest.mark.parametrize("status", ["ACTIVE", "FROZEN"])
async def test_a_closed_wallet_never_opens_again(wallet_role: Any, owner: Any, status: str) -> None:
    wallet_id, _ = await _wallet(owner, 0, "CLOSED")
    reopen = "UPDATE wallets SET status = $2, closed_at = NULL WHERE id = $1"
    assert await _refused(wallet_role, reopen, wallet_id, status) == FINAL
    assert await _refused(owner, reopen, wallet_id, status) == FINAL
    assert await _status(owner, wallet_id) == ("CLOSED", 0)


async def test_a_closed_wallet_is_credited_by_nobody(owner: Any) -> None:
    """The owner stands for transfer's money functions, which run as the owner."""
    wallet_id, _ = await _wallet(owner, 0, "CLOSED")
    credit = "UPDATE wallets SET balance = balance + 700 WHERE id = $1"
    assert await _refused(owner, credit, wallet_id) == ZERO_BALANCE
    assert await _status(owner, wallet_id) == ("CLOSED", 0)


async def test_a_closed_wallets_other_columns_change_as_wallet_writes_them(
    wallet_role: Any, owner: Any
) -> None:
    wallet_id, _ = await _wallet(owner, 0, "CLOSED")
    assert (
        await wallet_role.execute(
            "UPDATE wallets SET status = 'CLOSED', kyc_tier = 'FULL', updated_at = now(),"
            " closed_at = closed_at WHERE id = $1",
            wallet_id,
        )
        == "UPDATE 1"
    )
    assert await owner.fetchval("SELECT kyc_tier FROM wallets WHERE id = $1", wallet_id) == "FULL"


async def test_wallets_own_close_goes_through_at_zero_and_is_refused_with_money(
    migrated: Provisioned, owner: Any
) -> None:
    engine: AsyncEngine = _engine(migrated)
    try:
        clock = FixedClock()
        uow: Callable[[], WalletUnitOfWork] = lambda: SqlWalletUnitOfWork(engine)  # noqa: E731
        service = WalletService(uow, clock, LimitsService(uow, clock, FakeUsage()))
        empty, emptys_user = await _wallet(owner, 0)
        closed = await service.close_my_wallet(CloseMyWallet(emptys_user, _key(emptys_user)))
        assert closed.status is WalletStatus.CLOSED
        assert await _status(owner, empty) == ("CLOSED", 0)
        held, helds_user = await _wallet(owner, 700)
        with pytest.raises(WalletHasBalanceError):
            await service.close_my_wallet(CloseMyWallet(helds_user, _key(helds_user)))
        assert await _status(owner, held) == ("ACTIVE", 700)
    finally:
        await engine.dispose()


def _engine(dbs: Provisioned) -> AsyncEngine:
    return create_engine(dbs.app_dsn("wallet"), pool_size=2, application_name="status-rules")


def _key(user_id: str) -> IdempotencyKey:
    return IdempotencyKey(
        user_id,
        "/vaultpay.wallet.v1.WalletService/CloseMyWallet",
        str(uuid.uuid4()),
        request_fingerprint(b""),
    )


# -- the migration -----------------------------------------------------------------------------


def _wallet_chain(
    dbs: Provisioned,
    action: Literal["upgrade", "downgrade"] = "upgrade",
    revision: str = "head",
) -> None:
    migrate_chain(
        WALLET_CHAIN,
        dbs.vaultpay_owner_dsn,
        dbs.app_role("wallet"),
        shared_role=dbs.vaultpay_app_role,
        action=action,
        revision=revision,
    )


def _owner_sql(dbs: Provisioned, sql: str, *args: Any) -> Any:
    owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")

    async def run(conn: Any) -> Any:
        return await conn.fetch(sql, *args)

    return run_sql(owner, run)


def _rules(dbs: Provisioned) -> list[str]:
    rows = _owner_sql(
        dbs,
        "SELECT conname::text AS name FROM pg_constraint WHERE conname = $1"
        " UNION ALL SELECT tgname::text FROM pg_trigger WHERE tgname = $2"
        " UNION ALL SELECT proname::text FROM pg_proc WHERE proname = 'wallet_refuse_reopen'",
        ZERO_BALANCE,
        FINAL,
    )
    return sorted(r["name"] for r in rows)


def test_the_migration_stops_at_a_closed_wallet_holding_money_and_runs_again(
    infra: Infra,
) -> None:
    with fresh_databases(infra, "s") as dbs:
        migrate_chain(PLATFORM_CHAIN, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role)
        _wallet_chain(dbs, revision="w0010")
        # As a payout returned to a wallet closed before transfer's t0003 left it.
        _owner_sql(
            dbs,
            "INSERT INTO wallets (id, user_id, display_name, currency, balance, status,"
            " kyc_tier, created_at, updated_at, closed_at) VALUES ('VPY-0LD700', 'old-user',"
            " 'Old', 'INR', 700, 'CLOSED', 'NONE', now(), now(), now())",
        )
        with pytest.raises(Exception, match=ZERO_BALANCE):
            _wallet_chain(dbs)
        [version] = _owner_sql(dbs, "SELECT version_num FROM alembic_version_wallet")
        assert version["version_num"] == "w0010"
        # The money is settled (by staff, out of band), then the migration runs again.
        _owner_sql(dbs, "UPDATE wallets SET balance = 0 WHERE id = 'VPY-0LD700'")
        _wallet_chain(dbs, revision="w0011")  # its own revision; later ones follow below
        [version] = _owner_sql(dbs, "SELECT version_num FROM alembic_version_wallet")
        assert version["version_num"] == "w0011"
        assert _rules(dbs) == sorted([ZERO_BALANCE, FINAL, "wallet_refuse_reopen"])
        [valid] = _owner_sql(
            dbs, "SELECT convalidated FROM pg_constraint WHERE conname = $1", ZERO_BALANCE
        )
        assert valid["convalidated"]

        _wallet_chain(dbs, "downgrade", "w0010")
        assert _rules(dbs) == []
        _owner_sql(dbs, "UPDATE wallets SET status = 'ACTIVE', closed_at = NULL")  # unguarded
        _wallet_chain(dbs)
        assert _rules(dbs) == sorted([ZERO_BALANCE, FINAL, "wallet_refuse_reopen"])
