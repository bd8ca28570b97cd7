"""An in-process auth server on a free port, on real PostgreSQL and Redis, with the real
interceptors, migrated by the real CLI. One per test module (fresh database)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned

PASSWORD = "correct horse 42 battery"
SERVICE_SECRET = "wallet-secret-0123456789abcdef"


@dataclass
class AuthStack:
    channel: grpc.aio.Channel
    env: dict[str, str]
    dbs: Provisioned
    admin_dsn: str
    port: int = 0  # where the server listens (0: not known to this stack)
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
        # In a thread: the event loop (auth's and the test's peers') keeps running meanwhile.
        result = await asyncio.to_thread(
            self.cli,
            "create-superadmin",
            "--email",
            email,
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        assert result.returncode == 0, result.stderr
        if role != "SUPER_ADMIN":
            from vaultpay_devstack.postgres import run_sql

            async def demote(conn: Any) -> None:
                await conn.execute("UPDATE users SET role = $1 WHERE email = $2", role, email)

            await asyncio.to_thread(
                run_sql,
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
    """A migrated auth service of the module's own, in process, behind no gateway."""
    from tests.integration.auth.stacks import own_auth_stack

    async with own_auth_stack(infra, "auth") as stack:
        yield stack
