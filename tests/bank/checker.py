"""The bank test's checker: what the clients saw against what the ledger holds.

    problems = check(history, ledger)     # [] when every property holds
    gaps = unexercised(history, ledger, seconds=45, fault_names=FAULTS)  # [] when the run
    print(summary(history))                                              # did what it claims

Properties (each violation is one line naming the request, wallet or movement):
- the total is conserved: the test wallets hold exactly what they were funded with, the
  system accounts hold its opposite, all postings sum to zero, and every balance read taken
  during the run saw the same total;
- no balance is ever negative (the final ones, the reads during the run, every balance_after);
- each wallet's postings, in lock order (posting id), add up to each balance_after and to the
  final balance: no lost or interleaved update;
- every movement is a funding top-up or a P2P send of exactly two postings and two sides;
- every send in the ledger is one a client sent, with that sender, recipient and amount (no
  phantom), and at most once per request_id;
- every acknowledged send is in the ledger exactly once, under the transaction id it was
  answered with; every refused one is not; every unknown one was resolved, and the resolution
  agrees with the ledger; a replay answered the same transaction;
- no debit of a frozen wallet, acknowledged to a client or not, committed between the commit
  of a staff freeze and the commit of its lifting (database commit times only, `_freezes`),
  and every WALLET_FROZEN refusal came while a freeze of its sender was in force;
- every INSUFFICIENT_BALANCE refusal came while the sender's balance, rebuilt from its ledger
  rows' commit times, was below the amount at some moment of the attempt
  (`_balance_refusals`), and no definite refusal came after its own request's debit had
  committed: a retry of a committed request is answered with the stored answer
  (`_refusals_after_commit`);
- refusals are only the ones this workload can cause (balance, freeze; PIN_CHECK_IN_PROGRESS
  is a retryable ABORTED, never a final answer), nobody was locked out for wrong PINs, and faults
  surface as retryable codes, never INTERNAL, straight to a service or through Envoy (a
  service sends its response headers only with its answer, so a service that dies mid-call
  leaves Envoy nothing to reset: it answers UNAVAILABLE);
- the database's clock is the client's (measured once): the few comparisons of a client's
  reading with a database time allow the measured offset and error (and `CLOCK_MARGIN`).

`unexercised` is the other half: what the run must have done for the properties to mean
anything (enough SendMoney calls, refusals of both kinds, retries answered after a retryable
failure, duplicates, lost replies, a refusal inside a freeze window, faults with effects, met
by calls with the full deadline, never by a duplicate's copy nor an ABORTED answer; a backend
termination only by a call it cut short, answered UNAVAILABLE with a `LOST_DATABASE` reason).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable

from tests.bank.history import (
    ALLOWED_REFUSALS,
    CLOCK_MARGIN,
    CLOCK_SLACK,
    FULL_DEADLINE,
    INDEFINITE,
    Attempt,
    Fault,
    History,
    LedgerRow,
    LedgerSnapshot,
    Send,
    verdict,
)

__all__ = [
    "LOST_DATABASE",
    "check",
    "freeze_windows",
    "frozen_refusals_in_windows",
    "lost_replies",
    "summary",
    "terminations_met",
    "unexercised",
]

_SHOWN = 10  # violations listed per property
# The floors of `unexercised`, per second of sending. A default run (45 s, 2 cores) makes
# about 50 SendMoney attempts and 26 acknowledged sends a second; a loaded machine, fewer.
MIN_SEND_ATTEMPTS_PER_SECOND = 15
MIN_OK_PER_SECOND = 5
# Faults of transfer's process and Redis's: their pid must change.
_NEW_PROCESS = ("kill-transfer", "restart-transfer", "restart-redis")
# An attempt counts against a backend termination only when no other fault is near it.
_OTHER_FAULT_TAIL = 1.0
# What transfer answers SendMoney when PostgreSQL ended its connection under the call (UNAVAILABLE
# with one of these reasons): the ledger call was sent and its commit is unknown
# (adapters/ledger_pg `_run`: COMMIT_OUTCOME_UNKNOWN), or the connection was found closed
# before anything was sent, the key's hold's included (ledger_pg, vaultpay_common.db and
# pg_raw: DATABASE_UNAVAILABLE). The only evidence that a termination cut a call short.
LOST_DATABASE = frozenset({"COMMIT_OUTCOME_UNKNOWN", "DATABASE_UNAVAILABLE"})


def check(history: History, ledger: LedgerSnapshot) -> list[str]:
    problems: list[str] = []
    problems += _capped(_conservation(history, ledger))
    problems += _capped(_movements(history, ledger))
    problems += _capped(_chains(ledger))
    problems += _capped(_sends_against_ledger(history, ledger))
    problems += _capped(_expected_balances(history, ledger))
    problems += _capped(_freezes(history, ledger))
    problems += _capped(_balance_refusals(history, ledger))
    problems += _capped(_refusals_after_commit(history, ledger))
    problems += _capped(_answers(history, ledger))
    problems += _clock(ledger)
    problems += [
        f"fault {f.name} at {f.started:.3f} failed: {f.error}" for f in history.faults if f.error
    ]
    problems += history.problems
    return problems


def summary(history: History) -> str:
    """One paragraph for the test's output: what ran and what the clients saw."""
    outcomes = Counter(s.outcome for s in history.sends)
    reasons = Counter(s.reason for s in history.sends if s.outcome == "failed")
    attempts = [a for s in history.sends for a in s.attempts]
    codes = Counter(a.code for a in attempts if a.rpc == "SendMoney")
    lookups = Counter(a.code for a in attempts if a.rpc != "SendMoney")
    resolved = Counter(
        "committed" if s.resolved else "absent" if s.resolved == "" else "unresolved"
        for s in history.sends
        if s.outcome == "unknown"
    )
    faults = Counter(f.name for f in history.faults)
    killed = sum(f.killed for f in history.faults)
    killed_transfer = sum(f.killed_transfer for f in history.faults)
    killed_busy = sum(f.killed_transfer_busy for f in history.faults)
    rounds = faults["terminate-backends"]
    queued = [f.queued for f in history.faults if f.name == "pause-transfer"]
    races = sum(f.queued for f in history.faults if f.name == "freeze-race")
    replays = sum(1 for s in history.sends if s.replayed is not None)
    return (
        f"{len(history.sends)} sends over {len(history.funding)} wallets: "
        f"{dict(outcomes)}; refusals {dict(reasons)}; unknown resolved {dict(resolved)}; "
        f"{sum(codes.values())} attempts by code {dict(codes)}; "
        f"lookups by code {dict(lookups)}; "
        f"sends retried with SendMoney {sum(1 for s in history.sends if len(_calls(s)) > 1)}, "
        f"answered OK after a retryable failure {sum(1 for s in history.sends if _retried_ok(s))}; "
        f"duplicates {sum(1 for s in history.sends if s.duplicate)}; "
        f"replays {replays}; freezes {len(history.freezes)}; faults {dict(faults)}; "
        f"backends terminated {killed} ({killed_transfer} transfer's, {killed_busy} of them "
        "busy); "
        f"termination rounds that cut a SendMoney short ({'/'.join(sorted(LOST_DATABASE))}) "
        f"{len(terminations_met(history))} of {rounds}; "
        f"transfer backends queued at each pause {queued}; "
        f"sends refused WALLET_FROZEN at the ledger's lock by a freeze race {races}; "
        f"balance reads {len(history.reads)}"
    )


def lost_replies(history: History, ledger: LedgerSnapshot) -> int:
    """Sends whose commit happened before the first SendMoney attempt answered OK had even
    started (by more than the clocks' offset, its error and `CLOCK_MARGIN`): an earlier attempt
    committed and lost its reply,
    and a retry of the same request_id got the stored answer. (An answer found by
    GetTransactionByRequestId is no retry's: it does not count.)"""
    debits = {key: rows[0] for key, rows in _debits(ledger).items()}
    count = 0
    for send in history.sends:
        debit = debits.get((send.sender_user, send.request_id))
        answered = [a.started for a in _calls(send) if a.code == "OK"]
        if debit is None or debit.committed_at is None or not answered:
            continue
        if debit.committed_at < min(answered) - _slack(ledger):
            count += 1
    return count


def freeze_windows(ledger: LedgerSnapshot) -> dict[str, list[tuple[float, float]]]:
    """Per wallet, (freeze's commit, lifting's commit) in the database's commit times: from a
    `wallet.frozen` to the next `wallet.unfrozen` (a freeze never lifted lasts for ever)."""
    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for e in ledger.freeze_events:
        if e.committed_at is not None:
            events[e.wallet_id].append((e.committed_at, e.sequence, e.action))
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for wallet, found in events.items():
        start: float | None = None
        for at, _, action in sorted(found):
            if action == "frozen" and start is None:
                start = at
            elif action == "unfrozen" and start is not None:
                windows[wallet].append((start, at))
                start = None
        if start is not None:
            windows[wallet].append((start, math.inf))
    return windows


def frozen_refusals_in_windows(history: History, ledger: LedgerSnapshot) -> int:
    """SendMoney attempts refused WALLET_FROZEN that were in flight (client clock, no slack)
    inside a freeze window of their sender (commit times): sends that raced a freeze."""
    windows = freeze_windows(ledger)
    return sum(
        1
        for send in history.sends
        for a in _calls(send)
        if _refused_frozen(a) and _inside(ledger, a, windows.get(send.sender, []), 0.0)
    )


def _capped(found: Iterable[str]) -> list[str]:
    problems = list(found)
    if len(problems) > _SHOWN:
        return [*problems[:_SHOWN], f"... and {len(problems) - _SHOWN} more like these"]
    return problems


def _conservation(history: History, ledger: LedgerSnapshot) -> Iterable[str]:
    funded = sum(history.funding.values())
    held = sum(ledger.balances.get(w, 0) for w in history.funding)
    if held != funded:
        yield f"total not conserved: the wallets hold {held}, they were funded with {funded}"
    if others := sorted(set(ledger.balances) - set(history.funding)):
        yield f"wallets the test did not open: {others}"
    if (total := sum(p.amount for p in ledger.postings)) != 0:
        yield f"all postings sum to {total}, not zero"
    system = sum(p.amount for p in ledger.postings if p.account.startswith("sys:"))
    if system != -funded:
        yield f"the system accounts hold {system}, expected {-funded}"
    for wallet, balance in sorted(ledger.balances.items()):
        if balance < 0:
            yield f"negative balance: {wallet} holds {balance}"
    for read in history.reads:
        if read.total != funded or read.minimum < 0 or read.wallets != len(history.funding):
            yield (
                f"balance read at {read.at:.3f} saw total {read.total} over {read.wallets} "
                f"wallets (minimum {read.minimum}); expected {funded} over "
                f"{len(history.funding)}"
            )


def _movements(history: History, ledger: LedgerSnapshot) -> Iterable[str]:
    postings = defaultdict(list)
    for p in ledger.postings:
        postings[p.movement].append(p)
    rows = defaultdict(list)
    for r in ledger.rows:
        rows[r.movement].append(r)
    top_ups = Counter(
        r.wallet_id for r in ledger.rows if r.category == "TOP_UP" and r.type == "CREDIT"
    )
    for wallet, amount in history.funding.items():
        made = 1 if amount else 0  # the freeze race's recipient is opened, never funded
        if top_ups[wallet] != made:
            yield f"{wallet} has {top_ups[wallet]} top-ups, the test made {made} of {amount}"
    for movement, kind in sorted(ledger.kinds.items()):
        if kind == "TOP_UP":
            continue
        if kind != "P2P":
            yield f"movement {movement} of kind {kind}: the test only sent money"
            continue
        sides = sorted(rows[movement], key=lambda r: r.type)
        legs = sorted((p.amount, p.account) for p in postings[movement])
        if [(r.type, r.category, r.status) for r in sides] != [
            ("CREDIT", "P2P_RECEIVE", "COMPLETED"),
            ("DEBIT", "P2P_SEND", "COMPLETED"),
        ]:
            yield f"send {movement} has sides {[(r.type, r.category, r.status) for r in sides]}"
            continue
        credit, debit = sides
        expected = sorted([(-debit.amount, debit.wallet_id), (credit.amount, credit.wallet_id)])
        if credit.amount != debit.amount or legs != expected:
            yield f"send {movement} posts {legs}, its sides say {expected}"


def _chains(ledger: LedgerSnapshot) -> Iterable[str]:
    """Per wallet, postings in id order are the order its row lock admitted the movements."""
    after = {(r.movement, r.wallet_id): r.balance_after for r in ledger.rows}
    by_wallet = defaultdict(list)
    for p in ledger.postings:
        if not p.account.startswith("sys:"):
            by_wallet[p.account].append(p)
    for wallet, postings in sorted(by_wallet.items()):
        running = 0
        for p in sorted(postings, key=lambda p: p.id):
            running += p.amount
            if running < 0:
                yield f"{wallet} went negative ({running}) at posting {p.id}"
            stated = after.get((p.movement, wallet))
            if stated != running:
                yield (
                    f"{wallet}: movement {p.movement} says balance_after {stated}, its "
                    f"postings in lock order give {running}"
                )
                break
        if running != ledger.balances.get(wallet):
            yield f"{wallet}: postings sum to {running}, balance is {ledger.balances.get(wallet)}"


def _debits(ledger: LedgerSnapshot) -> dict[tuple[str, str], list[LedgerRow]]:
    found: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
    for r in ledger.rows:
        if r.category == "P2P_SEND":
            found[(r.user_id, r.request_id or "")].append(r)
    return found


def _sends_against_ledger(history: History, ledger: LedgerSnapshot) -> Iterable[str]:
    debits = _debits(ledger)
    credits = {r.movement: r for r in ledger.rows if r.category == "P2P_RECEIVE"}
    sent = {(s.sender_user, s.request_id): s for s in history.sends}
    for key, found in sorted(debits.items()):
        send = sent.get(key)
        if send is None:
            yield (
                f"phantom: debit {found[0].id} of {found[0].wallet_id} (request {key[1]!r}) "
                "matches no request a client sent"
            )
            continue
        if len(found) != 1:
            yield f"request {send.request_id} is in the ledger {len(found)} times"
        debit = found[0]
        credit = credits.get(debit.movement)
        moved = (debit.wallet_id, credit.wallet_id if credit else None, debit.amount)
        if moved != (send.sender, send.recipient, send.amount):
            yield (
                f"request {send.request_id} asked {send.sender} -> {send.recipient} "
                f"{send.amount}, the ledger moved {moved}"
            )
    for send in history.sends:
        rows = debits.get((send.sender_user, send.request_id), [])
        in_ledger = rows[0].id if rows else None
        yield from _one_send(send, in_ledger)
        if rows and rows[0].committed_at is not None:
            yield from _lookups_after_commit(send, rows[0].committed_at, _slack(ledger))


# A transaction's commit time is stamped before it becomes visible to others: PostgreSQL
# writes the commit record, flushes it (with synchronous_commit on, and waits for a synchronous
# standby where one is named), then leaves the running set. The test's private server commits
# without a flush; a server named by VAULTPAY_POSTGRES_ADMIN_URL may flush and replicate, and
# a backend descheduled on these busy cores adds to either. A lookup that started this long
# after the stamp (and the clock slack) must see the commit.
COMMIT_VISIBLE_MARGIN = 2.0


def _lookups_after_commit(send: Send, committed_at: float, slack: float) -> Iterable[str]:
    """GetTransactionByRequestId answers NOT_FOUND only when nothing committed: a lookup that
    started after the send's commit (client clock, with the slack and
    `COMMIT_VISIBLE_MARGIN`) must have found it."""
    for a in send.attempts:
        looked = a.rpc == "GetTransactionByRequestId" and a.code == "NOT_FOUND"
        if looked and a.started - slack - COMMIT_VISIBLE_MARGIN > committed_at:
            yield (
                f"request {send.request_id}: GetTransactionByRequestId started at "
                f"{a.started:.3f} answered NOT_FOUND, the send had committed at "
                f"{committed_at:.6f}"
            )


def _one_send(send: Send, in_ledger: str | None) -> Iterable[str]:
    name = f"request {send.request_id} ({send.sender} -> {send.recipient} {send.amount})"
    answered = {a.transaction_id for a in send.attempts if a.code == "OK"}
    if len(answered) > 1:
        yield f"{name} was answered OK with different transactions {sorted(answered)}"
    if send.outcome == "ok":
        if in_ledger is None:
            yield f"lost: {name} was acknowledged as {send.transaction_id} but is not in the ledger"
        elif in_ledger != send.transaction_id:
            yield f"{name} was acknowledged as {send.transaction_id}, the ledger has {in_ledger}"
    elif send.outcome == "failed":
        if in_ledger is not None:
            yield f"{name} was refused ({send.reason}) but moved money as {in_ledger}"
    elif send.resolved is None:
        yield f"{name}: outcome unknown and never resolved"
    elif (send.resolved or None) != in_ledger:
        yield f"{name} resolved as {send.resolved or 'absent'}, the ledger has {in_ledger}"
    committed = send.committed_id
    if send.replayed is not None and send.replayed != committed:
        yield f"{name}: a replay answered {send.replayed or 'no transaction'}, not {committed}"


def _expected_balances(history: History, ledger: LedgerSnapshot) -> Iterable[str]:
    """Each balance is its funding plus exactly the requests the ledger says committed."""
    debits = _debits(ledger)
    expected = dict(history.funding)
    for send in history.sends:
        if (send.sender_user, send.request_id) in debits:
            expected[send.sender] = expected.get(send.sender, 0) - send.amount
            expected[send.recipient] = expected.get(send.recipient, 0) + send.amount
    for wallet, amount in sorted(expected.items()):
        if ledger.balances.get(wallet) != amount:
            yield (
                f"{wallet} holds {ledger.balances.get(wallet)}; its funding and the requests "
                f"in the ledger give {amount}"
            )


def _freezes(history: History, ledger: LedgerSnapshot) -> Iterable[str]:
    """No debit of a wallet committed between a staff freeze's commit and its lifting's.

    Both the freeze (wallet's AdminFreezeWallet: the wallet row FOR UPDATE, status FROZEN and
    its audit row, one transaction) and a send's ledger function (both wallet rows FOR UPDATE,
    then the state check, then the writes) hold the wallet's row lock to their commit, so
    their commit order is their lock order: a debit that committed after the freeze locked
    after it, saw FROZEN and must have refused, unless the lifting had committed first. Every
    P2P_SEND debit counts, acknowledged to a client or not (timed out, resolved, given up).

    And a WALLET_FROZEN refusal must have been in flight while a freeze of its sender was in
    force (client clock against commit times, with the slack)."""
    if blind := [e for e in ledger.freeze_events if e.committed_at is None]:
        yield (
            f"{len(blind)} freeze or lifting rows have no commit time "
            "(track_commit_timestamp off?): the freeze rule cannot be checked"
        )
    windows = freeze_windows(ledger)
    for debit in ledger.rows:
        if debit.category != "P2P_SEND":
            continue
        if debit.committed_at is None:
            yield f"debit {debit.id} has no commit time: the freeze rule cannot be checked"
            continue
        for start, end in windows.get(debit.wallet_id, []):
            if start < debit.committed_at < end:
                yield (
                    f"{debit.wallet_id} was debited ({debit.id}, request {debit.request_id}) "
                    f"by a send that committed at {debit.committed_at:.6f}, while frozen: "
                    f"the freeze committed at {start:.6f}, its lifting at {end:.6f}"
                )
    acknowledged = Counter(w.wallet_id for w in history.freezes)
    for wallet, count in sorted(acknowledged.items()):
        if len(windows.get(wallet, [])) < count:
            yield (
                f"{wallet}: {count} freezes acknowledged to a client, the database has "
                f"{len(windows.get(wallet, []))}"
            )
    for send in history.sends:
        for a in _calls(send):
            if _refused_frozen(a) and not _inside(
                ledger, a, windows.get(send.sender, []), _slack(ledger)
            ):
                yield (
                    f"request {send.request_id} was refused WALLET_FROZEN in flight from "
                    f"{a.started:.3f} to {a.ended:.3f}, when no freeze of {send.sender} was "
                    "in force"
                )


def _balance_refusals(history: History, ledger: LedgerSnapshot) -> Iterable[str]:
    """An INSUFFICIENT_BALANCE refusal came while the sender held less than the amount at
    some moment of the attempt.

    The ledger function reads the sender's balance under the wallet's row lock, and every
    movement of the wallet holds that lock to its commit, so the balance it read is the
    balance_after of the wallet's last row committed before that moment (commit order is
    lock order; every row counts: top-ups, sends, receipts). The moment lies in the attempt
    (client clock, `_slack` either way: the span). The balances it may have read are then the
    one held when the span began (the last row committed at or before its start; none: 0, a
    wallet opens empty and its funding is a row) and each balance_after committed inside it;
    the refusal is unjustified only if every one of them is at least the amount.

    The request's own debit (a copy or retry of it that committed) and every row committed
    after it never justify the refusal: the stored answer, looked up under the key's hold,
    and the ledger's re-claim of the key run before the balance check, so a run that began
    after that commit is answered with it, not refused, and a refusal read the balance before
    its own request's debit committed. A debit committed before the span even began is
    `_refusals_after_commit`'s. Conservative: an attempt is skipped when a row of the sender
    that may have committed before the span's end (created_at at or before it) has no commit
    time."""
    slack = _slack(ledger)
    debits = _debits(ledger)
    by_wallet: dict[str, list[LedgerRow]] = defaultdict(list)
    for r in ledger.rows:
        by_wallet[r.wallet_id].append(r)
    for send in history.sends:
        rows = by_wallet.get(send.sender, [])
        own = [
            r.committed_at
            for r in debits.get((send.sender_user, send.request_id), [])
            if r.committed_at is not None
        ]
        cutoff = min(own, default=math.inf)
        for a in _calls(send):
            if verdict(a) != "failed" or (a.reason or a.code) != "INSUFFICIENT_BALANCE":
                continue
            began, ended = a.started - slack, a.ended + slack
            if cutoff <= began or any(
                r.committed_at is None and r.created_at <= ended for r in rows
            ):
                continue
            timed = [(r.committed_at, r.balance_after) for r in rows if r.committed_at is not None]
            start = max((at for at, _ in timed if at <= began), default=None)
            held = [b for at, b in timed if at == start] if start is not None else [0]
            held += [b for at, b in timed if began < at <= ended and at < cutoff]
            if min(held) >= send.amount:
                yield (
                    f"request {send.request_id}: an attempt from {a.started:.3f} to "
                    f"{a.ended:.3f} was refused INSUFFICIENT_BALANCE for {send.amount}, and "
                    f"{send.sender} held at least {min(held)} throughout (its ledger rows' "
                    f"commit times, +-{slack:.3f} s)"
                )


def _refusals_after_commit(history: History, ledger: LedgerSnapshot) -> Iterable[str]:
    """A definite refusal of an attempt that started after its own request's debit had
    committed (by more than the slack): the stored answer is looked up under the key's hold
    before anything else is checked (the PIN, the wallet's state, the balance), and the hold
    is released only once the commit is visible, so such an attempt must have been answered
    with the stored answer. A refusal that came before the commit of a later copy or retry
    is fine: a refused movement stores nothing."""
    slack = _slack(ledger)
    debits = _debits(ledger)
    for send in history.sends:
        committed = [
            r.committed_at
            for r in debits.get((send.sender_user, send.request_id), [])
            if r.committed_at is not None
        ]
        if not committed:
            continue
        first = min(committed)
        for a in _calls(send):
            if verdict(a) == "failed" and first + slack < a.started:
                yield (
                    f"request {send.request_id}: an attempt at {a.started:.3f} was refused "
                    f"{a.reason or a.code} after its debit had committed at {first:.6f}: a "
                    "retry of a committed request is answered with the stored answer"
                )


def _clock(ledger: LedgerSnapshot) -> list[str]:
    if abs(ledger.clock_offset) + ledger.clock_error > CLOCK_SLACK:
        return [
            f"the database's clock is {ledger.clock_offset:+.3f} s (+-{ledger.clock_error:.3f}) "
            f"from the client's, more than the {CLOCK_SLACK} s the checker allows"
        ]
    return []


def _calls(send: Send) -> list[Attempt]:
    """The send's SendMoney attempts (not its GetTransactionByRequestId lookups)."""
    return [a for a in send.attempts if a.rpc == "SendMoney"]


def _alone(send: Send) -> list[Attempt]:
    """The send's SendMoney attempts that were in flight with no other of its own: not the
    two copies of a duplicate (its retries run one after another)."""
    calls = _calls(send)
    return [
        a
        for i, a in enumerate(calls)
        if not any(
            j != i and b.started < a.ended and a.started < b.ended for j, b in enumerate(calls)
        )
    ]


def _retried_ok(send: Send) -> bool:
    """A SendMoney attempt answered OK after an earlier one of the request had ended with a
    retryable failure: a retry with the same request_id."""
    calls = _calls(send)
    return any(
        a.code == "OK" and any(b.code in INDEFINITE and b.ended <= a.started for b in calls)
        for a in calls
    )


def _refused_frozen(attempt: Attempt) -> bool:
    return (attempt.reason or attempt.code) == "WALLET_FROZEN"


def _slack(ledger: LedgerSnapshot) -> float:
    """What a client's reading held against a database time is allowed either way."""
    return abs(ledger.clock_offset) + ledger.clock_error + CLOCK_MARGIN


def _inside(
    ledger: LedgerSnapshot, a: Attempt, windows: list[tuple[float, float]], slack: float
) -> bool:
    """The attempt was in flight during one of the windows (`slack` either way)."""
    began, ended = a.started - slack, a.ended + slack
    return any(began < end and ended > start for start, end in windows)


def _answers(history: History, ledger: LedgerSnapshot) -> Iterable[str]:
    for wallet in ledger.lockouts:
        yield f"{wallet} was locked out for wrong PINs, and every PIN sent was right"
    allowed = ALLOWED_REFUSALS
    for send in history.sends:
        if send.outcome == "failed" and send.reason not in allowed:
            yield (
                f"request {send.request_id} was refused with {send.reason!r}, "
                "which nothing here should cause"
            )
        # Every refused attempt, not only the one that ended the send: one of two copies sent
        # at once, refused while the other was answered OK (the same bytes told
        # IDEMPOTENCY_KEY_REUSED, or PIN_LOCKED for a check in progress), ends no send.
        for a in _calls(send):
            refusal = a.reason or a.code
            told = send.outcome == "failed" and refusal == send.reason  # reported above
            if verdict(a) == "failed" and refusal not in allowed and not told:
                yield (
                    f"request {send.request_id}: an attempt at {a.started:.3f} was refused "
                    f"with {refusal!r}, which nothing here should cause"
                )
        for attempt in send.attempts:
            if attempt.code == "INTERNAL":
                yield (
                    f"request {send.request_id}: {attempt.rpc} answered INTERNAL ({attempt.reason} "
                    f"{attempt.message!r}) at {attempt.ended:.3f} via {attempt.via}: a fault "
                    "must answer a retryable code"
                )


def unexercised(
    history: History,
    ledger: LedgerSnapshot,
    *,
    seconds: float,
    fault_names: Collection[str],
    replay_sample: int = 0,
) -> list[str]:
    """What the run should have done and did not (a checker never passes a run that did
    nothing): one line per missing piece of evidence."""
    gaps: list[str] = []
    sends = history.sends
    calls = [a for s in sends for a in _calls(s)]
    ok = [s for s in sends if s.outcome == "ok"]
    if len(calls) < MIN_SEND_ATTEMPTS_PER_SECOND * seconds:
        gaps.append(
            f"{len(calls)} SendMoney attempts in {seconds:g} s, fewer than "
            f"{MIN_SEND_ATTEMPTS_PER_SECOND} a second"
        )
    if len(ok) < MIN_OK_PER_SECOND * seconds:
        gaps.append(f"{len(ok)} acknowledged sends in {seconds:g} s")
    for reason in sorted(ALLOWED_REFUSALS):
        if not any(s.reason == reason for s in sends):
            gaps.append(f"no send refused {reason}")
    if not frozen_refusals_in_windows(history, ledger):
        gaps.append("no WALLET_FROZEN refusal in flight inside a freeze window")
    if not any(a.via == "envoy" and a.code == "OK" for s in ok for a in s.attempts):
        gaps.append("no send answered OK through Envoy")
    if not any(_retried_ok(s) for s in sends):
        gaps.append("no SendMoney retry answered OK after a retryable failure")
    if not any(
        s.committed_id and c[0].code == "DEADLINE_EXCEEDED" and any(a.code == "OK" for a in c)
        for s in sends
        if (c := _calls(s))
    ):
        gaps.append("no send whose first attempt timed out was answered OK by a retry")
    if not any(s.duplicate and len(_calls(s)) >= 2 for s in sends):
        gaps.append("no request sent as two copies at once")
    if not lost_replies(history, ledger):
        gaps.append("no reply lost after its commit and answered by a retry")
    unknown = [s for s in sends if s.outcome == "unknown"]
    if not unknown:
        gaps.append("no send left unknown")
    if any(s.resolved is None for s in unknown):
        gaps.append("an unknown send was not resolved")
    if not history.freezes or not freeze_windows(ledger):
        gaps.append("no freeze acknowledged, or none in the database")
    if not history.reads:
        gaps.append("no balance read during the run")
    replays = sum(1 for s in sends if s.replayed is not None)
    if replays < min(len(ok), replay_sample):
        gaps.append(f"{replays} replays, fewer than {min(len(ok), replay_sample)}")
    gaps += _fault_effects(history, fault_names)
    return gaps


def _fault_effects(history: History, fault_names: Collection[str]) -> list[str]:
    """Every fault kind ran and did something: backends (transfer's among them) were
    terminated, a pause caught sends queued on a lock, restarts brought new processes, and
    SendMoney calls in flight met each kind (a retryable failure; for Redis, which is not on
    the money path, calls in flight at all). A failure counts only from an attempt with the
    full deadline (`FULL_DEADLINE`): a short-deadline one (about a fifth of first attempts,
    around the median latency) ends DEADLINE_EXCEEDED on its own, fault or not; and never
    from one of two copies of a request in flight at once (`_alone`), nor an ABORTED answer:
    the copy that loses the request's key to its twin is answered ABORTED
    (IDEMPOTENCY_KEY_IN_USE, or wallet's PIN_CHECK_IN_PROGRESS) within milliseconds, fault or
    not. A backend termination counts only from an answer that says the database connection
    was lost (UNAVAILABLE with a `LOST_DATABASE` reason), near no other fault."""
    gaps: list[str] = []
    faults = history.faults
    if missing := sorted(set(fault_names) - {f.name for f in faults}):
        gaps.append(f"faults never injected: {missing}")
    terminations = [f for f in faults if f.name == "terminate-backends"]
    if terminations and not sum(f.killed for f in terminations):
        gaps.append("no backend was ever terminated")
    if terminations and not sum(f.killed_transfer for f in terminations):
        gaps.append("no transfer backend was ever terminated")
    if terminations and not sum(f.killed_transfer_busy for f in terminations):
        gaps.append("no transfer backend was terminated in a statement or a transaction")
    pauses = [f for f in faults if f.name == "pause-transfer"]
    if pauses and not any(f.queued for f in pauses):
        gaps.append("no pause of transfer caught a send queued on a wallet lock")
    for f in faults:
        if f.name in _NEW_PROCESS and (not f.pid_after or f.pid_after == f.pid_before):
            gaps.append(f"{f.name} at {f.started:.3f}: pid {f.pid_before} -> {f.pid_after}")
    calls = sorted((a for s in history.sends for a in _calls(s)), key=lambda a: a.started)
    full = [a for a in calls if a.timeout >= FULL_DEADLINE]
    # The evidence that a fault met a call in flight: full deadline, no copy's answer.
    alone = [a for s in history.sends for a in _alone(s) if a.timeout >= FULL_DEADLINE]
    for name in sorted({f.name for f in faults}):
        kind = [f for f in faults if f.name == name]
        if name == "freeze-race":
            # Its own evidence: the send it stopped at the ledger's lock answered WALLET_FROZEN
            # after the freeze committed (workload.race_a_freeze).
            if not any(f.queued for f in kind):
                gaps.append(
                    "no freeze committed while a send past its PIN check waited at the "
                    "ledger's lock, refused WALLET_FROZEN after it"
                )
            continue
        if name == "restart-redis":
            met = any(_during(a, f) for f in kind for a in calls)
            gaps += _sends_that_needed_redis(kind, full, faults)
        elif name == "terminate-backends":
            met = bool(terminations_met(history))
        else:
            met = any(
                _during(a, f) and a.code in INDEFINITE and a.code != "ABORTED"
                for f in kind
                for a in alone
            )
        if not met:
            answer = {
                "restart-redis": "",
                "terminate-backends": (
                    f" that ended UNAVAILABLE {' or '.join(sorted(LOST_DATABASE))} (full "
                    "deadline, no copy, no other fault near)"
                ),
            }.get(name, " that ended retryable (full deadline, not ABORTED, no copy)")
            gaps.append(f"no SendMoney attempt in flight during {name}{answer}")
    return gaps


def terminations_met(history: History) -> list[Fault]:
    """The terminate-backends rounds that cut a SendMoney call short: a full-deadline attempt,
    not one of two copies in flight at once, in flight during the round and near no other
    fault (`_OTHER_FAULT_TAIL`), answered UNAVAILABLE with a `LOST_DATABASE` reason. (Review:
    any retryable answer counted, ABORTED included, so a duplicate's losing copy, answered
    IDEMPOTENCY_KEY_IN_USE within milliseconds whatever the faults did, met a round in which
    no termination cut a call short.)"""
    others = [f for f in history.faults if f.name != "terminate-backends"]
    lost = [
        a
        for s in history.sends
        for a in _alone(s)
        if a.timeout >= FULL_DEADLINE
        and a.code == "UNAVAILABLE"
        and a.reason in LOST_DATABASE
        and not any(_during(a, o, _OTHER_FAULT_TAIL) for o in others)
    ]
    return [
        f
        for f in history.faults
        if f.name == "terminate-backends" and any(_during(a, f) for a in lost)
    ]


def _sends_that_needed_redis(
    restarts: list[Fault], full: list[Attempt], faults: list[Fault]
) -> list[str]:
    """The money path has no Redis (ARCHITECTURE.md): a full-deadline SendMoney in flight
    while Redis restarted, and near no other disruptive fault, never answers UNAVAILABLE
    (review of 2026-12-05: the check asked only that some send was in flight, so a send that
    failed for want of Redis, and was retried, passed). DEADLINE_EXCEEDED is not held
    against it: on these shared cores a send may run past its deadline on its own."""
    disruptive = [f for f in faults if f.name not in ("restart-redis", "freeze-race")]
    return [
        f"SendMoney at {a.started:.3f} answered UNAVAILABLE during restart-redis "
        f"({f.started:.3f}-{f.ended:.3f}), no other fault near: the money path needed Redis"
        for f in restarts
        for a in full
        if _during(a, f)
        and a.code == "UNAVAILABLE"
        and not any(_during(a, o, _OTHER_FAULT_TAIL) for o in disruptive)
    ]


def _during(a: Attempt, f: Fault, tail: float = 0.0) -> bool:
    return a.started <= f.ended + tail and a.ended >= f.started
