"""The outbox and its relay on a real PostgreSQL: once, retried, dead-lettered, shared, leased."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.db import create_engine
from vaultpay_common.outbox import (
    DeliveryError,
    Handler,
    OutboxEvent,
    OutboxMessage,
    OutboxRelay,
    OutboxStatus,
    PermanentDeliveryError,
    SqlOutbox,
    delete_delivered_outbox_events,
    list_dead_letters,
    outbox_table_ddl,
    replay_dead_letter,
)
from vaultpay_devstack.postgres import Provisioned

pytestmark = pytest.mark.integration

TOPIC = "notification.create"


class _Clock:
    """Starts a little ahead of the database's now() so new events are due at once."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC) + timedelta(seconds=1)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class _Recorder:
    """A handler that records deliveries and fails as told."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.delivered: list[OutboxEvent] = []
        self.failure = failure

    async def __call__(self, event: OutboxEvent) -> None:
        if self.failure is not None:
            raise self.failure
        self.delivered.append(event)


@pytest.fixture(scope="module")
async def app(databases: Provisioned) -> AsyncIterator[AsyncEngine]:
    owner = create_engine(databases.vaultpay_owner_dsn, pool_size=1, application_name="ob-owner")
    async with owner.begin() as conn:
        for statement in outbox_table_ddl(databases.vaultpay_app_role):
            await conn.execute(text(statement))
    await owner.dispose()
    engine = create_engine(databases.vaultpay_app_dsn, pool_size=20, application_name="ob-test")
    yield engine
    await engine.dispose()


@pytest.fixture
def producer() -> str:
    """Each test relays its own producer's events, apart from the other tests'."""
    return f"svc-{uuid.uuid4().hex[:8]}"


async def _add(app: AsyncEngine, producer: str, *messages: OutboxMessage) -> list[str]:
    async with app.begin() as conn:
        outbox = SqlOutbox(conn, producer)
        return [await outbox.add(message) for message in messages]


async def _row(app: AsyncEngine, event_id: str) -> Any:
    async with app.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT status, attempts, available_at, last_error, lease_token "
                "FROM outbox_events WHERE event_id = CAST(:e AS uuid)"
            ),
            {"e": event_id},
        )
        return result.one()


async def _until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def _relay(
    app: AsyncEngine, producer: str, handlers: dict[str, Handler], clock: _Clock, **kw: Any
) -> OutboxRelay:
    return OutboxRelay(app, producer, handlers, clock=clock, **kw)


async def test_the_app_role_has_exactly_the_privileges_the_outbox_needs(app: AsyncEngine) -> None:
    async with app.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT p, has_table_privilege(current_user, 'outbox_events', p) "
                "FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE',"
                "'REFERENCES','TRIGGER']) AS p"
            )
        )
        granted = {name for name, allowed in rows if allowed}
    assert granted == {"SELECT", "INSERT", "UPDATE", "DELETE"}


async def test_committed_events_are_delivered_once_and_rolled_back_ones_never(
    app: AsyncEngine, producer: str
) -> None:
    ids = await _add(
        app,
        producer,
        OutboxMessage(TOPIC, {"user_id": "u1", "kind": "SENT"}, key="u1"),
        OutboxMessage("mail.send", {"to": "u2"}, key="u2"),
    )
    async with app.connect() as conn:  # never committed
        await SqlOutbox(conn, producer).add(OutboxMessage(TOPIC, {"user_id": "ghost"}))
        await conn.rollback()
    notify, mail, clock = _Recorder(), _Recorder(), _Clock()
    relay = _relay(app, producer, {TOPIC: notify, "mail.send": mail}, clock)

    assert await relay.relay_once() == 2
    assert await relay.relay_once() == 0
    [note], [letter] = notify.delivered, mail.delivered
    assert (note.event_id, note.producer, note.key, note.attempts) == (ids[0], producer, "u1", 1)
    assert dict(note.payload) == {"user_id": "u1", "kind": "SENT"}
    assert letter.event_id == ids[1]
    for event_id in ids:
        assert (await _row(app, event_id)).status == OutboxStatus.DELIVERED


async def test_a_relay_delivers_only_its_own_producers_events(
    app: AsyncEngine, producer: str
) -> None:
    await _add(app, producer + "-other", OutboxMessage(TOPIC, {"n": 1}))
    relay = _relay(app, producer, {TOPIC: _Recorder()}, _Clock())
    assert await relay.relay_once() == 0


async def test_a_failing_delivery_is_retried_with_a_growing_delay_then_dead_lettered(
    app: AsyncEngine, producer: str
) -> None:
    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))
    handler, clock = _Recorder(DeliveryError("notification service unavailable")), _Clock()
    relay = _relay(app, producer, {TOPIC: handler}, clock, max_attempts=4, base_delay=2.0)

    for failures, ceiling in enumerate((2.0, 4.0, 8.0), start=1):
        assert await relay.relay_once() == 0
        row = await _row(app, event_id)
        assert (row.status, row.attempts, row.lease_token) == ("PENDING", failures, None)
        assert "notification service unavailable" in row.last_error
        wait = (row.available_at - clock.now()).total_seconds()
        assert ceiling / 2 <= wait <= ceiling
        clock.advance(wait - 0.1)
        assert await relay.relay_once() == 0  # not due yet: nothing claimed
        assert (await _row(app, event_id)).attempts == failures
        clock.advance(0.1)

    assert await relay.relay_once() == 0
    row = await _row(app, event_id)
    assert (row.status, row.attempts) == ("DEAD", 4)
    async with app.connect() as conn:
        [dead] = await list_dead_letters(conn, producer, 10)
    assert (dead.event_id, dead.status, dead.attempts) == (event_id, OutboxStatus.DEAD, 4)
    assert "DeliveryError: notification service unavailable" in dead.last_error
    clock.advance(10_000)
    assert await relay.relay_once() == 0  # dead letters stay dead


async def test_a_dead_letter_can_be_replayed_by_staff(app: AsyncEngine, producer: str) -> None:
    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))
    handler, clock = _Recorder(PermanentDeliveryError("user does not exist")), _Clock()
    relay = _relay(app, producer, {TOPIC: handler}, clock)
    assert await relay.relay_once() == 0
    row = await _row(app, event_id)
    assert (row.status, row.attempts) == ("DEAD", 1)  # permanent: no retries

    async with app.begin() as conn:
        assert await replay_dead_letter(conn, event_id)
        assert not await replay_dead_letter(conn, event_id)  # no longer dead
        assert not await replay_dead_letter(conn, str(uuid.uuid4()))
        assert not await replay_dead_letter(conn, "not-a-uuid")
    handler.failure = None
    assert await relay.relay_once() == 1
    assert [e.attempts for e in handler.delivered] == [1]
    async with app.connect() as conn:
        assert await list_dead_letters(conn, producer, 10) == []


async def test_an_event_without_a_handler_is_dead_lettered_as_a_configuration_bug(
    app: AsyncEngine, producer: str
) -> None:
    [event_id] = await _add(app, producer, OutboxMessage("wallet.kyc_tier", {"tier": 2}))
    relay = _relay(app, producer, {TOPIC: _Recorder()}, _Clock())
    assert await relay.relay_once() == 0
    row = await _row(app, event_id)
    assert row.status == "DEAD"
    assert "no handler for topic 'wallet.kyc_tier'" in row.last_error
    assert "configuration bug" in row.last_error


async def test_a_handler_that_hangs_is_timed_out_and_retried(
    app: AsyncEngine, producer: str
) -> None:
    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))

    async def hang(event: OutboxEvent) -> None:
        await asyncio.Event().wait()

    relay = _relay(app, producer, {TOPIC: hang}, _Clock(), delivery_timeout=0.05, lease=10)
    assert await relay.relay_once() == 0
    row = await _row(app, event_id)
    assert (row.status, row.attempts) == ("PENDING", 1)
    assert "timed out" in row.last_error


async def test_an_event_claimed_by_a_relay_that_crashed_is_delivered_after_the_lease(
    app: AsyncEngine, producer: str
) -> None:
    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))
    clock, started = _Clock(), asyncio.Event()

    async def stuck(event: OutboxEvent) -> None:
        started.set()
        await asyncio.Event().wait()

    crashing = _relay(app, producer, {TOPIC: stuck}, clock, lease=60, delivery_timeout=30)
    task = asyncio.create_task(crashing.relay_once())
    await asyncio.wait_for(started.wait(), timeout=10)
    task.cancel()  # the process dies mid-delivery: nothing is settled
    with pytest.raises(asyncio.CancelledError):
        await task

    handler = _Recorder()
    survivor = _relay(app, producer, {TOPIC: handler}, clock, lease=60, delivery_timeout=30)
    assert await survivor.relay_once() == 0  # still leased to the dead relay
    clock.advance(61)
    assert await survivor.relay_once() == 1
    assert [(e.event_id, e.attempts) for e in handler.delivered] == [(event_id, 2)]


async def test_an_event_whose_last_allowed_attempt_crashed_is_dead_lettered(
    app: AsyncEngine, producer: str
) -> None:
    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))
    clock, started = _Clock(), asyncio.Event()

    async def stuck(event: OutboxEvent) -> None:
        started.set()
        await asyncio.Event().wait()

    kw: dict[str, Any] = {"max_attempts": 1, "lease": 60, "delivery_timeout": 30}
    task = asyncio.create_task(_relay(app, producer, {TOPIC: stuck}, clock, **kw).relay_once())
    await asyncio.wait_for(started.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    clock.advance(61)
    handler = _Recorder()
    assert await _relay(app, producer, {TOPIC: handler}, clock, **kw).relay_once() == 0
    assert handler.delivered == []
    row = await _row(app, event_id)
    assert (row.status, row.attempts) == ("DEAD", 1)
    assert "lease expired" in row.last_error


async def test_concurrent_relays_share_the_work_and_never_deliver_an_event_twice(
    app: AsyncEngine, producer: str
) -> None:
    ids = await _add(app, producer, *(OutboxMessage(TOPIC, {"n": n}) for n in range(150)))
    clock = _Clock()
    in_flight: set[str] = set()
    deliveries: list[tuple[str, int]] = []
    overlaps: list[str] = []

    def handler_for(relay_number: int) -> Handler:
        async def deliver(event: OutboxEvent) -> None:
            if event.event_id in in_flight:
                overlaps.append(event.event_id)
            in_flight.add(event.event_id)
            await asyncio.sleep(0)  # let the other relays run while this one "sends"
            in_flight.discard(event.event_id)
            deliveries.append((event.event_id, relay_number))

        return deliver

    relays = [_relay(app, producer, {TOPIC: handler_for(n)}, clock, batch_size=7) for n in range(4)]

    async def drain(relay: OutboxRelay) -> None:
        deadline = time.monotonic() + 30
        while len(deliveries) < len(ids) and time.monotonic() < deadline:
            await relay.relay_once()

    await asyncio.gather(*(drain(relay) for relay in relays))
    assert overlaps == []
    assert sorted(e for e, _ in deliveries) == sorted(ids)  # each exactly once
    assert len({relay for _, relay in deliveries}) > 1  # the work was shared


async def test_run_delivers_soon_after_a_wake(app: AsyncEngine, producer: str) -> None:
    handler = _Recorder()
    relay = _relay(app, producer, {TOPIC: handler}, _Clock(), poll_interval=3600)
    task = asyncio.create_task(relay.run())
    try:
        await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))
        relay.wake()

        async def delivered() -> bool:
            return len(handler.delivered) == 1

        await _until(delivered)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_delivered_events_are_cleaned_up_and_dead_letters_kept(
    app: AsyncEngine, producer: str
) -> None:
    delivered_id, dead_id = await _add(
        app, producer, OutboxMessage(TOPIC, {"n": 1}), OutboxMessage("unknown.topic", {})
    )
    clock = _Clock()
    assert await _relay(app, producer, {TOPIC: _Recorder()}, clock).relay_once() == 1
    async with app.begin() as conn:
        assert await delete_delivered_outbox_events(conn, clock.now() + timedelta(seconds=1)) >= 1
        remaining = await conn.execute(
            text("SELECT event_id::text FROM outbox_events WHERE producer = :p"), {"p": producer}
        )
        assert [r[0] for r in remaining] == [dead_id]
    assert delivered_id != dead_id


async def test_every_service_cli_lists_and_replays_its_dead_letters(
    app: AsyncEngine,
    producer: str,
    databases: Provisioned,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The kit's `dead-letters` / `replay-dead-letter`, as any service with an outbox has them."""
    from vaultpay_common.cli import ServiceCli
    from vaultpay_common.config import ServiceSettings

    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))
    handler, clock = _Recorder(PermanentDeliveryError("user does not exist")), _Clock()
    assert await _relay(app, producer, {TOPIC: handler}, clock).relay_once() == 0

    settings = ServiceSettings(
        database_url=databases.vaultpay_app_dsn,
        redis_url="redis://127.0.0.1:1/0",  # never used by these commands
        key_encryption_key="A" * 43 + "=",
    )
    cli = ServiceCli("vaultpay-test", lambda: settings, chains=[], outbox_producer=producer)

    def run(*argv: str) -> tuple[int, str]:
        # main() runs its own event loop: off this test's loop, in a thread.
        code = cli.main(list(argv))
        return code, capsys.readouterr().out

    code, out = await asyncio.to_thread(run, "dead-letters")
    assert code == 0 and event_id in out and "1 dead-lettered event(s)" in out
    code, out = await asyncio.to_thread(run, "replay-dead-letter", "--event-id", event_id)
    assert code == 0 and "pending again" in out
    assert (await _row(app, event_id)).status == "PENDING"
    code, _ = await asyncio.to_thread(run, "replay-dead-letter", "--event-id", event_id)
    assert code == 2  # no longer dead
