"""The wallet's SQL adapters on a real PostgreSQL, with migrations w0001-w0004 applied by
Alembic (w0003, w0004: the PIN check fast path's functions).

Proves what fakes cannot: the PIN counter under 30 concurrent wrong PINs (at most 3 counted,
exactly one lockout), the balance CHECK, the id-collision retry on the real unique key, the
app role's grants, two tiers' limit defaults updated at once never crossing, and the use
cases end to end on the SQL unit of work.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import (
    FakeKycStats,
    FakePinHasher,
    FakeTransferStats,
    FakeTrustedIps,
    FakeUsage,
    FakeUserRoles,
    FixedClock,
    ReversibleSealer,
)
from tests.integration.wallet.wallet_chain import new_key, private_wallet_chain
from vaultpay_common.context import Role
from vaultpay_common.db import create_engine
from vaultpay_common.errors import ValidationError
from vaultpay_common.migrations import PLATFORM_CHAIN, upgrade_all
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters import tables
from vaultpay_wallet.adapters.pins_pg import PgPinCheckFastPath
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.errors import (
    FreezeHeldByHigherRankError,
    FreezeSetterUnknownError,
    InvalidPinError,
    PinCheckInProgressError,
    PinLockedError,
    PinResetTokenInvalidError,
)
from vaultpay_wallet.domain.model import FreezeSource, WalletStatus
from vaultpay_wallet.domain.staff_reads import StaffViewer
from vaultpay_wallet.service_layer.admin import AdminService
from vaultpay_wallet.service_layer.commands import (
    AdminFreezeWallet,
    AdminUnfreezeWallet,
    CreateWallet,
    RequestPinReset,
    ResetPin,
    SetPin,
    UpdateSetting,
    VerifyPin,
)
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.ports import WalletFilter, WalletUnitOfWork
from vaultpay_wallet.service_layer.settings import SettingsService
from vaultpay_wallet.service_layer.wallets import WalletService


@pytest.fixture(scope="module")
def migrated(databases: Provisioned, tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    """Platform chain + these migrations alone (a private script dir, so later revisions of
    other engineers do not take part in this test)."""
    upgrade_all(
        [PLATFORM_CHAIN, private_wallet_chain(tmp_path_factory.mktemp("wallet_migrations"))],
        databases.vaultpay_owner_dsn,
        databases.app_role("wallet"),
        chain_roles=databases.chain_roles(),
    )
    return databases


@pytest.fixture(scope="module")
async def engine(migrated: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated.app_dsn("wallet"), pool_size=35, application_name="wallet-test")
    try:
        yield engine
    finally:
        await engine.dispose()


# The staff member reading wallets in these tests.
STAFF = StaffViewer("staff-reader", Role.ADMIN, "198.51.100.9")


class _World:
    """The use cases on real PostgreSQL; `fast` adds the PIN check's asyncpg fast path, as
    the service runs it."""

    def __init__(self, engine: AsyncEngine, *, fast: bool = False) -> None:
        self.clock = FixedClock()
        self.hasher = FakePinHasher()
        uow: Callable[[], WalletUnitOfWork] = lambda: SqlWalletUnitOfWork(engine)  # noqa: E731
        self.roles = roles = FakeUserRoles()
        self.limits = LimitsService(uow, self.clock, FakeUsage(), roles=roles)
        self.wallets = WalletService(uow, self.clock, self.limits)
        self.pins = PinService(
            uow,
            self.clock,
            self.hasher,
            ReversibleSealer(),
            PgPinCheckFastPath(engine) if fast else None,
        )
        self.admin = AdminService(
            uow,
            self.clock,
            self.limits,
            FakeTrustedIps(),
            FakeTransferStats(),
            FakeKycStats(),
            roles=roles,
        )
        self.settings = SettingsService(uow, self.clock)


@pytest.mark.parametrize("fast", [False, True], ids=["general", "fast"])
async def test_thirty_concurrent_wrong_pins_count_at_most_three_and_lock_once(
    engine: AsyncEngine, fast: bool
) -> None:
    world = _World(engine, fast=fast)
    user = f"race-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Racer", "", new_key(user)))
    await world.pins.set_pin(SetPin(user, "2468", "2468", new_key(user)))

    async def guess() -> Exception:
        try:
            await world.pins.verify_pin(VerifyPin(user, "1357", new_key(user)))
        except (InvalidPinError, PinLockedError, PinCheckInProgressError) as exc:
            return exc
        raise AssertionError("a wrong PIN was accepted")

    outcomes = await asyncio.gather(*(guess() for _ in range(30)))
    assert sum(isinstance(o, InvalidPinError) for o in outcomes) <= 2
    assert world.hasher.verifications <= 3  # guesses beyond the third never reach bcrypt
    async with engine.connect() as conn:
        attempts = await conn.scalar(
            select(tables.wallet_pins.c.failed_attempts).where(
                tables.wallet_pins.c.wallet_id == wallet.id
            )
        )
        lockouts = await conn.scalar(
            text(
                "SELECT count(*) FROM wallet_freezes WHERE wallet_id = :w AND source = 'PIN_LOCKOUT'"
            ),
            {"w": wallet.id},
        )
        locked_events = await conn.scalar(
            text(
                "SELECT count(*) FROM audit_events WHERE action = 'wallet.pin_locked' AND target_id = :w"
            ),
            {"w": wallet.id},
        )
    assert attempts == 3
    assert lockouts == 1
    assert locked_events == 1
    current = (await world.wallets.get_my_wallet(user)).wallet
    assert current.status is WalletStatus.FROZEN
    assert current.displayed_freeze is not None
    assert current.displayed_freeze.source is FreezeSource.PIN_LOCKOUT


@pytest.mark.parametrize("fast", [False, True], ids=["general", "fast"])
async def test_concurrent_right_pins_wait_for_each_other_and_never_lock(
    engine: AsyncEngine, fast: bool
) -> None:
    """More checks than attempts at once: the ones that find every attempt counted answer
    PIN_CHECK_IN_PROGRESS (retryable), never PIN_LOCKED, and all pass once retried."""
    world = _World(engine, fast=fast)
    user = f"busy-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Busy", "", new_key(user)))
    await world.pins.set_pin(SetPin(user, "2468", "2468", new_key(user)))
    busy = 0
    refused = asyncio.Event()
    verify = world.hasher.verify

    async def held_verify(pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        await refused.wait()  # checks hold their attempts until one check is turned away
        return await verify(pin, pin_hash)

    world.hasher.verify = held_verify  # type: ignore[method-assign]

    async def check() -> None:
        nonlocal busy
        k = new_key(user)
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await world.pins.verify_pin(VerifyPin(user, "2468", k))
                return
            except PinCheckInProgressError:
                busy += 1
                refused.set()
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)

    await asyncio.gather(*(check() for _ in range(12)))
    assert busy > 0  # the race did happen
    async with engine.connect() as conn:
        attempts = await conn.scalar(
            select(tables.wallet_pins.c.failed_attempts).where(
                tables.wallet_pins.c.wallet_id == wallet.id
            )
        )
    assert attempts == 0
    assert (await world.wallets.get_my_wallet(user)).wallet.status is WalletStatus.ACTIVE


class _CountingFastPath(PgPinCheckFastPath):
    """The real fast path, counting the checks it took on itself."""

    reserved = settled = 0

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        taken = await super().reserve(*args, **kwargs)
        self.reserved += taken is not None
        return taken

    async def settle_match(self, *args: Any, **kwargs: Any) -> bool:
        done = await super().settle_match(*args, **kwargs)
        self.settled += done
        return done


async def _attempts(engine: AsyncEngine, wallet_id: str) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(tables.wallet_pins.c.failed_attempts).where(
                tables.wallet_pins.c.wallet_id == wallet_id
            )
        )
    assert value is not None
    return int(value)


async def test_the_fast_path_keeps_the_rule_and_hands_the_rest_to_the_general_path(
    engine: AsyncEngine,
) -> None:
    world = _World(engine)
    fast = _CountingFastPath(engine)
    world.pins = PinService(world.pins._uow, world.clock, world.hasher, ReversibleSealer(), fast)
    user = f"fast-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Fast", "", new_key(user)))
    await world.pins.set_pin(SetPin(user, "2468", "2468", new_key(user)))

    right = new_key(user)
    assert (await world.pins.verify_pin(VerifyPin(user, "2468", right))).wallet_id == wallet.id
    assert (fast.reserved, fast.settled) == (1, 1)  # both phases took the fast path
    assert await _attempts(engine, wallet.id) == 0

    wrong = new_key(user)
    with pytest.raises(InvalidPinError) as first:
        await world.pins.verify_pin(VerifyPin(user, "1357", wrong))
    assert first.value.metadata == {"remaining_attempts": "2"}
    assert (fast.reserved, fast.settled) == (2, 1)  # a wrong PIN settles the general way
    with pytest.raises(InvalidPinError) as again:  # replayed, not counted again
        await world.pins.verify_pin(VerifyPin(user, "1357", wrong))
    assert again.value.metadata == first.value.metadata
    assert await world.pins.verify_pin(VerifyPin(user, "2468", right))  # replayed too
    assert (fast.reserved, fast.settled, world.hasher.verifications) == (2, 1, 2)
    assert await _attempts(engine, wallet.id) == 1

    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "check", None, new_key("staff"))
    )
    assert await world.pins.verify_pin(VerifyPin(user, "2468", new_key(user)))  # general path
    assert (fast.reserved, fast.settled) == (2, 1)
    assert await _attempts(engine, wallet.id) == 0


async def test_balance_can_never_go_negative(engine: AsyncEngine) -> None:
    world = _World(engine)
    user = f"neg-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Neg", "", new_key(user)))
    async with engine.connect() as conn:
        with pytest.raises(IntegrityError, match="wallets_balance_not_negative"):
            await conn.execute(
                update(tables.wallets).where(tables.wallets.c.id == wallet.id).values(balance=-1)
            )


async def test_a_colliding_id_is_drawn_again_on_the_real_uniquenew_key(engine: AsyncEngine) -> None:
    world = _World(engine)
    first = await world.wallets.create_wallet(CreateWallet(f"c1-{uuid.uuid4()}", "One", "", None))
    ids = iter([first.id, first.id, "VPY-" + uuid.uuid4().hex[:6].upper()])
    wallets = WalletService(
        lambda: SqlWalletUnitOfWork(engine), world.clock, world.limits, new_id=lambda: next(ids)
    )
    second = await wallets.create_wallet(CreateWallet(f"c2-{uuid.uuid4()}", "Two", "", None))
    assert second.id != first.id


async def test_the_app_role_cannot_rewrite_setting_history_or_delete_wallets(
    engine: AsyncEngine,
) -> None:
    world = _World(engine)
    await world.settings.update_setting(
        UpdateSetting("root", "limits.tier_basic.send.daily", "1234000", "test", new_key("root"))
    )
    async with engine.connect() as conn:
        for statement in (
            "UPDATE system_setting_changes SET new_value = '1'",
            "DELETE FROM system_setting_changes",
            "DELETE FROM wallets",
            "INSERT INTO system_settings (key, value, updated_at, updated_by) "
            "VALUES ('x', '1', now(), 'x')",
        ):
            with pytest.raises(DBAPIError, match="permission denied"):
                async with conn.begin_nested():
                    await conn.execute(text(statement))
    page = await world.settings.list_settings("limits.tier_basic.send.", "", 10)
    assert {s.key: s.value for s in page.settings}["limits.tier_basic.send.daily"] == "1234000"
    assert not page.has_more


async def _waiting_on_locks(engine: AsyncEngine, count: int) -> None:
    """Waits until `count` backends of these tests wait for a row lock."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wallet-test'"
                    " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            )
        if waiting == count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{waiting} waiting, not {count}"
        await asyncio.sleep(0.01)


async def test_two_tiers_updated_at_once_cannot_cross(engine: AsyncEngine) -> None:
    """BASIC's monthly withdraw default raised to 60,000,000 and FULL's lowered to 40,000,000
    at the same time: each is in order with the other's old value, together they cross. Both
    start while another transaction holds the two rows, so both are under way when it lets
    go; every update of an action locks all its tiers' defaults in one order, so one commits
    and the other is refused against the committed value (never both, never a deadlock)."""
    world = _World(engine)
    basic, full = "limits.tier_basic.withdraw.monthly", "limits.tier_full.withdraw.monthly"
    settings = (await world.settings.list_settings("limits.tier_", "", 100)).settings
    original = {s.key: s.value for s in settings if s.key in (basic, full)}
    assert original == {basic: "10000000", full: "100000000"}

    async def update(setting: str, value: str) -> str:
        try:
            await world.settings.update_setting(
                UpdateSetting("root", setting, value, "race", new_key("root"))
            )
        except ValidationError as exc:
            return f"{setting} {exc.violations[0].field}: {exc.violations[0].description}"
        return f"{setting} = {value}"

    try:
        async with engine.connect() as holder:
            await holder.execute(
                text("SELECT key FROM system_settings WHERE key IN (:b, :f) FOR UPDATE"),
                {"b": basic, "f": full},
            )
            racing = [
                asyncio.ensure_future(update(basic, "60000000")),
                asyncio.ensure_future(update(full, "40000000")),
            ]
            try:
                await _waiting_on_locks(engine, 2)
            finally:
                await holder.rollback()
            outcomes = set(await asyncio.gather(*racing))
        assert outcomes in (
            {
                f"{basic} = 60000000",
                f"{full} value: must be at least {basic} (60000000)",
            },
            {
                f"{full} = 40000000",
                f"{basic} value: must be at most {full} (40000000)",
            },
        )
        page = await world.settings.list_settings("limits.tier_", "", 100)
        stored = {s.key: int(s.value) for s in page.settings}
        assert stored[basic] <= stored[full]
    finally:  # BASIC first: it goes back under either FULL value
        for setting in (basic, full):
            await update(setting, original[setting])


async def test_admin_freeze_list_and_limits_round_trip_through_sql(engine: AsyncEngine) -> None:
    world = _World(engine)
    user = f"adm-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Adm", "", new_key(user)))
    frozen = await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "check", None, new_key("staff"))
    )
    assert frozen.status is WalletStatus.FROZEN
    view = await world.admin.get_wallet(wallet.id, viewer=STAFF)
    assert view.wallet.displayed_freeze is not None
    assert view.wallet.displayed_freeze.note == "check"
    page = await world.admin.list_wallets(WalletFilter(user_id=user), None, 10, viewer=STAFF)
    assert [w.id for w in page.wallets] == [wallet.id]
    stats = await world.admin.system_stats()
    assert stats.frozen_wallet_count >= 1
    assert stats.transfer is None and stats.pending_kyc_count is None


async def test_a_retried_unfreeze_replays_after_a_higher_rank_froze_again(
    engine: AsyncEngine,
) -> None:
    """The stored reply is looked up in a transaction of its own that ends without commit
    (the claim's advisory lock goes with it), before auth is asked; the change's own
    transaction then claims the key again."""
    world = _World(engine)
    world.roles.roles |= {"mod-1": Role.MODERATOR, "adm-1": Role.ADMIN}
    user = f"retry-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Retry", "", new_key(user)))
    unfreeze = AdminUnfreezeWallet("mod-1", Role.MODERATOR, wallet.id, "ok", new_key("mod-1"))
    first = await world.admin.unfreeze_wallet(unfreeze)
    await world.admin.freeze_wallet(
        AdminFreezeWallet("adm-1", Role.ADMIN, wallet.id, "fraud", None, new_key("adm-1"))
    )
    assert await world.admin.unfreeze_wallet(unfreeze) == first
    with pytest.raises(FreezeHeldByHigherRankError):  # a new request is checked as any
        await world.admin.unfreeze_wallet(
            AdminUnfreezeWallet("mod-1", Role.MODERATOR, wallet.id, "ok", new_key("mod-1"))
        )
    view = await world.admin.get_wallet(wallet.id, viewer=STAFF)
    assert view.wallet.status is WalletStatus.FROZEN


async def test_a_staff_freeze_row_without_a_setter_only_a_super_admin_lifts(
    engine: AsyncEngine,
) -> None:
    """`wallet_freezes.set_by` defaults to '' (a row written outside the API): below
    super_admin the unfreeze is FREEZE_SETTER_UNKNOWN, and auth is never asked about ''."""
    world = _World(engine)
    world.roles.roles |= {"adm-1": Role.ADMIN, "root-1": Role.SUPER_ADMIN}
    user = f"legacy-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Legacy", "", new_key(user)))
    await world.admin.freeze_wallet(
        AdminFreezeWallet("adm-1", Role.ADMIN, wallet.id, "hold", None, new_key("adm-1"))
    )
    async with engine.begin() as conn:
        await conn.execute(
            update(tables.wallet_freezes)
            .where(tables.wallet_freezes.c.wallet_id == wallet.id)
            .values(set_by=text("DEFAULT"))
        )
    world.roles.asked.clear()
    with pytest.raises(FreezeSetterUnknownError):
        await world.admin.unfreeze_wallet(
            AdminUnfreezeWallet("adm-2", Role.ADMIN, wallet.id, "ok", new_key("adm-2"))
        )
    assert "" not in world.roles.asked
    lifted = await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet("root-1", Role.SUPER_ADMIN, wallet.id, "ok", new_key("root-1"))
    )
    assert lifted.status is WalletStatus.ACTIVE


async def test_staff_reads_of_wallets_commit_their_audit_rows(engine: AsyncEngine) -> None:
    """AdminGetWallet and AdminListWallets write their audit rows in the read's transaction
    and commit them (a read-only unit of work would otherwise roll them back)."""
    world = _World(engine)
    user = f"seen-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Seen", "", new_key(user)))
    await world.admin.get_wallet(wallet.id, viewer=STAFF)
    await world.admin.list_wallets(WalletFilter(user_id=user), None, 10, viewer=STAFF)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT action, target_id, actor_id, actor_role, details FROM audit_events "
                    "WHERE action IN ('wallet.viewed', 'wallets.listed') "
                    "AND (target_id = :w OR details->>'user_id' = :u) ORDER BY sequence"
                ),
                {"w": wallet.id, "u": user},
            )
        ).all()
    assert [(r.action, r.target_id, r.actor_id, r.actor_role) for r in rows] == [
        ("wallet.viewed", wallet.id, "staff-reader", "ADMIN"),
        ("wallets.listed", "", "staff-reader", "ADMIN"),
    ]
    assert rows[0].details == {"user_id": user, "ip": "198.51.100.9"}
    assert rows[1].details == {
        "user_id": user,
        "count": "1",
        "wallet_ids": wallet.id,
        "ip": "198.51.100.9",
    }


async def test_a_lapsed_timed_freeze_counts_as_lifted_in_the_sql_filter_and_figures(
    engine: AsyncEngine,
) -> None:
    # QA of 2026-12-03: until the sweep ran (up to a minute), ?status=FROZEN still listed a
    # wallet whose freeze had ended (its item showing ACTIVE) and the stats still counted it.
    world = _World(engine)
    world.clock.current = datetime(2040, 1, 1, tzinfo=UTC)  # no other test's freeze ends here
    user = f"lapse-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Lapse", "", new_key(user)))
    until = world.clock.now() + timedelta(minutes=1)
    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "timed", until, new_key("staff"))
    )
    frozen_only = WalletFilter(status=WalletStatus.FROZEN, user_id=user)
    active_only = WalletFilter(status=WalletStatus.ACTIVE, user_id=user)
    assert [
        w.id for w in (await world.admin.list_wallets(frozen_only, None, 10, viewer=STAFF)).wallets
    ] == [wallet.id]
    before = await world.admin.system_stats()

    world.clock.advance(timedelta(minutes=2))  # the sweep has not run
    assert (await world.admin.list_wallets(frozen_only, None, 10, viewer=STAFF)).wallets == ()
    listed = (await world.admin.list_wallets(active_only, None, 10, viewer=STAFF)).wallets
    assert [(w.id, w.status) for w in listed] == [(wallet.id, WalletStatus.ACTIVE)]
    after = await world.admin.system_stats()
    assert after.frozen_wallet_count == before.frozen_wallet_count - 1
    assert after.active_wallet_count == before.active_wallet_count + 1


async def test_a_reset_racing_a_new_reset_request_waits_on_the_wallet_not_a_deadlock(
    engine: AsyncEngine,
) -> None:
    """Review of 2026-12-05: ResetPin locked its token's row, then the wallet's, while
    RequestPinReset (and a PIN check's settlement) lock the wallet, then write its tokens:
    a reset link opened as another tab asked for a new code deadlocked (40P01, INTERNAL).
    Here the wallet's row is held, as RequestPinReset holds it, while ResetPin starts; then the
    holder writes the wallet's tokens, as RequestPinReset's invalidation does, and commits.
    ResetPin waited on the wallet, so it finds its token spent: PIN_RESET_TOKEN_INVALID."""
    world = _World(engine)
    user = f"reset-{uuid.uuid4()}"
    wallet = await world.wallets.create_wallet(CreateWallet(user, "Resetter", "", new_key(user)))
    await world.pins.set_pin(SetPin(user, "2468", "2468", new_key(user)))
    await world.pins.request_pin_reset(RequestPinReset(user, new_key(user)))
    async with engine.connect() as conn:
        payload = (
            await conn.execute(
                text(
                    "SELECT payload FROM outbox_events WHERE topic = 'mail.send'"
                    " AND payload->>'user_id' = :u"
                ),
                {"u": user},
            )
        ).scalar_one()
    token = ReversibleSealer().open(payload["params"]["token_sealed"])

    async with engine.connect() as holder:
        await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM wallets WHERE id = :w FOR UPDATE"), {"w": wallet.id}
        )
        reset = asyncio.create_task(
            world.pins.reset_pin(ResetPin(token, "8642", "8642", new_key("anon")))
        )
        deadline = asyncio.get_running_loop().time() + 30
        while not await holder.scalar(
            text("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()")
        ):
            assert not reset.done(), reset
            assert asyncio.get_running_loop().time() < deadline, "the reset never waited"
            await asyncio.sleep(0.02)
        await holder.execute(
            text("UPDATE pin_reset_tokens SET used_at = now() WHERE wallet_id = :w"),
            {"w": wallet.id},
        )
        await holder.commit()
    with pytest.raises(PinResetTokenInvalidError):
        await reset
