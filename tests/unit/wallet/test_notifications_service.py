"""Notification use cases on fakes: create (deduped), list, count, mark read, watch."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import timedelta

import pytest

from tests.fakes.wallet_ip_notifications import FakeClock, FakeIpNotificationsUnitOfWork
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency.model import IdempotencyKey
from vaultpay_wallet.adapters.notification_hub import NotificationHub
from vaultpay_wallet.domain.notifications import (
    NotificationKind,
    NotificationNotFoundError,
    TooManyStreamsError,
)
from vaultpay_wallet.service_layer.notifications import (
    CreateNotification,
    GetUnreadCount,
    ListNotifications,
    MarkAllNotificationsRead,
    MarkNotificationRead,
    NotificationService,
    WatchNotifications,
)

USER = str(uuid.uuid4())
OTHER = str(uuid.uuid4())


class Env:
    def __init__(self, max_streams: int = 5) -> None:
        self.clock = FakeClock()
        self.hub = NotificationHub(max_streams_per_user=max_streams, buffer_size=8)
        self.uow = FakeIpNotificationsUnitOfWork(self.hub)
        self.service = NotificationService(lambda: self.uow, self.hub, self.clock)

    async def create(
        self, title: str = "Money in", user: str = USER, key: str | None = None
    ) -> str:
        self.clock.advance(timedelta(seconds=1))
        created = await self.service.create_notification(
            CreateNotification(key or str(uuid.uuid4()), user, "MONEY_RECEIVED", title, "body")
        )
        return created.notification.notification_id


@pytest.fixture
def env() -> Env:
    return Env()


async def test_the_same_event_twice_gives_one_notification_and_returns_the_first(
    env: Env,
) -> None:
    key = str(uuid.uuid4())
    first = await env.service.create_notification(
        CreateNotification(key, USER, NotificationKind.KYC, "KYC approved", "You are verified")
    )
    second = await env.service.create_notification(
        CreateNotification(key, USER, NotificationKind.KYC, "KYC approved", "You are verified")
    )
    assert first.created and not second.created
    assert second.notification == first.notification
    assert len(env.uow.notifications.all()) == 1


async def test_kind_accepts_names_and_proto_names(env: Env) -> None:
    created = await env.service.create_notification(
        CreateNotification("e1", USER, "NOTIFICATION_KIND_SECURITY", "t", "")
    )
    assert created.notification.kind is NotificationKind.SECURITY


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"title": ""}, {"title"}),
        ({"title": "x" * 121}, {"title"}),
        ({"title": "two\nlines"}, {"title"}),
        ({"body": "x" * 1001}, {"body"}),
        ({"body": "bell\x07"}, {"body"}),
        ({"kind": "NOPE"}, {"kind"}),
        ({"user_id": "not-a-uuid"}, {"user_id"}),
        ({"dedupe_key": ""}, {"request_id"}),
        ({"dedupe_key": "k" * 201}, {"request_id"}),
        ({"title": "", "body": "x" * 1001, "kind": "NOPE"}, {"title", "body", "kind"}),
    ],
)
async def test_bad_notifications_name_every_bad_field_and_write_nothing(
    env: Env, overrides: dict[str, str], fields: set[str]
) -> None:
    values = {"dedupe_key": "e", "user_id": USER, "kind": "KYC", "title": "t", "body": "b"}
    values.update(overrides)
    with pytest.raises(ValidationError) as caught:
        await env.service.create_notification(CreateNotification(**values))
    assert {v.field for v in caught.value.violations} == fields
    assert env.uow.notifications.all() == []


async def test_limits_are_inclusive(env: Env) -> None:
    created = await env.service.create_notification(
        CreateNotification("e", USER, "KYC", "t" * 120, "line\n\tnext" + "b" * 990)
    )
    assert len(created.notification.title) == 120


async def test_a_batch_returns_one_result_per_item_in_order_each_event_created_once(
    env: Env,
) -> None:
    first, again = str(uuid.uuid4()), str(uuid.uuid4())
    await env.service.create_notification(CreateNotification(again, USER, "KYC", "old", ""))
    results = await env.service.create_notifications(
        [
            CreateNotification(first, USER, "MONEY_SENT", "one", ""),
            CreateNotification(again, USER, "KYC", "old again", ""),
            CreateNotification(first, USER, "MONEY_SENT", "one again", ""),
            CreateNotification(first, OTHER, "MONEY_RECEIVED", "theirs", ""),
        ]
    )
    assert [(r.notification.title, r.created) for r in results] == [
        ("one", True),
        ("old", False),
        ("one", False),
        ("theirs", True),
    ]
    assert results[2].notification == results[0].notification
    assert len(env.uow.notifications.all()) == 3


async def test_a_batchs_notifications_list_in_the_order_they_were_asked_for(env: Env) -> None:
    """Newest first by (created_at, id): each item is a microsecond after the one before, so
    a batch (a relay round: a send's MONEY_SENT, then a withdrawal's return) is not ordered by
    its random ids."""
    titles = [f"event {i}" for i in range(30)]
    results = await env.service.create_notifications(
        [CreateNotification(str(uuid.uuid4()), USER, "KYC", title, "") for title in titles]
    )
    times = [r.notification.created_at for r in results]
    assert all(earlier < later for earlier, later in itertools.pairwise(times))
    newest_first = sorted(
        results, key=lambda r: (r.notification.created_at, r.notification.notification_id)
    )[::-1]
    assert [r.notification.title for r in newest_first] == titles[::-1]


async def test_a_batch_with_an_invalid_item_names_every_bad_field_by_index_and_writes_nothing(
    env: Env,
) -> None:
    with pytest.raises(ValidationError) as caught:
        await env.service.create_notifications(
            [
                CreateNotification("e0", USER, "KYC", "fine", ""),
                CreateNotification("", USER, "NOPE", "", ""),
                CreateNotification("e2", "nope", "KYC", "fine", "x" * 1001),
            ]
        )
    assert [v.field for v in caught.value.violations] == [
        "notifications[1].request_id",
        "notifications[1].kind",
        "notifications[1].title",
        "notifications[2].user_id",
        "notifications[2].body",
    ]
    assert env.uow.notifications.all() == []


@pytest.mark.parametrize("size", [0, 101])
async def test_a_batch_holds_one_to_a_hundred_items(env: Env, size: int) -> None:
    commands = [CreateNotification(f"e{i}", USER, "KYC", "t", "") for i in range(size)]
    with pytest.raises(ValidationError) as caught:
        await env.service.create_notifications(commands)
    assert [v.field for v in caught.value.violations] == ["notifications"]
    assert env.uow.notifications.all() == []


async def test_listing_is_newest_first_own_only_and_paginated(env: Env) -> None:
    ids = [await env.create(f"n{i}") for i in range(5)]
    await env.create(user=OTHER)
    page = await env.service.list_notifications(ListNotifications(USER, page_size=2))
    assert [n.notification_id for n in page.items] == ids[::-1][:2] and page.has_more
    seen = [n.notification_id for n in page.items]
    while page.has_more:
        page = await env.service.list_notifications(
            ListNotifications(USER, page_size=2, after=page.next_cursor)
        )
        seen += [n.notification_id for n in page.items]
    assert seen == ids[::-1]
    assert page.next_cursor is None


async def test_unread_only_and_the_count_follow_marking_read(env: Env) -> None:
    ids = [await env.create(f"n{i}") for i in range(3)]
    await env.create(user=OTHER)
    assert await env.service.get_unread_count(GetUnreadCount(USER)) == 3
    marked = await env.service.mark_read(MarkNotificationRead(USER, ids[1]))
    assert marked.notification.read
    unread = await env.service.list_notifications(ListNotifications(USER, unread_only=True))
    assert [n.notification_id for n in unread.items] == [ids[2], ids[0]]
    assert await env.service.get_unread_count(GetUnreadCount(USER)) == 2


async def test_marking_read_again_is_a_no_op(env: Env) -> None:
    note_id = await env.create()
    first = await env.service.mark_read(MarkNotificationRead(USER, note_id))
    again = await env.service.mark_read(MarkNotificationRead(USER, note_id))
    assert first == again


async def test_another_users_or_a_missing_notification_is_not_found(env: Env) -> None:
    theirs = await env.create(user=OTHER)
    for note_id in (theirs, str(uuid.uuid4())):
        with pytest.raises(NotificationNotFoundError):
            await env.service.mark_read(MarkNotificationRead(USER, note_id))
    assert await env.service.get_unread_count(GetUnreadCount(OTHER)) == 1


async def test_a_malformed_notification_id_names_the_field(env: Env) -> None:
    with pytest.raises(ValidationError) as caught:
        await env.service.mark_read(MarkNotificationRead(USER, "42"))
    assert caught.value.violations[0].field == "notification_id"


async def test_mark_all_read_returns_how_many_changed(env: Env) -> None:
    ids = [await env.create() for _ in range(3)]
    await env.service.mark_read(MarkNotificationRead(USER, ids[0]))
    await env.create(user=OTHER)
    marked = await env.service.mark_all_read(MarkAllNotificationsRead(USER))
    assert marked.marked_count == 2
    assert (await env.service.mark_all_read(MarkAllNotificationsRead(USER))).marked_count == 0
    assert await env.service.get_unread_count(GetUnreadCount(OTHER)) == 1


async def test_mark_all_read_retried_with_its_request_id_replays_the_count(env: Env) -> None:
    await env.create()
    key = IdempotencyKey(USER, "/m", str(uuid.uuid4()), "0" * 64)
    first = await env.service.mark_all_read(MarkAllNotificationsRead(USER, key))
    assert (await env.service.mark_all_read(MarkAllNotificationsRead(USER, key))) == first
    assert first.marked_count == 1


async def test_mark_all_read_up_to_the_newest_shown_leaves_later_arrivals_unread(
    env: Env,
) -> None:
    """The client listed [second, first], then `late` arrived before the tap: only what it
    showed is marked (the bound and everything older), never what came after."""
    await env.create("first")
    second = await env.create("second")
    late = await env.create("late")
    await env.create(user=OTHER)
    marked = await env.service.mark_all_read(
        MarkAllNotificationsRead(USER, up_to_notification_id=second)
    )
    assert marked.marked_count == 2
    unread = await env.service.list_notifications(ListNotifications(USER, unread_only=True))
    assert [n.notification_id for n in unread.items] == [late]
    assert await env.service.get_unread_count(GetUnreadCount(OTHER)) == 1
    # Again with the same bound: nothing left at or before it.
    again = MarkAllNotificationsRead(USER, up_to_notification_id=second.upper())
    assert (await env.service.mark_all_read(again)).marked_count == 0
    assert await env.service.get_unread_count(GetUnreadCount(USER)) == 1


async def test_mark_all_read_up_to_another_users_or_a_missing_notification_is_not_found(
    env: Env,
) -> None:
    await env.create()
    theirs = await env.create(user=OTHER)
    for bound in (theirs, str(uuid.uuid4())):
        with pytest.raises(NotificationNotFoundError):
            await env.service.mark_all_read(
                MarkAllNotificationsRead(USER, up_to_notification_id=bound)
            )
    assert await env.service.get_unread_count(GetUnreadCount(USER)) == 1
    assert await env.service.get_unread_count(GetUnreadCount(OTHER)) == 1


async def test_mark_all_read_up_to_a_malformed_id_names_the_field(env: Env) -> None:
    await env.create()
    with pytest.raises(ValidationError) as caught:
        await env.service.mark_all_read(MarkAllNotificationsRead(USER, up_to_notification_id="42"))
    assert [v.field for v in caught.value.violations] == ["up_to_notification_id"]
    assert await env.service.get_unread_count(GetUnreadCount(USER)) == 1


async def test_watch_starts_with_the_unread_count_then_streams_new_ones(env: Env) -> None:
    await env.create()
    async with env.service.watch(WatchNotifications(USER)) as events:
        first = await asyncio.wait_for(anext(events), 1)
        assert first.notification is None and first.unread_count == 1
        await env.create(user=OTHER)
        note_id = await env.create("fresh")
        event = await asyncio.wait_for(anext(events), 1)
        assert event.notification is not None
        assert event.notification.notification_id == note_id
        assert event.unread_count == 2
    assert env.hub.stream_count(USER) == 0


async def test_a_duplicate_event_tells_watchers_nothing_new(env: Env) -> None:
    async with env.service.watch(WatchNotifications(USER)) as events:
        await anext(events)
        await env.create(key="dup")
        await anext(events)
        await env.create(key="dup")  # deduped: nothing new to tell
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        assert not waiting.done()
        waiting.cancel()


async def test_streams_per_user_are_capped(env: Env) -> None:
    small = Env(max_streams=2)
    async with small.service.watch(WatchNotifications(USER)):
        async with small.service.watch(WatchNotifications(USER)):
            with pytest.raises(TooManyStreamsError) as caught:
                async with small.service.watch(WatchNotifications(USER)):
                    pass
            assert caught.value.reason == "TOO_MANY_STREAMS"
            async with small.service.watch(WatchNotifications(OTHER)):
                pass
        async with small.service.watch(WatchNotifications(USER)):
            pass


async def test_shutdown_ends_a_stream_cleanly(env: Env) -> None:
    async with env.service.watch(WatchNotifications(USER)) as events:
        await anext(events)
        env.hub.close()
        assert [e async for e in events] == []


async def test_watch_validates_the_user_id(env: Env) -> None:
    with pytest.raises(ValidationError):
        async with env.service.watch(WatchNotifications("nope")):
            pass
