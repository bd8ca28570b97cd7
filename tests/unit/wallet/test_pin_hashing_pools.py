"""The money movements' PIN checks never queue behind the owner's PIN work, and the owner's
work waits only so deep where nothing is written yet (adapters/pin_hasher.py).

Review of 2026-12-05 (helper 287): one pool with an unbounded queue served both, so 200
concurrent SetPin calls of a fresh account (each refused PIN_ALREADY_SET only after its hash)
put tens of seconds of hashing in front of every send and withdrawal of the replica.
"""

from __future__ import annotations

import asyncio
import threading

import bcrypt
import pytest

from tests.unit.wallet.wallet_world import World, key
from vaultpay_wallet.adapters.pin_hasher import BcryptPinHasher
from vaultpay_wallet.domain.errors import PinHashingBusyError
from vaultpay_wallet.service_layer.commands import SetPin, VerifyTransferPin

PEPPER = b"p" * 32
PATIENCE = 10.0


async def test_a_movements_check_is_not_queued_behind_the_owners_work() -> None:
    hasher = BcryptPinHasher(PEPPER, rounds=4, workers=1, max_owner_waiting=2)
    stored = await hasher.hash("2468", movement=True)
    release = threading.Event()
    real_hashpw = bcrypt.hashpw

    def held_hashpw(password: bytes, salt: bytes) -> bytes:
        release.wait(PATIENCE)  # the owner's thread is busy until the test says so
        return real_hashpw(password, salt)

    try:
        bcrypt.hashpw = held_hashpw
        owners = [asyncio.create_task(hasher.hash("1357")) for _ in range(3)]
        await asyncio.sleep(0)  # each has taken its place (one running, two waiting)
        with pytest.raises(PinHashingBusyError) as refused:
            hasher.make_room()
        assert refused.value.retry_after_seconds >= 1
        # The movement's check runs on its own threads meanwhile.
        assert await asyncio.wait_for(hasher.verify("2468", stored, movement=True), PATIENCE)
        assert not any(task.done() for task in owners)
    finally:
        release.set()
        bcrypt.hashpw = real_hashpw
    hashes = await asyncio.wait_for(asyncio.gather(*owners), PATIENCE)
    assert all(bcrypt.checkpw(hasher._prehash("1357"), h.encode()) for h in hashes)
    hasher.make_room()  # room again once they are done
    hasher.close()


async def test_a_finished_owner_call_gives_its_place_back() -> None:
    hasher = BcryptPinHasher(PEPPER, rounds=4, workers=1, max_owner_waiting=0)
    release = threading.Event()
    real_hashpw = bcrypt.hashpw

    def held_hashpw(password: bytes, salt: bytes) -> bytes:
        release.wait(PATIENCE)
        return real_hashpw(password, salt)

    try:
        bcrypt.hashpw = held_hashpw
        running = asyncio.create_task(hasher.hash("1357"))
        await asyncio.sleep(0)
        with pytest.raises(PinHashingBusyError):
            hasher.make_room()
        release.set()
        await asyncio.wait_for(running, PATIENCE)
        hasher.make_room()
    finally:
        release.set()
        bcrypt.hashpw = real_hashpw
        hasher.close()


async def test_set_pin_refused_busy_writes_nothing_and_spends_no_hash() -> None:
    world = World()
    await world.open_wallet("alice")
    world.hasher.busy = True
    before = world.snapshot()
    with pytest.raises(PinHashingBusyError):
        await world.pins.set_pin(SetPin("alice", "2468", "2468", None))
    assert world.hasher.hashes == 0
    assert world.snapshot() == before


async def test_a_movements_check_is_hashed_as_a_movement() -> None:
    world = World()
    await world.open_wallet_with_pin("alice", "2468")
    world.hasher.busy = True  # the owner's queue is full: a movement is not refused for it
    await world.pins.verify_transfer_pin(VerifyTransferPin("alice", "2468", key("m-1")))
    assert world.hasher.movement_verifications == 1
