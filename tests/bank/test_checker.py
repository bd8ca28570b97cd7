"""The bank test's checker catches each kind of violation it claims to (made-up histories and
ledgers, no I/O)."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace

import pytest

from tests.bank.checker import check, lost_replies
from tests.bank.history import (
    Attempt,
    BalanceRead,
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
                "COMPLETED", amount, balance, other, at,
            )
        )  # fmt: skip
        return row_id

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
        """The send's movement in the ledger (started at `at`); returns the debit's id."""
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


@pytest.mark.parametrize(
    ("started", "acknowledged", "caught"),
    [
        (T0 + 12.0, T0 + 12.5, True),  # locked and committed while frozen
        (T0 + 12.0, T0 + 14.0, False),  # may have waited on the lock until the lifting
        (T0 + 10.5, T0 + 12.5, False),  # may have locked before the freeze committed
    ],
)
def test_a_debit_that_locked_a_frozen_wallet_is_caught(
    started: float, acknowledged: float, caught: bool
) -> None:
    world = World()
    world.history.freezes.append(FreezeWindow(A, acked=T0 + 11.0, lifted=T0 + 13.0))
    send = world.send(at=started - 0.01)
    send.attempts[0].ended = acknowledged
    world.commit(send, at=started)
    found = [p for p in check(world.history, world.ledger) if "after its freeze" in p]
    assert bool(found) is caught


def test_a_later_movement_acknowledged_during_the_freeze_pins_an_earlier_debit_inside_it() -> None:
    world = World()
    world.history.freezes.append(FreezeWindow(A, acked=T0 + 11.0, lifted=T0 + 13.0))
    debit = world.send(at=T0 + 11.9)
    debit.attempts[0].ended = T0 + 20.0  # its own reply came late
    world.commit(debit, at=T0 + 12.0)
    credit = world.send(B, at=T0 + 12.1)  # into A, after it in A's lock order
    credit.attempts[0].ended = T0 + 12.2
    world.commit(credit, at=T0 + 12.1)
    assert any("after its freeze" in p for p in check(world.history, world.ledger))


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
