"""Revocation reaches the other services within a second, through the gateway: wallet answers
its strict RPCs from auth's revocation feed kept in memory (no IntrospectToken per call), and a
logged-out token is refused there within one second of the logout's answer."""

from __future__ import annotations

import json
import time

from tests.e2e.conftest import Gateway, Reply
from tests.e2e.wallet_support import Person, new_person, rid
from vaultpay_devstack.mesh import Mesh

BOUND = 1.0  # the services' default revocation_max_staleness_seconds
UNFREEZE = "/v1/wallets/me:unfreeze"  # WalletService.UnfreezeMyWallet: strict in wallet.proto


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


def test_wallet_answers_strict_rpcs_from_a_live_feed(mesh: Mesh) -> None:
    news = _feed_news(mesh, "wallet")
    assert news, "wallet never reported its revocation feed"
    assert news[-1].startswith("revocation feed is live"), news


def test_a_logged_out_token_is_refused_by_a_wallet_strict_rpc_within_a_second(
    gateway: Gateway,
) -> None:
    person = new_person(gateway)
    accepted = _unfreeze(gateway, person)
    assert accepted.status != 401, accepted.body  # an active wallet: OK or a domain refusal
    logout = person.call(gateway, "POST", "/v1/auth/logout", {})
    assert logout.status == 200, logout.body
    logged_out_at = time.monotonic()
    while (reply := _unfreeze(gateway, person)).status != 401:
        assert reply.status != 500, reply.body
        assert time.monotonic() - logged_out_at < BOUND, "wallet still honours the token"
        time.sleep(0.02)
    took = time.monotonic() - logged_out_at
    assert reply.error_reason() == "TOKEN_REVOKED", reply.body
    assert took < BOUND
