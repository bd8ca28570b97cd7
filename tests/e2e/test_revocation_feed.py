"""Revocation reaches the other services within a second, through the gateway: wallet and
transfer answer their strict RPCs (wallet's UnfreezeMyWallet, transfer's SendMoney) from auth's
revocation feed kept in memory (no IntrospectToken per call), and a logged-out token is refused
there within one second of the logout's answer.

Every RPC, not only the strict ones: after a logout, a deactivation or a demotion, the old token
is refused by the non-strict reads and writes of wallet, transfer and kyc (user and staff), and
an open WatchNotifications stream ends with UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import grpc
import pytest

from tests.e2e.conftest import Gateway, Reply
from tests.e2e.wallet_support import (
    Person,
    bearer,
    create_staff,
    gateway_grpc_address,
    new_person,
    rid,
    staff_token,
    user_id_of,
)
from tests.support import RpcFailure, rpc_failure
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_devstack.mesh import Mesh

BOUND = 1.0  # the services' default revocation_max_staleness_seconds
UNFREEZE = "/v1/wallets/me:unfreeze"  # WalletService.UnfreezeMyWallet: strict in wallet.proto
# How long a test waits for a refusal before it gives up (the bound is asserted only above).
PATIENCE = 10.0
# Non-strict RPCs of each service: (method, path, body).
USER_CALLS = [
    ("GET", "/v1/wallets/me", None),  # wallet GetMyWallet
    ("GET", "/v1/transactions", None),  # transfer ListTransactions
    ("GET", "/v1/kyc/status", None),  # kyc GetKycStatus
]
STAFF_READS = [
    ("GET", "/v1/admin/wallets", None),  # wallet AdminListWallets (moderator+)
    ("GET", "/v1/admin/limits", None),  # wallet AdminListLimits (admin+)
    ("GET", "/v1/admin/transactions", None),  # transfer AdminListTransactions
    ("GET", "/v1/admin/kyc", None),  # kyc AdminListKycSubmissions
]


def _unfreeze(gateway: Gateway, person: Person) -> Reply:
    return person.call(gateway, "POST", UNFREEZE, {"requestId": rid()})


def _feed_news(mesh: Mesh, service: str) -> list[str]:
    """What `service` logged about its revocation feed, oldest first."""
    news = []
    for line in (mesh.log_dir / f"{service}.log").read_text(errors="replace").splitlines():
        try:
            message = str(json.loads(line).get("msg", ""))
        except ValueError:
            continue
        if message.startswith("revocation feed"):
            news.append(message)
    return news


def _send(gateway: Gateway, person: Person) -> Reply:
    """transfer's SendMoney (strict): refused for the sender's missing PIN while the token
    stands, so nothing moves however often it is called."""
    body = {
        "requestId": rid(),
        "recipientWalletId": "VPY-ZZZZZZ",
        "amount": {"currencyCode": "INR", "amountMinor": "100"},
        "pin": "4829",
    }
    return person.call(gateway, "POST", "/v1/transactions:send", body)


# The strict RPC of each service that answers from the feed, and a call of it.
STRICT_CALLS: dict[str, Callable[[Gateway, Person], Reply]] = {
    "wallet": _unfreeze,
    "transfer": _send,
}


@pytest.mark.parametrize("service", sorted(STRICT_CALLS))
def test_each_service_answers_strict_rpcs_from_a_live_feed(mesh: Mesh, service: str) -> None:
    news = _feed_news(mesh, service)
    assert news, f"{service} never reported its revocation feed"
    assert news[-1].startswith("revocation feed is live"), news


@pytest.mark.parametrize("service", sorted(STRICT_CALLS))
def test_a_logged_out_token_is_refused_by_a_strict_rpc_within_a_second(
    gateway: Gateway, service: str
) -> None:
    strict_call = STRICT_CALLS[service]
    person = new_person(gateway)
    accepted = strict_call(gateway, person)
    assert accepted.status not in (401, 500), accepted.body  # OK or a domain refusal
    logout = person.call(gateway, "POST", "/v1/auth/logout", {})
    assert logout.status == 200, logout.body
    logged_out_at = time.monotonic()
    while (reply := strict_call(gateway, person)).status != 401:
        assert reply.status != 500, reply.body
        assert time.monotonic() - logged_out_at < BOUND, f"{service} still honours the token"
        time.sleep(0.05)
    took = time.monotonic() - logged_out_at
    assert reply.error_reason() == "TOKEN_REVOKED", reply.body
    assert took < BOUND


# ----- every RPC, not only the strict ones -------------------------------------------------------


def _refused(gateway: Gateway, token: str, method: str, path: str, body: object) -> Reply:
    """Calls until the gateway answers 401 (polling, with a deadline); returns that answer."""
    deadline = time.monotonic() + PATIENCE
    while (reply := gateway.call(method, path, body, token=token)).status != 401:
        assert reply.status != 500, reply.body
        assert time.monotonic() < deadline, f"{method} {path} still honours the token"
        time.sleep(0.05)
    return reply


def test_a_logged_out_token_is_refused_by_non_strict_rpcs_of_every_service(
    gateway: Gateway,
) -> None:
    person = new_person(gateway)
    for method, path, body in USER_CALLS:
        reply = gateway.call(method, path, body, token=person.token)
        assert reply.status == 200, (path, reply.body)
    logout = person.call(gateway, "POST", "/v1/auth/logout", {})
    assert logout.status == 200, logout.body
    for method, path, body in USER_CALLS:
        assert _refused(gateway, person.token, method, path, body).error_reason() == (
            "TOKEN_REVOKED"
        )
    # A state-changing non-strict RPC: a PIN set with the old token on a wallet that has none.
    pin = {"requestId": rid(), "pin": "482913", "pinConfirmation": "482913"}
    set_pin = _refused(gateway, person.token, "POST", "/v1/wallets/me/pin", pin)
    assert set_pin.error_reason() == "TOKEN_REVOKED"


def test_a_deactivated_users_token_is_refused_by_non_strict_rpcs(
    gateway: Gateway, mesh: Mesh
) -> None:
    admin = staff_token(mesh, gateway, "ADMIN")
    person = new_person(gateway)
    assert person.call(gateway, "GET", "/v1/wallets/me").status == 200
    deactivated = gateway.call(
        "POST",
        f"/v1/admin/users/{person.user_id}:deactivate",
        {"reason": "fraud review"},
        token=admin,
    )
    assert deactivated.status == 200, deactivated.body
    for method, path, body in [
        *USER_CALLS,
        ("POST", "/v1/wallets/me:freeze", {"requestId": rid()}),  # FreezeMyWallet
        ("POST", "/v1/wallets/me/pin:requestReset", {"requestId": rid()}),  # mails the user
    ]:
        reply = _refused(gateway, person.token, method, path, body)
        assert reply.error_reason() == "ACCOUNT_DISABLED", (path, reply.body)


def test_a_demoted_admins_token_is_refused_by_non_strict_staff_reads(
    gateway: Gateway, mesh: Mesh
) -> None:
    super_admin = staff_token(mesh, gateway, "SUPER_ADMIN")
    admin = str(gateway.login(create_staff(mesh, "ADMIN"))["accessToken"])
    for method, path, body in STAFF_READS:
        reply = gateway.call(method, path, body, token=admin)
        assert reply.status == 200, (path, reply.body)
    demoted = gateway.call(
        "POST",
        f"/v1/admin/users/{user_id_of(admin)}:setRole",
        {"role": "ROLE_USER", "reason": "moved to another team"},
        token=super_admin,
    )
    assert demoted.status == 200, demoted.body
    for method, path, body in STAFF_READS:
        reply = _refused(gateway, admin, method, path, body)
        assert reply.error_reason() == "TOKEN_REVOKED", (path, reply.body)


async def _watch_until_it_ends(
    mesh: Mesh, person: Person, end_session: Callable[[], None]
) -> RpcFailure:
    """Opens WatchNotifications through Envoy (native gRPC), waits for its first message, runs
    `end_session()`, and returns how the stream ended (with a deadline)."""
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        call = wallet_pb2_grpc.WalletServiceStub(channel).WatchNotifications(
            wallet_pb2.WatchNotificationsRequest(), metadata=bearer(person.token)
        )
        async with asyncio.timeout(PATIENCE):
            await call.read()  # the badge count: the stream is open
        await asyncio.to_thread(end_session)
        async with asyncio.timeout(PATIENCE):
            return await rpc_failure(call.read())


async def test_an_open_notification_stream_ends_when_its_session_is_logged_out(
    gateway: Gateway, mesh: Mesh
) -> None:
    person = new_person(gateway, wallet=False)

    def logout() -> None:
        assert person.call(gateway, "POST", "/v1/auth/logout", {}).status == 200

    ended = await _watch_until_it_ends(mesh, person, logout)
    assert (ended.code, ended.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


async def test_an_open_notification_stream_ends_when_its_user_is_deactivated(
    gateway: Gateway, mesh: Mesh
) -> None:
    admin = staff_token(mesh, gateway, "ADMIN")
    person = new_person(gateway, wallet=False)

    def deactivate() -> None:
        reply = gateway.call(
            "POST",
            f"/v1/admin/users/{person.user_id}:deactivate",
            {"reason": "fraud review"},
            token=admin,
        )
        assert reply.status == 200, reply.body

    ended = await _watch_until_it_ends(mesh, person, deactivate)
    assert (ended.code, ended.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ACCOUNT_DISABLED")


def test_a_deactivation_in_force_is_taken_over_by_a_higher_rank_and_refused_to_a_peer(
    gateway: Gateway, mesh: Mesh
) -> None:
    """DeactivateUser of a user already deactivated, through Envoy JSON: another admin is
    told 400 USER_ALREADY_DEACTIVATED (not 200 with their reason recorded nowhere), a
    super_admin takes the deactivation over, and an admin may no longer lift it."""
    first, second = (staff_token(mesh, gateway, "ADMIN") for _ in range(2))
    root = staff_token(mesh, gateway, "SUPER_ADMIN")
    person = new_person(gateway, wallet=False)
    path = f"/v1/admin/users/{person.user_id}"

    made = gateway.call("POST", f"{path}:deactivate", {"reason": "on leave"}, token=first)
    assert made.status == 200, made.body
    refused = gateway.call("POST", f"{path}:deactivate", {"reason": "spam"}, token=second)
    assert (refused.status, refused.error_reason()) == (400, "USER_ALREADY_DEACTIVATED")

    taken = gateway.call("POST", f"{path}:deactivate", {"reason": "fraud #9"}, token=root)
    assert taken.status == 200, taken.body
    lifted = gateway.call("POST", f"{path}:reactivate", {"reason": "back"}, token=first)
    assert (lifted.status, lifted.error_reason()) == (403, "DEACTIVATED_BY_HIGHER_RANK")
    back = gateway.call("POST", f"{path}:reactivate", {"reason": "cleared"}, token=root)
    assert back.status == 200, back.body
