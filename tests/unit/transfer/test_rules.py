"""Pure rules of the transfer domain: outcome codes to errors, notification texts, the
payout worker's decisions and the simulated bank."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from tests.fakes.transfer import NOW, FakePayoutLedger, ScriptedBank, payout_lease
from tests.support import eventually
from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.errors import ErrorKind, ValidationError, metadata_time
from vaultpay_common.idempotency import IdempotencyKeyInUseError
from vaultpay_common.outbox import OutboxEvent, PermanentDeliveryError, UnknownToThisBuildError
from vaultpay_transfer.adapters.bank import AccountHasher, SimulatedBank
from vaultpay_transfer.adapters.deliveries import transfer_outbox_handlers
from vaultpay_transfer.domain.errors import LimitExceededError
from vaultpay_transfer.domain.notifications import NotificationText, notification_text
from vaultpay_transfer.domain.outcomes import refusal_error
from vaultpay_transfer.domain.validation import (
    REFUSING_TEST_ACCOUNT,
    BankAccountInput,
    bank_account,
    check_note,
    check_recipient,
)
from vaultpay_transfer.service_layer.payouts import (
    ALERT_AFTER_ATTEMPTS,
    CONTRADICTION,
    PayoutWorker,
)
from vaultpay_transfer.service_layer.ports import PayoutClaim, PayoutLease
from vaultpay_wallet.domain.errors import WalletFrozenError as WalletsFrozenError


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        ("INSUFFICIENT_BALANCE", ErrorKind.FAILED_PRECONDITION, "INSUFFICIENT_BALANCE"),
        ("WALLET_FROZEN", ErrorKind.FAILED_PRECONDITION, "WALLET_FROZEN"),
        ("WALLET_CLOSED", ErrorKind.FAILED_PRECONDITION, "WALLET_CLOSED"),
        ("RECIPIENT_CLOSED", ErrorKind.FAILED_PRECONDITION, "WALLET_CLOSED"),
        ("RECIPIENT_NOT_FOUND", ErrorKind.NOT_FOUND, "RECIPIENT_NOT_FOUND"),
        ("WALLET_NOT_FOUND", ErrorKind.NOT_FOUND, "WALLET_NOT_FOUND"),
        ("SELF_TRANSFER", ErrorKind.INVALID_ARGUMENT, "SELF_TRANSFER"),
        ("KYC_NOT_VERIFIED", ErrorKind.FAILED_PRECONDITION, "KYC_NOT_VERIFIED"),
        ("CURRENCY_MISMATCH", ErrorKind.FAILED_PRECONDITION, "CURRENCY_MISMATCH"),
        ("PAYMENT_REFERENCE_USED", ErrorKind.ALREADY_EXISTS, "PAYMENT_REFERENCE_USED"),
        ("IDEMPOTENCY_KEY_REUSED", ErrorKind.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED"),
        ("IDEMPOTENCY_KEY_IN_USE", ErrorKind.ABORTED, "IDEMPOTENCY_KEY_IN_USE"),
        (
            "PER_TRANSACTION_LIMIT_EXCEEDED",
            ErrorKind.RESOURCE_EXHAUSTED,
            "PER_TRANSACTION_LIMIT_EXCEEDED",
        ),
        ("DAILY_LIMIT_EXCEEDED", ErrorKind.RESOURCE_EXHAUSTED, "DAILY_LIMIT_EXCEEDED"),
        ("MONTHLY_LIMIT_EXCEEDED", ErrorKind.RESOURCE_EXHAUSTED, "MONTHLY_LIMIT_EXCEEDED"),
    ],
)
def test_every_ledger_refusal_has_its_code_and_stable_reason(
    code: str, kind: ErrorKind, reason: str
) -> None:
    error = refusal_error(code, {}, now=NOW)
    assert (error.kind, error.reason) == (kind, reason)


@pytest.mark.parametrize(
    ("movement", "requested", "says", "mismatch"),
    [
        ("top_up", "USD", "the amount of a top-up must be in INR, not USD", "amount"),
        ("withdraw", "USD", "the amount of a withdrawal must be in INR, not USD", "amount"),
        ("send", "USD", "the amount of a send must be in INR, not USD", "amount"),
        ("send", "INR", "money can be sent only to a wallet in INR", "recipient"),
    ],
)
def test_a_currency_mismatch_says_what_mismatched_for_each_movement(
    movement: Literal["send", "top_up", "withdraw"], requested: str, says: str, mismatch: str
) -> None:
    error = refusal_error(
        "CURRENCY_MISMATCH", {"currency": "INR"}, now=NOW, movement=movement, currency=requested
    )
    assert (error.kind, error.reason) == (ErrorKind.FAILED_PRECONDITION, "CURRENCY_MISMATCH")
    assert says in error.message
    assert error.metadata == {"currency": "INR", "mismatch": mismatch}
    if movement != "send":  # QA: a top-up or withdrawal was told about a send's recipient
        assert "recipient" not in error.message and "send" not in error.message


_STAFF_END = datetime(2026, 12, 24, 18, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("source", "until", "message", "metadata"),
    [
        (
            "SELF",
            None,
            "you froze this wallet; unfreeze it to move money",
            {"freeze_reason": "FREEZE_REASON_SELF"},
        ),
        (
            "ADMIN",
            _STAFF_END,
            "the wallet is frozen by staff until 2026-12-24T18:30:00Z, which only staff can lift",
            {"freeze_reason": "FREEZE_REASON_ADMIN", "until": "2026-12-24T18:30:00Z"},
        ),
        (
            "ADMIN",
            None,
            "the wallet is frozen by staff, which only staff can lift",
            {"freeze_reason": "FREEZE_REASON_ADMIN"},
        ),
    ],
)
def test_a_ledger_wallet_frozen_with_its_freeze_tells_what_wallets_pin_check_tells(
    source: Literal["SELF", "ADMIN"], until: datetime | None, message: str, metadata: dict[str, str]
) -> None:
    """The ledger adapter fills WALLET_FROZEN's details with the freeze that holds the wallet:
    the refusal carries wallet's metadata and message (a TopUp's, or a send's frozen after the
    PIN check), word for word."""
    details = {"freeze_reason": f"FREEZE_REASON_{source}"}
    if until is not None:
        details["until"] = metadata_time(until)
    error = refusal_error("WALLET_FROZEN", details, now=NOW, movement="top_up")
    assert (error.kind, error.reason) == (ErrorKind.FAILED_PRECONDITION, "WALLET_FROZEN")
    assert (error.message, error.metadata) == (message, metadata)
    wallets = WalletsFrozenError.held_by(source, until)
    assert (error.message, error.metadata) == (wallets.message, wallets.metadata)


@pytest.mark.parametrize("movement", ["send", "withdraw"])
def test_a_send_locked_out_after_its_pin_check_is_pin_locked(
    movement: Literal["send", "withdraw"],
) -> None:
    """Wrong PINs of other requests locked the wallet between this movement's passed check and
    its ledger call: PIN_LOCKED with the lockout's end, as wallet's check now answers (review
    of 2026-12-04; it was WALLET_FROZEN). A TopUp, which checks no PIN, is told the freeze."""
    until = metadata_time(NOW + timedelta(hours=24))
    details = {"freeze_reason": "FREEZE_REASON_PIN_LOCKOUT", "until": until}
    error = refusal_error("WALLET_FROZEN", details, now=NOW, movement=movement)
    assert (error.kind, error.reason, error.metadata) == (
        ErrorKind.FAILED_PRECONDITION,
        "PIN_LOCKED",
        {"until": until},
    )
    assert error.message == f"too many wrong PINs; the wallet is locked until {until}"
    top_up = refusal_error("WALLET_FROZEN", details, now=NOW, movement="top_up")
    assert (top_up.reason, top_up.metadata["freeze_reason"]) == (
        "WALLET_FROZEN",
        "FREEZE_REASON_PIN_LOCKOUT",
    )


@pytest.mark.parametrize("details", [{}, {"freeze_reason": "FREEZE_REASON_UNSPECIFIED"}])
def test_a_ledger_wallet_frozen_without_its_freeze_is_bare(details: dict[str, str]) -> None:
    """No freeze read (FROZEN with none to explain it, or the read failed): the bare refusal."""
    error = refusal_error("WALLET_FROZEN", details, now=NOW)
    assert (error.reason, error.message, error.metadata) == (
        "WALLET_FROZEN",
        "the wallet is frozen",
        {},
    )


def test_a_limit_refusal_tells_the_limit_the_usage_and_what_remains() -> None:
    error = refusal_error(
        "DAILY_LIMIT_EXCEEDED",
        {"action": "send", "limit_minor": "5000", "used_minor": "4500", "currency": "INR"},
        now=NOW,
    )
    assert isinstance(error, LimitExceededError)
    assert error.metadata == {
        "action": "send",
        "limit_minor": "5000",
        "used_minor": "4500",
        "remaining_minor": "500",
        "currency": "INR",
    }


def test_a_limit_refusal_says_the_amounts_as_the_notifications_do_and_in_minor_units() -> None:
    error = refusal_error(
        "PER_TRANSACTION_LIMIT_EXCEEDED",
        {"action": "send", "limit_minor": "10000000", "used_minor": "0", "currency": "INR"},
        now=NOW,
    )
    assert error.message == (
        "the amount is above the per-transaction limit (send: limit 100,000.00 INR, used "
        "0.00 INR, remaining 100,000.00 INR; in minor units: limit 10000000, used 0, "
        "remaining 10000000)"
    )
    assert error.metadata["limit_minor"] == "10000000"  # programs keep the minor units


def test_an_unknown_outcome_is_a_bug_not_a_refusal() -> None:
    with pytest.raises(RuntimeError):
        refusal_error("SOMETHING_NEW", {}, now=NOW)
    assert isinstance(
        refusal_error("IDEMPOTENCY_KEY_IN_USE", {}, now=NOW), IdempotencyKeyInUseError
    )


@pytest.mark.parametrize(
    ("now", "code", "resets"),
    [
        # 23:59:30 in Kolkata (UTC+5:30): the day's window resets in 30 s.
        (datetime(2026, 12, 3, 18, 29, 30, tzinfo=UTC), "DAILY_LIMIT_EXCEEDED", 30),
        # 00:00:00.5 in Kolkata: a whole day less half a second, rounded up.
        (datetime(2026, 12, 2, 18, 30, 0, 500_000, tzinfo=UTC), "DAILY_LIMIT_EXCEEDED", 86_400),
        # 31 December, 12:00 in Kolkata: the month (and the year) ends in 12 h.
        (datetime(2026, 12, 31, 6, 30, tzinfo=UTC), "MONTHLY_LIMIT_EXCEEDED", 12 * 3600),
        # 28 February 2027, 23:00 in Kolkata: March starts in an hour.
        (datetime(2027, 2, 28, 17, 30, tzinfo=UTC), "MONTHLY_LIMIT_EXCEEDED", 3600),
    ],
)
def test_a_daily_or_monthly_limit_says_when_its_window_resets(
    now: datetime, code: str, resets: int
) -> None:
    # The gateway turns RetryInfo into Retry-After: QA found the limits' 429s without it.
    assert refusal_error(code, {}, now=now).retry_after_seconds == resets


def test_a_per_transaction_limit_is_not_cleared_by_waiting() -> None:
    error = refusal_error("PER_TRANSACTION_LIMIT_EXCEEDED", {}, now=NOW)
    assert error.retry_after_seconds is None


def test_an_amount_above_a_windows_whole_limit_is_not_told_to_wait() -> None:
    # A daily limit of 1,000 with nothing used refuses a send of 5,000 today and tomorrow.
    details = {"action": "send", "limit_minor": "1000", "used_minor": "0", "currency": "INR"}
    refused = refusal_error("DAILY_LIMIT_EXCEEDED", details, now=NOW, amount_minor=5_000)
    assert refused.retry_after_seconds is None
    fits = refusal_error("DAILY_LIMIT_EXCEEDED", details, now=NOW, amount_minor=1_000)
    assert fits.retry_after_seconds is not None


# 23:59:30 on 3 December in Kolkata: the day resets in 30 s, the month 28 days later.
_LATE = datetime(2026, 12, 3, 18, 29, 30, tzinfo=UTC)
_MONTH_END = 28 * 86_400 + 30


def _daily_refusal(monthly_limit: int, monthly_used: int) -> dict[str, str]:
    """A daily limit of 1,000 with 800 used today, and the month's figures the ledger adds."""
    return {
        "action": "send",
        "limit_minor": "1000",
        "used_minor": "800",
        "currency": "INR",
        "monthly_limit_minor": str(monthly_limit),
        "monthly_used_minor": str(monthly_used),
    }


@pytest.mark.parametrize(
    ("monthly_limit", "monthly_used", "amount", "retry_after"),
    [
        # The month has room for 500 more: tomorrow the send goes through.
        (10_000, 9_000, 500, 30),
        (10_000, 9_500, 500, 30),
        # Tomorrow the month still holds its 9,800: only the month's end lets 500 through.
        (10_000, 9_800, 500, _MONTH_END),
        # Above the month's whole limit: no reset helps, so no Retry-After.
        (400, 0, 500, None),
    ],
)
def test_a_daily_refusal_says_to_retry_when_the_month_would_also_let_the_send_through(
    monthly_limit: int, monthly_used: int, amount: int, retry_after: int | None
) -> None:
    details = _daily_refusal(monthly_limit, monthly_used)
    refused = refusal_error("DAILY_LIMIT_EXCEEDED", details, now=_LATE, amount_minor=amount)
    assert refused.retry_after_seconds == retry_after


def test_on_the_months_last_day_a_daily_refusal_waits_for_midnight_either_way() -> None:
    # 31 December, 23:00 in Kolkata: the day and the month both end in an hour.
    last_day = datetime(2026, 12, 31, 17, 30, tzinfo=UTC)
    details = _daily_refusal(monthly_limit=10_000, monthly_used=9_800)
    refused = refusal_error("DAILY_LIMIT_EXCEEDED", details, now=last_day, amount_minor=500)
    assert refused.retry_after_seconds == 3600


def test_a_daily_refusal_without_the_months_figures_waits_for_the_day() -> None:
    # What the ledger answered before t0006: the day's figures alone.
    details = {"action": "send", "limit_minor": "1000", "used_minor": "800", "currency": "INR"}
    refused = refusal_error("DAILY_LIMIT_EXCEEDED", details, now=_LATE, amount_minor=500)
    assert refused.retry_after_seconds == 30
    assert "monthly_limit_minor" not in refused.metadata


# The ledger decided at 23:59:59.990 on 3 December in Kolkata (t0016's `decided_at`); the
# service's clock read the reply at 00:00:00.010 on the 4th.
_DECIDED_LATE = "2026-12-03T23:59:59.99+05:30"
_READ_AFTER_MIDNIGHT = datetime(2026, 12, 3, 18, 30, 0, 10_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("code", "retry_after"),
    [
        # The day the ledger counted ends in 10 ms: retry in a second, not tomorrow.
        ("DAILY_LIMIT_EXCEEDED", 1),
        # The month it counted is December, which has 28 days left.
        ("MONTHLY_LIMIT_EXCEEDED", 28 * 86_400 + 1),
    ],
)
def test_a_limit_refusal_waits_for_the_end_of_the_window_the_ledger_decided_in(
    code: str, retry_after: int
) -> None:
    details = {"action": "send", "limit_minor": "1000", "used_minor": "800", "currency": "INR"}
    refused = refusal_error(
        code,
        {**details, "decided_at": _DECIDED_LATE},
        now=_READ_AFTER_MIDNIGHT,
        amount_minor=500,
    )
    assert refused.retry_after_seconds == retry_after
    # The service's own clock would have said a whole day (the review's case).
    by_service = refusal_error(code, details, now=_READ_AFTER_MIDNIGHT, amount_minor=500)
    assert by_service.retry_after_seconds != retry_after


def test_a_limit_refusal_counts_its_wait_from_the_ledgers_clock_not_the_services() -> None:
    # A service host 12 hours ahead of the database (its clock says 11:59:30 on the 4th): the
    # window and the wait are the ledger's.
    details = {"action": "send", "limit_minor": "1000", "used_minor": "800", "currency": "INR"}
    decided = {**details, "decided_at": "2026-12-03T18:29:30+00:00"}  # 23:59:30 in Kolkata
    ahead = datetime(2026, 12, 4, 6, 29, 30, tzinfo=UTC)
    refused = refusal_error("DAILY_LIMIT_EXCEEDED", decided, now=ahead, amount_minor=500)
    assert refused.retry_after_seconds == 30
    assert "decided_at" not in refused.metadata


@pytest.mark.parametrize("told", ["", "not a time", "2026-12-03T23:59:59.99"])
def test_a_limit_refusal_without_a_usable_decision_time_falls_back_to_the_services_clock(
    told: str,
) -> None:
    # A function older than t0016 tells no time; one without an offset is not trusted.
    details = {"action": "send", "limit_minor": "1000", "used_minor": "800", "currency": "INR"}
    if told:
        details["decided_at"] = told
    refused = refusal_error("DAILY_LIMIT_EXCEEDED", details, now=_LATE, amount_minor=500)
    assert refused.retry_after_seconds == 30


def test_notifications_say_what_moved_with_whom_and_never_the_account_number() -> None:
    facts = {
        "amount_minor": "125050",
        "currency": "INR",
        "reference": "VP-TXN-ABCD2345",
        "counterparty": "Bob",
        "balance_after_minor": "5000",
    }
    sent = notification_text("MONEY_SENT", facts)
    assert sent.title == "You sent 1,250.50 INR"
    assert "Bob" in sent.body and "VP-TXN-ABCD2345" in sent.body and "50.00 INR" in sent.body
    assert notification_text("MONEY_RECEIVED", facts).kind == "MONEY_RECEIVED"
    back = notification_text(
        "WITHDRAWAL_RETURNED", {**facts, "counterparty": "HDFC0001234 ····9012"}
    )
    assert back.kind == "WITHDRAWAL" and "····9012" in back.body
    for text in (sent, back):
        assert len(text.title) <= 120 and len(text.body) <= 1000


@pytest.mark.parametrize("spelling", ["vpy-abcd\ufb00", "vpy-abc12\u0131", "vpy-abcd\ufb06"])
def test_a_recipient_spelt_with_letters_that_upper_case_into_ascii_is_refused(
    spelling: str,
) -> None:
    """str.upper() spells U+FB00 as "FF", U+0131 as "I", U+FB06 as "ST": the id paid would
    not be the one written (review of 2026-12-04)."""
    with pytest.raises(ValidationError):
        check_recipient(spelling)
    assert check_recipient(" vpy-abcdff ") == "VPY-ABCDFF"


def test_a_senders_chosen_name_is_quoted_beside_its_wallet_id() -> None:
    """A display name is anyone's words: unquoted, "VaultPay Security. Your wallet is locked,
    call +91 …" sent with 0.01 INR read as ours (review of 2026-12-04)."""
    facts = {
        "amount_minor": "1",
        "currency": "INR",
        "reference": "VP-TXN-ABCD2345",
        "counterparty": 'VaultPay Security" says: call +91 90000 00000 \u201cnow\u201d',
        "counterparty_wallet_id": "VPY-AB12CD",
        "balance_after_minor": "1",
    }
    received = notification_text("MONEY_RECEIVED", facts)
    assert received.body == (
        "0.01 INR from \"VaultPay Security' says: call +91 90000 00000 'now'\" (VPY-AB12CD), "
        "reference VP-TXN-ABCD2345. Balance: 0.01 INR."
    )
    sent = notification_text("MONEY_SENT", {**facts, "counterparty": "Bob"})
    assert (
        sent.body == '0.01 INR to "Bob" (VPY-AB12CD), reference VP-TXN-ABCD2345. Balance: 0.01 INR.'
    )
    # Every other mark that reads as a double quote (low, reversed, angle, fullwidth, prime,
    # CJK) is made a single one too; a name's own single quotes and letters stay.
    marks = "\u201e\u201f\u00ab\u00bb\u2039\u203a\uff02\u2033\u301d\u301e\u301f"
    named = notification_text("MONEY_RECEIVED", {**facts, "counterparty": f"O'Neil {marks}"})
    singles = "'" * len(marks)
    assert named.body.startswith('0.01 INR from "O' + "'" + "Neil " + singles + '" (VPY-AB12CD)')


async def test_a_notification_kind_of_another_build_is_retried_not_dead_lettered() -> None:
    """Mid-rollout a newer build's kind reaches this process: retried, for a process that
    knows it (review of 2026-12-05: it was dead-lettered at once)."""

    class Notifier:
        async def notify(self, event_id: str, user_id: str, text: NotificationText) -> None:
            raise AssertionError("nothing to notify")

    handler = transfer_outbox_handlers(Notifier())["notification.create"]
    facts = {
        "kind": "REFUND_ISSUED",
        "user_id": "u",
        "amount_minor": "100",
        "currency": "INR",
        "reference": "VP-TXN-ABCD2345",
    }
    # The facts of this build's kinds, or other ones (no amount): the kind decides first.
    for event_facts in (facts, {"kind": "DISPUTE_OPENED", "user_id": "u", "dispute_id": "d"}):
        event = OutboxEvent("e3", "transfer", "notification.create", "", event_facts, 1, NOW)
        with pytest.raises(UnknownToThisBuildError) as retried:
            await handler(event)
        assert not isinstance(retried.value, PermanentDeliveryError)


async def test_a_malformed_notification_event_is_dead_lettered_not_retried() -> None:
    seen: list[NotificationText] = []

    class Notifier:
        async def notify(self, event_id: str, user_id: str, text: NotificationText) -> None:
            seen.append(text)

    handler = transfer_outbox_handlers(Notifier())["notification.create"]
    event = OutboxEvent("e1", "transfer", "notification.create", "", {"kind": "TOP_UP"}, 1, NOW)
    with pytest.raises(PermanentDeliveryError):
        await handler(event)
    good = {
        "kind": "TOP_UP",
        "user_id": "u",
        "amount_minor": "100",
        "currency": "INR",
        "reference": "VP-TXN-ABCD2345",
        "counterparty": "UPI 0001",
    }
    await handler(OutboxEvent("e2", "transfer", "notification.create", "", good, 1, NOW))
    assert [t.kind for t in seen] == ["TOP_UP"]


async def test_the_payout_worker_settles_returns_and_leaves_what_the_bank_cannot_answer() -> None:
    ledger = FakePayoutLedger(
        pending=[
            payout_lease("t-paid", "good", 100),
            payout_lease("t-refused", "bad", 200),
            payout_lease("t-later", "flaky", 300),
        ]
    )
    worker = PayoutWorker(ledger, ScriptedBank(refusing={"bad"}, down={"flaky"}))
    assert await worker.run_once() == 2
    assert ledger.settled == ["t-paid"]
    assert ledger.returned == [("t-refused", "account closed")]


async def test_a_payout_the_bank_keeps_failing_is_kept_and_alerts_from_its_7th_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Leased after 5 and 6 failed bank calls: the claims count the 6th and the 7th (t0021),
    and the 7th failure is the ERROR."""
    early = payout_lease("t-early", "flaky", 100, ALERT_AFTER_ATTEMPTS - 2)
    late = payout_lease("t-late", "flaky", 100, ALERT_AFTER_ATTEMPTS - 1)
    ledger = FakePayoutLedger(pending=[early, late])
    with caplog.at_level(logging.WARNING, logger="vaultpay_transfer.service_layer.payouts"):
        assert await PayoutWorker(ledger, ScriptedBank(down={"flaky"})).run_once() == 0
    levels = {getattr(r, "transaction_id", ""): r.levelno for r in caplog.records}
    assert levels == {"t-early": logging.WARNING, "t-late": logging.ERROR}
    attempts = {getattr(r, "transaction_id", ""): getattr(r, "attempts", 0) for r in caplog.records}
    assert attempts == {"t-early": ALERT_AFTER_ATTEMPTS - 1, "t-late": ALERT_AFTER_ATTEMPTS}
    assert ledger.attempts == attempts
    assert (ledger.settled, ledger.returned) == ([], [])  # never given up on, never returned


async def test_the_bank_alert_counts_the_claims_bank_calls_not_the_leases(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker alerts on the count the claim returns (t0021), not on the lease's: a payout
    whose lease carries a high count but whose claim counts its 1st bank call only warns, and
    one whose lease says none but whose claim counts a 7th alerts."""

    class _Counted(FakePayoutLedger):
        async def claim_for_bank(
            self, lease: PayoutLease, hold_seconds: float, bank_seconds: float
        ) -> PayoutClaim:
            claim = await super().claim_for_bank(lease, hold_seconds, bank_seconds)
            counted = {"t-leased-often": 1, "t-asked-often": ALERT_AFTER_ATTEMPTS}
            return PayoutClaim(claim.answer, claim.lease_until, counted[lease.transaction_id])

    ledger = _Counted(
        pending=[
            payout_lease("t-leased-often", "flaky", 100, 40),
            payout_lease("t-asked-often", "flaky", 200, 0),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="vaultpay_transfer.service_layer.payouts"):
        assert await PayoutWorker(ledger, ScriptedBank(down={"flaky"})).run_once() == 0
    said = {
        getattr(r, "transaction_id", ""): (r.levelno, getattr(r, "attempts", None))
        for r in caplog.records
    }
    assert said == {
        "t-leased-often": (logging.WARNING, 1),
        "t-asked-often": (logging.ERROR, ALERT_AFTER_ATTEMPTS),
    }


async def test_a_payout_of_a_wallet_frozen_by_staff_is_held_not_sent_until_the_freeze_lifts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frozen = payout_lease("t-frozen", "good", 100)
    ledger = FakePayoutLedger(
        pending=[frozen, payout_lease("t-paid", "good", 200)], frozen={"t-frozen"}
    )
    bank = ScriptedBank()
    worker = PayoutWorker(ledger, bank, hold_seconds=45)
    with caplog.at_level(logging.INFO, logger="vaultpay_transfer.service_layer.payouts"):
        assert await worker.run_once() == 1
        assert bank.asked == ["t-paid"]  # the held one never reached the bank
        assert ledger.settled == ["t-paid"]
        assert ledger.held == {"t-frozen": 45}

        ledger.pending = [frozen]  # due again: still frozen, still held, logged once only
        assert await worker.run_once() == 0
        assert bank.asked == ["t-paid"]

        ledger.frozen.clear()  # staff lift the freeze: it goes to the bank and settles
        ledger.pending = [frozen]
        assert await worker.run_once() == 1
    assert bank.asked == ["t-paid", "t-frozen"]
    assert ledger.settled == ["t-paid", "t-frozen"]
    assert ledger.held == {}
    said = [(r.getMessage(), getattr(r, "transaction_id", "")) for r in caplog.records]
    assert [m for m, t in said if t == "t-frozen" and "held" in m] == [
        "a payout is held: its wallet is frozen by staff; it is checked again later",
        "a held payout is released: its wallet's staff freeze was lifted",
    ]


async def test_a_payout_whose_claim_cannot_be_made_is_not_sent() -> None:
    ledger = FakePayoutLedger(pending=[payout_lease("t-unsure", "good", 100)])

    async def unreachable(
        lease: PayoutLease, hold_seconds: float, bank_seconds: float
    ) -> PayoutClaim:
        raise DatabaseUnavailableError()

    ledger.claim_for_bank = unreachable  # type: ignore[method-assign]
    bank = ScriptedBank()
    assert await PayoutWorker(ledger, bank).run_once() == 0
    assert bank.asked == []
    assert ledger.settled == []


async def test_a_payout_whose_lease_was_lost_is_skipped_without_asking_the_bank(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its lease ran out before the worker reached it and another worker leased it: the claim
    answers LEASE_LOST and this worker leaves it to the other one."""
    ledger = FakePayoutLedger(
        pending=[payout_lease("t-lost", "good", 100), payout_lease("t-paid", "good", 200)],
        stolen={"t-lost"},
    )
    bank = ScriptedBank()
    with caplog.at_level(logging.INFO, logger="vaultpay_transfer.service_layer.payouts"):
        assert await PayoutWorker(ledger, bank).run_once() == 1
    assert bank.asked == ["t-paid"]
    assert (ledger.settled, ledger.returned, ledger.held) == (["t-paid"], [], {})
    [lost] = [r for r in caplog.records if getattr(r, "transaction_id", "") == "t-lost"]
    assert lost.levelno == logging.INFO and "another worker has it" in lost.getMessage()


async def test_a_bank_call_past_its_timeout_is_abandoned_as_an_unreachable_bank(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The claim renews the lease for `bank_seconds`; the call gets 80% of that, then the
    payout is neither settled nor returned, and is retried after its lease."""
    ledger = FakePayoutLedger(
        pending=[payout_lease("t-silent", "mute", 100), payout_lease("t-paid", "good", 200)]
    )
    bank = ScriptedBank(silent={"mute"})
    worker = PayoutWorker(ledger, bank, bank_seconds=0.05)
    with caplog.at_level(logging.WARNING, logger="vaultpay_transfer.service_layer.payouts"):
        assert await worker.run_once() == 1
    assert bank.asked == ["t-silent", "t-paid"]
    assert (ledger.settled, ledger.returned) == (["t-paid"], [])
    [failed] = [r for r in caplog.records if getattr(r, "transaction_id", "") == "t-silent"]
    assert failed.levelno == logging.WARNING
    assert failed.getMessage() == (
        "the bank could not be asked (no answer in time); the payout is retried after its lease"
    )
    assert failed.exc_info is not None and failed.exc_info[0] is TimeoutError
    with pytest.raises(ValueError, match="bank_seconds"):
        PayoutWorker(ledger, bank, bank_seconds=0)


async def test_an_answer_that_cannot_be_recorded_leaves_the_rest_of_the_batch_going() -> None:
    ledger = FakePayoutLedger(
        pending=[
            payout_lease("t-stuck", "good", 100),
            payout_lease("t-paid", "good", 200),
        ],
        unreachable={"t-stuck"},
    )
    worker = PayoutWorker(ledger, ScriptedBank())
    assert await worker.run_once() == 1  # t-stuck waits for its lease, t-paid is settled
    assert ledger.settled == ["t-paid"]


async def test_a_bank_answer_contradicting_how_a_payout_finished_is_an_error_not_a_finish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another worker finished two payouts while this one asked the bank: one RETURNED (its
    money back in the wallet) that the bank now says it paid, one SETTLED it now refuses.
    Neither is counted as finished: each is an ERROR naming the payout and both outcomes, and
    counted apart. A repeat that agrees (SETTLED, paid) is a finish, silently."""
    ledger = FakePayoutLedger(
        pending=[
            payout_lease("t-returned", "good", 100),
            payout_lease("t-settled", "bad", 200),
            payout_lease("t-repeat", "good", 300),
            payout_lease("t-paid", "good", 400),
        ],
        finished_meanwhile={
            "t-returned": "RETURNED",
            "t-settled": "SETTLED",
            "t-repeat": "SETTLED",
        },
    )
    worker = PayoutWorker(ledger, ScriptedBank(refusing={"bad"}))
    with caplog.at_level(logging.INFO, logger="vaultpay_transfer.service_layer.payouts"):
        assert await worker.run_once() == 2  # t-repeat and t-paid
    assert worker.contradicted == 2
    assert (ledger.settled, ledger.returned) == (["t-paid"], [])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [CONTRADICTION, CONTRADICTION]
    assert [
        (vars(r)["transaction_id"], vars(r)["bank_answer"], vars(r)["ledger_status"])
        for r in errors
    ] == [("t-returned", "paid", "RETURNED"), ("t-settled", "refused", "SETTLED")]
    assert not any("good" in str(vars(r)) or "bad" in str(vars(r)) for r in errors)


class _UnexpectedDatabaseError(Exception):
    """Stands for a database error the worker does not expect (asyncpg's, say)."""


async def test_an_unexpected_error_on_one_payout_leaves_the_rest_of_the_batch_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = FakePayoutLedger(
        pending=[
            payout_lease("t-claim-broken", "good", 100),
            payout_lease("t-record-broken", "bad", 200),
            payout_lease("t-paid", "good", 300),
            payout_lease("t-refused", "bad", 400),
        ],
        claim_raises={"t-claim-broken": RuntimeError("a payout function returned no row")},
        record_raises={"t-record-broken": _UnexpectedDatabaseError("duplicate key value")},
    )
    bank = ScriptedBank(refusing={"bad"})
    with caplog.at_level(logging.WARNING, logger="vaultpay_transfer.service_layer.payouts"):
        assert await PayoutWorker(ledger, bank).run_once() == 2
    assert bank.asked == ["t-record-broken", "t-paid", "t-refused"]
    assert (ledger.settled, ledger.returned) == (["t-paid"], [("t-refused", "account closed")])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [(vars(r)["transaction_id"], vars(r)["error_type"]) for r in errors] == [
        ("t-claim-broken", "RuntimeError"),
        ("t-record-broken", "_UnexpectedDatabaseError"),
    ]
    assert all("retried after its lease" in r.getMessage() and r.exc_info for r in errors)


async def test_a_cancelled_round_is_cancelled_not_logged_and_skipped() -> None:
    """Cancellation is not an error of one payout: raised while one is recorded it ends the
    round (nothing after it is handled), and a round cancelled while it waits on the bank
    ends cancelled."""
    ledger = FakePayoutLedger(
        pending=[payout_lease("t-cancelled", "good", 100), payout_lease("t-next", "good", 200)],
        record_raises={"t-cancelled": asyncio.CancelledError()},
    )
    bank = ScriptedBank()
    with pytest.raises(asyncio.CancelledError):
        await PayoutWorker(ledger, bank).run_once()
    assert (bank.asked, ledger.settled) == (["t-cancelled"], [])

    waiting = FakePayoutLedger(pending=[payout_lease("t-silent", "mute", 100)])
    silent = ScriptedBank(silent={"mute"})
    round_ = asyncio.create_task(PayoutWorker(waiting, silent).run_once())

    async def asked() -> bool:
        return silent.asked == ["t-silent"]

    await eventually(asked, within=5, what="the bank asked")
    round_.cancel()
    with pytest.raises(asyncio.CancelledError):
        await round_
    assert round_.cancelled()


async def test_the_simulated_bank_refuses_only_the_documented_test_account() -> None:
    hasher = AccountHasher(b"k" * 32)
    bank = SimulatedBank(hasher)
    refused = await bank.pay_out(payout_lease("t", hasher(REFUSING_TEST_ACCOUNT), 1))
    paid = await bank.pay_out(payout_lease("t", hasher("123456789012"), 1))
    assert (refused.refused, paid.paid) == (True, True)
    assert hasher("123456789012") != AccountHasher(b"j" * 32)("123456789012")


@pytest.mark.parametrize(
    "text", ["\u202eecilA", "Al\u200bice", "Alice\u2066", "a\x85b", "\ue000", "one\u2028two"]
)
def test_a_note_or_holder_name_with_bidi_zero_width_or_control_characters_is_refused(
    text: str,
) -> None:
    with pytest.raises(ValidationError) as note:
        check_note(text)
    assert note.value.violations[0].field == "note"
    with pytest.raises(ValidationError) as holder:
        bank_account(BankAccountInput("123456789012", "HDFC0001234", text))
    assert holder.value.violations[0].field == "bank_account.account_holder_name"


@pytest.mark.parametrize(
    "text",
    [
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467",  # an emoji ZWJ sequence
        "\u0915\u094d\u200d\u0937",  # a Devanagari conjunct: ZWJ after a virama
        "rent\u00a0Dec",  # a no-break space
    ],
)
def test_a_note_or_holder_name_takes_what_people_write(text: str) -> None:
    """QA found these refused as "control characters" (the check was str.isprintable, which
    refuses every separator but the space, and every ZWJ)."""
    assert check_note(text) == text
    assert bank_account(BankAccountInput("123456789012", "HDFC0001234", text)).holder_name == text


def test_a_top_up_into_a_locked_wallet_says_to_reset_the_pin_or_wait() -> None:
    until = NOW + timedelta(hours=24)
    details = {"freeze_reason": "FREEZE_REASON_PIN_LOCKOUT", "until": metadata_time(until)}
    error = refusal_error("WALLET_FROZEN", details, now=NOW, movement="top_up")
    assert error.metadata == details
    assert error.message == (
        f"the wallet is locked after wrong PINs until {metadata_time(until)}: reset the PIN or wait"
    )


async def test_a_bank_that_cannot_say_whether_it_paid_is_logged_and_alerts_from_the_7th(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither paid nor refused (the port's "ask again later"): the payout stays PENDING, as
    for an unreachable bank, and is logged the same way. Review of 2026-12-04 (third): it was
    dropped without a line, so a bank answering so for ever alerted nobody."""
    early = payout_lease("t-early", "unsure", 100, ALERT_AFTER_ATTEMPTS - 2)
    late = payout_lease("t-late", "unsure", 100, ALERT_AFTER_ATTEMPTS - 1)
    ledger = FakePayoutLedger(pending=[early, late])
    with caplog.at_level(logging.WARNING, logger="vaultpay_transfer.service_layer.payouts"):
        assert await PayoutWorker(ledger, ScriptedBank(undecided={"unsure"})).run_once() == 0
    logged = {getattr(r, "transaction_id", ""): r for r in caplog.records}
    assert {t: r.levelno for t, r in logged.items()} == {
        "t-early": logging.WARNING,
        "t-late": logging.ERROR,
    }
    assert logged["t-early"].getMessage() == (
        "the bank could not say whether it paid; the payout is retried after its lease"
    )
    assert not logged["t-late"].exc_info  # no exception to show
    assert (ledger.settled, ledger.returned) == ([], [])


async def test_a_held_payout_the_bank_was_already_asked_about_is_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A staff freeze holds a payout whose earlier bank call's answer was never recorded: the
    money may have left, so an operator must check with the bank (review of 2026-12-04,
    third: it was the INFO line of any held payout)."""
    asked = payout_lease("t-asked", "good", 100, 1)
    ledger = FakePayoutLedger(pending=[asked, payout_lease("t-new", "good", 200)])
    ledger.frozen = {"t-asked", "t-new"}
    with caplog.at_level(logging.INFO, logger="vaultpay_transfer.service_layer.payouts"):
        assert await PayoutWorker(ledger, ScriptedBank()).run_once() == 0
    levels = {getattr(r, "transaction_id", ""): r.levelno for r in caplog.records}
    assert levels == {"t-asked": logging.ERROR, "t-new": logging.INFO}
