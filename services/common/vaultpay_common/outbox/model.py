"""Outbox messages and events, the producer port and the delivery errors. Pure Python.

A use case adds a message through its unit of work's outbox; it is stored in the same
transaction as the change, and the producer's relay delivers it afterwards, at least once:

    await uow.outbox.add(OutboxMessage("notification.create", {"user_id": u, "kind": "SENT"},
                                       key=u))

The consumer dedupes by event id: the relay's handler passes `event.event_id` as the
`request_id` of the RPC it calls, which the receiving service makes idempotent. Mail cannot:
an SMTP server takes a second send as a second mail. Its handler is wrapped in
`SettledOnReturn`, and the relay settles each mail it sent as soon as the send returns (see
`SettledOnReturn`), which narrows that window without closing it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "DeliveryError",
    "Handler",
    "Outbox",
    "OutboxEvent",
    "OutboxMessage",
    "OutboxStatus",
    "PermanentDeliveryError",
    "SettledOnReturn",
    "encode_payload",
]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """What a producer wants delivered. The payload holds no secrets in clear."""

    topic: str  # e.g. "notification.create", "mail.send", "wallet.kyc_tier"
    payload: Mapping[str, Any]  # JSON-serialisable
    key: str = ""  # ordering/partition key (e.g. user id), informational

    def __post_init__(self) -> None:
        if not self.topic:
            raise ValueError("an outbox message needs a topic")


def encode_payload(payload: Mapping[str, Any]) -> str:
    """The payload as JSON text; raises TypeError/ValueError for what JSON cannot carry."""
    if not isinstance(payload, Mapping):
        raise TypeError("an outbox payload must be a mapping")
    return json.dumps(dict(payload), sort_keys=True, separators=(",", ":"), allow_nan=False)


class Outbox(Protocol):
    """The producer's side: stores a message in the current transaction."""

    async def add(self, message: OutboxMessage) -> str:
        """Returns the event id (uuid4 text); the event exists only if the transaction commits."""
        ...


class OutboxStatus(StrEnum):
    PENDING = "PENDING"  # waiting for (re)delivery, or leased by a relay
    DELIVERED = "DELIVERED"
    DEAD = "DEAD"  # gave up: staff can see it, replay it or discard it
    # Staff gave it up for good (`discard-dead-letter`, audited with its reason): never
    # delivered, never listed as a dead letter again; kept (platform p0006).
    DISCARDED = "DISCARDED"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A stored message as a relay (or staff) sees it."""

    event_id: str
    producer: str
    topic: str
    key: str
    payload: Mapping[str, Any]
    attempts: int  # delivery attempts started, this one included when handed to a handler
    created_at: datetime
    status: OutboxStatus = OutboxStatus.PENDING
    available_at: datetime | None = None  # next due time (retry backoff or lease expiry)
    last_error: str = ""
    dead_at: datetime | None = None


class DeliveryError(Exception):
    """The delivery failed in a way that may pass: the relay retries later, with backoff."""


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help (the consumer refused the event): dead-letter it at once."""


class UnknownToThisBuildError(DeliveryError):
    """The event names a topic, kind or template this build does not know, or lacks what this
    build's template needs: during a rolling update a newer build's events reach older
    processes (after a rollback, the reverse). Retried with backoff like any transient failure,
    so a process of the other build delivers it; dead-lettered only after the relay's
    `max_attempts` (wallet's and transfer's 20: 30 to 60 minutes; kyc's 1,000: 41 to 83 hours),
    which a finished rollout never reaches."""


Handler = Callable[[OutboxEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SettledOnReturn:
    """A handler whose consumer cannot dedupe by event id (an SMTP server takes a second send
    as a second mail): the relay settles each event it delivers as soon as the handler
    returns, in a short statement of its own (guarded by the round's lease token), instead of
    with the rest of its round: the round's later work (the other deliveries, up to the
    delivery timeout each, and the round's settlement) can fail (the database lost, the pod
    killed, the process paused past the lease) without that event being claimed and sent
    again after the lease. What is left is the moment between the send's return and that
    statement's commit: a process stopped or paused there, or the statement failing, still
    sends it again (the statement's failure is logged, and the round's settlement retries it).

    The rest of the relay's topics (idempotent RPCs) keep the one settlement per round."""

    handler: Handler

    async def __call__(self, event: OutboxEvent) -> None:
        await self.handler(event)
