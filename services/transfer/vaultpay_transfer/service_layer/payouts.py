"""The payout worker: hands pending withdrawals to the (simulated) bank and settles each one,
or returns the money to the wallet when the bank refuses. Run by `runtime.every`.

Each payout is leased first (other workers skip it until the lease ends), so replicas share
the work; settling and returning are idempotent in the ledger, so a payout handled twice
still moves money once. A round leases up to `batch_size` payouts and handles them one after
the other, so a payout's lease may run out before the worker reaches it and another worker may
lease it meanwhile. The lease is therefore fenced (transfer t0014): it comes with its end
(`PayoutLease.lease_until`), and before the bank is asked the worker claims the payout with it
(`claim_for_bank`). Under the payout's row lock the ledger answers LEASE_LOST, changing
nothing, when the payout's lease is no longer that one: the worker skips it (INFO; the other
worker has it), so two workers never ask the bank for one payout at once, and a stale worker
cannot move a payout another one holds. A claim that lets the payout go to the bank also
renews its lease for the call (at least `bank_seconds` from the claim), and the bank call is
given `bank_seconds * 0.8` (`BANK_CALL_SHARE`): a call that has not answered by then is
abandoned and handled as a bank that could not be reached, before its lease can run out.

The bank may still be asked twice for one payout, one call after the other: a call abandoned
at its timeout, or an answer that could not be recorded (the database unreachable, a commit
outcome unknown, a statement timeout), leaves the payout to be asked again after its lease. It
gets the payout's transaction id, which a real bank's API takes as its idempotency key. The
rest of the batch goes on, after any other error while one payout is handled too (an
unexpected database error, a bug: an ERROR naming the payout and the error's type); only a
cancellation ends the round early.

The claim also checks the payout's wallet under its row lock (transfer t0011): while staff
keep the wallet frozen (an ADMIN freeze in force) the payout is held, not sent: it stays
PENDING, its money in payouts-in-flight, and is checked again after `hold_seconds`; once the
freeze is lifted it goes to the bank as any other. A self-freeze or a PIN lockout does not
hold a withdrawal accepted before it. A hold and its release are logged once each (INFO); the
owner is told nothing until the payout settles or comes back, as before. A payout whose claim
cannot be made is not sent: it waits for its lease. Once the bank has been asked, a freeze no
longer stops the settlement: the money has left.

A payout is never given up on: once the bank may have been asked, only the bank's answer
tells whether the money left, so returning it to the wallet after some number of failures
could pay it out twice. Its lease backs off instead (t0013), and from its
`ALERT_AFTER_ATTEMPTS`-th attempt (about an hour of failures at the default lease) each failure
is logged as an ERROR naming the attempts, for an operator to look at the bank side. An attempt
is a bank call (transfer t0021): the claim counts it when it lets the payout go to the bank
(`PayoutClaim.attempts`), and the lease backs off with the calls made so far. A lease lost to
another worker, a claim that failed, a hold: none counts, so none lengthens the next lease or
brings the alert nearer.

The ledger settles or returns a payout once; recording an answer for a payout already finished
answers ALREADY_FINISHED with how it finished (t0020). When that contradicts the bank's answer
(the bank says paid, but the payout was RETURNED and its money credited back to the wallet; or
it says refused, but the payout was SETTLED) the ledger is left as it is, the worker logs
`CONTRADICTION` as an ERROR naming the payout and both outcomes, for an operator to reconcile
with the bank, and counts it in `contradicted`, not among the finished payouts.
"""

from __future__ import annotations

import asyncio
import logging

from vaultpay_common.errors import DeadlineExceededError, UnavailableError
from vaultpay_transfer.service_layer.ports import (
    Bank,
    BankAnswer,
    ClaimAnswer,
    ClosedWalletPayoutError,
    PayoutClaim,
    PayoutLease,
    PayoutLedger,
    PayoutSettlement,
)

__all__ = ["ALERT_AFTER_ATTEMPTS", "BANK_CALL_SHARE", "CONTRADICTION", "PayoutWorker"]

log = logging.getLogger(__name__)

# The attempt (bank call, t0021) from which a failure to reach the bank is an ERROR: at the
# default 60 s lease, doubling per failed call (t0013), the 7th comes about 63 minutes after
# the first.
ALERT_AFTER_ATTEMPTS = 7
# The share of the renewed lease (`bank_seconds`) a bank call may take: the rest is left for
# the claim's round trip and recording the answer before the lease can run out.
BANK_CALL_SHARE = 0.8
# The ERROR logged when the bank's answer contradicts how the ledger finished the payout: the
# line to alert on (README, "Operations").
CONTRADICTION = (
    "a payout's bank answer contradicts how the ledger finished it; an operator must reconcile"
    " it with the bank"
)


class PayoutWorker:
    def __init__(
        self,
        ledger: PayoutLedger,
        bank: Bank,
        *,
        batch_size: int = 50,
        lease_seconds: float = 60,
        hold_seconds: float = 30,
        bank_seconds: float = 30,
    ) -> None:
        if bank_seconds <= 0:
            raise ValueError("bank_seconds must be positive")
        self._ledger = ledger
        self._bank = bank
        self._batch = batch_size
        self._lease = lease_seconds
        self._hold = hold_seconds
        self._bank_seconds = bank_seconds
        # Bank answers that contradicted how the payout had already finished, since start.
        self.contradicted = 0

    async def run_once(self) -> int:
        """How many payouts were finished (settled or returned) in this round; a bank answer
        that contradicts a payout finished the other way is not one (see `contradicted`).

        An unexpected error while handling one payout (a database error other than the
        expected unavailability and timeouts, a bug) is logged as an ERROR naming the payout
        and the error's type, and the round goes on with the next payout: the failed one is
        retried after its lease, as any other it could not finish. Cancellation is not an
        error: it ends the round at once."""
        finished = 0
        for payout in await self._ledger.lease_payouts(self._batch, self._lease):
            try:
                finished += await self._handle(payout)
            except Exception as exc:  # never CancelledError: a BaseException, it propagates
                log.error(
                    "a payout could not be handled (unexpected error); it is retried after its"
                    " lease, and the round goes on",
                    extra={
                        "transaction_id": payout.transaction_id,
                        "error_type": type(exc).__name__,
                    },
                    exc_info=True,
                )
        return finished

    async def _handle(self, payout: PayoutLease) -> int:
        """Claims `payout`, asks the bank and records its answer: 1 when it is finished."""
        claim = await self._claim(payout)
        if claim is None or not claim.asks_bank:
            return 0
        # The bank calls counting this one, as the claim counted them (t0021).
        attempts = payout.attempts + 1 if claim.attempts is None else claim.attempts
        try:
            async with asyncio.timeout(self._bank_seconds * BANK_CALL_SHARE):
                answer = await self._bank.pay_out(payout)
        except Exception as exc:
            timed_out = " (no answer in time)" if isinstance(exc, TimeoutError) else ""
            return _not_finished(payout, attempts, "the bank could not be asked" + timed_out)
        try:
            return await self._record(payout, answer, attempts)
        except (UnavailableError, DeadlineExceededError):
            log.warning(
                "the bank's answer could not be recorded; the payout is retried after its lease",
                extra={"transaction_id": payout.transaction_id},
                exc_info=True,
            )
            return 0

    async def _claim(self, payout: PayoutLease) -> PayoutClaim | None:
        """The ledger's claim of `payout` for the bank (None when it could not be made): it
        goes to the bank (`asks_bank`) only while this worker's lease is still the payout's,
        and not while staff keep its wallet frozen."""
        try:
            claim = await self._ledger.claim_for_bank(payout, self._hold, self._bank_seconds)
        except (UnavailableError, DeadlineExceededError):
            log.warning(
                "a payout could not be claimed for the bank; it is retried after its lease",
                extra={"transaction_id": payout.transaction_id},
                exc_info=True,
            )
            return None
        if claim.answer is ClaimAnswer.LEASE_LOST:
            log.info(
                "a payout's lease ran out before the worker reached it; another worker has it",
                extra={"transaction_id": payout.transaction_id},
            )
        elif claim.answer is ClaimAnswer.HELD and payout.attempts > 0:
            # The bank was asked before and its answer never recorded (a lost commit, a call
            # past its time): it may have paid, and the hold keeps the payout PENDING.
            log.error(
                "a payout the bank was already asked about is held by a staff freeze; whether"
                " it was paid is unknown until the freeze lifts: an operator should check it"
                " with the bank",
                extra={
                    "transaction_id": payout.transaction_id,
                    "attempts": payout.attempts,
                    "hold_seconds": self._hold,
                },
            )
        elif claim.answer is ClaimAnswer.HELD:
            log.info(
                "a payout is held: its wallet is frozen by staff; it is checked again later",
                extra={"transaction_id": payout.transaction_id, "hold_seconds": self._hold},
            )
        elif claim.answer is ClaimAnswer.RELEASED:
            log.info(
                "a held payout is released: its wallet's staff freeze was lifted",
                extra={"transaction_id": payout.transaction_id},
            )
        return claim

    async def _record(self, payout: PayoutLease, answer: BankAnswer, attempts: int) -> int:
        """Settles or returns `payout` as the bank answered: 1 when it is finished as the bank
        said, 0 when the bank's answer contradicts how it had finished already."""
        if answer.paid:
            settled = await self._ledger.settle_payout(payout.transaction_id)
            return self._agrees(payout, attempts, "paid", "SETTLED", settled)
        if answer.refused:
            try:
                returned = await self._ledger.return_payout(payout.transaction_id, answer.reason)
            except ClosedWalletPayoutError:
                log.error(
                    "a refused payout's wallet is CLOSED, which holds no money: the payout stays"
                    " in flight (its money in payouts-in-flight) for staff to resolve with its"
                    " owner; do not settle it, the bank refused it; the bank is asked again"
                    " after its lease",
                    extra={"transaction_id": payout.transaction_id, "attempts": attempts},
                )
                return 0
            return self._agrees(payout, attempts, "refused", "RETURNED", returned)
        return _not_finished(
            payout, attempts, "the bank could not say whether it paid", exc_info=False
        )

    def _agrees(
        self,
        payout: PayoutLease,
        attempts: int,
        bank_answer: str,
        status: str,
        recorded: PayoutSettlement,
    ) -> int:
        """1 unless the payout had finished otherwise than `status` (the bank's answer): then
        the contradiction is logged (no account details) and counted, and 0."""
        if recorded.final_status is None or recorded.final_status == status:
            return 1
        self.contradicted += 1
        log.error(
            CONTRADICTION,
            extra={
                "transaction_id": payout.transaction_id,
                "bank_answer": bank_answer,
                "ledger_status": recorded.final_status,
                "attempts": attempts,
            },
        )
        return 0


def _not_finished(payout: PayoutLease, attempts: int, why: str, *, exc_info: bool = True) -> int:
    """0, logged: the bank could not be asked, or could not say; the payout stays PENDING and
    is asked again after its lease, a WARNING until its 7th bank call, then an ERROR."""
    stuck = attempts >= ALERT_AFTER_ATTEMPTS
    log.log(
        logging.ERROR if stuck else logging.WARNING,
        why
        + "; the payout is retried after its lease"
        + (" (an operator should look at the bank side)" if stuck else ""),
        extra={"transaction_id": payout.transaction_id, "attempts": attempts},
        exc_info=exc_info,
    )
    return 0
