"""A money movement's PIN and IP checks in one call (`MovementChecks`), on fakes: the address is
looked at only once the PIN matched, under the movement's request_id (a retry mails nothing
more), and not at all when no address is given. With the PIN check's fast path, a trusted
address is answered by the settlement itself (no cache, no second look); an untrusted one goes
on to CheckIpTrust's path, which mails the link."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from tests.fakes.wallet import FakePinCheckFastPath
from tests.unit.wallet.ip_trust_world import IP, Env
from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.errors import ValidationError
from vaultpay_wallet.domain.errors import InvalidPinError
from vaultpay_wallet.domain.model import KycTier, Wallet
from vaultpay_wallet.service_layer.commands import SetKycTier, VerifyTransferPin
from vaultpay_wallet.service_layer.internal import MovementChecks
from vaultpay_wallet.service_layer.ip_trust import IpTrustCheck
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.results import MovementAddress

USER = str(uuid.uuid4())
PIN = "2468"


async def _verified_wallet(world: World) -> Wallet:
    """A wallet with a PIN whose KYC was approved (BASIC), as a movement needs."""
    await world.open_wallet_with_pin(USER, PIN)
    return await world.kyc.set_kyc_tier(SetKycTier(USER, KycTier.BASIC, "sub-1", key("kyc")))


async def test_the_address_is_checked_only_once_the_pin_matched() -> None:
    world, ips = World(), Env()
    checks = MovementChecks(world.pins, ips.service, lambda: world.uow)
    wallet = await _verified_wallet(world)

    with pytest.raises(InvalidPinError):
        await checks.check(VerifyTransferPin(USER, "0000", key(USER)), IP)
    assert ips.mails() == []  # a wrong PIN looks at no address

    movement = key(USER)
    checked = await checks.check(VerifyTransferPin(USER, PIN, movement), IP)
    assert checked.wallet_id == wallet.id
    assert checked.ip == IpTrustCheck(trusted=False, confirmation_sent=True)
    again = await checks.check(VerifyTransferPin(USER, PIN, movement), IP)
    assert again.ip == IpTrustCheck(trusted=False, confirmation_sent=True)  # the same answer
    assert len(ips.mails()) == 1

    pin_only = await checks.check(VerifyTransferPin(USER, PIN, key(USER)))
    assert (pin_only.wallet_id, pin_only.ip) == (wallet.id, None)


def _fast_checks(world: World, ips: Env) -> tuple[MovementChecks, FakePinCheckFastPath]:
    """The fast path on the fakes, a movement's address trusted by the IP service's rows."""

    async def trusted_at(address: MovementAddress, now: datetime) -> bool:
        trusted = await ips.uow.trusted_ips.get(address.user_id, address.ip_hash)
        return trusted is not None and trusted.is_trusted_at(now)

    fast = FakePinCheckFastPath(world.uow, trusted_at)
    pins = PinService(lambda: world.uow, world.clock, world.hasher, world.sealer, fast)
    return MovementChecks(pins, ips.service, lambda: world.uow), fast


async def test_a_trusted_address_is_answered_by_the_pins_settlement_alone() -> None:
    world, ips = World(), Env()
    checks, fast = _fast_checks(world, ips)
    await world.open_wallet_with_pin(USER, PIN)
    public_hash = await ips.trust(IP, USER)
    ips.cache.lookups = 0

    checked = await checks.check(VerifyTransferPin(USER, PIN, key(USER)), IP)

    assert checked.ip == IpTrustCheck(trusted=True, confirmation_sent=False)
    assert ips.cache.lookups == 0  # neither the Redis cache nor a second look
    [address] = fast.addresses
    assert (address.user_id, address.ip_hash[:16]) == (USER, public_hash)


async def test_an_untrusted_address_goes_on_to_check_ip_trust_which_mails_the_link() -> None:
    world, ips = World(), Env()
    checks, fast = _fast_checks(world, ips)
    await _verified_wallet(world)

    checked = await checks.check(VerifyTransferPin(USER, PIN, key(USER)), IP)

    assert checked.ip == IpTrustCheck(trusted=False, confirmation_sent=True)
    assert checked.kyc_tier is KycTier.BASIC
    assert len(fast.addresses) == 1 and len(ips.mails()) == 1


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_wallet_without_kyc_is_mailed_no_link_and_told_its_tier(fast_path: bool) -> None:
    # QA of 2026-12-03: a wallet of tier NONE was mailed a link for an untrusted address,
    # then refused KYC_NOT_VERIFIED once the address was confirmed.
    world, ips = World(), Env()
    checks = (
        _fast_checks(world, ips)[0]
        if fast_path
        else MovementChecks(world.pins, ips.service, lambda: world.uow)
    )
    wallet = await world.open_wallet_with_pin(USER, PIN)  # tier NONE

    with pytest.raises(InvalidPinError):  # the PIN is still checked first
        await checks.check(VerifyTransferPin(USER, "0000", key(USER)), IP)
    checked = await checks.check(VerifyTransferPin(USER, PIN, key(USER)), IP)

    assert (checked.wallet_id, checked.kyc_tier) == (wallet.id, KycTier.NONE)
    assert checked.ip == IpTrustCheck(trusted=False, confirmation_sent=False)
    assert ips.mails() == []
    if fast_path:  # behind an address the settlement found trusted, no tier is read
        await ips.trust(IP, USER)
        trusted = await checks.check(VerifyTransferPin(USER, PIN, key(USER)), IP)
        assert (trusted.ip, trusted.kyc_tier) == (IpTrustCheck(True, False), None)


async def test_a_malformed_address_is_refused_before_an_attempt_is_counted() -> None:
    world, ips = World(), Env()
    checks, fast = _fast_checks(world, ips)
    wallet = await world.open_wallet_with_pin(USER, PIN)

    with pytest.raises(ValidationError) as refused:
        await checks.check(VerifyTransferPin(USER, "0000", key(USER)), "not-an-address")

    assert refused.value.violations[0].field == "client_ip"
    record = await world.uow.pins.get(wallet.id)
    assert record is not None and record.failed_attempts == 0
    assert world.hasher.verifications == 0 and fast.addresses == []
