"""The hub's cap on streams for the whole process, next to the per-user one.

A review found only the per-user cap: 4,000 accounts with 5 streams each held 20,000 streams
in one wallet process. Every stream now counts toward `max_streams` from the moment it is
accepted until its `subscribe` block is left, however it ends.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.fakes.wallet_ip_notifications import FakeClock, FakeIpNotificationsUnitOfWork
from vaultpay_common.errors import ErrorKind
from vaultpay_common.grpc.errors import status_for
from vaultpay_wallet.adapters.notification_hub import NotificationHub
from vaultpay_wallet.domain.notifications import (
    Notification,
    NotificationKind,
    NotificationStreamInterruptedError,
    NotificationStreamOverflowError,
    TooManyStreamsError,
    TooManyStreamsInProcessError,
)
from vaultpay_wallet.service_layer.notifications import NotificationService, WatchNotifications


def _user() -> str:
    return str(uuid.uuid4())


def _note(user: str) -> Notification:
    return Notification(
        str(uuid.uuid4()), user, NotificationKind.TOP_UP, "t", "b", False, datetime.now(UTC)
    )


async def _refused_in_process(hub: NotificationHub, user: str) -> TooManyStreamsInProcessError:
    with pytest.raises(TooManyStreamsInProcessError) as caught:
        async with hub.subscribe(user):
            pass
    return caught.value


async def _hold(hub: NotificationHub, user: str, opened: asyncio.Event) -> None:
    """A watcher as the servicer runs one: reads until its stream ends or it is cancelled."""
    async with hub.subscribe(user) as events:
        opened.set()
        async for _ in events:
            pass


async def test_the_process_cap_counts_the_streams_of_every_user() -> None:
    hub = NotificationHub(max_streams_per_user=5, max_streams=3)
    first, second, third = _user(), _user(), _user()
    async with hub.subscribe(first), hub.subscribe(first), hub.subscribe(second):
        refused = await _refused_in_process(hub, third)
        assert refused.reason == "WATCH_CAPACITY_REACHED"
        assert refused.kind is ErrorKind.RESOURCE_EXHAUSTED
        assert "retry later" in refused.message
        assert refused.metadata == {}  # the process's capacity is not the client's business
        assert hub.stream_count(third) == 0
        assert hub.open_streams == 3
    assert hub.open_streams == 0


async def test_a_closed_stream_frees_its_slot_for_another_user() -> None:
    hub = NotificationHub(max_streams=2)
    first, second, third = _user(), _user(), _user()
    async with hub.subscribe(first):
        async with hub.subscribe(second):
            await _refused_in_process(hub, third)
        async with hub.subscribe(third):
            assert hub.open_streams == 2
            await _refused_in_process(hub, second)


async def test_a_refused_stream_takes_no_slot() -> None:
    hub = NotificationHub(max_streams=1)
    holder, latecomer = _user(), _user()
    async with hub.subscribe(holder):
        for _ in range(3):
            await _refused_in_process(hub, latecomer)
    assert hub.open_streams == 0
    async with hub.subscribe(latecomer):
        assert hub.open_streams == 1


async def test_the_per_user_cap_still_applies_below_the_process_cap() -> None:
    hub = NotificationHub(max_streams_per_user=2, max_streams=100)
    user, other = _user(), _user()
    async with hub.subscribe(user), hub.subscribe(user):
        with pytest.raises(TooManyStreamsError) as caught:
            async with hub.subscribe(user):
                pass
        assert caught.value.reason == "TOO_MANY_STREAMS"
        assert caught.value.metadata == {"max_streams": "2"}
        async with hub.subscribe(other):
            assert hub.open_streams == 3


async def test_a_user_at_their_own_cap_in_a_full_process_is_told_to_close_one() -> None:
    """Their own streams are what they can act on; it is the answer they got before."""
    hub = NotificationHub(max_streams_per_user=1, max_streams=1)
    user = _user()
    async with hub.subscribe(user):
        with pytest.raises(TooManyStreamsError):
            async with hub.subscribe(user):
                pass


async def test_a_cancelled_stream_frees_its_slot() -> None:
    hub = NotificationHub(max_streams=1)
    opened = asyncio.Event()
    watcher = asyncio.create_task(_hold(hub, _user(), opened))
    await asyncio.wait_for(opened.wait(), 1)
    await _refused_in_process(hub, _user())
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
    assert hub.open_streams == 0
    async with hub.subscribe(_user()):
        pass


async def test_an_overflowed_stream_frees_its_slot() -> None:
    hub = NotificationHub(max_streams=1, buffer_size=1)
    slow = _user()
    opened = asyncio.Event()
    watcher = asyncio.create_task(_hold(hub, slow, opened))
    await asyncio.wait_for(opened.wait(), 1)
    for _ in range(3):  # no await between: the watcher reads none of them
        hub.publish(_note(slow))
    with pytest.raises(NotificationStreamOverflowError):
        await asyncio.wait_for(watcher, 1)
    assert hub.open_streams == 0
    async with hub.subscribe(_user()):
        pass


async def test_interrupted_streams_free_their_slots() -> None:
    hub = NotificationHub(max_streams=2)
    opened = [asyncio.Event(), asyncio.Event()]
    watchers = [asyncio.create_task(_hold(hub, _user(), event)) for event in opened]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 1)
    hub.interrupt()
    for watcher in watchers:
        with pytest.raises(NotificationStreamInterruptedError):
            await asyncio.wait_for(watcher, 1)
    assert hub.open_streams == 0
    async with hub.subscribe(_user()), hub.subscribe(_user()):
        pass


async def test_concurrent_opens_never_overshoot_the_process_cap() -> None:
    hub = NotificationHub(max_streams=10)
    release = asyncio.Event()
    accepted: list[str] = []

    async def open_one(user: str) -> None:
        async with hub.subscribe(user):
            accepted.append(user)
            await release.wait()

    openers = [asyncio.create_task(open_one(_user())) for _ in range(50)]
    await asyncio.sleep(0)  # each has run to its first await: holding a stream, or refused
    assert len(accepted) == hub.open_streams == 10
    release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*openers, return_exceptions=True), 5)
    refused = [o for o in outcomes if isinstance(o, TooManyStreamsInProcessError)]
    assert len(refused) == 40
    assert outcomes.count(None) == 10
    assert hub.open_streams == 0


async def test_the_watch_use_case_refuses_over_the_process_cap_and_releases_on_cancel() -> None:
    hub = NotificationHub(max_streams_per_user=5, max_streams=2, buffer_size=8)
    uow = FakeIpNotificationsUnitOfWork(hub)
    service = NotificationService(lambda: uow, hub, FakeClock())

    async def watch(user: str, opened: asyncio.Event) -> None:
        async with service.watch(WatchNotifications(user)) as events:
            async for _ in events:
                opened.set()

    opened = [asyncio.Event(), asyncio.Event()]
    watchers = [asyncio.create_task(watch(_user(), event)) for event in opened]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 1)
    with pytest.raises(TooManyStreamsInProcessError):
        async with service.watch(WatchNotifications(_user())):
            pass
    watchers[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await watchers[0]
    async with service.watch(WatchNotifications(_user())) as events:
        await asyncio.wait_for(anext(events), 1)  # the first message: the unread count
        assert hub.open_streams == 2
    watchers[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await watchers[1]
    assert hub.open_streams == 0


def test_the_refusal_maps_to_resource_exhausted_with_its_reason_and_a_retry_delay() -> None:
    code, status = status_for(TooManyStreamsInProcessError(), "vaultpay.wallet")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "another replica" in status.message
    info = error_details_pb2.ErrorInfo()
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("WATCH_CAPACITY_REACHED", "vaultpay.wallet")
    assert status.details[1].Unpack(retry)
    assert retry.retry_delay.seconds >= 1


def test_the_process_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_streams"):
        NotificationHub(max_streams=0)


async def test_a_full_process_warns_once_however_many_it_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Operators learn the cap is reached (scale out or raise it) without a line per call."""
    hub = NotificationHub(max_streams=1)
    async with hub.subscribe(_user()):
        for _ in range(5):
            await _refused_in_process(hub, _user())
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "WALLET_MAX_WATCH_STREAMS" in warnings[0].getMessage()
