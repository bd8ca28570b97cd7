"""What the transfer's outbox relay does with each topic. The ledger functions store facts
(kind, amount, reference, counterparty); the text is written here at delivery, and the event
id is the request_id of wallet's CreateNotification (sent in batches by the notifier, see
wallet_peer.py), so a second delivery notifies no one."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.clock import Clock
from vaultpay_common.outbox import (
    Handler,
    OutboxEvent,
    OutboxRelay,
    PermanentDeliveryError,
    UnknownToThisBuildError,
)
from vaultpay_transfer.domain.notifications import (
    NotificationText,
    UnknownNotificationKindError,
    notification_text,
)

__all__ = ["NOTIFICATION_TOPIC", "Notifier", "notification_relay", "transfer_outbox_handlers"]

NOTIFICATION_TOPIC = "notification.create"


class Notifier(Protocol):
    async def notify(self, event_id: str, user_id: str, text: NotificationText) -> None: ...


def transfer_outbox_handlers(notifier: Notifier) -> dict[str, Handler]:
    async def notify(event: OutboxEvent) -> None:
        facts = {str(k): str(v) for k, v in event.payload.items()}
        try:
            text = notification_text(facts["kind"], facts)
            user_id = facts["user_id"]
        except UnknownNotificationKindError as exc:
            raise UnknownToThisBuildError(str(exc)) from exc  # retried: a newer build knows it
        except (KeyError, ValueError) as exc:
            raise PermanentDeliveryError(f"malformed notification event: {exc}") from exc
        await notifier.notify(event.event_id, user_id, text)

    return {NOTIFICATION_TOPIC: notify}


def notification_relay(
    engine: AsyncEngine,
    producer: str,
    notifier: Notifier,
    *,
    batch_size: int = 50,
    poll_interval: float = 1.0,
    clock: Clock | None = None,
) -> OutboxRelay:
    """transfer's relay. It delivers every event of a round at once: the notifier sends the
    deliveries asked for in one loop turn as one CreateNotifications call (split above
    wallet's cap of 100 items), so a round costs wallet one call, not one per 8 events (the
    relay's default bound, for handlers that make a call per event)."""
    return OutboxRelay(
        engine,
        producer,
        transfer_outbox_handlers(notifier),
        batch_size=batch_size,
        max_concurrent_deliveries=batch_size,
        poll_interval=poll_interval,
        clock=clock,
    )
