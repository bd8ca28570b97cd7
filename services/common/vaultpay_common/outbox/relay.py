"""The relay: delivers one producer's outbox events at least once, with backoff.

    relay = OutboxRelay(engine, "wallet", {"notification.create": notify})
    task = asyncio.create_task(relay.run())   # cancel it at shutdown
    ...
    relay.wake()                              # after a commit that added events (optional)

Each round claims a batch of due events (a short transaction), hands them to their topic's
handler concurrently with a time bound, and settles each one (another short transaction):
delivered; or due again after `backoff_delay`; or dead-lettered after `max_attempts`, on a
`PermanentDeliveryError`, or when the topic has no handler (a configuration bug). Handlers
must be idempotent on `event.event_id` (pass it as the request_id of the RPC they call):
a relay that dies after delivering but before settling delivers again after the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.clock import Clock, SystemClock
from vaultpay_common.outbox.backoff import backoff_delay
from vaultpay_common.outbox.model import Handler, OutboxEvent, PermanentDeliveryError
from vaultpay_common.outbox.sql import (
    claim_due_events,
    dead_letter_exhausted,
    mark_delivered,
    mark_failed,
)

__all__ = ["OutboxRelay"]

log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OutboxRelay:
    """Delivers the events of `producer` to `handlers` (by topic). Replicas share the work.

    `lease` bounds how long a claimed event stays invisible to other relays; each handler
    call is cancelled after `delivery_timeout` (which must be shorter), so a live relay always
    settles before its lease ends.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        producer: str,
        handlers: Mapping[str, Handler],
        *,
        batch_size: int = 50,
        max_attempts: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        clock: Clock | None = None,
        lease: float = 120.0,
        delivery_timeout: float = 30.0,
        poll_interval: float = 1.0,
    ) -> None:
        if not producer:
            raise ValueError("a relay needs its producer's name")
        if batch_size < 1 or max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        if not 0 < base_delay <= max_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        if not 0 < delivery_timeout < lease:
            raise ValueError("delivery_timeout must be positive and shorter than the lease")
        self._engine = engine
        self._producer = producer
        self._handlers = dict(handlers)
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._clock = clock or SystemClock()
        self._lease = timedelta(seconds=lease)
        self._delivery_timeout = delivery_timeout
        self._poll_interval = poll_interval
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """A hint that new events exist: `run` starts its next round now."""
        self._woken.set()

    async def run(self) -> None:
        """Relays until cancelled: after a full batch it goes again at once, otherwise it waits
        for `wake()` or `poll_interval`. Database errors are logged and retried next round."""
        while True:
            self._woken.clear()
            try:
                claimed, _ = await self._round()
            except Exception:
                log.warning(
                    "outbox relay round failed", extra={"producer": self._producer}, exc_info=True
                )
                claimed = 0
            if claimed >= self._batch_size:
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout=self._poll_interval)

    async def relay_once(self) -> int:
        """One round: claims up to `batch_size` due events of this producer, hands each to
        its handler and settles it. Returns how many were delivered."""
        _, delivered = await self._round()
        return delivered

    async def _round(self) -> tuple[int, int]:
        """(events claimed, events delivered) of one round."""
        now = self._clock.now()
        token = str(uuid.uuid4())
        async with self._engine.begin() as conn:
            exhausted = await dead_letter_exhausted(conn, self._producer, now, self._max_attempts)
            events = await claim_due_events(
                conn,
                self._producer,
                now=now,
                lease_until=now + self._lease,
                lease_token=token,
                limit=self._batch_size,
                max_attempts=self._max_attempts,
            )
        if exhausted:
            log.error(
                "outbox events dead-lettered after their last lease expired",
                extra={"producer": self._producer, "count": exhausted},
            )
        if not events:
            return 0, 0
        outcomes = await asyncio.gather(
            *(self._deliver(event, token) for event in events), return_exceptions=True
        )
        # Settling failed (the database went away): those leases expire and the events are
        # due again. Every event of the batch had its turn before the first error is raised.
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise errors[0]
        return len(events), sum(1 for o in outcomes if o is True)

    async def _deliver(self, event: OutboxEvent, token: str) -> bool:
        handler = self._handlers.get(event.topic)
        if handler is None:
            error = (
                f"no handler for topic {event.topic!r} in the {self._producer!r} relay "
                "(configuration bug)"
            )
            await self._fail(event, token, error, permanent=True)
            return False
        try:
            async with asyncio.timeout(self._delivery_timeout):
                await handler(event)
        except PermanentDeliveryError as exc:
            await self._fail(event, token, _describe(exc), permanent=True)
            return False
        except TimeoutError:
            error = f"delivery timed out after {self._delivery_timeout:g}s"
            await self._fail(event, token, error, permanent=False)
            return False
        except Exception as exc:  # any handler failure is retried: at least once, not at most
            await self._fail(event, token, _describe(exc), permanent=False)
            return False
        async with self._engine.begin() as conn:
            settled = await mark_delivered(conn, event.event_id, token, self._clock.now())
        if not settled:
            log.warning(
                "outbox event delivered after its lease was lost; it may be delivered again",
                extra={"event_id": event.event_id, "topic": event.topic},
            )
        return True

    async def _fail(self, event: OutboxEvent, token: str, error: str, *, permanent: bool) -> None:
        now = self._clock.now()
        dead = permanent or event.attempts >= self._max_attempts
        retry_at = None
        if not dead:
            delay = backoff_delay(
                event.attempts, base_delay=self._base_delay, max_delay=self._max_delay
            )
            retry_at = now + timedelta(seconds=delay)
        async with self._engine.begin() as conn:
            await mark_failed(conn, event.event_id, token, error=error, retry_at=retry_at, now=now)
        extra = {
            "event_id": event.event_id,
            "topic": event.topic,
            "producer": self._producer,
            "attempts": event.attempts,
            "error": error[:200],
        }
        if dead:
            log.error("outbox event dead-lettered", extra=extra)
        else:
            log.warning("outbox delivery failed, will retry", extra=extra)
