"""The single-statement reads (adapters/reads_pg.py) on a real PostgreSQL: they answer exactly
what the same reads through the unit of work answer (freezes, PIN, overrides, tier settings),
with no transaction left open, and a settings change shows on the very next read."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import (
    FakePinHasher,
    FakeUsage,
    FakeUserRoles,
    FixedClock,
    ReversibleSealer,
)
from tests.integration.wallet.wallet_chain import new_key
from vaultpay_common.context import DEADLINE, Role
from vaultpay_common.db import create_engine
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain, upgrade_all
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters.reads_pg import PgWalletReads
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.limits import LimitAction, LimitSource
from vaultpay_wallet.domain.model import FreezeSource, KycTier, WalletStatus
from vaultpay_wallet.service_layer.admin import AdminService
from vaultpay_wallet.service_layer.commands import (
    AdminFreezeWallet,
    AdminSetWalletLimits,
    AmountInput,
    CreateWallet,
    FreezeMyWallet,
    LimitValuesInput,
    SetKycTier,
    SetMyLimit,
    SetPin,
    UpdateSetting,
)
from vaultpay_wallet.service_layer.internal import KycTierService
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.ports import WalletUnitOfWork
from vaultpay_wallet.service_layer.reads import UnitOfWorkReads
from vaultpay_wallet.service_layer.settings import SettingsService
from vaultpay_wallet.service_layer.wallets import WalletService

_WALLET_MIGRATION = (
    Path(__file__).resolve().parents[3] / "services/wallet/migrations/versions/0001_wallets.py"
)
_ENV = """from vaultpay_common.migrations import run_env
from vaultpay_wallet.adapters.metadata import metadata

run_env(metadata)
"""


@pytest.fixture(scope="module")
def migrated(databases: Provisioned, tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    scripts = tmp_path_factory.mktemp("wallet_reads_migrations")
    (scripts / "versions").mkdir()
    (scripts / "env.py").write_text(_ENV)
    shutil.copy(_WALLET_MIGRATION, scripts / "versions" / "0001_wallets.py")
    upgrade_all(
        [PLATFORM_CHAIN, MigrationChain("wallet", scripts, "alembic_version_wallet")],
        databases.vaultpay_owner_dsn,
        databases.app_role("wallet"),
        chain_roles=databases.chain_roles(),
    )
    return databases


@pytest.fixture(scope="module")
async def engine(migrated: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated.app_dsn("wallet"), pool_size=2, application_name="reads-test")
    try:
        yield engine
    finally:
        await engine.dispose()


class _World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.clock = FixedClock()
        uow: Callable[[], WalletUnitOfWork] = lambda: SqlWalletUnitOfWork(engine)  # noqa: E731
        self.sql_reads = PgWalletReads(engine)
        self.uow_reads = UnitOfWorkReads(uow)
        roles = FakeUserRoles()
        self.limits = LimitsService(uow, self.clock, FakeUsage(), reads=self.sql_reads, roles=roles)
        self.wallets = WalletService(uow, self.clock, self.limits, reads=self.sql_reads)
        self.pins = PinService(uow, self.clock, FakePinHasher(), ReversibleSealer())
        self.admin = AdminService(
            uow, self.clock, self.limits, _NoIps(), _NoStats(), _NoStats(), roles=roles
        )
        self.settings = SettingsService(uow, self.clock)
        self.tiers = KycTierService(uow, self.clock)


class _NoIps:
    async def count_trusted(self, user_id: str, now: object) -> int:
        return 0


class _NoStats:
    async def stats(self, now: object) -> None:
        return None

    async def pending_count(self) -> None:
        return None


async def _busy_wallet(world: _World) -> tuple[str, str]:
    """A wallet with a PIN, two freezes (one expiring), both kinds of overrides, tier BASIC."""
    user = f"reads-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Reader", "", new_key(user)))
    await world.pins.set_pin(SetPin(user, "2468", "2468", new_key(user)))
    await world.wallets.freeze_my_wallet(FreezeMyWallet(user, "holiday", new_key(user)))
    until = world.clock.now() + timedelta(hours=1)
    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "check", until, new_key("staff"))
    )
    await world.tiers.set_kyc_tier(SetKycTier(user, KycTier.BASIC, "sub-1", new_key("kyc")))
    await world.limits.admin_set_wallet_limits(
        AdminSetWalletLimits(
            "staff",
            Role.ADMIN,
            wallet.id,
            (LimitValuesInput(LimitAction.SEND, daily=AmountInput("INR", 9_000_00)),),
            "review",
            new_key("staff"),
        )
    )
    await world.limits.set_my_limit(
        SetMyLimit(user, "withdraw", AmountInput("INR", 100), None, None, new_key(user))
    )
    return user, wallet.id


async def test_the_sql_reads_answer_what_the_unit_of_work_answers(engine: AsyncEngine) -> None:
    world = _World(engine)
    user, wallet_id = await _busy_wallet(world)

    by_sql = await world.sql_reads.wallet_for_limits(user)
    by_uow = await world.uow_reads.wallet_for_limits(user)

    assert by_sql is not None and by_uow is not None
    assert by_sql.wallet == by_uow.wallet
    assert by_sql.wallet.pin_set and by_sql.wallet.kyc_tier is KycTier.BASIC
    assert {f.source for f in by_sql.wallet.freezes} == {FreezeSource.SELF, FreezeSource.ADMIN}
    assert dict(by_sql.tier_settings) == dict(by_uow.tier_settings)
    assert set(by_sql.tier_settings) and all(
        key.startswith("limits.tier_basic.") for key in by_sql.tier_settings
    )
    assert sorted(by_sql.overrides, key=lambda o: o.source.value) == sorted(
        by_uow.overrides, key=lambda o: o.source.value
    )
    assert {o.source for o in by_sql.overrides} == {LimitSource.ADMIN_OVERRIDE, LimitSource.USER}
    assert await world.sql_reads.balance(user) == await world.uow_reads.balance(user)
    balance = await world.sql_reads.balance(user)
    assert balance is not None and (balance.wallet_id, balance.balance_minor) == (wallet_id, 0)


async def test_an_unknown_user_has_no_wallet_on_either_read(engine: AsyncEngine) -> None:
    world = _World(engine)
    assert await world.sql_reads.balance(f"nobody-{uuid.uuid4()}") is None
    assert await world.sql_reads.wallet_for_limits(f"nobody-{uuid.uuid4()}") is None


async def test_get_my_wallet_through_sql_reads_matches_get_limits_and_lifts_expired_freezes(
    engine: AsyncEngine,
) -> None:
    world = _World(engine)
    user, _ = await _busy_wallet(world)
    world.clock.advance(timedelta(hours=2))  # the staff freeze has lapsed; the self one stays

    mine = await world.wallets.get_my_wallet(user)
    limits = await world.limits.get_limits(user)

    assert mine == limits
    assert mine.wallet.status is WalletStatus.FROZEN
    assert [f.source for f in mine.wallet.freezes] == [FreezeSource.SELF]
    send = next(v for v in mine.limits if v.action is LimitAction.SEND)
    withdraw = next(v for v in mine.limits if v.action is LimitAction.WITHDRAW)
    assert (send.daily.amount_minor, send.daily.source) == (9_000_00, LimitSource.ADMIN_OVERRIDE)
    assert (withdraw.per_transaction.amount_minor, withdraw.per_transaction.source) == (
        100,
        LimitSource.USER,
    )


async def test_a_settings_change_shows_on_the_next_read(engine: AsyncEngine) -> None:
    world = _World(engine)
    user, _ = await _busy_wallet(world)
    key = "limits.tier_basic.top_up.monthly"
    await world.settings.update_setting(
        UpdateSetting("root", key, "7654300", "test", new_key("root"))
    )

    found = await world.sql_reads.wallet_for_limits(user)

    assert found is not None and found.tier_settings[key] == "7654300"
    views = (await world.wallets.get_my_wallet(user)).limits
    top_up = next(v for v in views if v.action is LimitAction.TOP_UP)
    assert top_up.monthly.amount_minor == 7654300


async def test_reads_leave_no_transaction_open_and_honour_a_passed_deadline(
    engine: AsyncEngine,
) -> None:
    world = _World(engine)
    user, _ = await _busy_wallet(world)
    for _ in range(3):
        await world.wallets.get_balance(user)
        await world.wallets.get_my_wallet(user)
    async with engine.connect() as conn:
        idle_in_transaction = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reads-test' "
                "AND state LIKE 'idle in transaction%'"
            )
        )
    assert idle_in_transaction == 0

    token = DEADLINE.set(0.0)  # a monotonic instant long past
    try:
        with pytest.raises(DeadlineExceededError):
            await world.wallets.get_balance(user)
    finally:
        DEADLINE.reset(token)
