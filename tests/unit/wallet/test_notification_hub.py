"""The in-process hub: per-user fan-out, bounded buffers, caps, feed loss and shutdown."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest

from vaultpay_wallet.adapters.notification_hub import NotificationHub, PgNotificationListener
from vaultpay_wallet.adapters.notifications_sql import (
    NotifiedRef,
    decode_notify_payload,
    encode_notify_payload,
)
from vaultpay_wallet.domain.notifications import (
    Notification,
    NotificationKind,
    NotificationStreamInterruptedError,
    NotificationStreamOverflowError,
    TooManyStreamsError,
)

USER = str(uuid.uuid4())
OTHER = str(uuid.uuid4())


def _note(user: str = USER, title: str = "t", body: str = "b") -> Notification:
    return Notification(
        str(uuid.uuid4()), user, NotificationKind.TOP_UP, title, body, False, datetime.now(UTC)
    )


async def test_each_subscriber_of_the_user_gets_each_notification() -> None:
    hub = NotificationHub()
    async with hub.subscribe(USER) as a, hub.subscribe(USER) as b, hub.subscribe(OTHER) as c:
        note = _note()
        hub.publish(note)
        assert await asyncio.wait_for(anext(a), 1) == note
        assert await asyncio.wait_for(anext(b), 1) == note
        # The other user's subscriber got nothing: the next thing it receives is its own.
        sentinel = _note(OTHER)
        hub.publish(sentinel)
        assert await asyncio.wait_for(anext(c), 1) == sentinel


async def test_a_waiting_subscriber_wakes_on_publish() -> None:
    hub = NotificationHub()
    async with hub.subscribe(USER) as events:
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        note = _note()
        hub.publish(note)
        assert await asyncio.wait_for(waiting, 1) == note


async def test_a_slow_subscriber_overflows_alone_and_others_keep_receiving() -> None:
    hub = NotificationHub(buffer_size=3)
    async with hub.subscribe(USER) as slow, hub.subscribe(USER) as fast:
        received = []
        for _ in range(5):
            hub.publish(_note())
            received.append(await asyncio.wait_for(anext(fast), 1))
        assert len(received) == 5
        with pytest.raises(NotificationStreamOverflowError) as caught:
            await asyncio.wait_for(anext(slow), 1)
        assert caught.value.reason == "NOTIFICATION_STREAM_OVERFLOW"
        with pytest.raises(StopAsyncIteration):
            await anext(slow)


async def test_the_cap_is_per_user_and_released_on_exit() -> None:
    hub = NotificationHub(max_streams_per_user=1)
    async with hub.subscribe(USER):
        with pytest.raises(TooManyStreamsError) as caught:
            async with hub.subscribe(USER):
                pass
        assert caught.value.metadata == {"max_streams": "1"}
        async with hub.subscribe(OTHER):
            pass
    assert hub.stream_count(USER) == 0
    async with hub.subscribe(USER):
        assert hub.stream_count(USER) == 1


async def test_losing_the_feed_interrupts_streams_until_it_is_back() -> None:
    hub = NotificationHub()
    async with hub.subscribe(USER) as events:
        hub.feed_lost()
        with pytest.raises(NotificationStreamInterruptedError):
            await asyncio.wait_for(anext(events), 1)
    with pytest.raises(NotificationStreamInterruptedError):
        async with hub.subscribe(USER):
            pass
    hub.feed_restored()
    async with hub.subscribe(USER):
        pass


async def test_close_delivers_what_is_buffered_then_ends_and_refuses_new_streams() -> None:
    hub = NotificationHub()
    async with hub.subscribe(USER) as events:
        note = _note()
        hub.publish(note)
        hub.close()
        assert [n async for n in events] == [note]
    with pytest.raises(NotificationStreamInterruptedError):
        async with hub.subscribe(USER):
            pass


def test_a_notify_payload_names_the_notification_and_carries_none_of_it() -> None:
    """Any role of the shared database may LISTEN on the channel: it learns ids only."""
    note = _note(title="Money received", body="₹500 from Bob")
    payload = encode_notify_payload(note)
    assert "Money" not in payload and "Bob" not in payload and "TOP_UP" not in payload
    assert decode_notify_payload(payload) == NotifiedRef(note.notification_id, note.user_id)


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps({"id": "x'); DROP TABLE notifications;--", "user_id": USER}),
        json.dumps({"id": USER, "user_id": "not-a-user"}),
        json.dumps({"id": USER}),
        "[]",
        "not json",
    ],
)
def test_a_payload_that_names_no_notification_is_refused(payload: str) -> None:
    """So a forged NOTIFY cannot make the listener's read of the table fail."""
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_notify_payload(payload)


async def test_a_notify_storm_naming_one_user_ends_only_that_users_streams() -> None:
    """Any role of the shared database may NOTIFY: a storm of made-up ids naming one watched
    user must not end every user's streams (their queue is capped per user)."""
    hub = NotificationHub()
    listener = PgNotificationListener("postgresql://unused", hub, max_pending_per_user=3)
    async with hub.subscribe(USER) as flooded, hub.subscribe(OTHER) as bystander:
        listener._on_notify(None, 0, "", json.dumps({"id": str(uuid.uuid4()), "user_id": OTHER}))
        for _ in range(4):
            payload = json.dumps({"id": str(uuid.uuid4()), "user_id": USER})
            listener._on_notify(None, 0, "", payload)
        with pytest.raises(NotificationStreamInterruptedError):
            await asyncio.wait_for(anext(flooded), 1)
        assert [told.user_id for told in listener._pending] == [OTHER]
        note = _note(OTHER)
        hub.publish(note)
        assert await asyncio.wait_for(anext(bystander), 1) == note
    async with hub.subscribe(USER):  # the flooded user re-opens at once
        pass


async def test_a_notification_of_an_unknown_kind_is_skipped_and_the_reader_lives_on() -> None:
    """Mid-rollout a newer build writes a kind this build has no member for: the live reader
    raised KeyError and ended for good, nothing restarting it (review of 2026-12-05). It
    skips that row, delivers the rest, and a batch it cannot deliver at all ends the
    streams, never the reader."""
    hub = NotificationHub()
    listener = PgNotificationListener("postgresql://unused", hub)
    known, newer = str(uuid.uuid4()), str(uuid.uuid4())
    rows = {
        nid: {
            "id": nid,
            "user_id": USER,
            "kind": kind,
            "title": "t",
            "body": "b",
            "read": False,
            "created_at": datetime.now(UTC),
        }
        for nid, kind in ((newer, "LOYALTY_POINTS"), (known, "TOP_UP"))
    }
    reads: list[list[str]] = []

    async def read(batch: list[NotifiedRef]) -> dict[str, object]:
        reads.append([told.notification_id for told in batch])
        if len(reads) > 1:
            raise RuntimeError("a bug in delivering")
        return {told.notification_id: rows[told.notification_id] for told in batch}

    listener._read = read  # type: ignore[method-assign]
    listener._reader = asyncio.create_task(listener._read_told())
    try:
        async with hub.subscribe(USER) as stream:
            for nid in (newer, known):
                listener._on_notify(None, 0, "", json.dumps({"id": nid, "user_id": USER}))
            delivered = await asyncio.wait_for(anext(stream), 1)
            assert delivered.notification_id == known
            listener._on_notify(None, 0, "", json.dumps({"id": known, "user_id": USER}))
            with pytest.raises(NotificationStreamInterruptedError):
                await asyncio.wait_for(anext(stream), 1)
        assert not listener._reader.done()
    finally:
        listener._reader.cancel()


async def test_a_users_largest_burst_fits_a_stream_that_keeps_up() -> None:
    """Review of 2026-12-05: each stream buffered 100 notifications and the listener delivers
    a read batch of up to 200 without a pause, so a burst of one merchant's payments ended
    every stream of theirs before their client could read one. The default buffer holds the
    most the listener keeps pending for one user (500)."""
    hub = NotificationHub()
    async with hub.subscribe("merchant") as stream:
        for n in range(500):
            hub.publish(_note("merchant", f"payment {n}"))
        received = [await anext(stream) for _ in range(500)]
    assert [n.title for n in received] == [f"payment {n}" for n in range(500)]
