"""bcrypt threads run at a lower CPU priority than the event loop (vaultpay_common.cpu_pool):
the platform's pool, the wallet's PIN hasher and auth's password hasher."""

from __future__ import annotations

import os
import sys
import threading

import bcrypt
import pytest

from vaultpay_auth.adapters.passwords import BcryptPasswordHasher
from vaultpay_common.cpu_pool import (
    DEFAULT_NICENESS,
    MAX_NICE,
    low_priority_executor,
    lower_current_thread_priority,
    lowers_thread_priority,
    thread_nice_value,
)
from vaultpay_wallet.adapters.pin_hasher import BcryptPinHasher

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature"
)
PEPPER = b"p" * 32


def _expected_nice() -> int:
    here = thread_nice_value()
    assert here is not None
    return min(MAX_NICE, here + DEFAULT_NICENESS)


@linux_only
def test_the_pools_worker_threads_run_ten_nice_levels_below_the_thread_that_started_them() -> None:
    pool = low_priority_executor(2, thread_name_prefix="test-low")
    try:
        seen = list(pool.map(lambda _: thread_nice_value(), range(4)))
    finally:
        pool.shutdown()
    assert seen == [_expected_nice()] * 4


@linux_only
def test_only_the_worker_thread_is_lowered_never_the_process() -> None:
    before = thread_nice_value()
    pool = low_priority_executor(1, thread_name_prefix="test-low")
    try:
        worker = pool.submit(thread_nice_value).result()
    finally:
        pool.shutdown()
    assert thread_nice_value() == before  # the event loop's thread keeps its priority
    assert worker == _expected_nice()


@linux_only
async def test_the_wallets_pin_hashes_run_on_lowered_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int | None] = []

    def checkpw(password: bytes, hashed: bytes) -> bool:
        seen.append(thread_nice_value())
        return True

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    hasher = BcryptPinHasher(PEPPER, rounds=4)
    try:
        assert await hasher.verify("2468", "$2b$04$" + "a" * 53, movement=True)
        assert await hasher.verify("2468", "$2b$04$" + "a" * 53)  # the owner's: lower still
    finally:
        hasher.close()
    here = thread_nice_value()
    assert here is not None
    assert seen == [_expected_nice(), min(MAX_NICE, here + DEFAULT_NICENESS + 5)]


@linux_only
async def test_auths_password_hashes_run_on_lowered_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int | None] = []

    def checkpw(password: bytes, hashed: bytes) -> bool:
        seen.append(thread_nice_value())
        return True

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    hasher = BcryptPasswordHasher(PEPPER, rounds=4, workers=1)
    try:
        assert await hasher.verify("correct horse", "$2b$04$" + "a" * 53)
    finally:
        hasher.close()
    assert seen == [_expected_nice()]


def test_elsewhere_lowering_is_a_no_op_and_the_pool_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(os, "setpriority", lambda *a: calls.append(a), raising=False)

    assert not lowers_thread_priority()
    assert thread_nice_value() is None
    assert lower_current_thread_priority() is False
    pool = low_priority_executor(1, thread_name_prefix="test-low")
    try:
        assert pool.submit(lambda: 6 * 7).result() == 42
    finally:
        pool.shutdown()
    assert calls == []


def test_a_refused_priority_change_never_breaks_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError("not allowed here")

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "setpriority", refuse, raising=False)
    monkeypatch.setattr(os, "getpriority", lambda *a: 0, raising=False)

    assert lower_current_thread_priority() is False
    pool = low_priority_executor(1, thread_name_prefix="test-low")
    try:
        assert pool.submit(threading.get_native_id).result() != threading.get_native_id()
    finally:
        pool.shutdown()


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        low_priority_executor(0, thread_name_prefix="test-low")
