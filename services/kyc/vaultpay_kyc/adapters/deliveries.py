"""What the kyc's outbox relay does with each topic (see service_layer/events.py).

Each handler passes the event id as the request_id of the wallet RPC it calls, so a second
delivery of the same event (the relay is at-least-once) changes nothing in wallet.

A user's tier events are not delivered in order: an event that failed waits for its backoff
while a later one may go through, and a dead-lettered one can be replayed days later. Since a
user approved at BASIC may be upgraded to FULL, an older BASIC event arriving after the FULL
one would ask wallet for BASIC again. So the tier sent is the one the user holds *when the
event is delivered* (never below the event's own: its approval committed before it could be
delivered), and a late BASIC event repeats FULL. An older event's call still in flight while a
newer approval is committed and delivered (a user's new submission and a review within one
delivery timeout) still carries BASIC: wallet's SetKycTier never lowers a tier, and answers it
OK with the wallet unchanged (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from vaultpay_common.outbox import Handler, OutboxEvent, PermanentDeliveryError
from vaultpay_kyc.domain.model import KycTier, highest_tier
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


def kyc_outbox_handlers(
    wallet: WalletEvents, held_tier: Callable[[str], Awaitable[KycTier]]
) -> dict[str, Handler]:
    """`held_tier` reads the tier a user holds now (ReviewService.held_tier)."""

    async def set_tier(event: OutboxEvent) -> None:
        try:
            tier = KycTier(_text(event, "kyc_tier"))
        except ValueError as exc:
            raise PermanentDeliveryError("unknown tier") from exc
        user_id = _text(event, "user_id")
        current = highest_tier((tier, await held_tier(user_id)))
        await wallet.set_kyc_tier(event.event_id, user_id, current, _text(event, "submission_id"))

    async def notify(event: OutboxEvent) -> None:
        await wallet.create_notification(
            event.event_id, _text(event, "user_id"), _text(event, "title"), _text(event, "body")
        )

    return {TIER_TOPIC: set_tier, NOTIFICATION_TOPIC: notify}
