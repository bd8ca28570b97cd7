"""A money movement's PIN and IP checks in one call (`MovementChecks`), on fakes: the address is
looked at only once the PIN matched, under the movement's request_id (a retry mails nothing
more), and not at all when no address is given."""

from __future__ import annotations

import uuid

import pytest

from tests.unit.wallet.ip_trust_world import IP, Env
from tests.unit.wallet.wallet_world import World, key
from vaultpay_wallet.domain.errors import InvalidPinError
from vaultpay_wallet.service_layer.commands import VerifyTransferPin
from vaultpay_wallet.service_layer.internal import MovementChecks
from vaultpay_wallet.service_layer.ip_trust import IpTrustCheck

USER = str(uuid.uuid4())
PIN = "2468"


async def test_the_address_is_checked_only_once_the_pin_matched() -> None:
    world, ips = World(), Env()
    checks = MovementChecks(world.pins, ips.service)
    wallet = await world.open_wallet_with_pin(USER, PIN)

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
