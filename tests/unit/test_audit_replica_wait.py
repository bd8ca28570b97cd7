"""`verify_audit` on a replica: the wait for the replay of the seals the primary's newest
checkpoint names (without it a replica a second behind read as rows deleted, BROKEN, exit 1),
with fakes for the recovery flag, the seal positions and the clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from vaultpay_common.audit.model import Checkpoint
from vaultpay_common.audit.verify import REPLAY_POLL_SECONDS, ReplicaBehindError, wait_for_replay
from vaultpay_common.errors import ErrorKind, UnavailableError


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _heads(
    *seen: int | None, clock: _Clock
) -> tuple[Callable[[], Awaitable[int | None]], list[float]]:
    """A server whose newest seal reads `seen` in turn (the last one for ever); None: a primary.
    Also the (fake) times it was read at."""
    reads: list[float] = []

    async def head() -> int | None:
        reads.append(clock.now)
        return seen[min(len(reads), len(seen)) - 1]

    return head, reads


async def test_a_primary_is_read_once_and_not_waited_for() -> None:
    clock = _Clock()
    head, reads = _heads(None, clock=clock)
    assert (
        await wait_for_replay(head, 7, 30.0, sleep=clock.sleep, monotonic=clock.monotonic) is None
    )
    assert len(reads) == 1 and clock.slept == []


async def test_a_replica_at_or_past_the_checkpoint_is_not_waited_for() -> None:
    clock = _Clock()
    head, reads = _heads(9, clock=clock)
    assert await wait_for_replay(head, 7, 30.0, sleep=clock.sleep, monotonic=clock.monotonic) == 9
    assert len(reads) == 1 and clock.slept == []


async def test_a_replica_behind_is_polled_until_it_replays_the_checkpoints_seal() -> None:
    clock = _Clock()
    head, reads = _heads(5, 5, 6, 7, clock=clock)
    assert await wait_for_replay(head, 7, 30.0, sleep=clock.sleep, monotonic=clock.monotonic) == 7
    assert len(reads) == 4
    assert clock.slept == [REPLAY_POLL_SECONDS] * 3


async def test_a_replica_that_stays_behind_is_given_up_on_at_the_bound() -> None:
    clock = _Clock()
    head, reads = _heads(5, clock=clock)
    seen = await wait_for_replay(head, 7, 2.0, sleep=clock.sleep, monotonic=clock.monotonic)
    assert seen == 5
    assert clock.now == 102.0  # the bound, never past it
    assert len(reads) == 9 and reads[-1] == 102.0  # and read once more at it
    assert all(0 < s <= REPLAY_POLL_SECONDS for s in clock.slept)


def test_behind_is_could_not_finish_never_broken() -> None:
    checkpoint = Checkpoint(7, "ab" * 32, datetime(2026, 12, 5, 9, 30, tzinfo=UTC), "sig")
    error = ReplicaBehindError(checkpoint, 5, 14.2)
    assert isinstance(error, UnavailableError)  # the CLI's exit 3, "run it again"
    assert error.kind is ErrorKind.UNAVAILABLE
    assert error.message == (
        "the replica has replayed the audit chain to position 5, short of position 7 that the "
        "signed checkpoint of 2026-12-05T09:30:00+00:00 records, and did not catch up within "
        "14 s: it is behind (no proof of deleted rows); run it again, or on the primary"
    )
