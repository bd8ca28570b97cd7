"""Staff reading the audit log of the `vaultpay` database (wallet, transfer and kyc actions).

Every page shown is itself audited (`audit_events.listed`, with the filters, the rows shown
and the staff member's address) in the read's transaction, as wallet audits staff reads of
wallets and auth staff reads of its own log: a page whose row cannot be written is not shown.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from vaultpay_common.audit import AuditEntry, AuditQuery, AuditRecord
from vaultpay_common.pagination import SliceOf
from vaultpay_wallet.domain.staff_reads import StaffViewer, audit_events_listed

__all__ = ["AuditEvents", "AuditReadingUnitOfWork"]


class AuditReadingUnitOfWork(Protocol):
    async def audit_events(
        self, query: AuditQuery, before_sequence: int | None, limit: int
    ) -> list[AuditRecord]: ...
    async def audit(self, entry: AuditEntry) -> None: ...
    async def commit(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class AuditEvents:
    """Newest first, keyset-paginated on the sequence the database assigned."""

    def __init__(self, uow: Callable[[], AuditReadingUnitOfWork]) -> None:
        self._uow = uow

    async def list(
        self, query: AuditQuery, before_sequence: int | None, limit: int, *, viewer: StaffViewer
    ) -> SliceOf[AuditRecord]:
        """At most `limit` events before `before_sequence` and whether more follow; audited."""
        async with self._uow() as uow:
            rows = await uow.audit_events(query, before_sequence, limit + 1)
            shown = rows[:limit]
            await uow.audit(audit_events_listed(viewer, shown, query.set_filters()))
            await uow.commit()
        return SliceOf(shown, len(rows) > limit)
