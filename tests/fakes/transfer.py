"""In-memory stand-ins for the transfer service's ports, for the unit tests of its use cases.

`FakeLedger` keeps balances and applies the ledger function's rules that the use cases rely
on (idempotency replay, balance, recipient, a held key IN_USE to every other attempt); the
SQL itself is proven by the integration tests. `FakeWalletGate` answers PIN and IP checks
like wallet and records every call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.errors import ErrorKind
from vaultpay_common.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
)
from vaultpay_transfer.domain.errors import PassedThroughError
from vaultpay_transfer.domain.model import (
    Counterparty,
    PaymentMethod,
    Transaction,
    TransactionCategory,
    TransactionStatus,
    TransactionType,
)
from vaultpay_transfer.domain.outcomes import LedgerOutcome
from vaultpay_transfer.service_layer.ports import (
    BankAnswer,
    ClaimAnswer,
    IpCheck,
    MovementChecked,
    PayoutClaim,
    PayoutLease,
    PayoutSettlement,
)

NOW = datetime(2026, 12, 16, 10, 0, tzinfo=UTC)


def fake_transaction(
    wallet_id: str, user_id: str, key: IdempotencyKey, amount: int, category: TransactionCategory
) -> Transaction:
    debit = category in (TransactionCategory.P2P_SEND, TransactionCategory.WITHDRAW)
    return Transaction(
        transaction_id=str(uuid.uuid4()),
        reference="VP-TXN-ABCD2345",
        request_id=key.request_id,
        wallet_id=wallet_id,
        user_id=user_id,
        type=TransactionType.DEBIT if debit else TransactionType.CREDIT,
        category=category,
        status=TransactionStatus.PENDING
        if category is TransactionCategory.WITHDRAW
        else TransactionStatus.COMPLETED,
        amount_minor=amount,
        currency="INR",
        balance_after_minor=0,
        counterparty=Counterparty(),
        note="",
        original_transaction_id="",
        reversed_amount_minor=0,
        created_at=NOW,
        completed_at=NOW,
    )


@dataclass
class FakeLedger:
    wallets: dict[str, str] = field(default_factory=dict)  # user_id -> wallet_id
    balances: dict[str, int] = field(default_factory=dict)  # wallet_id -> minor units
    stored: dict[tuple[str, str, str], tuple[str, Transaction]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    forced: str | None = None  # answer this refusal code to the next movement
    fail_with: Exception | None = None  # raise this from the next movement
    held: set[tuple[str, str, str]] = field(default_factory=set)  # keys a movement holds
    moved: set[tuple[str, str]] = field(default_factory=set)  # (user, request id) that moved
    lookups: list[str] = field(default_factory=list)  # request ids of `stored_answer` reads

    def add_wallet(self, user_id: str, wallet_id: str, balance: int = 0) -> None:
        self.wallets[user_id] = wallet_id
        self.balances[wallet_id] = balance

    def _stored_answer(self, key: IdempotencyKey) -> Transaction | None:
        found = self.stored.get((key.caller, key.method, key.request_id))
        if found is None:
            return None
        if found[0] != key.fingerprint:
            raise IdempotencyKeyReusedError()
        return found[1]

    async def stored_answer(self, key: IdempotencyKey) -> Transaction | None:
        self.lookups.append(key.request_id)  # a read: not among `calls`, which move or hold
        found = self.stored.get((key.caller, key.method, key.request_id))
        if found is None and (key.caller, key.request_id) in self.moved:  # its answer expired
            raise IdempotencyKeyReusedError()
        return None if found is None or found[0] != key.fingerprint else found[1]

    @asynccontextmanager
    async def hold(self, key: IdempotencyKey) -> AsyncIterator[FakeHeldMovement]:
        self.calls.append("hold")
        stored = self._stored_answer(key)
        if stored is not None:
            yield FakeHeldMovement(self, key, stored)
            return
        scope = (key.caller, key.method, key.request_id)
        if scope in self.held:
            raise IdempotencyKeyInUseError()
        if (key.caller, key.request_id) in self.moved:  # its stored answer expired
            raise IdempotencyKeyReusedError()
        self.held.add(scope)
        try:
            yield FakeHeldMovement(self, key, None)
        finally:
            self.held.discard(scope)

    def _begin(self, key: IdempotencyKey, name: str) -> LedgerOutcome | None:
        self.calls.append(name)
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        if self.forced is not None:
            code, self.forced = self.forced, None
            return LedgerOutcome(code, details={"currency": "INR"})
        found = self.stored.get((key.caller, key.method, key.request_id))
        if found is not None:
            if found[0] != key.fingerprint:
                return LedgerOutcome("IDEMPOTENCY_KEY_REUSED")
            return LedgerOutcome("REPLAY", found[1])
        return None

    def _commit(self, key: IdempotencyKey, tx: Transaction) -> LedgerOutcome:
        self.stored[(key.caller, key.method, key.request_id)] = (key.fingerprint, tx)
        self.moved.add((key.caller, key.request_id))
        return LedgerOutcome("OK", tx)

    async def send_money(
        self,
        key: IdempotencyKey,
        user_id: str,
        recipient_wallet_id: str,
        amount_minor: int,
        currency: str,
        note: str,
    ) -> LedgerOutcome:
        early = self._begin(key, "send_money")
        if early is not None:
            return early
        sender = self.wallets[user_id]
        if recipient_wallet_id not in self.balances:
            return LedgerOutcome("RECIPIENT_NOT_FOUND")
        if self.balances[sender] < amount_minor:
            return LedgerOutcome("INSUFFICIENT_BALANCE")
        self.balances[sender] -= amount_minor
        self.balances[recipient_wallet_id] += amount_minor
        tx = fake_transaction(sender, user_id, key, amount_minor, TransactionCategory.P2P_SEND)
        return self._commit(key, tx)

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
        early = self._begin(key, "top_up")
        if early is not None:
            return early
        wallet = self.wallets[user_id]
        self.balances[wallet] += amount_minor
        return self._commit(
            key, fake_transaction(wallet, user_id, key, amount_minor, TransactionCategory.TOP_UP)
        )

    async def withdraw(
        self,
        key: IdempotencyKey,
        user_id: str,
        amount_minor: int,
        currency: str,
        ifsc: str,
        account_mask: str,
        account_hash: str,
        holder_name: str,
    ) -> LedgerOutcome:
        early = self._begin(key, "withdraw")
        if early is not None:
            return early
        self.calls.append(f"withdraw-to:{ifsc}:{account_mask}:{account_hash}")
        wallet = self.wallets[user_id]
        if self.balances[wallet] < amount_minor:
            return LedgerOutcome("INSUFFICIENT_BALANCE")
        self.balances[wallet] -= amount_minor
        tx = fake_transaction(wallet, user_id, key, amount_minor, TransactionCategory.WITHDRAW)
        return self._commit(key, tx)


@dataclass
class FakeWalletGate:
    """Knows each user's wallet and PIN; `trusted_ips` per user; counts wrong PINs."""

    pins: dict[str, str] = field(default_factory=dict)
    wallet_ids: dict[str, str] = field(default_factory=dict)
    trusted_ips: dict[str, set[str]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (what, user, check_id)
    kyc_none: set[str] = field(default_factory=set)  # users whose wallet's tier is NONE

    async def verify_pin(self, user_id: str, pin: str, check_id: str) -> str:
        self.calls.append(("pin", user_id, check_id))
        if user_id not in self.pins:
            raise PassedThroughError(ErrorKind.FAILED_PRECONDITION, "PIN_NOT_SET", "no PIN", {})
        if self.pins[user_id] != pin:
            self.failures[user_id] = self.failures.get(user_id, 0) + 1
            left = max(0, 3 - self.failures[user_id])
            if left == 0:
                raise PassedThroughError(
                    ErrorKind.FAILED_PRECONDITION, "PIN_LOCKED", "locked", {"until": "later"}
                )
            raise PassedThroughError(
                ErrorKind.FAILED_PRECONDITION,
                "INVALID_PIN",
                "wrong PIN",
                {"remaining_attempts": str(left)},
            )
        return self.wallet_ids[user_id]

    async def check_ip(self, user_id: str, client_ip: str, check_id: str) -> IpCheck:
        self.calls.append(("ip", user_id, check_id))
        trusted = client_ip in self.trusted_ips.get(user_id, set())
        return IpCheck(trusted=trusted, confirmation_sent=not trusted)

    async def check_movement(
        self, user_id: str, pin: str, client_ip: str, check_id: str
    ) -> MovementChecked:
        """As wallet answers it: the PIN first; the address only once the PIN matched; an
        address not trusted of a wallet of tier NONE mails nothing and says the tier."""
        wallet_id = await self.verify_pin(user_id, pin, check_id)
        if client_ip not in self.trusted_ips.get(user_id, set()) and user_id in self.kyc_none:
            return MovementChecked(wallet_id, IpCheck(False, False), kyc_verified=False)
        return MovementChecked(wallet_id, await self.check_ip(user_id, client_ip, check_id))


def payout_lease(
    transaction_id: str, account_hash: str, amount_minor: int, attempts: int = 0
) -> PayoutLease:
    """A lease of one minute from NOW, in INR, of a payout the bank was asked about `attempts`
    times before (t0021: a lease counts no attempt)."""
    return PayoutLease(
        transaction_id, account_hash, amount_minor, "INR", attempts, NOW + timedelta(minutes=1)
    )


@dataclass
class FakePayoutLedger:
    """The payout side of the ledger: leases as they are pending, the fenced claim (t0014),
    counting a payout's bank calls (t0021), and the freeze hold (t0011) as the SQL answers them,
    settles and returns."""

    pending: list[PayoutLease] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    returned: list[tuple[str, str]] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)  # settling these: database unavailable
    frozen: set[str] = field(default_factory=set)  # held: their wallets are frozen by staff
    held: dict[str, float] = field(default_factory=dict)  # held payout -> its hold, in seconds
    # Leased again by another worker as soon as this one leased them: its claim is LEASE_LOST.
    stolen: set[str] = field(default_factory=set)
    lease_until: dict[str, datetime] = field(default_factory=dict)  # each payout's available_at
    # Each payout's bank calls, as the claims counted them (from its lease's count).
    attempts: dict[str, int] = field(default_factory=dict)
    # Finished by another worker while this one asked the bank (SETTLED or RETURNED): the claim
    # let them through, settling or returning them answers ALREADY_FINISHED with that status.
    finished_meanwhile: dict[str, str] = field(default_factory=dict)
    # Claiming or recording these raises the given exception (an unexpected database error).
    claim_raises: dict[str, BaseException] = field(default_factory=dict)
    record_raises: dict[str, BaseException] = field(default_factory=dict)

    async def lease_payouts(self, limit: int, lease_seconds: float) -> list[PayoutLease]:
        leased, self.pending = self.pending[:limit], self.pending[limit:]
        for lease in leased:
            later = timedelta(seconds=1) if lease.transaction_id in self.stolen else timedelta()
            self.lease_until[lease.transaction_id] = lease.lease_until + later
        return leased

    async def claim_for_bank(
        self, lease: PayoutLease, hold_seconds: float, bank_seconds: float
    ) -> PayoutClaim:
        transaction_id = lease.transaction_id
        if transaction_id in self.claim_raises:
            raise self.claim_raises[transaction_id]
        if transaction_id in self.settled or transaction_id in dict(self.returned):
            return PayoutClaim(ClaimAnswer.FINISHED, None)
        if self.lease_until.get(transaction_id) != lease.lease_until:
            return PayoutClaim(ClaimAnswer.LEASE_LOST, self.lease_until.get(transaction_id))
        was_held = transaction_id in self.held
        if transaction_id in self.frozen:
            self.held[transaction_id] = hold_seconds
            until = self.lease_until[transaction_id] = NOW + timedelta(seconds=hold_seconds)
            return PayoutClaim(ClaimAnswer.STILL_HELD if was_held else ClaimAnswer.HELD, until)
        self.held.pop(transaction_id, None)
        until = max(lease.lease_until, NOW + timedelta(seconds=bank_seconds))
        self.lease_until[transaction_id] = until
        attempts = self.attempts[transaction_id] = (
            self.attempts.get(transaction_id, lease.attempts) + 1
        )
        answer = ClaimAnswer.RELEASED if was_held else ClaimAnswer.CLEAR
        return PayoutClaim(answer, until, attempts)

    async def settle_payout(self, transaction_id: str) -> PayoutSettlement:
        if transaction_id in self.unreachable:
            raise DatabaseUnavailableError()
        if transaction_id in self.record_raises:
            raise self.record_raises[transaction_id]
        if transaction_id in self.finished_meanwhile:
            status = self.finished_meanwhile[transaction_id]
            return PayoutSettlement("ALREADY_FINISHED", None, final_status=status)
        self.settled.append(transaction_id)
        return PayoutSettlement("OK", None, final_status="SETTLED")

    async def return_payout(self, transaction_id: str, reason: str) -> PayoutSettlement:
        if transaction_id in self.record_raises:
            raise self.record_raises[transaction_id]
        if transaction_id in self.finished_meanwhile:
            status = self.finished_meanwhile[transaction_id]
            return PayoutSettlement("ALREADY_FINISHED", None, final_status=status)
        self.returned.append((transaction_id, reason))
        return PayoutSettlement("OK", None, final_status="RETURNED")


@dataclass
class ScriptedBank:
    """Answers by account hash: refuse the `refusing` ones, fail (raise) the `down` ones, never
    answer the `silent` ones (the call waits until it is cancelled), answer neither paid nor
    refused for the `undecided` ones."""

    refusing: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    undecided: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)  # the payouts it was asked about, in order

    async def pay_out(self, payout: PayoutLease) -> BankAnswer:
        self.asked.append(payout.transaction_id)
        if payout.account_hash in self.down:
            raise ConnectionError("bank unreachable")
        if payout.account_hash in self.silent:
            await asyncio.Event().wait()
        if payout.account_hash in self.refusing:
            return BankAnswer(paid=False, refused=True, reason="account closed")
        if payout.account_hash in self.undecided:
            return BankAnswer(paid=False)
        return BankAnswer(paid=True)


@dataclass
class FakeHeldMovement:
    ledger: FakeLedger
    key: IdempotencyKey
    stored: Transaction | None

    async def send_money(
        self, user_id: str, recipient_wallet_id: str, amount_minor: int, currency: str, note: str
    ) -> LedgerOutcome:
        return await self.ledger.send_money(
            self.key, user_id, recipient_wallet_id, amount_minor, currency, note
        )

    async def withdraw(
        self,
        user_id: str,
        amount_minor: int,
        currency: str,
        ifsc: str,
        account_mask: str,
        account_hash: str,
        holder_name: str,
    ) -> LedgerOutcome:
        return await self.ledger.withdraw(
            self.key, user_id, amount_minor, currency, ifsc, account_mask, account_hash, holder_name
        )
