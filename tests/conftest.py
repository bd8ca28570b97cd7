"""Session fixtures for every suite: the data stores and the whole mesh, each started lazily.

`infra` starts a private PostgreSQL and Redis once per test session (durability off), or uses
the servers named by VAULTPAY_POSTGRES_ADMIN_URL / VAULTPAY_REDIS_URL. `mesh` starts everything
`make run` starts, on free ports in a scratch var dir, only when an e2e test asks for it.
Unit tests request neither and pay nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from vaultpay_devstack.infra import Infra, scratch_dir, start_infra
from vaultpay_devstack.mesh import Mesh, MeshConfig
from vaultpay_devstack.postgres import unique_suffix

pytest_plugins = ["tests.watchdog"]


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """PostgreSQL + Redis for the whole session; stopped (and their files removed) at the end."""
    settings = MeshConfig.from_env(profile="test")
    var_dir = scratch_dir("vaultpay-infra-")
    started = start_infra(
        var_dir,
        fast=True,
        postgres_admin_url=settings.postgres_admin_url,
        redis_url=settings.redis_url,
    )
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
