"""What the transfer's outbox relay does with each topic. The ledger functions store facts
(kind, amount, reference, counterparty); the text is written here at delivery, and the event
id is the request_id of wallet's CreateNotification (sent in batches by the notifier, see
wallet_peer.py), so a second delivery notifies no one."""

from __future__ import annotations

from typing import Protocol

from vaultpay_common.outbox import Handler, OutboxEvent, PermanentDeliveryError
from vaultpay_transfer.domain.notifications import NotificationText, notification_text

__all__ = ["NOTIFICATION_TOPIC", "Notifier", "transfer_outbox_handlers"]

NOTIFICATION_TOPIC = "notification.create"


class Notifier(Protocol):
    async def notify(self, event_id: str, user_id: str, text: NotificationText) -> None: ...


def transfer_outbox_handlers(notifier: Notifier) -> dict[str, Handler]:
    async def notify(event: OutboxEvent) -> None:
        facts = {str(k): str(v) for k, v in event.payload.items()}
        try:
            text = notification_text(facts["kind"], facts)
            user_id = facts["user_id"]
        except (KeyError, ValueError) as exc:
            raise PermanentDeliveryError(f"malformed notification event: {exc}") from exc
        await notifier.notify(event.event_id, user_id, text)

    return {NOTIFICATION_TOPIC: notify}
