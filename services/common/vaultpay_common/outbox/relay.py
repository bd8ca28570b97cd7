"""The relay: delivers one producer's outbox events at least once, with backoff.

    relay = OutboxRelay(engine, "wallet", {"notification.create": notify})
    task = asyncio.create_task(relay.run())   # cancel it at shutdown: it releases its leases
    ...
    relay.wake()                              # after a commit that added events (optional)

Each round claims a batch of due events (one statement) and hands them to their topic's
handler, at most `max_concurrent_deliveries` at a time (so a batch does not burst past the
connection pools of the services the handlers call), each within `delivery_timeout`. Then it
settles the whole round in one more statement (both in `relay_sql.py`): the delivered events,
and the failed ones, each due again after its own `backoff_delay`, or dead-lettered after
`max_attempts` or at once on a `PermanentDeliveryError`. An event whose handler is a
`SettledOnReturn` (wallet's mail) is settled as soon as its handler returns, in a statement
of its own, not with the round. An event whose topic has no handler
is retried like a transient failure (`UnknownToThisBuildError`: mid-rollout, a process of the
other build has it; past `max_attempts`, a configuration bug). A delivery starts only while
it can still end well inside the lease (see `OutboxRelay`); the events whose turn comes later
are made due again at once, their attempt not counted.

Cancelling the relay (the service stopping) settles what the round delivered or failed and
makes the rest of the batch due again at once, in a transaction the cancellation does not cut
short, bounded by `release_timeout`: another replica, or the restarted process, picks them up
without waiting for the lease. Delivery is at least once: a delivery cut short may have reached
the consumer, and a relay that dies after delivering but before settling delivers again after
the lease. Handlers must be idempotent on `event.event_id` (pass it as the request_id of the
RPC they call), and their consumers dedupe by it. Mail is the exception: an SMTP server cannot
dedupe, so a mail sent but not settled is mailed again. Its handler is a `SettledOnReturn`,
settled the moment the send returns, so a round that fails later (its settlement, the pod
killed, the process paused past the lease) does not send it again; a stop or failure between
the send and that settlement still does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.clock import Clock, SystemClock
from vaultpay_common.outbox.backoff import backoff_delay
from vaultpay_common.outbox.model import (
    Handler,
    OutboxEvent,
    PermanentDeliveryError,
    SettledOnReturn,
    UnknownToThisBuildError,
)
from vaultpay_common.outbox.relay_sql import (
    FailedDelivery,
    claim_round,
    release_lease,
    settle_delivered,
    settle_round,
)
from vaultpay_common.pg_raw import borrowed_driver

__all__ = ["OutboxRelay"]

log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(slots=True)
class _Failure:
    event: OutboxEvent
    settlement: FailedDelivery

    @property
    def dead(self) -> bool:
        return self.settlement.retry_at is None


@dataclass(slots=True)
class _Round:
    """A claimed batch and what became of each event so far (none yet: released if stopping)."""

    token: str
    events: list[OutboxEvent]
    delivered: list[str] = field(default_factory=list)
    failed: list[_Failure] = field(default_factory=list)
    # Delivered events settled on their own already (`SettledOnReturn`), or found lost then.
    settled_on_return: set[str] = field(default_factory=set)


class OutboxRelay:
    """Delivers the events of `producer` to `handlers` (by topic). Replicas share the work.

    `lease` bounds how long a claimed event stays invisible to other relays; each handler
    call is cancelled after `delivery_timeout` (which must be shorter). With at most
    `max_concurrent_deliveries` handler calls at once, a batch may take several turns, so a
    delivery starts only within `(lease - delivery_timeout) / 2` of the claim: it ends by
    `(lease + delivery_timeout) / 2`, and a live relay always settles before its lease ends.
    `release_timeout` bounds the settlement that a cancellation lets finish.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        producer: str,
        handlers: Mapping[str, Handler],
        *,
        batch_size: int = 50,
        max_attempts: int = 20,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        clock: Clock | None = None,
        lease: float = 120.0,
        delivery_timeout: float = 30.0,
        poll_interval: float = 1.0,
        max_concurrent_deliveries: int = 8,
        release_timeout: float = 5.0,
    ) -> None:
        if not producer:
            raise ValueError("a relay needs its producer's name")
        if batch_size < 1 or max_attempts < 1 or max_concurrent_deliveries < 1:
            raise ValueError(
                "batch_size, max_attempts and max_concurrent_deliveries must be at least 1"
            )
        if not 0 < base_delay <= max_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        if not 0 < delivery_timeout < lease:
            raise ValueError("delivery_timeout must be positive and shorter than the lease")
        if release_timeout <= 0:
            raise ValueError("release_timeout must be positive")
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
        self._start_window = (lease - delivery_timeout) / 2
        self._poll_interval = poll_interval
        self._concurrency = max_concurrent_deliveries
        self._release_timeout = release_timeout
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
                # asyncio.timeout, not wait_for: in 3.11 wait_for returns normally when the
                # event is set as the task is cancelled, and the relay would run on.
                async with asyncio.timeout(self._poll_interval):
                    await self._woken.wait()

    async def relay_once(self) -> int:
        """One round: claims up to `batch_size` due events of this producer, hands each to
        its handler and settles them. Returns how many were delivered."""
        _, delivered = await self._round()
        return delivered

    async def _round(self) -> tuple[int, int]:
        """(events claimed, events delivered) of one round."""
        loop = asyncio.get_running_loop()
        start_by = loop.time() + self._start_window
        now = self._clock.now()
        batch = _Round(token=str(uuid.uuid4()), events=[])
        try:
            async with borrowed_driver(self._engine) as driver:
                exhausted, batch.events = await claim_round(
                    driver,
                    self._producer,
                    now=now,
                    lease_until=now + self._lease,
                    lease_token=batch.token,
                    limit=self._batch_size,
                    max_attempts=self._max_attempts,
                )
        except asyncio.CancelledError:
            # Stopped while claiming: the claim may have committed with its answer lost (or
            # while the connection was being given back). Whatever the token holds is given
            # back, as a stop does with a round's undelivered events (review of 2026-12-05:
            # they stayed leased for the whole lease, mails two minutes late after a deploy).
            await self._let_settle(asyncio.create_task(self._release_claim(batch.token)))
            raise
        if exhausted:
            log.error(
                "outbox events dead-lettered after their last lease expired",
                extra={"producer": self._producer, "count": exhausted},
            )
        if not batch.events:
            return 0, 0
        try:
            await self._deliver_all(batch, start_by)
        except asyncio.CancelledError:
            await self._let_settle(asyncio.create_task(self._settle(batch)))
            raise
        settling = asyncio.create_task(self._settle(batch))
        try:
            await asyncio.shield(settling)
        except asyncio.CancelledError:
            await self._let_settle(settling)
            raise
        return len(batch.events), len(batch.delivered)

    async def _deliver_all(self, batch: _Round, start_by: float) -> None:
        """Hands the batch to its handlers, oldest first, `max_concurrent_deliveries` at a time;
        the events whose turn comes after `start_by` (loop time) are left without an outcome."""
        loop = asyncio.get_running_loop()
        queue = iter(batch.events)

        async def deliver_in_turn() -> None:
            this = asyncio.current_task()
            for event in queue:
                # A handler may swallow the cancellation of a stop: start nothing more then.
                if loop.time() > start_by or (this is not None and this.cancelling()):
                    return
                await self._deliver(event, batch)

        await asyncio.gather(
            *(deliver_in_turn() for _ in range(min(self._concurrency, len(batch.events))))
        )

    async def _deliver(self, event: OutboxEvent, batch: _Round) -> None:
        handler = self._handlers.get(event.topic)
        if handler is None:
            # Mid-rollout, a newer build's topic (or, after a rollback, an older one's):
            # retried, so a process that knows it delivers it. Dead-lettered after
            # max_attempts: then it is a configuration bug.
            error = (
                f"{UnknownToThisBuildError.__name__}: no handler for topic {event.topic!r} in "
                f"the {self._producer!r} relay of this build (a rollout in progress, or a "
                "configuration bug)"
            )
            self._fail(event, batch, error, permanent=False)
            return
        try:
            async with asyncio.timeout(self._delivery_timeout):
                await handler(event)
        except PermanentDeliveryError as exc:
            self._fail(event, batch, _describe(exc), permanent=True)
        except TimeoutError:
            error = f"delivery timed out after {self._delivery_timeout:g}s"
            self._fail(event, batch, error, permanent=False)
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if this is not None and this.cancelling():
                raise  # the relay is being stopped
            # The handler's own (a gRPC call cancelled under it, its channel closed): a failed
            # delivery, retried; never the end of the relay.
            self._fail(event, batch, "the delivery was cancelled", permanent=False)
        except Exception as exc:  # any handler failure is retried: at least once, not at most
            self._fail(event, batch, _describe(exc), permanent=False)
        else:
            batch.delivered.append(event.event_id)
            if isinstance(handler, SettledOnReturn):
                await self._settle_on_return(event, batch)

    async def _settle_on_return(self, event: OutboxEvent, batch: _Round) -> None:
        """Settles a delivered event of a `SettledOnReturn` handler at once, in a statement of
        its own. If that fails, the round's settlement settles it with the others."""
        try:
            async with borrowed_driver(self._engine) as driver:
                settled = await settle_delivered(
                    driver, batch.token, self._clock.now(), event.event_id
                )
        except Exception:
            log.warning(
                "outbox event delivered but not settled on its own; the round settles it",
                extra={"event_id": event.event_id, "producer": self._producer},
                exc_info=True,
            )
            return
        batch.settled_on_return.add(event.event_id)
        if not settled:
            log.warning(
                "outbox event delivered after its lease was lost; it may be delivered again",
                extra={"event_id": event.event_id, "producer": self._producer},
            )

    def _fail(self, event: OutboxEvent, batch: _Round, error: str, *, permanent: bool) -> None:
        retry_at = None
        if not (permanent or event.attempts >= self._max_attempts):
            delay = backoff_delay(
                event.attempts, base_delay=self._base_delay, max_delay=self._max_delay
            )
            retry_at = self._clock.now() + timedelta(seconds=delay)
        batch.failed.append(_Failure(event, FailedDelivery(event.event_id, error, retry_at)))

    async def _release_claim(self, token: str) -> None:
        async with borrowed_driver(self._engine) as driver:
            await release_lease(driver, self._producer, token, self._clock.now())

    async def _settle(self, batch: _Round) -> None:
        """Settles the round in one transaction: delivered, failed, and released (the events
        without an outcome: not reached in time, or cut short by a stop)."""
        done = {*batch.delivered, *(f.event.event_id for f in batch.failed)}
        delivered = [i for i in batch.delivered if i not in batch.settled_on_return]
        failed = list(batch.failed)
        released = [e.event_id for e in batch.events if e.event_id not in done]
        now = self._clock.now()
        async with borrowed_driver(self._engine) as driver:
            outcome = await settle_round(
                driver,
                batch.token,
                now,
                delivered=delivered,
                failed=[f.settlement for f in failed],
                released=released,
            )
        settled, given_back = outcome.settled, outcome.released
        for event_id in delivered:
            if event_id not in settled:
                log.warning(
                    "outbox event delivered after its lease was lost; it may be delivered again",
                    extra={"event_id": event_id, "producer": self._producer},
                )
        for failure in failed:
            event = failure.event
            extra = {
                "event_id": event.event_id,
                "topic": event.topic,
                "producer": self._producer,
                "attempts": event.attempts,
                "error": failure.settlement.error[:200],
                "settled": event.event_id in settled,
            }
            if failure.dead:
                log.error("outbox event dead-lettered", extra=extra)
            else:
                log.warning("outbox delivery failed, will retry", extra=extra)
        if released:
            log.info(
                "outbox events released unsettled, due again now",
                extra={"producer": self._producer, "count": len(given_back)},
            )

    async def _let_settle(self, settling: asyncio.Task[None]) -> None:
        """The relay is being cancelled: gives the round's settlement `release_timeout` to end,
        so its events need not wait out the lease, then lets the cancellation go on. Further
        cancellations do not shorten it (a service's shutdown cancels its jobs again every
        half second, `stop_tasks`); `release_timeout` bounds it."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + self._release_timeout
        try:
            while not settling.done() and (left := ends - loop.time()) > 0:
                # The caller re-raises its own cancellation once this returns.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({settling}, timeout=left)
        finally:
            if not settling.done():
                settling.cancel()
                log.warning(
                    "outbox relay stopped before its round's settlement was confirmed; what it"
                    " did not settle is due again when its lease expires",
                    extra={"producer": self._producer},
                )
            elif not settling.cancelled() and (error := settling.exception()) is not None:
                log.warning(
                    "outbox relay could not settle its round while stopping",
                    extra={"producer": self._producer},
                    exc_info=error,
                )
