"""The benchmark's users and the three workloads on the two paths.

Workloads: GetJwks (the baseline: public, in-memory, through the same interceptors), GetMe
(strict: JWT check + IntrospectToken database lookup) and Login (bcrypt-bound). Paths: direct
gRPC to the auth port (grpc.aio, one channel per few workers, each its own connection) and
Envoy JSON (HTTP/1.1 keep-alive, one connection per worker).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc

from tests.bench.httpclient import HttpConnection, encode_request
from tests.bench.load import Call
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc

__all__ = [
    "BASELINE",
    "GETME",
    "LOGIN",
    "WORKLOADS",
    "GrpcTarget",
    "HttpTarget",
    "Target",
    "UserPool",
]

BASELINE = "GetJwks (baseline)"
GETME = "GetMe"
LOGIN = "Login"
WORKLOADS = (BASELINE, GETME, LOGIN)

PASSWORD = "bench horse 42 battery staple"
WORKERS_PER_CHANNEL = 4
# Access tokens live 15 minutes; log in again before a GetMe cell once they are this old.
TOKEN_MAX_AGE_S = 10 * 60

T = TypeVar("T")


def grpc_channel(address: str) -> Any:
    """A grpc.aio channel with its own subchannel pool, so each channel is its own connection."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


async def _bounded(
    items: Sequence[T], parallel: int, fn: Callable[[T], Awaitable[str]]
) -> list[str]:
    gate = asyncio.Semaphore(parallel)

    async def one(item: T) -> str:
        async with gate:
            return await fn(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


@dataclass
class UserPool:
    """Pre-registered users with pre-issued access tokens, handed out round-robin."""

    address: str
    emails: list[str]
    tokens: list[str] = field(default_factory=list)
    issued_at: float = 0.0
    _next: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    async def create(cls, address: str, count: int, run_id: str, *, parallel: int) -> UserPool:
        """Registers `count` users through gRPC and logs each one in."""
        channel = grpc_channel(address)
        try:
            stub = auth_pb2_grpc.AuthServiceStub(channel)

            async def register(index: int) -> str:
                email = f"bench-{run_id}-{index:04d}@example.com"
                request = auth_pb2.RegisterRequest(
                    email=email, password=PASSWORD, full_name=f"Bench User {index}"
                )
                await stub.Register(request, timeout=120)
                return email

            emails = await _bounded(range(count), parallel, register)
        finally:
            await channel.close()
        pool = cls(address, emails)
        await pool.login_all(parallel=parallel)
        return pool

    async def login_all(self, *, parallel: int) -> None:
        channel = grpc_channel(self.address)
        try:
            stub = auth_pb2_grpc.AuthServiceStub(channel)

            async def login(email: str) -> str:
                request = auth_pb2.LoginRequest(email=email, password=PASSWORD)
                reply = await stub.Login(request, timeout=120)
                return str(reply.tokens.access_token)

            self.tokens = await _bounded(self.emails, parallel, login)
            self.issued_at = time.monotonic()
        finally:
            await channel.close()

    async def ensure_fresh_tokens(self, *, parallel: int) -> bool:
        """Logs everyone in again when the tokens are close to expiry; True if it did."""
        if time.monotonic() - self.issued_at < TOKEN_MAX_AGE_S:
            return False
        await self.login_all(parallel=parallel)
        return True

    def next_index(self) -> int:
        return next(self._next) % len(self.emails)


class Target(Protocol):
    """One path to the auth service; `open` per cell, `call` per workload, `close` after."""

    path: str

    async def open(self, concurrency: int) -> None: ...

    def call(self, workload: str) -> Call: ...

    async def check(self) -> list[str]: ...

    async def close(self) -> None: ...


class GrpcTarget:
    """Direct gRPC to the auth port."""

    path = "gRPC"

    def __init__(self, address: str, users: UserPool) -> None:
        self.address = address
        self.users = users
        self._channels: list[Any] = []
        self._stubs: list[Any] = []

    async def open(self, concurrency: int) -> None:
        count = max(1, -(-concurrency // WORKERS_PER_CHANNEL))
        self._channels = [grpc_channel(self.address) for _ in range(count)]
        for channel in self._channels:
            await channel.channel_ready()
        self._stubs = [auth_pb2_grpc.AuthServiceStub(c) for c in self._channels]

    def _stub(self, worker: int) -> Any:
        return self._stubs[worker // WORKERS_PER_CHANNEL % len(self._stubs)]

    def call(self, workload: str) -> Call:
        users = self.users
        if workload == BASELINE:
            jwks_request = auth_pb2.GetJwksRequest()

            async def jwks(worker: int) -> None:
                await self._stub(worker).GetJwks(jwks_request)

            return jwks
        if workload == GETME:
            me_request = auth_pb2.GetMeRequest()
            metadata = [(("authorization", f"Bearer {t}"),) for t in users.tokens]

            async def me(worker: int) -> None:
                await self._stub(worker).GetMe(me_request, metadata=metadata[users.next_index()])

            return me
        if workload == LOGIN:
            logins = [auth_pb2.LoginRequest(email=e, password=PASSWORD) for e in users.emails]

            async def login(worker: int) -> None:
                await self._stub(worker).Login(logins[users.next_index()])

            return login
        raise KeyError(workload)

    async def check(self) -> list[str]:
        """One call of each workload, checking the replies; returns what looked wrong."""
        await self.open(1)
        problems: list[str] = []
        stub = self._stubs[0]
        try:
            jwks = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=30)
            if not jwks.keys:
                problems.append("gRPC GetJwks returned no keys")
            me = await stub.GetMe(
                auth_pb2.GetMeRequest(),
                metadata=(("authorization", f"Bearer {self.users.tokens[0]}"),),
                timeout=30,
            )
            if me.user.email != self.users.emails[0]:
                problems.append(f"gRPC GetMe returned {me.user.email!r}")
            login = await stub.Login(
                auth_pb2.LoginRequest(email=self.users.emails[0], password=PASSWORD), timeout=60
            )
            if not login.tokens.access_token:
                problems.append("gRPC Login returned no access token")
        except grpc.aio.AioRpcError as exc:
            problems.append(f"gRPC check failed: {exc.code().name} {exc.details()}")
        finally:
            await self.close()
        return problems

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, [], []
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


class HttpTarget:
    """Envoy's JSON API over HTTP/1.1 keep-alive, one connection per worker."""

    path = "Envoy JSON"

    def __init__(self, host: str, port: int, users: UserPool) -> None:
        self.host = host
        self.port = port
        self.users = users
        self._authority = f"{host}:{port}"
        self._connections: list[HttpConnection] = []

    async def open(self, concurrency: int) -> None:
        self._connections = [HttpConnection(self.host, self.port) for _ in range(concurrency)]

    def _jwks_request(self) -> bytes:
        return encode_request("GET", "/v1/auth/jwks", host=self._authority)

    def _me_requests(self) -> list[bytes]:
        return [
            encode_request(
                "GET",
                "/v1/auth/me",
                host=self._authority,
                headers={"Authorization": f"Bearer {token}"},
            )
            for token in self.users.tokens
        ]

    def _login_requests(self) -> list[bytes]:
        return [
            encode_request(
                "POST",
                "/v1/auth/login",
                host=self._authority,
                body=json.dumps({"email": email, "password": PASSWORD}).encode(),
            )
            for email in self.users.emails
        ]

    def call(self, workload: str) -> Call:
        users, connections = self.users, self._connections
        if workload == BASELINE:
            jwks_request = self._jwks_request()

            async def jwks(worker: int) -> None:
                await connections[worker].request(jwks_request)

            return jwks
        if workload in (GETME, LOGIN):
            requests = self._me_requests() if workload == GETME else self._login_requests()

            async def one(worker: int) -> None:
                await connections[worker].request(requests[users.next_index()])

            return one
        raise KeyError(workload)

    async def check(self) -> list[str]:
        """One request of each workload, checking the JSON replies; returns what looked wrong."""
        problems: list[str] = []
        connection = HttpConnection(self.host, self.port)
        try:
            jwks = json.loads((await connection.request(self._jwks_request())).body)
            if not jwks.get("keys"):
                problems.append(f"GET /v1/auth/jwks returned {jwks!r}")
            me = json.loads((await connection.request(self._me_requests()[0])).body)
            if me.get("user", {}).get("email") != self.users.emails[0]:
                problems.append(f"GET /v1/auth/me returned {me!r}")
            login = json.loads((await connection.request(self._login_requests()[0])).body)
            if not login.get("tokens", {}).get("accessToken"):
                problems.append(f"POST /v1/auth/login returned {login!r}")
        except Exception as exc:
            problems.append(f"Envoy JSON check failed: {exc}")
        finally:
            await connection.close()
        return problems

    async def close(self) -> None:
        connections, self._connections = self._connections, []
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
