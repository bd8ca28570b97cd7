"""What the wallet end-to-end tests share: people with wallets, staff, mail, service identity."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from tests.e2e.conftest import PASSWORD, Gateway, Reply
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay.type.v1 import kyc_tier_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_devstack.mesh import Mesh
from vaultpay_devstack.postgres import run_sql
from vaultpay_devstack.smtp_sink import read_messages, wait_for_message

__all__ = [
    "Person",
    "approve_kyc",
    "bearer",
    "create_staff",
    "gateway_grpc_address",
    "mail_count",
    "mailed_code",
    "mails_to",
    "new_person",
    "rid",
    "service_token",
    "staff_token",
    "user_id_of",
]

_AUTH_CLI = (sys.executable, "-m", "vaultpay_auth.entrypoints.cli")
_CODE = re.compile(r"code: (?P<code>[A-Za-z0-9_-]{20,})")


def rid() -> str:
    """A fresh request id (AIP-155)."""
    return str(uuid.uuid4())


@dataclass
class Person:
    email: str
    token: str
    user_id: str
    wallet_id: str = ""

    def call(self, gateway: Gateway, method: str, path: str, body: Any = None) -> Reply:
        return gateway.call(method, path, body, token=self.token)


def new_person(gateway: Gateway, *, wallet: bool = True, pin: str | None = None) -> Person:
    email, registered = gateway.register()
    assert registered.status == 200, registered.body
    tokens = gateway.login(email)
    person = Person(email, str(tokens["accessToken"]), str(registered.body["user"]["userId"]))
    if wallet:
        created = person.call(
            gateway, "POST", "/v1/wallets", {"requestId": rid(), "displayName": "E2E Person"}
        )
        assert created.status == 200, created.body
        person.wallet_id = str(created.body["wallet"]["walletId"])
    if pin is not None:
        body = {"requestId": rid(), "pin": pin, "pinConfirmation": pin}
        set_pin = person.call(gateway, "POST", "/v1/wallets/me/pin", body)
        assert set_pin.status == 200, set_pin.body
    return person


def staff_token(mesh: Mesh, gateway: Gateway, role: str) -> str:
    """A token of a staff member with `role`, made the way an operator does (CLI + SQL)."""
    return str(gateway.login(create_staff(mesh, role))["accessToken"])


def create_staff(mesh: Mesh, role: str) -> str:
    """The email of a new staff member with `role` and the password PASSWORD: a super_admin
    from the operator CLI, then (for a lower role) set in auth's database."""
    email = f"{role.lower()}-{uuid.uuid4().hex[:10]}@example.com"
    env = {**os.environ, **mesh.env_for("auth", operator=True)}
    made = subprocess.run(
        [*_AUTH_CLI, "create-superadmin", "--email", email, "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    if role != "SUPER_ADMIN":
        dbs = mesh.databases
        assert dbs is not None

        async def demote(conn: Any) -> None:
            await conn.execute("UPDATE users SET role = $1 WHERE email = $2", role, email)

        run_sql(dbs.url(dbs.auth_owner_role, dbs.auth_database, driver="postgresql"), demote)
    return email


async def service_token(mesh: Mesh, client_id: str, *, to: str) -> str:
    """A service identity's token (client credentials) for calls to `to`, as a peer service
    holds it (a token is addressed to one service)."""
    secret = mesh.env_for(client_id)[f"{client_id.upper()}_SERVICE_CLIENT_SECRET"]
    async with grpc.aio.insecure_channel(mesh.grpc_address("auth")) as channel:
        reply = await auth_pb2_grpc.AuthInternalServiceStub(channel).IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(
                client_id=client_id, client_secret=secret, audience=to
            )
        )
    return str(reply.access_token)


def mailed_code(mesh: Mesh, to: str, subject_contains: str, *, after: int = 0) -> str:
    """The single-use code in the newest matching mail (read from the SMTP sink)."""
    mail = wait_for_message(
        mesh.maildir, to=to, subject_contains=subject_contains, after=after, timeout=15.0
    )
    body = mail.message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    found = _CODE.search(str(text))
    assert found, f"no code in the mail: {text!r}"
    return found.group("code")


def mail_count(mesh: Mesh) -> int:
    return len(read_messages(mesh.maildir))


def mails_to(mesh: Mesh, to: str, subject_contains: str) -> int:
    """How many mails to `to` whose subject contains `subject_contains` the sink holds."""
    return sum(
        1
        for mail in read_messages(mesh.maildir)
        if to.lower() in (r.lower() for r in mail.recipients) and subject_contains in mail.subject
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying `token`."""
    return (("authorization", f"Bearer {token}"),)


def gateway_grpc_address(mesh: Mesh) -> str:
    """Envoy's listener as a gRPC target (the same port serves JSON and native gRPC)."""
    return mesh.gateway_url.removeprefix("http://")


def user_id_of(token: str) -> str:
    """The `sub` claim of a user's access token (read, not verified: the services verify)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


async def approve_kyc(mesh: Mesh, *people: Person) -> None:
    """What kyc's approval does: wallet's SetKycTier(FULL) with the kyc service identity."""
    token = await service_token(mesh, "kyc", to="wallet")
    async with grpc.aio.insecure_channel(mesh.grpc_address("wallet")) as channel:
        stub = wallet_pb2_grpc.WalletInternalServiceStub(channel)
        for person in people:
            await stub.SetKycTier(
                wallet_pb2.SetKycTierRequest(
                    request_id=rid(), user_id=person.user_id, kyc_tier=kyc_tier_pb2.KYC_TIER_FULL
                ),
                metadata=bearer(token),
                timeout=10,
            )
