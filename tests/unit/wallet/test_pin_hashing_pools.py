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
from vaultpay_wallet.domain.errors import PinAlreadySetError, PinHashingBusyError
from vaultpay_wallet.service_layer.commands import SetPin, VerifyTransferPin

PEPPER = b"p" * 32
PATIENCE = 10.0


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """bcrypt.hashpw held until the event is set: the threads that hash stay busy."""
    release = threading.Event()
    real_hashpw = bcrypt.hashpw

    def held_hashpw(password: bytes, salt: bytes) -> bytes:
        release.wait(PATIENCE)
        return real_hashpw(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", held_hashpw)
    return release


async def test_a_movements_check_is_not_queued_behind_the_owners_work(
    held: threading.Event,
) -> None:
    hasher = BcryptPinHasher(PEPPER, rounds=4, workers=1, max_owner_waiting=2)
    try:
        owners = [asyncio.create_task(hasher.hash("1357", refusable=True)) for _ in range(3)]
        await asyncio.sleep(0)  # each has taken its place (one running, two waiting)
        with pytest.raises(PinHashingBusyError) as refused:
            await hasher.hash("1357", refusable=True)
        assert refused.value.retry_after_seconds >= 1
        # The movement's check runs on its own threads meanwhile (checkpw is not held).
        stored = "$2b$04$" + "a" * 53
        assert not await asyncio.wait_for(hasher.verify("2468", stored, movement=True), PATIENCE)
        assert not any(task.done() for task in owners)
    finally:
        held.set()
    await asyncio.wait_for(asyncio.gather(*owners), PATIENCE)
    assert await hasher.hash("1357", refusable=True)  # room again once they are done
    hasher.close()


async def test_checks_after_a_reserved_attempt_neither_wait_for_room_nor_take_it(
    held: threading.Event,
) -> None:
    """Review of the first version: VerifyPin and ChangePin work counted toward the bound
    that refuses SetPin and ResetPin, so six accounts keeping three correct-PIN checks each in
    flight refused every SetPin and ResetPin of the replica."""
    hasher = BcryptPinHasher(PEPPER, rounds=4, workers=1, max_owner_waiting=0)
    try:
        # A ChangePin's new-PIN hash after its reservation: not refusable, however many.
        changes = [asyncio.create_task(hasher.hash("1357")) for _ in range(5)]
        await asyncio.sleep(0)
        setting = asyncio.create_task(hasher.hash("2468", refusable=True))
        await asyncio.sleep(0)
        assert not setting.done()  # queued behind them, not refused for them
        with pytest.raises(PinHashingBusyError):  # the one refusable place is taken
            await hasher.hash("2468", refusable=True)
    finally:
        held.set()
    await asyncio.wait_for(asyncio.gather(*changes, setting), PATIENCE)
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


async def test_concurrent_set_pins_of_one_wallet_hash_once() -> None:
    """Review of 2026-12-05: concurrent SetPin calls of one wallet each read "no PIN yet" and
    hashed at the production cost before all but one were refused PIN_ALREADY_SET. Now they
    take turns in the process: the next reads the PIN the first set and is refused before it
    hashes."""
    world = World()
    await world.open_wallet("alice")
    release = asyncio.Event()
    hash_pin = world.hasher.hash

    async def held_hash(pin: str, *, movement: bool = False, refusable: bool = False) -> str:
        await release.wait()
        return await hash_pin(pin, movement=movement, refusable=refusable)

    world.hasher.hash = held_hash  # type: ignore[method-assign]
    calls = [
        asyncio.create_task(world.pins.set_pin(SetPin("alice", pin, pin, None)))
        for pin in ("2468", "1357", "8642", "9753", "3141")
    ]
    for _ in range(5):
        await asyncio.sleep(0)  # every call is in, one of them hashing
    release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), PATIENCE)
    assert world.hasher.hashes == 1
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, PinAlreadySetError) for o in outcomes if isinstance(o, BaseException))
