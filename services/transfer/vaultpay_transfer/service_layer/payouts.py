"""The payout worker: hands pending withdrawals to the (simulated) bank and settles each one,
or returns the money to the wallet when the bank refuses. Run by `runtime.every`.

Each payout is leased first (other workers skip it until the lease ends), so replicas share
the work; settling and returning are idempotent in the ledger, so a payout handled twice
(a lease that ran out) still moves money once. The bank may be asked twice for one payout
(its answer was not recorded before the lease ran out): it gets the payout's transaction id,
which a real bank's API takes as its idempotency key. A payout whose answer cannot be
recorded (the database unreachable, a commit outcome unknown, a statement timeout) waits for
its lease; the rest of the batch goes on.
"""

from __future__ import annotations

import logging

from vaultpay_common.errors import DeadlineExceededError, UnavailableError
from vaultpay_transfer.service_layer.ports import Bank, BankAnswer, PayoutLease, PayoutLedger

__all__ = ["PayoutWorker"]

log = logging.getLogger(__name__)


class PayoutWorker:
    def __init__(
        self, ledger: PayoutLedger, bank: Bank, *, batch_size: int = 50, lease_seconds: float = 60
    ) -> None:
        self._ledger = ledger
        self._bank = bank
        self._batch = batch_size
        self._lease = lease_seconds

    async def run_once(self) -> int:
        """How many payouts were finished (settled or returned) in this round."""
        finished = 0
        for payout in await self._ledger.lease_payouts(self._batch, self._lease):
            try:
                answer = await self._bank.pay_out(payout)
            except Exception:
                log.warning(
                    "the bank could not be asked; the payout is retried after its lease",
                    extra={"transaction_id": payout.transaction_id},
                    exc_info=True,
                )
                continue
            try:
                finished += await self._record(payout, answer)
            except (UnavailableError, DeadlineExceededError):
                log.warning(
                    "the bank's answer could not be recorded; the payout is retried after its"
                    " lease",
                    extra={"transaction_id": payout.transaction_id},
                    exc_info=True,
                )
        return finished

    async def _record(self, payout: PayoutLease, answer: BankAnswer) -> int:
        """Settles or returns `payout` as the bank answered: 1 when it is finished."""
        if answer.paid:
            await self._ledger.settle_payout(payout.transaction_id)
            return 1
        if answer.refused:
            returned = await self._ledger.return_payout(payout.transaction_id, answer.reason)
            if returned.wallet_closed:
                # Kept (the money must stay conserved) but never expected: a wallet with a
                # pending withdrawal cannot be closed (WALLET_HAS_PENDING_WITHDRAWAL).
                log.error(
                    "anomaly: a returned payout credited a CLOSED wallet",
                    extra={
                        "transaction_id": payout.transaction_id,
                        "wallet_id": returned.transaction.wallet_id
                        if returned.transaction is not None
                        else "",
                    },
                )
            return 1
        return 0
