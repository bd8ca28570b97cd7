"""AdminVerifyLedger and `vaultpay-transfer verify-ledger`: the ledger proves itself."""

from __future__ import annotations

from vaultpay_common.clock import Clock
from vaultpay_transfer.domain.model import LedgerReport
from vaultpay_transfer.service_layer.ports import LedgerAuditor

__all__ = ["LedgerVerification"]


class LedgerVerification:
    def __init__(self, auditor: LedgerAuditor, clock: Clock) -> None:
        self._auditor = auditor
        self._clock = clock

    async def verify(self) -> LedgerReport:
        at = self._clock.now()
        return LedgerReport(tuple(await self._auditor.check()), at)
