"""What the transfer use cases need from the outside world, as Protocols.

- `Ledger`: the money path. Each movement is one atomic ledger transaction (one database
  round trip, see adapters/ledger_pg.py); it is its own unit of work: it commits before it
  answers OK and writes nothing when it refuses. `hold` keeps a PIN-checked movement's key
  from its stored-answer lookup to that transaction (`HeldMovement`).
- `WalletGate`: wallet's PIN and IP-trust checks (peer calls with our service identity).
- `TransactionStore`: reads of the ledger (histories, lookups, usage, statistics).
- `LedgerAuditor`: the invariants, checked on one consistent snapshot.
- `PayoutLedger` and `Bank`: the payout worker's side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

from vaultpay_common.audit.model import AuditEntry
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_transfer.domain.model import (
    LedgerCheck,
    PaymentMethod,
    Transaction,
    TransactionCategory,
    TransactionStatus,
    TransactionType,
    TransferStats,
    UsageFigures,
)
from vaultpay_transfer.domain.outcomes import LedgerOutcome

__all__ = [
    "Bank",
    "BankAnswer",
    "CheckDone",
    "ClaimAnswer",
    "ClosedWalletPayoutError",
    "HeldMovement",
    "IpCheck",
    "Ledger",
    "LedgerAuditor",
    "PayoutClaim",
    "PayoutLease",
    "PayoutLedger",
    "PayoutSettlement",
    "TransactionCursor",
    "TransactionFilter",
    "TransactionStore",
    "WalletGate",
]


class HeldMovement(Protocol):
    """One PIN-checked movement whose key is held (`Ledger.hold`): no other attempt of the
    same key, in this process or another, gets past its own `hold` until this one's ledger
    transaction has committed or the hold ends."""

    # The answer an earlier identical request stored (the key is then not held: nothing is
    # left to run), or None.
    stored: Transaction | None

    async def send_money(
        self, user_id: str, recipient_wallet_id: str, amount_minor: int, currency: str, note: str
    ) -> LedgerOutcome: ...

    async def withdraw(
        self,
        user_id: str,
        amount_minor: int,
        currency: str,
        ifsc: str,
        account_mask: str,
        account_hash: str,
        holder_name: str,
    ) -> LedgerOutcome: ...


class Ledger(Protocol):
    def hold(self, key: IdempotencyKey) -> AbstractAsyncContextManager[HeldMovement]:
        """The key held for one movement: its stored answer if there is one, else the key
        locked until the held movement's ledger call commits or the block ends; raises
        IdempotencyKeyInUseError while another attempt holds it, IdempotencyKeyReusedError
        for the same key with a different request."""
        ...

    async def top_up(
        self,
        key: IdempotencyKey,
        user_id: str,
        amount_minor: int,
        currency: str,
        method: PaymentMethod,
        payment_reference: str,
        description: str,
    ) -> LedgerOutcome:
        """A top-up needs no hold: nothing is asked between its arrival and its ledger call."""
        ...

    async def stored_answer(self, key: IdempotencyKey) -> Transaction | None:
        """The answer a committed movement stored under `key` for this very request (its
        fingerprint), or None (none stored, or one of another request): read only, no hold.
        For a retry the input checks now refuse (a PIN left out, a bound lowered since).
        Raises IdempotencyKeyReusedError when no answer is stored but the request id moved
        the caller's money (its answer expired), as `hold` does."""
        ...


@dataclass(frozen=True, slots=True)
class IpCheck:
    trusted: bool
    confirmation_sent: bool


@dataclass(frozen=True, slots=True)
class MovementChecked:
    wallet_id: str  # the user's wallet, whose PIN matched
    ip: IpCheck  # the client address's trust
    # False: wallet found the tier NONE (it reads the tier only for an address it did not
    # find trusted, and then mails no link); None: not told (the ledger checks the tier).
    kyc_verified: bool | None = None


class WalletGate(Protocol):
    async def check_movement(
        self, user_id: str, pin: str, client_ip: str, check_id: str
    ) -> MovementChecked:
        """wallet's checks of a money movement: the PIN, then (once it matched) the client's
        address. A PIN that does not match is wallet's refusal (INVALID_PIN with the remaining
        attempts, PIN_LOCKED, PIN_NOT_SET, WALLET_FROZEN, ...) as a domain error; an
        untrusted address is an answer (`ip.trusted` False), for the caller to refuse, as is
        a wallet of KYC tier NONE behind one (`kyc_verified` False, no link mailed). `check_id` keys both, so a
        retried check counts once toward the lockout and mails at most once."""
        ...


@dataclass(frozen=True, slots=True)
class TransactionFilter:
    """Filters of a listing; None/empty means "any", except `user_id`: None is any user (the
    staff listing), and any string, even an empty one, is that user only (a user's listing
    whose caller somehow had no id lists nothing, never everyone's)."""

    user_id: str | None = None
    wallet_id: str = ""
    type: TransactionType | None = None
    category: TransactionCategory | None = None
    status: TransactionStatus | None = None
    start: datetime | None = None
    end: datetime | None = None


TransactionCursor = tuple[datetime, str]  # (created_at, id) of the last row of a page


class TransactionStore(Protocol):
    async def get(self, user_id: str, transaction_id: str) -> Transaction | None:
        """The caller's transaction by id (None for another user's)."""
        ...

    async def by_reference(self, user_id: str, reference: str) -> Transaction | None: ...

    async def by_request_id(self, user_id: str, request_id: str) -> Transaction | None: ...

    async def movement_in_flight(
        self, caller: str, methods: Sequence[str], request_id: str
    ) -> bool:
        """A movement of `caller` with `request_id` by one of `methods` is running now (its
        outcome not committed yet). Its commit comes before it lets go of its key."""
        ...

    async def list(
        self, flt: TransactionFilter, after: TransactionCursor | None, limit: int
    ) -> Sequence[Transaction]:
        """Newest first, strictly after `after` in that order."""
        ...

    async def list_audited(
        self,
        flt: TransactionFilter,
        after: TransactionCursor | None,
        limit: int,
        audit: Callable[[Sequence[Transaction]], AuditEntry],
    ) -> Sequence[Transaction]:
        """`list`, and the audit row `audit` makes of the rows read, in one transaction: the
        rows are returned only once their audit row committed."""
        ...

    async def wallet_currency(self, wallet_id: str) -> str | None: ...

    async def usage(
        self, wallet_id: str, at: datetime | None = None
    ) -> tuple[datetime, Sequence[UsageFigures]]:
        """The time read (`at`, else the database's clock) and each used action's figures
        of that time's business day and month."""
        ...

    async def stats(self, now: datetime) -> TransferStats: ...


# Told each check as soon as it has run (the CLI prints it: a large ledger takes minutes).
CheckDone = Callable[[LedgerCheck], None]


class LedgerAuditor(Protocol):
    async def check(self, on_check: CheckDone | None = None) -> Sequence[LedgerCheck]:
        """Every invariant of the ledger and the audit chain, from one snapshot; `on_check`
        hears each as it completes."""
        ...


@dataclass(frozen=True, slots=True)
class PayoutLease:
    transaction_id: str
    account_hash: str
    amount_minor: int
    currency: str
    # The bank calls made for the payout before this lease (transfer t0021: a lease counts
    # none; the claim for the bank counts each call, `PayoutClaim.attempts`).
    attempts: int
    # The lease's end as the ledger set it (the payout's available_at): the fencing value the
    # worker shows when it claims the payout for the bank (`PayoutLedger.claim_for_bank`).
    lease_until: datetime


class ClosedWalletPayoutError(Exception):
    """A refused payout's money cannot go back: its wallet is CLOSED, and a CLOSED wallet holds
    no money (wallet w0011). Only a wallet closed while its withdrawal was pending (before
    transfer t0003) gets here; the payout stays in flight, for staff to resolve with its owner
    (never to settle: the bank refused it)."""

    def __init__(self, transaction_id: str) -> None:
        super().__init__(f"payout {transaction_id}: its wallet is CLOSED")
        self.transaction_id = transaction_id


@dataclass(frozen=True, slots=True)
class PayoutSettlement:
    outcome: str  # OK, ALREADY_FINISHED, NOT_FOUND
    # The payout's withdrawal as the ledger replied it: finished by this call (OK) or by an
    # earlier one (ALREADY_FINISHED, transfer t0020); None when NOT_FOUND, or ALREADY_FINISHED
    # from a ledger before t0020.
    transaction: Transaction | None
    # How the payout finished: SETTLED or RETURNED, this call's doing (OK) or an earlier one's
    # (ALREADY_FINISHED, transfer t0020: read from the withdrawal's status, COMPLETED or
    # FAILED); None when there is no withdrawal (`transaction`) to read it from.
    final_status: str | None = None


class ClaimAnswer(Enum):
    """The ledger's answer when the worker claims a leased payout for the bank
    (`PayoutLedger.claim_for_bank`)."""

    CLEAR = "CLEAR"  # ask the bank (the lease renewed for the call)
    RELEASED = "RELEASED"  # ask the bank: it was held by a staff freeze until now
    HELD = "HELD"  # newly held: its wallet is frozen by staff; due again after the hold
    STILL_HELD = "STILL_HELD"
    LEASE_LOST = "LEASE_LOST"  # another worker leased it since (or a hold moved it): skip it
    FINISHED = "FINISHED"  # settled or returned already: nothing to ask
    NOT_FOUND = "NOT_FOUND"


@dataclass(frozen=True, slots=True)
class PayoutClaim:
    answer: ClaimAnswer
    # The payout's available_at as the claim left it: for CLEAR and RELEASED the renewed
    # lease, which covers the bank call; None when NOT_FOUND or FINISHED.
    lease_until: datetime | None
    # For CLEAR and RELEASED, the payout's bank calls counting the one this claim lets through
    # (transfer t0021: counted by the claim, not by the lease); None for every other answer,
    # which counts none.
    attempts: int | None = None

    @property
    def asks_bank(self) -> bool:
        return self.answer in (ClaimAnswer.CLEAR, ClaimAnswer.RELEASED)


class PayoutLedger(Protocol):
    async def lease_payouts(self, limit: int, lease_seconds: float) -> list[PayoutLease]: ...

    async def claim_for_bank(
        self, lease: PayoutLease, hold_seconds: float, bank_seconds: float
    ) -> PayoutClaim:
        """Under the payout's lock: LEASE_LOST (nothing changed) unless `lease` is still the
        payout's lease; a staff freeze holds it for `hold_seconds`; a payout that may go to
        the bank is leased for at least `bank_seconds` more and its attempt counted."""
        ...

    async def settle_payout(self, transaction_id: str) -> PayoutSettlement: ...

    async def return_payout(self, transaction_id: str, reason: str) -> PayoutSettlement:
        """The money back to the wallet; ClosedWalletPayoutError when the wallet is CLOSED."""
        ...


@dataclass(frozen=True, slots=True)
class BankAnswer:
    """paid: the money reached the account; refused: it never will (return it); neither:
    the bank could not say (ask again later)."""

    paid: bool
    refused: bool = False
    reason: str = ""


class Bank(Protocol):
    async def pay_out(self, payout: PayoutLease) -> BankAnswer: ...
