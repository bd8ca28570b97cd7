"""The password guessability estimate (`domain.policies.guessability_violations`) off the
event loop: on one low-priority thread of its own, so a sign-up whose password makes zxcvbn
work for tens of milliseconds holds neither auth's loop (sign-ins, refreshes, the revocation
feed its peers poll every quarter second) nor more than one core's share. Estimates queue
behind each other; how many arrive is bounded by the sign-up throttle and the password
change's own (each runs after them).
"""

from __future__ import annotations

import asyncio
import functools

from vaultpay_auth.domain.policies import guessability_violations
from vaultpay_common.cpu_pool import low_priority_executor
from vaultpay_common.errors import FieldViolation

__all__ = ["ThreadedPasswordEstimator"]


class ThreadedPasswordEstimator:
    """`PasswordEstimator` on one low-priority thread; `close` at shutdown."""

    def __init__(self) -> None:
        self._pool = low_priority_executor(1, thread_name_prefix="password-estimate")

    async def __call__(
        self, password: str, email: str, field: str, *, full_name: str
    ) -> list[FieldViolation]:
        work = functools.partial(
            guessability_violations, password, email, field, full_name=full_name
        )
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
