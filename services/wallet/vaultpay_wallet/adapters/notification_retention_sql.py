"""Retention of the notification inbox: notifications older than the retention go, read or not.

A notification is only a message about something recorded elsewhere: the ledger's
transactions are the record of money (kept for ever), KYC decisions and wallet states have
their own rows and audit events. So a notification is deleted once it is older than the
retention (`WALLET_NOTIFICATION_RETENTION_DAYS`, 180 days by default), whether its owner read
it or not: an inbox, its unread count and mark-all-read then stay bounded by what one user
receives in that time. What the deletion changes: the notification no longer lists, counts as
unread or streams, and MarkNotificationRead of its id answers NOT_FOUND, as for any missing
one. `created_at` never changes once written, so what is due stays due.

Batches of at most `batch_size` rows, oldest first, each its own transaction (no long
transaction or many row locks next to the inbox's writes), read from `notifications_created_idx`
(w0010): the inbox's own indexes lead with `user_id` and cannot serve a cut across every user.
The rows of a batch are picked by `ctid` and deleted by the same statement, whose snapshot
keeps the ctids from being reused; the outer `created_at` test is written so that no index can
serve it (a Tid Scan takes the batch's rows, never a second walk of the range).

    deleted = await purge_old_notifications(engine, clock=clock, retention=timedelta(days=180))
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Integer, TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.clock import Clock
from vaultpay_common.db import delete_in_batches

__all__ = [
    "NOTIFICATION_RETENTION",
    "delete_old_notifications_batch",
    "old_notifications_delete",
    "purge_old_notifications",
]

NOTIFICATION_RETENTION = timedelta(days=180)

# The subquery reads `notifications_created_idx` in order (ORDER BY makes it the cheaper plan
# in a generic plan too, where `created_at < $1` is guessed to match a third of the table).
_BATCH_DELETE = text(
    "DELETE FROM notifications WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM notifications WHERE created_at < :older_than"
    " ORDER BY created_at LIMIT :batch_size))"
    " AND (created_at < :older_than) IS TRUE"
).bindparams(
    bindparam("older_than", type_=DateTime(timezone=True)),
    bindparam("batch_size", type_=Integer),
)


def old_notifications_delete(older_than: datetime, batch_size: int) -> TextClause:
    """The statement deleting at most `batch_size` notifications created before `older_than`,
    oldest first."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be an aware datetime")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return _BATCH_DELETE.bindparams(older_than=older_than, batch_size=batch_size)


async def delete_old_notifications_batch(
    conn: AsyncConnection, older_than: datetime, batch_size: int
) -> int:
    """Deletes one batch; returns how many notifications went."""
    result = await conn.execute(old_notifications_delete(older_than, batch_size))
    return int(result.rowcount)


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
    older_than = clock.now() - retention
    # The count is logged by the cleanup job (`run_purges`: "purge done").
    return await delete_in_batches(
        engine,
        functools.partial(
            delete_old_notifications_batch, older_than=older_than, batch_size=batch_size
        ),
        batch_size,
    )
