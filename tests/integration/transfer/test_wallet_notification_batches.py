"""transfer's notifier (`GrpcWalletNotifications`) against an in-process wallet over real gRPC:
the deliveries asked for in one event-loop turn become one CreateNotifications call and each
caller gets its own outcome; a batch wallet refuses is sent again one event at a time (only the
refused event fails for good), a transient failure fails every event of the batch as
retryable, and the unchanged outbox relay (real PostgreSQL) sends its concurrent deliveries as
batches and dead-letters only the event wallet refuses."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.db import create_engine
from vaultpay_common.outbox import (
    DeliveryError,
    OutboxMessage,
    OutboxRelay,
    PermanentDeliveryError,
    SqlOutbox,
    UnknownToThisBuildError,
    outbox_table_ddl,
)
from vaultpay_devstack.postgres import Provisioned
from vaultpay_transfer.adapters.deliveries import (
    NOTIFICATION_TOPIC,
    notification_relay,
    transfer_outbox_handlers,
)
from vaultpay_transfer.adapters.wallet_peer import GrpcWalletNotifications
from vaultpay_transfer.domain.notifications import NotificationText

pytestmark = pytest.mark.integration

TIMEOUT_S = 2.0
TEXT = NotificationText("MONEY_SENT", "You sent 10.00 INR", "10.00 INR to VPY-ABC123 (TX-1).")


@dataclass
class FakeWallet(wallet_pb2_grpc.WalletInternalServiceServicer):
    """Records the notification calls; refuses what it is told to."""

    batches: list[list[str]] = field(default_factory=list)  # request ids of each batch call
    singles: list[str] = field(default_factory=list)
    batch_failure: grpc.StatusCode | None = None  # every batch call fails with it
    refused: set[str] = field(default_factory=set)  # INVALID_ARGUMENT, alone or in a batch
    # INVALID_ARGUMENT naming `kind` alone, as a wallet that does not know the kind answers
    unknown_kind: set[str] = field(default_factory=set)
    held: asyncio.Event = field(default_factory=asyncio.Event)  # set: calls answer
    hold_batches: bool = False

    async def CreateNotification(
        self, request: wallet_pb2.CreateNotificationRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.CreateNotificationResponse:
        self.singles.append(request.request_id)
        if request.request_id in self.refused:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid request: title")
        if request.request_id in self.unknown_kind:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="kind", description="must be a known notification kind"
                    )
                ]
            )
            status = status_pb2.Status(code=3, message="invalid request: kind")
            status.details.add().Pack(bad)
            await context.abort_with_status(rpc_status.to_status(status))
        return wallet_pb2.CreateNotificationResponse(
            notification=wallet_pb2.Notification(title=request.title)
        )

    async def CreateNotifications(
        self, request: wallet_pb2.CreateNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.CreateNotificationsResponse:
        ids = [item.request_id for item in request.notifications]
        self.batches.append(ids)
        if self.hold_batches:
            await self.held.wait()
        if self.batch_failure is not None:
            await context.abort(self.batch_failure, "refused")
        if (self.refused | self.unknown_kind) & set(ids):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "notifications[1].title")
        return wallet_pb2.CreateNotificationsResponse(
            notifications=[wallet_pb2.Notification(title=i.title) for i in request.notifications]
        )


@pytest.fixture
async def wallet() -> AsyncIterator[tuple[FakeWallet, grpc.aio.Channel]]:
    fake = FakeWallet()  # type: ignore[abstract]
    server = grpc.aio.server()
    wallet_pb2_grpc.add_WalletInternalServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield fake, channel
    finally:
        fake.held.set()
        await server.stop(None)


async def _token() -> str:
    return "service-token"


def _notifier(channel: grpc.aio.Channel, timeout: float = TIMEOUT_S) -> GrpcWalletNotifications:
    return GrpcWalletNotifications(channel, _token, timeout)


async def _notify_all(
    notifier: GrpcWalletNotifications, event_ids: list[str]
) -> list[BaseException | None]:
    """Asks for every delivery at once, as the relay's concurrent deliveries do."""
    user = str(uuid.uuid4())
    return await asyncio.gather(
        *(notifier.notify(event_id, user, TEXT) for event_id in event_ids),
        return_exceptions=True,
    )


def _events(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


async def test_deliveries_asked_for_together_become_one_call_with_an_outcome_each(
    wallet: tuple[FakeWallet, grpc.aio.Channel],
) -> None:
    fake, channel = wallet
    events = _events(8)
    assert await _notify_all(_notifier(channel), events) == [None] * 8
    assert fake.batches == [events]
    assert fake.singles == []


async def test_a_lone_delivery_is_one_create_notification(
    wallet: tuple[FakeWallet, grpc.aio.Channel],
) -> None:
    fake, channel = wallet
    [event] = _events(1)
    await _notifier(channel).notify(event, str(uuid.uuid4()), TEXT)
    assert (fake.batches, fake.singles) == ([], [event])


async def test_deliveries_asked_for_apart_are_separate_calls(
    wallet: tuple[FakeWallet, grpc.aio.Channel],
) -> None:
    fake, channel = wallet
    notifier, first, second = _notifier(channel), _events(3), _events(2)
    assert await _notify_all(notifier, first) == [None] * 3
    assert await _notify_all(notifier, second) == [None] * 2
    assert fake.batches == [first, second]


async def test_a_refused_batch_is_sent_again_one_by_one_and_only_the_refused_event_fails(
    wallet: tuple[FakeWallet, grpc.aio.Channel],
) -> None:
    fake, channel = wallet
    events = _events(5)
    fake.refused = {events[2]}
    outcomes = await _notify_all(_notifier(channel), events)
    assert isinstance(outcomes[2], PermanentDeliveryError)
    # Why, as wallet said it: what `dead-letters` shows (review of 2026-12-05: the code alone).
    assert str(outcomes[2]).endswith("INVALID_ARGUMENT: invalid request: title")
    assert outcomes[:2] + outcomes[3:] == [None] * 4
    assert fake.batches == [events]
    assert sorted(fake.singles) == sorted(events)


async def test_a_kind_wallet_does_not_know_yet_is_retried_not_dead_lettered(
    wallet: tuple[FakeWallet, grpc.aio.Channel],
) -> None:
    """Mid-rollout, transfer of a newer build sends a kind an older wallet refuses (naming
    `kind` alone): retried for a wallet that knows it; any other refusal stays permanent
    (review of 2026-12-05)."""
    fake, channel = wallet
    events = _events(3)
    fake.unknown_kind = {events[0]}
    fake.refused = {events[1]}
    outcomes = await _notify_all(_notifier(channel), events)
    assert isinstance(outcomes[0], UnknownToThisBuildError)
    assert not isinstance(outcomes[0], PermanentDeliveryError)
    assert isinstance(outcomes[1], PermanentDeliveryError)
    assert outcomes[2] is None


@pytest.mark.parametrize(
    "refusal",
    [
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,  # a wallet that predates CreateNotifications
    ],
)
async def test_other_refusals_of_a_batch_also_fall_back_to_single_calls(
    wallet: tuple[FakeWallet, grpc.aio.Channel], refusal: grpc.StatusCode
) -> None:
    fake, channel = wallet
    fake.batch_failure = refusal
    events = _events(3)
    assert await _notify_all(_notifier(channel), events) == [None] * 3
    assert sorted(fake.singles) == sorted(events)


@pytest.mark.parametrize(
    "failure",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        # Our identity or right to the method refused: a deployment fault, the same for every
        # event, retried until a deploy fixes it, never a dead letter at the first attempt.
        grpc.StatusCode.PERMISSION_DENIED,
    ],
)
async def test_a_transient_batch_failure_fails_every_event_to_be_retried(
    wallet: tuple[FakeWallet, grpc.aio.Channel], failure: grpc.StatusCode
) -> None:
    fake, channel = wallet
    fake.batch_failure = failure
    outcomes = await _notify_all(_notifier(channel), _events(4))
    assert all(type(o) is DeliveryError and failure.name in str(o) for o in outcomes)
    assert fake.singles == []


async def test_a_batch_past_its_deadline_fails_every_event_to_be_retried(
    wallet: tuple[FakeWallet, grpc.aio.Channel],
) -> None:
    fake, channel = wallet
    fake.hold_batches = True
    outcomes = await _notify_all(_notifier(channel, timeout=0.3), _events(3))
    assert all(type(o) is DeliveryError and "DEADLINE_EXCEEDED" in str(o) for o in outcomes)
    assert fake.singles == []


async def test_a_caller_that_gives_up_leaves_the_others_their_outcomes(
    wallet: tuple[FakeWallet, grpc.aio.Channel],
) -> None:
    fake, channel = wallet
    fake.hold_batches = True
    notifier, events = _notifier(channel), _events(3)
    user = str(uuid.uuid4())
    calls = [asyncio.create_task(notifier.notify(e, user, TEXT)) for e in events]
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while not fake.batches:
        assert asyncio.get_running_loop().time() < deadline, "no batch reached wallet"
        await asyncio.sleep(0.01)
    calls[0].cancel()
    fake.held.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1:] == [None, None]
    assert fake.batches == [events]


async def test_a_batch_is_at_most_max_batch_events(
    wallet: tuple[FakeWallet, grpc.aio.Channel],
) -> None:
    fake, channel = wallet
    notifier = GrpcWalletNotifications(channel, _token, TIMEOUT_S, max_batch=4)
    events = _events(10)
    assert await _notify_all(notifier, events) == [None] * 10
    # Three calls at once, so wallet may see them in any order.
    assert sorted(fake.batches) == sorted([events[:4], events[4:8], events[8:]])


class _Clock:
    """A little ahead of the database's now() so new events are due at once."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC) + timedelta(seconds=1)

    def now(self) -> datetime:
        return self.current


@pytest.fixture(scope="module")
async def outbox(databases: Provisioned) -> AsyncIterator[AsyncEngine]:
    owner = create_engine(databases.vaultpay_owner_dsn, pool_size=1, application_name="nb-owner")
    async with owner.begin() as conn:
        for statement in outbox_table_ddl(databases.vaultpay_app_role):
            await conn.execute(text(statement))
    await owner.dispose()
    engine = create_engine(databases.app_dsn("transfer"), pool_size=4, application_name="nb-test")
    yield engine
    await engine.dispose()


async def _add_notifications(engine: AsyncEngine, producer: str, count: int) -> list[str]:
    facts = {"amount_minor": "1000", "currency": "INR", "reference": "TX-1", "kind": "MONEY_SENT"}
    async with engine.begin() as conn:
        box = SqlOutbox(conn, producer)
        return [
            await box.add(
                OutboxMessage(NOTIFICATION_TOPIC, {**facts, "user_id": str(uuid.uuid4())})
            )
            for _ in range(count)
        ]


async def _statuses(engine: AsyncEngine, event_ids: list[str]) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_id::text AS id, status FROM outbox_events"
                " WHERE event_id::text = ANY(:ids)"
            ),
            {"ids": event_ids},
        )
        found = {row.id: row.status for row in rows}
    return [found[event_id] for event_id in event_ids]


async def test_the_relay_sends_its_concurrent_deliveries_as_batches(
    wallet: tuple[FakeWallet, grpc.aio.Channel], outbox: AsyncEngine
) -> None:
    fake, channel = wallet
    producer = f"transfer-{uuid.uuid4().hex[:8]}"
    events = await _add_notifications(outbox, producer, 16)
    relay = OutboxRelay(
        outbox, producer, transfer_outbox_handlers(_notifier(channel)), clock=_Clock()
    )
    assert await relay.relay_once() == 16
    # A relay with the default bound runs 8 deliveries at a time: two calls of 8 events.
    assert [len(batch) for batch in fake.batches] == [8, 8]
    assert sorted(id for batch in fake.batches for id in batch) == sorted(events)
    assert fake.singles == []
    assert await _statuses(outbox, events) == ["DELIVERED"] * 16


async def test_transfers_relay_sends_a_whole_round_as_one_call(
    wallet: tuple[FakeWallet, grpc.aio.Channel], outbox: AsyncEngine
) -> None:
    fake, channel = wallet
    producer = f"transfer-{uuid.uuid4().hex[:8]}"
    events = await _add_notifications(outbox, producer, 16)
    relay = notification_relay(outbox, producer, _notifier(channel), batch_size=10, clock=_Clock())

    assert await relay.relay_once() == 10  # a round is at most the batch
    assert await relay.relay_once() == 6
    assert [len(batch) for batch in fake.batches] == [10, 6]  # one call per round
    assert sorted(id for batch in fake.batches for id in batch) == sorted(events)
    assert await _statuses(outbox, events) == ["DELIVERED"] * 16


async def test_the_relay_dead_letters_only_the_event_wallet_refuses_in_a_batch(
    wallet: tuple[FakeWallet, grpc.aio.Channel], outbox: AsyncEngine
) -> None:
    fake, channel = wallet
    producer = f"transfer-{uuid.uuid4().hex[:8]}"
    events = await _add_notifications(outbox, producer, 8)
    fake.refused = {events[5]}
    relay = OutboxRelay(
        outbox, producer, transfer_outbox_handlers(_notifier(channel)), clock=_Clock()
    )
    assert await relay.relay_once() == 7
    assert [sorted(batch) for batch in fake.batches] == [sorted(events)]
    assert sorted(fake.singles) == sorted(events)
    statuses = await _statuses(outbox, events)
    assert statuses[5] == "DEAD"
    assert statuses[:5] + statuses[6:] == ["DELIVERED"] * 7
