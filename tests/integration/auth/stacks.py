"""An auth server of a test module's own: fresh roles (with passwords) and database, migrated by
the real CLI, real interceptors on a free port, and the settings the module needs.

    @pytest.fixture(scope="module")
    async def stack(infra: Infra) -> AsyncIterator[AuthStack]:
        async with own_auth_stack(infra, "authsu", redis_db=9, bcrypt_rounds=9) as started:
            yield started

    await stack.public.Login(request, metadata=as_gateway(stack, "198.51.100.7"))

The services take a client address only from the gateway, which proves itself with a shared
secret; `as_gateway` sends both, as Envoy does.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from tests.integration.auth.conftest import SERVICE_SECRET, AuthStack
from vaultpay_auth.entrypoints.server import build_host
from vaultpay_auth.settings import AuthSettings
from vaultpay_common.grpc.request_context import CLIENT_IP_HEADER, GATEWAY_IDENTITY_HEADER
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import deprovision, provision, unique_suffix

__all__ = ["as_gateway", "own_auth_stack"]


def as_gateway(stack: AuthStack, client_ip: str) -> tuple[tuple[str, str], ...]:
    """Metadata of a call the gateway forwards for a client at `client_ip`."""
    return (
        (GATEWAY_IDENTITY_HEADER, stack.env["AUTH_GATEWAY_SECRET"]),
        (CLIENT_IP_HEADER, client_ip),
    )


@asynccontextmanager
async def own_auth_stack(
    infra: Infra, label: str, *, redis_db: int = 0, **settings: Any
) -> AsyncIterator[AuthStack]:
    """`settings` override AuthSettings fields (bcrypt_rounds defaults to 4, as elsewhere)."""
    dbs = provision(
        infra.postgres.admin_dsn, suffix=unique_suffix(label), password=secrets.token_urlsafe(24)
    )
    try:
        env = {
            "AUTH_GRPC_ADDRESS": "127.0.0.1:0",
            "AUTH_DATABASE_URL": dbs.auth_app_dsn,
            "AUTH_MIGRATION_DATABASE_URL": dbs.auth_owner_dsn,
            "AUTH_DATABASE_APP_ROLE": dbs.auth_app_role,
            "AUTH_REDIS_URL": infra.redis.url(redis_db),
            "AUTH_KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "AUTH_SERVICE_CLIENTS": f"wallet:{SERVICE_SECRET}",
            "AUTH_BCRYPT_ROUNDS": str(settings.get("bcrypt_rounds", 4)),
            "AUTH_GATEWAY_SECRET": secrets.token_urlsafe(32),
            "AUTH_KEY_RELOAD_SECONDS": "1",
        }
        migrated = subprocess.run(
            [sys.executable, "-m", "vaultpay_auth.entrypoints.cli", "migrate"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        chosen: dict[str, Any] = {
            "grpc_address": "127.0.0.1:0",
            "database_url": env["AUTH_DATABASE_URL"],
            "database_app_role": dbs.auth_app_role,
            "redis_url": env["AUTH_REDIS_URL"],
            "key_encryption_key": env["AUTH_KEY_ENCRYPTION_KEY"],
            "service_clients": env["AUTH_SERVICE_CLIENTS"],
            "gateway_secret": env["AUTH_GATEWAY_SECRET"],
            "bcrypt_rounds": 4,
            "key_reload_seconds": 1.0,
            "shutdown_grace_seconds": 1.0,
            # Every stack of the session counts sign-ups from 127.0.0.1 in the same Redis
            # keys: the production budget (100 an hour) is the whole session's, and a module
            # that registers one more user refused another module's. Tests of the throttle
            # set their own.
            "register_per_ip": 100_000,
            **settings,
        }
        host = await build_host(AuthSettings(**chosen))
        port = await host.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield AuthStack(channel, env, dbs, infra.postgres.admin_dsn, port)
        finally:
            await channel.close()
            await host.stop()
    finally:
        deprovision(infra.postgres.admin_dsn, dbs)
