"""transfer's gate (`GrpcWalletGate`) against an in-process wallet over real gRPC: a movement's
PIN and IP checks are one VerifyTransferPin call carrying the client address; a wallet that
answers without `ip_trust` (one that predates it, during a rolling deploy) is asked
CheckIpTrust as well, under the same check id; wallet's refusal of the PIN passes through and
no address is asked about."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import error_details_pb2, status_pb2

from vaultpay.type.v1 import kyc_tier_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.context import DEADLINE
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_transfer.adapters.wallet_peer import LEDGER_CALL_RESERVE, GrpcWalletGate
from vaultpay_transfer.domain.errors import PassedThroughError, WalletUnavailableError
from vaultpay_transfer.service_layer.ports import IpCheck

pytestmark = pytest.mark.integration

USER = "5f0c3f5e-8a8c-4d4e-9d7e-0a0b0c0d0e0f"
CHECK = "0b7c1f3e-2d4a-4b6c-8e9f-1a2b3c4d5e6f"
HOME = "198.51.100.7"


@dataclass
class FakeWallet(wallet_pb2_grpc.WalletInternalServiceServicer):
    """Answers a right PIN ("1234"); trusts HOME; `answers_ip` False plays an older wallet."""

    answers_ip: bool = True
    tier: kyc_tier_pb2.KycTier.ValueType = kyc_tier_pb2.KYC_TIER_BASIC  # told if not trusted
    refuse_identity: bool = False  # answers UNAUTHENTICATED, as to an expired service token
    slow: bool = False  # the check outlasts any deadline (a bcrypt queue under load)
    port: int = 0  # where it serves
    pin_checks: list[wallet_pb2.VerifyTransferPinRequest] = field(default_factory=list)
    time_left: list[float | None] = field(default_factory=list)  # each check's deadline
    ip_checks: list[wallet_pb2.CheckIpTrustRequest] = field(default_factory=list)

    async def VerifyTransferPin(
        self, request: wallet_pb2.VerifyTransferPinRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.VerifyTransferPinResponse:
        self.pin_checks.append(request)
        self.time_left.append(context.time_remaining())
        if self.slow:
            await asyncio.sleep(30)
        if self.refuse_identity:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "token expired")
        if request.pin != "1234":
            info = error_details_pb2.ErrorInfo(
                reason="INVALID_PIN", metadata={"remaining_attempts": "2"}
            )
            detail = AnyProto()
            detail.Pack(info)
            status = status_pb2.Status(code=9, message="wrong PIN", details=[detail])
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "wrong PIN",
                trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
            )
        reply = wallet_pb2.VerifyTransferPinResponse(wallet_id="VPY-ALICE1")
        if self.answers_ip and request.client_ip:
            reply.ip_trust.trusted = request.client_ip == HOME
            if request.client_ip != HOME:
                reply.kyc_tier = self.tier
                reply.ip_trust.confirmation_sent = self.tier != kyc_tier_pb2.KYC_TIER_NONE
        return reply

    async def CheckIpTrust(
        self, request: wallet_pb2.CheckIpTrustRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.CheckIpTrustResponse:
        self.ip_checks.append(request)
        trusted = request.client_ip == HOME
        return wallet_pb2.CheckIpTrustResponse(trusted=trusted, confirmation_sent=not trusted)


async def _token() -> str:
    return "service-token"


@pytest.fixture
async def wallet() -> AsyncIterator[tuple[FakeWallet, GrpcWalletGate]]:
    fake = FakeWallet()  # type: ignore[abstract]
    server = grpc.aio.server()
    wallet_pb2_grpc.add_WalletInternalServiceServicer_to_server(fake, server)
    port = fake.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield fake, GrpcWalletGate(channel, _token, timeout=5.0)
    finally:
        await server.stop(None)


async def test_both_checks_are_one_call_carrying_the_address(
    wallet: tuple[FakeWallet, GrpcWalletGate],
) -> None:
    fake, gate = wallet
    checked = await gate.check_movement(USER, "1234", HOME, CHECK)
    assert (checked.wallet_id, checked.ip) == ("VPY-ALICE1", IpCheck(True, False))
    assert checked.kyc_verified is None  # not told: the ledger checks the tier
    away = await gate.check_movement(USER, "1234", "203.0.113.9", CHECK)
    assert (away.ip, away.kyc_verified) == (IpCheck(False, True), True)
    assert [(r.request_id, r.user_id, r.client_ip) for r in fake.pin_checks] == [
        (CHECK, USER, HOME),
        (CHECK, USER, "203.0.113.9"),
    ]
    assert fake.ip_checks == []


async def test_the_callers_deadline_bounds_the_call_to_wallet(
    wallet: tuple[FakeWallet, GrpcWalletGate],
) -> None:
    """gRPC deadline propagation (review of 2026-12-04): a caller with 1 s left gives wallet
    that less the ledger call's reserve, not the peer timeout (5 s here); one with more, or
    none, the peer timeout."""
    fake, gate = wallet
    for left in (1.0, 60.0, None):
        token = DEADLINE.set(None if left is None else time.monotonic() + left)
        try:
            await gate.check_movement(USER, "1234", HOME, CHECK)
        finally:
            DEADLINE.reset(token)
    short, long_, unset = fake.time_left
    assert short is not None and 0.5 < short < 1.1 - LEDGER_CALL_RESERVE  # the ledger's share
    assert long_ is not None and 4.5 < long_ < 5.1
    assert unset is not None and 4.5 < unset < 5.1


async def test_a_wallet_without_ip_trust_in_its_answer_is_asked_check_ip_trust(
    wallet: tuple[FakeWallet, GrpcWalletGate],
) -> None:
    fake, gate = wallet
    fake.answers_ip = False
    checked = await gate.check_movement(USER, "1234", "203.0.113.9", CHECK)
    assert checked.ip == IpCheck(trusted=False, confirmation_sent=True)
    assert [(r.request_id, r.user_id, r.client_ip) for r in fake.ip_checks] == [
        (CHECK, USER, "203.0.113.9")
    ]


async def test_a_wrong_pin_is_wallets_refusal_and_no_address_is_asked_about(
    wallet: tuple[FakeWallet, GrpcWalletGate],
) -> None:
    fake, gate = wallet
    fake.answers_ip = False
    with pytest.raises(PassedThroughError) as refused:
        await gate.check_movement(USER, "9999", HOME, CHECK)
    assert (refused.value.reason, refused.value.metadata) == (
        "INVALID_PIN",
        {"remaining_attempts": "2"},
    )
    assert fake.ip_checks == []


async def test_wallet_out_of_reach_or_refusing_our_identity_is_wallet_unavailable(
    wallet: tuple[FakeWallet, GrpcWalletGate],
) -> None:
    """Not the caller's fault, and nothing moved: WALLET_UNAVAILABLE (retry), never wallet's
    own words about our credentials."""
    fake, gate = wallet
    fake.refuse_identity = True
    with pytest.raises(WalletUnavailableError):
        await gate.check_movement(USER, "1234", HOME, CHECK)

    async def token() -> str:
        return "service-token"

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        nowhere = GrpcWalletGate(channel, token, timeout=2.0)
        with pytest.raises(WalletUnavailableError):
            await nowhere.check_movement(USER, "1234", HOME, CHECK)


async def test_a_wallet_of_tier_none_behind_an_untrusted_address_is_not_kyc_verified(
    wallet: tuple[FakeWallet, GrpcWalletGate],
) -> None:
    fake, gate = wallet
    fake.tier = kyc_tier_pb2.KYC_TIER_NONE
    checked = await gate.check_movement(USER, "1234", "203.0.113.9", CHECK)
    assert (checked.ip, checked.kyc_verified) == (IpCheck(False, False), False)
    fake.answers_ip = False  # an older wallet tells no tier: nothing is concluded
    older = await gate.check_movement(USER, "1234", "203.0.113.9", CHECK)
    assert older.kyc_verified is None


async def test_a_request_without_a_client_address_is_untrusted_without_asking_about_one(
    wallet: tuple[FakeWallet, GrpcWalletGate],
) -> None:
    """A caller on a unix socket has no address: wallet checks the PIN only, and the address
    is untrusted, not a CheckIpTrust with an empty one (which answered the client 400
    `client_ip: is required`, a field its request does not have)."""
    fake, gate = wallet
    checked = await gate.check_movement(USER, "1234", "", CHECK)
    assert checked.ip == IpCheck(trusted=False, confirmation_sent=False)
    assert fake.ip_checks == []


async def test_a_deadline_with_no_time_left_for_wallet_and_the_ledger_is_deadline_exceeded(
    wallet: tuple[FakeWallet, GrpcWalletGate],
) -> None:
    """Not wallet's failure (it used to be WALLET_UNAVAILABLE and a WARNING blaming wallet):
    nothing is asked, nothing moved."""
    fake, gate = wallet
    token = DEADLINE.set(time.monotonic() + LEDGER_CALL_RESERVE / 2)
    try:
        with pytest.raises(DeadlineExceededError):
            await gate.check_movement(USER, "1234", HOME, CHECK)
    finally:
        DEADLINE.reset(token)
    assert fake.pin_checks == []


async def test_a_deadline_that_runs_out_while_wallet_checks_is_deadline_exceeded(
    wallet: tuple[FakeWallet, GrpcWalletGate], caplog: pytest.LogCaptureFixture
) -> None:
    """Review of 2026-12-05: a caller whose deadline left wallet some time, but less than its
    check took, was answered 503 WALLET_UNAVAILABLE (retry at once) with a WARNING blaming a
    healthy wallet, one per such request."""
    fake, gate = wallet
    fake.slow = True
    token = DEADLINE.set(time.monotonic() + LEDGER_CALL_RESERVE + 0.3)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(DeadlineExceededError):
            await gate.check_movement(USER, "1234", HOME, CHECK)
    finally:
        DEADLINE.reset(token)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_wallet_slower_than_our_own_peer_timeout_is_wallet_unavailable(
    wallet: tuple[FakeWallet, GrpcWalletGate],
) -> None:
    """Our own bound ran out, not the caller's: wallet's failure to answer in time."""
    fake, _ = wallet
    fake.slow = True
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fake.port}") as channel:
        gate = GrpcWalletGate(channel, _token, timeout=0.3)
        with pytest.raises(WalletUnavailableError):
            await gate.check_movement(USER, "1234", HOME, CHECK)
