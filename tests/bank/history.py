"""What the bank test records (the history of its clients) and what it reads back (the ledger).

Both are plain values, so the checker (tests/bank/checker.py) is a pure function of them and
is tested on its own with made-up histories (tests/bank/test_checker.py).

Times are wall-clock seconds since the epoch: a client's `time.time()`, a row's `created_at`
and a transaction's commit time (`pg_xact_commit_timestamp(xmin)`, the test's PostgreSQL runs
with `track_commit_timestamp=on`). Orders that matter to a property are taken from the
database alone (commit times against commit times: the freeze rule). Where a client's reading
is held against the database's (a lost reply, a refusal inside a freeze), the two clocks are
the same machine's, and the snapshot carries the offset measured once (`clock_offset`,
`clock_error`): the checker fails when it exceeds `CLOCK_SLACK`, and each comparison allows
the measured offset, its error and `CLOCK_MARGIN` either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ALLOWED_REFUSALS",
    "CLOCK_MARGIN",
    "CLOCK_SLACK",
    "INDEFINITE",
    "Attempt",
    "BalanceRead",
    "Fault",
    "FreezeEvent",
    "FreezeWindow",
    "History",
    "LedgerRow",
    "LedgerSnapshot",
    "Outcome",
    "Posting",
    "Send",
    "Verdict",
    "verdict",
]

# What an acknowledged-as-failed send may be refused with in this workload: every wallet is
# funded, verified, trusted and far below its limits, and every PIN is right.
ALLOWED_REFUSALS = frozenset({"INSUFFICIENT_BALANCE", "WALLET_FROZEN"})
# Answers that do not say whether the send happened: retried with the same request_id.
INDEFINITE = frozenset(
    {"DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL", "ABORTED"}
)
# The deadline of every call the workload makes but its short-deadline first SendMoney attempts
# (`_short_deadline`, around the median latency): only an attempt with it counts as a fault
# met in flight (checker `_fault_effects`), a short one times out on its own.
FULL_DEADLINE = 3.0
# How far a client's clock may be from the database's (seconds, the measured offset plus its
# error): one machine's clock read twice is within a millisecond; more, and the test fails.
CLOCK_SLACK = 0.05
# What a comparison of a client's reading with a database time allows besides the measured
# offset and error (reading the clock is not instantaneous either).
CLOCK_MARGIN = 0.005

# ok: answered OK with a transaction; failed: a definite refusal (nothing moved);
# unknown: no definite answer (timeouts, UNAVAILABLE, ...) before the client gave up.
Outcome = Literal["ok", "failed", "unknown"]


@dataclass
class Attempt:
    """One SendMoney call of a send (a retry is another attempt with the same request_id)."""

    started: float
    ended: float
    timeout: float
    code: str  # "OK" or the gRPC status code's name
    reason: str = ""  # the ErrorInfo reason, when there was one
    transaction_id: str = ""  # the debit an OK answer returned
    via: str = "direct"  # "direct" (the transfer port) or "envoy"
    message: str = ""  # the status message of a failure
    # SendMoney, or GetTransactionByRequestId: a client asking what became of its send
    # between two attempts (OK: it committed; anything else tells nothing)
    rpc: str = "SendMoney"


@dataclass
class Send:
    """One logical send: a request_id, with everything its client saw."""

    request_id: str
    client: int
    sender_user: str
    sender: str  # wallet ids
    recipient: str
    amount: int
    attempts: list[Attempt] = field(default_factory=list)
    outcome: Outcome = "unknown"
    transaction_id: str = ""  # ok: the debit's id
    reason: str = ""  # failed: the refusal's reason
    # unknown outcomes, asked afterwards with GetTransactionByRequestId: the debit's id, "" when
    # the service says there is none, None when it could not be asked.
    resolved: str | None = None
    # Sends that moved money, sent again unchanged afterwards: the transaction id the replay
    # answered ("" when it did not answer OK, None when not replayed).
    replayed: str | None = None
    # The first attempt went out as two identical calls at once (two copies of one request).
    duplicate: bool = False

    @property
    def committed_id(self) -> str | None:
        """The debit this send made as far as the client knows (OK or resolved), else None."""
        if self.outcome == "ok":
            return self.transaction_id
        if self.outcome == "unknown" and self.resolved:
            return self.resolved
        return None


@dataclass
class FreezeWindow:
    """A staff freeze of one wallet as its client saw it: acknowledged at `acked`, its lifting
    sent at `lifted` (client clock, never compared: each acknowledged freeze must be in the
    database, and the freeze rule orders by its commit times, `LedgerSnapshot.freeze_events`)."""

    wallet_id: str
    acked: float
    lifted: float


@dataclass
class Fault:
    """One injected fault and what it did (the test asserts faults had effects)."""

    name: str
    started: float
    ended: float
    error: str = ""  # the fault could not be injected (the test fails on it)
    killed: int = 0  # terminate-backends: backends terminated, all of the mesh's
    killed_transfer: int = 0  # ... of which transfer's
    killed_transfer_busy: int = 0  # ... of which in a statement or a transaction (not idle)
    queued: int = 0  # pause-transfer: transfer backends waiting on a wallet lock at SIGSTOP
    pid_before: int = 0  # restarts: the process before and after (Redis's or transfer's)
    pid_after: int = 0


@dataclass
class BalanceRead:
    """A snapshot read of every test wallet's balance in one statement, during the run."""

    at: float
    total: int
    minimum: int
    wallets: int


@dataclass
class History:
    funding: dict[str, int]  # wallet id -> the top-up it started with
    sends: list[Send] = field(default_factory=list)
    freezes: list[FreezeWindow] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    reads: list[BalanceRead] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what a helper task could not do


@dataclass(frozen=True)
class LedgerRow:
    """One wallet's side of a movement (wallet_transactions)."""

    id: str
    movement: str  # ledger_transaction_id
    request_id: str | None
    user_id: str
    wallet_id: str
    type: str  # DEBIT / CREDIT
    category: str
    status: str
    amount: int
    balance_after: int
    counterparty: str
    created_at: float  # clock_timestamp() right after the ledger function locked the wallets
    # when its transaction committed (pg_xact_commit_timestamp); None when not recorded
    committed_at: float | None = None


@dataclass(frozen=True)
class FreezeEvent:
    """A staff freeze or lifting of a wallet as the database has it: its audit row
    (`wallet.frozen` / `wallet.unfrozen`, written in the transaction that changed the wallet
    under its row lock) and that transaction's commit time."""

    wallet_id: str
    action: Literal["frozen", "unfrozen"]
    committed_at: float | None
    sequence: int  # the audit row's


@dataclass(frozen=True)
class Posting:
    id: int  # identity: assigned under the wallets' row locks, so per wallet it is lock order
    movement: str
    account: str
    amount: int


@dataclass
class LedgerSnapshot:
    """The whole ledger, read in one REPEATABLE READ snapshot after the run."""

    balances: dict[str, int]  # every wallet
    kinds: dict[str, str]  # ledger transaction id -> kind
    rows: list[LedgerRow]
    postings: list[Posting]
    lockouts: list[str] = field(default_factory=list)  # wallets wallet locked for wrong PINs
    freeze_events: list[FreezeEvent] = field(default_factory=list)
    # The database's clock minus the client's, measured once (SELECT clock_timestamp() between
    # two time.time()), and half that round trip: how uncertain the offset is.
    clock_offset: float = 0.0
    clock_error: float = 0.0


# What a client makes of one SendMoney answer: ok; failed (a definite refusal: nothing moved);
# retry (the answer tells nothing: the same request again); renew (refused before anything ran:
# a fresh token, then the same request).
Verdict = Literal["ok", "failed", "retry", "renew"]


def verdict(attempt: Attempt) -> Verdict:
    if attempt.code == "OK":
        return "ok"
    if attempt.code == "UNAUTHENTICATED":
        return "renew"
    if attempt.code in INDEFINITE or attempt.reason == "RATE_LIMITED":
        return "retry"
    return "failed"
