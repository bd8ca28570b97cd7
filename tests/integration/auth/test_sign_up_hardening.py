"""Register can no longer starve sign-in: it is throttled per client IP and globally before any
hashing, a taken email is refused before bcrypt runs, and bcrypt serves waiting sign-ins before
waiting sign-ups.

Its own auth server (not the shared one): a real bcrypt cost, so that hashes queue, and a small
per-IP sign-up limit. A Redis database no service uses, shared only with test_throttle_counters
(whose keys are unique per test); the stack starts without an earlier run's throttle counters.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from redis.asyncio import Redis

from tests.integration.auth.conftest import PASSWORD, AuthStack
from tests.integration.auth.stacks import as_gateway, own_auth_stack
from tests.support import rpc_failure
from vaultpay.auth.v1 import auth_pb2
from vaultpay_auth.adapters.throttle import RedisSignUpThrottle
from vaultpay_common.errors import RateLimitedError
from vaultpay_devstack.infra import Infra

REDIS_DB = 9  # unused by the services (auth 0, the vaultpay services 1)
PER_IP = 3
FLOOD = 50


# What auth's throttles keep in Redis (adapters/throttle.py): sign-up counters per address
# and overall (one-hour address windows), password-attempt counters and their markers.
STACK_KEYS = ("auth:sign-ups:*", "auth:pw-attempts:*")


async def _forget_earlier_runs(redis_url: str) -> None:
    """Deletes the throttle keys an earlier run's stack left in this database: on an external
    Redis they outlive the run (an address's sign-ups count for an hour), and an address this
    run picks again would start with their count. Only the stack's own key patterns go; the
    other module on this database (test_throttle_counters) keys every counter uniquely, so
    losing its leftovers costs it nothing."""
    redis = Redis.from_url(redis_url)
    try:
        for pattern in STACK_KEYS:
            stale = [key async for key in redis.scan_iter(match=pattern, count=1000)]
            if stale:
                await redis.unlink(*stale)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
async def stack(infra: Infra) -> AsyncIterator[AuthStack]:
    await _forget_earlier_runs(infra.redis.url(REDIS_DB))
    async with own_auth_stack(
        infra,
        "authsu",
        redis_db=REDIS_DB,
        # A cost at which a hash takes tens of milliseconds: enough for a queue to form.
        bcrypt_rounds=9,
        register_per_ip=PER_IP,
        register_global=100_000,
        bcrypt_max_waiting_sign_ups=FLOOD + 10,
    ) as started:
        yield started


def fresh_ip() -> str:
    return f"198.18.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def fresh_email(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


def register(
    stack: AuthStack, email: str, address: str
) -> grpc.aio.UnaryUnaryCall[auth_pb2.RegisterRequest, auth_pb2.RegisterResponse]:
    request = auth_pb2.RegisterRequest(email=email, password=PASSWORD, full_name="Sign Up")
    return stack.public.Register(request, metadata=as_gateway(stack, address), timeout=120)


async def test_register_is_throttled_per_client_ip_with_retry_info(stack: AuthStack) -> None:
    address, email = fresh_ip(), fresh_email()
    await register(stack, email, address)
    for _ in range(PER_IP - 1):  # attempts for a taken email count too (they probe for accounts)
        taken = await rpc_failure(register(stack, email, address))
        assert taken.reason == "EMAIL_ALREADY_REGISTERED"
    refused = await rpc_failure(register(stack, fresh_email(), address))
    assert (refused.code, refused.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert refused.retry_seconds is not None and refused.retry_seconds > 0
    await register(stack, fresh_email(), fresh_ip())  # another address is not affected


async def test_sign_up_throttle_is_also_global_across_addresses(infra: Infra) -> None:
    redis = Redis.from_url(infra.redis.url(REDIS_DB))
    throttle = RedisSignUpThrottle(
        redis,
        per_ip=100,
        per_ip_window_seconds=3600,
        global_limit=3,
        global_window_seconds=60,
        namespace=f"test-signup-{uuid.uuid4().hex}",
    )
    try:
        for n in range(3):
            await throttle.reserve(f"192.0.2.{n}")
        with pytest.raises(RateLimitedError) as refused:
            await throttle.reserve("192.0.2.200")
        assert refused.value.retry_after_seconds > 0
    finally:
        await redis.aclose()


async def test_a_refused_sign_up_does_not_use_up_its_address_quota(infra: Infra) -> None:
    redis = Redis.from_url(infra.redis.url(REDIS_DB))
    throttle = RedisSignUpThrottle(
        redis,
        per_ip=2,
        per_ip_window_seconds=3600,
        global_limit=1000,
        global_window_seconds=60,
        namespace=f"test-signup-{uuid.uuid4().hex}",
    )
    try:
        await throttle.reserve("192.0.2.7")
        await throttle.reserve("192.0.2.7")
        for _ in range(5):
            with pytest.raises(RateLimitedError):
                await throttle.reserve("192.0.2.7")
        counted = await redis.get(throttle.address_key("192.0.2.7"))
        assert int(counted or 0) == 2
    finally:
        await redis.aclose()


async def test_a_login_during_a_register_flood_finishes_before_most_of_it(
    stack: AuthStack,
) -> None:
    """Before: the login's bcrypt queued behind every sign-up hash and finished last."""
    email = fresh_email("signer")
    await register(stack, email, fresh_ip())
    finished: list[str] = []

    async def sign_up(n: int) -> None:
        await register(stack, fresh_email(f"flood{n}"), f"10.{n}.{secrets.randbelow(256)}.9")
        finished.append("register")

    flood = [asyncio.create_task(sign_up(n)) for n in range(FLOOD)]
    # Once the first sign-up is through, the others are waiting for bcrypt.
    done, _ = await asyncio.wait(flood, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    assert done, "no sign-up finished within 60 s"
    login = auth_pb2.LoginRequest(email=email, password=PASSWORD)
    await stack.public.Login(login, metadata=as_gateway(stack, fresh_ip()), timeout=120)
    finished.append("login")
    await asyncio.gather(*flood)
    after_login = len(finished) - finished.index("login") - 1
    assert after_login > FLOOD // 2, f"only {after_login} of {FLOOD} sign-ups finished later"
