"""An in-memory `Outbox` that collects what a use case added.

Plain attribute state, so a `FakeUnitOfWork` listing it in `_state_holders` drops the messages
of a transaction that did not commit. Payloads are checked as the SQL outbox checks them
(JSON-serialisable), so a unit test catches a payload that could not be stored.

    uow.outbox.topics() == ["notification.create"]
"""

from __future__ import annotations

import uuid

from vaultpay_common.outbox.model import OutboxMessage, encode_payload

__all__ = ["FakeOutbox"]


class FakeOutbox:
    def __init__(self, producer: str = "test") -> None:
        self.producer = producer
        # event id -> message, in the order they were added
        self.events: dict[str, OutboxMessage] = {}

    async def add(self, message: OutboxMessage) -> str:
        encode_payload(message.payload)
        event_id = str(uuid.uuid4())
        self.events[event_id] = message
        return event_id

    @property
    def messages(self) -> list[OutboxMessage]:
        return list(self.events.values())

    def topics(self) -> list[str]:
        return [message.topic for message in self.events.values()]

    def of_topic(self, topic: str) -> list[OutboxMessage]:
        return [message for message in self.events.values() if message.topic == topic]
