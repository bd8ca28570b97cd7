"""Auth hardening end to end on the running mesh: auth keeps its own per-address sign-up quota
(RESOURCE_EXHAUSTED with a RetryInfo), and security events reach the audit trail that admins
read through the gateway at GET /v1/admin/auth-audit-logs, with the client address the gateway
saw (not one the client claims) and without clear emails.

Client addresses: each web client here talks to the gateway from a loopback address of its
own (127.x.y.z, all of which reach the local listener), as clients on other machines would.
"""

from __future__ import annotations

import http.client
import json
import secrets
import uuid
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from tests.e2e.conftest import PASSWORD, Gateway, Reply
from tests.e2e.wallet_support import staff_token, user_id_of
from tests.support import rpc_failure
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_common.grpc.request_context import CLIENT_IP_HEADER, GATEWAY_IDENTITY_HEADER
from vaultpay_devstack.mesh import Mesh

SIGN_UPS_PER_ADDRESS = 100  # AUTH_REGISTER_PER_IP's default
WRONG = "wrong password 99 x"


class Client:
    """A JSON client bound to one source address (what a browser on another machine is)."""

    def __init__(self, gateway: Gateway, address: str) -> None:
        parts = urlsplit(gateway.base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.address = address

    def call(self, method: str, path: str, body: Any = None, *, token: str = "") -> Reply:
        headers = {"content-type": "application/json"} if body is not None else {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        connection = http.client.HTTPConnection(
            self.host, self.port, timeout=15, source_address=(self.address, 0)
        )
        try:
            data = None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
            status, got = response.status, dict(response.getheaders())
        finally:
            connection.close()
        return Reply(
            status, json.loads(text) if text.strip() else {}, {k.lower(): v for k, v in got.items()}
        )

    def register(self, email: str) -> Reply:
        return self.call(
            "POST", "/v1/auth/register", {"email": email, "password": PASSWORD, "fullName": "E2E"}
        )

    def login(self, email: str, password: str = PASSWORD) -> Reply:
        return self.call("POST", "/v1/auth/login", {"email": email, "password": password})


def own_address() -> str:
    return (
        f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(256)}.{secrets.randbelow(250) + 2}"
    )


def fresh_email(label: str = "e2e") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture(scope="module")
def admin(mesh: Mesh, gateway: Gateway) -> str:
    return staff_token(mesh, gateway, "ADMIN")


def audit_events(gateway: Gateway, admin: str, action: str, target_id: str = "") -> list[Any]:
    query = f"?action={action}&pageSize=100" + (f"&targetId={target_id}" if target_id else "")
    reply = gateway.call("GET", "/v1/admin/auth-audit-logs" + query, token=admin)
    assert reply.status == 200, reply.body
    return list(reply.body.get("events", []))


async def test_auth_keeps_its_own_sign_up_quota_per_client_address(
    mesh: Mesh, gateway: Gateway, admin: str
) -> None:
    """The gateway's per-address budgets are per Envoy instance and per minute; auth's quota
    (Redis, shared by every replica) holds an address to 100 sign-up attempts an hour however
    many gateways it spreads over. Called as the gateway calls auth (its identity secret and
    the client address), straight at auth's port."""
    secret = mesh.env_for("auth").get("AUTH_GATEWAY_SECRET", "")
    assert secret, "the mesh gives auth no gateway secret (services.service_env always does)"
    address = f"198.18.{secrets.randbelow(256)}.{secrets.randbelow(250) + 2}"
    metadata = (
        (GATEWAY_IDENTITY_HEADER, secret),
        (CLIENT_IP_HEADER, address),
    )
    async with grpc.aio.insecure_channel(mesh.grpc_address("auth")) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        probe = auth_pb2.LoginRequest(email=fresh_email("probe"), password=WRONG)
        await rpc_failure(stub.Login(probe, metadata=metadata))
        seen = {e["details"].get("ip") for e in audit_events(gateway, admin, "user.login_failed")}
        # The regression this guards: auth ignoring the address the gateway vouched for. Then
        # every call would count against this machine's own address, which the other tests
        # sign up from, so stop here rather than exhaust it.
        assert address in seen, f"auth did not record the address the gateway named: {seen}"

        def register(email: str) -> Any:
            request = auth_pb2.RegisterRequest(email=email, password=PASSWORD, full_name="E2E")
            return stub.Register(request, metadata=metadata, timeout=30)

        email = fresh_email()
        await register(email)
        for _ in range(SIGN_UPS_PER_ADDRESS - 1):  # probing for taken emails counts too
            taken = await rpc_failure(register(email))
            assert taken.reason == "EMAIL_ALREADY_REGISTERED"
        refused = await rpc_failure(register(fresh_email()))
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
        )
        assert refused.retry_seconds is not None and refused.retry_seconds > 60
    # Another address, through the gateway as a web client, signs up as usual.
    assert Client(gateway, own_address()).register(fresh_email()).status == 200


def test_security_events_are_audited_through_the_gateway(
    mesh: Mesh, gateway: Gateway, admin: str
) -> None:
    client = Client(gateway, own_address())
    # The mesh always gives the gateway its identity secret, so the address the services see
    # is this client's own (127.x.y.z, never 127.0.0.1), not the gateway's own connection.
    assert mesh.env_for("auth").get("AUTH_GATEWAY_SECRET"), "the mesh set no gateway secret"
    address = client.address
    email = fresh_email("user")
    assert client.register(email).status == 200
    token = client.login(email).body["tokens"]["accessToken"]
    user_id = user_id_of(token)

    assert client.login(email, WRONG).status == 401
    [failed] = audit_events(gateway, admin, "user.login_failed", user_id)
    assert (failed["actorId"], failed["details"]["ip"]) == ("anonymous", address)
    assert email not in json.dumps(failed) and WRONG not in json.dumps(failed)

    assert client.call("POST", "/v1/auth/logout", {}, token=token).status == 200
    [logout] = audit_events(gateway, admin, "user.logout", user_id)
    assert (logout["actorId"], logout["details"]["ip"]) == (user_id, address)

    assert client.call("GET", f"/v1/admin/users/{user_id}", token=admin).status == 200
    [viewed] = audit_events(gateway, admin, "user.viewed", user_id)
    assert (viewed["actorId"], viewed["details"]["ip"]) == (user_id_of(admin), address)
    assert email not in json.dumps(viewed)


def test_a_client_cannot_choose_the_address_the_services_see(gateway: Gateway, admin: str) -> None:
    """Per-address throttles are only as good as the address: a header the client sends must
    not replace the one the gateway saw."""
    spoofed = "203.0.113.77"
    reply = gateway.call(
        "POST",
        "/v1/auth/login",
        {"email": fresh_email("spoof"), "password": WRONG},
        headers={"x-envoy-external-address": spoofed, "x-forwarded-for": spoofed},
    )
    assert reply.status == 401
    seen = {e["details"].get("ip") for e in audit_events(gateway, admin, "user.login_failed")}
    assert spoofed not in seen
