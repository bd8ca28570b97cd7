"""bcrypt admission: sign-ins before sign-ups, a worker always left for sign-ins, bounded queues
answered RESOURCE_EXHAUSTED with a RetryInfo, and no worker lost to a caller that gives up."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2

from vaultpay_auth.adapters.passwords import BcryptPasswordHasher, HashingAdmission
from vaultpay_auth.domain.errors import PasswordHashingBusyError
from vaultpay_auth.service_layer.ports import HashPriority
from vaultpay_common.grpc.errors import status_for

SIGN_IN, SIGN_UP = HashPriority.SIGN_IN, HashPriority.SIGN_UP


def admission(workers: int = 2, *, sign_ins: int = 10, sign_ups: int = 10) -> HashingAdmission:
    return HashingAdmission(workers, max_waiting_sign_ins=sign_ins, max_waiting_sign_ups=sign_ups)


async def settle() -> None:
    """Lets every ready callback run (the waiters are futures resolved by release())."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiting_sign_ins_are_admitted_before_waiting_sign_ups() -> None:
    gate = admission(workers=1)
    await gate.acquire(SIGN_IN)  # the only worker is busy
    order: list[str] = []

    async def take(priority: HashPriority, name: str) -> None:
        await gate.acquire(priority)
        order.append(name)
        gate.release(priority)

    waiters = [asyncio.create_task(take(SIGN_UP, f"up{n}")) for n in range(3)]
    await settle()
    waiters.append(asyncio.create_task(take(SIGN_IN, "in")))
    await settle()
    gate.release(SIGN_IN)
    await asyncio.gather(*waiters)
    assert order == ["in", "up0", "up1", "up2"]


async def test_sign_ups_never_hold_the_last_worker() -> None:
    gate = admission(workers=2)
    await gate.acquire(SIGN_UP)
    second = asyncio.create_task(gate.acquire(SIGN_UP))
    await settle()
    assert not second.done()  # one worker stays free ...
    await asyncio.wait_for(gate.acquire(SIGN_IN), timeout=5)  # ... and a sign-in takes it at once
    gate.release(SIGN_UP)
    await asyncio.wait_for(second, timeout=5)


async def test_a_full_sign_up_queue_is_refused_with_a_retry_hint() -> None:
    gate = admission(workers=1, sign_ups=2)
    await gate.acquire(SIGN_IN)
    queued = [asyncio.create_task(gate.acquire(SIGN_UP)) for _ in range(2)]
    await settle()
    with pytest.raises(PasswordHashingBusyError) as refused:
        await gate.acquire(SIGN_UP)
    assert refused.value.retry_after_seconds >= 1
    code, status = status_for(refused.value, "vaultpay.auth")
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    info = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(retry) == 1 and len(info) == 1
    unpacked = error_details_pb2.ErrorInfo()
    info[0].Unpack(unpacked)
    assert unpacked.reason == "RATE_LIMITED"
    # A sign-in still queues: the bounds are separate.
    sign_in = asyncio.create_task(gate.acquire(SIGN_IN))
    await settle()
    gate.release(SIGN_IN)
    await asyncio.wait_for(sign_in, timeout=5)
    for task in queued:
        task.cancel()


async def test_the_sign_in_queue_is_bounded_too() -> None:
    gate = admission(workers=1, sign_ins=1)
    await gate.acquire(SIGN_IN)
    waiting = asyncio.create_task(gate.acquire(SIGN_IN))
    await settle()
    with pytest.raises(PasswordHashingBusyError):
        await gate.acquire(SIGN_IN)
    waiting.cancel()


async def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    gate = admission(workers=1, sign_ups=1)
    await gate.acquire(SIGN_IN)
    impatient = asyncio.create_task(gate.acquire(SIGN_UP))
    await settle()
    impatient.cancel()
    await settle()
    patient = asyncio.create_task(gate.acquire(SIGN_UP))  # the place is free again
    await settle()
    gate.release(SIGN_IN)
    await asyncio.wait_for(patient, timeout=5)
    assert gate.running(SIGN_UP) == 1


async def test_a_waiter_cancelled_just_as_it_is_admitted_gives_the_worker_back() -> None:
    gate = admission(workers=1)
    await gate.acquire(SIGN_IN)
    late = asyncio.create_task(gate.acquire(SIGN_IN))
    await settle()
    gate.release(SIGN_IN)  # admits `late` ...
    late.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await late
    assert gate.running(SIGN_IN) == 0
    await asyncio.wait_for(gate.acquire(SIGN_UP), timeout=5)


async def test_bcrypt_hasher_hashes_and_verifies_at_either_priority() -> None:
    hasher = BcryptPasswordHasher(b"p" * 32, 4, workers=2)
    try:
        hashed = await hasher.hash("correct horse 42", priority=SIGN_UP)
        assert await hasher.verify("correct horse 42", hashed)
        assert not await hasher.verify("wrong horse 42", hashed, priority=SIGN_IN)
        assert hasher.admission.running(SIGN_IN) == hasher.admission.running(SIGN_UP) == 0
    finally:
        hasher.close()


async def test_bcrypt_hasher_refuses_sign_ups_beyond_its_queue() -> None:
    hasher = BcryptPasswordHasher(b"p" * 32, 4, workers=1, max_waiting_sign_ups=0)
    try:
        await hasher.admission.acquire(SIGN_IN)  # the only worker is taken
        with pytest.raises(PasswordHashingBusyError):
            await hasher.hash("correct horse 42", priority=SIGN_UP)
        hasher.admission.release(SIGN_IN)
    finally:
        hasher.close()


async def test_a_check_is_admitted_only_when_a_worker_takes_it() -> None:
    """`admitted` tells a caller whether its check's hash runs whoever waits for it: set once
    a worker took the check, never for one taken out of the queue before."""
    hasher = BcryptPasswordHasher(b"p" * 32, 4, workers=1)
    stored = await hasher.hash("correct horse 42")
    await hasher.admission.acquire(HashPriority.SIGN_IN)  # the only worker is busy
    queued_admitted = asyncio.Event()
    queued = asyncio.ensure_future(
        hasher.verify("correct horse 42", stored, admitted=queued_admitted)
    )
    for _ in range(10):
        await asyncio.sleep(0)
    assert hasher.admission.waiting(HashPriority.SIGN_IN) == 1
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert not queued_admitted.is_set()
    assert hasher.admission.waiting(HashPriority.SIGN_IN) == 0  # out of the queue
    hasher.admission.release(HashPriority.SIGN_IN)

    admitted = asyncio.Event()
    assert await hasher.verify("correct horse 42", stored, admitted=admitted)
    assert admitted.is_set()
    hasher.close()
