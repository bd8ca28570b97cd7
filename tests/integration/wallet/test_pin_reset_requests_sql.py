"""RequestPinReset's bounds and the wrong-PIN trail on real PostgreSQL, with the real wallet
chain at its head, as wallet's own role: the rules read `pin_reset_tokens` (no Redis).

* One mail a minute: a request within a minute of a usable code answers its expiry, and ten
  requests at once (the wallet's row lock orders them) mint one code, one mail, one audit row.
* Five mails an hour: the sixth is PIN_RESET_RATE_LIMITED with the wait until the first leaves
  the hour, nothing written; the hour is counted from the tokens, used or superseded.
* The mail delivery's look (`reset_code_usable`): only the newest unused code works.
* The two reads of the tokens read indexes among many rows, never the whole table; the hourly
  count reads the wallet's own range of w0013's index (it read the last ~75 minutes of every
  wallet's tokens), which the chain's downgrade drops and its upgrade builds again.
* A wrong PIN's audit row, and the owner's notice when the right PIN follows, on the fast path
  as the service runs it; a check sent without a request_id stores its settlement under a key
  of its own, as wallet's role.

Review of 9e17f85 (RequestPinReset unthrottled; wrong PINs left no trace). Review of 1d32ff0
(the count's plan; a keyless settlement retried after a lost COMMIT reply settled twice).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import FakePinHasher, FakeUsage, FakeUserRoles, FixedClock, ReversibleSealer
from tests.integration.databases import fresh_databases
from tests.integration.transfer.sql_capture import (
    CapturedStatement,
    prepared_plan_index_conditions,
    prepared_plan_scans,
)
from tests.integration.wallet.wallet_chain import migrate_to_head, new_key
from vaultpay_common.db import create_engine
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_wallet.adapters.pins_pg import PgPinCheckFastPath
from vaultpay_wallet.adapters.repositories import SqlPinResetTokenRepository
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.errors import InvalidPinError, PinResetRateLimitedError
from vaultpay_wallet.domain.pin import (
    PIN_RESET_CAP_WINDOW,
    PIN_RESET_COOLDOWN,
    PIN_RESET_HOURLY_CAP,
)
from vaultpay_wallet.entrypoints.cli import WALLET_CHAIN
from vaultpay_wallet.service_layer.commands import (
    CreateWallet,
    RequestPinReset,
    SetPin,
    VerifyPin,
    VerifyTransferPin,
)
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.ports import WalletUnitOfWork
from vaultpay_wallet.service_layer.wallets import WalletService

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
FILL = 20_000  # other wallets' tokens of the last day, used (what the retention still keeps)
SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}
CAP_INDEX = "pin_reset_tokens_wallet_created_idx"  # w0013


def _owner_dsn(dbs: Provisioned) -> str:
    return dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
async def filled(databases: Provisioned) -> Provisioned:
    """The chain at its head, and FILL used tokens of other wallets over the last day (written
    as the owner: test data only), then ANALYZE."""
    migrated = migrate_to_head(databases)
    conn = await asyncpg.connect(_owner_dsn(migrated))
    try:
        await conn.execute(
            "INSERT INTO wallets (id, user_id, display_name, currency, status, kyc_tier,"
            " created_at, updated_at)"
            " SELECT 'VPY-F' || lpad(upper(to_hex(i)), 5, '0'), 'filler-' || i, 'Filler',"
            " 'INR', 'ACTIVE', 'BASIC', $1, $1 FROM generate_series(1, $2) AS i",
            NOW - timedelta(days=400),
            FILL // 4,
        )
        await conn.execute(
            "INSERT INTO pin_reset_tokens (token_hash, wallet_id, created_at, expires_at,"
            " used_at)"
            " SELECT 'fill-' || i, 'VPY-F' || lpad(upper(to_hex(i % $3 + 1)), 5, '0'),"
            " $1::timestamptz - interval '1 second' * (i * 4),"
            " $1::timestamptz - interval '1 second' * (i * 4) + interval '15 minutes',"
            " $1::timestamptz - interval '1 second' * (i * 4) + interval '1 minute'"
            " FROM generate_series(1, $2) AS i",
            NOW,
            FILL,
            FILL // 4,
        )
        await conn.execute("ANALYZE pin_reset_tokens")
    finally:
        await conn.close()
    return migrated


@pytest.fixture(scope="module")
async def engine(filled: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(filled.app_dsn("wallet"), pool_size=12, application_name="pin-reset")
    try:
        yield engine
    finally:
        await engine.dispose()


class _World:
    def __init__(self, engine: AsyncEngine, *, fast: bool = False) -> None:
        self.clock = FixedClock(NOW)
        uow: Callable[[], WalletUnitOfWork] = lambda: SqlWalletUnitOfWork(engine)  # noqa: E731
        limits = LimitsService(uow, self.clock, FakeUsage(), roles=FakeUserRoles())
        self.wallets = WalletService(uow, self.clock, limits)
        self.sealer = ReversibleSealer()
        self.pins = PinService(
            uow,
            self.clock,
            FakePinHasher(),
            self.sealer,
            PgPinCheckFastPath(engine) if fast else None,
        )

    async def user_with_pin(self) -> tuple[str, str]:
        user = str(uuid.uuid4())
        wallet = await self.wallets.create_wallet(CreateWallet(user, "Asha", "", new_key(user)))
        await self.pins.set_pin(SetPin(user, "2468", "2468", new_key(user)))
        return user, wallet.id


async def _rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def _mails(engine: AsyncEngine, user: str) -> list[dict[str, Any]]:
    rows = await _rows(
        engine,
        "SELECT payload FROM outbox_events WHERE topic = 'mail.send'"
        " AND payload->>'user_id' = :u ORDER BY created_at",
        u=user,
    )
    return [r.payload for r in rows]


async def _audited(engine: AsyncEngine, action: str, wallet_id: str) -> list[dict[str, str]]:
    rows = await _rows(
        engine,
        "SELECT details FROM audit_events WHERE action = :a AND target_id = :w ORDER BY sequence",
        a=action,
        w=wallet_id,
    )
    return [r.details for r in rows]


async def _notices(engine: AsyncEngine, user: str, title: str) -> list[dict[str, Any]]:
    rows = await _rows(
        engine,
        "SELECT payload FROM outbox_events WHERE topic = 'notification.create'"
        " AND payload->>'user_id' = :u AND payload->>'title' = :t",
        u=user,
        t=title,
    )
    return [r.payload for r in rows]


async def test_ten_requests_at_once_mint_one_code_and_the_next_minute_answers_it(
    engine: AsyncEngine,
) -> None:
    world = _World(engine)
    user, wallet_id = await world.user_with_pin()

    answers = await asyncio.gather(
        *(world.pins.request_pin_reset(RequestPinReset(user, new_key(user))) for _ in range(10))
    )

    assert len(set(answers)) == 1
    assert len(await _mails(engine, user)) == 1
    assert len(await _audited(engine, "wallet.pin_reset_requested", wallet_id)) == 1
    assert len(await _notices(engine, user, "PIN reset requested")) == 1
    world.clock.advance(PIN_RESET_COOLDOWN - timedelta(seconds=1))
    assert await world.pins.request_pin_reset(RequestPinReset(user, new_key(user))) == answers[0]
    assert len(await _mails(engine, user)) == 1


async def test_the_sixth_code_within_the_hour_is_refused_until_the_first_leaves_it(
    engine: AsyncEngine,
) -> None:
    world = _World(engine)
    user, wallet_id = await world.user_with_pin()
    for _ in range(PIN_RESET_HOURLY_CAP):
        await world.pins.request_pin_reset(RequestPinReset(user, new_key(user)))
        world.clock.advance(PIN_RESET_COOLDOWN)
    mails = await _mails(engine, user)
    assert len(mails) == PIN_RESET_HOURLY_CAP

    with pytest.raises(PinResetRateLimitedError) as refused:
        await world.pins.request_pin_reset(RequestPinReset(user, new_key(user)))

    waits = PIN_RESET_CAP_WINDOW - PIN_RESET_HOURLY_CAP * PIN_RESET_COOLDOWN
    assert refused.value.retry_after_seconds == waits.total_seconds()
    assert len(await _mails(engine, user)) == PIN_RESET_HOURLY_CAP
    tokens = await _rows(engine, "SELECT 1 FROM pin_reset_tokens WHERE wallet_id = :w", w=wallet_id)
    assert len(tokens) == PIN_RESET_HOURLY_CAP
    assert len(await _audited(engine, "wallet.pin_reset_requested", wallet_id)) == (
        PIN_RESET_HOURLY_CAP
    )

    # The delivery's look: only the newest code works; the others' mails are dropped.
    codes = [world.sealer.open(m["params"]["token_sealed"]) for m in mails]
    usable = [await world.pins.reset_code_usable(code) for code in codes]
    assert usable == [False] * (PIN_RESET_HOURLY_CAP - 1) + [True]

    world.clock.advance(waits)
    await world.pins.request_pin_reset(RequestPinReset(user, new_key(user)))
    assert len(await _mails(engine, user)) == PIN_RESET_HOURLY_CAP + 1


async def test_the_token_reads_use_indexes_among_many_rows(
    engine: AsyncEngine, filled: Provisioned
) -> None:
    world = _World(engine)
    user, wallet_id = await world.user_with_pin()
    await world.pins.request_pin_reset(RequestPinReset(user, new_key(user)))
    since = NOW - PIN_RESET_CAP_WINDOW

    async def read(name: str, repo: SqlPinResetTokenRepository) -> object:
        if name == "newest_usable":
            return await repo.newest_usable(wallet_id, NOW)
        return await repo.created_since(wallet_id, since)

    for name in ("newest_usable", "created_since"):
        with CapturedStatement(engine) as captured:
            async with engine.connect() as conn:
                found = await read(name, SqlPinResetTokenRepository(conn))
        assert found, name
        plans = await prepared_plan_scans(_plain(filled.app_dsn("wallet")), name, captured)
        for mode, scans in plans.items():  # generic too: asyncpg prepares the statement
            assert ("Seq Scan", "pin_reset_tokens") not in scans, (name, mode, scans)
            assert any(node in SCANS for node, _ in scans), (name, mode, scans)


async def test_wrong_pins_are_audited_and_the_right_one_after_them_tells_the_owner(
    engine: AsyncEngine,
) -> None:
    world = _World(engine, fast=True)
    user, wallet_id = await world.user_with_pin()
    ip = "203.0.113.7"
    for _ in range(2):
        with pytest.raises(InvalidPinError):
            await world.pins.verify_transfer_pin(
                VerifyTransferPin(user, "1357", new_key("transfer"), ip)
            )

    await world.pins.verify_transfer_pin(VerifyTransferPin(user, "2468", new_key("transfer"), ip))
    await world.pins.verify_transfer_pin(VerifyTransferPin(user, "2468", new_key("transfer"), ip))

    assert await _audited(engine, "wallet.pin_refused", wallet_id) == [
        {"attempt": "1", "check": "movement", "ip": ip},
        {"attempt": "2", "check": "movement", "ip": ip},
    ]
    [notice] = await _notices(engine, user, "Wrong PIN attempts on your wallet")
    assert notice["kind"] == "SECURITY"
    assert notice["body"].startswith("2 wrong PIN attempts were made")
    [counter] = await _rows(
        engine, "SELECT failed_attempts FROM wallet_pins WHERE wallet_id = :w", w=wallet_id
    )
    assert counter.failed_attempts == 0


async def test_the_hourly_count_reads_the_wallets_range_of_its_own_index(
    engine: AsyncEngine, filled: Provisioned
) -> None:
    """Review of 1d32ff0: the count could only read `pin_reset_tokens_expires_idx` (the
    wallet's index holds unused tokens only), every wallet's tokens of the last ~75 minutes,
    under the wallet's row lock. Generic and custom plans of the statement as the service
    prepares it read w0013's index on the wallet and the hour, and no other."""
    world = _World(engine)
    user, wallet_id = await world.user_with_pin()
    for _ in range(3):
        await world.pins.request_pin_reset(RequestPinReset(user, new_key(user)))
        world.clock.advance(PIN_RESET_COOLDOWN)

    with CapturedStatement(engine) as captured:
        async with engine.connect() as conn:
            found = await SqlPinResetTokenRepository(conn).created_since(
                wallet_id, world.clock.now() - PIN_RESET_CAP_WINDOW
            )
    assert len(found) == 3 and found == sorted(found)
    dsn = _plain(filled.app_dsn("wallet"))
    scans = await prepared_plan_scans(dsn, "cap", captured)
    conditions = await prepared_plan_index_conditions(dsn, "cap", captured)
    for mode in scans:
        assert ("Seq Scan", "pin_reset_tokens") not in scans[mode], (mode, scans[mode])
        assert list(conditions[mode]) == [CAP_INDEX], (mode, conditions[mode])
        condition = conditions[mode][CAP_INDEX]
        assert "wallet_id" in condition and "created_at" in condition, (mode, condition)


def _token_indexes(dbs: Provisioned) -> list[str]:
    async def run(conn: Any) -> Any:
        return await conn.fetch(
            "SELECT indexname::text AS name FROM pg_indexes WHERE tablename = 'pin_reset_tokens'"
        )

    return sorted(r["name"] for r in run_sql(_owner_dsn(dbs), run))


def test_w0013_goes_down_without_the_count_index_and_up_again(infra: Infra) -> None:
    with fresh_databases(infra, "r") as dbs:
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

        before = [
            "pin_reset_tokens_expires_idx",
            "pin_reset_tokens_pkey",
            "pin_reset_tokens_wallet_idx",
        ]
        wallet_chain("upgrade", "w0013")
        assert _token_indexes(dbs) == sorted([*before, CAP_INDEX])
        wallet_chain("downgrade", "w0012")
        assert _token_indexes(dbs) == before
        wallet_chain("upgrade", "w0013")
        assert _token_indexes(dbs) == sorted([*before, CAP_INDEX])


async def test_a_keyless_check_stores_its_settlement_under_a_key_of_its_own(
    engine: AsyncEngine, filled: Provisioned
) -> None:
    """A check sent without a request_id: its settlement is stored under the check's own key
    ("#settle", wallet's record, written as wallet's role), so a settlement retried after a
    lost COMMIT reply replays it instead of auditing the wrong PIN again (review of 1d32ff0)."""
    world = _World(engine, fast=True)
    user, wallet_id = await world.user_with_pin()

    with pytest.raises(InvalidPinError):
        await world.pins.verify_pin(VerifyPin(user, "1357", None, client_ip="203.0.113.9"))

    assert await _audited(engine, "wallet.pin_refused", wallet_id) == [
        {"attempt": "1", "check": "verify", "ip": "203.0.113.9"}
    ]
    conn = await asyncpg.connect(_owner_dsn(filled))
    try:
        records = await conn.fetch(
            "SELECT method, service FROM idempotency_records"
            " WHERE caller = $1 AND method LIKE '%#settle'",
            user,
        )
    finally:
        await conn.close()
    assert [(r["method"], r["service"]) for r in records] == [
        ("/vaultpay.wallet.v1.WalletService/VerifyPin#settle", "wallet")
    ]
