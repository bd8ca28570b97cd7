"""Staff reading the audit log of the `vaultpay` database (wallet, transfer and kyc actions)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from vaultpay_common.audit import AuditQuery, AuditRecord

__all__ = ["AuditEvents", "AuditReadingUnitOfWork"]


class AuditReadingUnitOfWork(Protocol):
    async def audit_events(
        self, query: AuditQuery, before_sequence: int | None, limit: int
    ) -> list[AuditRecord]: ...
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
        self, query: AuditQuery, before_sequence: int | None, limit: int
    ) -> list[AuditRecord]:
        async with self._uow() as uow:
            return await uow.audit_events(query, before_sequence, limit)
