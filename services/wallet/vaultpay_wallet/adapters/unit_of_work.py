"""The wallet's SQL unit of work: its repositories, the audit log, idempotency records and
the outbox, all on one connection and one transaction."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.audit import AuditEntry, AuditLog, AuditQuery, AuditRecord, list_audit_events
from vaultpay_common.db import SqlUnitOfWork
from vaultpay_common.idempotency import SqlIdempotencyRecords
from vaultpay_common.outbox import SqlOutbox
from vaultpay_wallet.adapters.ip_trust_sql import (
    SqlIpConfirmationRepository,
    SqlTrustedIpRepository,
)
from vaultpay_wallet.adapters.notifications_sql import SqlNotificationRepository
from vaultpay_wallet.adapters.repositories import (
    SqlLimitOverrideRepository,
    SqlPinRepository,
    SqlPinResetTokenRepository,
    SqlSettingRepository,
    SqlWalletRepository,
)

__all__ = ["OUTBOX_PRODUCER", "SqlWalletUnitOfWork"]

OUTBOX_PRODUCER = "wallet"


class SqlWalletUnitOfWork(SqlUnitOfWork):
    """Create one per use case: `uow_factory = lambda: SqlWalletUnitOfWork(engine)`."""

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
        self._wallets: SqlWalletRepository | None = None
        self._pins: SqlPinRepository | None = None
        self._reset_tokens: SqlPinResetTokenRepository | None = None
        self._limits: SqlLimitOverrideRepository | None = None
        self._settings: SqlSettingRepository | None = None
        self._idempotency: SqlIdempotencyRecords | None = None
        self._outbox: SqlOutbox | None = None
        self._trusted_ips: SqlTrustedIpRepository | None = None
        self._ip_tokens: SqlIpConfirmationRepository | None = None
        self._notifications: SqlNotificationRepository | None = None

    def _bind(self, conn: AsyncConnection) -> None:
        self._wallets = SqlWalletRepository(conn)
        self._pins = SqlPinRepository(conn)
        self._reset_tokens = SqlPinResetTokenRepository(conn)
        self._limits = SqlLimitOverrideRepository(conn)
        self._settings = SqlSettingRepository(conn)
        self._idempotency = SqlIdempotencyRecords(conn)
        self._outbox = SqlOutbox(conn, OUTBOX_PRODUCER)
        self._trusted_ips = SqlTrustedIpRepository(conn)
        self._ip_tokens = SqlIpConfirmationRepository(conn)
        self._notifications = SqlNotificationRepository(conn)

    @property
    def trusted_ips(self) -> SqlTrustedIpRepository:
        assert self._trusted_ips is not None, "unit of work used outside `async with`"
        return self._trusted_ips

    @property
    def ip_tokens(self) -> SqlIpConfirmationRepository:
        assert self._ip_tokens is not None, "unit of work used outside `async with`"
        return self._ip_tokens

    @property
    def notifications(self) -> SqlNotificationRepository:
        assert self._notifications is not None, "unit of work used outside `async with`"
        return self._notifications

    @property
    def wallets(self) -> SqlWalletRepository:
        assert self._wallets is not None, "unit of work used outside `async with`"
        return self._wallets

    @property
    def pins(self) -> SqlPinRepository:
        assert self._pins is not None, "unit of work used outside `async with`"
        return self._pins

    @property
    def reset_tokens(self) -> SqlPinResetTokenRepository:
        assert self._reset_tokens is not None, "unit of work used outside `async with`"
        return self._reset_tokens

    @property
    def limits(self) -> SqlLimitOverrideRepository:
        assert self._limits is not None, "unit of work used outside `async with`"
        return self._limits

    @property
    def settings(self) -> SqlSettingRepository:
        assert self._settings is not None, "unit of work used outside `async with`"
        return self._settings

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
            self._on_commit()  # e.g. wake the outbox relay: an event may be waiting

    async def audit(self, entry: AuditEntry) -> None:
        await self._audit_log.append(self.connection, entry)

    async def audit_events(
        self, query: AuditQuery, before_sequence: int | None, limit: int
    ) -> list[AuditRecord]:
        return await list_audit_events(self.connection, query, before_sequence, limit)
