"""What the kyc's outbox relay does with each topic (see service_layer/events.py).

Each handler passes the event id (or, for a tier, a key derived from it: below) as the
request_id of the wallet RPC it calls, so a second delivery of the same event (the relay is
at-least-once) changes nothing in wallet.

A user's tier events are not delivered in order: an event that failed waits for its backoff
while a later one may go through, and a dead-lettered one can be replayed days later. Since a
user approved at BASIC may be upgraded to FULL, an older BASIC event arriving after the FULL
one would ask wallet for BASIC again. So the tier sent is the one the user holds *when the
event is delivered* (never below the event's own: its approval committed before it could be
delivered), and a late BASIC event repeats FULL. An older event's call still in flight while a
newer approval is committed and delivered (a user's new submission and a review within one
delivery timeout) still carries BASIC: wallet's SetKycTier never lowers a tier, and answers it
OK with the wallet unchanged (docs/decisions.md).

The tier is the one field of the call decided at delivery, so it is part of the request_id
(`tier_request_id`): the event id when the event's own tier is sent, else a UUIDv5 of the
event id and the tier sent. An attempt that reached wallet unseen with BASIC and a retry that
carries FULL are then two requests, each applied once, instead of one key with two requests
(IDEMPOTENCY_KEY_REUSED, a dead letter); the same tier sent again is the same key and request,
replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from vaultpay_common.outbox import (
    Handler,
    OutboxEvent,
    PermanentDeliveryError,
    UnknownToThisBuildError,
)
from vaultpay_kyc.domain.model import KycTier, highest_tier
from vaultpay_kyc.service_layer.events import NOTIFICATION_TOPIC, TIER_TOPIC

__all__ = ["WalletEvents", "kyc_outbox_handlers", "tier_request_id"]


class WalletEvents(Protocol):
    async def set_kyc_tier(
        self, request_id: str, user_id: str, tier: KycTier, submission_id: str
    ) -> None: ...

    async def create_notification(
        self, event_id: str, user_id: str, title: str, body: str
    ) -> None: ...


def tier_request_id(event_id: str, event_tier: KycTier, sent: KycTier) -> str:
    """The request_id of a tier event's SetKycTier call: one per (event, tier sent), a
    lower-case UUID as wallet requires. The event id itself while the event's own tier is
    sent (every call's key before this rule, so an attempt made before it still replays)."""
    if sent == event_tier:
        return event_id
    return str(uuid.uuid5(uuid.UUID(event_id), sent.value))


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
        except ValueError as exc:  # a newer build's tier, mid-rollout: retried
            raise UnknownToThisBuildError("unknown tier") from exc
        user_id = _text(event, "user_id")
        current = highest_tier((tier, await held_tier(user_id)))
        await wallet.set_kyc_tier(
            tier_request_id(event.event_id, tier, current),
            user_id,
            current,
            _text(event, "submission_id"),
        )

    async def notify(event: OutboxEvent) -> None:
        await wallet.create_notification(
            event.event_id, _text(event, "user_id"), _text(event, "title"), _text(event, "body")
        )

    return {TIER_TOPIC: set_tier, NOTIFICATION_TOPIC: notify}
