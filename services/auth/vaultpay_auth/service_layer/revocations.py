"""The revocation feed's use case: answer a poll from a peer service, at once or held.

Peers (wallet, transfer, kyc) keep the revoked sessions in memory and answer their strict
path from that copy while it is fresh (vaultpay_common.grpc.revocations); this is the side
that tells them what was revoked. A first poll (empty cursor) answers every revocation
recorded within `look_back`, which must outlast the longest-lived access token: older
revocations can only concern tokens that have expired anyway.

A poll may ask to be held (`wait`): when its read finds nothing new, the answer waits until a
revocation commits (`RevocationNotices` wakes it, from the NOTIFY the revoking transaction
sends at COMMIT) or until `wait` has passed, and is then read again. The answer reports how
long it was held before that read (`waited`, on this process's monotonic clock), so the peer
knows its copy is complete as of its own send time plus `waited`. Notices only make the
answer early: an answer is always a read of the table, so a lost notice (the LISTEN link
down) costs latency, never a revocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from vaultpay_auth.domain.revocations import FeedCursor, FeedPage, page_of
from vaultpay_auth.service_layer.ports import RevocationFeedReader, RevocationNotices
from vaultpay_common.errors import ValidationError

__all__ = ["MAX_WAIT", "RevocationFeedService"]

# The longest a poll is held, whatever it asks: a held poll is a task and a pending call.
MAX_WAIT = timedelta(seconds=10)


class RevocationFeedService:
    def __init__(
        self,
        reader: RevocationFeedReader,
        *,
        look_back: timedelta,
        notices: RevocationNotices | None = None,
        page_size: int = 2000,
        clock: Callable[[], float] = time.monotonic,
        snapshot_cursors: bool = True,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self._snapshot_cursors = snapshot_cursors  # AuthSettings.feed_snapshot_cursors
        self._reader = reader
        self._look_back = look_back
        self._notices = notices
        self._page_size = page_size
        self._clock = clock

    async def poll(self, cursor_text: str, *, wait: timedelta = timedelta(0)) -> FeedPage:
        """The page after `cursor_text`; held up to `wait` (at most MAX_WAIT) while it would
        be empty and caught up.

        Raises ValidationError (INVALID_ARGUMENT) for a cursor this feed never returned or a
        negative wait."""
        if wait < timedelta(0):
            raise ValidationError.single("wait", "must not be negative")
        cursor = FeedCursor.parse(cursor_text)
        received = self._clock()
        notices = self._notices
        if notices is None or not notices.listening or wait <= timedelta(0):
            return await self._read(cursor)
        # Taken before the read: a revocation committed after it is either in the read or
        # wakes the wait below; none can fall between the two.
        seen = notices.generation
        page = await self._read(cursor)
        if page.revocations or not page.caught_up:
            return page
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(wait, MAX_WAIT).total_seconds()):
                await notices.wait_past(seen)
        waited = timedelta(seconds=self._clock() - received)
        return replace(await self._read(cursor), waited=waited)

    async def _read(self, cursor: FeedCursor) -> FeedPage:
        read = await self._reader.read(cursor, limit=self._page_size + 1, look_back=self._look_back)
        furthest = max(cursor.horizon, cursor.after[0] if cursor.after else 0)
        if not cursor.is_fresh and (
            cursor.incarnation != read.incarnation or furthest > read.newest
        ):
            # A cursor of another server (a failover to a standby that lost the last
            # transactions, a restart) or from the future (a restore): its transaction ids
            # may be handed out again below the cursor. Start over (domain/revocations.py).
            cursor = FeedCursor()
            read = await self._reader.read(
                cursor, limit=self._page_size + 1, look_back=self._look_back
            )
        return page_of(cursor, read, self._page_size, snapshot=self._snapshot_cursors)
