"""The client address a service records: the gateway's header only from the gateway itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support import peer_service_fields
from vaultpay_common.config import PeerServiceSettings
from vaultpay_common.context import CLIENT_IP
from vaultpay_common.grpc.request_context import (
    CLIENT_IP_HEADER,
    GATEWAY_IDENTITY_HEADER,
    RequestContextInterceptor,
)

SECRET = "s3cret-shared-by-the-gateway-and-the-services-0123"


@dataclass
class _Item:
    key: str
    value: str


@dataclass
class FakeContext:
    metadata: Sequence[tuple[str, str]] = ()
    peer_address: str = "ipv4:10.0.0.7:51234"
    sent: list[Any] = field(default_factory=list)

    def invocation_metadata(self) -> list[_Item]:
        return [_Item(k, v) for k, v in self.metadata]

    def peer(self) -> str:
        return self.peer_address

    def time_remaining(self) -> float | None:
        return None

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.sent.append(metadata)

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.sent.append(metadata)


async def client_ip_seen(context: FakeContext, secret: str | None = SECRET) -> str:
    interceptor = RequestContextInterceptor(gateway_secret=secret)

    async def call() -> str:
        return CLIENT_IP.get()

    seen: str = await interceptor.around_unary("/x.v1.S/M", context, call)
    return seen


def from_gateway(address: str, identity: str = SECRET) -> FakeContext:
    return FakeContext(((GATEWAY_IDENTITY_HEADER, identity), (CLIENT_IP_HEADER, address)))


async def test_the_gateways_client_address_is_used_when_the_gateway_proves_itself() -> None:
    assert await client_ip_seen(from_gateway("203.0.113.9")) == "203.0.113.9"


async def test_a_direct_caller_cannot_choose_its_address() -> None:
    forged = FakeContext(((CLIENT_IP_HEADER, "203.0.113.9"),))

    assert await client_ip_seen(forged) == "10.0.0.7"


async def test_a_wrong_identity_counts_as_a_direct_caller() -> None:
    for identity in ("guess", SECRET[:-1], SECRET + "x", ""):
        assert await client_ip_seen(from_gateway("203.0.113.9", identity)) == "10.0.0.7"


async def test_without_a_configured_secret_the_header_is_never_trusted() -> None:
    assert await client_ip_seen(from_gateway("203.0.113.9"), secret=None) == "10.0.0.7"


# Each service has a gateway secret of its own (Envoy sends each its own).
TRANSFER_SECRET = "the-gateway-secret-of-transfer-alone-0123456789"
KYC_SECRET = "the-gateway-secret-of-kyc-alone-0123456789abcdef"


async def test_a_peer_services_gateway_secret_does_not_vouch_for_an_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review of 2026-12-05: every service held the same gateway secret, so a compromised
    peer (the kyc pod) read its own and called transfer's SendMoney or auth's Login naming any
    client address it liked. transfer believes only its own secret; kyc's is said at WARNING
    (without the value) and the call is recorded under the caller's own address."""
    with caplog.at_level("WARNING", logger="vaultpay_common.grpc.request_context"):
        forged = await client_ip_seen(from_gateway("203.0.113.9", KYC_SECRET), TRANSFER_SECRET)
        genuine = await client_ip_seen(
            from_gateway("203.0.113.9", TRANSFER_SECRET), TRANSFER_SECRET
        )

    assert (forged, genuine) == ("10.0.0.7", "203.0.113.9")
    [said] = caplog.records
    assert "matches neither gateway secret" in said.getMessage()
    assert KYC_SECRET not in said.getMessage()


async def test_a_presented_identity_without_a_configured_secret_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review of 2026-12-05: a service deployed without its gateway secret ignored the
    gateway's identity silently, and recorded every client under the gateway's address (one
    login throttle, one IP trust for everyone) with nothing logged. It is said at WARNING, at
    most once a minute, apart from a mismatch; calls without the header say nothing."""
    interceptor = RequestContextInterceptor(gateway_secret=None)

    async def seen(context: FakeContext) -> str:
        async def call() -> str:
            return CLIENT_IP.get()

        answer: str = await interceptor.around_unary("/x.v1.S/M", context, call)
        return answer

    with caplog.at_level("WARNING", logger="vaultpay_common.grpc.request_context"):
        assert await seen(FakeContext(((CLIENT_IP_HEADER, "203.0.113.9"),))) == "10.0.0.7"
        assert not caplog.records
        for _ in range(3):
            assert await seen(from_gateway("203.0.113.9")) == "10.0.0.7"

    [said] = caplog.records
    assert said.levelname == "WARNING"
    assert "no gateway secret configured" in said.getMessage()
    assert "matches neither" not in said.getMessage()
    assert SECRET not in said.getMessage()


@pytest.mark.parametrize(
    "text",
    ["not an ip", "203.0.113.9, 198.51.100.1", "203.0.113.9\n", "1.2.3.4.5", "' OR 1=1 --", ""],
)
async def test_text_that_is_not_one_ip_address_falls_back_to_the_peer(text: str) -> None:
    assert await client_ip_seen(from_gateway(text)) == "10.0.0.7"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("198.51.100.4", "198.51.100.4"),
    ],
)
async def test_addresses_are_recorded_in_canonical_form(text: str, canonical: str) -> None:
    assert await client_ip_seen(from_gateway(text)) == canonical


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:127.0.0.1:50000", "127.0.0.1"),
        ("ipv6:[::1]:50000", "::1"),
        ("ipv6:[::ffff:10.1.2.3]:50000", "10.1.2.3"),
        ("ipv6:%5B::1%5D:50000", "::1"),
        ("unix:/run/vaultpay.sock", ""),
        ("", ""),
    ],
)
async def test_the_peer_address_is_parsed(peer: str, expected: str) -> None:
    context = FakeContext(((CLIENT_IP_HEADER, "203.0.113.9"),), peer_address=peer)

    assert await client_ip_seen(context) == expected


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        RequestContextInterceptor(gateway_secret="short")


OLD_SECRET = "the-secret-before-the-rotation-began-0123456789"


async def test_mid_rotation_the_previous_secret_is_believed_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review of 2026-12-05: one secret only, so rotating it (Envoy and four services each
    restarted in turn) moved every client behind a mismatched pair to the gateway's address,
    silently: its login throttle, its rate limits and its IP trust shared by everyone."""
    interceptor = RequestContextInterceptor(SECRET, OLD_SECRET)

    async def seen(context: FakeContext) -> str:
        async def call() -> str:
            return CLIENT_IP.get()

        answer: str = await interceptor.around_unary("/x.v1.S/M", context, call)
        return answer

    assert await seen(from_gateway("203.0.113.9", SECRET)) == "203.0.113.9"
    assert await seen(from_gateway("203.0.113.9", OLD_SECRET)) == "203.0.113.9"
    assert not caplog.records
    with caplog.at_level("WARNING", logger="vaultpay_common.grpc.request_context"):
        for _ in range(3):  # a third secret: not believed, said once, not per call
            assert await seen(from_gateway("203.0.113.9", "x" * 40)) == "10.0.0.7"
        assert await seen(FakeContext(((CLIENT_IP_HEADER, "203.0.113.9"),))) == "10.0.0.7"
    [said] = caplog.records
    assert "matches neither gateway secret" in said.getMessage()
    assert "x" * 40 not in said.getMessage()


def test_a_previous_secret_needs_a_current_one() -> None:
    with pytest.raises(ValueError, match="current one"):
        RequestContextInterceptor(None, OLD_SECRET)


def test_settings_refuse_a_previous_gateway_secret_alone() -> None:
    with pytest.raises(ValidationError, match="beside gateway_secret"):
        PeerServiceSettings(**peer_service_fields(), gateway_previous_secret=OLD_SECRET)
    both = PeerServiceSettings(
        **peer_service_fields(), gateway_secret=SECRET, gateway_previous_secret=OLD_SECRET
    )
    assert both.gateway_previous_secret is not None
