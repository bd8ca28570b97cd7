"""Retention of the notification inbox: notifications older than the retention go, read or not.

A notification is only a message about something recorded elsewhere: the ledger's
transactions are the record of money (kept for ever), KYC decisions and wallet states have
their own rows and audit events. So a notification is deleted once it is older than the
retention (`WALLET_NOTIFICATION_RETENTION_DAYS`, 180 days by default), whether its owner read
it or not: an inbox, its unread count and mark-all-read then stay bounded by what one user
receives in that time. What the deletion changes: the notification no longer lists, counts as
unread or streams, and MarkNotificationRead of its id answers NOT_FOUND, as for any missing
one. `created_at` never changes once written, so what is due stays due.

Batches of at most `batch_size` rows, oldest first, each its own transaction, read from
`notifications_created_idx` (w0010): the inbox's own indexes lead with `user_id` and cannot
serve a cut across every user. The statement is `OldRowsPurge`'s (`old_rows_purge_sql`).

    deleted = await purge_old_notifications(engine, clock=clock, retention=timedelta(days=180))
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.clock import Clock
from vaultpay_wallet.adapters.old_rows_purge_sql import OldRowsPurge

__all__ = [
    "NOTIFICATION_RETENTION",
    "delete_old_notifications_batch",
    "old_notifications_delete",
    "purge_old_notifications",
]

NOTIFICATION_RETENTION = timedelta(days=180)

_OLD_NOTIFICATIONS = OldRowsPurge("notifications", "created_at")


def old_notifications_delete(older_than: datetime, batch_size: int) -> TextClause:
    """The statement deleting at most `batch_size` notifications created before `older_than`,
    oldest first."""
    return _OLD_NOTIFICATIONS.statement(older_than, batch_size)


async def delete_old_notifications_batch(
    conn: AsyncConnection, older_than: datetime, batch_size: int
) -> int:
    """Deletes one batch; returns how many notifications went."""
    return await _OLD_NOTIFICATIONS.delete_batch(conn, older_than, batch_size)


async def purge_old_notifications(
    engine: AsyncEngine,
    *,
    clock: Clock,
    retention: timedelta = NOTIFICATION_RETENTION,
    batch_size: int = 1_000,
) -> int:
    """The cleanup job's part: every notification created more than `retention` ago, read or
    not, in batches of `batch_size`, one transaction each. Returns how many went."""
    if retention < timedelta(days=1):
        raise ValueError("notifications must be kept at least a day")
    # The count is logged by the cleanup job (`run_purges`: "purge done").
    return await _OLD_NOTIFICATIONS.purge(
        engine, older_than=clock.now() - retention, batch_size=batch_size
    )
