"""What the kyc's outbox relay does with each topic (see service_layer/events.py).

Each handler passes the event id as the request_id of the wallet RPC it calls, so a second
delivery of the same event (the relay is at-least-once) changes nothing in wallet.
"""

from __future__ import annotations

from typing import Protocol

from vaultpay_common.outbox import Handler, OutboxEvent, PermanentDeliveryError
from vaultpay_kyc.domain.model import KycTier
from vaultpay_kyc.service_layer.events import NOTIFICATION_TOPIC, TIER_TOPIC

__all__ = ["WalletEvents", "kyc_outbox_handlers"]


class WalletEvents(Protocol):
    async def set_kyc_tier(
        self, event_id: str, user_id: str, tier: KycTier, submission_id: str
    ) -> None: ...

    async def create_notification(
        self, event_id: str, user_id: str, title: str, body: str
    ) -> None: ...


def _text(event: OutboxEvent, name: str) -> str:
    value = event.payload.get(name)
    if not isinstance(value, str) or not value:
        raise PermanentDeliveryError(f"the event has no {name}")
    return value


def kyc_outbox_handlers(wallet: WalletEvents) -> dict[str, Handler]:
    async def set_tier(event: OutboxEvent) -> None:
        try:
            tier = KycTier(_text(event, "kyc_tier"))
        except ValueError as exc:
            raise PermanentDeliveryError("unknown tier") from exc
        await wallet.set_kyc_tier(
            event.event_id, _text(event, "user_id"), tier, _text(event, "submission_id")
        )

    async def notify(event: OutboxEvent) -> None:
        await wallet.create_notification(
            event.event_id, _text(event, "user_id"), _text(event, "title"), _text(event, "body")
        )

    return {TIER_TOPIC: set_tier, NOTIFICATION_TOPIC: notify}
