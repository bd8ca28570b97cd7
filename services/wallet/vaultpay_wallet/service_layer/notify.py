"""Notifications to a wallet's owner, written to the outbox in the caller's transaction.

The wallet's own relay delivers topic "notification.create" to the notification inbox
(deduped by the outbox event id), so a notification exists if and only if the change that
caused it committed. Titles and bodies never carry a PIN, token or amount limit secret.
"""

from __future__ import annotations

from enum import Enum

from vaultpay_common.outbox import Outbox, OutboxMessage

__all__ = ["NOTIFICATION_TOPIC", "NotificationKind", "notify"]

NOTIFICATION_TOPIC = "notification.create"


class NotificationKind(Enum):
    """Value = the NotificationKind enum name without its prefix."""

    WALLET_STATUS = "WALLET_STATUS"
    SECURITY = "SECURITY"


async def notify(
    outbox: Outbox,
    *,
    user_id: str,
    kind: NotificationKind,
    title: str,
    body: str,
    dedupe_key: str,
) -> None:
    """Payload: {"user_id", "kind", "title", "body", "dedupe_key"}; message key = user id."""
    await outbox.add(
        OutboxMessage(
            NOTIFICATION_TOPIC,
            {
                "user_id": user_id,
                "kind": kind.value,
                "title": title[:120],
                "body": body[:1000],
                "dedupe_key": dedupe_key,
            },
            key=user_id,
        )
    )
