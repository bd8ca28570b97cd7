"""Existing servers named by URL (`VAULTPAY_POSTGRES_ADMIN_URL`, `VAULTPAY_REDIS_URL`): a URL the
runner cannot use is a one-line startup error that never repeats it (it carries a password);
it used to be a ValueError whose traceback printed the whole URL (review of 2026-12-04)."""

from __future__ import annotations

import pytest

from vaultpay_devstack.postgres import connect_postgres
from vaultpay_devstack.procs import StartupError
from vaultpay_devstack.redis import connect_redis


@pytest.mark.parametrize(
    "url", ["mysql://root:sekret@db.example:3306/app", "postgresql://root:sekret@/postgres"]
)
def test_an_unusable_postgres_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(StartupError) as refused:
        connect_postgres(url)
    assert "VAULTPAY_POSTGRES_ADMIN_URL" in str(refused.value)
    assert "sekret" not in str(refused.value)


@pytest.mark.parametrize("url", ["rediss://:sekret@cache.example:6380/0", "redis://:sekret@/0"])
def test_an_unusable_redis_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(StartupError) as refused:
        connect_redis(url)
    assert "VAULTPAY_REDIS_URL" in str(refused.value)
    assert "sekret" not in str(refused.value)
