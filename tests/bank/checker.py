"""The bank test's checker: what the clients saw against what the ledger holds.

    problems = check(history, ledger)     # [] when every property holds
    print(summary(history))

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
- no debit of a frozen wallet took its lock between the freeze and its lifting (`_freezes`);
- refusals are only the ones this workload can cause (balance, freeze; PIN_CHECK_IN_PROGRESS
  is a retryable ABORTED, never a final answer), nobody was locked out for wrong PINs, and faults
  surface as retryable codes, never INTERNAL, straight to a service or through Envoy (a
  service sends its response headers only with its answer, so a service that dies mid-call
  leaves Envoy nothing to reset: it answers UNAVAILABLE).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from tests.bank.history import (
    ALLOWED_REFUSALS,
    History,
    LedgerRow,
    LedgerSnapshot,
    Send,
)

__all__ = ["check", "lost_replies", "summary"]

_SHOWN = 10  # violations listed per property


def check(history: History, ledger: LedgerSnapshot) -> list[str]:
    problems: list[str] = []
    problems += _capped(_conservation(history, ledger))
    problems += _capped(_movements(history, ledger))
    problems += _capped(_chains(ledger))
    problems += _capped(_sends_against_ledger(history, ledger))
    problems += _capped(_expected_balances(history, ledger))
    problems += _capped(_freezes(history, ledger))
    problems += _capped(_answers(history, ledger))
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
    replays = sum(1 for s in history.sends if s.replayed is not None)
    return (
        f"{len(history.sends)} sends over {len(history.funding)} wallets: "
        f"{dict(outcomes)}; refusals {dict(reasons)}; unknown resolved {dict(resolved)}; "
        f"{sum(codes.values())} attempts by code {dict(codes)}; "
        f"lookups by code {dict(lookups)}; "
        f"retried sends {sum(1 for s in history.sends if len(s.attempts) > 1)}; "
        f"replays {replays}; freezes {len(history.freezes)}; faults {dict(faults)}; "
        f"balance reads {len(history.reads)}"
    )


def lost_replies(history: History, ledger: LedgerSnapshot) -> int:
    """Sends whose commit happened before the attempt that was answered OK had even started:
    an earlier attempt committed and lost its reply, and a retry got the stored answer."""
    debits = {key: rows[0] for key, rows in _debits(ledger).items()}
    count = 0
    for send in history.sends:
        debit = debits.get((send.sender_user, send.request_id))
        answered = [a.started for a in send.attempts if a.code == "OK"]
        if send.outcome == "ok" and debit is not None and debit.created_at < min(answered):
            count += 1
    return count


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
        if top_ups[wallet] != 1:
            yield f"{wallet} has {top_ups[wallet]} top-ups, the test made one of {amount}"
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
            yield f"phantom: debit {found[0].id} of {found[0].wallet_id} (request {key[1]!r}) matches no request a client sent"
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
    """No debit of a frozen wallet took its row lock between the freeze's commit and the
    lifting's. Neither commit is observed, so only what is certain counts:
    - the debit started after the freeze was acknowledged (its function's clock_timestamp),
      so it locked the wallet after the freeze had committed;
    - it, or a later movement of the wallet in lock order (posting id), was acknowledged to
      a client before the lifting was sent, so it locked the wallet before the lifting
      committed."""
    acked: dict[str, float] = {}  # movement -> when a client first heard it committed
    debits = _debits(ledger)
    for send in history.sends:
        rows = debits.get((send.sender_user, send.request_id))
        answers = [a.ended for a in send.attempts if a.code == "OK"]
        if rows and answers:
            acked[rows[0].movement] = min(answers)
    debit_rows = {(r.movement, r.wallet_id): r for r in ledger.rows if r.type == "DEBIT"}
    lock_order: dict[str, list[str]] = defaultdict(list)
    for p in sorted(ledger.postings, key=lambda p: p.id):
        lock_order[p.account].append(p.movement)
    for window in history.freezes:
        movements = lock_order.get(window.wallet_id, [])
        known_by = float("inf")  # earliest acknowledgement of this movement or a later one
        for movement in reversed(movements):
            known_by = min(known_by, acked.get(movement, float("inf")))
            debit = debit_rows.get((movement, window.wallet_id))
            if debit and debit.created_at > window.acked and known_by < window.lifted:
                yield (
                    f"{debit.wallet_id} was debited ({debit.id}, request {debit.request_id}) "
                    f"by a send that started at {debit.created_at:.6f}, after its freeze was "
                    f"acknowledged at {window.acked:.6f}, and locked it before the freeze "
                    f"was lifted at {window.lifted:.6f}"
                )


def _answers(history: History, ledger: LedgerSnapshot) -> Iterable[str]:
    for wallet in ledger.lockouts:
        yield f"{wallet} was locked out for wrong PINs, and every PIN sent was right"
    allowed = ALLOWED_REFUSALS
    for send in history.sends:
        if send.outcome == "failed" and send.reason not in allowed:
            yield f"request {send.request_id} was refused with {send.reason!r}, which nothing here should cause"
        for attempt in send.attempts:
            if attempt.code == "INTERNAL":
                yield (
                    f"request {send.request_id}: {attempt.rpc} answered INTERNAL ({attempt.reason} "
                    f"{attempt.message!r}) at {attempt.ended:.3f} via {attempt.via}: a fault "
                    "must answer a retryable code"
                )
