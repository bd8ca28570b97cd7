"""Migrations w0003 and w0004's PIN check functions on a real PostgreSQL, through
`PgPinCheckFastPath` (w0004's movement settlement: test_movement_check.py).

Proves what the parametrized general/fast tests of test_wallet_repositories.py do not: the
reservation `wallet_pin_reserve` stores is `DataclassCodec(PinReservation).dumps` byte for
byte (whole seconds and microseconds alike) and the general path replays it without counting
again; a key claimed by a concurrent transaction undoes the count and answers
IDEMPOTENCY_KEY_IN_USE; anything but the common case writes nothing; EXECUTE is the app
role's only; each downgrade drops its own functions and upgrading again restores them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import FakePinHasher, FakeUsage, FixedClock, ReversibleSealer
from tests.integration.wallet.wallet_chain import new_key, private_wallet_chain
from vaultpay_common.db import create_engine
from vaultpay_common.idempotency import (
    DataclassCodec,
    IdempotencyKey,
    IdempotencyKeyInUseError,
)
from vaultpay_common.idempotency import idempotency_lock_key as lock_of
from vaultpay_common.migrations import (
    PLATFORM_CHAIN,
    MigrationChain,
    migrate_chain,
    upgrade_all,
)
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters.pins_pg import PgPinCheckFastPath
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.errors import InvalidPinError
from vaultpay_wallet.service_layer.commands import CreateWallet, SetPin, VerifyPin
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.ports import WalletUnitOfWork
from vaultpay_wallet.service_layer.results import PinCheckOutcome, PinCheckResult, PinReservation
from vaultpay_wallet.service_layer.wallets import WalletService

pytestmark = pytest.mark.integration

_RESERVATION = DataclassCodec(PinReservation)
_OUTCOME = DataclassCodec(PinCheckOutcome)
_FUNCTIONS = ("wallet_pin_reserve", "wallet_pin_settle_match", "wallet_pin_settle_movement")
_APP = "pin-functions-test"


@pytest.fixture(scope="module")
def chain(databases: Provisioned, tmp_path_factory: pytest.TempPathFactory) -> MigrationChain:
    """Platform chain, then w0001-w0003 in a private script dir, as the owner."""
    wallet = private_wallet_chain(tmp_path_factory.mktemp("wallet_pin_functions"))
    upgrade_all(
        [PLATFORM_CHAIN, wallet],
        databases.vaultpay_owner_dsn,
        databases.app_role("wallet"),
        chain_roles=databases.chain_roles(),
    )
    return wallet


@pytest.fixture(scope="module")
async def engine(chain: MigrationChain, databases: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(databases.app_dsn("wallet"), pool_size=8, application_name=_APP)
    try:
        yield engine
    finally:
        await engine.dispose()


def _reserve_key(key: IdempotencyKey) -> IdempotencyKey:
    return dataclasses.replace(key, method=key.method + "#reserve")  # as pins.py names it


class _World:
    """The general path only (no fast path), to make wallets and replay what the fast path
    stored."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.clock = FixedClock()
        self.hasher = FakePinHasher()
        uow: Callable[[], WalletUnitOfWork] = lambda: SqlWalletUnitOfWork(engine)  # noqa: E731
        self.wallets = WalletService(uow, self.clock, LimitsService(uow, self.clock, FakeUsage()))
        self.pins = PinService(uow, self.clock, self.hasher, ReversibleSealer(), None)

    async def wallet_with_pin(self, name: str) -> tuple[str, str]:
        user = f"{name}-{uuid.uuid4()}"
        wallet = await self.wallets.create_wallet(CreateWallet(user, "Pin", "", new_key(user)))
        await self.pins.set_pin(SetPin(user, "2468", "2468", new_key(user)))
        return user, wallet.id


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def _attempts(engine: AsyncEngine, wallet_id: str) -> int:
    value = await _scalar(
        engine, "SELECT failed_attempts FROM wallet_pins WHERE wallet_id = :w", w=wallet_id
    )
    return int(value)


async def _stored(engine: AsyncEngine, key: IdempotencyKey) -> bytes | None:
    value = await _scalar(
        engine,
        "SELECT reply FROM idempotency_records"
        " WHERE caller = :c AND method = :m AND request_id = CAST(:r AS uuid)",
        c=key.caller,
        m=key.method,
        r=key.request_id,
    )
    return None if value is None else bytes(value)


@pytest.mark.parametrize(
    "pin_updated_at",
    [
        datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC),  # isoformat() leaves microseconds out
        datetime(2026, 12, 2, 10, 0, 0, 123, tzinfo=UTC),
        datetime(2031, 1, 9, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=["whole-second", "microseconds", "last-microsecond"],
)
async def test_the_stored_reservation_is_the_codecs_bytes_and_the_general_path_replays_it(
    engine: AsyncEngine, pin_updated_at: datetime
) -> None:
    world = _World(engine)
    user, wallet_id = await world.wallet_with_pin("reply")
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE wallet_pins SET updated_at = :t WHERE wallet_id = :w"),
            {"t": pin_updated_at, "w": wallet_id},
        )
    key = new_key(user)
    taken = await PgPinCheckFastPath(engine).reserve(
        user, key, _reserve_key(key), world.clock.now(), _RESERVATION.dumps
    )
    assert taken is not None
    reservation, pin_hash = taken
    assert reservation == PinReservation(wallet_id, 1, pin_updated_at)
    assert pin_hash
    stored = await _stored(engine, _reserve_key(key))
    assert stored == _RESERVATION.dumps(reservation)  # byte for byte
    assert _RESERVATION.loads(stored) == reservation
    assert await _attempts(engine, wallet_id) == 1

    # A retry after the wallet died between the phases: the general path replays the stored
    # reservation (the attempt is not counted again) and settles it.
    with pytest.raises(InvalidPinError) as refused:
        await world.pins.verify_pin(VerifyPin(user, "1357", key))
    assert refused.value.metadata == {"remaining_attempts": "2"}
    assert await _attempts(engine, wallet_id) == 1
    assert world.hasher.verifications == 1


async def _blocked_on_a_lock(engine: AsyncEngine, function: str) -> None:
    """Waits until a backend of this test runs `function` and waits for a lock."""
    deadline = asyncio.get_running_loop().time() + 10
    while not await _scalar(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"
        " AND wait_event_type = 'Lock' AND query LIKE :q",
        a=_APP,
        q=f"%{function}(%",
    ):
        assert asyncio.get_running_loop().time() < deadline, f"{function} never blocked"
        await asyncio.sleep(0.01)


async def _racing_a_claim(
    engine: AsyncEngine, key: IdempotencyKey, call: Callable[[], Awaitable[Any]]
) -> None:
    """`call` runs while another transaction (which did not take the key's advisory lock)
    has stored a reply under `key` and not committed yet; that transaction then commits."""
    async with engine.connect() as other:
        await other.execute(
            text(
                "INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply)"
                " VALUES (:c, :m, CAST(:r AS uuid), :f, :b)"
            ),
            {
                "c": key.caller,
                "m": key.method,
                "r": key.request_id,
                "f": key.fingerprint,
                "b": b"x",
            },
        )
        running = asyncio.ensure_future(call())
        try:
            await _blocked_on_a_lock(engine, call.__name__)
        except BaseException:
            running.cancel()
            raise
        await other.commit()
        with pytest.raises(IdempotencyKeyInUseError):
            await running


async def test_a_key_stored_meanwhile_undoes_the_call_and_answers_in_use(
    engine: AsyncEngine,
) -> None:
    world = _World(engine)
    fast = PgPinCheckFastPath(engine)
    user, wallet_id = await world.wallet_with_pin("race")

    key = new_key(user)

    async def wallet_pin_reserve() -> Any:
        return await fast.reserve(
            user, key, _reserve_key(key), world.clock.now(), _RESERVATION.dumps
        )

    await _racing_a_claim(engine, _reserve_key(key), wallet_pin_reserve)
    assert await _attempts(engine, wallet_id) == 0  # the count went with the insert

    key = new_key(user)
    taken = await fast.reserve(user, key, _reserve_key(key), world.clock.now(), _RESERVATION.dumps)
    assert taken is not None
    reservation = taken[0]
    ok = _OUTCOME.dumps(PinCheckOutcome(wallet_id, PinCheckResult.OK, 3))

    async def wallet_pin_settle_match() -> Any:
        return await fast.settle_match(reservation, key, ok)

    await _racing_a_claim(engine, key, wallet_pin_settle_match)
    assert await _attempts(engine, wallet_id) == 1  # not cleared


async def test_anything_but_the_common_case_writes_nothing(engine: AsyncEngine) -> None:
    world = _World(engine)
    fast = PgPinCheckFastPath(engine)
    user, wallet_id = await world.wallet_with_pin("other")
    now = world.clock.now()

    async def reserve(key: IdempotencyKey) -> Any:
        return await fast.reserve(user, key, _reserve_key(key), now, _RESERVATION.dumps)

    async def nothing_written(key: IdempotencyKey, attempts: int) -> None:
        assert await _attempts(engine, wallet_id) == attempts
        assert await _stored(engine, _reserve_key(key)) is None

    key = new_key(user)  # the other key's advisory lock is held
    async with engine.begin() as conn:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_of(_reserve_key(key))}
        )
        assert await reserve(key) is None
    await nothing_written(key, 0)

    key = new_key(user)  # the request's key has a reply already
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply)"
                " VALUES (:c, :m, CAST(:r AS uuid), :f, 'x')"
            ),
            {"c": key.caller, "m": key.method, "r": key.request_id, "f": key.fingerprint},
        )
    assert await reserve(key) is None
    await nothing_written(key, 0)

    key = new_key(user)  # every attempt counted
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE wallet_pins SET failed_attempts = 3 WHERE wallet_id = :w"),
            {"w": wallet_id},
        )
    assert await reserve(key) is None
    await nothing_written(key, 3)

    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE wallet_pins SET failed_attempts = 0 WHERE wallet_id = :w"),
            {"w": wallet_id},
        )
    key = new_key(user)
    taken = await reserve(key)
    assert taken is not None
    ok = _OUTCOME.dumps(PinCheckOutcome(wallet_id, PinCheckResult.OK, 3))
    moved = dataclasses.replace(taken[0], pin_updated_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert await fast.settle_match(moved, key, ok) is False  # the PIN changed meanwhile
    async with engine.begin() as conn:  # the key's advisory lock is held
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_of(key)})
        assert await fast.settle_match(taken[0], key, ok) is False
    assert await _attempts(engine, wallet_id) == 1
    assert await _stored(engine, key) is None
    assert await fast.settle_match(taken[0], key, ok) is True
    assert await _attempts(engine, wallet_id) == 0
    assert await _stored(engine, key) == ok


async def _grantees(engine: AsyncEngine) -> dict[str, set[str]]:
    """Function name -> the roles that may EXECUTE it ('PUBLIC' for everyone)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT p.proname, CASE WHEN a.grantee = 0 THEN 'PUBLIC'"
                " ELSE pg_get_userbyid(a.grantee) END"
                " FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) a"
                " WHERE p.proname LIKE 'wallet_pin_%' AND a.privilege_type = 'EXECUTE'"
            )
        )
        found: dict[str, set[str]] = {}
        for name, grantee in rows:
            found.setdefault(name, set()).add(grantee)
        return found


async def test_execute_is_the_app_roles_and_the_downgrade_drops_the_functions(
    engine: AsyncEngine, chain: MigrationChain, databases: Provisioned
) -> None:
    grantees = await _grantees(engine)
    assert set(grantees) == set(_FUNCTIONS)
    for name in _FUNCTIONS:
        assert databases.app_role("wallet") in grantees[name]
        assert "PUBLIC" not in grantees[name]
    owner, app_role = databases.vaultpay_owner_dsn, databases.app_role("wallet")
    await asyncio.to_thread(
        migrate_chain, chain, owner, app_role, action="downgrade", revision="w0003"
    )
    assert set(await _grantees(engine)) == set(_FUNCTIONS) - {"wallet_pin_settle_movement"}
    await asyncio.to_thread(
        migrate_chain, chain, owner, app_role, action="downgrade", revision="w0002"
    )
    assert await _grantees(engine) == {}
    count = "SELECT count(*) FROM pg_proc WHERE proname LIKE 'wallet_pin_%'"
    assert await _scalar(engine, count) == 0
    await asyncio.to_thread(migrate_chain, chain, owner, app_role)
    assert await _grantees(engine) == grantees
    world = _World(engine)
    user, _ = await world.wallet_with_pin("again")
    key = new_key(user)
    fast = PgPinCheckFastPath(engine)
    assert await fast.reserve(user, key, _reserve_key(key), world.clock.now(), _RESERVATION.dumps)
