"""IP trust end to end: the transfer service's check (native gRPC, service identity) mails a
code, the owner confirms it through the gateway (JSON), lists the address masked and revokes
it, and the check follows every step."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.e2e.conftest import Gateway
from tests.e2e.wallet_support import (
    Person,
    approve_kyc,
    bearer,
    mailed_code,
    mails_to,
    new_person,
    rid,
    service_token,
)
from vaultpay.type.v1 import kyc_tier_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.errors import DomainError
from vaultpay_devstack.mesh import Mesh
from vaultpay_devstack.smtp_sink import read_messages, wait_for_message
from vaultpay_transfer.adapters.wallet_peer import wallet_refusal

CONFIRM_SUBJECT = "Confirm a new device or network"
PIN_SUBJECT = "PIN reset"
MAILED_IP_ID = re.compile(r"\(id (?P<hash>[0-9a-f]{16})\)")
PUBLIC_HASH = re.compile(r"^[0-9a-f]{16}$")


class TransferService:
    """What the transfer service does before a money movement: ask wallet about the IP."""

    def __init__(self, stub: wallet_pb2_grpc.WalletInternalServiceStub, token: str) -> None:
        self._stub = stub
        self._token = token

    def internal(self) -> tuple[wallet_pb2_grpc.WalletInternalServiceStub, str]:
        """The stub and the service token, for calls of its own."""
        return self._stub, self._token

    async def check(
        self, person: Person, client_ip: str, request_id: str | None = None
    ) -> wallet_pb2.CheckIpTrustResponse:
        request = wallet_pb2.CheckIpTrustRequest(
            request_id=request_id or rid(), user_id=person.user_id, client_ip=client_ip
        )
        reply: wallet_pb2.CheckIpTrustResponse = await self._stub.CheckIpTrust(
            request, metadata=bearer(self._token), timeout=10
        )
        return reply


@pytest.fixture
async def transfer(mesh: Mesh) -> AsyncIterator[TransferService]:
    token = await service_token(mesh, "transfer", to="wallet")
    async with grpc.aio.insecure_channel(mesh.grpc_address("wallet")) as channel:
        yield TransferService(wallet_pb2_grpc.WalletInternalServiceStub(channel), token)


def _test_net_ip() -> str:
    """An address of TEST-NET-3 (RFC 5737), different per test run."""
    return f"203.0.113.{random.randint(1, 254)}"


def _mail_text(mesh: Mesh, to: str, subject: str) -> str:
    mail = wait_for_message(mesh.maildir, to=to, subject_contains=subject, timeout=15.0)
    return mail.text


async def test_an_unknown_ip_is_mailed_confirmed_listed_masked_and_revoked(
    gateway: Gateway, mesh: Mesh, transfer: TransferService
) -> None:
    person = new_person(gateway, pin="4821")
    ip = _test_net_ip()

    first_request = rid()
    first = await transfer.check(person, ip, first_request)
    assert (first.trusted, first.confirmation_sent) == (False, True)
    code = mailed_code(mesh, person.email, CONFIRM_SUBJECT)
    mailed_id = MAILED_IP_ID.search(_mail_text(mesh, person.email, CONFIRM_SUBJECT))
    assert mailed_id, "the mail names the address by its short hash"
    ip_hash = mailed_id.group("hash")
    assert ip not in _mail_text(mesh, person.email, CONFIRM_SUBJECT)

    # Within the 30-minute window: a retry of the same movement gives the same answer, a new
    # movement (from the same address, written IPv4-mapped) mails nothing more.
    retried = await transfer.check(person, ip, first_request)
    assert (retried.trusted, retried.confirmation_sent) == (False, True)
    again = await transfer.check(person, f"::ffff:{ip}")
    assert (again.trusted, again.confirmation_sent) == (False, False)
    # A mail queued after those checks arrives, so a second confirmation mail would have too.
    requested = person.call(
        gateway, "POST", "/v1/wallets/me/pin:requestReset", {"requestId": rid()}
    )
    assert requested.status == 200, requested.body
    wait_for_message(mesh.maildir, to=person.email, subject_contains=PIN_SUBJECT, timeout=15.0)
    assert mails_to(mesh, person.email, CONFIRM_SUBJECT) == 1

    confirmed = gateway.call("POST", "/v1/ip-trust:confirm", {"requestId": rid(), "token": code})
    assert confirmed.status == 200, confirmed.body
    assert confirmed.body["trustedIp"]["ipHash"] == ip_hash
    reused = gateway.call("POST", "/v1/ip-trust:confirm", {"requestId": rid(), "token": code})
    assert reused.status == 400, reused.body
    assert reused.error_reason() == "IP_CONFIRMATION_TOKEN_INVALID"

    trusted = await transfer.check(person, ip)
    assert (trusted.trusted, trusted.confirmation_sent) == (True, False)

    listed = person.call(gateway, "GET", "/v1/ip-trust")
    assert listed.status == 200, listed.body
    assert [t["ipHash"] for t in listed.body["trustedIps"]] == [ip_hash]
    assert PUBLIC_HASH.match(ip_hash)
    assert ip not in json.dumps(listed.body), "the address itself is never shown"
    entry = listed.body["trustedIps"][0]
    assert {"firstSeenTime", "lastSeenTime", "expireTime"} <= set(entry), entry

    stranger = new_person(gateway, wallet=False)
    theirs = stranger.call(gateway, "DELETE", f"/v1/ip-trust/{ip_hash}?requestId={rid()}")
    assert theirs.status == 404, theirs.body
    assert (await transfer.check(person, ip)).trusted is True

    revoked = person.call(gateway, "DELETE", f"/v1/ip-trust/{ip_hash}?requestId={rid()}")
    assert revoked.status == 200, revoked.body
    assert revoked.body["trustedIp"]["ipHash"] == ip_hash
    assert person.call(gateway, "GET", "/v1/ip-trust").body.get("trustedIps", []) == []

    before = len(read_messages(mesh.maildir))
    after_revoke = await transfer.check(person, ip)
    assert (after_revoke.trusted, after_revoke.confirmation_sent) == (False, True)
    fresh = mailed_code(mesh, person.email, CONFIRM_SUBJECT, after=before)
    assert fresh != code


async def test_a_confirmation_token_works_once_and_only_for_its_own_address(
    gateway: Gateway, mesh: Mesh, transfer: TransferService
) -> None:
    person = new_person(gateway, wallet=False)
    home, cafe = "198.51.100.7", "2001:db8::7"
    assert (await transfer.check(person, home)).confirmation_sent is True
    code = mailed_code(mesh, person.email, CONFIRM_SUBJECT)

    body = {"requestId": rid(), "token": code}
    first = gateway.call("POST", "/v1/ip-trust:confirm", body)
    assert first.status == 200, first.body
    replay = gateway.call("POST", "/v1/ip-trust:confirm", body)  # a retry of the same request
    assert replay.status == 200, replay.body
    assert replay.body["trustedIp"]["ipHash"] == first.body["trustedIp"]["ipHash"]
    second = gateway.call("POST", "/v1/ip-trust:confirm", {"requestId": rid(), "token": code})
    assert second.status == 400, second.body
    assert second.error_reason() == "IP_CONFIRMATION_TOKEN_INVALID"

    assert (await transfer.check(person, home)).trusted is True
    other = await transfer.check(person, cafe)
    assert (other.trusted, other.confirmation_sent) == (False, True)
    listed = person.call(gateway, "GET", "/v1/ip-trust").body["trustedIps"]
    assert [t["ipHash"] for t in listed] == [first.body["trustedIp"]["ipHash"]]

    forged = gateway.call(
        "POST", "/v1/ip-trust:confirm", {"requestId": rid(), "token": code[:-4] + "AAAA"}
    )
    assert forged.status == 400, forged.body
    assert forged.error_reason() == "IP_CONFIRMATION_TOKEN_INVALID"


async def test_a_movements_pin_and_ip_checks_in_one_call(
    gateway: Gateway, mesh: Mesh, transfer: TransferService
) -> None:
    """VerifyTransferPin with a client_ip: the address is checked only once the PIN matched,
    and a retry of the same movement from another address is the same PIN check."""
    person = new_person(gateway, pin="4821")
    ip, other_ip = _test_net_ip(), "2001:db8::42"
    stub, token = transfer.internal()

    def request(pin: str, request_id: str, client_ip: str) -> wallet_pb2.VerifyTransferPinRequest:
        return wallet_pb2.VerifyTransferPinRequest(
            request_id=request_id, user_id=person.user_id, pin=pin, client_ip=client_ip
        )

    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await stub.VerifyTransferPin(request("0000", rid(), ip), metadata=bearer(token), timeout=10)
    refusal = wallet_refusal(wrong.value)  # transfer's reading of wallet's answer
    assert isinstance(refusal, DomainError)
    assert (refusal.reason, refusal.metadata) == ("INVALID_PIN", {"remaining_attempts": "2"})

    # Before KYC: the tier is told and no link is mailed (the movement would fail on KYC).
    unverified = await stub.VerifyTransferPin(
        request("4821", rid(), ip), metadata=bearer(token), timeout=10
    )
    assert unverified.kyc_tier == kyc_tier_pb2.KYC_TIER_NONE
    assert (unverified.ip_trust.trusted, unverified.ip_trust.confirmation_sent) == (False, False)
    await approve_kyc(mesh, person)

    movement = rid()
    checked = await stub.VerifyTransferPin(
        request("4821", movement, ip), metadata=bearer(token), timeout=10
    )
    assert checked.wallet_id.startswith("VPY-")
    assert checked.HasField("ip_trust")
    # This check mailed: the wrong PIN's check and the check before KYC, from the same
    # address, had not (a mail for either would have been the window's one, and this one
    # would have sent none).
    assert (checked.ip_trust.trusted, checked.ip_trust.confirmation_sent) == (False, True)
    assert checked.kyc_tier == kyc_tier_pb2.KYC_TIER_FULL
    mailed_code(mesh, person.email, CONFIRM_SUBJECT)

    retried = await stub.VerifyTransferPin(
        request("4821", movement, other_ip), metadata=bearer(token), timeout=10
    )
    assert retried.wallet_id == checked.wallet_id
    assert (retried.ip_trust.trusted, retried.ip_trust.confirmation_sent) == (False, True)

    pin_only = await stub.VerifyTransferPin(
        request("4821", rid(), ""), metadata=bearer(token), timeout=10
    )
    assert not pin_only.HasField("ip_trust")
