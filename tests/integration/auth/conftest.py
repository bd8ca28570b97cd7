"""An in-process auth server on a free port, on real PostgreSQL and Redis, with the real
interceptors, migrated by the real CLI. One per test module (fresh database)."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_auth.entrypoints.server import build_host
from vaultpay_auth.settings import AuthSettings
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, deprovision, provision, unique_suffix

PASSWORD = "correct horse 42 battery"
SERVICE_SECRET = "wallet-secret-0123456789abcdef"


@dataclass
class AuthStack:
    channel: grpc.aio.Channel
    env: dict[str, str]
    dbs: Provisioned
    admin_dsn: str
    public: auth_pb2_grpc.AuthServiceStub = field(init=False)
    admin: auth_pb2_grpc.AuthAdminServiceStub = field(init=False)
    internal: auth_pb2_grpc.AuthInternalServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.public = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.admin = auth_pb2_grpc.AuthAdminServiceStub(self.channel)
        self.internal = auth_pb2_grpc.AuthInternalServiceStub(self.channel)

    def cli(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vaultpay_auth.entrypoints.cli", *args],
            env={**os.environ, **self.env, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    async def register(self, email: str | None = None, password: str = PASSWORD) -> auth_pb2.User:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        reply: auth_pb2.RegisterResponse = await self.public.Register(
            auth_pb2.RegisterRequest(email=email, password=password, full_name="Test User")
        )
        return reply.user

    async def login(self, email: str, password: str = PASSWORD) -> auth_pb2.TokenPair:
        reply: auth_pb2.LoginResponse = await self.public.Login(
            auth_pb2.LoginRequest(email=email, password=password)
        )
        return reply.tokens

    async def user_with_token(self) -> tuple[auth_pb2.User, auth_pb2.TokenPair]:
        user = await self.register()
        return user, await self.login(user.email)

    async def staff(self, role: str) -> tuple[auth_pb2.User, auth_pb2.TokenPair]:
        """A user of the given role, made through the CLI and direct SQL as an operator would."""
        email = f"{role.lower()}-{uuid.uuid4().hex[:10]}@example.com"
        result = self.cli(
            "create-superadmin", "--email", email, "--password-stdin", stdin=PASSWORD + "\n"
        )
        assert result.returncode == 0, result.stderr
        if role != "SUPER_ADMIN":
            from vaultpay_devstack.postgres import run_sql

            async def demote(conn: Any) -> None:
                await conn.execute("UPDATE users SET role = $1 WHERE email = $2", role, email)

            run_sql(
                self.dbs.url(self.dbs.auth_owner_role, self.dbs.auth_database, driver="postgresql"),
                demote,
            )
        tokens = await self.login(email)
        me = await self.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens))
        return me.user, tokens


def bearer(tokens: auth_pb2.TokenPair | str) -> tuple[tuple[str, str], ...]:
    token = tokens if isinstance(tokens, str) else tokens.access_token
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
async def auth(infra: Infra) -> AsyncIterator[AuthStack]:
    dbs = provision(
        infra.postgres.admin_dsn, suffix=unique_suffix("auth"), password=secrets.token_urlsafe(24)
    )
    env = {
        "VAULTPAY_PROFILE": "test",
        "AUTH_GRPC_ADDRESS": "127.0.0.1:0",
        "AUTH_DATABASE_URL": dbs.auth_app_dsn,
        "AUTH_MIGRATION_DATABASE_URL": dbs.auth_owner_dsn,
        "AUTH_DATABASE_APP_ROLE": dbs.auth_app_role,
        "AUTH_REDIS_URL": infra.redis.url(0),
        "AUTH_KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "AUTH_SERVICE_CLIENTS": f"wallet:{SERVICE_SECRET}",
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_KEY_RELOAD_SECONDS": "1",
    }
    stack_env = dict(env)
    migrated = subprocess.run(
        [sys.executable, "-m", "vaultpay_auth.entrypoints.cli", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    settings = AuthSettings(
        grpc_address="127.0.0.1:0",
        database_url=env["AUTH_DATABASE_URL"],
        redis_url=env["AUTH_REDIS_URL"],
        key_encryption_key=env["AUTH_KEY_ENCRYPTION_KEY"],
        service_clients=env["AUTH_SERVICE_CLIENTS"],
        bcrypt_rounds=4,
        key_reload_seconds=1.0,
        shutdown_grace_seconds=1.0,
    )
    host = await build_host(settings)
    port = await host.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield AuthStack(channel, stack_env, dbs, infra.postgres.admin_dsn)
    finally:
        await channel.close()
        await host.stop()
        deprovision(infra.postgres.admin_dsn, dbs)
