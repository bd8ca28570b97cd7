"""The gateway's hardening on the running mesh: per-client rate limits, request caps, query
strings and duplicate keys on JSON body routes, no-store caching, the client address the
services record, the bearer scheme, Envoy's private admin interface and Retry-After.

Each client that needs an address of its own talks to the gateway from a loopback address of
its own (all of 127/8 reaches the local listener), as clients on other machines would.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import stat
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from tests.e2e.conftest import PASSWORD, Gateway, Reply
from tests.e2e.wallet_support import (
    approve_kyc,
    bearer,
    mailed_code,
    new_person,
    rid,
    staff_token,
    user_id_of,
)
from tests.support import rpc_failure
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from vaultpay.type.v1 import money_pb2
from vaultpay_common.grpc.request_context import CLIENT_IP_HEADER, GATEWAY_IDENTITY_HEADER
from vaultpay_devstack.mesh import Mesh

WRONG = "wrong password 42 x"
PIN = "2468"
CONFIRM_SUBJECT = "Confirm a new device or network"


def own_address() -> str:
    """A loopback address no other test uses (so no other test's budget is spent)."""
    return (
        f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(256)}.{secrets.randbelow(250) + 2}"
    )


def fresh_email(label: str = "hardening") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


class Client:
    """A JSON client bound to one source address."""

    def __init__(self, gateway: Gateway, address: str | None = None) -> None:
        parts = urlsplit(gateway.base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.address = address or own_address()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = {"content-type": "application/json"} if body is not None or raw else {}
        sent.update(headers or {})
        data = raw.encode() if raw is not None else None
        if body is not None:
            data = json.dumps(body).encode()
        connection = http.client.HTTPConnection(
            self.host, self.port, timeout=15, source_address=(self.address, 0)
        )
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            text = response.read().decode()
            status, got = response.status, dict(response.getheaders())
        finally:
            connection.close()
        try:
            parsed = json.loads(text) if text.strip() else {}
        except ValueError:
            parsed = {"text": text}
        return Reply(status, parsed, {k.lower(): v for k, v in got.items()})

    def register(self, email: str) -> Reply:
        body = {"email": email, "password": PASSWORD, "fullName": "E2E Hardening"}
        return self.call("POST", "/v1/auth/register", body)


@pytest.fixture(scope="module")
def admin(mesh: Mesh, gateway: Gateway) -> str:
    return staff_token(mesh, gateway, "ADMIN")


def _login_ips(gateway: Gateway, admin: str, user_id: str, action: str) -> list[str]:
    query = f"?action={action}&targetId={user_id}&pageSize=100"
    reply = gateway.call("GET", "/v1/admin/auth-audit-logs" + query, token=admin)
    assert reply.status == 200, reply.body
    return sorted(e["details"].get("ip", "") for e in reply.body.get("events", []))


# --- 2. per-client rate limits ---


def test_a_client_flooding_a_public_rpc_is_refused_while_another_gets_through(
    gateway: Gateway,
) -> None:
    """ConfirmIp has a budget per client address; the flood spends only the flooder's."""
    flooder, other = Client(gateway), Client(gateway)
    body = {"token": "not-a-real-confirmation-token"}
    deadline = time.monotonic() + 30
    refused: Reply | None = None
    sent = 0
    while refused is None and time.monotonic() < deadline and sent < 2000:
        reply = flooder.call("POST", "/v1/ip-trust:confirm", body)
        sent += 1
        if reply.status == 429:
            refused = reply

    assert refused is not None, f"no 429 after {sent} requests"
    assert refused.error_reason() == "RATE_LIMITED"
    assert refused.headers["retry-after"].isdigit()
    answered = other.call("POST", "/v1/ip-trust:confirm", body)
    assert answered.status != 429, answered.body
    assert 400 <= answered.status < 500


# --- 5. request line and headers ---


def test_an_overlong_request_line_and_oversized_headers_are_refused_at_the_edge(
    gateway: Gateway,
) -> None:
    client = Client(gateway)

    long_line = client.call("GET", "/v1/auth/jwks?" + "x" * 20_000)
    big_headers = client.call("GET", "/v1/auth/jwks", headers={"x-filler": "y" * 12_000})

    assert (long_line.status, long_line.error_reason()) in {
        (414, "URI_TOO_LONG"),
        (431, "HEADERS_TOO_LARGE"),
    }, long_line.body
    assert (big_headers.status, big_headers.error_reason()) == (431, "HEADERS_TOO_LARGE")
    for reply in (long_line, big_headers):
        assert "metadata" not in json.dumps(reply.body)
    line = client.call("GET", "/v1/admin/users?emailPrefix=" + "a" * 3_000)
    assert (line.status, line.error_reason()) == (414, "URI_TOO_LONG"), line.body


# --- 6. JSON body routes ---


def test_secrets_in_the_query_string_of_body_routes_are_refused(gateway: Gateway) -> None:
    client = Client(gateway)
    email = fresh_email()
    assert client.register(email).status == 200

    login = client.call("POST", f"/v1/auth/login?email={email}&password=x", {})
    refresh = client.call("POST", "/v1/auth/refresh?refreshToken=abc", {})

    assert (login.status, login.error_reason()) == (400, "QUERY_PARAMETER_NOT_ALLOWED")
    assert login.field_violations() == ["email", "password"]
    assert (refresh.status, refresh.error_reason()) == (400, "QUERY_PARAMETER_NOT_ALLOWED")
    assert refresh.field_violations() == ["refreshToken"]


def test_duplicate_keys_in_a_json_body_are_refused(gateway: Gateway) -> None:
    client = Client(gateway)
    first, second = fresh_email("first"), fresh_email("second")
    raw = json.dumps({"email": first, "password": PASSWORD, "fullName": "E2E"})[:-1]
    raw += f', "email": "{second}"}}'

    reply = client.call("POST", "/v1/auth/register", raw=raw)

    assert (reply.status, reply.error_reason()) == (400, "DUPLICATE_FIELD"), reply.body
    assert reply.field_violations() == ["email"]
    for email in (first, second):  # neither account was made
        assert (
            client.call("POST", "/v1/auth/login", {"email": email, "password": PASSWORD}).status
            == 401
        )


# --- 7. caching ---


def test_token_and_personal_replies_must_not_be_stored(gateway: Gateway) -> None:
    client = Client(gateway)
    email = fresh_email()
    registered = client.register(email)
    login = client.call("POST", "/v1/auth/login", {"email": email, "password": PASSWORD})
    tokens = login.body["tokens"]
    refreshed = client.call("POST", "/v1/auth/refresh", {"refreshToken": tokens["refreshToken"]})
    me = client.call(
        "GET", "/v1/auth/me", headers={"authorization": f"Bearer {tokens['accessToken']}"}
    )

    for reply in (registered, login, refreshed, me):
        assert reply.status == 200, reply.body
        assert reply.headers["cache-control"] == "no-store"
    docs = client.call("GET", "/docs/swagger-ui.css")
    assert docs.headers["cache-control"] == "public, max-age=3600"


# --- 9. the client address the services record ---


async def test_services_take_the_client_address_only_from_the_gateway(
    mesh: Mesh, gateway: Gateway, admin: str
) -> None:
    client = Client(gateway)
    email = fresh_email()
    assert client.register(email).status == 200
    forged = {CLIENT_IP_HEADER: "203.0.113.50", GATEWAY_IDENTITY_HEADER: "forged-identity"}

    through_gateway = client.call(
        "POST", "/v1/auth/login", {"email": email, "password": PASSWORD}, headers=forged
    )
    async with grpc.aio.insecure_channel(mesh.grpc_address("auth")) as channel:
        direct = await auth_pb2_grpc.AuthServiceStub(channel).Login(
            auth_pb2.LoginRequest(email=email, password=PASSWORD),
            metadata=tuple(forged.items()),
        )

    assert through_gateway.status == 200, through_gateway.body
    assert direct.tokens.access_token
    user_id = user_id_of(str(through_gateway.body["tokens"]["accessToken"]))
    # The gateway vouches for the address it saw; a direct caller is its own peer address.
    assert _login_ips(gateway, admin, user_id, "user.login") == sorted(
        [client.address, "127.0.0.1"]
    )


def _gateway_secrets(mesh: Mesh) -> dict[str, str]:
    """Each service's own gateway secret, as the mesh gives it."""
    return {
        service: mesh.env_for(service)[f"{service.upper()}_GATEWAY_SECRET"]
        for service in ("auth", "wallet", "transfer", "kyc")
    }


async def test_a_peer_services_gateway_secret_names_no_client_address_at_auth(
    mesh: Mesh, gateway: Gateway, admin: str
) -> None:
    """Review of 2026-12-05: every service held the one gateway secret, so a service taken
    over (the kyc process) could log in at auth naming any client address: the per-address
    login throttle and the audit judged an address of its choosing. Each service has its own
    now; at auth, kyc's, wallet's and transfer's vouch for nothing."""
    own = _gateway_secrets(mesh)
    distinct = len(set(own.values()))  # the count alone: a failure prints no secret
    assert distinct == 4, "the mesh gives services the same gateway secret"
    email = fresh_email()
    assert Client(gateway).register(email).status == 200
    login = auth_pb2.LoginRequest(email=email, password=PASSWORD)

    async with grpc.aio.insecure_channel(mesh.grpc_address("auth")) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        for peer in ("kyc", "wallet", "transfer"):
            metadata = ((GATEWAY_IDENTITY_HEADER, own[peer]), (CLIENT_IP_HEADER, "203.0.113.51"))
            await stub.Login(login, metadata=metadata, timeout=30)
        metadata = ((GATEWAY_IDENTITY_HEADER, own["auth"]), (CLIENT_IP_HEADER, "203.0.113.52"))
        reply = await stub.Login(login, metadata=metadata, timeout=30)

    user_id = user_id_of(reply.tokens.access_token)
    # The peers' calls are recorded under their own address; auth's own secret still vouches.
    assert _login_ips(gateway, admin, user_id, "user.login") == sorted(
        ["127.0.0.1"] * 3 + ["203.0.113.52"]
    )


async def test_kycs_gateway_secret_cannot_send_money_from_a_trusted_address_at_transfer(
    mesh: Mesh, gateway: Gateway
) -> None:
    """The heart of the same review: a taken-over kyc calls transfer's SendMoney with a user's
    token (one it saw go by), its own gateway secret and the address the user confirmed, and so
    passes wallet's IP trust. transfer believes only its own secret: the call is judged from
    kyc's address, which the user never confirmed, and refused IP_NOT_TRUSTED; with transfer's
    secret (what the gateway sends) the same call goes through."""
    own = _gateway_secrets(mesh)
    alice, bob = new_person(gateway, pin=PIN), new_person(gateway)
    await approve_kyc(mesh, alice, bob)
    home = own_address()
    topped = gateway.call(
        "POST",
        "/v1/transactions:topUp",
        {
            "requestId": rid(),
            "amount": {"currencyCode": "INR", "amountMinor": "10000"},
            "paymentMethod": "PAYMENT_METHOD_UPI",
            "paymentReference": f"upi-{uuid.uuid4().hex[:20]}",
        },
        token=alice.token,
        source=home,
    )
    assert topped.status == 200, topped.body
    send = {
        "recipientWalletId": bob.wallet_id,
        "amount": {"currencyCode": "INR", "amountMinor": "100"},
        "pin": PIN,
    }
    first = gateway.call(
        "POST",
        "/v1/transactions:send",
        {**send, "requestId": rid()},
        token=alice.token,
        source=home,
    )
    assert (first.status, first.error_reason()) == (400, "IP_NOT_TRUSTED"), first.body
    code = mailed_code(mesh, alice.email, CONFIRM_SUBJECT)
    confirmed = gateway.call("POST", "/v1/ip-trust:confirm", {"requestId": rid(), "token": code})
    assert confirmed.status == 200, confirmed.body

    def request() -> transfer_pb2.SendMoneyRequest:
        return transfer_pb2.SendMoneyRequest(
            request_id=rid(),
            recipient_wallet_id=bob.wallet_id,
            amount=money_pb2.Money(currency_code="INR", amount_minor=100),
            pin=PIN,
        )

    async with grpc.aio.insecure_channel(mesh.grpc_address("transfer")) as channel:
        stub = transfer_pb2_grpc.TransferServiceStub(channel)

        def as_gateway(secret: str) -> tuple[tuple[str, str], ...]:
            return (
                *bearer(alice.token),
                (GATEWAY_IDENTITY_HEADER, secret),
                (CLIENT_IP_HEADER, home),
            )

        refused = await rpc_failure(
            stub.SendMoney(request(), metadata=as_gateway(own["kyc"]), timeout=30)
        )
        sent = await stub.SendMoney(request(), metadata=as_gateway(own["transfer"]), timeout=30)

    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IP_NOT_TRUSTED",
    ), refused
    assert sent.transaction.amount.amount_minor == 100


# --- 10. the bearer scheme ---


def test_the_bearer_scheme_is_case_insensitive(gateway: Gateway) -> None:
    token = gateway.user_token()

    for scheme in ("bearer", "BEARER"):
        reply = gateway.call("GET", "/v1/auth/me", headers={"authorization": f"{scheme} {token}"})
        assert reply.status == 200, (scheme, reply.body)


# --- 11. Envoy's admin interface ---


def test_envoys_admin_interface_is_a_private_unix_socket(mesh: Mesh) -> None:
    admin = mesh.envoy_admin_socket

    assert stat.S_ISSOCK(admin.stat().st_mode)
    assert stat.S_IMODE(admin.stat().st_mode) == 0o600
    assert stat.S_IMODE(admin.parent.stat().st_mode) == 0o700
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        probe.connect(("127.0.0.1", mesh.config.admin_port))
        probe.sendall(b"POST /quitquitquit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        answer = probe.recv(200)
    assert answer.startswith(b"HTTP/1.1 404"), answer
    ready = http.client.HTTPConnection("127.0.0.1", mesh.config.admin_port, timeout=5)
    try:
        ready.request("GET", "/ready")
        assert ready.getresponse().status == 200
    finally:
        ready.close()
    assert mesh.envoy is not None and mesh.envoy.exited() is None


# --- 12. Retry-After ---


def test_a_services_throttle_comes_with_retry_after(gateway: Gateway) -> None:
    client = Client(gateway)
    email = fresh_email("throttled")
    assert client.register(email).status == 200

    refused: Reply | None = None
    for _ in range(30):
        reply = client.call("POST", "/v1/auth/login", {"email": email, "password": WRONG})
        if reply.status == 429:
            refused = reply
            break
        assert reply.status == 401, reply.body

    assert refused is not None, "auth never throttled the guesses"
    assert refused.error_reason() == "RATE_LIMITED"
    retry = next(
        d["retryDelay"] for d in refused.body["details"] if d["@type"].endswith("RetryInfo")
    )
    seconds = float(retry.removesuffix("s"))
    assert refused.headers["retry-after"] == str(max(1, -int(-seconds // 1)))
