"""The server's password estimate runs off the event loop, on one thread of its own."""

from __future__ import annotations

import threading

import pytest

from vaultpay_auth.adapters import password_estimate
from vaultpay_auth.adapters.password_estimate import ThreadedPasswordEstimator
from vaultpay_auth.domain.policies import guessability_violations
from vaultpay_common.errors import FieldViolation


async def test_the_estimate_runs_on_its_own_thread_and_answers_as_the_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []

    def recording(password: str, email: str, field: str, *, full_name: str) -> list[FieldViolation]:
        threads.append(threading.current_thread().name)
        return guessability_violations(password, email, field, full_name=full_name)

    monkeypatch.setattr(password_estimate, "guessability_violations", recording)
    estimator = ThreadedPasswordEstimator()
    try:
        weak = await estimator("qwerty123456", "ada@example.com", "password", full_name="Ada")
        strong = await estimator(
            "correct horse 42 battery", "ada@example.com", "password", full_name=""
        )
    finally:
        estimator.close()
    assert [v.field for v in weak] == ["password"] and strong == []
    assert len(threads) == 2 and all(name.startswith("password-estimate") for name in threads)
    assert threading.main_thread().name not in threads
