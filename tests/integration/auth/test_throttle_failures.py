"""How the sign-in and sign-up throttles fail, against a real Redis.

They fail open only when Redis cannot be reached (recorded: an outage of the cache must not
lock every user out). They failed open on *every* Redis error, so a burst of Logins above the
process's Redis connections was let through uncounted, and a Redis that answers but refuses (a
read-only replica after a failover, out of memory, a wrong ACL) turned them off for as long
as it lasted (review of 2026-12-05). Now: every connection in use answers RATE_LIMITED (429),
a refusing Redis UNAVAILABLE (503), and an unreachable one still fails open. The IP-trust
cache, whose unreachable Redis fails open by the brief's choice, reads PostgreSQL (a miss) on
the other failures.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.blackhole import BlackholeProxy
from tests.fakes.wallet import FixedClock
from tests.ports import closed_port
from vaultpay_auth.adapters.throttle import RedisLoginThrottle, RedisSignUpThrottle
from vaultpay_auth.domain.errors import ThrottleBusyError, ThrottleUnavailableError
from vaultpay_common.redis import RedisOutage, create_redis
from vaultpay_devstack.infra import Infra
from vaultpay_wallet.adapters.ip_trust_redis import RedisTrustedIpCache

pytestmark = pytest.mark.integration

REDIS_DB = 9


def _login(redis: Redis, outage: RedisOutage | None = None) -> RedisLoginThrottle:
    return RedisLoginThrottle(redis, per_account=5, per_ip=20, window_seconds=60, outage=outage)


def _sign_ups(redis: Redis, outage: RedisOutage | None = None) -> RedisSignUpThrottle:
    return RedisSignUpThrottle(
        redis,
        per_ip=5,
        per_ip_window_seconds=60,
        global_limit=600,
        global_window_seconds=60,
        namespace=f"test:sign-ups:{uuid.uuid4().hex}",
        outage=outage,
    )


def _account() -> str:
    return f"login:acct-{uuid.uuid4().hex}@example.com"


@pytest.fixture
async def one_connection(infra: Infra) -> AsyncIterator[Redis]:
    client = create_redis(infra.redis.url(REDIS_DB), max_connections=1)
    try:
        yield client
    finally:
        await client.aclose()


async def test_every_connection_in_use_refuses_the_attempt_rather_than_let_it_through(
    one_connection: Redis,
) -> None:
    held = await one_connection.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        with pytest.raises(ThrottleBusyError) as login:
            await _login(one_connection).reserve(_account(), "192.0.2.7")
        with pytest.raises(ThrottleBusyError):
            await _sign_ups(one_connection).reserve("192.0.2.7")
    finally:
        await one_connection.connection_pool.release(held)
    assert login.value.retry_after_seconds == 1
    # A connection free again: counted as before.
    await _login(one_connection).reserve(_account(), "192.0.2.7")


@pytest.fixture
async def refusing(infra: Infra) -> AsyncIterator[Redis]:
    """A client of a Redis user that may connect but may not run scripts (what a wrong ACL
    does; a read-only replica and an out-of-memory Redis refuse the same way: an error
    reply, not a lost connection)."""
    admin = Redis.from_url(infra.redis.url(REDIS_DB))
    user, password = f"no-scripts-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    await admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        categories=["+@all", "-@scripting"],
        commands=["-get"],
    )
    client = create_redis(
        f"redis://{user}:{password}@{infra.redis.host}:{infra.redis.port}/{REDIS_DB}"
    )
    try:
        yield client
    finally:
        await client.aclose()
        await admin.acl_deluser(user)
        await admin.aclose()


async def test_a_redis_that_refuses_the_script_fails_closed(refusing: Redis) -> None:
    with pytest.raises(ThrottleUnavailableError):
        await _login(refusing).reserve(_account(), "192.0.2.8")
    with pytest.raises(ThrottleUnavailableError):
        await _sign_ups(refusing).reserve("192.0.2.8")


async def test_the_ip_trust_cache_reads_postgresql_when_redis_refuses(
    infra: Infra, refusing: Redis
) -> None:
    cache = RedisTrustedIpCache(refusing, FixedClock())
    user, ip_hash = str(uuid.uuid4()), "ab" * 32
    admin = Redis.from_url(infra.redis.url(REDIS_DB))
    try:  # an entry is there: a None below can only be the refused read
        await admin.set(f"wallet:ip-trust:{user}:{ip_hash}", "4102444800", ex=60)
        assert await RedisTrustedIpCache(admin, FixedClock()).lookup(user, ip_hash) is not None
    finally:
        await admin.aclose()
    assert await cache.lookup(user, ip_hash) is None  # a miss, PostgreSQL decides: not fail-open


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_redis_that_stopped_answering_fails_open_for_every_caller(infra: Infra) -> None:
    """Review of 2026-12-05: behind a bounded pool, each call to a Redis that stopped answering
    held a connection for its 0.5 s timeout and the calls behind them were refused 429, in the
    outage that must lock nobody out. Once one call found it unreachable the next second's
    skip it (no connection tried), and a full pool just after is the outage's: waves of
    Logins and sign-ups, fifty each, through four connections, are all let through. The
    outage's clock is the test's (a stall of this process changes nothing)."""
    proxy = BlackholeProxy(infra.redis.port)
    await proxy.start()
    password = infra.redis.password
    auth = f":{password}@" if password else ""
    client = create_redis(f"redis://{auth}127.0.0.1:{proxy.port}/{REDIS_DB}", max_connections=4)
    clock = _Clock()
    outage = RedisOutage(skip_seconds=1.0, clock=clock)
    login, sign_ups = _login(client, outage), _sign_ups(client, outage)

    async def wave() -> None:
        calls = [login.reserve(_account(), "192.0.2.10") for _ in range(25)]
        calls += [sign_ups.reserve("192.0.2.10") for _ in range(25)]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        assert [a for a in answers if a is not None] == []

    try:
        await login.reserve(_account(), "192.0.2.10")  # answered: Redis is there
        proxy.blackhole()
        await wave()  # every connection hangs to its timeout; the rest fail open
        assert outage.skipping
        connections = proxy.connections
        await wave()  # within the second: nobody asks Redis
        assert proxy.connections == connections
        clock.now += 1.5  # past the skip, still recent: Redis is asked again
        await wave()
        assert outage.recent
    finally:
        await client.aclose()
        await proxy.close()


async def test_an_unreachable_redis_still_fails_open() -> None:
    client = create_redis(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        await _login(client).reserve(_account(), "192.0.2.9")
        await _sign_ups(client).reserve("192.0.2.9")
    finally:
        await client.aclose()
