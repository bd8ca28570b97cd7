"""The bank test's checker catches each kind of violation it claims to (made-up histories and
ledgers, no I/O)."""

from __future__ import annotations

import itertools
import math
import uuid
from dataclasses import replace

import pytest

from tests.bank.checker import (
    check,
    freeze_windows,
    frozen_refusals_in_windows,
    lost_replies,
    terminations_met,
    unexercised,
)
from tests.bank.history import (
    FULL_DEADLINE,
    Attempt,
    BalanceRead,
    Fault,
    FreezeEvent,
    FreezeWindow,
    History,
    LedgerRow,
    LedgerSnapshot,
    Posting,
    Send,
)

A, B = "VPY-AAAAAA", "VPY-BBBBBB"
USERS = {A: "user-a", B: "user-b"}
T0 = 1_800_000_000.0


class World:
    """Two wallets funded with 1,000 each, and helpers to record sends and commit them."""

    def __init__(self) -> None:
        self.history = History(funding={A: 1000, B: 1000})
        self.ledger = LedgerSnapshot(balances={A: 0, B: 0}, kinds={}, rows=[], postings=[])
        self._ids = itertools.count(1)
        for wallet in (A, B):
            movement = str(uuid.uuid4())
            self.ledger.kinds[movement] = "TOP_UP"
            self._post(movement, "sys:clearing", -1000)
            self._side(movement, None, wallet, "CREDIT", "TOP_UP", 1000, "", T0)

    def _post(self, movement: str, account: str, amount: int) -> None:
        self.ledger.postings.append(Posting(next(self._ids), movement, account, amount))
        if account in self.ledger.balances:
            self.ledger.balances[account] += amount

    def _side(
        self,
        movement: str,
        request_id: str | None,
        wallet: str,
        kind: str,
        category: str,
        amount: int,
        other: str,
        at: float,
    ) -> str:
        self._post(movement, wallet, amount if kind == "CREDIT" else -amount)
        row_id = str(uuid.uuid4())
        balance = self.ledger.balances[wallet]
        self.ledger.rows.append(
            LedgerRow(
                row_id, movement, request_id, USERS[wallet], wallet, kind, category,
                "COMPLETED", amount, balance, other, at, at + 0.001,
            )
        )  # fmt: skip
        return row_id

    def freeze(self, wallet: str, frozen: float, lifted: float | None) -> None:
        """A staff freeze committed at `frozen`, lifted at `lifted` (None: never)."""
        events = self.ledger.freeze_events
        events.append(FreezeEvent(wallet, "frozen", frozen, len(events) + 1))
        if lifted is not None:
            events.append(FreezeEvent(wallet, "unfrozen", lifted, len(events) + 1))

    def send(
        self, sender: str = A, amount: int = 100, *, code: str = "OK", at: float = T0 + 10
    ) -> Send:
        """A send its client saw answered `code` (OK: with the id the ledger will hold)."""
        recipient = B if sender == A else A
        send = Send(str(uuid.uuid4()), 0, USERS[sender], sender, recipient, amount)
        send.attempts.append(Attempt(at, at + 0.1, 3.0, code))
        send.outcome = "ok" if code == "OK" else "failed"
        send.reason = "" if code == "OK" else code
        self.history.sends.append(send)
        return send

    def commit(self, send: Send, *, at: float | None = None) -> str:
        """The send's movement in the ledger (its time `at`, committed a millisecond later);
        returns the debit's id."""
        at = send.attempts[0].started + 0.01 if at is None else at
        movement = str(uuid.uuid4())
        self.ledger.kinds[movement] = "P2P"
        debit = self._side(
            movement, send.request_id, send.sender, "DEBIT", "P2P_SEND", send.amount,
            send.recipient, at,
        )  # fmt: skip
        self._side(
            movement, None, send.recipient, "CREDIT", "P2P_RECEIVE", send.amount, send.sender, at
        )
        for attempt in send.attempts:
            if attempt.code == "OK":
                attempt.transaction_id = debit
        if send.outcome == "ok":
            send.transaction_id = debit
        return debit


def test_a_clean_history_passes() -> None:
    world = World()
    for sender in (A, B, A):
        world.commit(world.send(sender))
    world.send(A, 5000, code="INSUFFICIENT_BALANCE")
    world.history.reads.append(BalanceRead(T0 + 20, 2000, 900, 2))
    assert check(world.history, world.ledger) == []


def test_an_acknowledged_send_missing_from_the_ledger_is_lost() -> None:
    world = World()
    send = world.send()
    send.transaction_id = str(uuid.uuid4())
    assert any(p.startswith("lost:") for p in check(world.history, world.ledger))


def test_a_request_in_the_ledger_twice_is_caught_and_so_is_the_extra_money() -> None:
    world = World()
    send = world.send()
    world.commit(send)
    world.commit(replace(send, attempts=list(send.attempts), outcome="unknown"))
    problems = check(world.history, world.ledger)
    assert any("in the ledger 2 times" in p for p in problems)
    assert any("its funding and the requests in the ledger give" in p for p in problems)


def test_money_moved_by_no_request_is_a_phantom() -> None:
    world = World()
    ghost = world.send()
    world.commit(ghost)
    world.history.sends.remove(ghost)
    assert any(p.startswith("phantom:") for p in check(world.history, world.ledger))


def test_a_refused_send_that_moved_money_is_caught() -> None:
    world = World()
    world.commit(world.send(code="INSUFFICIENT_BALANCE"))
    assert any(
        "was refused (INSUFFICIENT_BALANCE)" in p for p in check(world.history, world.ledger)
    )


def test_unknown_outcomes_must_be_resolved_and_agree_with_the_ledger() -> None:
    world = World()
    unresolved = world.send(code="DEADLINE_EXCEEDED")
    unresolved.outcome = "unknown"
    wrong = world.send(code="UNAVAILABLE")
    wrong.outcome, wrong.resolved = "unknown", ""
    world.commit(wrong)
    problems = check(world.history, world.ledger)
    assert any("never resolved" in p for p in problems)
    assert any("resolved as absent" in p for p in problems)


def test_a_replay_must_answer_the_same_transaction() -> None:
    world = World()
    send = world.send()
    world.commit(send)
    send.replayed = str(uuid.uuid4())
    assert any("a replay answered" in p for p in check(world.history, world.ledger))


def test_money_made_or_lost_behind_the_ledgers_back_breaks_conservation() -> None:
    world = World()
    world.commit(world.send())
    world.ledger.balances[A] += 1
    problems = check(world.history, world.ledger)
    assert any(p.startswith("total not conserved") for p in problems)
    assert any("postings sum to" in p for p in problems)


def test_a_read_during_the_run_that_saw_another_total_is_caught() -> None:
    world = World()
    world.history.reads.append(BalanceRead(T0 + 5, 1900, 900, 2))
    assert any(p.startswith("balance read at") for p in check(world.history, world.ledger))


def test_a_balance_after_that_its_postings_do_not_give_is_a_lost_update() -> None:
    world = World()
    world.commit(world.send())
    row = world.ledger.rows[-2]  # the debit
    world.ledger.rows[-2] = replace(row, balance_after=row.balance_after + 100)
    assert any("in lock order give" in p for p in check(world.history, world.ledger))


FROZEN_WHILE = "while frozen"


@pytest.mark.parametrize("outcome", ["ok", "unknown resolved", "unknown given up"])
@pytest.mark.parametrize(
    ("committed", "caught"),
    [
        (T0 + 12.0, True),  # committed between the freeze's commit and the lifting's
        (T0 + 10.9, False),  # committed before the freeze: it held the lock first
        (T0 + 13.1, False),  # committed after the lifting
    ],
)
def test_a_debit_committed_while_its_wallet_was_frozen_is_caught_acknowledged_or_not(
    committed: float, outcome: str, caught: bool
) -> None:
    world = World()
    world.freeze(A, T0 + 11.0, T0 + 13.0)
    world.history.freezes.append(FreezeWindow(A, acked=T0 + 14.0, lifted=T0 + 14.5))
    send = world.send(at=committed - 0.5)
    if outcome != "ok":  # the client never heard: timed out, then resolved or not even that
        send.attempts[0].code = "DEADLINE_EXCEEDED"
        send.outcome = "unknown"
    world.commit(send, at=committed - 0.001)
    if outcome == "unknown resolved":
        send.resolved = send.attempts[0].transaction_id or world.ledger.rows[-2].id
    found = [p for p in check(world.history, world.ledger) if FROZEN_WHILE in p]
    assert bool(found) is caught


def test_a_freeze_never_lifted_lasts_to_the_end_and_a_refreeze_opens_a_new_window() -> None:
    world = World()
    world.freeze(A, T0 + 11.0, T0 + 12.0)
    world.freeze(A, T0 + 20.0, None)
    assert freeze_windows(world.ledger)[A] == [(T0 + 11.0, T0 + 12.0), (T0 + 20.0, math.inf)]
    world.commit(world.send(at=T0 + 15.0))  # between the two: fine
    assert check(world.history, world.ledger) == []
    world.commit(world.send(at=T0 + 99.0))
    assert any(FROZEN_WHILE in p for p in check(world.history, world.ledger))


def test_the_freeze_rule_needs_commit_times() -> None:
    world = World()
    world.commit(world.send())
    world.ledger.rows[-2] = replace(world.ledger.rows[-2], committed_at=None)
    world.ledger.freeze_events.append(FreezeEvent(A, "frozen", None, 1))
    problems = check(world.history, world.ledger)
    assert any("has no commit time" in p for p in problems)
    assert any("track_commit_timestamp" in p for p in problems)


def test_a_freeze_a_client_saw_acknowledged_must_be_in_the_database() -> None:
    world = World()
    world.history.freezes.append(FreezeWindow(A, acked=T0 + 11.0, lifted=T0 + 12.0))
    assert any("1 freezes acknowledged" in p for p in check(world.history, world.ledger))
    world.freeze(A, T0 + 10.9, T0 + 12.1)
    assert check(world.history, world.ledger) == []


def test_a_wallet_frozen_refusal_must_come_while_a_freeze_is_in_force() -> None:
    world = World()
    world.freeze(A, T0 + 11.0, T0 + 13.0)
    inside = world.send(at=T0 + 12.0, code="WALLET_FROZEN")
    assert check(world.history, world.ledger) == []
    assert frozen_refusals_in_windows(world.history, world.ledger) == 1
    inside.attempts[0] = replace(inside.attempts[0], started=T0 + 14.0, ended=T0 + 14.1)
    assert any("when no freeze of" in p for p in check(world.history, world.ledger))
    assert frozen_refusals_in_windows(world.history, world.ledger) == 0


def test_a_database_clock_far_from_the_clients_fails_loudly() -> None:
    world = World()
    world.ledger.clock_offset = 0.3
    assert any("the database's clock" in p for p in check(world.history, world.ledger))


def test_internal_is_a_violation_direct_or_through_envoy() -> None:
    """Envoy's stream reset (RST_STREAM, read as INTERNAL) is no excuse: a service sends its
    response headers only with its answer, so one that dies mid-call is UNAVAILABLE."""
    world = World()
    send = world.send()
    send.attempts.insert(0, Attempt(T0, T0 + 0.1, 3.0, "INTERNAL", "INTERNAL", via="direct"))
    reset = Attempt(T0, T0 + 0.1, 3.0, "INTERNAL", via="envoy")
    reset.message = "Stream removed (RST_STREAM (Received RST_STREAM with error code 2))"
    send.attempts.insert(0, reset)
    world.commit(send)
    internal = [p for p in check(world.history, world.ledger) if "INTERNAL" in p]
    assert len(internal) == 2
    assert any("via direct" in p for p in internal)
    assert any("via envoy" in p and "RST_STREAM" in p for p in internal)


def test_refusals_nothing_here_causes_and_real_lockouts_are_caught() -> None:
    world = World()
    world.send(code="IDEMPOTENCY_KEY_REUSED")
    world.send(code="PIN_LOCKED")  # every PIN sent is right, and checks in flight are retried
    world.ledger.lockouts.append(A)
    problems = check(world.history, world.ledger)
    assert any("IDEMPOTENCY_KEY_REUSED" in p for p in problems)
    assert any("'PIN_LOCKED'" in p for p in problems)
    assert any("locked out for wrong PINs" in p for p in problems)


def test_a_commit_before_the_answered_attempt_started_is_a_lost_reply() -> None:
    world = World()
    send = world.send()
    send.attempts.insert(0, Attempt(T0 + 9.0, T0 + 9.5, 0.5, "DEADLINE_EXCEEDED"))
    world.commit(send, at=T0 + 9.2)
    assert check(world.history, world.ledger) == []
    assert lost_replies(world.history, world.ledger) == 1


def test_a_lookup_that_found_the_commit_is_no_lost_reply_answered_by_a_retry() -> None:
    world = World()
    send = world.send()
    send.attempts = [
        Attempt(T0 + 9.0, T0 + 9.5, 0.5, "DEADLINE_EXCEEDED"),
        Attempt(T0 + 10.0, T0 + 10.1, 3.0, "OK", rpc="GetTransactionByRequestId"),
    ]
    world.commit(send, at=T0 + 9.2)
    assert check(world.history, world.ledger) == []
    assert lost_replies(world.history, world.ledger) == 0
    assert any("retry answered OK" in g for g in _gaps(world))


def _gaps(world: World) -> list[str]:
    return unexercised(
        world.history, world.ledger, seconds=1.0, fault_names=("terminate-backends",)
    )


def test_a_run_that_did_nothing_proves_nothing() -> None:
    gaps = _gaps(World())
    for missing in (
        "SendMoney attempts",
        "refused INSUFFICIENT_BALANCE",
        "refused WALLET_FROZEN",
        "inside a freeze window",
        "retry answered OK",
        "two copies",
        "lost after its commit",
        "faults never injected",
    ):
        assert any(missing in g for g in gaps), missing


def test_faults_must_show_their_effects() -> None:
    world = World()
    send = world.send(code="UNAVAILABLE")
    send.attempts[0] = replace(send.attempts[0], reason="COMMIT_OUTCOME_UNKNOWN")
    send.outcome = "unknown"
    world.history.faults = [
        Fault("terminate-backends", T0 + 10.05, T0 + 10.06),  # killed nothing
        Fault("restart-transfer", T0 + 30.0, T0 + 31.0, pid_before=7, pid_after=7),
        Fault("pause-transfer", T0 + 40.0, T0 + 43.0),  # nothing queued
    ]
    gaps = _gaps(world)
    assert any("no backend was ever terminated" in g for g in gaps)
    assert any("no transfer backend" in g for g in gaps)
    assert any("restart-transfer at" in g and "7 -> 7" in g for g in gaps)
    assert any("no pause of transfer" in g for g in gaps)
    assert any("during restart-transfer that ended retryable" in g for g in gaps)
    assert not any("during terminate-backends" in g for g in gaps)  # the UNAVAILABLE send


def test_only_idle_transfer_connections_killed_is_no_evidence() -> None:
    """A pooled idle connection's end is replaced unseen: the kills must have cut some
    transfer backend short in a statement or a transaction (review of 2026-12-05)."""
    world = World()
    idle_only = Fault("terminate-backends", T0 + 10.0, T0 + 10.01, killed=9, killed_transfer=4)
    world.history.faults = [idle_only]
    assert any("terminated in a statement or a transaction" in g for g in _gaps(world))
    idle_only.killed_transfer_busy = 1
    assert not any("terminated in a statement or a transaction" in g for g in _gaps(world))


def test_a_lookup_that_missed_a_committed_send_is_caught() -> None:
    """GetTransactionByRequestId answers NOT_FOUND only when nothing committed (review of
    2026-12-05: such answers were recorded and never compared with the ledger)."""
    world = World()
    send = world.send()
    send.attempts = [
        Attempt(T0 + 9.0, T0 + 9.05, 0.05, "DEADLINE_EXCEEDED"),
        Attempt(T0 + 12.0, T0 + 12.1, 3.0, "NOT_FOUND", "TRANSACTION_NOT_FOUND",
                rpc="GetTransactionByRequestId"),
        Attempt(T0 + 13.0, T0 + 13.1, 3.0, "OK"),
    ]  # fmt: skip
    world.commit(send, at=T0 + 9.02)
    problems = check(world.history, world.ledger)
    assert len(problems) == 1 and "answered NOT_FOUND" in problems[0], problems

    # Asked before the commit: nothing to see yet, no violation.
    send.attempts[1] = replace(send.attempts[1], started=T0 + 9.01, ended=T0 + 9.015)
    assert check(world.history, world.ledger) == []


@pytest.mark.parametrize("refusal", ["IDEMPOTENCY_KEY_REUSED", "PIN_LOCKED"])
def test_a_copy_refused_while_its_twin_was_answered_ok_is_caught(refusal: str) -> None:
    """Two copies of one request at once: one OK, the other refused with what nothing here
    causes. The send ends OK, so its final reason never showed the refusal."""
    world = World()
    send = world.send()
    send.duplicate = True
    send.attempts.append(Attempt(T0 + 10, T0 + 10.1, 3.0, "FAILED_PRECONDITION", refusal))
    world.commit(send)
    problems = check(world.history, world.ledger)
    assert len(problems) == 1 and f"{refusal!r}" in problems[0], problems


def test_a_freeze_race_that_never_caught_a_send_at_the_lock_is_no_evidence() -> None:
    """The freeze rule's race made certain (review of 2026-12-05: a WALLET_FROZEN refusal
    anywhere in a freeze window counted, the PIN check's included, so a run could pass
    without any send crossing a freeze at the ledger)."""
    world = World()
    race = Fault("freeze-race", T0 + 20.0, T0 + 21.0)
    world.history.faults = [race]
    gap = "waited at the ledger's lock"
    assert any(gap in g for g in _gaps(world))
    race.queued = 1
    assert not any(gap in g for g in _gaps(world))


def test_a_send_that_failed_for_want_of_redis_is_caught() -> None:
    """The money path has no Redis: a full-deadline send in flight while Redis restarted,
    near no other fault, answers (review of 2026-12-05: the checker asked only that a send was
    in flight during the restart)."""
    world = World()
    send = world.send(code="UNAVAILABLE", at=T0 + 10)
    send.outcome = "unknown"
    world.history.faults = [
        Fault("restart-redis", T0 + 10.02, T0 + 10.5, pid_before=1, pid_after=2)
    ]
    gap = "the money path needed Redis"
    assert any(gap in g for g in _gaps(world))
    # Near a restart of transfer too: that explains it.
    world.history.faults.append(
        Fault("restart-transfer", T0 + 10.05, T0 + 11, pid_before=3, pid_after=4)
    )
    assert not any(gap in g for g in _gaps(world))
    # Past its deadline on a busy machine: not held against it.
    world.history.faults.pop()
    send.attempts[0] = replace(send.attempts[0], code="DEADLINE_EXCEEDED")
    assert not any(gap in g for g in _gaps(world))


BALANCE = "was refused INSUFFICIENT_BALANCE for"
STORED = "answered with the stored answer"


def test_a_balance_refusal_while_the_sender_held_enough_is_caught() -> None:
    """Refusals checked against the ledger (a review found an INSUFFICIENT_BALANCE
    refusal was never held against the balance)."""
    world = World()
    refused = world.send(A, 500, code="INSUFFICIENT_BALANCE")  # A holds 1,000 all along
    problems = check(world.history, world.ledger)
    assert len(problems) == 1 and BALANCE in problems[0], problems
    assert refused.request_id in problems[0]


def test_a_balance_refusal_while_the_sender_held_less_is_fine() -> None:
    world = World()
    world.commit(world.send(A, 600, at=T0 + 5))  # A holds 400 from then on
    world.send(A, 500, code="INSUFFICIENT_BALANCE", at=T0 + 10)
    assert check(world.history, world.ledger) == []


@pytest.mark.parametrize(
    ("dip", "refilled", "caught"),
    [
        (T0 + 10.05, True, False),  # below the amount for a moment inside the attempt
        (T0 + 9.0, False, False),  # below since before the attempt
        (T0 + 9.0, True, True),  # below only before the attempt
        (T0 + 10.5, True, True),  # below only after it
    ],
)
def test_a_balance_refusal_needs_a_balance_below_the_amount_during_the_attempt(
    dip: float, refilled: bool, caught: bool
) -> None:
    """The refused attempt runs from T0+10 to T0+10.1; A spends 600 of its 1,000 at `dip` and
    gets it back 0.02 s later (`refilled`)."""
    world = World()
    world.commit(world.send(A, 600, at=dip - 0.1), at=dip)
    if refilled:
        world.commit(world.send(B, 600, at=dip - 0.1), at=dip + 0.02)
    world.send(A, 500, code="INSUFFICIENT_BALANCE", at=T0 + 10)
    found = [p for p in check(world.history, world.ledger) if BALANCE in p]
    assert bool(found) is caught, found


def test_a_refused_copy_is_not_excused_by_its_own_requests_debit() -> None:
    """Two copies of one request: one committed (A: 1,000 -> 400) while the other was in
    flight, refused for the balance. Only the hold lets one copy run at a time, and a copy
    that runs after the commit gets the stored answer: the refusal read 1,000."""
    world = World()
    send = world.send(A, 600, at=T0 + 10)
    send.duplicate = True
    send.attempts.append(
        Attempt(T0 + 10, T0 + 10.1, 3.0, "FAILED_PRECONDITION", "INSUFFICIENT_BALANCE")
    )
    world.commit(send, at=T0 + 10.05)
    problems = check(world.history, world.ledger)
    assert len(problems) == 1 and BALANCE in problems[0], problems


def test_a_balance_refusal_is_not_judged_on_rows_without_commit_times() -> None:
    """A row of the sender with no commit time may be anywhere before its created_at: one
    created after the attempt changes nothing, one created before it skips the check."""
    world = World()
    world.send(A, 500, code="INSUFFICIENT_BALANCE", at=T0 + 10)
    world.commit(world.send(B, 100, at=T0 + 20))
    world.ledger.rows[-1] = replace(world.ledger.rows[-1], committed_at=None)  # A's credit
    assert any(BALANCE in p for p in check(world.history, world.ledger))
    world.commit(world.send(A, 600, at=T0 + 5))  # A held 400 during the refusal
    world.ledger.rows[-2] = replace(world.ledger.rows[-2], committed_at=None)  # A's debit
    assert not any(BALANCE in p for p in check(world.history, world.ledger))


def test_a_balance_refusal_before_the_senders_funding_committed_is_fine() -> None:
    """A wallet opens empty: before its first row committed it held nothing."""
    world = World()
    world.send(A, 500, code="INSUFFICIENT_BALANCE", at=T0 - 10)
    assert check(world.history, world.ledger) == []


def test_a_refusal_after_its_own_requests_commit_is_caught() -> None:
    """A copy or retry that started after the request's debit committed must get the stored
    answer; refused (here for the balance, on a send answered OK), nothing else noticed."""
    world = World()
    send = world.send(A, 100, at=T0 + 10)
    world.commit(send)  # committed at T0+10.011
    send.attempts.append(
        Attempt(T0 + 10.5, T0 + 10.6, 3.0, "FAILED_PRECONDITION", "INSUFFICIENT_BALANCE")
    )
    problems = check(world.history, world.ledger)
    assert len(problems) == 1 and STORED in problems[0], problems
    assert send.request_id in problems[0]


def test_a_refusal_before_a_later_copy_or_retry_committed_is_fine() -> None:
    """Refused for the balance (A held 50), its twin timed out, and the retry committed once
    B had paid A: a refused movement stores nothing, so the retry runs."""
    world = World()
    world.commit(world.send(A, 950, at=T0 + 5))  # A holds 50
    send = world.send(A, 100, at=T0 + 11)  # the retry, answered OK
    send.duplicate = True
    send.attempts[:0] = [
        Attempt(T0 + 10, T0 + 10.1, 3.0, "FAILED_PRECONDITION", "INSUFFICIENT_BALANCE"),
        Attempt(T0 + 10, T0 + 10.1, 0.1, "DEADLINE_EXCEEDED"),
    ]
    world.commit(world.send(B, 500, at=T0 + 10.4), at=T0 + 10.5)  # A holds 550
    world.commit(send, at=T0 + 11.01)
    assert check(world.history, world.ledger) == []


@pytest.mark.parametrize(
    ("fault", "code", "reason"),
    [
        ("terminate-backends", "UNAVAILABLE", "COMMIT_OUTCOME_UNKNOWN"),
        ("pause-transfer", "DEADLINE_EXCEEDED", ""),
        ("restart-transfer", "DEADLINE_EXCEEDED", ""),
    ],
)
def test_a_short_deadline_that_timed_out_on_its_own_met_no_fault(
    fault: str, code: str, reason: str
) -> None:
    """About a fifth of first attempts get a deadline around the median latency and end
    DEADLINE_EXCEEDED fault or not (a review found one such attempt enough evidence
    that a fault met a call in flight). Only an attempt with the full deadline counts."""
    world = World()
    send = world.send(code=code, at=T0 + 10)
    send.outcome = "unknown"
    send.attempts[0] = replace(send.attempts[0], timeout=0.08, reason=reason)
    world.history.faults = [Fault(fault, T0 + 10.02, T0 + 10.05)]
    gap = f"during {fault} that ended"
    assert any(gap in g for g in _gaps(world))
    send.attempts[0] = replace(send.attempts[0], timeout=FULL_DEADLINE)
    assert not any(gap in g for g in _gaps(world))


TERMINATION = "during terminate-backends that ended UNAVAILABLE"


def _terminated_round(world: World) -> Fault:
    """A round of pg_terminate_backend from T0+10.02 to T0+10.05 that ended busy transfer
    backends: only what the clients saw can tell whether it cut a SendMoney call short."""
    round_ = Fault(
        "terminate-backends", T0 + 10.02, T0 + 10.05, killed=6, killed_transfer=3,
        killed_transfer_busy=2,
    )  # fmt: skip
    world.history.faults = [round_]
    return round_


def _twins(world: World, refusal: str) -> Send:
    """A send made as two copies at once inside the round: one answered OK, the other
    refused ABORTED `refusal` within milliseconds (it lost the request's key to its twin)."""
    send = world.send(at=T0 + 10)
    send.duplicate = True
    send.attempts.append(Attempt(T0 + 10.0, T0 + 10.03, FULL_DEADLINE, "ABORTED", refusal))
    world.commit(send)
    return send


@pytest.mark.parametrize("refusal", ["IDEMPOTENCY_KEY_IN_USE", "PIN_CHECK_IN_PROGRESS"])
def test_an_aborted_copy_is_no_evidence_that_a_termination_cut_a_call_short(
    refusal: str,
) -> None:
    """A review: any retryable answer in flight during a round counted, ABORTED among them, so
    a duplicate's losing copy (answered ABORTED whatever the faults do) proved a round in which
    no termination cut a SendMoney short, and the lost-connection paths went unproven. Only
    UNAVAILABLE COMMIT_OUTCOME_UNKNOWN or DATABASE_UNAVAILABLE counts now."""
    world = World()
    _terminated_round(world)
    _twins(world, refusal)
    assert check(world.history, world.ledger) == []
    assert any(TERMINATION in g for g in _gaps(world))
    assert terminations_met(world.history) == []


@pytest.mark.parametrize("reason", ["COMMIT_OUTCOME_UNKNOWN", "DATABASE_UNAVAILABLE"])
def test_a_call_that_lost_its_database_connection_in_a_round_meets_it(reason: str) -> None:
    world = World()
    round_ = _terminated_round(world)
    _twins(world, "IDEMPOTENCY_KEY_IN_USE")
    cut = world.send(code="UNAVAILABLE", at=T0 + 10.01)
    cut.attempts[0] = replace(cut.attempts[0], reason=reason)
    cut.outcome, cut.resolved = "unknown", ""
    assert check(world.history, world.ledger) == []
    assert not any(TERMINATION in g for g in _gaps(world))
    assert terminations_met(world.history) == [round_]


@pytest.mark.parametrize(
    ("code", "reason", "timeout", "why"),
    [
        ("ABORTED", "IDEMPOTENCY_KEY_IN_USE", FULL_DEADLINE, "a retry's ABORTED"),
        ("UNAVAILABLE", "WALLET_UNAVAILABLE", FULL_DEADLINE, "wallet's connection, not ours"),
        ("UNAVAILABLE", "", FULL_DEADLINE, "a dead process or Envoy's, no reason"),
        ("DEADLINE_EXCEEDED", "", FULL_DEADLINE, "slow, maybe for another reason"),
        ("UNAVAILABLE", "COMMIT_OUTCOME_UNKNOWN", 0.08, "a short deadline"),
    ],
)
def test_only_a_lost_database_answer_meets_a_termination(
    code: str, reason: str, timeout: float, why: str
) -> None:
    world = World()
    _terminated_round(world)
    send = world.send(code=code, at=T0 + 10)
    send.attempts[0] = replace(send.attempts[0], reason=reason, timeout=timeout)
    send.outcome, send.resolved = "unknown", ""
    assert any(TERMINATION in g for g in _gaps(world)), why


def test_a_copys_lost_database_answer_or_one_near_another_fault_meets_no_termination() -> None:
    """One of two copies in flight at once is no evidence, whatever it was answered; nor an
    answer near another fault (a restart of transfer loses its connections too)."""
    world = World()
    _terminated_round(world)
    send = world.send(code="UNAVAILABLE", at=T0 + 10)
    send.attempts[0] = replace(send.attempts[0], reason="COMMIT_OUTCOME_UNKNOWN")
    send.attempts.append(Attempt(T0 + 10.0, T0 + 10.2, FULL_DEADLINE, "OK"))
    send.duplicate, send.outcome, send.reason = True, "ok", ""
    world.commit(send)
    assert check(world.history, world.ledger) == []
    assert any(TERMINATION in g for g in _gaps(world))
    # The same answers one after the other: a retry that followed the lost connection.
    send.duplicate = False
    send.attempts[1] = replace(send.attempts[1], started=T0 + 10.5, ended=T0 + 10.6)
    assert not any(TERMINATION in g for g in _gaps(world))
    world.history.faults.append(
        Fault("restart-transfer", T0 + 9.5, T0 + 9.9, pid_before=3, pid_after=4)
    )
    assert any(TERMINATION in g for g in _gaps(world))


@pytest.mark.parametrize("fault", ["kill-transfer", "pause-transfer", "restart-transfer"])
def test_an_aborted_copy_meets_no_restart_or_pause_either(fault: str) -> None:
    """The same flaw for transfer's restarts and pauses: a losing copy's ABORTED counted as a
    call the fault met. A lone full-deadline call that ended UNAVAILABLE or DEADLINE_EXCEEDED
    still does."""
    world = World()
    world.history.faults = [Fault(fault, T0 + 10.02, T0 + 10.05, pid_before=1, pid_after=2)]
    _twins(world, "IDEMPOTENCY_KEY_IN_USE")
    gap = f"during {fault} that ended retryable"
    assert any(gap in g for g in _gaps(world))
    retry = world.send(code="ABORTED", at=T0 + 10.01)  # a lone ABORTED: no evidence either
    retry.attempts[0] = replace(retry.attempts[0], reason="IDEMPOTENCY_KEY_IN_USE")
    retry.outcome, retry.resolved = "unknown", ""
    assert any(gap in g for g in _gaps(world))
    for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        retry.attempts[0] = replace(retry.attempts[0], code=code, reason="")
        assert not any(gap in g for g in _gaps(world)), code
