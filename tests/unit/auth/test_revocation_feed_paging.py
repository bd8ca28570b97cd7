"""auth's side of the revocation feed without a database: cursors, passes that span several
answers, and why a slow commit below the reader's position is never skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vaultpay_auth.domain.revocations import (
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


def _row(xact: int, sequence: int, reason: str = "logout") -> FeedRow:
    return FeedRow(xact, sequence, RevokedSession(f"s-{sequence}", "u-1", WHEN, reason))


@pytest.mark.parametrize(
    "cursor",
    [FeedCursor(), FeedCursor(812), FeedCursor(812, (815, 40)), FeedCursor(2**64 - 1)],
)
def test_a_cursor_survives_its_text(cursor: FeedCursor) -> None:
    text = cursor.encode()
    assert FeedCursor.parse(text) == cursor


def test_an_empty_cursor_starts_at_the_beginning() -> None:
    assert FeedCursor.parse("") == FeedCursor(0, None)


@pytest.mark.parametrize(
    "text", ["812", "v1.", "v1.-1", "v1.1.2", "v2.1", "v1.1.2.3.4", "v1.18446744073709551616"]
)
def test_a_cursor_the_feed_never_returned_is_invalid(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        FeedCursor.parse(text)
    assert refused.value.violations[0].field == "cursor"


def test_a_pass_that_fits_one_answer_is_caught_up_and_continues_from_the_new_horizon() -> None:
    page = page_of(FeedCursor(100), FeedRead(120, 130, [_row(105, 1), _row(119, 2)]), limit=5)
    assert [r.session_id for r in page.revocations] == ["s-1", "s-2"]
    assert (page.next_cursor, page.caught_up) == (FeedCursor(120), True)


def test_a_pass_larger_than_an_answer_continues_after_its_last_row() -> None:
    rows = [_row(105, 1), _row(105, 2), _row(110, 3)]
    page = page_of(FeedCursor(100), FeedRead(120, 130, rows), limit=2)
    assert [r.session_id for r in page.revocations] == ["s-1", "s-2"]
    assert (page.next_cursor, page.caught_up) == (FeedCursor(120, (105, 2)), False)


def test_a_pass_keeps_the_horizon_of_its_first_page() -> None:
    """Transaction 107 was running when the pass began (horizon 107 would have been read
    then) and commits while the pass is at 110: the pass does not see it, and the next pass
    starts from the first page's horizon, so it reads 107 then."""
    first = page_of(FeedCursor(100), FeedRead(107, 130, [_row(105, 1), _row(110, 2)]), limit=1)
    assert first.next_cursor == FeedCursor(107, (105, 1))
    last = page_of(first.next_cursor, FeedRead(125, 131, [_row(110, 2)]), limit=1)
    assert (last.next_cursor, last.caught_up) == (FeedCursor(107), True)


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
    reader = Reader(FeedRead(50, 60, [_row(40, 1), _row(41, 2), _row(42, 3)]))
    service = RevocationFeedService(reader, look_back=timedelta(minutes=20), page_size=2)
    page = await service.poll("v1.40")
    assert reader.asked == [(FeedCursor(40), 3, timedelta(minutes=20))]
    assert (len(page.revocations), page.caught_up) == (2, False)


async def test_a_cursor_from_the_future_starts_over() -> None:
    """A database restored from an older backup reuses transaction ids below the cursor."""
    reader = Reader(FeedRead(50, 60, []), FeedRead(50, 60, [_row(45, 1)]))
    service = RevocationFeedService(reader, look_back=timedelta(minutes=20))
    page = await service.poll("v1.900")
    assert [cursor for cursor, _, _ in reader.asked] == [FeedCursor(900), FeedCursor()]
    assert [r.session_id for r in page.revocations] == ["s-1"]
    assert page.next_cursor == FeedCursor(50)
