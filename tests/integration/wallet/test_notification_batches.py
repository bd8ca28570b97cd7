"""WalletInternalService.CreateNotifications on a real PostgreSQL, through an in-process gRPC
server with the real error mapping: each item is stored once by (user, request_id) across and
within batches, watchers (LISTEN/NOTIFY through the hub) hear of each new notification exactly
once, an invalid item fails the whole batch naming `notifications[i].<field>` with nothing
stored, and concurrent batches sharing keys in any order neither deadlock nor duplicate."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.wallet.wallet_chain import migrate_to_head
from tests.support import rpc_failure
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.clock import SystemClock
from vaultpay_common.db import create_engine
from vaultpay_common.grpc.errors import ErrorInterceptor
from vaultpay_common.grpc.request_context import RequestContextInterceptor
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters.notification_hub import NotificationHub, PgNotificationListener
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.entrypoints.servicers_staff import WalletInternalServicer
from vaultpay_wallet.service_layer.notifications import (
    NotificationService,
    WatchEvent,
    WatchNotifications,
)

pytestmark = pytest.mark.integration

PATIENCE_S = 5.0
_UNUSED = cast(Any, None)  # the servicer's other use cases: not called here


@pytest.fixture(scope="module")
def migrated(databases: Provisioned) -> Provisioned:
    return migrate_to_head(databases)


@pytest.fixture(scope="module")
async def engine(migrated: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated.app_dsn("wallet"), pool_size=8, application_name="batches")
    try:
        yield engine
    finally:
        await engine.dispose()


class _Wallet:
    def __init__(self, stub: wallet_pb2_grpc.WalletInternalServiceStub, notes: Any) -> None:
        self.stub = stub
        self.notes: NotificationService = notes

    async def create(
        self, *items: wallet_pb2.CreateNotificationRequest
    ) -> list[wallet_pb2.Notification]:
        reply = await self.stub.CreateNotifications(
            wallet_pb2.CreateNotificationsRequest(notifications=items), timeout=PATIENCE_S
        )
        return list(reply.notifications)


@pytest.fixture
async def wallet(migrated: Provisioned, engine: AsyncEngine) -> AsyncIterator[_Wallet]:
    hub = NotificationHub()
    listener = PgNotificationListener(migrated.app_dsn("wallet"), hub)
    await listener.start()
    notes = NotificationService(lambda: SqlWalletUnitOfWork(engine), hub, SystemClock())
    servicer = WalletInternalServicer(
        _UNUSED, _UNUSED, _UNUSED, _UNUSED, notes, fingerprint_key=bytes(32)
    )
    server = grpc.aio.server(interceptors=[RequestContextInterceptor(), ErrorInterceptor("wallet")])
    wallet_pb2_grpc.add_WalletInternalServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield _Wallet(wallet_pb2_grpc.WalletInternalServiceStub(channel), notes)
    finally:
        await server.stop(None)
        hub.close()
        await listener.stop()


def _item(
    user: str, event_id: str | None = None, title: str = "Sent", **fields: Any
) -> wallet_pb2.CreateNotificationRequest:
    values: dict[str, Any] = {
        "request_id": event_id or str(uuid.uuid4()),
        "user_id": user,
        "kind": wallet_pb2.NOTIFICATION_KIND_MONEY_SENT,
        "title": title,
        "body": "₹10 to VPY-ABC123",
    }
    values.update(fields)
    return wallet_pb2.CreateNotificationRequest(**values)


async def _count(engine: AsyncEngine, *users: str) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM notifications WHERE user_id::text = ANY(:users)"),
            {"users": list(users)},
        )
    return int(found or 0)


async def _next(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(events), PATIENCE_S)


async def _heard(events: AsyncIterator[WatchEvent], until_title: str) -> list[str]:
    """The titles a watcher hears up to and including `until_title` (a sentinel sent last, so
    nothing told twice can hide behind the end of the test)."""
    titles: list[str] = []
    while not titles or titles[-1] != until_title:
        event = await _next(events)
        assert event.notification is not None
        titles.append(event.notification.title)
    return titles


async def test_a_batch_stores_each_event_once_across_and_within_batches_and_tells_watchers_once(
    wallet: _Wallet, engine: AsyncEngine
) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    a1, a2, b1 = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    async with (
        wallet.notes.watch(WatchNotifications(alice)) as on_alice,
        wallet.notes.watch(WatchNotifications(bob)) as on_bob,
    ):
        assert (await _next(on_alice)).unread_count == 0
        assert (await _next(on_bob)).unread_count == 0

        first = await wallet.create(
            _item(alice, a1, "a1"),
            _item(bob, b1, "b1"),
            _item(alice, a1, "a1 again"),  # the same event twice in one batch
            _item(alice, a2, "a2"),
        )
        assert [n.title for n in first] == ["a1", "b1", "a1", "a2"]
        assert first[2] == first[0]
        assert len({n.notification_id for n in first}) == 3

        second = await wallet.create(
            _item(alice, a2, "a2 redelivered"),
            _item(bob, a1, "b's own a1"),  # the same event id is another user's key
            _item(alice, title="a3"),
        )
        assert second[0] == first[3]
        assert [n.title for n in second] == ["a2", "b's own a1", "a3"]

        await wallet.create(_item(alice, title="end"), _item(bob, title="end"))
        assert await _heard(on_alice, "end") == ["a1", "a2", "a3", "end"]
        assert await _heard(on_bob, "end") == ["b1", "b's own a1", "end"]
    assert await _count(engine, alice) == 4
    assert await _count(engine, bob) == 3


async def test_an_invalid_item_fails_the_whole_batch_by_its_field_path_and_stores_nothing(
    wallet: _Wallet, engine: AsyncEngine
) -> None:
    user = str(uuid.uuid4())
    bad_text = await rpc_failure(
        wallet.create(_item(user), _item(user, title=""), _item(user, body="x" * 1001))
    )
    assert bad_text.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_text.fields == ["notifications[1].title", "notifications[2].body"]

    bad_ids = await rpc_failure(
        wallet.create(
            _item(user),
            _item("not-a-uuid"),
            _item(user, kind=wallet_pb2.NOTIFICATION_KIND_UNSPECIFIED),
        )
    )
    assert bad_ids.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_ids.fields == ["notifications[1].user_id", "notifications[2].kind"]

    bad_key = await rpc_failure(wallet.create(_item(user), _item(user, event_id=" ")))
    assert bad_key.fields == ["notifications[1].request_id"]
    assert await _count(engine, user) == 0


async def test_a_batch_holds_1_to_100_items(wallet: _Wallet, engine: AsyncEngine) -> None:
    user = str(uuid.uuid4())
    for size in (0, 101):
        failure = await rpc_failure(wallet.create(*(_item(user) for _ in range(size))))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.fields == ["notifications"]
    assert len(await wallet.create(*(_item(user) for _ in range(100)))) == 100
    assert await _count(engine, user) == 100


async def test_concurrent_batches_sharing_events_in_any_order_create_each_once(
    wallet: _Wallet, engine: AsyncEngine
) -> None:
    users = [str(uuid.uuid4()) for _ in range(3)]
    items = [_item(user, title=f"n{i}") for i, user in enumerate(users * 33)]
    batches = [random.sample(items, len(items)) for _ in range(8)]
    replies = await asyncio.gather(*(wallet.create(*batch) for batch in batches))
    by_event: dict[tuple[str, str], set[str]] = {}
    for batch, reply in zip(batches, replies, strict=True):
        for item, note in zip(batch, reply, strict=True):
            assert note.title == item.title
            by_event.setdefault((item.user_id, item.request_id), set()).add(note.notification_id)
    assert len(by_event) == len(items)
    assert all(len(ids) == 1 for ids in by_event.values())
    assert await _count(engine, *users) == len(items)
