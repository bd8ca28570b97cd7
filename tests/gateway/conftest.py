"""Fixtures for the gateway tests: the descriptor set, the auth double and a running gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import (
    GatewayUnderTest,
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from vaultpay_devstack.protogen import generate_descriptor_set
from vaultpay_gateway import HostPort, JwtSettings

ALLOWED_ORIGIN = "https://app.vaultpay.test"
MAX_REQUEST_BYTES = 4096
JWKS_CACHE_SECONDS = 2


@pytest.fixture(scope="session")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("descriptor") / "vaultpay.binpb"
    generate_descriptor_set(path)
    return path


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey()


@pytest.fixture(scope="session")
def auth_double(signing_key: SigningKey) -> Iterator[ThreadedAuthDouble]:
    double = ThreadedAuthDouble([signing_key])
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
    signing_key: SigningKey,
) -> Iterator[GatewayUnderTest]:
    workdir = tmp_path_factory.mktemp("gateway")
    settings = loopback_settings(
        workdir,
        descriptor_set,
        {"auth": HostPort("127.0.0.1", auth_double.port)},
        cors_origins=(ALLOWED_ORIGIN,),
        max_request_bytes=MAX_REQUEST_BYTES,
        jwt=JwtSettings(jwks_cache_seconds=JWKS_CACHE_SECONDS),
    )
    running = start_gateway(workdir, settings)
    try:
        running.wait_until_token_accepted(signing_key.token())
        yield running
    finally:
        running.stop()
