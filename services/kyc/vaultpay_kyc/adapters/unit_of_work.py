"""The kyc's SQL unit of work: submissions, keys, the audit log, idempotency records and the
outbox, all on one connection and one transaction."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.audit import AuditEntry, AuditLog
from vaultpay_common.db import SqlUnitOfWork
from vaultpay_common.idempotency import SqlIdempotencyRecords
from vaultpay_common.outbox import SqlOutbox
from vaultpay_kyc.adapters.keys_sql import SqlKeyRepository
from vaultpay_kyc.adapters.submissions_sql import SqlSubmissionRepository

__all__ = ["OUTBOX_PRODUCER", "SqlKycUnitOfWork"]

OUTBOX_PRODUCER = "kyc"


class SqlKycUnitOfWork(SqlUnitOfWork):
    """Create one per use case: `uow_factory = lambda: SqlKycUnitOfWork(engine)`."""

    def __init__(
        self,
        engine: AsyncEngine,
        audit_log: AuditLog | None = None,
        *,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(engine)
        self._on_commit = on_commit
        self._audit_log = audit_log or AuditLog()
        self._submissions: SqlSubmissionRepository | None = None
        self._keys: SqlKeyRepository | None = None
        self._idempotency: SqlIdempotencyRecords | None = None
        self._outbox: SqlOutbox | None = None

    def _bind(self, conn: AsyncConnection) -> None:
        self._submissions = SqlSubmissionRepository(conn)
        self._keys = SqlKeyRepository(conn)
        self._idempotency = SqlIdempotencyRecords(conn)
        self._outbox = SqlOutbox(conn, OUTBOX_PRODUCER)

    @property
    def submissions(self) -> SqlSubmissionRepository:
        assert self._submissions is not None, "unit of work used outside `async with`"
        return self._submissions

    @property
    def keys(self) -> SqlKeyRepository:
        assert self._keys is not None, "unit of work used outside `async with`"
        return self._keys

    @property
    def idempotency(self) -> SqlIdempotencyRecords:
        assert self._idempotency is not None, "unit of work used outside `async with`"
        return self._idempotency

    @property
    def outbox(self) -> SqlOutbox:
        assert self._outbox is not None, "unit of work used outside `async with`"
        return self._outbox

    async def commit(self) -> None:
        await super().commit()
        if self._on_commit is not None:
            self._on_commit()  # wake the outbox relay: a decision may have added events

    async def audit(self, entry: AuditEntry) -> None:
        await self._audit_log.append(self.connection, entry)
