"""The revocation feed's use case: answer a poll from a peer service.

Peers (wallet, transfer, kyc) keep the revoked sessions in memory and answer their strict
path from that copy while it is fresh (vaultpay_common.grpc.revocations); this is the side
that tells them what was revoked. A first poll (empty cursor) answers every revocation
recorded within `look_back`, which must outlast the longest-lived access token: older
revocations can only concern tokens that have expired anyway.
"""

from __future__ import annotations

from datetime import timedelta

from vaultpay_auth.domain.revocations import FeedCursor, FeedPage, page_of
from vaultpay_auth.service_layer.ports import RevocationFeedReader

__all__ = ["RevocationFeedService"]


class RevocationFeedService:
    def __init__(
        self, reader: RevocationFeedReader, *, look_back: timedelta, page_size: int = 2000
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self._reader = reader
        self._look_back = look_back
        self._page_size = page_size

    async def poll(self, cursor_text: str) -> FeedPage:
        """Raises ValidationError (INVALID_ARGUMENT) for a cursor this feed never returned."""
        cursor = FeedCursor.parse(cursor_text)
        read = await self._reader.read(cursor, limit=self._page_size + 1, look_back=self._look_back)
        furthest = max(cursor.horizon, cursor.after[0] if cursor.after else 0)
        if furthest > read.newest:
            # A cursor from the future: the database was restored from a backup older than the
            # poller's last answer, and would reuse transaction ids below its cursor. Start over.
            cursor = FeedCursor()
            read = await self._reader.read(
                cursor, limit=self._page_size + 1, look_back=self._look_back
            )
        return page_of(cursor, read, self._page_size)
