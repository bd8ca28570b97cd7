"""Retention of wallet's short-lived rows: PIN reset tokens, IP confirmations, trusted IPs.

Each row carries its `expires_at`, after which nothing reads it as live: a reset token or an IP
confirmation is refused once expired (used or not: a used one expires 15 / 30 minutes after it
was mailed), an expired confirmation is replaced by the next one mailed for its address, and an
address is trusted only while `now < expires_at` (the check, the movement's PIN settlement in
SQL, ListTrustedIps and AdminGetWallet's count all say so; the Redis cache never keeps an entry
past that time). So a row is deleted once it has been expired for `margin` (a day by default,
`WALLET_EXPIRED_ROW_RETENTION_HOURS`), which leaves any clock disagreement far behind. What the
deletion changes: an address confirmed again after its lapsed row went starts a new
`first_seen`.

Batches of at most `batch_size` rows, oldest first, each its own transaction, read from each
table's `expires_at` index (w0009). The statement is `OldRowsPurge`'s (`old_rows_purge_sql`):
its outer `expires_at` test is checked again on a row a concurrent upsert renewed meanwhile (a
confirmation mailed again, an address confirmed again), which is then kept.

    deleted = await purge_expired_wallet_rows(engine, clock=clock)   # {"trusted_ips": 12, ...}
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.clock import Clock
from vaultpay_wallet.adapters.old_rows_purge_sql import OldRowsPurge

__all__ = [
    "EXPIRED_ROW_RETENTION",
    "PURGED_TABLES",
    "delete_expired_batch",
    "expired_rows_delete",
    "purge_expired_wallet_rows",
]

log = logging.getLogger(__name__)

EXPIRED_ROW_RETENTION = timedelta(hours=24)
# Each has `expires_at` and the index `<table>_expires_idx` (w0009).
PURGED_TABLES = ("pin_reset_tokens", "ip_confirmations", "trusted_ips")

_EXPIRED = {table: OldRowsPurge(table, "expires_at") for table in PURGED_TABLES}


def expired_rows_delete(table: str, older_than: datetime, batch_size: int) -> TextClause:
    """The statement deleting at most `batch_size` rows of `table` expired before `older_than`,
    oldest first."""
    return _EXPIRED[table].statement(older_than, batch_size)


async def delete_expired_batch(
    conn: AsyncConnection, table: str, older_than: datetime, batch_size: int
) -> int:
    """Deletes one batch; returns how many rows went."""
    return await _EXPIRED[table].delete_batch(conn, older_than, batch_size)


async def purge_expired_wallet_rows(
    engine: AsyncEngine,
    *,
    clock: Clock,
    margin: timedelta = EXPIRED_ROW_RETENTION,
    batch_size: int = 1_000,
) -> dict[str, int]:
    """The cleanup job's part: every row of PURGED_TABLES expired for more than `margin`, in
    batches of `batch_size`, one transaction each. Returns how many rows went, per table."""
    if margin < timedelta(hours=1):
        raise ValueError("expired rows must be kept at least an hour past their expiry")
    older_than = clock.now() - margin
    deleted = {
        table: await purge.purge(engine, older_than=older_than, batch_size=batch_size)
        for table, purge in _EXPIRED.items()
    }
    if any(deleted.values()):
        extra = {f"deleted_{table}": count for table, count in deleted.items()}
        log.info("expired wallet rows deleted", extra=extra)
    return deleted
