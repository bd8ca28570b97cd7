"""Session fixtures for every suite: the data stores and the whole mesh, each started lazily.

`infra` starts a private PostgreSQL and Redis once per test session (durability off), or uses
the servers named by VAULTPAY_POSTGRES_ADMIN_URL / VAULTPAY_REDIS_URL. `mesh` starts everything
`make run` starts, on free ports in a scratch var dir, only when an e2e test asks for it.
Unit tests request neither and pay nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, MutableMapping

import pytest

from vaultpay_devstack.infra import Infra, scratch_dir, start_infra
from vaultpay_devstack.mesh import Mesh, MeshConfig
from vaultpay_devstack.postgres import unique_suffix

pytest_plugins = ["tests.watchdog"]

# What the suite reads from the shell: where an existing PostgreSQL/Redis is, the watchdog's
# limit, the bank test's length and seed. Every other service setting a shell may hold (the
# README's `eval "$(… cli env auth)"` exports a running mesh's: its audit checkpoint folders,
# peer addresses, SMTP sink) would reach the settings and CLIs the tests build, pointing them
# at the developer's mesh: its checkpoints read with a test's key (a test failed) or written
# with one (the mesh's next start found its audit "forged").
SUITE_SETTINGS = ("VAULTPAY_POSTGRES_ADMIN_URL", "VAULTPAY_REDIS_URL", "VAULTPAY_TEST_TIME_LIMIT")
SERVICE_PREFIXES = ("AUTH_", "WALLET_", "TRANSFER_", "KYC_", "VAULTPAY_")


def shell_service_settings(environ: MutableMapping[str, str]) -> list[str]:
    """The variables of `environ` the suite must not inherit."""
    return sorted(
        name
        for name in environ
        if name.startswith(SERVICE_PREFIXES)
        and name not in SUITE_SETTINGS
        and not name.startswith("VAULTPAY_BANK_TEST_")
    )


def pytest_configure(config: pytest.Config) -> None:
    """Drops the shell's service settings before any test or fixture reads the environment."""
    dropped = shell_service_settings(os.environ)
    for name in dropped:
        del os.environ[name]
    if dropped:
        print(f"tests ignore these settings of the shell: {', '.join(dropped)}")


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """PostgreSQL + Redis for the whole session; stopped (and their files removed) at the end."""
    settings = MeshConfig.from_env(profile="test")
    var_dir = scratch_dir("vaultpay-infra-")
    try:
        started = start_infra(
            var_dir,
            fast=True,
            postgres_admin_url=settings.postgres_admin_url,
            redis_url=settings.redis_url,
        )
    except BaseException:
        shutil.rmtree(var_dir, ignore_errors=True)  # a failed start leaves no scratch behind
        raise
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mesh(infra: Infra) -> Iterator[Mesh]:
    """The whole mesh (services, Envoy, SMTP sink) on free ports, for e2e tests.

    It shares the session's PostgreSQL under its own role and database names (dropped at the
    end) and runs its own Redis, so integration tests and the mesh never see each other's data.
    """
    settings = MeshConfig.from_env(profile="test")
    var_dir = scratch_dir("vaultpay-mesh-")
    config = MeshConfig.for_tests(
        var_dir,
        postgres_admin_url=infra.postgres.admin_dsn,
        redis_url=settings.redis_url,
        database_suffix=unique_suffix("e2e"),
        drop_databases_on_stop=True,
    )
    try:
        with Mesh(config) as running:
            yield running
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
