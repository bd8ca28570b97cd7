"""Helpers for integration tests: a fresh set of roles and databases per test module.

async def test_something(databases: Provisioned) -> None:
    engine = create_engine(databases.auth_app_dsn)   # after running migrations with
    ...                                              # databases.auth_owner_dsn
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from vaultpay_common.redis import create_redis
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, deprovision, provision, unique_suffix


@pytest.fixture(scope="module")
def databases(infra: Infra) -> Iterator[Provisioned]:
    """`vaultpay_auth_m…` and `vaultpay_m…` with their owner/app roles, dropped after the module.

    Empty databases: each suite runs its own service's migrations with the owner DSN.
    """
    admin = infra.postgres.admin_dsn
    password = secrets.token_urlsafe(24)
    provisioned = provision(admin, suffix=unique_suffix("m"), password=password)
    try:
        yield provisioned
    finally:
        deprovision(admin, provisioned)


@pytest.fixture(scope="module")
def redis_url(infra: Infra) -> str:
    """URL of the session's Redis (database 0). Tests should use their own key prefixes."""
    return infra.redis.url(0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of `redis_url` (as the services make theirs), closed after the test."""
    client = create_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
