"""Live notifications: an in-process hub of watchers, fed by PostgreSQL LISTEN.

Across replicas: each wallet process runs one `PgNotificationListener` (a dedicated asyncpg
connection doing `LISTEN wallet_notifications`) that hands every committed notification, from
whichever replica created it, to its own `NotificationHub`. The hub hands it to that
process's watchers of the notification's user.

A NOTIFY only names a notification (any role of the shared database may notify on the
channel: `notifications_sql`). For a user with a watcher here, the listener reads the named
notifications from the table on the same connection, a batch per read, in the order they
were told, and delivers those that exist for that user; a name the table does not hold for
that user (a forged NOTIFY) is dropped with a WARNING. Users without a watcher here cost no
read. If one user's reads fall `max_pending_per_user` behind (a NOTIFY storm naming them),
their streams end; if all fall `max_pending` behind, or a read fails, every stream ends
(UNAVAILABLE: re-open and list; while the connection is down new streams wait for it).

Per watcher, a bounded buffer: `publish` never waits, so one slow client cannot hold up the
others or the listener. When a watcher's buffer is full its stream ends with
NotificationStreamOverflowError (ABORTED): the client re-opens it, gets the unread count in
the first message and lists to catch up (the inbox has everything). Chosen over silently
dropping with a resync marker because the contract has no such marker.

If the listener loses its connection, notifications may have been missed: every open stream
ends with NotificationStreamInterruptedError (UNAVAILABLE), and new streams are refused the
same way until LISTEN is back, so clients retry with backoff.

Two caps on open streams, both per process: `max_streams_per_user` (TooManyStreamsError:
the user closes one) and `max_streams` for every user together
(TooManyStreamsInProcessError: retry later, maybe on another replica), so many accounts
with a few streams each cannot hold an unbounded number of them in one process. A stream
counts from the moment it is accepted until its `subscribe` block is left, however it
ends (cleanly, cancelled by its client, overflowed or interrupted).

Start and stop with the server (graceful shutdown ends every stream cleanly):

    hub = NotificationHub(max_streams_per_user=5, max_streams=10_000)
    listener = PgNotificationListener(settings.database_url, hub)
    await listener.start()
    ...
    hub.close()          # streams end (OK) before server.stop(grace)
    await listener.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from vaultpay_common.db import asyncpg_dsn
from vaultpay_common.errors import DomainError
from vaultpay_wallet.adapters.notifications_sql import (
    LIVE_READ,
    NOTIFY_CHANNEL,
    NotifiedRef,
    decode_notify_payload,
    note_from_record,
)
from vaultpay_wallet.domain.notifications import (
    Notification,
    NotificationStreamInterruptedError,
    NotificationStreamOverflowError,
    TooManyStreamsError,
    TooManyStreamsInProcessError,
)

__all__ = ["NotificationHub", "PgNotificationListener"]

log = logging.getLogger(__name__)

# At most one WARNING this often while the process cap refuses streams (each refusal is
# logged anyway, at INFO, by the error interceptor).
_FULL_WARNING_INTERVAL_SECONDS = 60.0


class _Subscription:
    """One watcher's buffer; iterating it waits for the next notification."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: deque[Notification] = deque()
        self._wakeup = asyncio.Event()
        self._ended = False
        self._error: DomainError | None = None

    def offer(self, note: Notification) -> None:
        if self._ended:
            return
        if len(self._items) >= self._capacity:
            self.fail(NotificationStreamOverflowError())
            return
        self._items.append(note)
        self._wakeup.set()

    def end(self) -> None:
        """Shutdown: deliver what is buffered, then stop cleanly."""
        self._ended = True
        self._wakeup.set()

    def fail(self, error: DomainError) -> None:
        if self._ended:
            return
        self._ended = True
        self._items.clear()
        self._error = error
        self._wakeup.set()

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Notification:
        while True:
            if self._items:
                return self._items.popleft()
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._ended:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()


class NotificationHub:
    """Watchers of this process, by user. All methods run on the event loop's thread."""

    def __init__(
        self, *, max_streams_per_user: int = 5, max_streams: int = 10_000, buffer_size: int = 512
    ) -> None:
        """`buffer_size`: each stream's buffer, at least the listener's `max_pending_per_user`
        (500): with 100, one listener batch (up to 200, delivered without a pause) of a
        merchant's payments ended every stream of theirs before its client read one (review of
        2026-12-05). A sustained flood still overflows a stream that cannot keep pace (each
        message costs it an unread count and a write): there is no backpressure (noted)."""
        if min(max_streams_per_user, max_streams, buffer_size) < 1:
            raise ValueError("max_streams_per_user, max_streams and buffer_size must be positive")
        self._max_streams_per_user = max_streams_per_user
        self._max_streams = max_streams
        self._buffer_size = buffer_size
        self._by_user: dict[str, set[_Subscription]] = {}
        self._open = 0  # the sizes of `_by_user`'s sets, summed
        self._full_warned_at: float | None = None
        self._closed = False
        self._feed_up = True

    @asynccontextmanager
    async def subscribe(self, user_id: str) -> AsyncIterator[AsyncIterator[Notification]]:
        """Raises TooManyStreamsError over the per-user cap, TooManyStreamsInProcessError
        over the cap of the whole process (both per process; each replica enforces its own),
        NotificationStreamInterruptedError while closed or without feed.

        Checked and counted with no `await` in between, so concurrent calls cannot overshoot
        a cap; released when the block is left, however the stream ended."""
        if self._closed or not self._feed_up:
            raise NotificationStreamInterruptedError()
        if len(self._by_user.get(user_id, ())) >= self._max_streams_per_user:
            raise TooManyStreamsError(
                f"at most {self._max_streams_per_user} notification streams per user",
                metadata={"max_streams": str(self._max_streams_per_user)},
            )
        if self._open >= self._max_streams:
            self._warn_full()
            raise TooManyStreamsInProcessError()
        subscription = _Subscription(self._buffer_size)
        watchers = self._by_user.setdefault(user_id, set())
        watchers.add(subscription)
        self._open += 1
        try:
            yield subscription
        finally:
            watchers.discard(subscription)
            self._open -= 1
            if not watchers:
                self._by_user.pop(user_id, None)

    def _warn_full(self) -> None:
        now = time.monotonic()
        last = self._full_warned_at
        if last is not None and now - last < _FULL_WARNING_INTERVAL_SECONDS:
            return
        self._full_warned_at = now
        log.warning(
            "this process holds %d notification streams, its cap (WALLET_MAX_WATCH_STREAMS):"
            " new ones are refused until some close",
            self._open,
        )

    def publish(self, note: Notification) -> None:
        """Never waits: a full watcher is failed instead (see the module docstring)."""
        for subscription in tuple(self._by_user.get(note.user_id, ())):
            subscription.offer(note)

    @property
    def accepting(self) -> bool:
        """Whether new streams are accepted (not closed, feed up)."""
        return not self._closed and self._feed_up

    def stream_count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    @property
    def open_streams(self) -> int:
        """Streams open in this process, every user's (what `max_streams` caps)."""
        return self._open

    def interrupt_user(self, user_id: str) -> None:
        """Notifications of one user may have been missed: their streams end (UNAVAILABLE)."""
        for subscription in tuple(self._by_user.get(user_id, ())):
            subscription.fail(NotificationStreamInterruptedError())

    def interrupt(self) -> None:
        """Notifications may have been missed but the feed is up: every open stream ends
        (UNAVAILABLE, its client re-opens and lists), new ones are accepted."""
        self.feed_lost()
        self.feed_restored()

    def feed_lost(self) -> None:
        """The feed may have missed notifications: end every stream, refuse new ones."""
        self._feed_up = False
        for subscription in self._all():
            subscription.fail(NotificationStreamInterruptedError())

    def feed_restored(self) -> None:
        self._feed_up = True

    def close(self) -> None:
        """Graceful shutdown: every stream ends cleanly; new ones are refused."""
        self._closed = True
        for subscription in self._all():
            subscription.end()

    def _all(self) -> list[_Subscription]:
        return [s for watchers in self._by_user.values() for s in watchers]


# A LISTEN link up this long has recovered: the reconnection backoff starts over after it.
_STABLE_LINK_SECONDS = 30.0


class PgNotificationListener:
    """One LISTEN connection, reconnected with backoff, probed so a dead link is noticed."""

    def __init__(
        self,
        database_url: str,
        hub: NotificationHub,
        *,
        channel: str = NOTIFY_CHANNEL,
        probe_interval: float = 1.0,
        probe_timeout: float = 3.0,
        connect_timeout: float = 5.0,
        max_backoff: float = 10.0,
        max_pending: int = 10_000,
        max_pending_per_user: int = 500,
        read_batch: int = 200,
    ) -> None:
        if min(max_pending, max_pending_per_user, read_batch) < 1:
            raise ValueError("max_pending(_per_user) and read_batch must be positive")
        # The engines' conversion: the URL's TLS options mean the same here (asyncpg made
        # `ssl=` a server setting, which PostgreSQL refused at login).
        self._dsn = asyncpg_dsn(database_url)
        self._hub = hub
        self._channel = channel
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._max_pending = max_pending
        self._read_batch = read_batch
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Told, not yet read: for users with a watcher here, in the order told.
        self._pending: deque[NotifiedRef] = deque()
        self._queued: Counter[str] = Counter()  # in `_pending`, by user
        self._max_pending_per_user = max_pending_per_user
        self._told = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._using_conn = asyncio.Lock()  # one operation at a time on the connection

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Connects and LISTENs before returning (fails fast on a bad DSN at start-up)."""
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="notification-listener")
        self._reader = asyncio.create_task(self._read_told(), name="notification-reader")

    async def stop(self) -> None:
        for task in (self._reader, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._reader = None
        await self._disconnect()

    async def _connect(self) -> None:
        """Connects and LISTENs, each within `connect_timeout`: the LISTEN ran with no bound,
        so a link that went silent between the connect and its reply held the reconnection
        (and every watch of the replica, refused meanwhile) until the kernel gave up, about
        15 minutes (review of 2026-12-05). A connection that fails after it opened is cut."""
        self._lost.clear()
        conn = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={"application_name": "vaultpay-wallet-notification-listener"},
        )
        try:
            conn.add_termination_listener(lambda _conn: self._lost.set())
            async with asyncio.timeout(self._connect_timeout):
                await conn.add_listener(self._channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._hub.feed_restored()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            told = decode_notify_payload(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored an unreadable notification payload")
            return
        if not self._hub.stream_count(told.user_id):
            return  # nobody here watches this user: nothing to read
        if self._queued[told.user_id] >= self._max_pending_per_user:
            # One user's flood (a NOTIFY storm naming them) ends their streams alone.
            log.warning("live notifications of one user fell behind; their streams end")
            self._drop_user(told.user_id)
            return
        if len(self._pending) >= self._max_pending:
            log.warning(
                "live notifications fell %d behind; every stream ends and its client catches"
                " up by listing",
                len(self._pending),
            )
            self._clear_pending()
            self._hub.interrupt()
            return
        self._pending.append(told)
        self._queued[told.user_id] += 1
        self._told.set()

    def _clear_pending(self) -> None:
        self._pending.clear()
        self._queued.clear()

    def _drop_user(self, user_id: str) -> None:
        self._pending = deque(told for told in self._pending if told.user_id != user_id)
        self._queued.pop(user_id, None)
        self._hub.interrupt_user(user_id)

    def _take_batch(self) -> list[NotifiedRef]:
        batch: list[NotifiedRef] = []
        while self._pending and len(batch) < self._read_batch:
            told = self._pending.popleft()
            self._queued[told.user_id] -= 1
            if self._queued[told.user_id] <= 0:
                del self._queued[told.user_id]
            batch.append(told)
        return batch

    async def _read_told(self) -> None:
        """Reads and delivers what `_on_notify` queued, a batch per read, in order."""
        while True:
            await self._told.wait()
            self._told.clear()
            while self._pending:
                batch = self._take_batch()
                try:
                    self._deliver(batch, await self._read(batch))
                    await asyncio.sleep(0)  # the streams write before the next batch lands
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    log.warning("could not read notifications to deliver live", exc_info=True)
                    self._clear_pending()
                    if self.listening:
                        self._hub.interrupt()
                    else:  # the supervisor reconnects, then opens the feed again
                        self._hub.feed_lost()
                except Exception:
                    # Nothing restarts this task: a batch it cannot deliver ends the streams
                    # (their clients catch up by listing), never the live feed itself.
                    log.exception("could not deliver notifications live; streams end")
                    self._clear_pending()
                    self._hub.interrupt()

    async def _read(self, batch: list[NotifiedRef]) -> dict[str, asyncpg.Record]:
        async with self._using_conn, asyncio.timeout(5):
            if not self.listening:
                raise ConnectionResetError("the notification listener has no connection")
            rows = await self._conn.fetch(LIVE_READ, [told.notification_id for told in batch])
        return {row["id"]: row for row in rows}

    def _deliver(self, batch: list[NotifiedRef], found: dict[str, asyncpg.Record]) -> None:
        dropped = unknown = 0
        for told in batch:
            row = found.get(told.notification_id)
            if row is None or row["user_id"] != told.user_id:
                dropped += 1
                continue
            try:
                note = note_from_record(row)
            except KeyError:  # a kind of a newer build (mid-rollout): not streamed here
                unknown += 1
                continue
            self._hub.publish(note)
        if unknown:
            log.warning(
                "%d notification(s) of a kind this build does not know not delivered live"
                " (a replica of the newer build lists them)",
                unknown,
            )
        if dropped:  # one line per batch, however many
            log.warning(
                "dropped %d NOTIFY(s) naming a notification the table does not hold for its"
                " user (forged, or deleted before it was read)",
                dropped,
            )

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            up_since: float | None = None
            unexpected = False
            try:
                if not self.listening:
                    await self._connect()
                    log.info("notification listener reconnected")
                up_since = loop.time()
                await self._until_lost()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                log.warning("notification listener lost its connection", exc_info=True)
            except Exception:
                # Anything else (a bug, a driver error of another kind) ended this task for
                # good, unnoticed: no reconnection after the next lost link, every watch of
                # the replica silent while health said SERVING (review of 2026-12-05). It is
                # said at ERROR and the feed starts again, as after a lost connection, after
                # the longest pause: a failure that repeats must not open and end every
                # watch of the replica every second.
                log.exception("notification listener failed; reconnecting")
                unexpected = True
            self._clear_pending()  # their streams end now
            self._hub.feed_lost()
            await self._disconnect()
            # The backoff starts over only after a link that held a while: one lost again at
            # once (or failing the same way each time) keeps backing off.
            if up_since is not None and loop.time() - up_since >= _STABLE_LINK_SECONDS:
                failures = 0
            failures += 1
            pause = 0.2 * 2 ** min(failures, 10)
            await asyncio.sleep(self._max_backoff if unexpected else min(self._max_backoff, pause))

    async def _until_lost(self) -> None:
        """Returns when the connection is gone; probes it every `probe_interval` (1 s), each
        probe given `probe_timeout` (3 s). A link that went silent without a reset (a
        failover, a dropped route; asyncpg sets no TCP keepalive) is found within about 4 s,
        streams ended and new ones refused until the feed is back: with a probe every 15 s
        and 5 s to answer, watches stayed silent up to 20 s, and new ones were accepted into
        that silence (review of 2026-12-05). The probe's time runs once it has the
        connection: a batch read holding it is not the link's silence."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_interval):  # never swallows a cancel
                    await self._lost.wait()
                return
            async with self._using_conn:
                async with asyncio.timeout(self._probe_timeout):
                    await self._conn.fetchval("SELECT 1")
