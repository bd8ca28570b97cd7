"""auth's side of the revocation feed without a database: cursors, passes that span several
answers, and why a slow commit below the reader's position is never skipped."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from vaultpay_auth.domain.revocations import (
    MAX_IN_PROGRESS,
    FeedCursor,
    FeedRead,
    FeedRow,
    RevokedSession,
    inactive_reason_of,
    page_of,
)
from vaultpay_auth.service_layer.revocations import RevocationFeedService
from vaultpay_common.errors import ValidationError

WHEN = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
INC = 1796417904563266  # the incarnation of the server the fake reads come from


def _row(xact: int, sequence: int, reason: str = "logout") -> FeedRow:
    return FeedRow(xact, sequence, RevokedSession(f"s-{sequence}", "u-1", WHEN, reason))


@pytest.mark.parametrize(
    "cursor",
    [
        FeedCursor(),
        FeedCursor(812),
        FeedCursor(812, (815, 40)),
        FeedCursor(2**64 - 1),
        FeedCursor(812, (815, 40), incarnation=1796417904563266),
        FeedCursor(820, incarnation=7, in_progress=(790, 815)),
        FeedCursor(820, (800, 3), 7, in_progress=()),
        FeedCursor(820, incarnation=7, in_progress=tuple(range(700, 764))),
    ],
)
def test_a_cursor_survives_its_text(cursor: FeedCursor) -> None:
    text = cursor.encode()
    assert FeedCursor.parse(text) == cursor


def test_an_empty_cursor_starts_at_the_beginning() -> None:
    assert FeedCursor.parse("") == FeedCursor(0, None)


@pytest.mark.parametrize(
    "text",
    [
        "812",
        "v1.",
        "v1.-1",
        "v1.1.2",
        "v2.1",
        "v1.1.2.3.4",
        "v1.18446744073709551616",
        "v3.7.820",
        "v3.7.820.790-",
        "v3.7.820.820",  # a running transaction at or above the snapshot's xmax
        "v3.7.820." + "-".join(str(n) for n in range(700, 765)),  # more than the cap
    ],
)
def test_a_cursor_the_feed_never_returned_is_invalid(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        FeedCursor.parse(text)
    assert refused.value.violations[0].field == "cursor"


def test_a_pass_that_fits_one_answer_is_caught_up_and_continues_from_the_new_horizon() -> None:
    page = page_of(
        FeedCursor(100), FeedRead(120, 130, [_row(105, 1), _row(119, 2)], incarnation=INC), limit=5
    )
    assert [r.session_id for r in page.revocations] == ["s-1", "s-2"]
    assert (page.next_cursor, page.caught_up) == (FeedCursor(120, incarnation=INC), True)


@pytest.mark.parametrize("limit", [1, 5])
def test_every_answer_names_the_withdrawn_keys_of_its_read(limit: int) -> None:
    """A whole or a partial page: a peer may act on a withdrawal from any answer."""
    read = FeedRead(
        120, 130, [_row(105, 1), _row(119, 2)], withdrawn_keys=("k-1", "k-2"), incarnation=INC
    )
    assert page_of(FeedCursor(100, incarnation=INC), read, limit=limit).withdrawn_keys == (
        "k-1",
        "k-2",
    )


def test_a_pass_larger_than_an_answer_continues_after_its_last_row() -> None:
    rows = [_row(105, 1), _row(105, 2), _row(110, 3)]
    page = page_of(FeedCursor(100), FeedRead(120, 130, rows, incarnation=INC), limit=2)
    assert [r.session_id for r in page.revocations] == ["s-1", "s-2"]
    assert (page.next_cursor, page.caught_up) == (FeedCursor(120, (105, 2), incarnation=INC), False)


def test_a_pass_keeps_the_horizon_of_its_first_page() -> None:
    """Transaction 107 was running when the pass began (horizon 107 would have been read
    then) and commits while the pass is at 110: the pass does not see it, and the next pass
    starts from the first page's horizon, so it reads 107 then."""
    first = page_of(
        FeedCursor(100), FeedRead(107, 130, [_row(105, 1), _row(110, 2)], incarnation=INC), limit=1
    )
    assert first.next_cursor == FeedCursor(107, (105, 1), incarnation=INC)
    last = page_of(first.next_cursor, FeedRead(125, 131, [_row(110, 2)], incarnation=INC), limit=1)
    assert (last.next_cursor, last.caught_up) == (FeedCursor(107, incarnation=INC), True)


def test_a_pass_continues_from_its_snapshot_not_its_oldest_running_transaction() -> None:
    """Review of 2026-12-05: the next pass read every row at or above the oldest running
    transaction, so while one long transaction ran every poll carried everything committed
    since it began. It reads the transactions the snapshot saw running, and the newer ones."""
    read = FeedRead(90, 130, [_row(105, 1)], incarnation=INC, in_progress=(90, 118))
    page = page_of(FeedCursor(100), read, limit=5)
    assert page.next_cursor == FeedCursor(130, incarnation=INC, in_progress=(90, 118))
    first = page_of(FeedCursor(100), replace(read, rows=[_row(105, 1), _row(110, 2)]), limit=1)
    assert first.next_cursor == FeedCursor(130, (105, 1), INC, in_progress=(90, 118))
    later = FeedRead(95, 140, [_row(110, 2)], incarnation=INC, in_progress=(95,))
    assert page_of(first.next_cursor, later, limit=1).next_cursor == page.next_cursor


def test_a_snapshot_with_too_many_running_transactions_falls_back_to_its_horizon() -> None:
    running = tuple(range(60, 60 + MAX_IN_PROGRESS + 1))
    read = FeedRead(60, 130, [], incarnation=INC, in_progress=running)
    assert page_of(FeedCursor(50), read, limit=5).next_cursor == FeedCursor(60, incarnation=INC)


def test_during_a_rolling_update_from_a_build_before_them_no_snapshot_cursor_is_issued() -> None:
    """A build before v3 cursors refuses one (INVALID_ARGUMENT): its peers would start over
    from the look-back on every poll that alternated between old and new replicas. With
    feed_snapshot_cursors False every answer carries a v2 cursor, which every build reads; a
    v3 cursor a peer already holds is still read."""
    read = FeedRead(90, 130, [_row(105, 1)], incarnation=INC, in_progress=(90,))
    held = FeedCursor(100, incarnation=INC, in_progress=(95,))
    for cursor in (FeedCursor(100), held):
        page = page_of(cursor, read, limit=5, snapshot=False)
        assert page.next_cursor == FeedCursor(90, incarnation=INC)
        assert page.next_cursor.encode().startswith("v2.")


def test_a_deactivation_is_reported_as_a_disabled_account() -> None:
    assert inactive_reason_of(_row(1, 1, "deactivated").revoked) == "ACCOUNT_DISABLED"
    for reason in ("logout", "refresh_token_reuse", "password_changed", "role_changed"):
        assert inactive_reason_of(_row(1, 1, reason).revoked) == "TOKEN_REVOKED"


class Reader:
    def __init__(self, *reads: FeedRead) -> None:
        self.reads = list(reads)
        self.asked: list[tuple[FeedCursor, int, timedelta]] = []

    async def read(self, cursor: FeedCursor, *, limit: int, look_back: timedelta) -> FeedRead:
        self.asked.append((cursor, limit, look_back))
        return self.reads.pop(0)


async def test_the_service_reads_one_row_more_than_it_answers() -> None:
    reader = Reader(FeedRead(50, 60, [_row(40, 1), _row(41, 2), _row(42, 3)], incarnation=INC))
    service = RevocationFeedService(reader, look_back=timedelta(minutes=20), page_size=2)
    page = await service.poll(FeedCursor(40, incarnation=INC).encode())
    assert reader.asked == [(FeedCursor(40, incarnation=INC), 3, timedelta(minutes=20))]
    assert (len(page.revocations), page.caught_up) == (2, False)


async def test_a_cursor_from_the_future_starts_over() -> None:
    """A database restored from an older backup reuses transaction ids below the cursor."""
    reader = Reader(
        FeedRead(50, 60, [], incarnation=INC), FeedRead(50, 60, [_row(45, 1)], incarnation=INC)
    )
    service = RevocationFeedService(reader, look_back=timedelta(minutes=20))
    page = await service.poll(FeedCursor(900, incarnation=INC).encode())
    assert [cursor for cursor, _, _ in reader.asked] == [
        FeedCursor(900, incarnation=INC),
        FeedCursor(),
    ]
    assert [r.session_id for r in page.revocations] == ["s-1"]
    assert page.next_cursor == FeedCursor(50, incarnation=INC)


def test_a_cursor_before_incarnations_is_read_as_of_an_unknown_server() -> None:
    assert FeedCursor.parse("v1.812.815.40") == FeedCursor(812, (815, 40), incarnation=0)


@pytest.mark.parametrize("issued_by", [0, 7])
async def test_a_cursor_of_another_server_starts_over_even_below_its_newest_id(
    issued_by: int,
) -> None:
    """A failover to a standby that lost the last transactions: the new primary soon hands
    out ids past the poller's cursor again (its newest is above the cursor, so the restore
    check alone saw nothing), and a logout committed under an id below the cursor would never
    be read: revoked tokens honoured until they expired (token review, 2026-12-04 night)."""
    reader = Reader(
        FeedRead(1_011, 1_012, [], incarnation=8),
        FeedRead(1_011, 1_012, [_row(995, 1)], incarnation=8),
    )
    service = RevocationFeedService(reader, look_back=timedelta(minutes=20))
    page = await service.poll(FeedCursor(1_000, incarnation=issued_by).encode())
    assert [cursor for cursor, _, _ in reader.asked][1] == FeedCursor()
    assert [r.session_id for r in page.revocations] == ["s-1"]
    assert page.next_cursor == FeedCursor(1_011, incarnation=8)


async def test_a_cursor_of_the_same_server_reads_on() -> None:
    reader = Reader(FeedRead(1_011, 1_012, [_row(1_005, 1)], incarnation=8))
    service = RevocationFeedService(reader, look_back=timedelta(minutes=20))
    page = await service.poll(FeedCursor(1_000, incarnation=8).encode())
    assert [cursor for cursor, _, _ in reader.asked] == [FeedCursor(1_000, incarnation=8)]
    assert page.next_cursor == FeedCursor(1_011, incarnation=8)


# ----- held polls ------------------------------------------------------------------------------


class Notices:
    """Stands for the LISTEN link: `notify()` is a revocation's COMMIT being heard."""

    def __init__(self, *, listening: bool = True) -> None:
        self.listening = listening
        self.generation = 0
        self._next = asyncio.Event()

    async def wait_past(self, generation: int) -> None:
        if generation == self.generation and self.listening:
            await self._next.wait()

    def notify(self) -> None:
        self.generation += 1
        heard, self._next = self._next, asyncio.Event()
        heard.set()


class NotifyingReader(Reader):
    """A reader after whose first read a revocation commits (and its notice is heard)."""

    def __init__(self, notices: Notices, *reads: FeedRead) -> None:
        super().__init__(*reads)
        self.notices = notices

    async def read(self, cursor: FeedCursor, *, limit: int, look_back: timedelta) -> FeedRead:
        if not self.asked:
            asyncio.get_running_loop().call_soon(self.notices.notify)
        return await super().read(cursor, limit=limit, look_back=look_back)


def _service(reader: Reader, notices: Notices | None) -> RevocationFeedService:
    return RevocationFeedService(reader, look_back=timedelta(minutes=20), notices=notices)


async def test_a_held_poll_is_answered_when_a_revocation_commits() -> None:
    notices = Notices()
    reader = NotifyingReader(
        notices,
        FeedRead(50, 60, [], incarnation=INC),
        FeedRead(52, 60, [_row(51, 7)], incarnation=INC),
    )
    page = await _service(reader, notices).poll(
        FeedCursor(50, incarnation=INC).encode(), wait=timedelta(seconds=30)
    )
    assert [r.session_id for r in page.revocations] == ["s-7"]
    assert [cursor for cursor, _, _ in reader.asked] == [
        FeedCursor(50, incarnation=INC),
        FeedCursor(50, incarnation=INC),
    ]
    assert timedelta(0) <= page.waited < timedelta(seconds=30)


async def test_a_held_poll_with_nothing_new_is_read_again_when_its_wait_ends() -> None:
    reader = Reader(FeedRead(50, 60, [], incarnation=INC), FeedRead(53, 61, [], incarnation=INC))
    page = await _service(reader, Notices()).poll(
        FeedCursor(50, incarnation=INC).encode(), wait=timedelta(milliseconds=20)
    )
    assert len(reader.asked) == 2
    assert (page.next_cursor, page.caught_up) == (
        FeedCursor(53, incarnation=INC),
        True,
    )  # the second read's
    assert page.waited >= timedelta(milliseconds=15)


async def test_a_notice_heard_before_the_wait_begins_is_not_missed() -> None:
    """The revocation commits between the first read and the wait: no hold at all."""
    notices = Notices()

    class ReaderThatHearsAtOnce(Reader):
        async def read(self, cursor: FeedCursor, *, limit: int, look_back: timedelta) -> FeedRead:
            if not self.asked:
                notices.notify()
            return await super().read(cursor, limit=limit, look_back=look_back)

    reader = ReaderThatHearsAtOnce(
        FeedRead(50, 60, [], incarnation=INC), FeedRead(52, 60, [_row(51, 7)], incarnation=INC)
    )
    async with asyncio.timeout(5):
        page = await _service(reader, notices).poll(
            FeedCursor(50, incarnation=INC).encode(), wait=timedelta(seconds=30)
        )
    assert [r.session_id for r in page.revocations] == ["s-7"]


@pytest.mark.parametrize(
    ("notices", "read"),
    [
        (
            Notices(),
            FeedRead(50, 60, [_row(50, 1)], incarnation=INC),
        ),  # something new: answered at once
        (Notices(listening=False), FeedRead(50, 60, [], incarnation=INC)),  # link down: never held
        (None, FeedRead(50, 60, [], incarnation=INC)),  # no notices at all
    ],
)
async def test_a_poll_is_answered_at_once_when_it_cannot_or_need_not_be_held(
    notices: Notices | None, read: FeedRead
) -> None:
    reader = Reader(read)
    async with asyncio.timeout(5):
        page = await _service(reader, notices).poll(
            FeedCursor(50, incarnation=INC).encode(), wait=timedelta(seconds=30)
        )
    assert len(reader.asked) == 1
    assert page.waited == timedelta(0)


async def test_a_negative_wait_is_invalid() -> None:
    with pytest.raises(ValidationError) as refused:
        await _service(Reader(), Notices()).poll(
            FeedCursor(50, incarnation=INC).encode(), wait=timedelta(seconds=-1)
        )
    assert refused.value.violations[0].field == "wait"
