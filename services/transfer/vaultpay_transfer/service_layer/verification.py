"""AdminVerifyLedger and `vaultpay-transfer verify-ledger`: the ledger proves itself.

The CLI runs every check, bounded by its `--within` (exit 3 past it). The RPC answers within
its caller's deadline, or `answer_within` seconds when the caller sent none (a JSON call
through the gateway carries none, and the gateway ends a unary call at 15 s: a 504 whose
retries ran every full scan again): the checks run in order until the answer is due, and the
answer lists those that ran and marks the rest not run. One verification runs at a time in a
process: another asked meanwhile is refused LEDGER_VERIFICATION_IN_PROGRESS, not queued behind
it as another set of full scans.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from vaultpay_common.clock import Clock
from vaultpay_common.context import DEADLINE, remaining_seconds
from vaultpay_common.errors import AbortedError, DeadlineExceededError
from vaultpay_transfer.domain.model import LedgerCheck, LedgerReport
from vaultpay_transfer.service_layer.ports import CheckDone, LedgerAuditor

__all__ = [
    "ANSWER_MARGIN_SECONDS",
    "ChecksNotFinishedError",
    "LedgerAnswer",
    "LedgerVerification",
    "LedgerVerificationInProgressError",
]

# What the RPC keeps of its time for ending the check under way (its statement cancelled, the
# snapshot rolled back) and answering: the checks stop this long before the answer is due.
ANSWER_MARGIN_SECONDS = 2.0


class ChecksNotFinishedError(DeadlineExceededError):
    """The checks' bound (the caller's deadline) came before every check had run. `finished`
    are those that ran, in order (each heard by `on_check`); `not_run` names the rest, in
    order, the one cut short first."""

    def __init__(self, finished: Sequence[LedgerCheck], not_run: Sequence[str]) -> None:
        super().__init__(
            f"the ledger's checks ran out of time: {len(not_run)} of "
            f"{len(finished) + len(not_run)} not run"
        )
        self.finished = tuple(finished)
        self.not_run = tuple(not_run)


class LedgerVerificationInProgressError(AbortedError):
    """Another verification is running in this transfer process (one at a time: each is a set
    of full scans of the ledger). Retry once it has answered; it answers within its own
    caller's deadline, 12 s for a call through the gateway."""

    reason = "LEDGER_VERIFICATION_IN_PROGRESS"
    default_message = (
        "another ledger verification is running in this process: retry once it has answered"
    )
    retry_after_seconds = 12


@dataclass(frozen=True, slots=True)
class LedgerAnswer:
    """AdminVerifyLedger's answer: `report` lists every check, those in `not_run` (in order,
    after the ones that ran) with `ok` False and a detail saying why they did not run."""

    report: LedgerReport
    not_run: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.not_run


class LedgerVerification:
    def __init__(self, auditor: LedgerAuditor, clock: Clock) -> None:
        self._auditor = auditor
        self._clock = clock
        self._running = False

    async def verify(self, on_check: CheckDone | None = None) -> LedgerReport:
        """Every check; `on_check` hears each as it completes (progress for the CLI).
        Past the caller's deadline ChecksNotFinishedError (a DeadlineExceededError) says which
        ran and which did not."""
        self._start()
        try:
            at = self._clock.now()
            return LedgerReport(tuple(await self._auditor.check(on_check)), at)
        finally:
            self._running = False

    async def answer(self, answer_within: float) -> LedgerAnswer:
        """The checks, in order, for as long as the caller's deadline leaves (`answer_within`
        seconds when it sent none) less ANSWER_MARGIN_SECONDS; the checks the time did not
        reach are answered not run, never as a DEADLINE_EXCEEDED without any verdict."""
        left = remaining_seconds()
        bound = answer_within if left is None else left
        self._start()
        # The auditor bounds its statements (and its audit chain's read) by DEADLINE: lowered,
        # for this call only, to when the checks must stop.
        token = DEADLINE.set(time.monotonic() + max(0.0, bound - ANSWER_MARGIN_SECONDS))
        try:
            at = self._clock.now()
            try:
                checks = tuple(await self._auditor.check())
            except ChecksNotFinishedError as cut:
                why = (
                    f"not run: this call answers within {bound:.0f} s (its deadline, or "
                    f"{answer_within:.0f} s without one) and the checks before it took that "
                    "time; every check runs in `vaultpay-transfer verify-ledger` (best on a "
                    "replica) or in a call with a longer deadline"
                )
                skipped = tuple(LedgerCheck(name, False, why) for name in cut.not_run)
                return LedgerAnswer(LedgerReport(cut.finished + skipped, at), cut.not_run)
            return LedgerAnswer(LedgerReport(checks, at))
        finally:
            DEADLINE.reset(token)
            self._running = False

    def _start(self) -> None:
        if self._running:
            raise LedgerVerificationInProgressError()
        self._running = True
