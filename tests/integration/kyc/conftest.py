"""An in-process kyc server on real PostgreSQL (migrated by the real `vaultpay-kyc migrate`)
and Redis, with the real interceptors, outbox relay and jobs. Callers are authenticated with a
local Ed25519 key instead of a running auth, whose GetUserRole (the owner's role for the
rank rule of reviews) a stand-in answers from the roles of the tokens it signed; wallet is a
small stand-in server that records what kyc asks of it. One stack per test module (fresh
database).

    async def test_x(kyc: KycStack) -> None:
        user = kyc.user_token(kyc.new_wallet_user())
        await kyc.public.SubmitKyc(request, metadata=bearer(user))
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay.kyc.v1 import kyc_pb2_grpc
from vaultpay.type.v1 import role_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.context import Role
from vaultpay_common.grpc.revocations import RevocationSet
from vaultpay_common.grpc.tokens import Introspection, TokenVerifier
from vaultpay_devstack.postgres import Provisioned
from vaultpay_kyc.entrypoints.bootstrap import build_host
from vaultpay_kyc.settings import KycSettings

ISSUER, AUDIENCE = "vaultpay-auth", "vaultpay"
BIG = 32 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", BIG),
    ("grpc.max_receive_message_length", BIG),
]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class LocalAuth:
    """Signs tokens like auth does and answers the strict path from what it signed."""

    def __init__(self, service: str = "kyc") -> None:
        self._service = service  # whose callers it authenticates
        self._key = Ed25519PrivateKey.generate()
        self._roles: dict[str, Role] = {}
        # Each user's role as auth's database has it (the last token signed for them).
        self.user_roles: dict[str, Role] = {}
        self.service_tokens: dict[str, str] = {}  # kyc's own, by the peer it calls
        self.verifier = TokenVerifier(self._jwks, issuer=ISSUER, audience=AUDIENCE, service=service)
        self.introspector = self
        self.identity = self
        # Established once, then stale, and empty: non-strict calls decide from the token
        # alone, strict ones ask `introspect`.
        self.revocations = RevocationSet(max_staleness=1.0, retention=3600.0)
        self.revocations.confirm(time.monotonic() - 2.0)

    async def _jwks(self) -> list[dict[str, str]]:
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA"}]

    def _sign(self, subject: str, typ: str, role: Role | None, *, aud: str = AUDIENCE) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": aud,
            "sub": subject,
            "jti": uuid.uuid4().hex,
            "typ": typ,
            "sid": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 600,
        }
        if role is not None:
            claims["role"] = role.claim
        token = jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": "k1"})
        if role is not None:
            self._roles[token] = role
        return token

    def user_token(self, user_id: str, role: Role = Role.USER) -> str:
        self.user_roles[user_id] = role
        return self._sign(user_id, "access", role)

    def peer_token(self, service: str, *, to: str = "") -> str:
        """Another service's identity, as it calls `to` (by default the service this stands
        in for: wallet asks kyc's GetKycStats)."""
        return self._sign(
            f"service:{service}", "service", None, aud=f"{AUDIENCE}:{to or self._service}"
        )

    def for_peer(self, peer: str) -> Callable[[], Awaitable[str]]:
        """kyc's own service identity for `peer` (what PeerAuth.identity gives), one token
        per peer (`service_tokens`)."""

        async def token() -> str:
            if peer not in self.service_tokens:
                self.service_tokens[peer] = self.peer_token(self._service, to=peer)
            return self.service_tokens[peer]

        return token

    async def introspect(self, token: str) -> Introspection:
        role = self._roles.get(token)
        return Introspection(active=role is not None, role=role, reason="TOKEN_REVOKED")


class AuthStandIn(auth_pb2_grpc.AuthInternalServiceServicer):
    """auth's GetUserRole: the role of a user `LocalAuth` signed a token for, and whether
    they are active (not in `deactivated`), NOT_FOUND for anyone else; `down` answers
    UNAVAILABLE, `without_state` answers the role alone (an auth older than `active`).
    `asked` records each user id asked about. It serves no GetUserContact: kyc has no
    business with a user's email or name."""

    def __init__(self, auth: LocalAuth) -> None:
        self._auth = auth
        self.down = False
        self.without_state = False
        self.deactivated: set[str] = set()
        self.asked: list[str] = []

    async def GetUserRole(
        self, request: auth_pb2.GetUserRoleRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetUserRoleResponse:
        self.asked.append(request.user_id)
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "auth is down")
        role = self._auth.user_roles.get(request.user_id)
        if role is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
            raise AssertionError("abort raises")
        reply = auth_pb2.GetUserRoleResponse(role=role_pb2.Role.ValueType(role.value))
        if not self.without_state:
            reply.active = request.user_id not in self.deactivated
        return reply


class WalletStandIn(
    wallet_pb2_grpc.WalletServiceServicer, wallet_pb2_grpc.WalletInternalServiceServicer
):
    """Answers GetBalance for users it knows; records SetKycTier and CreateNotification,
    applying each request_id once, as wallet does (SetKycTier: the same request again is
    replayed, another one under the same request_id is FAILED_PRECONDITION). `down` answers
    UNAVAILABLE, and so does SetKycTier for the submissions in `tier_unavailable_for`; for
    those in `tier_reply_lost_for` it applies the call, then answers UNAVAILABLE (a lost
    reply)."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.tiers: dict[str, int] = {}
        self.tier_calls: list[wallet_pb2.SetKycTierRequest] = []
        self.notifications: dict[str, wallet_pb2.CreateNotificationRequest] = {}
        self.seen_tokens: set[str] = set()
        self.down = False
        self.tier_unavailable_for: set[str] = set()
        self.tier_reply_lost_for: set[str] = set()
        self._tier_requests: dict[str, bytes] = {}

    def _enter(self, context: grpc.aio.ServicerContext) -> None:
        for item in context.invocation_metadata() or ():
            if item.key == "authorization":
                self.seen_tokens.add(str(item.value).removeprefix("Bearer "))

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.GetBalanceResponse:
        self._enter(context)
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "wallet is down")
        subject = _subject_of(context)
        if subject not in self.users:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no wallet")
        return wallet_pb2.GetBalanceResponse(wallet_id="VPY-ABC123")

    async def SetKycTier(
        self, request: wallet_pb2.SetKycTierRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.SetKycTierResponse:
        self._enter(context)
        if self.down or request.submission_id in self.tier_unavailable_for:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "wallet is down")
        bare = wallet_pb2.SetKycTierRequest()
        bare.CopyFrom(request)
        bare.ClearField("request_id")
        fingerprint = bare.SerializeToString(deterministic=True)
        stored = self._tier_requests.get(request.request_id)
        if stored is not None and stored != fingerprint:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
        if stored is None:  # new; a replay changes nothing
            self._tier_requests[request.request_id] = fingerprint
            self.tier_calls.append(request)
            self.tiers[request.user_id] = request.kyc_tier
        if request.submission_id in self.tier_reply_lost_for:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the reply was lost")
        return wallet_pb2.SetKycTierResponse()

    async def CreateNotification(
        self, request: wallet_pb2.CreateNotificationRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.CreateNotificationResponse:
        self._enter(context)
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "wallet is down")
        self.notifications.setdefault(request.request_id, request)
        return wallet_pb2.CreateNotificationResponse()

    def notes_for(self, user_id: str) -> list[wallet_pb2.CreateNotificationRequest]:
        return [n for n in self.notifications.values() if n.user_id == user_id]


def _subject_of(context: grpc.aio.ServicerContext) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == "authorization":
            token = str(item.value).removeprefix("Bearer ")
            return str(jwt.decode(token, options={"verify_signature": False})["sub"])
    return ""


@dataclass
class KycStack:
    channel: grpc.aio.Channel
    auth: LocalAuth
    wallet: WalletStandIn
    auth_peer: AuthStandIn
    settings: KycSettings
    env: dict[str, str]
    dbs: Provisioned
    public: kyc_pb2_grpc.KycServiceStub = field(init=False)
    admin: kyc_pb2_grpc.KycAdminServiceStub = field(init=False)
    internal: kyc_pb2_grpc.KycInternalServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.public = kyc_pb2_grpc.KycServiceStub(self.channel)
        self.admin = kyc_pb2_grpc.KycAdminServiceStub(self.channel)
        self.internal = kyc_pb2_grpc.KycInternalServiceStub(self.channel)

    def new_wallet_user(self) -> str:
        user_id = str(uuid.uuid4())
        self.wallet.users.add(user_id)
        return user_id

    def user(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """A fresh user with a wallet, and the metadata of their calls."""
        user_id = self.new_wallet_user()
        return user_id, bearer(self.auth.user_token(user_id))

    def staff(self, role: Role = Role.MODERATOR) -> tuple[str, tuple[tuple[str, str], ...]]:
        user_id = str(uuid.uuid4())
        return user_id, bearer(self.auth.user_token(user_id, role))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vaultpay_kyc.entrypoints.cli", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _env(
    dbs: Provisioned, redis_url: str, wallet_address: str, auth_address: str
) -> dict[str, str]:
    return {
        "KYC_DATABASE_URL": dbs.app_dsn("kyc"),
        "KYC_MIGRATION_DATABASE_URL": dbs.vaultpay_owner_dsn,
        "KYC_DATABASE_APP_ROLE": dbs.app_role("kyc"),
        "KYC_DATABASE_CHAIN_ROLES": json.dumps(dbs.chain_roles()),
        "KYC_REDIS_URL": redis_url,
        "KYC_KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "KYC_AUDIT_CHAIN_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "KYC_SERVICE_CLIENT_ID": "kyc",
        "KYC_SERVICE_CLIENT_SECRET": "unused-in-these-tests",
        "KYC_WALLET_ADDRESS": wallet_address,
        "KYC_AUTH_ADDRESS": auth_address,
        "KYC_GRPC_ADDRESS": "127.0.0.1:0",
        "KYC_ROTATION_BATCH_SIZE": "7",
        "KYC_ROTATION_RESUME_SECONDS": "3600",
        "KYC_OUTBOX_POLL_SECONDS": "0.2",
        "KYC_SHUTDOWN_GRACE_SECONDS": "0.5",
        "KYC_LOG_LEVEL": "WARNING",
    }


@pytest.fixture(scope="module")
async def kyc(databases: Provisioned, redis_url: str) -> AsyncIterator[KycStack]:
    auth = LocalAuth()
    auth_peer = AuthStandIn(auth)  # type: ignore[abstract]
    wallet = WalletStandIn()  # type: ignore[abstract]
    wallet_server = grpc.aio.server()
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(wallet, wallet_server)
    wallet_pb2_grpc.add_WalletInternalServiceServicer_to_server(wallet, wallet_server)
    auth_pb2_grpc.add_AuthInternalServiceServicer_to_server(auth_peer, wallet_server)
    peers = f"127.0.0.1:{wallet_server.add_insecure_port('127.0.0.1:0')}"
    await wallet_server.start()
    env = _env(databases, redis_url, peers, peers)
    migrated = subprocess.run(
        [sys.executable, "-m", "vaultpay_kyc.entrypoints.cli", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    fields: dict[str, Any] = {
        k.removeprefix("KYC_").lower(): v
        for k, v in env.items()
        if k != "KYC_DATABASE_CHAIN_ROLES"  # migrate's alone
    }
    settings = KycSettings(**fields)
    host = await build_host(settings, auth=auth)
    port = await host.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    try:
        yield KycStack(channel, auth, wallet, auth_peer, settings, env, databases)
    finally:
        await channel.close()
        await host.stop()
        await wallet_server.stop(0)
