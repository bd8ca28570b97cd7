"""Notification use cases: the inbox (list, count, mark read), creation and live watching.

Fan-out works across replicas without a publish step in the use case: the repository's
`add` raises a PostgreSQL NOTIFY in the same transaction as the INSERT, and PostgreSQL
delivers it only when (and if) that transaction commits, to the listener of every replica,
which hands it to its in-process hub. So "published after commit" holds by construction,
a rolled-back insert notifies no one, and any writer that adds through the repository (the
IP-trust use cases, the wallet core) reaches watchers too. A batch (`create_notifications`,
what transfer's outbox relay sends) is one transaction and three statements whatever
its size: insert all, read those that existed, notify the new ones.

Watching subscribes *before* it reads the unread count, so a notification committed in
between is counted and also streamed (never missed; at worst counted in the first message
too).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from vaultpay_common.clock import Clock
from vaultpay_common.errors import FieldViolation, ValidationError
from vaultpay_common.idempotency.codec import DataclassCodec
from vaultpay_common.idempotency.model import IdempotencyKey, IdempotencyRecords
from vaultpay_common.idempotency.service import run_once
from vaultpay_common.pagination import page_size
from vaultpay_wallet.domain.notifications import (
    Notification,
    NotificationCursor,
    NotificationKind,
    NotificationNotFoundError,
    canonical_uuid,
    check_dedupe_key,
    new_notification,
)

__all__ = [
    "MAX_NOTIFICATIONS_PER_BATCH",
    "CreateNotification",
    "CreatedNotification",
    "GetUnreadCount",
    "ListNotifications",
    "MarkAllNotificationsRead",
    "MarkNotificationRead",
    "MarkedAllRead",
    "MarkedRead",
    "NotificationPage",
    "NotificationRepository",
    "NotificationService",
    "NotificationSubscriptions",
    "NotificationUnitOfWork",
    "WatchEvent",
    "WatchNotifications",
    "check_batch_size",
]

# Items of one CreateNotifications call: one transaction, one NOTIFY statement.
MAX_NOTIFICATIONS_PER_BATCH = 100


def check_batch_size(count: int) -> None:
    """A CreateNotifications batch holds 1 to MAX_NOTIFICATIONS_PER_BATCH items: judged on the
    count alone, so the entrypoint refuses a longer one before it parses any item (an empty
    item is two bytes: a 4 MiB request holds two million)."""
    if not 1 <= count <= MAX_NOTIFICATIONS_PER_BATCH:
        raise ValidationError.single(
            "notifications", f"must hold 1 to {MAX_NOTIFICATIONS_PER_BATCH} items"
        )


class NotificationRepository(Protocol):
    async def add(self, note: Notification, dedupe_key: str) -> tuple[Notification, bool]:
        """Inserts unless (user, dedupe_key) exists. Returns the stored notification and
        whether this call created it; watchers hear of it when the transaction commits."""
        ...

    async def add_many(
        self, items: Sequence[tuple[Notification, str]]
    ) -> list[tuple[Notification, bool]]:
        """`add` for each (notification, dedupe key), in a few statements whatever the count:
        one result per item, in order. An item whose (user, key) exists, or appeared earlier
        in `items`, returns the stored (or first) notification and False."""
        ...

    async def get(self, user_id: str, notification_id: str) -> Notification | None: ...

    async def list(
        self, user_id: str, *, unread_only: bool, after: NotificationCursor | None, limit: int
    ) -> Sequence[Notification]:
        """Newest first (created_at, id descending), strictly after `after`."""
        ...

    async def count_unread(self, user_id: str) -> int: ...

    async def mark_read(self, user_id: str, notification_id: str) -> Notification | None:
        """Marks it read (no-op when already read); None when not this user's."""
        ...

    async def mark_all_read(self, user_id: str, *, up_to: str | None = None) -> int | None:
        """Marks the user's unread notifications read, with `up_to` (a notification id) only
        those at or before it in `list`'s order (created_at, id), in one statement. Returns
        how many changed from unread to read; None when `up_to` is not this user's."""
        ...


class NotificationUnitOfWork(Protocol):
    @property
    def notifications(self) -> NotificationRepository: ...
    @property
    def idempotency(self) -> IdempotencyRecords: ...

    async def commit(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class NotificationSubscriptions(Protocol):
    """The in-process hub (adapters.notification_hub.NotificationHub)."""

    def subscribe(self, user_id: str) -> AbstractAsyncContextManager[AsyncIterator[Notification]]:
        """Raises TooManyStreamsError over the per-user cap, TooManyStreamsInProcessError over
        the process's. The iterator ends when the hub closes (shutdown) and raises a stream
        error on overflow or a lost feed."""
        ...


@dataclass(frozen=True, slots=True)
class CreateNotification:
    """Internal: from the `notification.create` outbox relay or the CreateNotification RPC.
    `dedupe_key` is the event id (the RPC's request_id): a second delivery returns the first."""

    dedupe_key: str
    user_id: str
    kind: NotificationKind | str
    title: str
    body: str


@dataclass(frozen=True, slots=True)
class CreatedNotification:
    notification: Notification
    created: bool  # False: the event was already delivered; this is the first notification


@dataclass(frozen=True, slots=True)
class ListNotifications:
    user_id: str  # the caller
    page_size: int = 0  # 0 means the default (50); capped at 100
    unread_only: bool = False
    after: NotificationCursor | None = None


@dataclass(frozen=True, slots=True)
class NotificationPage:
    items: tuple[Notification, ...]
    has_more: bool

    @property
    def next_cursor(self) -> NotificationCursor | None:
        return NotificationCursor.after(self.items[-1]) if self.has_more else None


@dataclass(frozen=True, slots=True)
class GetUnreadCount:
    user_id: str


@dataclass(frozen=True, slots=True)
class MarkNotificationRead:
    user_id: str  # the caller; only their own notifications
    notification_id: str
    idempotency: IdempotencyKey | None = None


@dataclass(frozen=True, slots=True)
class MarkedRead:
    notification: Notification


@dataclass(frozen=True, slots=True)
class MarkAllNotificationsRead:
    """Marks the caller's unread notifications read. With `up_to_notification_id` (the newest
    notification the client has shown), only those at or before it in ListNotifications's
    order (created_at, then id): one that arrived after the client's view stays unread. ""
    marks every unread one. A bound that is not the caller's is NOT_FOUND."""

    user_id: str
    idempotency: IdempotencyKey | None = None
    up_to_notification_id: str = ""


@dataclass(frozen=True, slots=True)
class MarkedAllRead:
    marked_count: int


@dataclass(frozen=True, slots=True)
class WatchNotifications:
    user_id: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One stream message: the first has no notification, only the unread count."""

    notification: Notification | None
    unread_count: int


_MARKED_READ = DataclassCodec(MarkedRead)
_MARKED_ALL_READ = DataclassCodec(MarkedAllRead)


class NotificationService:
    def __init__(
        self,
        uow: Callable[[], NotificationUnitOfWork],
        hub: NotificationSubscriptions,
        clock: Clock,
    ) -> None:
        self._uow = uow
        self._hub = hub
        self._clock = clock

    async def create_notification(self, command: CreateNotification) -> CreatedNotification:
        note, dedupe_key = _validated(command, self._clock.now())
        async with self._uow() as uow:
            stored, created = await uow.notifications.add(note, dedupe_key)
            await uow.commit()
        return CreatedNotification(stored, created)

    async def create_notifications(
        self, commands: Sequence[CreateNotification]
    ) -> list[CreatedNotification]:
        """CreateNotification for each command, in one transaction: all or nothing. Every item
        is validated first; the violations of all of them are reported at once, each field
        named `notifications[i].<field>`. Results are in command order."""
        check_batch_size(len(commands))
        now = self._clock.now()
        items: list[tuple[Notification, str]] = []
        violations: list[FieldViolation] = []
        for index, command in enumerate(commands):
            try:
                # Each item a microsecond after the one before: an inbox lists newest first by
                # (created_at, id), and one time for all would order a batch by its random ids.
                items.append(_validated(command, now + timedelta(microseconds=index)))
            except ValidationError as exc:
                violations += [
                    FieldViolation(f"notifications[{index}].{v.field}", v.description)
                    for v in exc.violations
                ]
        if violations:
            raise ValidationError(violations)
        async with self._uow() as uow:
            stored = await uow.notifications.add_many(items)
            await uow.commit()
        return [CreatedNotification(note, created) for note, created in stored]

    async def list_notifications(self, query: ListNotifications) -> NotificationPage:
        user_id = canonical_uuid(query.user_id, "user_id")
        limit = page_size(query.page_size)
        async with self._uow() as uow:
            rows = await uow.notifications.list(
                user_id, unread_only=query.unread_only, after=query.after, limit=limit + 1
            )
        return NotificationPage(tuple(rows[:limit]), len(rows) > limit)

    async def get_unread_count(self, query: GetUnreadCount) -> int:
        user_id = canonical_uuid(query.user_id, "user_id")
        async with self._uow() as uow:
            return await uow.notifications.count_unread(user_id)

    async def mark_read(self, command: MarkNotificationRead) -> MarkedRead:
        user_id = canonical_uuid(command.user_id, "user_id")
        notification_id = canonical_uuid(command.notification_id, "notification_id")

        async with self._uow() as uow:

            async def work() -> MarkedRead:
                note = await uow.notifications.mark_read(user_id, notification_id)
                if note is None:
                    raise NotificationNotFoundError()
                return MarkedRead(note)

            return await run_once(uow, command.idempotency, _MARKED_READ, work)

    async def mark_all_read(self, command: MarkAllNotificationsRead) -> MarkedAllRead:
        user_id = canonical_uuid(command.user_id, "user_id")
        up_to = (
            canonical_uuid(command.up_to_notification_id, "up_to_notification_id")
            if command.up_to_notification_id
            else None
        )
        async with self._uow() as uow:

            async def work() -> MarkedAllRead:
                marked = await uow.notifications.mark_all_read(user_id, up_to=up_to)
                if marked is None:  # the bound is missing, deleted or another user's
                    raise NotificationNotFoundError("no such notification: up_to_notification_id")
                return MarkedAllRead(marked)

            return await run_once(uow, command.idempotency, _MARKED_ALL_READ, work)

    @asynccontextmanager
    async def watch(self, query: WatchNotifications) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """The stream of one watcher, as a context so the subscription is always released:

            async with service.watch(WatchNotifications(user_id)) as events:
                async for event in events:
                    yield to_proto(event)

        Raises TooManyStreamsError on entry over the per-user cap, TooManyStreamsInProcessError
        over the process's. Ends cleanly when the hub
        closes; raises NotificationStreamOverflowError / NotificationStreamInterruptedError
        when the watcher fell behind or the feed was lost (the client re-opens).
        """
        user_id = canonical_uuid(query.user_id, "user_id")
        async with self._hub.subscribe(user_id) as subscription:
            # Subscribed first: anything committed from here on is both counted and streamed.
            first = WatchEvent(None, await self._unread_count(user_id))
            yield self._events(user_id, first, subscription)

    async def _events(
        self, user_id: str, first: WatchEvent, subscription: AsyncIterator[Notification]
    ) -> AsyncIterator[WatchEvent]:
        yield first
        async for note in subscription:
            yield WatchEvent(note, await self._unread_count(user_id))

    async def _unread_count(self, user_id: str) -> int:
        async with self._uow() as uow:
            return await uow.notifications.count_unread(user_id)


def _validated(command: CreateNotification, now: datetime) -> tuple[Notification, str]:
    """The new notification and its dedupe key, or every bad field of the command at once."""
    violations: list[FieldViolation] = []
    dedupe_key = ""
    try:
        dedupe_key = check_dedupe_key(command.dedupe_key)
    except ValidationError as exc:
        violations += exc.violations
    try:
        note = new_notification(
            notification_id=str(uuid.uuid4()),
            user_id=command.user_id,
            kind=command.kind,
            title=command.title,
            body=command.body,
            now=now,
        )
    except ValidationError as exc:
        violations += exc.violations
    if violations:
        raise ValidationError(violations)
    return note, dedupe_key
