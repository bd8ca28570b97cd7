"""Work that outlives its caller and must end before the process does.

A PIN or password check counts its attempt before it hashes, and settles it after, in a task
its caller awaits shielded: a caller that goes away does not leave the attempt counted as a
failure. The server's stop waits only for handlers, and closing a hasher cancels its queue, so
a service waits for those tasks at shutdown, before its hasher closes:

    settling = Settling("PIN checks")
    settling.track(task)                      # as the task starts
    ...
    left = await settling.drain(within=10.0)  # a shutdown hook; logs what it could not wait for
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["Settling"]

log = logging.getLogger(__name__)


class Settling:
    """The tasks still settling for callers that may have gone, of one kind (`what`)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._tasks: set[asyncio.Future[Any]] = set()

    def track(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, within: float) -> int:
        """Waits up to `within` seconds for every tracked task; returns how many did not end
        (logged at WARNING: their attempts stay counted)."""
        if not self._tasks:
            return 0
        _, left = await asyncio.wait(set(self._tasks), timeout=within)
        if left:
            log.warning(
                "%s still settling at shutdown; their attempts stay counted",
                self._what,
                extra={"count": len(left), "waited_seconds": within},
            )
        return len(left)
