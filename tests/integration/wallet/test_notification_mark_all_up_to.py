"""WalletService.MarkAllNotificationsRead with `up_to_notification_id` on a real PostgreSQL,
through an in-process gRPC server with the real error mapping and idempotency records.

The gap it closes: "mark all read" marked every unread notification of the caller, including
one that committed after the client rendered its list, so a notification arriving between the
look and the tap was marked read without ever being seen. With the bound (the newest
notification the client has shown) only those at or before it, in ListNotifications's order
(create_time, then id), are marked; another user's id is NOT_FOUND, a malformed one
INVALID_ARGUMENT naming the field, and a retry with another bound IDEMPOTENCY_KEY_REUSED.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import pytest
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.wallet.wallet_chain import migrate_to_head
from tests.support import rpc_failure
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.clock import SystemClock
from vaultpay_common.context import PRINCIPAL, Principal, Role
from vaultpay_common.db import create_engine
from vaultpay_common.grpc.errors import ErrorInterceptor
from vaultpay_common.grpc.request_context import RequestContextInterceptor
from vaultpay_common.grpc.wrapping import CallInterceptor, UnaryCall
from vaultpay_common.pagination import PageTokens
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters.notification_hub import NotificationHub
from vaultpay_wallet.adapters.notifications_sql import notifications
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.entrypoints.servicers import WalletServicer
from vaultpay_wallet.service_layer.notifications import CreateNotification, NotificationService

pytestmark = pytest.mark.integration

PATIENCE_S = 5.0
_UNUSED = cast(Any, None)  # the servicer's other use cases: not called here
_CALLER = "x-test-user"


@pytest.fixture(scope="module")
def migrated(databases: Provisioned) -> Provisioned:
    return migrate_to_head(databases)


@pytest.fixture(scope="module")
async def engine(migrated: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated.app_dsn("wallet"), pool_size=4, application_name="up-to")
    try:
        yield engine
    finally:
        await engine.dispose()


class _AsCaller(CallInterceptor):
    """Stands in for auth's interceptor: the call is the user named by `x-test-user`."""

    async def around_unary(self, method: str, context: Any, call: UnaryCall) -> Any:
        user = dict(context.invocation_metadata())[_CALLER]
        PRINCIPAL.set(Principal(subject=user, role=Role.USER))
        return await call()


class _Inbox:
    def __init__(self, stub: wallet_pb2_grpc.WalletServiceStub, notes: NotificationService):
        self.stub = stub
        self.notes = notes

    async def notify(self, user: str, title: str) -> str:
        created = await self.notes.create_notification(
            CreateNotification(str(uuid.uuid4()), user, "MONEY_RECEIVED", title, "₹250.00")
        )
        return created.notification.notification_id

    async def mark_all(
        self, user: str, up_to: str | None, request_id: str = ""
    ) -> wallet_pb2.MarkAllNotificationsReadResponse:
        request = wallet_pb2.MarkAllNotificationsReadRequest(request_id=request_id)
        if up_to is not None:
            request.up_to_notification_id = up_to
        reply: wallet_pb2.MarkAllNotificationsReadResponse = (
            await self.stub.MarkAllNotificationsRead(
                request, metadata=((_CALLER, user),), timeout=PATIENCE_S
            )
        )
        return reply

    async def unread(self, user: str) -> list[str]:
        reply = await self.stub.ListNotifications(
            wallet_pb2.ListNotificationsRequest(unread_only=True, page_size=100),
            metadata=((_CALLER, user),),
            timeout=PATIENCE_S,
        )
        return [n.notification_id for n in reply.notifications]

    async def shown(self, user: str) -> list[str]:
        """What the client renders: the first page of the inbox, newest first."""
        reply = await self.stub.ListNotifications(
            wallet_pb2.ListNotificationsRequest(page_size=100),
            metadata=((_CALLER, user),),
            timeout=PATIENCE_S,
        )
        return [n.notification_id for n in reply.notifications]


@pytest.fixture
async def inbox(engine: AsyncEngine) -> AsyncIterator[_Inbox]:
    hub = NotificationHub()
    notes = NotificationService(lambda: SqlWalletUnitOfWork(engine), hub, SystemClock())
    servicer = WalletServicer(
        _UNUSED, _UNUSED, _UNUSED, _UNUSED, notes, PageTokens(b"k" * 32), fingerprint_key=bytes(32)
    )
    server = grpc.aio.server(
        interceptors=[RequestContextInterceptor(), ErrorInterceptor("wallet"), _AsCaller()]
    )
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield _Inbox(wallet_pb2_grpc.WalletServiceStub(channel), notes)
    finally:
        await server.stop(None)
        hub.close()


async def test_a_notification_that_arrived_after_the_shown_list_stays_unread(
    inbox: _Inbox,
) -> None:
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    older = [await inbox.notify(user, f"Payment {n}") for n in range(3)]
    theirs = await inbox.notify(other, "Theirs")
    shown = await inbox.shown(user)
    assert shown == older[::-1]
    late = await inbox.notify(user, "Arrived after the list was rendered")

    marked = await inbox.mark_all(user, up_to=shown[0], request_id=str(uuid.uuid4()))
    assert marked.marked_count == 3
    assert await inbox.unread(user) == [late]
    assert await inbox.unread(other) == [theirs]

    # The bound spelt in upper case is the same notification; nothing left at or before it.
    again = await inbox.mark_all(user, up_to=shown[0].upper())
    assert again.marked_count == 0
    assert await inbox.unread(user) == [late]
    # Omitted: every unread one, as before the field.
    assert (await inbox.mark_all(user, up_to=None)).marked_count == 1
    assert await inbox.unread(user) == []
    assert await inbox.unread(other) == [theirs]


async def test_notifications_of_one_instant_are_bounded_by_their_id_as_the_list_orders_them(
    inbox: _Inbox, engine: AsyncEngine
) -> None:
    """A batch's items are a microsecond apart, but two of one instant (two replicas, a clock
    step) are ordered by id in the list: the bound splits them the same way."""
    user = str(uuid.uuid4())
    at = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    ids = sorted((str(uuid.uuid4()) for _ in range(3)), reverse=True)  # newest id first
    async with engine.begin() as conn:
        for note_id in ids:  # the repository stamps its own time: one instant, written here
            await conn.execute(
                insert(notifications).values(
                    id=note_id,
                    user_id=user,
                    kind="TOP_UP",
                    title="Top-up",
                    body="",
                    created_at=at,
                    dedupe_key=note_id,
                )
            )
    ids.sort()
    assert await inbox.shown(user) == ids[::-1]
    marked = await inbox.mark_all(user, up_to=ids[1])
    assert marked.marked_count == 2
    assert await inbox.unread(user) == [ids[2]]


async def test_a_bound_that_is_not_the_callers_is_not_found_and_marks_nothing(
    inbox: _Inbox,
) -> None:
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    mine = await inbox.notify(user, "Mine")
    theirs = await inbox.notify(other, "Theirs")
    for bound in (theirs, str(uuid.uuid4())):
        failure = await rpc_failure(inbox.mark_all(user, up_to=bound, request_id=str(uuid.uuid4())))
        assert failure.code == grpc.StatusCode.NOT_FOUND, failure
        assert failure.reason == "NOTIFICATION_NOT_FOUND"
    assert await inbox.unread(user) == [mine]
    assert await inbox.unread(other) == [theirs]


@pytest.mark.parametrize(
    "bound", ["42", "{" + "0" * 8 + "-0000-4000-8000-" + "0" * 12 + "}", " ", "x" * 36]
)
async def test_a_malformed_bound_is_invalid_naming_the_field(inbox: _Inbox, bound: str) -> None:
    user = str(uuid.uuid4())
    mine = await inbox.notify(user, "Mine")
    failure = await rpc_failure(inbox.mark_all(user, up_to=bound))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.fields == ["up_to_notification_id"]
    assert await inbox.unread(user) == [mine]


async def test_a_retry_replays_its_count_and_one_with_another_bound_is_refused(
    inbox: _Inbox,
) -> None:
    user = str(uuid.uuid4())
    first = await inbox.notify(user, "First")
    second = await inbox.notify(user, "Second")
    request_id = str(uuid.uuid4())
    marked = await inbox.mark_all(user, up_to=first, request_id=request_id)
    assert marked.marked_count == 1
    replay = await inbox.mark_all(user, up_to=first.upper(), request_id=request_id)
    assert replay.marked_count == 1  # the stored reply; nothing ran again
    for other_bound in (second, None):  # another bound, or none: another request
        failure = await rpc_failure(inbox.mark_all(user, up_to=other_bound, request_id=request_id))
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, failure
        assert failure.reason == "IDEMPOTENCY_KEY_REUSED"
    assert await inbox.unread(user) == [second]


async def test_a_notification_is_stamped_when_it_is_stored_not_when_its_call_began(
    inbox: _Inbox, engine: AsyncEngine
) -> None:
    """Review of 2026-12-05 (helper 284): `created_at` was the caller's clock read before the
    unit of work waited for a pooled connection (seconds when the PIN checks hold the pool),
    so a notification committed after the one a client showed could sort before it and be
    marked read unseen. The stale clock stands for that wait (and for a replica behind)."""
    user = str(uuid.uuid4())
    shown_one = await inbox.notify(user, "Shown")
    assert await inbox.shown(user) == [shown_one]
    waited = NotificationService(
        lambda: SqlWalletUnitOfWork(engine), NotificationHub(), _StaleClock(timedelta(minutes=5))
    )
    late = await waited.create_notification(
        CreateNotification(str(uuid.uuid4()), user, "MONEY_RECEIVED", "Late", "₹1.00")
    )
    assert late.notification.created_at > datetime.now(UTC) - timedelta(minutes=1)

    marked = await inbox.mark_all(user, up_to=shown_one, request_id=str(uuid.uuid4()))
    assert marked.marked_count == 1
    assert await inbox.unread(user) == [late.notification.notification_id]

    # A batch too: stamped at its insert, its items in the commands' order.
    batch = await waited.create_notifications(
        [
            CreateNotification(str(uuid.uuid4()), user, "MONEY_RECEIVED", f"Batch {n}", "")
            for n in range(3)
        ]
    )
    stamps = [item.notification.created_at for item in batch]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert stamps[0] > late.notification.created_at
    newest = (await inbox.shown(user))[:3]
    assert newest == [item.notification.notification_id for item in batch][::-1]


class _StaleClock:
    def __init__(self, behind: timedelta) -> None:
        self._behind = behind

    def now(self) -> datetime:
        return datetime.now(UTC) - self._behind
