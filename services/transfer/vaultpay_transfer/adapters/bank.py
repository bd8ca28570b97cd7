"""The bank side of withdrawals, simulated: a keyed hash of account numbers (the ledger never
stores one in clear) and a bank that pays every account except the documented test account
`000000000000`, which it always refuses (README, "Transfer")."""

from __future__ import annotations

import hashlib
import hmac

from vaultpay_transfer.domain.validation import REFUSING_TEST_ACCOUNT
from vaultpay_transfer.service_layer.ports import BankAnswer, PayoutLease

__all__ = ["AccountHasher", "SimulatedBank"]


class AccountHasher:
    """HMAC-SHA256 of an account number under a key kept outside the database: a bare hash
    of 9 to 18 digits is reversed by enumeration."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the account-hash key must be at least 32 bytes")
        self._key = key

    def __call__(self, account_number: str) -> str:
        return hmac.new(self._key, account_number.encode(), hashlib.sha256).hexdigest()


class SimulatedBank:
    def __init__(self, hasher: AccountHasher) -> None:
        self._refusing = hasher(REFUSING_TEST_ACCOUNT)

    async def pay_out(self, payout: PayoutLease) -> BankAnswer:
        if hmac.compare_digest(payout.account_hash, self._refusing):
            return BankAnswer(paid=False, refused=True, reason="the bank refused the account")
        return BankAnswer(paid=True)
