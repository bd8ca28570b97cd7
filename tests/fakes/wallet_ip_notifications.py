"""In-memory fakes for the wallet's IP-trust and notification use cases.

`FakeIpNotificationsUnitOfWork` satisfies both `IpTrustUnitOfWork` and
`NotificationUnitOfWork`. Like PostgreSQL's NOTIFY, notifications added in a unit of work
reach the hub only when it commits:

    hub = NotificationHub()
    uow = FakeIpNotificationsUnitOfWork(hub)
    service = NotificationService(lambda: uow, hub, clock)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from tests.fakes.idempotency import FakeIdempotencyRecords
from tests.fakes.outbox import FakeOutbox
from tests.fakes.uow import FakeUnitOfWork
from vaultpay_wallet.adapters.notification_hub import NotificationHub
from vaultpay_wallet.domain.ip_trust import (
    IP_HASH_PREFIX_LENGTH,
    IpConfirmation,
    TrustedIp,
    TrustedIpCursor,
)
from vaultpay_wallet.domain.notifications import Notification, NotificationCursor
from vaultpay_wallet.service_layer.ip_trust import TrustCacheUnavailableError

__all__ = [
    "FakeClock",
    "FakeIpConfirmationRepository",
    "FakeIpNotificationsUnitOfWork",
    "FakeNotificationRepository",
    "FakeTrustedIpCache",
    "FakeTrustedIpRepository",
]


class FakeClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.current = now or datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


class FakeTrustedIpCache:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], datetime] = {}
        self.down = False
        self.lookups = 0

    async def lookup(self, user_id: str, ip_hash: str) -> datetime | None:
        self.lookups += 1
        if self.down:
            raise TrustCacheUnavailableError("connection refused")
        return self.entries.get((user_id, ip_hash))

    async def remember(self, user_id: str, ip_hash: str, expires_at: datetime) -> None:
        if not self.down:
            self.entries[(user_id, ip_hash)] = expires_at

    async def forget(self, user_id: str, ip_hash: str) -> None:
        if not self.down:
            self.entries.pop((user_id, ip_hash), None)


class FakeTrustedIpRepository:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], TrustedIp] = {}

    async def get(self, user_id: str, ip_hash: str) -> TrustedIp | None:
        return self.rows.get((user_id, ip_hash))

    async def save(self, trusted: TrustedIp) -> None:
        self.rows[(trusted.user_id, trusted.ip_hash)] = trusted

    async def touch(self, user_id: str, ip_hash: str, at: datetime) -> None:
        row = self.rows.get((user_id, ip_hash))
        if row is not None and row.last_seen_at < at:
            self.rows[(user_id, ip_hash)] = dataclasses.replace(row, last_seen_at=at)

    async def list(
        self, user_id: str, *, now: datetime, after: TrustedIpCursor | None, limit: int
    ) -> Sequence[TrustedIp]:
        rows = [r for r in self.rows.values() if r.user_id == user_id and r.expires_at > now]
        if after is not None:
            rows = [r for r in rows if (r.first_seen_at, r.ip_hash) < after_key(after)]
        rows.sort(key=lambda r: (r.first_seen_at, r.ip_hash), reverse=True)
        return rows[:limit]

    async def delete_by_public_hash(self, user_id: str, public_hash: str) -> TrustedIp | None:
        for key, row in list(self.rows.items()):
            if row.user_id == user_id and row.ip_hash[:IP_HASH_PREFIX_LENGTH] == public_hash:
                del self.rows[key]
                return row
        return None


def after_key(cursor: TrustedIpCursor) -> tuple[datetime, str]:
    return (cursor.first_seen_at, cursor.public_hash)


class FakeIpConfirmationRepository:
    def __init__(self, trusted: FakeTrustedIpRepository | None = None) -> None:
        self.rows: dict[tuple[str, str], IpConfirmation] = {}
        self._trusted = trusted or FakeTrustedIpRepository()  # the unit's, for the join

    async def issue(self, pending: IpConfirmation, *, window_start: datetime) -> IpConfirmation:
        key = (pending.user_id, pending.ip_hash)
        current = self.rows.get(key)
        if current is None or current.sent_at <= window_start or current.used_at is not None:
            self.rows[key] = pending
            return pending
        return current

    async def get_for_update(self, token_hash: str) -> IpConfirmation | None:
        return next((r for r in self.rows.values() if r.token_hash == token_hash), None)

    async def mark_used(self, token_hash: str, at: datetime) -> None:
        for key, row in self.rows.items():
            if row.token_hash == token_hash:
                self.rows[key] = dataclasses.replace(row, used_at=at)

    async def discard(self, user_id: str, ip_hash: str) -> None:
        self.rows.pop((user_id, ip_hash), None)

    async def awaits_confirmation(self, token_hash: str, now: datetime) -> bool:
        row = next((r for r in self.rows.values() if r.token_hash == token_hash), None)
        if row is None or row.used_at is not None or now >= row.expires_at:
            return False
        trusted = await self._trusted.get(row.user_id, row.ip_hash)
        return trusted is None or not trusted.is_trusted_at(now)


class FakeNotificationRepository:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[Notification, str]] = {}  # id -> (note, dedupe key)
        self.pending: list[Notification] = []  # added in the open unit, told on commit

    async def add(self, note: Notification, dedupe_key: str) -> tuple[Notification, bool]:
        for stored, key in self.rows.values():
            if stored.user_id == note.user_id and key == dedupe_key:
                return stored, False
        self.rows[note.notification_id] = (note, dedupe_key)
        self.pending.append(note)
        return note, True

    async def add_many(
        self, items: Sequence[tuple[Notification, str]]
    ) -> list[tuple[Notification, bool]]:
        return [await self.add(note, key) for note, key in items]

    def all(self, user_id: str | None = None) -> list[Notification]:
        return [n for n, _ in self.rows.values() if user_id is None or n.user_id == user_id]

    async def get(self, user_id: str, notification_id: str) -> Notification | None:
        found = self.rows.get(notification_id)
        return found[0] if found and found[0].user_id == user_id else None

    async def list(
        self, user_id: str, *, unread_only: bool, after: NotificationCursor | None, limit: int
    ) -> Sequence[Notification]:
        notes = [n for n in self.all(user_id) if not (unread_only and n.read)]
        if after is not None:
            notes = [
                n
                for n in notes
                if (n.created_at, n.notification_id) < (after.created_at, after.notification_id)
            ]
        notes.sort(key=lambda n: (n.created_at, n.notification_id), reverse=True)
        return notes[:limit]

    async def count_unread(self, user_id: str) -> int:
        return sum(1 for n in self.all(user_id) if not n.read)

    async def mark_read(self, user_id: str, notification_id: str) -> Notification | None:
        note = await self.get(user_id, notification_id)
        if note is None:
            return None
        read = dataclasses.replace(note, read=True)
        self.rows[notification_id] = (read, self.rows[notification_id][1])
        return read

    async def mark_all_read(self, user_id: str, *, up_to: str | None = None) -> int | None:
        unread = [n for n in self.all(user_id) if not n.read]
        if up_to is not None:
            bound = await self.get(user_id, up_to)
            if bound is None:
                return None
            unread = [
                n
                for n in unread
                if (n.created_at, n.notification_id) <= (bound.created_at, bound.notification_id)
            ]
        for note in unread:
            await self.mark_read(user_id, note.notification_id)
        return len(unread)


class FakeIpNotificationsUnitOfWork(FakeUnitOfWork):
    def __init__(self, hub: NotificationHub | None = None) -> None:
        super().__init__()
        self.trusted_ips = FakeTrustedIpRepository()
        self.ip_tokens = FakeIpConfirmationRepository(self.trusted_ips)
        self.notifications = FakeNotificationRepository()
        self.outbox = FakeOutbox(producer="wallet")
        self.idempotency = FakeIdempotencyRecords()
        self._hub = hub

    def _state_holders(self) -> list[object]:
        return [
            self.trusted_ips,
            self.ip_tokens,
            self.notifications,
            self.outbox,
            self.idempotency,
        ]

    async def commit(self) -> None:
        told, self.notifications.pending = self.notifications.pending, []
        await super().commit()
        if self._hub is not None:
            for note in told:
                self._hub.publish(note)
