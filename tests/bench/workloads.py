"""The benchmark's users and wallets, and the workloads on the two paths.

Workloads: GetJwks (the baseline: public, in-memory, through the same interceptors as every
RPC), auth's GetMe (strict: JWT check + IntrospectToken database lookup) and Login (bcrypt at
auth's cost), and the wallet's GetBalance and GetMyWallet (JWT check + one wallet read;
GetMyWallet adds the limits and asks transfer for usage) and VerifyPin (bcrypt at the wallet's
PIN cost, between two short transactions). Paths: direct gRPC to the service's port (grpc.aio,
one channel per few workers, each its own connection) and Envoy JSON (HTTP/1.1 keep-alive, one
connection per worker).

VerifyPin always sends the right PIN (three wrong ones would freeze the wallet) and pins each
worker to one user (worker i -> user i mod users); the runner registers at least as many users
as VerifyPin workers, so no wallet has two checks in flight. (The PIN rule reserves one of the
3 attempts per check in flight and refuses a 4th with PIN_LOCKED until one settles.)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc

from tests.bench.httpclient import HttpConnection, encode_request
from tests.bench.load import Call
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc

__all__ = [
    "BASELINE",
    "GETBALANCE",
    "GETME",
    "GETMYWALLET",
    "LOGIN",
    "PIN",
    "SERVICE_OF",
    "VERIFYPIN",
    "WALLET_WORKLOADS",
    "WORKLOADS",
    "GrpcTarget",
    "HttpTarget",
    "Session",
    "Target",
    "UserPool",
]

BASELINE = "GetJwks (baseline)"
GETME = "GetMe"
LOGIN = "Login"
GETBALANCE = "GetBalance"
GETMYWALLET = "GetMyWallet"
VERIFYPIN = "VerifyPin"
WORKLOADS = (BASELINE, GETME, LOGIN, GETBALANCE, GETMYWALLET, VERIFYPIN)
SERVICE_OF = {
    BASELINE: "auth",
    GETME: "auth",
    LOGIN: "auth",
    GETBALANCE: "wallet",
    GETMYWALLET: "wallet",
    VERIFYPIN: "wallet",
}
WALLET_WORKLOADS = frozenset(w for w, s in SERVICE_OF.items() if s == "wallet")

PASSWORD = "bench horse 42 battery staple"
PIN = "4821"  # not a repeat, run or deny-listed PIN
WORKERS_PER_CHANNEL = 4
# Access tokens live 15 minutes; log in again before a cell once they are this old.
TOKEN_MAX_AGE_S = 10 * 60

T = TypeVar("T")


def grpc_channel(address: str) -> Any:
    """A grpc.aio channel with its own subchannel pool, so each channel is its own connection."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _request_id() -> str:
    return str(uuid.uuid4())


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
    """Pre-registered users with pre-issued access tokens (and, once opened, wallets with a PIN),
    handed out round-robin (reads) or one per worker (VerifyPin)."""

    address: str
    emails: list[str]
    tokens: list[str] = field(default_factory=list)
    wallet_ids: list[str] = field(default_factory=list)
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

    async def open_wallets(self, wallet_address: str, *, parallel: int) -> None:
        """Creates every user's wallet and sets its PIN, through gRPC (SetPin runs bcrypt at
        the wallet's PIN cost, so this takes users x hash time / cores)."""
        channel = grpc_channel(wallet_address)
        try:
            stub = wallet_pb2_grpc.WalletServiceStub(channel)

            async def open_one(index: int) -> str:
                auth = self.metadata(index)
                created = await stub.CreateWallet(
                    wallet_pb2.CreateWalletRequest(
                        request_id=_request_id(), display_name=f"Bench User {index}"
                    ),
                    metadata=auth,
                    timeout=120,
                )
                await stub.SetPin(
                    wallet_pb2.SetPinRequest(
                        request_id=_request_id(), pin=PIN, pin_confirmation=PIN
                    ),
                    metadata=auth,
                    timeout=120,
                )
                return str(created.wallet.wallet_id)

            self.wallet_ids = await _bounded(range(len(self.emails)), parallel, open_one)
        finally:
            await channel.close()

    async def ensure_fresh_tokens(self, *, parallel: int) -> bool:
        """Logs everyone in again when the tokens are close to expiry; True if it did."""
        if time.monotonic() - self.issued_at < TOKEN_MAX_AGE_S:
            return False
        await self.login_all(parallel=parallel)
        return True

    def metadata(self, index: int) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[index]}"),)

    def next_index(self) -> int:
        return next(self._next) % len(self.emails)

    def user_of_worker(self, worker: int) -> int:
        """The one user a VerifyPin worker always acts as."""
        return worker % len(self.emails)


@dataclass
class Session:
    """One cell's connections and the function its workers call; `close` after the cell."""

    call: Call
    close: Callable[[], Awaitable[None]]


class Target(Protocol):
    """One path to the services: `open` a session per cell, `check` once before the cells."""

    path: str

    async def open(self, workload: str, concurrency: int) -> Session: ...

    async def check(self, workloads: Collection[str]) -> list[str]: ...


class GrpcTarget:
    """Direct gRPC to each service's port."""

    path = "gRPC"

    def __init__(self, addresses: dict[str, str], users: UserPool) -> None:
        self.addresses = addresses
        self.users = users

    async def _channels(self, service: str, count: int) -> list[Any]:
        channels = [grpc_channel(self.addresses[service]) for _ in range(count)]
        for channel in channels:
            await channel.channel_ready()
        return channels

    async def open(self, workload: str, concurrency: int) -> Session:
        service = SERVICE_OF[workload]
        count = max(1, -(-concurrency // WORKERS_PER_CHANNEL))
        channels = await self._channels(service, count)
        make = (
            auth_pb2_grpc.AuthServiceStub
            if service == "auth"
            else wallet_pb2_grpc.WalletServiceStub
        )
        stubs = [make(c) for c in channels]

        def stub(worker: int) -> Any:
            return stubs[worker // WORKERS_PER_CHANNEL % len(stubs)]

        async def close() -> None:
            await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)

        return Session(self._call(workload, stub), close)

    def _call(self, workload: str, stub: Callable[[int], Any]) -> Call:
        users = self.users
        metadata = [users.metadata(i) for i in range(len(users.tokens))]
        if workload == BASELINE:
            jwks_request = auth_pb2.GetJwksRequest()

            async def jwks(worker: int) -> None:
                await stub(worker).GetJwks(jwks_request)

            return jwks
        if workload == GETME:
            me_request = auth_pb2.GetMeRequest()

            async def me(worker: int) -> None:
                await stub(worker).GetMe(me_request, metadata=metadata[users.next_index()])

            return me
        if workload == LOGIN:
            logins = [auth_pb2.LoginRequest(email=e, password=PASSWORD) for e in users.emails]

            async def login(worker: int) -> None:
                await stub(worker).Login(logins[users.next_index()])

            return login
        if workload == GETBALANCE:
            balance_request = wallet_pb2.GetBalanceRequest()

            async def balance(worker: int) -> None:
                await stub(worker).GetBalance(
                    balance_request, metadata=metadata[users.next_index()]
                )

            return balance
        if workload == GETMYWALLET:
            wallet_request = wallet_pb2.GetMyWalletRequest()

            async def my_wallet(worker: int) -> None:
                await stub(worker).GetMyWallet(
                    wallet_request, metadata=metadata[users.next_index()]
                )

            return my_wallet
        if workload == VERIFYPIN:

            async def verify(worker: int) -> None:
                request = wallet_pb2.VerifyPinRequest(request_id=_request_id(), pin=PIN)
                await stub(worker).VerifyPin(
                    request, metadata=metadata[users.user_of_worker(worker)]
                )

            return verify
        raise KeyError(workload)

    async def check(self, workloads: Collection[str]) -> list[str]:
        """One call of each workload, checking the replies; returns what looked wrong."""
        problems: list[str] = []
        users = self.users
        auth_channels = await self._channels("auth", 1)
        wallet_channels = (
            await self._channels("wallet", 1) if WALLET_WORKLOADS & set(workloads) else []
        )
        try:
            stub = auth_pb2_grpc.AuthServiceStub(auth_channels[0])
            jwks = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=30)
            if not jwks.keys:
                problems.append("gRPC GetJwks returned no keys")
            if GETME in workloads:
                me = await stub.GetMe(
                    auth_pb2.GetMeRequest(), metadata=users.metadata(0), timeout=30
                )
                if me.user.email != users.emails[0]:
                    problems.append(f"gRPC GetMe returned {me.user.email!r}")
            if LOGIN in workloads:
                login = await stub.Login(
                    auth_pb2.LoginRequest(email=users.emails[0], password=PASSWORD), timeout=60
                )
                if not login.tokens.access_token:
                    problems.append("gRPC Login returned no access token")
            if wallet_channels:
                problems += await self._check_wallet(wallet_channels[0], workloads)
        except grpc.aio.AioRpcError as exc:
            problems.append(f"gRPC check failed: {exc.code().name} {exc.details()}")
        finally:
            await asyncio.gather(
                *(c.close() for c in [*auth_channels, *wallet_channels]), return_exceptions=True
            )
        return problems

    async def _check_wallet(self, channel: Any, workloads: Collection[str]) -> list[str]:
        problems: list[str] = []
        users = self.users
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        if GETBALANCE in workloads:
            balance = await stub.GetBalance(
                wallet_pb2.GetBalanceRequest(), metadata=users.metadata(0), timeout=30
            )
            if balance.wallet_id != users.wallet_ids[0]:
                problems.append(f"gRPC GetBalance returned wallet {balance.wallet_id!r}")
        if GETMYWALLET in workloads:
            mine = await stub.GetMyWallet(
                wallet_pb2.GetMyWalletRequest(), metadata=users.metadata(0), timeout=30
            )
            if mine.wallet.wallet_id != users.wallet_ids[0] or not mine.limits:
                problems.append(f"gRPC GetMyWallet returned {mine.wallet.wallet_id!r}")
        if VERIFYPIN in workloads:
            await stub.VerifyPin(
                wallet_pb2.VerifyPinRequest(request_id=_request_id(), pin=PIN),
                metadata=users.metadata(0),
                timeout=60,
            )
        return problems


class HttpTarget:
    """Envoy's JSON API over HTTP/1.1 keep-alive, one connection per worker."""

    path = "Envoy JSON"

    def __init__(self, host: str, port: int, users: UserPool) -> None:
        self.host = host
        self.port = port
        self.users = users
        self._authority = f"{host}:{port}"

    def _get(self, path: str, token: str | None = None) -> bytes:
        headers = None if token is None else {"Authorization": f"Bearer {token}"}
        return encode_request("GET", path, host=self._authority, headers=headers)

    def _post(self, path: str, body: dict[str, str], token: str | None = None) -> bytes:
        headers = None if token is None else {"Authorization": f"Bearer {token}"}
        data = json.dumps(body).encode()
        return encode_request("POST", path, host=self._authority, headers=headers, body=data)

    def _per_user_get(self, path: str) -> list[bytes]:
        return [self._get(path, token) for token in self.users.tokens]

    def _login_requests(self) -> list[bytes]:
        return [
            self._post("/v1/auth/login", {"email": email, "password": PASSWORD})
            for email in self.users.emails
        ]

    def _verify_request(self, user: int) -> bytes:
        body = {"requestId": _request_id(), "pin": PIN}
        return self._post("/v1/wallets/me/pin:verify", body, self.users.tokens[user])

    async def open(self, workload: str, concurrency: int) -> Session:
        connections = [HttpConnection(self.host, self.port) for _ in range(concurrency)]

        async def close() -> None:
            await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)

        return Session(self._call(workload, connections), close)

    def _call(self, workload: str, connections: list[HttpConnection]) -> Call:
        users = self.users
        if workload == BASELINE:
            jwks_request = self._get("/v1/auth/jwks")

            async def jwks(worker: int) -> None:
                await connections[worker].request(jwks_request)

            return jwks
        if workload == VERIFYPIN:

            async def verify(worker: int) -> None:
                raw = self._verify_request(users.user_of_worker(worker))
                await connections[worker].request(raw)

            return verify
        gets = {
            GETME: "/v1/auth/me",
            GETBALANCE: "/v1/wallets/me/balance",
            GETMYWALLET: "/v1/wallets/me",
        }
        if workload == LOGIN:
            requests = self._login_requests()
        elif workload in gets:
            requests = self._per_user_get(gets[workload])
        else:
            raise KeyError(workload)

        async def one(worker: int) -> None:
            await connections[worker].request(requests[users.next_index()])

        return one

    async def check(self, workloads: Collection[str]) -> list[str]:
        """One request of each workload, checking the JSON replies; returns what looked wrong."""
        problems: list[str] = []
        users = self.users
        connection = HttpConnection(self.host, self.port)

        async def fetch(raw: bytes) -> Any:
            return json.loads((await connection.request(raw)).body)

        try:
            jwks = await fetch(self._get("/v1/auth/jwks"))
            if not jwks.get("keys"):
                problems.append(f"GET /v1/auth/jwks returned {jwks!r}")
            if GETME in workloads:
                me = await fetch(self._get("/v1/auth/me", users.tokens[0]))
                if me.get("user", {}).get("email") != users.emails[0]:
                    problems.append(f"GET /v1/auth/me returned {me!r}")
            if LOGIN in workloads:
                login = await fetch(self._login_requests()[0])
                if not login.get("tokens", {}).get("accessToken"):
                    problems.append(f"POST /v1/auth/login returned {login!r}")
            if GETBALANCE in workloads:
                balance = await fetch(self._get("/v1/wallets/me/balance", users.tokens[0]))
                if balance.get("walletId") != users.wallet_ids[0]:
                    problems.append(f"GET /v1/wallets/me/balance returned {balance!r}")
            if GETMYWALLET in workloads:
                mine = await fetch(self._get("/v1/wallets/me", users.tokens[0]))
                if mine.get("wallet", {}).get("walletId") != users.wallet_ids[0]:
                    problems.append(f"GET /v1/wallets/me returned {mine!r}")
            if VERIFYPIN in workloads:
                verified = await fetch(self._verify_request(0))
                if verified != {}:
                    problems.append(f"POST /v1/wallets/me/pin:verify returned {verified!r}")
        except Exception as exc:
            problems.append(f"Envoy JSON check failed: {exc}")
        finally:
            await connection.close()
        return problems
