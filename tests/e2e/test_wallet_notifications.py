"""Notifications end to end: a peer service delivers them (native gRPC, service identity,
idempotent by event id), the owner reads the inbox through the gateway (JSON) and watches it
live through Envoy, both as native gRPC and as NDJSON over HTTP/1.1."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from tests.e2e.conftest import Gateway
from tests.e2e.wallet_support import (
    Person,
    bearer,
    gateway_grpc_address,
    new_person,
    rid,
    service_token,
)
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_devstack.mesh import Mesh

# The contract says watchers are told "at once"; the acceptance bound is one second from the
# CreateNotification call (the path is commit -> NOTIFY -> listener -> hub -> Envoy).
DELIVERY_BOUND_S = 1.0
# How long the test waits for anything at all before it gives up (the bound is asserted apart).
PATIENCE_S = 10.0


class Notifier:
    """What a peer service (or the outbox relay) does: WalletInternalService.CreateNotification."""

    def __init__(self, stub: wallet_pb2_grpc.WalletInternalServiceStub, token: str) -> None:
        self._stub = stub
        self._token = token

    async def notify(
        self, person: Person, event_id: str, title: str
    ) -> wallet_pb2.CreateNotificationResponse:
        request = wallet_pb2.CreateNotificationRequest(
            request_id=event_id,
            user_id=person.user_id,
            kind=wallet_pb2.NOTIFICATION_KIND_MONEY_RECEIVED,
            title=title,
            body=f"{title}: INR 250.00 from VPY-E2E001.",
        )
        reply: wallet_pb2.CreateNotificationResponse = await self._stub.CreateNotification(
            request, metadata=bearer(self._token), timeout=10
        )
        return reply


@pytest.fixture
async def notifier(mesh: Mesh) -> AsyncIterator[Notifier]:
    token = await service_token(mesh, "transfer", to="wallet")
    async with grpc.aio.insecure_channel(mesh.grpc_address("wallet")) as channel:
        yield Notifier(wallet_pb2_grpc.WalletInternalServiceStub(channel), token)


@dataclass
class Received:
    """What one watcher saw: (monotonic arrival time, unread count, notification id or "")."""

    messages: list[tuple[float, int, str]] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def notifications(self) -> list[tuple[float, str]]:
        return [(at, note_id) for at, _count, note_id in self.messages if note_id]

    def count(self) -> int:
        return len(self.notifications)


class JsonWatcher:
    """GET /v1/notifications:watch through Envoy, read line by line (NDJSON) as it arrives."""

    def __init__(self, mesh: Mesh, token: str, *, stop_after: int) -> None:
        host, port = mesh.gateway_url.removeprefix("http://").rsplit(":", 1)
        self._connection = http.client.HTTPConnection(host, int(port), timeout=PATIENCE_S)
        self._token = token
        self._stop_after = stop_after
        self.status = 0
        self.content_type = ""
        self.received = Received()
        self._thread = threading.Thread(target=self._run, name="json-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(PATIENCE_S + 5)
        self._connection.close()
        assert not self._thread.is_alive(), "the JSON watcher did not finish"

    def _run(self) -> None:
        try:
            self._connection.request(
                "GET",
                "/v1/notifications:watch",
                headers={"authorization": f"Bearer {self._token}", "accept": "application/json"},
            )
            response = self._connection.getresponse()
            self.status = response.status
            self.content_type = response.getheader("content-type", "")
            if response.status != 200:
                return
            while self.received.count() < self._stop_after:
                line = response.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                message: dict[str, Any] = json.loads(line)
                note_id = str(message.get("notification", {}).get("notificationId", ""))
                unread = int(message.get("unreadCount", 0))
                self.received.messages.append((time.monotonic(), unread, note_id))
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.received.error = exc


async def _watch_grpc(
    stream: grpc.aio.UnaryStreamCall, received: Received, stop_after: int
) -> None:
    async for message in stream:
        note_id = message.notification.notification_id if message.HasField("notification") else ""
        received.messages.append((time.monotonic(), message.unread_count, note_id))
        if received.count() >= stop_after:
            return


async def _until(condition: Any, what: str, within: float = PATIENCE_S) -> None:
    """Polls `condition()` with a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _inbox(gateway: Gateway, person: Person, query: str = "") -> list[dict[str, Any]]:
    reply = person.call(gateway, "GET", f"/v1/notifications{query}")
    assert reply.status == 200, reply.body
    notes: list[dict[str, Any]] = reply.body.get("notifications", [])
    return notes


def _unread(gateway: Gateway, person: Person) -> int:
    reply = person.call(gateway, "GET", "/v1/notifications/unread-count")
    assert reply.status == 200, reply.body
    return int(reply.body.get("unreadCount", 0))


async def test_a_redelivered_event_is_one_notification_that_both_watchers_get_at_once(
    gateway: Gateway, mesh: Mesh, notifier: Notifier
) -> None:
    person = new_person(gateway, wallet=False)
    start_count = _unread(gateway, person)
    expected = 2  # the event (delivered twice) and one later event

    json_watcher = JsonWatcher(mesh, person.token, stop_after=expected)
    json_watcher.start()
    grpc_seen = Received()
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        stream = wallet_pb2_grpc.WalletServiceStub(channel).WatchNotifications(
            wallet_pb2.WatchNotificationsRequest(), metadata=bearer(person.token)
        )
        grpc_task = asyncio.create_task(_watch_grpc(stream, grpc_seen, expected))
        try:
            # Both streams are open once their first message (the badge count) is in.
            await _until(lambda: bool(grpc_seen.messages), "the gRPC watcher's first message")
            await _until(
                lambda: bool(json_watcher.received.messages) or json_watcher.status not in (0, 200),
                "the JSON watcher's first message",
            )
            assert json_watcher.status == 200, json_watcher.status
            assert json_watcher.content_type.startswith("application/"), json_watcher.content_type
            for seen in (grpc_seen, json_watcher.received):
                assert seen.messages[0][1:] == (start_count, ""), seen.messages

            event_id = rid()
            created_at = time.monotonic()
            first = await notifier.notify(person, event_id, "Money received")
            redelivered = await notifier.notify(person, event_id, "Money received (again)")
            note_id = first.notification.notification_id
            assert redelivered.notification.notification_id == note_id
            assert redelivered.notification.title == "Money received"

            await _until(
                lambda: grpc_seen.count() >= 1 and json_watcher.received.count() >= 1,
                "the notification on both watchers",
            )
            # A later event: if the redelivery had notified anyone, it would arrive before this.
            later = await notifier.notify(person, rid(), "Money received later")
            await _until(
                lambda: grpc_seen.count() >= expected and json_watcher.received.count() >= expected,
                "the later notification on both watchers",
            )
            await asyncio.wait_for(grpc_task, PATIENCE_S)
        finally:
            grpc_task.cancel()
            stream.cancel()
    json_watcher.join()
    assert json_watcher.received.error is None, json_watcher.received.error
    assert grpc_task.exception() is None

    later_id = later.notification.notification_id
    for name, seen in (("gRPC", grpc_seen), ("JSON", json_watcher.received)):
        assert [i for _at, i in seen.notifications] == [note_id, later_id], (name, seen)
        lag = seen.notifications[0][0] - created_at
        assert lag < DELIVERY_BOUND_S, f"{name} watcher got it {lag:.3f} s after the create call"
        counts = [count for _at, count, i in seen.messages if i]
        assert counts == [start_count + 1, start_count + 2], (name, seen.messages)

    inbox = _inbox(gateway, person)
    assert [n["notificationId"] for n in inbox] == [later_id, note_id]  # newest first, once each
    assert inbox[1]["title"] == "Money received"
    assert inbox[1]["kind"] == "NOTIFICATION_KIND_MONEY_RECEIVED"
    assert inbox[1]["read"] is False


async def test_read_marks_are_per_owner_and_the_unread_count_follows(
    gateway: Gateway, notifier: Notifier
) -> None:
    owner, stranger = new_person(gateway, wallet=False), new_person(gateway, wallet=False)
    base = _unread(gateway, owner)
    ids = [
        (await notifier.notify(owner, rid(), f"Payment {n}")).notification.notification_id
        for n in range(3)
    ]
    assert _unread(gateway, owner) == base + 3

    path = f"/v1/notifications/{ids[0]}:markRead"
    theirs = stranger.call(gateway, "POST", path, {"requestId": rid()})
    assert theirs.status == 404, theirs.body
    assert theirs.error_reason() == "NOTIFICATION_NOT_FOUND"
    missing = stranger.call(
        gateway, "POST", f"/v1/notifications/{rid()}:markRead", {"requestId": rid()}
    )
    assert (missing.status, missing.error_reason()) == (404, "NOTIFICATION_NOT_FOUND")
    assert _unread(gateway, owner) == base + 3, "the stranger's attempt changed nothing"
    assert _inbox(gateway, stranger) == []

    marked = owner.call(gateway, "POST", path, {"requestId": rid()})
    assert marked.status == 200, marked.body
    assert marked.body["notification"]["notificationId"] == ids[0]
    assert marked.body["notification"]["read"] is True
    assert _unread(gateway, owner) == base + 2
    again = owner.call(gateway, "POST", path, {"requestId": rid()})
    assert again.status == 200 and again.body["notification"]["read"] is True, again.body
    assert _unread(gateway, owner) == base + 2

    unread_ids = {n["notificationId"] for n in _inbox(gateway, owner, "?unreadOnly=true")}
    assert {ids[1], ids[2]} <= unread_ids and ids[0] not in unread_ids

    all_read = owner.call(gateway, "POST", "/v1/notifications:markAllRead", {"requestId": rid()})
    assert all_read.status == 200, all_read.body
    assert all_read.body["markedCount"] == base + 2
    assert _unread(gateway, owner) == 0
    assert _inbox(gateway, owner, "?unreadOnly=true") == []
    assert all(n["read"] is True for n in _inbox(gateway, owner))
    nothing = owner.call(gateway, "POST", "/v1/notifications:markAllRead", {"requestId": rid()})
    assert nothing.status == 200 and nothing.body.get("markedCount", 0) == 0, nothing.body


async def test_mark_all_read_up_to_the_shown_list_leaves_a_later_arrival_unread(
    gateway: Gateway, notifier: Notifier
) -> None:
    """The app lists the inbox, a notification arrives, the user taps "mark all read": with
    the newest notification shown as the bound, the one that arrived after stays unread."""
    owner, stranger = new_person(gateway, wallet=False), new_person(gateway, wallet=False)
    for n in range(2):
        await notifier.notify(owner, rid(), f"Seen {n}")
    shown = _inbox(gateway, owner)
    unread_shown = sum(1 for n in shown if not n.get("read"))
    late = (await notifier.notify(owner, rid(), "Arrived after the list")).notification
    theirs = (await notifier.notify(stranger, rid(), "Theirs")).notification

    def mark_all(bound: str) -> Any:
        body = {"requestId": rid(), "upToNotificationId": bound}
        return owner.call(gateway, "POST", "/v1/notifications:markAllRead", body)

    refused = mark_all(theirs.notification_id)
    assert (refused.status, refused.error_reason()) == (404, "NOTIFICATION_NOT_FOUND")
    malformed = mark_all("not-a-uuid")
    assert malformed.status == 400, malformed.body
    assert malformed.field_violations() == ["upToNotificationId"]  # JSON names its own spelling
    assert _unread(gateway, owner) == unread_shown + 1, "the refused calls marked nothing"

    marked = mark_all(shown[0]["notificationId"])
    assert marked.status == 200, marked.body
    assert marked.body["markedCount"] == unread_shown
    unread = _inbox(gateway, owner, "?unreadOnly=true")
    assert [n["notificationId"] for n in unread] == [late.notification_id]
    assert _unread(gateway, owner) == 1
    assert [n["notificationId"] for n in _inbox(gateway, stranger, "?unreadOnly=true")] == [
        theirs.notification_id
    ]


async def test_a_watch_whose_deadline_passes_ends_deadline_exceeded_through_the_gateway(
    gateway: Gateway, mesh: Mesh
) -> None:
    """A gRPC client's deadline on the stream: the gateway reset the started stream when it
    came (Envoy enforced grpc-timeout too), which the client read as INTERNAL."""
    person = new_person(gateway, wallet=False)
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        stream = wallet_pb2_grpc.WalletServiceStub(channel).WatchNotifications(
            wallet_pb2.WatchNotificationsRequest(), metadata=bearer(person.token), timeout=2
        )
        first = await stream.read()  # the badge count: the reply has started
        assert isinstance(first, wallet_pb2.WatchNotificationsResponse)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await stream.read()
    assert ended.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, ended.value
