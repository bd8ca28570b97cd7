"""AdminVerifyLedger answers within its caller's deadline, or 12 s without one (a JSON call
through the gateway carries none, and the gateway cut the call at 15 s: a 504 on any real
ledger, each retry running every full scan again): the checks that ran, the rest marked not
run. One verification at a time per process; the CLI still runs to the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from vaultpay.transfer.v1 import transfer_pb2
from vaultpay_common.context import DEADLINE, remaining_seconds
from vaultpay_common.errors import DeadlineExceededError, ErrorKind
from vaultpay_transfer.adapters.verify_sql import CHECK_COUNT, CHECK_NAMES
from vaultpay_transfer.domain.model import LedgerCheck
from vaultpay_transfer.entrypoints.servicers import (
    VERIFY_ANSWER_WITHIN_SECONDS,
    TransferAdminServicer,
)
from vaultpay_transfer.service_layer.ports import CheckDone
from vaultpay_transfer.service_layer.verification import (
    ANSWER_MARGIN_SECONDS,
    ChecksNotFinishedError,
    LedgerVerification,
    LedgerVerificationInProgressError,
)


class _Clock:
    def now(self) -> datetime:
        return datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class _Auditor:
    """Runs the first `runs` checks (all of them when None), then is cut short as the SQL
    auditor is at its bound; remembers the time it was given; waits for `gate` first."""

    def __init__(self, runs: int | None = None, gate: asyncio.Event | None = None) -> None:
        self.runs = runs
        self.gate = gate
        self.given: list[float | None] = []
        self.entered = asyncio.Event()

    async def check(self, on_check: CheckDone | None = None) -> Sequence[LedgerCheck]:
        self.given.append(remaining_seconds())
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        runs = len(CHECK_NAMES) if self.runs is None else self.runs
        finished = []
        for name in CHECK_NAMES[:runs]:
            finished.append(LedgerCheck(name, name != "total_balance_zero", "checked"))
            if on_check is not None:
                on_check(finished[-1])
        if runs < len(CHECK_NAMES):
            raise ChecksNotFinishedError(finished, CHECK_NAMES[runs:])
        return finished


def _verification(auditor: _Auditor) -> LedgerVerification:
    return LedgerVerification(auditor, _Clock())


def test_nineteen_checks() -> None:
    assert CHECK_COUNT == len(CHECK_NAMES) == 19
    assert CHECK_NAMES[3] == "wallet_postings_in_wallet_currency"
    assert CHECK_NAMES[-1] == "audit_chain_intact"


async def test_the_answer_lists_the_checks_that_ran_then_the_rest_not_run() -> None:
    answer = await _verification(_Auditor(runs=5)).answer(12.0)
    assert answer.not_run == CHECK_NAMES[5:]
    assert not answer.complete
    report = answer.report
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert [c.ok for c in report.checks[:5]] == [True, True, False, True, True]
    assert all(not c.ok for c in report.checks[5:])
    assert all(
        c.detail.startswith("not run: this call answers within 12 s") for c in report.checks[5:]
    )
    assert "vaultpay-transfer verify-ledger" in report.checks[5].detail
    assert not report.ok

    whole = await _verification(_Auditor()).answer(12.0)
    assert whole.complete and whole.not_run == ()
    assert len(whole.report.checks) == 19


@pytest.mark.parametrize(
    ("callers", "checks_get"),
    [
        (None, VERIFY_ANSWER_WITHIN_SECONDS - ANSWER_MARGIN_SECONDS),  # a JSON call: 10 s
        (5.0, 5.0 - ANSWER_MARGIN_SECONDS),
        (60.0, 60.0 - ANSWER_MARGIN_SECONDS),
        (1.0, 0.0),  # less than the margin: nothing runs, all answered not run
    ],
)
async def test_the_checks_stop_before_the_answer_is_due(
    callers: float | None, checks_get: float
) -> None:
    async def call() -> float | None:
        DEADLINE.set(None if callers is None else time.monotonic() + callers)
        before = DEADLINE.get()
        auditor = _Auditor()
        await _verification(auditor).answer(VERIFY_ANSWER_WITHIN_SECONDS)
        assert DEADLINE.get() == before  # the caller's own, put back
        return auditor.given[0]

    given = await asyncio.create_task(call())
    assert given is not None and checks_get - 0.5 < given <= checks_get
    assert VERIFY_ANSWER_WITHIN_SECONDS == 12.0  # inside the gateway's 15 s


async def test_the_cli_path_still_raises_past_its_bound() -> None:
    """`verify` (the CLI's) keeps every check to its own bound: the cut is its caller's to
    report (exit 3), with what ran and what did not."""
    with pytest.raises(ChecksNotFinishedError) as cut:
        await _verification(_Auditor(runs=3)).verify()
    assert isinstance(cut.value, DeadlineExceededError)
    assert [c.name for c in cut.value.finished] == list(CHECK_NAMES[:3])
    assert cut.value.not_run == CHECK_NAMES[3:]


async def test_one_verification_at_a_time() -> None:
    gate = asyncio.Event()
    auditor = _Auditor(gate=gate)
    verification = _verification(auditor)
    first = asyncio.create_task(verification.answer(12.0))
    await asyncio.wait_for(auditor.entered.wait(), 5)

    for second in (verification.answer(12.0), verification.verify()):
        with pytest.raises(LedgerVerificationInProgressError) as refused:
            await second
        assert refused.value.kind is ErrorKind.ABORTED
        assert refused.value.reason == "LEDGER_VERIFICATION_IN_PROGRESS"
        assert refused.value.retry_after_seconds == 12
        assert "another ledger verification is running" in refused.value.message
    assert len(auditor.given) == 1  # the refused calls scanned nothing

    gate.set()
    assert (await first).complete
    assert (await verification.answer(12.0)).complete  # free again

    # ... and after a call that was cancelled (its caller went away) or cut short.
    gate.clear()
    auditor.entered.clear()
    cancelled = asyncio.create_task(verification.answer(12.0))
    await asyncio.wait_for(auditor.entered.wait(), 5)  # it reached the checks
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    gate.set()
    assert (await verification.answer(12.0)).complete
    assert not (await _verification(_Auditor(runs=0)).answer(12.0)).complete


async def test_admin_verify_ledger_marks_the_checks_not_run() -> None:
    servicer = TransferAdminServicer(
        cast(Any, None), _verification(_Auditor(runs=17)), cast(Any, None)
    )
    reply = await servicer.AdminVerifyLedger(
        transfer_pb2.AdminVerifyLedgerRequest(), cast(Any, None)
    )
    assert not reply.ok
    assert [c.name for c in reply.checks] == list(CHECK_NAMES)
    assert [c.name for c in reply.checks if c.not_run] == list(CHECK_NAMES[17:])
    assert all(not c.ok and c.detail.startswith("not run:") for c in reply.checks[17:])
    assert not any(c.not_run for c in reply.checks[:17])
    failed = [c.name for c in reply.checks if not c.ok and not c.not_run]
    assert failed == ["total_balance_zero"]  # the one that ran and failed
