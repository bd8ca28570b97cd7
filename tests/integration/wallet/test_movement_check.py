"""A money movement's checks (`MovementChecks`) on real PostgreSQL and Redis, with the PIN
check's fast path as the service runs it: the client address is read in the settlement of
the matched PIN (migration w0004's `wallet_pin_settle_movement`), so a trusted address costs
no Redis read and no round trip of its own; anything else is checked as CheckIpTrust checks
it (the link mailed once per movement)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import FakePinHasher, FakeUsage, FixedClock, ReversibleSealer
from tests.integration.wallet.wallet_chain import new_key, private_wallet_chain
from vaultpay_common.clock import Clock
from vaultpay_common.db import create_engine
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_common.migrations import PLATFORM_CHAIN, upgrade_all
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters.ip_trust_redis import RedisTrustedIpCache
from vaultpay_wallet.adapters.pins_pg import LAST_SEEN_EVERY, PgPinCheckFastPath
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.errors import (
    InvalidPinError,
    PinChangedError,
    WalletClosedError,
    WalletFrozenError,
)
from vaultpay_wallet.domain.model import KycTier
from vaultpay_wallet.service_layer.commands import (
    ChangePin,
    CloseMyWallet,
    CreateWallet,
    FreezeMyWallet,
    SetKycTier,
    SetPin,
    UnfreezeMyWallet,
    VerifyTransferPin,
)
from vaultpay_wallet.service_layer.internal import (
    KycTierService,
    MovementChecked,
    MovementChecks,
)
from vaultpay_wallet.service_layer.ip_trust import (
    CheckIpTrust,
    ConfirmIp,
    IpTrustService,
    ListTrustedIps,
    RevokeTrustedIp,
    TrustCacheUnavailableError,
)
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.results import PinReservation
from vaultpay_wallet.service_layer.wallets import WalletService

pytestmark = pytest.mark.integration

PIN = "2468"
HOME, CAFE = "203.0.113.7", "198.51.100.20"


@pytest.fixture(scope="module")
def migrated(databases: Provisioned, tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    upgrade_all(
        [PLATFORM_CHAIN, private_wallet_chain(tmp_path_factory.mktemp("movement_check"))],
        databases.vaultpay_owner_dsn,
        databases.app_role("wallet"),
        chain_roles=databases.chain_roles(),
    )
    return databases


@pytest.fixture(scope="module")
async def engine(migrated: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated.app_dsn("wallet"), pool_size=8, application_name="movement")
    try:
        yield engine
    finally:
        await engine.dispose()


class _CountingCache(RedisTrustedIpCache):
    """The real Redis cache, counting the lookups made of it; `down` makes it unreachable."""

    def __init__(self, redis: Redis, clock: Clock) -> None:
        super().__init__(redis, clock, prefix=f"test:{uuid.uuid4().hex}:")
        self.lookups = 0
        self.down = False

    async def lookup(self, user_id: str, ip_hash: str) -> datetime | None:
        self.lookups += 1
        if self.down:
            raise TrustCacheUnavailableError("connection refused")
        return await super().lookup(user_id, ip_hash)


class _World:
    def __init__(self, engine: AsyncEngine, redis: Redis) -> None:
        self.engine = engine
        self.clock = FixedClock()

        def uow() -> SqlWalletUnitOfWork:
            return SqlWalletUnitOfWork(engine)

        self.wallets = WalletService(uow, self.clock, LimitsService(uow, self.clock, FakeUsage()))
        self.hasher = FakePinHasher()
        self.pins = PinService(
            uow, self.clock, self.hasher, ReversibleSealer(), PgPinCheckFastPath(engine)
        )
        self.cache = _CountingCache(redis, self.clock)
        self.ip_trust = IpTrustService(
            uow, self.cache, ReversibleSealer(), self.clock, ip_hash_key=b"k" * 32
        )
        self.checks = MovementChecks(self.pins, self.ip_trust, uow)
        self.tiers = KycTierService(uow, self.clock)

    async def user(self, tier: KycTier = KycTier.BASIC) -> str:
        """A user with a wallet of the given KYC tier and a PIN."""
        user = str(uuid.uuid4())
        await self.wallets.create_wallet(CreateWallet(user, "Mover", "", new_key(user)))
        await self.pins.set_pin(SetPin(user, PIN, PIN, new_key(user)))
        if tier is not KycTier.NONE:
            await self.tiers.set_kyc_tier(SetKycTier(user, tier, "sub-1", new_key("kyc")))
        return user

    async def failed_attempts(self, user: str) -> int:
        async with self.engine.connect() as conn:
            count = await conn.scalar(
                text(
                    "SELECT p.failed_attempts FROM wallet_pins p JOIN wallets w"
                    " ON w.id = p.wallet_id WHERE w.user_id = :u"
                ),
                {"u": user},
            )
        assert isinstance(count, int)
        return count

    async def user_trusting(self, ip: str) -> str:
        """A user with a KYC-approved wallet and a PIN who confirmed `ip` (through the
        mailed link)."""
        user = await self.user()
        check = await self.ip_trust.check_ip_trust(CheckIpTrust(str(uuid.uuid4()), user, ip))
        assert not check.trusted and check.confirmation_sent
        [token] = await self.mailed_tokens(user)
        await self.ip_trust.confirm_ip(ConfirmIp(token))
        return user

    async def move(self, user: str, ip: str, pin: str = PIN, request: str = "") -> MovementChecked:
        key = new_key(user)
        if request:  # a retry of one movement
            key = dataclasses.replace(key, request_id=request)
        return await self.checks.check(VerifyTransferPin(user, pin, key), ip)

    async def mailed_tokens(self, user: str) -> list[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT payload FROM outbox_events WHERE topic = 'mail.send'"
                    " AND payload->>'user_id' = :u ORDER BY created_at"
                ),
                {"u": user},
            )
            return [ReversibleSealer().open(r.payload["params"]["token_sealed"]) for r in rows]

    async def last_seen(self, user: str) -> datetime:
        async with self.engine.connect() as conn:
            seen = await conn.scalar(
                text("SELECT last_seen_at FROM trusted_ips WHERE user_id = CAST(:u AS uuid)"),
                {"u": user},
            )
        assert isinstance(seen, datetime)
        return seen


async def test_a_trusted_address_is_read_with_the_pin_and_not_from_redis(
    engine: AsyncEngine, redis: Redis
) -> None:
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    world.cache.lookups = 0

    checked = await world.move(user, HOME)

    assert checked.ip is not None and checked.ip.trusted and not checked.ip.failed_open
    assert world.cache.lookups == 0
    assert world.hasher.verifications == 1


async def test_an_address_the_pin_check_found_untrusted_is_not_failed_open_by_a_redis_outage(
    engine: AsyncEngine, redis: Redis
) -> None:
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    world.cache.down = True  # CheckIpTrust alone would fail open now

    checked = await world.move(user, CAFE)

    assert checked.ip is not None
    assert (checked.ip.trusted, checked.ip.failed_open) == (False, False)
    assert checked.ip.confirmation_sent
    assert len(await world.mailed_tokens(user)) == 2  # HOME's link at set-up, CAFE's now


async def test_a_retried_movement_from_an_untrusted_address_is_not_failed_open_either(
    engine: AsyncEngine, redis: Redis
) -> None:
    """The retry replays the stored PIN check, which tells no address (review of 2026-12-04,
    third: it was then checked through the cache, and an unreachable Redis passed it)."""
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    world.cache.down = True
    request = str(uuid.uuid4())

    first = await world.move(user, CAFE, request=request)
    retry = await world.move(user, CAFE, request=request)

    assert first.ip is not None and (first.ip.trusted, first.ip.failed_open) == (False, False)
    assert retry.ip is not None and (retry.ip.trusted, retry.ip.failed_open) == (False, False)
    assert retry.ip.confirmation_sent  # the same answer: its link went out with the first
    assert len(await world.mailed_tokens(user)) == 2  # HOME's link at set-up, CAFE's once
    assert world.hasher.verifications == 1  # the retry was answered from the stored check


async def test_last_seen_moves_forward_at_most_every_few_minutes(
    engine: AsyncEngine, redis: Redis
) -> None:
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    confirmed = await world.last_seen(user)

    world.clock.advance(LAST_SEEN_EVERY - timedelta(seconds=1))
    assert (await world.move(user, HOME)).ip == (await world.move(user, HOME)).ip
    assert await world.last_seen(user) == confirmed  # recent enough: no write

    world.clock.advance(timedelta(seconds=2))
    assert (await world.move(user, HOME)).ip is not None
    assert await world.last_seen(user) == world.clock.now()


async def test_an_unknown_address_is_refused_and_its_link_mailed_once_per_movement(
    engine: AsyncEngine, redis: Redis
) -> None:
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    request = str(uuid.uuid4())

    first = await world.move(user, CAFE, request=request)
    retry = await world.move(user, CAFE, request=request)

    assert first.ip is not None and (first.ip.trusted, first.ip.confirmation_sent) == (False, True)
    assert retry.ip == first.ip
    assert len(await world.mailed_tokens(user)) == 2  # HOME's link at set-up, CAFE's once


async def test_a_revoked_or_expired_trust_is_refused_at_once(
    engine: AsyncEngine, redis: Redis
) -> None:
    world = _World(engine, redis)
    revoking = await world.user_trusting(HOME)
    [trusted] = (await world.ip_trust.list_trusted_ips(ListTrustedIps(revoking))).items
    await world.ip_trust.revoke_trusted_ip(RevokeTrustedIp(revoking, trusted.ip_hash))
    revoked = await world.move(revoking, HOME)
    assert revoked.ip is not None and not revoked.ip.trusted

    expiring = await world.user_trusting(HOME)
    world.clock.advance(timedelta(days=30, seconds=1))
    expired = await world.move(expiring, HOME)
    assert expired.ip is not None and not expired.ip.trusted


async def test_a_wrong_pin_looks_at_no_address(engine: AsyncEngine, redis: Redis) -> None:
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    world.clock.advance(LAST_SEEN_EVERY * 2)
    seen = await world.last_seen(user)
    world.cache.lookups = 0

    with pytest.raises(InvalidPinError):
        await world.move(user, CAFE, pin="1357")
    with pytest.raises(InvalidPinError):
        await world.move(user, HOME, pin="1357")

    assert len(await world.mailed_tokens(user)) == 1  # the set-up's link only
    assert await world.last_seen(user) == seen
    assert world.cache.lookups == 0


async def test_a_passed_check_is_not_replayed_after_the_pin_changed(
    engine: AsyncEngine, redis: Redis
) -> None:
    # Review of 2026-12-03: a movement's check that passed (for a send the ledger then
    # refused, which stores nothing) answered OK again under its id after a PIN change.
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    check = str(uuid.uuid4())
    first = await world.move(user, HOME, request=check)
    assert (await world.move(user, HOME, request=check)).wallet_id == first.wallet_id
    assert world.hasher.verifications == 1  # the retry was replayed, on the fast path's reply

    world.clock.advance(timedelta(minutes=1))
    await world.pins.change_pin(ChangePin(user, PIN, "1357", "1357", new_key(user)))
    with pytest.raises(PinChangedError):
        await world.move(user, HOME, request=check)
    assert (await world.move(user, HOME, pin="1357")).wallet_id == first.wallet_id


async def test_a_wallet_without_kyc_is_mailed_no_link_for_an_unknown_address(
    engine: AsyncEngine, redis: Redis
) -> None:
    # QA of 2026-12-03: a wallet of tier NONE was mailed a confirmation link, answered
    # IP_NOT_TRUSTED, and learned of KYC_NOT_VERIFIED only after confirming the address.
    world = _World(engine, redis)
    user = await world.user(KycTier.NONE)

    with pytest.raises(InvalidPinError):  # the PIN is checked first, as always
        await world.move(user, CAFE, pin="1357")
    checked = await world.move(user, CAFE)

    assert checked.kyc_tier is KycTier.NONE
    assert checked.ip is not None
    assert (checked.ip.trusted, checked.ip.confirmation_sent) == (False, False)
    assert await world.mailed_tokens(user) == []
    assert world.hasher.verifications == 2


async def test_a_frozen_wallet_is_refused_before_an_attempt_counts(
    engine: AsyncEngine, redis: Redis
) -> None:
    # QA of 2026-12-03: a wrong PIN on a frozen wallet answered INVALID_PIN and counted
    # toward the lockout; only the right PIN then told WALLET_FROZEN.
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    await world.wallets.freeze_my_wallet(FreezeMyWallet(user, "lost my phone", new_key(user)))

    for pin in ("1357", "1357", "1357", PIN):
        with pytest.raises(WalletFrozenError):
            await world.move(user, HOME, pin=pin)
    assert await world.failed_attempts(user) == 0
    assert world.hasher.verifications == 0

    await world.wallets.unfreeze_my_wallet(UnfreezeMyWallet(user, new_key(user)))
    assert (await world.move(user, HOME)).ip is not None  # the fast path again


async def test_a_closed_wallet_is_refused_before_an_attempt_counts(
    engine: AsyncEngine, redis: Redis
) -> None:
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    await world.wallets.close_my_wallet(CloseMyWallet(user, new_key(user)))

    for pin in ("1357", PIN):
        with pytest.raises(WalletClosedError):
            await world.move(user, HOME, pin=pin)
    assert await world.failed_attempts(user) == 0


async def test_a_late_lower_tier_keeps_the_wallet_and_is_audited(
    engine: AsyncEngine, redis: Redis
) -> None:
    # kyc's tier events arrive in any order: a BASIC call still in flight may reach wallet
    # after the FULL one. SetKycTier never lowers: OK, the row unchanged, audited as kept.
    world = _World(engine, redis)
    user = await world.user(KycTier.FULL)
    late_key = new_key("kyc")
    late = await world.tiers.set_kyc_tier(SetKycTier(user, KycTier.BASIC, "sub-1", late_key))
    again = await world.tiers.set_kyc_tier(SetKycTier(user, KycTier.BASIC, "sub-1", late_key))

    assert late.kyc_tier is KycTier.FULL and again == late
    async with engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT kyc_tier FROM wallets WHERE user_id = :u"), {"u": user}
        )
        kept = (
            await conn.execute(
                text(
                    "SELECT details FROM audit_events"
                    " WHERE action = 'wallet.kyc_tier_kept' AND target_id = :w"
                ),
                {"w": late.id},
            )
        ).all()
    assert stored == "FULL"
    assert [row.details for row in kept] == [
        {"old_tier": "FULL", "asked_tier": "BASIC", "submission_id": "sub-1"}
    ]
    checked = await world.move(user, CAFE)  # the movement still sees FULL
    assert checked.kyc_tier is KycTier.FULL


class _FirstReserveHeld(PgPinCheckFastPath):
    """The real fast path, the answer of the first reservation that counts an attempt held
    on its way back (committed: the attempt counted, the reservation stored) until `answer`
    is set, as a busy event loop or network can hold it."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.reserved = asyncio.Event()
        self.answer = asyncio.Event()

    async def reserve(
        self,
        user_id: str,
        key: IdempotencyKey,
        reserve_key: IdempotencyKey,
        now: datetime,
        encode: Callable[[PinReservation], bytes],
    ) -> tuple[PinReservation, str] | None:
        reserved = await super().reserve(user_id, key, reserve_key, now, encode)
        if reserved is not None and not self.reserved.is_set():
            self.reserved.set()
            await self.answer.wait()
        return reserved


@pytest.mark.parametrize("entered", [PIN, "1357"], ids=["right-pin", "wrong-pin"])
async def test_two_concurrent_checks_of_one_movement_hash_once_and_count_one_attempt(
    engine: AsyncEngine, redis: Redis, entered: str
) -> None:
    """The retry (another address: transfer retried after its deadline) reads the first
    call's committed reservation and hashes; the first call, its reservation's answer late,
    joins that hash instead of starting another."""
    world = _World(engine, redis)
    user = await world.user_trusting(HOME)
    fast = _FirstReserveHeld(engine)
    hashing, release = asyncio.Event(), asyncio.Event()
    hashes = 0

    async def held_bcrypt(pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        nonlocal hashes
        hashes += 1
        hashing.set()
        await release.wait()
        return await FakePinHasher.verify(world.hasher, pin, pin_hash)

    world.hasher.verify = held_bcrypt  # type: ignore[method-assign]

    def uow() -> SqlWalletUnitOfWork:
        return SqlWalletUnitOfWork(engine)

    pins = PinService(uow, world.clock, world.hasher, ReversibleSealer(), fast)
    checks = MovementChecks(pins, world.ip_trust, uow)
    check = new_key(user)

    def move(ip: str) -> asyncio.Task[MovementChecked]:
        return asyncio.ensure_future(checks.check(VerifyTransferPin(user, entered, check), ip))

    first = move(HOME)
    await fast.reserved.wait()
    retry = move(CAFE)  # finds the reservation stored, no reply yet: the general path
    await hashing.wait()
    fast.answer.set()
    for _ in range(5):  # no time passes: the first call goes on until it waits again
        await asyncio.sleep(0)
    assert hashes == 1  # the first call joined the retry's hash
    release.set()
    answers = await asyncio.gather(first, retry, return_exceptions=True)

    assert world.hasher.verifications == 1
    assert pins.checks_in_flight == 0
    if entered == PIN:
        assert await world.failed_attempts(user) == 0
        assert not any(isinstance(a, BaseException) for a in answers)
        assert answers[0].wallet_id == answers[1].wallet_id  # type: ignore[union-attr]
    else:
        assert await world.failed_attempts(user) == 1
        assert all(isinstance(a, InvalidPinError) for a in answers)
        assert [a.metadata for a in answers] == [{"remaining_attempts": "2"}] * 2  # type: ignore[union-attr]
    async with engine.connect() as conn:
        stored = await conn.scalar(
            text(
                "SELECT count(*) FROM idempotency_records"
                " WHERE request_id = CAST(:r AS uuid) AND method = :m"
            ),
            {"r": check.request_id, "m": check.method},
        )
    assert stored == 1  # one settled reply, which a later retry replays
