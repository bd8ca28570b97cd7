"""The transfer bench's wallets: registered, KYC-approved, trusted from 127.0.0.1, funded.

Everything goes through the services, the way the product does it (nothing is written to
the database behind their backs):

* users are registered and logged in, their wallets created and their PINs set
  (`workloads.UserPool`: SetPin hashes at the wallet's PIN cost of the moment);
* KYC: wallet's internal SetKycTier(FULL) with the kyc service's identity, as kyc's
  approval does;
* limits: a super_admin made with `vaultpay-auth create-superadmin` raises the FULL tier's
  send and top-up defaults to the catalogue's maximum (UpdateSetting), so no limit binds;
* the client address: every bench request comes from 127.0.0.1 (directly, or as Envoy's
  downstream address); wallet's CheckIpTrust (transfer's identity) mails each user a code,
  which ConfirmIp redeems, as tests/e2e/test_transfer_through_gateway.py does;
* money: one TopUp per wallet, far more than a run can send away.

`Accounts` keeps the wallets in wallet-id order: the lock order of a transfer, so that the
service bench and pgbench (which numbers the wallets 1..n the same way) draw identical
sends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from tests.bench.workloads import PASSWORD, UserPool, grpc_channel
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from vaultpay.type.v1 import kyc_tier_pb2, money_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_devstack.mesh import Mesh
from vaultpay_devstack.smtp_sink import wait_for_message
from vaultpay_devstack.workspace import python_env

__all__ = [
    "CURRENCY",
    "LOOPBACK_CLIENT",
    "Account",
    "Accounts",
    "approve_kyc",
    "fund",
    "limit_settings",
    "raise_limits",
    "service_token",
    "trust_loopback",
    "user_id_of",
]

CURRENCY = "INR"
LOOPBACK_CLIENT = "127.0.0.1"
CONFIRM_SUBJECT = "Confirm a new device or network"
_CODE = re.compile(r"code: (?P<code>[A-Za-z0-9_-]{20,})")
_AUTH_CLI = "vaultpay_auth.entrypoints.cli"
# The catalogue's largest limit (settings_catalog._MAX_LIMIT_MINOR): nothing a run sends.
LIMIT_MINOR = 10**12


def _rid() -> str:
    return str(uuid.uuid4())


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def user_id_of(token: str) -> str:
    """The `sub` claim of an access token (read, not verified: the services verify)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


@dataclass(frozen=True)
class Account:
    """One bench wallet: its user in a pool (`index` into pool.emails/tokens)."""

    pool: UserPool
    index: int
    user_id: str
    wallet_id: str

    @property
    def email(self) -> str:
        return self.pool.emails[self.index]

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The user's current access token as call metadata (tokens are renewed in place)."""
        return self.pool.metadata(self.index)

    @property
    def token(self) -> str:
        return self.pool.tokens[self.index]


@dataclass(frozen=True)
class Accounts:
    """Wallets in wallet-id order (the lock order); the last one is the hot wallet."""

    all: tuple[Account, ...]

    @classmethod
    def of(cls, *pools: UserPool) -> Accounts:
        found = [
            Account(pool, i, user_id_of(pool.tokens[i]), pool.wallet_ids[i])
            for pool in pools
            for i in range(len(pool.emails))
        ]
        return cls(tuple(sorted(found, key=lambda a: a.wallet_id)))

    def __len__(self) -> int:
        return len(self.all)

    @property
    def wallet_ids(self) -> list[str]:
        return [a.wallet_id for a in self.all]

    @property
    def user_ids(self) -> list[str]:
        return [a.user_id for a in self.all]

    def sender(self, worker: int) -> Account:
        """The one wallet worker `worker` sends from (never the hot wallet)."""
        return self.all[worker % (len(self.all) - 1)]


async def service_token(mesh: Mesh, client_id: str, *, to: str) -> str:
    """A service identity's access token (client credentials) for calls to `to`, as that
    peer holds it."""
    secret = mesh.env_for(client_id)[f"{client_id.upper()}_SERVICE_CLIENT_SECRET"]
    channel = grpc_channel(mesh.grpc_address("auth"))
    try:
        reply = await auth_pb2_grpc.AuthInternalServiceStub(channel).IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(
                client_id=client_id, client_secret=secret, audience=to
            ),
            timeout=30,
        )
    finally:
        await channel.close()
    return str(reply.access_token)


async def _bounded(parallel: int, jobs: Sequence[Any]) -> list[Any]:
    gate = asyncio.Semaphore(parallel)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def approve_kyc(mesh: Mesh, accounts: Sequence[Account], *, parallel: int) -> None:
    """What kyc's approval does: SetKycTier(FULL) with the kyc service's identity."""
    token = await service_token(mesh, "kyc", to="wallet")
    channel = grpc_channel(mesh.grpc_address("wallet"))
    stub = wallet_pb2_grpc.WalletInternalServiceStub(channel)
    try:
        await _bounded(
            parallel,
            [
                stub.SetKycTier(
                    wallet_pb2.SetKycTierRequest(
                        request_id=_rid(),
                        user_id=a.user_id,
                        kyc_tier=kyc_tier_pb2.KYC_TIER_FULL,
                        submission_id=_rid(),
                    ),
                    metadata=_bearer(token),
                    timeout=60,
                )
                for a in accounts
            ],
        )
    finally:
        await channel.close()


def limit_settings() -> list[str]:
    """The FULL tier's send and top-up defaults the bench raises, widest window first: a tier's
    windows must stay in order (per transaction <= daily <= monthly) after every update."""
    return [
        f"limits.tier_full.{action}.{window}"
        for action in ("send", "top_up")
        for window in ("monthly", "daily", "per_transaction")
    ]


def _create_superadmin(mesh: Mesh, email: str) -> None:
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            _AUTH_CLI,
            "create-superadmin",
            "--email",
            email,
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        env=python_env(mesh.env_for("auth", operator=True)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if made.returncode != 0:
        raise RuntimeError(f"create-superadmin failed: {made.stderr.strip()[-300:]}")


async def raise_limits(mesh: Mesh, run_id: str) -> list[str]:
    """Staff raise the FULL tier's send and top-up limits (so none binds); returns the keys."""
    email = f"bench-root-{run_id}@example.com"
    await asyncio.to_thread(_create_superadmin, mesh, email)
    auth_channel = grpc_channel(mesh.grpc_address("auth"))
    wallet_channel = grpc_channel(mesh.grpc_address("wallet"))
    try:
        login = await auth_pb2_grpc.AuthServiceStub(auth_channel).Login(
            auth_pb2.LoginRequest(email=email, password=PASSWORD), timeout=60
        )
        staff = wallet_pb2_grpc.WalletAdminServiceStub(wallet_channel)
        keys = limit_settings()
        for key in keys:
            await staff.UpdateSetting(
                wallet_pb2.UpdateSettingRequest(
                    request_id=_rid(), key=key, value=str(LIMIT_MINOR), reason="transfer bench"
                ),
                metadata=_bearer(login.tokens.access_token),
                timeout=30,
            )
    finally:
        await asyncio.gather(auth_channel.close(), wallet_channel.close())
    return keys


def _mailed_code(mesh: Mesh, email: str) -> str:
    mail = wait_for_message(mesh.maildir, to=email, subject_contains=CONFIRM_SUBJECT, timeout=60)
    found = _CODE.search(mail.text)
    if found is None:
        raise RuntimeError(f"no confirmation code in the mail to {email}")
    return found.group("code")


async def trust_loopback(mesh: Mesh, accounts: Sequence[Account], *, parallel: int) -> int:
    """Each user confirms 127.0.0.1 the way a person does: the movement check (CheckIpTrust,
    transfer's identity) mails a code, ConfirmIp redeems it. Returns how many were already
    trusted."""
    token = await service_token(mesh, "transfer", to="wallet")
    channel = grpc_channel(mesh.grpc_address("wallet"))
    internal = wallet_pb2_grpc.WalletInternalServiceStub(channel)
    public = wallet_pb2_grpc.WalletServiceStub(channel)

    async def trust(account: Account) -> bool:
        check = await internal.CheckIpTrust(
            wallet_pb2.CheckIpTrustRequest(
                request_id=_rid(), user_id=account.user_id, client_ip=LOOPBACK_CLIENT
            ),
            metadata=_bearer(token),
            timeout=60,
        )
        if check.trusted:
            return True
        code = await asyncio.to_thread(_mailed_code, mesh, account.email)
        await public.ConfirmIp(
            wallet_pb2.ConfirmIpRequest(request_id=_rid(), token=code), timeout=60
        )
        return False

    try:
        already = await _bounded(parallel, [trust(a) for a in accounts])
    finally:
        await channel.close()
    return sum(already)


async def fund(
    mesh: Mesh, accounts: Sequence[Account], amount_minor: int, *, parallel: int
) -> None:
    """One TopUp per wallet (UPI, a fresh payment reference each)."""
    channel = grpc_channel(mesh.grpc_address("transfer"))
    stub = transfer_pb2_grpc.TransferServiceStub(channel)

    async def top_up(account: Account) -> None:
        await stub.TopUp(
            transfer_pb2.TopUpRequest(
                request_id=_rid(),
                amount=money_pb2.Money(currency_code=CURRENCY, amount_minor=amount_minor),
                payment_method=transfer_pb2.PAYMENT_METHOD_UPI,
                payment_reference=f"bench-{uuid.uuid4().hex[:24]}",
            ),
            metadata=account.metadata(),
            timeout=60,
        )

    try:
        await _bounded(parallel, [top_up(a) for a in accounts])
    finally:
        await channel.close()


async def ping_wallet(mesh: Mesh) -> None:
    """Waits until the wallet answers (after a restart)."""
    channel = grpc_channel(mesh.grpc_address("wallet"))
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
    except (TimeoutError, grpc.aio.AioRpcError) as exc:
        raise RuntimeError("the wallet did not come back") from exc
    finally:
        await channel.close()
