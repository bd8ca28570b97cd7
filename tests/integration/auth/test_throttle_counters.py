"""The password-attempt throttle's counters in a real Redis: the first refusal of a window is
flagged once (it is what gets audited), and giving attempts back never goes below zero."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from vaultpay_auth.adapters.throttle import RedisLoginThrottle
from vaultpay_auth.domain.errors import LoginThrottledError
from vaultpay_devstack.infra import Infra

REDIS_DB = 9


@pytest.fixture
async def redis(infra: Infra) -> AsyncIterator[Redis]:
    client = Redis.from_url(infra.redis.url(REDIS_DB))
    try:
        yield client
    finally:
        await client.aclose()


def account() -> str:
    return f"acct-{uuid.uuid4().hex}@example.com"


def address() -> str:
    return f"192.0.2.{uuid.uuid4().int % 250 + 1}-{uuid.uuid4().hex[:6]}"


async def test_only_the_first_refusal_of_a_window_is_flagged(redis: Redis) -> None:
    throttle = RedisLoginThrottle(redis, per_account=2, per_ip=100, window_seconds=60)
    who = account()
    await throttle.reserve(who, address())
    await throttle.reserve(who, address())
    flags = []
    for _ in range(3):
        with pytest.raises(LoginThrottledError) as refused:
            await throttle.reserve(who, address())
        assert refused.value.scopes == ("account",)
        assert refused.value.retry_after_seconds > 0
        flags.append(refused.value.first_refusal)
    assert flags == [True, False, False]


async def test_an_address_over_its_limit_is_its_own_scope(redis: Redis) -> None:
    throttle = RedisLoginThrottle(redis, per_account=100, per_ip=1, window_seconds=60)
    where = address()
    await throttle.reserve(account(), where)
    with pytest.raises(LoginThrottledError) as refused:
        await throttle.reserve(account(), where)
    assert (refused.value.scopes, refused.value.first_refusal) == (("ip",), True)


async def test_released_attempts_do_not_count_and_never_go_below_zero(redis: Redis) -> None:
    throttle = RedisLoginThrottle(redis, per_account=1, per_ip=100, window_seconds=60)
    who, where = account(), address()
    await throttle.reserve(who, where)
    await throttle.release(who, where)
    await throttle.release(who, where)  # once too often: still zero, not minus one
    await throttle.succeeded(who, where)
    await throttle.reserve(who, where)  # the one allowed attempt is still there ...
    with pytest.raises(LoginThrottledError):
        await throttle.reserve(who, where)  # ... and only one


async def test_the_addresses_of_one_ipv6_64_share_a_count_and_another_64_does_not(
    redis: Redis,
) -> None:
    """One connection is given a /64 and may use a new address per request (review of
    2026-12-04, third): it is one client to the per-address limit."""
    throttle = RedisLoginThrottle(redis, per_account=100, per_ip=2, window_seconds=60)
    network = f"2001:db8:{uuid.uuid4().int % 65535:x}:{uuid.uuid4().int % 65535:x}"
    await throttle.reserve(account(), f"{network}::1")
    await throttle.reserve(account(), f"{network}:1:2:3:4")
    with pytest.raises(LoginThrottledError) as refused:
        await throttle.reserve(account(), f"{network}:ffff::9")
    assert refused.value.scopes == ("ip",)
    neighbour = f"2001:db8:{uuid.uuid4().int % 65535:x}:{uuid.uuid4().int % 65535:x}::1"
    await throttle.reserve(account(), neighbour)
