"""The outbox and its relay on a real PostgreSQL: once, retried, dead-lettered, shared, leased."""

from __future__ import annotations

import asyncio
import getpass
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.audit import audit_ddl
from vaultpay_common.db import create_engine
from vaultpay_common.outbox import (
    DeliveryError,
    Handler,
    OutboxEvent,
    OutboxMessage,
    OutboxRelay,
    OutboxStatus,
    PermanentDeliveryError,
    SettledOnReturn,
    SqlOutbox,
    discard_dead_letter,
    list_dead_letters,
    outbox_discarded_status_ddl,
    outbox_purge_index_ddl,
    outbox_table_ddl,
    purge_delivered_outbox_events,
    replay_dead_letter,
)
from vaultpay_common.outbox import relay as relay_module
from vaultpay_common.outbox.relay_sql import SETTLE, claim_round, claim_statement
from vaultpay_common.pg_raw import borrowed_driver
from vaultpay_common.runtime import stop_tasks
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
    role = databases.vaultpay_app_role
    async with owner.begin() as conn:
        # The database's audit log too (p0001): staff's replays and discards are audited in it.
        for statement in (*outbox_table_ddl(role), *audit_ddl(role)):
            await conn.execute(text(statement))
    # p0004's cleanup index, CONCURRENTLY, and p0006's DISCARDED status, validated: outside a
    # transaction, as the migrations run them.
    async with owner.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for statement in (*outbox_purge_index_ddl(), *outbox_discarded_status_ddl()):
            await autocommit.execute(text(statement))
    await owner.dispose()
    engine = create_engine(databases.app_dsn("wallet"), pool_size=20, application_name="ob-test")
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


async def _cancelled(task: asyncio.Task[Any], *, within: float = 60.0) -> None:
    """Cancels `task` and waits until it ends cancelled. `within` only guards against a stop
    that never ends (the test would hang otherwise); it measures nothing."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=within)
    assert done, f"the relay has not stopped {within} s after its cancellation"
    with pytest.raises(asyncio.CancelledError):
        task.result()


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


STAFF = "operator:asha"


async def _audited(app: AsyncEngine, event_id: str) -> list[Any]:
    """The audit rows naming `event_id`, oldest first."""
    async with app.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT actor_id, actor_role, action, target_type, details FROM audit_events"
                " WHERE target_id = :e ORDER BY sequence"
            ),
            {"e": event_id},
        )
        return list(result)


async def _dead(app: AsyncEngine, producer: str, count: int) -> list[str]:
    """`count` events of `producer`, dead-lettered (refused at once): their ids."""
    ids = await _add(app, producer, *(OutboxMessage(TOPIC, {"n": n}) for n in range(count)))
    refused = _Recorder(PermanentDeliveryError("user does not exist"))
    assert await _relay(app, producer, {TOPIC: refused}, _Clock()).relay_once() == 0
    return ids


async def test_a_dead_letter_can_be_replayed_by_staff(app: AsyncEngine, producer: str) -> None:
    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))
    handler, clock = _Recorder(PermanentDeliveryError("user does not exist")), _Clock()
    relay = _relay(app, producer, {TOPIC: handler}, clock)
    assert await relay.relay_once() == 0
    row = await _row(app, event_id)
    assert (row.status, row.attempts) == ("DEAD", 1)  # permanent: no retries

    async with app.begin() as conn:
        # Another service's replay cannot revive it (row-level security may be off).
        other = f"{producer}-other"
        assert await replay_dead_letter(conn, event_id, producer=other, actor=STAFF) is None
        replayed = await replay_dead_letter(conn, event_id, producer=producer, actor=STAFF)
        assert replayed is not None and (replayed.status, replayed.attempts) == ("DEAD", 1)
        # No longer dead; unknown; not an id: nothing changes, nothing is audited.
        for unknown in (event_id, str(uuid.uuid4()), "not-a-uuid"):
            assert await replay_dead_letter(conn, unknown, producer=producer, actor=STAFF) is None
    handler.failure = None
    assert await relay.relay_once() == 1
    assert [e.attempts for e in handler.delivered] == [1]
    async with app.connect() as conn:
        assert await list_dead_letters(conn, producer, 10) == []


async def test_a_replay_is_audited_in_its_transaction_with_its_operator(
    app: AsyncEngine, producer: str
) -> None:
    """Review of 2026-12-06: a replay was a bare UPDATE, and once the event was delivered and
    purged nothing said an operator had sent (say) a PIN-reset mail again."""
    [event_id] = await _dead(app, producer, 1)
    async with app.connect() as conn:
        [dead] = await list_dead_letters(conn, producer, 10)
    # Rolled back with the replay: neither happened.
    async with app.connect() as conn:
        transaction = await conn.begin()
        assert await replay_dead_letter(conn, event_id, producer=producer, actor=STAFF)
        await transaction.rollback()
    assert (await _row(app, event_id)).status == "DEAD" and await _audited(app, event_id) == []

    async with app.begin() as conn:
        assert await replay_dead_letter(conn, event_id, producer=producer, actor=STAFF)
    async with app.begin() as conn:  # no longer dead: nothing more is audited
        assert await replay_dead_letter(conn, event_id, producer=producer, actor=STAFF) is None
    assert (await _row(app, event_id)).status == "PENDING"
    [audited] = await _audited(app, event_id)
    assert (audited.actor_id, audited.actor_role, audited.action, audited.target_type) == (
        STAFF,
        "",
        "outbox.dead_letter_replayed",
        "outbox_event",
    )
    assert dead.dead_at is not None
    assert audited.details == {
        "producer": producer,
        "topic": TOPIC,
        "key": "",
        "attempts": "1",
        "created_at": dead.created_at.isoformat(),
        "dead_at": dead.dead_at.isoformat(),
        "last_error": "PermanentDeliveryError: user does not exist",
    }
    with pytest.raises(ValueError, match="actor"):
        async with app.begin() as conn:
            await replay_dead_letter(conn, event_id, producer=producer, actor=" ")


async def test_a_discarded_dead_letter_is_audited_and_never_delivered_listed_or_replayed(
    app: AsyncEngine, producer: str
) -> None:
    discarded_id, kept_id = await _dead(app, producer, 2)
    async with app.begin() as conn:
        for blank in ("", "   "):
            with pytest.raises(ValueError, match="reason"):
                await discard_dead_letter(
                    conn, discarded_id, producer=producer, actor=STAFF, reason=blank
                )
        other = f"{producer}-other"
        assert not await discard_dead_letter(
            conn, discarded_id, producer=other, actor=STAFF, reason="not theirs"
        )
        discarded = await discard_dead_letter(
            conn, discarded_id, producer=producer, actor=STAFF, reason=" the user was deleted "
        )
        assert discarded is not None and discarded.event_id == discarded_id
        # Gone from the dead letters: neither discarded again nor replayed.
        assert not await discard_dead_letter(
            conn, discarded_id, producer=producer, actor=STAFF, reason="again"
        )
        assert not await replay_dead_letter(conn, discarded_id, producer=producer, actor=STAFF)
    assert (await _row(app, discarded_id)).status == "DISCARDED"
    [audited] = await _audited(app, discarded_id)
    assert (audited.actor_id, audited.action) == (STAFF, "outbox.dead_letter_discarded")
    assert audited.details["reason"] == "the user was deleted"
    assert audited.details["last_error"] == "PermanentDeliveryError: user does not exist"
    async with app.connect() as conn:
        assert [e.event_id for e in await list_dead_letters(conn, producer, 10)] == [kept_id]

    # The relay never claims it again; the other, replayed, is delivered.
    async with app.begin() as conn:
        assert await replay_dead_letter(conn, kept_id, producer=producer, actor=STAFF)
    handler, clock = _Recorder(), _Clock()
    relay = _relay(app, producer, {TOPIC: handler}, clock)
    assert await relay.relay_once() == 1
    clock.advance(10_000)
    assert await relay.relay_once() == 0
    assert [e.event_id for e in handler.delivered] == [kept_id]
    # Kept, not purged with the delivered events.
    assert await purge_delivered_outbox_events(app, producer, clock=clock, retention=timedelta())
    assert (await _row(app, discarded_id)).status == "DISCARDED"


async def test_an_event_without_a_handler_is_retried_then_dead_lettered(
    app: AsyncEngine, producer: str
) -> None:
    """Mid-rollout a newer build's topic reaches an older process: retried with backoff for
    a process that knows it (review of 2026-12-05: dead-lettered at once); after
    max_attempts it is a configuration bug."""
    [event_id] = await _add(app, producer, OutboxMessage("wallet.kyc_tier", {"tier": 2}))
    clock = _Clock()
    relay = _relay(app, producer, {TOPIC: _Recorder()}, clock, max_attempts=2, base_delay=10.0)
    assert await relay.relay_once() == 0
    row = await _row(app, event_id)
    assert (row.status, row.attempts) == ("PENDING", 1)
    assert row.last_error.startswith(
        "UnknownToThisBuildError: no handler for topic 'wallet.kyc_tier'"
    )
    assert "a rollout in progress, or a configuration bug" in row.last_error

    # A process of the build that knows the topic delivers it at its next turn.
    clock.advance(11)
    knows = _Recorder()
    assert await _relay(app, producer, {"wallet.kyc_tier": knows}, clock).relay_once() == 1
    assert [e.event_id for e in knows.delivered] == [event_id]

    [orphan] = await _add(app, producer, OutboxMessage("wallet.kyc_tier", {"tier": 3}))
    for _ in range(2):
        assert await relay.relay_once() == 0
        clock.advance(11)
    assert (await _row(app, orphan)).status == "DEAD"


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


async def _claim_and_crash(
    app: AsyncEngine, producer: str, clock: _Clock, *, lease: float, max_attempts: int = 8
) -> None:
    """What a relay that died mid-delivery leaves behind: its claim, never settled nor released.

    (Cancelling a relay is a stop, not a crash: it releases its leases.)
    """
    now = clock.now()
    async with borrowed_driver(app) as driver:
        await claim_round(
            driver,
            producer,
            now=now,
            lease_until=now + timedelta(seconds=lease),
            lease_token=str(uuid.uuid4()),
            limit=10,
            max_attempts=max_attempts,
        )


async def test_an_event_claimed_by_a_relay_that_crashed_is_delivered_after_the_lease(
    app: AsyncEngine, producer: str
) -> None:
    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))
    clock = _Clock()
    await _claim_and_crash(app, producer, clock, lease=60)

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
    clock = _Clock()
    kw: dict[str, Any] = {"max_attempts": 1, "lease": 60, "delivery_timeout": 30}
    await _claim_and_crash(app, producer, clock, lease=60, max_attempts=1)
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


async def test_a_handler_raising_cancelled_error_fails_its_delivery_not_the_relay(
    app: AsyncEngine, producer: str
) -> None:
    """A gRPC call cancelled under a handler (its channel closed) raises CancelledError out of
    the handler: a failed delivery, retried; the relay goes on (review of 2026-12-04: it
    ended the relay's job until the process restarted)."""
    [first] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 1}))

    async def cancelled(event: OutboxEvent) -> None:
        raise asyncio.CancelledError

    relay = _relay(
        app,
        producer,
        {TOPIC: cancelled},
        _Clock(),
        lease=10,
        delivery_timeout=5,
        poll_interval=0.05,
    )
    assert await relay.relay_once() == 0
    row = await _row(app, first)
    assert (row.status, row.attempts, row.lease_token) == ("PENDING", 1, None)
    assert "cancelled" in row.last_error

    task = asyncio.create_task(relay.run())
    try:
        [second] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 2}))

        async def attempted() -> bool:
            return bool((await _row(app, second)).attempts >= 1)

        await _until(attempted)
        assert not task.done(), "the relay ended"
    finally:
        await _cancelled(task)


async def test_an_error_text_the_database_cannot_store_does_not_block_the_round(
    app: AsyncEngine, producer: str
) -> None:
    """A NUL (PostgreSQL's text refuses it) or a lone surrogate (asyncpg cannot encode it) in
    a handler's error failed the settlement of the whole round, so its delivered events were
    leased and delivered again and again (review of 2026-12-04)."""
    good, bad = await _add(
        app, producer, OutboxMessage(TOPIC, {"n": 1}), OutboxMessage(TOPIC, {"n": 2})
    )

    async def handler(event: OutboxEvent) -> None:
        if event.event_id == bad:
            raise RuntimeError("bank said \x00 and \ud800")

    relay = _relay(app, producer, {TOPIC: handler}, _Clock(), lease=10, delivery_timeout=5)
    assert await relay.relay_once() == 1
    assert (await _row(app, good)).status == "DELIVERED"
    failed = await _row(app, bad)
    assert (failed.status, failed.attempts) == ("PENDING", 1)
    assert "\x00" not in failed.last_error and "bank said" in failed.last_error


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


async def test_delivered_events_are_cleaned_up_in_short_batches_and_dead_letters_kept(
    app: AsyncEngine, producer: str
) -> None:
    other = f"{producer}-other"
    delivered = await _add(app, producer, *(OutboxMessage(TOPIC, {"n": n}) for n in range(5)))
    [dead_id] = await _add(app, producer, OutboxMessage("unknown.topic", {}))
    [others] = await _add(app, other, OutboxMessage(TOPIC, {"n": 0}))
    clock = _Clock()
    assert await _relay(app, producer, {TOPIC: _Recorder()}, clock).relay_once() == 5
    assert await _relay(app, other, {TOPIC: _Recorder()}, clock).relay_once() == 1
    [pending_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 5}))
    clock.advance(3600)
    with _Statements(app) as seen:
        purged = await purge_delivered_outbox_events(
            app, producer, clock=clock, retention=timedelta(minutes=30), batch_size=2
        )
    assert purged == len(delivered)
    # 2 + 2 + 1: each batch its own transaction, the short one the last.
    deletes = [s for s in seen.statements if s.startswith("DELETE FROM outbox_events")]
    assert len(deletes) == 3 and seen.transactions == 3, seen.statements
    async with app.connect() as conn:
        remaining = await conn.execute(
            text("SELECT event_id::text FROM outbox_events WHERE producer IN (:p, :o)"),
            {"p": producer, "o": other},
        )
        assert sorted(r[0] for r in remaining) == sorted([dead_id, pending_id, others])
    # Not yet past the retention: nothing goes.
    assert await purge_delivered_outbox_events(app, other, clock=_Clock()) == 0


def _service_cli(
    databases: Provisioned, producer: str, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """`run(*argv)`: the kit's CLI of a service whose outbox producer is `producer`, run as
    wallet's role (exit code, stdout, stderr). Call it in a thread: main() runs its own loop."""
    from vaultpay_common.cli import ServiceCli
    from vaultpay_common.config import ServiceSettings

    settings = ServiceSettings(
        database_url=databases.app_dsn("wallet"),
        redis_url="redis://127.0.0.1:1/0",  # never used by these commands
        key_encryption_key="A" * 43 + "=",
    )
    cli = ServiceCli("vaultpay-test", lambda: settings, chains=[], outbox_producer=producer)

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        said = capsys.readouterr()
        return code, said.out, said.err

    return run


async def test_every_service_cli_lists_and_replays_its_dead_letters(
    app: AsyncEngine,
    producer: str,
    databases: Provisioned,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The kit's `dead-letters` / `replay-dead-letter`, as any service with an outbox has them."""
    event_ids = await _add(app, producer, *(OutboxMessage(TOPIC, {"n": n}) for n in range(3)))
    handler, clock = _Recorder(PermanentDeliveryError("user does not exist")), _Clock()
    assert await _relay(app, producer, {TOPIC: handler}, clock).relay_once() == 0
    other = f"{producer}-other"
    [others] = await _add(app, other, OutboxMessage(TOPIC, {"n": 9}))
    assert await _relay(app, other, {TOPIC: handler}, clock).relay_once() == 0
    run = _service_cli(databases, producer, capsys)

    code, out, _ = await asyncio.to_thread(run, "dead-letters")
    lines = out.splitlines()
    assert code == 0 and lines[-1] == f"3 dead-lettered event(s) of {producer}"
    assert all(event_id in out for event_id in event_ids) and others not in out
    dead_at = clock.now().strftime("%Y-%m-%d %H:%M:%SZ")  # the relay's clock stamps it
    assert all(" created 20" in line and f" dead {dead_at} " in line for line in lines[:-1])

    # A page: which of the total, and the command that shows the next.
    code, out, _ = await asyncio.to_thread(run, "dead-letters", "--limit", "2")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[-1].startswith(
        f"showing 1-2 of 3 dead-lettered events of {producer}, oldest first; "
        "the next page: dead-letters --limit 2 --after "
    )

    [event_id, *_] = event_ids
    code, out, _ = await asyncio.to_thread(run, "replay-dead-letter", "--event-id", event_id)
    operator = f"operator:{getpass.getuser()}"
    assert code == 0 and out == (
        f"event {event_id} ({TOPIC}) is pending again; the relay delivers it shortly "
        f"(audited: outbox.dead_letter_replayed by {operator})\n"
    )
    assert (await _row(app, event_id)).status == "PENDING"
    code, _, err = await asyncio.to_thread(run, "replay-dead-letter", "--event-id", event_id)
    assert code == 2 and err == f"error: no dead-lettered event {event_id} of {producer}\n"
    # One audit row, the operator who ran it: the second run changed nothing.
    [audited] = await _audited(app, event_id)
    assert (audited.actor_id, audited.action) == (operator, "outbox.dead_letter_replayed")
    assert audited.details["producer"] == producer and audited.details["attempts"] == "1"

    # Another producer's dead letter is not this CLI's to revive.
    code, _, err = await asyncio.to_thread(run, "replay-dead-letter", "--event-id", others)
    assert code == 2 and err == f"error: no dead-lettered event {others} of {producer}\n"
    assert (await _row(app, others)).status == "DEAD"
    assert await _audited(app, others) == []

    code, _, err = await asyncio.to_thread(run, "replay-dead-letter", "--event-id", "E")
    assert code == 2 and err == "error: --event-id must be a UUID\n"


async def test_dead_letters_pages_on_past_events_nobody_replays(
    app: AsyncEngine,
    producer: str,
    databases: Provisioned,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Review of 2026-12-06: the listing had no cursor and 1,000 rows at most, and its hint
    said the rest show as the oldest are replayed: events the consumer refuses for good die
    again at once and stayed at its head. Five dead letters of one commit (one created_at:
    the event id orders them), two a page: each shown once, in order, across three pages."""
    ids = await _dead(app, producer, 5)
    run = _service_cli(databases, producer, capsys)
    async with app.connect() as conn:
        expected = [e.event_id for e in await list_dead_letters(conn, producer, 10)]
    assert sorted(expected) == sorted(ids)

    seen: list[str] = []
    argv = ["dead-letters", "--limit", "2"]
    summaries = []
    while True:
        code, out, err = await asyncio.to_thread(run, *argv)
        assert code == 0, err
        *rows, summary = out.splitlines()
        seen += [row.split()[0] for row in rows]
        summaries.append(summary)
        if "--after " not in summary:
            break
        argv = ["dead-letters", *summary.split("the next page: dead-letters ", 1)[1].split()]
    assert seen == expected
    assert [s.split(";")[0] for s in summaries] == [
        f"showing {span} of 5 dead-lettered events of {producer}, oldest first"
        for span in ("1-2", "3-4", "5-5")
    ]
    assert summaries[-1].endswith("; the last page")

    # Past the end (the last event discarded meanwhile): said, with where to start again.
    cursor = summaries[0].rsplit("--after ", 1)[1]
    async with app.begin() as conn:
        for event_id in expected[2:]:
            assert await discard_dead_letter(
                conn, event_id, producer=producer, actor=STAFF, reason="test"
            )
    code, out, _ = await asyncio.to_thread(run, "dead-letters", "--after", cursor)
    assert code == 0 and out == (
        f"no dead-lettered event of {producer} after that cursor, 2 in all; "
        "dead-letters without --after lists from the oldest\n"
    )
    for bad in ("yesterday", f"2026-12-06T10:00:00,{uuid.uuid4()}", "2026-12-06T10:00:00Z,x"):
        with pytest.raises(SystemExit):
            await asyncio.to_thread(run, "dead-letters", "--after", bad)
        assert "--after: not a cursor dead-letters printed" in capsys.readouterr().err


async def test_every_service_cli_discards_a_dead_letter_with_its_reason_audited(
    app: AsyncEngine,
    producer: str,
    databases: Provisioned,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused, other_id = await _dead(app, producer, 2)
    run = _service_cli(databases, producer, capsys)

    with pytest.raises(SystemExit):  # the reason is required
        await asyncio.to_thread(run, "discard-dead-letter", "--event-id", refused)
    assert "the following arguments are required: --reason" in capsys.readouterr().err
    code, _, err = await asyncio.to_thread(
        run, "discard-dead-letter", "--event-id", refused, "--reason", "  "
    )
    assert code == 2 and err == "error: --reason must say why, 1 to 500 characters\n"
    assert (await _row(app, refused)).status == "DEAD" and await _audited(app, refused) == []

    code, out, _ = await asyncio.to_thread(
        run, "discard-dead-letter", "--event-id", refused, "--reason", "user 42 was erased"
    )
    operator = f"operator:{getpass.getuser()}"
    assert code == 0 and out == (
        f"event {refused} ({TOPIC}) is discarded: it will never be delivered "
        f"(audited: outbox.dead_letter_discarded by {operator})\n"
    )
    [audited] = await _audited(app, refused)
    assert (audited.actor_id, audited.action) == (operator, "outbox.dead_letter_discarded")
    assert audited.details["reason"] == "user 42 was erased"
    assert (await _row(app, refused)).status == "DISCARDED"

    # No longer a dead letter: not listed, not discarded again, not replayed.
    code, out, _ = await asyncio.to_thread(run, "dead-letters")
    assert code == 0 and refused not in out and other_id in out
    assert out.splitlines()[-1] == f"1 dead-lettered event(s) of {producer}"
    for argv in (
        ["discard-dead-letter", "--event-id", refused, "--reason", "again"],
        ["replay-dead-letter", "--event-id", refused],
    ):
        code, _, err = await asyncio.to_thread(run, *argv)
        assert code == 2 and err == f"error: no dead-lettered event {refused} of {producer}\n"
    assert len(await _audited(app, refused)) == 1
    # Never claimed again.
    clock = _Clock()
    clock.advance(10_000)
    handler = _Recorder()
    assert await _relay(app, producer, {TOPIC: handler}, clock).relay_once() == 0
    assert handler.delivered == []


# --- settling a round, bounded fan-out, releasing leases on stop ---------------------------


class _Statements:
    """Records the outbox statements an engine's connections run meanwhile, through SQLAlchemy
    or through their raw asyncpg driver, and the explicit transactions begun."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.sync_engine
        self.statements: list[str] = []
        self.transactions = 0
        self._drivers: list[Any] = []

    def _record(self, statement: str) -> None:
        if "outbox_events" in statement:
            self.statements.append(" ".join(statement.split()))

    def _on_statement(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        self._record(statement)

    def _on_query(self, query: Any) -> None:
        self._record(query.query)

    def _on_checkout(self, dbapi_conn: Any, *_: Any) -> None:
        driver = dbapi_conn.driver_connection
        if driver not in self._drivers:
            driver.add_query_logger(self._on_query)
            self._drivers.append(driver)

    def _on_begin(self, conn: Any) -> None:
        self.transactions += 1

    def __enter__(self) -> _Statements:
        sqlalchemy_events.listen(self._engine, "before_cursor_execute", self._on_statement)
        sqlalchemy_events.listen(self._engine, "begin", self._on_begin)
        sqlalchemy_events.listen(self._engine.pool, "checkout", self._on_checkout)
        return self

    def __exit__(self, *_: object) -> None:
        sqlalchemy_events.remove(self._engine, "before_cursor_execute", self._on_statement)
        sqlalchemy_events.remove(self._engine, "begin", self._on_begin)
        sqlalchemy_events.remove(self._engine.pool, "checkout", self._on_checkout)
        for driver in self._drivers:
            driver.remove_query_logger(self._on_query)


class _Gated:
    """A handler whose deliveries wait for `gate`; payload {"fail": ...} fails, {"hang": ...}
    never ends."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.finished: list[str] = []  # delivered or failed
        self.delivered: list[OutboxEvent] = []

    async def __call__(self, event: OutboxEvent) -> None:
        self.started.append(event.event_id)
        await self.gate.wait()
        if "hang" in event.payload:
            await asyncio.Event().wait()
        self.finished.append(event.event_id)
        if "fail" in event.payload:
            raise DeliveryError(str(event.payload["fail"]))
        self.delivered.append(event)


async def test_a_round_settles_all_its_delivered_events_in_one_update(
    app: AsyncEngine, producer: str
) -> None:
    ids = await _add(app, producer, *(OutboxMessage(TOPIC, {"n": n}) for n in range(20)))
    relay = _relay(app, producer, {TOPIC: _Recorder()}, _Clock())
    with _Statements(app) as seen:
        assert await relay.relay_once() == 20
    # One statement claims (with the sweep of exhausted events), one settles all 20; no
    # explicit transaction around either.
    assert seen.transactions == 0
    assert len(seen.statements) == 2, seen.statements
    claim, settle = seen.statements
    assert claim.startswith("WITH due AS (") and "FOR UPDATE SKIP LOCKED" in claim
    assert settle.startswith("WITH delivered AS (")
    assert "event_id = ANY($3::uuid[]) AND lease_token = $1" in settle
    for event_id in ids:
        row = await _row(app, event_id)
        assert (row.status, row.lease_token) == ("DELIVERED", None)


async def test_a_mail_sent_is_settled_at_once_even_when_its_round_then_fails(
    app: AsyncEngine, producer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of 2026-12-06: an SMTP server cannot dedupe by event id, and a mail whose send
    returned but whose round did not settle (the settlement failed, the pod was killed, the
    lease ran out in a pause) was claimed again after the lease and mailed again. A
    `SettledOnReturn` handler's event is settled as its handler returns; the other topics
    settle with the round, as before."""
    mail_id, note_id = await _add(
        app, producer, OutboxMessage("mail.send", {"n": 1}), OutboxMessage(TOPIC, {"n": 2})
    )
    mails, notes, clock = _Recorder(), _Recorder(), _Clock()
    relay = _relay(
        app,
        producer,
        {"mail.send": SettledOnReturn(mails), TOPIC: notes},
        clock,
        max_concurrent_deliveries=1,  # the mail first (oldest first), then the notification
    )

    async def settlement_fails(*_: Any, **__: Any) -> Any:
        raise ConnectionResetError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(relay_module, "settle_round", settlement_fails)
        with pytest.raises(ConnectionResetError):
            await relay.relay_once()
    mail, note = await _row(app, mail_id), await _row(app, note_id)
    assert (mail.status, mail.lease_token) == ("DELIVERED", None)
    assert note.status == "PENDING" and note.lease_token is not None  # the round's to settle

    clock.advance(121)  # past the lease: the notification is claimed again, the mail is not
    assert await relay.relay_once() == 1
    assert [e.event_id for e in mails.delivered] == [mail_id]
    assert [e.event_id for e in notes.delivered] == [note_id, note_id]


async def test_a_mail_whose_own_settlement_failed_is_settled_with_its_round(
    app: AsyncEngine, producer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [mail_id] = await _add(app, producer, OutboxMessage("mail.send", {"n": 1}))
    mails = _Recorder()
    relay = _relay(app, producer, {"mail.send": SettledOnReturn(mails)}, _Clock())

    async def fails(*_: Any, **__: Any) -> Any:
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr(relay_module, "settle_delivered", fails)
    with _Statements(app) as seen:
        assert await relay.relay_once() == 1
    assert (await _row(app, mail_id)).status == "DELIVERED"
    assert seen.statements[-1].startswith("WITH delivered AS (")  # the round's settlement


async def test_a_mail_settled_on_its_own_is_not_in_the_rounds_settlement(
    app: AsyncEngine, producer: str
) -> None:
    mail_ids = await _add(app, producer, *(OutboxMessage("mail.send", {"n": n}) for n in range(3)))
    [note_id] = await _add(app, producer, OutboxMessage(TOPIC, {"n": 9}))
    mails, notes = _Recorder(), _Recorder()
    relay = _relay(app, producer, {"mail.send": SettledOnReturn(mails), TOPIC: notes}, _Clock())
    with _Statements(app) as seen:
        assert await relay.relay_once() == 4
    claim, *settled, settle = seen.statements
    assert claim.startswith("WITH due AS (")
    assert len(settled) == 3 and all(s.startswith("UPDATE outbox_events") for s in settled)
    assert settle.startswith("WITH delivered AS (")  # the notification's
    for event_id in [*mail_ids, note_id]:
        assert (await _row(app, event_id)).status == "DELIVERED"


async def test_a_round_reads_only_the_pending_events_even_when_statistics_are_stale(
    app: AsyncEngine, databases: Provisioned, producer: str
) -> None:
    """After a backlog the statistics say most events are pending; once it is delivered, a
    round must still find its few due events through the pending events' index, not by
    reading the whole table (delivered events stay in it until the cleanup)."""
    backlog = 20_000
    async with app.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox_events (event_id, producer, topic, key, payload) "
                "SELECT gen_random_uuid(), :p, :t, 'k', '{}' FROM generate_series(1, :n)"
            ),
            {"p": producer, "t": TOPIC, "n": backlog},
        )
    owner = create_engine(databases.vaultpay_owner_dsn, pool_size=1, application_name="ob-owner")
    try:
        async with owner.begin() as conn:
            await conn.execute(text("ANALYZE outbox_events"))
    finally:
        await owner.dispose()
    async with app.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outbox_events SET status = 'DELIVERED', delivered_at = now() "
                "WHERE producer = :p"
            ),
            {"p": producer},
        )
    await _add(app, producer, *(OutboxMessage(TOPIC, {"n": n}) for n in range(3)))
    now = _Clock().now()
    values = (
        f"'{producer}', '{now.isoformat()}', 5, '{(now + timedelta(seconds=60)).isoformat()}',"
        f" '{uuid.uuid4()}', 100"
    )
    # The plan for these values, and the generic plan PostgreSQL may switch the relay's
    # prepared statement to after a few runs.
    for mode in ("force_custom_plan", "force_generic_plan"):
        async with borrowed_driver(app) as driver, driver.transaction():
            await driver.execute(
                "PREPARE relay_claim (text, timestamptz, integer, timestamptz, uuid, integer) AS "
                + claim_statement(100)
            )
            await driver.execute(f"SET LOCAL plan_cache_mode = {mode}")
            plan = await driver.fetch(f"EXPLAIN EXECUTE relay_claim ({values})")
            await driver.execute("DEALLOCATE relay_claim")
        plan_text = "\n".join(row[0] for row in plan)
        assert "Seq Scan" not in plan_text, f"{mode}:\n{plan_text}"
    # The settlement's generic plan too (its custom ones see the ids it is given).
    async with borrowed_driver(app) as driver, driver.transaction():
        await driver.execute(
            "PREPARE relay_settle (uuid, timestamptz, uuid[], uuid[], timestamptz[], text[],"
            " uuid[]) AS " + SETTLE
        )
        await driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        plan = await driver.fetch(
            f"EXPLAIN EXECUTE relay_settle ('{uuid.uuid4()}', '{now.isoformat()}',"
            f" ARRAY['{uuid.uuid4()}']::uuid[], '{{}}', '{{}}', '{{}}', '{{}}')"
        )
        await driver.execute("DEALLOCATE relay_settle")
    plan_text = "\n".join(row[0] for row in plan)
    assert "Seq Scan" not in plan_text, f"settle:\n{plan_text}"
    relay = _relay(app, producer, {TOPIC: _Recorder()}, _Clock())
    assert await relay.relay_once() == 3


async def test_a_round_settles_its_failures_together_each_with_its_own_error_and_backoff(
    app: AsyncEngine, producer: str
) -> None:
    ok, flaky, other, refused, orphan = await _add(
        app,
        producer,
        OutboxMessage(TOPIC, {"n": 1}),
        OutboxMessage(TOPIC, {"fail": "wallet unavailable"}),
        OutboxMessage(TOPIC, {"fail": "deadline exceeded"}),
        OutboxMessage(TOPIC, {"refuse": "user does not exist"}),
        OutboxMessage("no.such.topic", {}),
    )

    async def deliver(event: OutboxEvent) -> None:
        if "fail" in event.payload:
            raise DeliveryError(event.payload["fail"])
        if "refuse" in event.payload:
            raise PermanentDeliveryError(event.payload["refuse"])

    clock = _Clock()
    relay = _relay(app, producer, {TOPIC: deliver}, clock, base_delay=10.0)
    with _Statements(app) as seen:
        assert await relay.relay_once() == 1
    # Sweep and claim in one statement, then the delivered and all the failed in one more.
    assert (seen.transactions, len(seen.statements)) == (0, 2), seen.statements
    assert (await _row(app, ok)).status == "DELIVERED"
    for event_id, error in ((flaky, "wallet unavailable"), (other, "deadline exceeded")):
        row = await _row(app, event_id)
        assert (row.status, row.attempts, row.lease_token) == ("PENDING", 1, None)
        assert row.last_error == f"DeliveryError: {error}"
        assert 5.0 <= (row.available_at - clock.now()).total_seconds() <= 10.0
    row = await _row(app, refused)
    assert (row.status, row.last_error) == ("DEAD", "PermanentDeliveryError: user does not exist")
    row = await _row(app, orphan)
    assert row.status == "PENDING" and "no handler for topic 'no.such.topic'" in row.last_error


async def test_a_relay_delivers_at_most_max_concurrent_deliveries_at_once(
    app: AsyncEngine, producer: str
) -> None:
    ids = await _add(app, producer, *(OutboxMessage(TOPIC, {"n": n}) for n in range(12)))
    in_flight, most, delivered = 0, 0, []

    async def deliver(event: OutboxEvent) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        for _ in range(3):  # let the other deliveries run while this one "sends"
            await asyncio.sleep(0)
        in_flight -= 1
        delivered.append(event.event_id)

    relay = _relay(app, producer, {TOPIC: deliver}, _Clock(), max_concurrent_deliveries=3)
    assert await relay.relay_once() == 12  # still one round: batch_size is unchanged
    assert most == 3
    assert sorted(delivered) == sorted(ids)


async def test_events_whose_turn_comes_too_late_for_the_lease_are_released_not_attempted(
    app: AsyncEngine, producer: str
) -> None:
    """lease 2 s, delivery_timeout 1 s: deliveries start within 0.5 s of the claim. The first
    hangs until its timeout, so the other two never get their turn: due again at once."""
    first, *rest = await _add(app, producer, *(OutboxMessage(TOPIC, {"n": n}) for n in range(3)))
    started: list[str] = []

    async def hang(event: OutboxEvent) -> None:
        started.append(event.event_id)
        await asyncio.Event().wait()

    clock = _Clock()
    relay = _relay(
        app,
        producer,
        {TOPIC: hang},
        clock,
        lease=2,
        delivery_timeout=1,
        max_concurrent_deliveries=1,
    )
    assert await relay.relay_once() == 0
    assert len(started) == 1
    timed_out = started[0]
    row = await _row(app, timed_out)
    assert (row.attempts, row.lease_token) == (1, None) and "timed out" in row.last_error
    assert row.available_at > clock.now()
    for event_id in {first, *rest} - {timed_out}:
        row = await _row(app, event_id)
        assert (row.status, row.attempts, row.lease_token, row.last_error) == (
            "PENDING",
            0,
            None,
            "",
        )
        assert row.available_at <= clock.now()


async def test_a_cancelled_relay_releases_its_unsettled_leases_for_another_at_once(
    app: AsyncEngine, producer: str
) -> None:
    first, *others = await _add(
        app,
        producer,
        OutboxMessage(TOPIC, {"n": 0}),
        *(OutboxMessage(TOPIC, {"hang": n}) for n in range(1, 6)),
    )
    clock, stopping = _Clock(), _Gated()
    stopping.gate.set()  # the first is delivered, the others hang until the relay is stopped
    relay = _relay(app, producer, {TOPIC: stopping}, clock, max_concurrent_deliveries=2)
    task = asyncio.create_task(relay.run())

    async def two_hanging() -> bool:
        return len(stopping.delivered) == 1 and len(stopping.started) == 3

    await _until(two_hanging)
    await _cancelled(task)  # the hanging deliveries are cut short, the settlement bounded

    assert (await _row(app, first)).status == "DELIVERED"
    for event_id in others:  # cut short or never started: due now, the attempt given back
        row = await _row(app, event_id)
        assert (row.status, row.attempts, row.lease_token) == ("PENDING", 0, None)
        assert row.available_at <= clock.now()

    # Another replica (same clock: the 120-s lease has not run) takes them over at once.
    handler = _Recorder()
    survivor = _relay(app, producer, {TOPIC: handler}, clock, poll_interval=0.05)
    survivor_task = asyncio.create_task(survivor.run())
    try:

        async def all_delivered() -> bool:
            return len(handler.delivered) == len(others)

        await _until(all_delivered)
    finally:
        survivor_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await survivor_task
    assert sorted(e.event_id for e in handler.delivered) == sorted(others)
    assert {e.attempts for e in handler.delivered} == {1}


async def test_a_relay_whose_lease_expired_cannot_settle_events_another_relay_reclaimed(
    app: AsyncEngine, producer: str
) -> None:
    ok, failing, hanging = await _add(
        app,
        producer,
        OutboxMessage(TOPIC, {"n": 1}),
        OutboxMessage(TOPIC, {"fail": "late failure"}),
        OutboxMessage(TOPIC, {"hang": 1}),
    )
    clock, slow, fast = _Clock(), _Gated(), _Gated()
    kw: dict[str, Any] = {"lease": 60, "delivery_timeout": 30}
    late = asyncio.create_task(_relay(app, producer, {TOPIC: slow}, clock, **kw).relay_once())

    async def late_has_all() -> bool:
        return len(slow.started) == 3

    await _until(late_has_all)
    clock.advance(61)  # its lease expires: another relay re-claims the three
    reclaiming = asyncio.create_task(_relay(app, producer, {TOPIC: fast}, clock, **kw).relay_once())

    async def reclaimed() -> bool:
        return len(fast.started) == 3

    await _until(reclaimed)
    leases = {e: (await _row(app, e)).lease_token for e in (ok, failing, hanging)}
    assert None not in leases.values()

    # The late relay now delivers one, fails one, is stopped with one in flight: it tries to
    # settle all three (delivered, failed, released) and must change none of them.
    slow.gate.set()

    async def late_finished_two() -> bool:
        return len(slow.finished) == 2

    await _until(late_finished_two)
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    for event_id in (ok, failing, hanging):
        row = await _row(app, event_id)
        assert (row.status, row.attempts, row.lease_token) == ("PENDING", 2, leases[event_id])
        assert row.last_error == ""

    fast.gate.set()

    async def fast_finished_two() -> bool:
        return len(fast.finished) == 2

    await _until(fast_finished_two)
    reclaiming.cancel()  # its hanging delivery is released, the other two settled
    with pytest.raises(asyncio.CancelledError):
        await reclaiming
    ok_row, failing_row = await _row(app, ok), await _row(app, failing)
    assert ok_row.status == "DELIVERED"
    assert (failing_row.status, failing_row.last_error) == (
        "PENDING",
        "DeliveryError: late failure",
    )
    row = await _row(app, hanging)
    assert (row.status, row.attempts, row.lease_token) == ("PENDING", 1, None)


async def test_a_stop_waits_for_the_release_no_longer_than_release_timeout(
    app: AsyncEngine, producer: str, caplog: pytest.LogCaptureFixture
) -> None:
    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"hang": 1}))
    handler = _Gated()
    relay = _relay(app, producer, {TOPIC: handler}, _Clock(), release_timeout=0.5)
    task = asyncio.create_task(relay.relay_once())

    async def started() -> bool:
        return len(handler.started) == 1

    await _until(started)
    async with app.connect() as locker:  # the release will wait for this row lock
        await locker.execute(
            text("SELECT 1 FROM outbox_events WHERE event_id = CAST(:e AS uuid) FOR UPDATE"),
            {"e": event_id},
        )
        # The lock is held until the task has ended: only release_timeout lets the stop end.
        await _cancelled(task)
        await locker.rollback()
    assert "stopped before its round's settlement was confirmed" in caplog.text
    # The release is one statement: one the server had begun may still land once the lock is
    # gone (the attempt given back, due now), or not (the lease runs out). Either way the event
    # is pending, neither delivered nor lost.
    row = await _row(app, event_id)
    assert row.status == "PENDING"
    assert (row.attempts, row.lease_token is None) in {(1, False), (0, True)}, row


async def test_a_shutdown_that_cancels_again_still_gives_the_release_its_time(
    app: AsyncEngine, producer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A service stops its jobs with `stop_tasks`, which cancels them again every half second
    (here every 0.1 s): the relay's release must still get its `release_timeout`, not end at
    the next cancellation with its events left to wait out the lease."""
    [event_id] = await _add(app, producer, OutboxMessage(TOPIC, {"hang": 1}))
    handler = _Gated()
    relay = _relay(app, producer, {TOPIC: handler}, _Clock(), release_timeout=30)
    task = asyncio.create_task(relay.relay_once())

    async def started() -> bool:
        return len(handler.started) == 1

    await _until(started)
    async with app.connect() as locker:  # the release waits for this row lock
        await locker.execute(
            text("SELECT 1 FROM outbox_events WHERE event_id = CAST(:e AS uuid) FOR UPDATE"),
            {"e": event_id},
        )
        stopping = asyncio.create_task(stop_tasks([task], recancel_every=0.1))

        async def release_waits() -> bool:
            async with app.connect() as conn:
                waiting = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database() AND query LIKE '%outbox_events%'"
                        " AND pid <> pg_backend_pid()"
                    )
                )
            return bool(waiting)

        await _until(release_waits)
        # Cancellation requests the task has had so far (it never uncancels): the stop's own
        # and any re-cancellations before the release reached the lock.
        before_the_lock = task.cancelling()

        async def recancelled_five_times_on_the_lock() -> bool:
            return task.cancelling() - before_the_lock >= 5

        await _until(recancelled_five_times_on_the_lock)
        assert not task.done()  # five re-cancellations later the release is still waiting
        await locker.rollback()
    assert await asyncio.wait_for(stopping, 60) == []  # a hang guard; nothing left running
    assert task.cancelled()
    assert "stopped before its round's settlement was confirmed" not in caplog.text
    row = await _row(app, event_id)  # released: due again now, its attempt given back
    assert (row.status, row.attempts, row.lease_token) == ("PENDING", 0, None), row


async def test_a_relay_stopped_as_its_claim_commits_gives_the_claimed_events_back(
    app: AsyncEngine, producer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of 2026-12-05: a stop that reached the relay after its claim committed but
    before the claimed events were known (the claim's answer, the connection given back) left
    the whole batch leased under the round's token for the 120-s lease: after a deploy, mails
    and notifications two minutes late. Whatever the token holds is given back now."""
    ids = await _add(app, producer, *(OutboxMessage(TOPIC, {"n": n}) for n in range(3)))
    claimed = claim_round  # the real one, which the relay module imported

    async def claim_then_stopped(*args: Any, **kwargs: Any) -> Any:
        await claimed(*args, **kwargs)  # committed
        raise asyncio.CancelledError  # the stop arrives before its answer is used

    monkeypatch.setattr(relay_module, "claim_round", claim_then_stopped)
    clock, handler = _Clock(), _Recorder()
    with pytest.raises(asyncio.CancelledError):
        await _relay(app, producer, {TOPIC: handler}, clock).relay_once()
    assert handler.delivered == []
    for event_id in ids:
        row = await _row(app, event_id)
        assert (row.status, row.attempts, row.lease_token) == ("PENDING", 0, None)
        assert row.available_at <= clock.now()
