"""A retried PIN check that arrives while its first call is still hashing joins it: one hash,
one counted attempt, the same answer for both, on the fast path and on the general path; the
shared check survives either caller's cancellation and is forgotten once it ends. Each test
holds bcrypt on an event, so the order of the calls is the test's, not the scheduler's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from tests.fakes.wallet import FakePinCheckFastPath
from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.context import DEADLINE, remaining_seconds
from vaultpay_common.idempotency import (
    IdempotencyKey,
    IdempotencyKeyReusedError,
    request_fingerprint,
)
from vaultpay_wallet.domain.errors import InvalidPinError, PinLockedError
from vaultpay_wallet.service_layer.commands import VerifyPin, VerifyTransferPin
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.results import MovementAddress, PinReservation, PinVerified

GOOD = "2468"
BAD = "1357"
PATHS = pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "general-path"])


@dataclass
class _Bcrypt:
    """Holds every PIN check in bcrypt until `release` is set; `hashing` is set when the
    first gets there, and `entered` counts the checks that did."""

    hashing: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: int = 0


def _pins(world: World, *, fast: bool) -> tuple[PinService, _Bcrypt]:
    """The world's PIN service (with the fake fast path when `fast`), bcrypt held."""
    pins = world.pins
    if fast:
        fast_path = FakePinCheckFastPath(world.uow)
        pins = PinService(lambda: world.uow, world.clock, world.hasher, world.sealer, fast_path)
    bcrypt = _Bcrypt()
    verify = world.hasher.verify

    async def held_verify(pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        bcrypt.entered += 1
        bcrypt.hashing.set()
        await bcrypt.release.wait()
        return await verify(pin, pin_hash, movement=movement)

    world.hasher.verify = held_verify  # type: ignore[method-assign]
    return pins, bcrypt


async def _let_the_new_call_run() -> None:
    """A few turns of the event loop, no time: a call just started runs until it waits, in
    bcrypt or on the check it joined (the fakes never wait; a check's hash and settlement
    are a task of its own, started a turn later)."""
    for _ in range(5):
        await asyncio.sleep(0)


def _movement(pins: PinService, pin: str, k: IdempotencyKey) -> asyncio.Task[PinVerified]:
    return asyncio.ensure_future(pins.verify_transfer_pin(VerifyTransferPin("alice", pin, k)))


@PATHS
async def test_a_retry_while_the_check_hashes_waits_for_it_and_gets_the_same_success(
    fast: bool,
) -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    pins, bcrypt = _pins(world, fast=fast)
    check = key("service:transfer")

    first = _movement(pins, GOOD, check)
    await bcrypt.hashing.wait()
    retry = _movement(pins, GOOD, check)
    await _let_the_new_call_run()
    assert bcrypt.entered == 1  # the retry did not start a second hash
    assert not retry.done()
    bcrypt.release.set()

    answers = await asyncio.gather(first, retry)
    assert answers[0] == answers[1] and answers[0].wallet_id == wallet.id
    assert world.hasher.verifications == 1
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    assert pins.checks_in_flight == 0  # forgotten as it ended
    # A later retry is answered by the stored reply, not from memory, and hashes nothing.
    assert await _movement(pins, GOOD, check) == answers[0]
    assert bcrypt.entered == 1


@PATHS
@pytest.mark.parametrize(
    ("wrong_before", "answer"), [(0, InvalidPinError), (2, PinLockedError)], ids=["2-left", "3rd"]
)
async def test_a_retried_wrong_pin_hashes_once_counts_once_and_answers_the_same(
    fast: bool, wrong_before: int, answer: type[Exception]
) -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    for _ in range(wrong_before):
        with pytest.raises(InvalidPinError):
            await world.pins.verify_pin(VerifyPin("alice", BAD, key()))
    pins, bcrypt = _pins(world, fast=fast)
    check = key("service:transfer")

    first = _movement(pins, BAD, check)
    await bcrypt.hashing.wait()
    retry = _movement(pins, BAD, check)
    await _let_the_new_call_run()
    assert bcrypt.entered == 1
    bcrypt.release.set()

    errors = await asyncio.gather(first, retry, return_exceptions=True)
    assert all(isinstance(e, answer) for e in errors)
    assert errors[0].metadata == errors[1].metadata  # type: ignore[union-attr]
    if answer is InvalidPinError:
        assert errors[0].metadata == {"remaining_attempts": "2"}  # type: ignore[union-attr]
    assert world.hasher.verifications == wrong_before + 1
    assert world.uow.pins.records[wallet.id].failed_attempts == wrong_before + 1
    locks = [e for e in world.uow.audit_entries if e.action == "wallet.pin_locked"]
    assert len(locks) == (1 if answer is PinLockedError else 0)
    assert pins.checks_in_flight == 0


@PATHS
async def test_another_request_under_the_same_request_id_is_refused_not_joined(
    fast: bool,
) -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    pins, bcrypt = _pins(world, fast=fast)
    check = key("service:transfer")
    other = IdempotencyKey(
        check.caller, check.method, check.request_id, request_fingerprint(b"another request")
    )

    first = _movement(pins, BAD, check)
    await bcrypt.hashing.wait()
    # Answered while the first check still hashes: a join would wait for it (bounded here,
    # so a join fails this test instead of hanging it).
    async with asyncio.timeout(5):
        with pytest.raises(IdempotencyKeyReusedError):
            await _movement(pins, GOOD, other)
    bcrypt.release.set()

    with pytest.raises(InvalidPinError):
        await first
    assert bcrypt.entered == 1
    assert world.uow.pins.records[wallet.id].failed_attempts == 1  # the first call's only
    assert pins.checks_in_flight == 0


@PATHS
async def test_the_shared_check_runs_without_its_first_callers_deadline(fast: bool) -> None:
    """Transfer's deadline passed while the first call waited for bcrypt, and it retried with
    a fresh one: the check both await settles without the expired deadline (which would
    have limited its statements to 1 ms and failed the retry too)."""
    world = World()
    wallet = await world.open_wallet_with_pin()
    pins, bcrypt = _pins(world, fast=fast)
    deadlines_seen: list[float | None] = []
    held_verify = world.hasher.verify

    async def verify(pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        deadlines_seen.append(remaining_seconds())
        return await held_verify(pin, pin_hash, movement=movement)

    world.hasher.verify = verify  # type: ignore[method-assign]
    check = key("service:transfer")

    expired = DEADLINE.set(time.monotonic() - 1)
    first = _movement(pins, BAD, check)  # the task copies the context: the expired deadline
    DEADLINE.reset(expired)
    await bcrypt.hashing.wait()
    retry = _movement(pins, BAD, check)
    await _let_the_new_call_run()
    bcrypt.release.set()

    errors = await asyncio.gather(first, retry, return_exceptions=True)
    assert [type(e) for e in errors] == [InvalidPinError, InvalidPinError]
    assert deadlines_seen == [None]  # one hash, outside any caller's deadline
    assert world.uow.pins.records[wallet.id].failed_attempts == 1


@PATHS
async def test_the_first_caller_cancelled_leaves_the_retry_its_answer(fast: bool) -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    pins, bcrypt = _pins(world, fast=fast)
    check = key("service:transfer")

    first = _movement(pins, GOOD, check)
    await bcrypt.hashing.wait()
    retry = _movement(pins, GOOD, check)
    await _let_the_new_call_run()
    first.cancel()  # transfer's deadline passed: that is why it retried
    with pytest.raises(asyncio.CancelledError):
        await first
    bcrypt.release.set()

    assert (await retry).wallet_id == wallet.id
    assert bcrypt.entered == 1
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    assert pins.checks_in_flight == 0


@PATHS
async def test_a_retry_cancelled_while_it_waits_leaves_the_check_running(fast: bool) -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    pins, bcrypt = _pins(world, fast=fast)
    check = key("service:transfer")

    first = _movement(pins, BAD, check)
    await bcrypt.hashing.wait()
    retry = _movement(pins, BAD, check)
    await _let_the_new_call_run()
    retry.cancel()
    with pytest.raises(asyncio.CancelledError):
        await retry
    bcrypt.release.set()

    with pytest.raises(InvalidPinError) as wrong:
        await first
    assert wrong.value.metadata == {"remaining_attempts": "2"}
    assert bcrypt.entered == 1
    assert world.uow.pins.records[wallet.id].failed_attempts == 1
    assert pins.checks_in_flight == 0


@PATHS
async def test_a_shared_check_that_fails_fails_both_and_a_later_retry_checks_again(
    fast: bool,
) -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    pins, bcrypt = _pins(world, fast=fast)
    check = key("service:transfer")
    held = world.hasher.verify

    async def worker_died(pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        await held(pin, pin_hash)
        raise RuntimeError("worker died")

    world.hasher.verify = worker_died  # type: ignore[method-assign]
    first = _movement(pins, GOOD, check)
    await bcrypt.hashing.wait()
    retry = _movement(pins, GOOD, check)
    await _let_the_new_call_run()
    bcrypt.release.set()

    errors = await asyncio.gather(first, retry, return_exceptions=True)
    assert all(isinstance(e, RuntimeError) for e in errors)  # nobody is left waiting
    assert bcrypt.entered == 1
    assert pins.checks_in_flight == 0
    world.hasher.verify = held  # type: ignore[method-assign]
    # The failure is not remembered: the next retry hashes and settles the same attempt.
    assert (await _movement(pins, GOOD, check)).wallet_id == wallet.id
    assert bcrypt.entered == 2
    assert world.uow.pins.records[wallet.id].failed_attempts == 0


async def test_a_joined_movement_check_leaves_the_address_to_its_caller() -> None:
    """The first call read its own address in the settlement; the retry's may be another."""
    world = World()
    await world.open_wallet_with_pin()
    fast_path = FakePinCheckFastPath(world.uow)
    pins = PinService(lambda: world.uow, world.clock, world.hasher, world.sealer, fast_path)
    _, bcrypt = _pins(world, fast=False)  # holds the hasher `pins` shares
    wallet = await world.uow.wallets.get_by_user("alice")
    assert wallet is not None
    address = MovementAddress(wallet.user_id, "a" * 64)
    fast_path.trusted.add((address.user_id, address.ip_hash))
    check = key("service:transfer")

    def call() -> asyncio.Task[PinVerified]:
        cmd = VerifyTransferPin("alice", GOOD, check)
        return asyncio.ensure_future(pins.verify_transfer_pin(cmd, address))

    first = call()
    await bcrypt.hashing.wait()
    retry = call()
    await _let_the_new_call_run()
    bcrypt.release.set()

    assert (await first).address_trusted is True
    assert (await retry).address_trusted is None  # MovementChecks looks at it itself
    assert bcrypt.entered == 1


class _ReserveHeld(FakePinCheckFastPath):
    """Holds the first reservation's answer on its way back (the attempt counted and its
    reservation stored), as a busy event loop or network can."""

    def __init__(self, world: World) -> None:
        super().__init__(world.uow)
        self.reserved = asyncio.Event()
        self.answer = asyncio.Event()

    async def reserve(
        self,
        user_id: str,
        key: IdempotencyKey,
        reserve_key: IdempotencyKey,
        now: datetime,
        encode: Callable[[PinReservation], bytes],
    ) -> tuple[PinReservation, str] | None:
        reserved = await super().reserve(user_id, key, reserve_key, now, encode)
        if reserved is not None:
            self.reserved.set()
            await self.answer.wait()
        return reserved


async def test_a_retry_that_reads_the_reservation_first_hashes_and_the_first_call_joins() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    fast_path = _ReserveHeld(world)
    pins = PinService(lambda: world.uow, world.clock, world.hasher, world.sealer, fast_path)
    _, bcrypt = _pins(world, fast=False)  # holds the hasher `pins` shares
    check = key("service:transfer")

    first = _movement(pins, GOOD, check)
    await fast_path.reserved.wait()
    retry = _movement(pins, GOOD, check)  # reads the stored reservation: the general path
    await bcrypt.hashing.wait()
    fast_path.answer.set()
    await _let_the_new_call_run()
    assert bcrypt.entered == 1  # the first call joined the retry's hash
    bcrypt.release.set()

    answers = await asyncio.gather(first, retry)
    assert answers[0] == answers[1] and answers[0].wallet_id == wallet.id
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    assert pins.checks_in_flight == 0
