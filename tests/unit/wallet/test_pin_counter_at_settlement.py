"""A wrong PIN's settlement reads the counter as it stands, not as its reservation found it
(review of 2026-12-05): a right PIN settled meanwhile cleared it, so a wrong one in flight
does not lock the wallet as the third in a row, and concurrent wrong PINs answer the attempts
really left. The hashes are held at a gate to choose the order of the settlements."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.wallet.wallet_world import World, key
from vaultpay_wallet.domain.errors import InvalidPinError, PinLockedError
from vaultpay_wallet.domain.model import FreezeSource
from vaultpay_wallet.service_layer.commands import VerifyPin

GOOD, BAD = "2468", "1357"


async def _reserved(world: World, wallet_id: str, count: int) -> None:
    """Until `count` attempts are counted (reserved before their hashes run)."""
    for _ in range(1000):
        record = await world.uow.pins.get(wallet_id)
        if record is not None and record.failed_attempts >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{count} attempts were never counted")


async def test_a_wrong_pin_settled_after_a_right_one_does_not_lock_as_the_third() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    with pytest.raises(InvalidPinError):  # one earlier typo: the counter reads 1
        await world.pins.verify_pin(VerifyPin("alice", BAD, key()))
    gates = {GOOD: asyncio.Event(), BAD: asyncio.Event()}
    verify = world.hasher.verify

    async def held(pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        await gates[pin].wait()
        return await verify(pin, pin_hash)

    world.hasher.verify = held  # type: ignore[method-assign]
    right = asyncio.ensure_future(world.pins.verify_pin(VerifyPin("alice", GOOD, key())))
    await _reserved(world, wallet.id, 2)
    wrong = asyncio.ensure_future(world.pins.verify_pin(VerifyPin("alice", BAD, key())))
    await _reserved(world, wallet.id, 3)  # the typo holds attempt 3
    gates[GOOD].set()
    await right  # the right PIN settles first: the counter is cleared
    gates[BAD].set()
    with pytest.raises(InvalidPinError) as refused:
        await wrong
    assert refused.value.metadata == {"remaining_attempts": "3"}
    after = await world.wallets.get_my_wallet("alice")
    assert after.wallet.freeze_by(FreezeSource.PIN_LOCKOUT) is None


async def test_concurrent_wrong_pins_answer_the_attempts_really_left() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    gate = asyncio.Event()
    verify = world.hasher.verify

    async def held(pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        await gate.wait()
        return await verify(pin, pin_hash)

    world.hasher.verify = held  # type: ignore[method-assign]
    first = asyncio.ensure_future(world.pins.verify_pin(VerifyPin("alice", BAD, key())))
    second = asyncio.ensure_future(world.pins.verify_pin(VerifyPin("alice", "1358", key())))
    await _reserved(world, wallet.id, 2)
    gate.set()
    answers = await asyncio.gather(first, second, return_exceptions=True)
    assert [a.metadata for a in answers] == [{"remaining_attempts": "1"}] * 2  # type: ignore[union-attr]
    world.hasher.verify = verify  # type: ignore[method-assign]
    with pytest.raises(PinLockedError):  # the next wrong PIN is the third: "1 left" was true
        await world.pins.verify_pin(VerifyPin("alice", "1359", key()))
