"""AdminVerifyLedger and `vaultpay-transfer verify-ledger`: the ledger proves itself."""

from __future__ import annotations

from vaultpay_common.clock import Clock
from vaultpay_transfer.domain.model import LedgerReport
from vaultpay_transfer.service_layer.ports import CheckDone, LedgerAuditor

__all__ = ["LedgerVerification"]


class LedgerVerification:
    def __init__(self, auditor: LedgerAuditor, clock: Clock) -> None:
        self._auditor = auditor
        self._clock = clock

    async def verify(self, on_check: CheckDone | None = None) -> LedgerReport:
        """Every check; `on_check` hears each as it completes (progress for the CLI)."""
        at = self._clock.now()
        return LedgerReport(tuple(await self._auditor.check(on_check)), at)
