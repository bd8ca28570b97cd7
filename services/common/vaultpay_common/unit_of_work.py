"""The unit-of-work protocol every service layer is written against.

A unit of work is one atomic step: `async with uow: ...; await uow.commit()`. Leaving the block
without `commit()` discards everything done inside it. The SQL implementation is
`vaultpay_common.db.SqlUnitOfWork`; unit tests use `tests.fakes.uow.FakeUnitOfWork`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from vaultpay_common.audit import AuditEntry

__all__ = ["AuditedUnitOfWork", "UnitOfWork"]


class UnitOfWork(Protocol):
    async def commit(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class AuditedUnitOfWork(UnitOfWork, Protocol):
    async def audit(self, entry: AuditEntry) -> None:
        """Appends an audit row in this unit's transaction (kept only if it commits)."""
        ...
