"""The session revocation feed as the domain sees it: revoked sessions and the poller's cursor.

Why a cursor is a transaction horizon and not "the last sequence seen": sequence numbers are
taken when a row is inserted, not when its transaction commits, so a revocation with a lower
number can become visible after one with a higher number. A reader that resumed after the
highest number would skip it for good, and a revoked token would be honoured until it expired.
Instead an answer's cursor is the oldest transaction still running when auth read the rows
(`pg_snapshot_xmin`): everything below it is settled, and the next poll reads every row of a
transaction at or above it again. Rows can therefore repeat across answers, which is harmless
(a revocation applied twice is one revocation); none can be left out.

That horizon re-read every row committed after the oldest transaction still running: while
one long transaction ran (a migration, an operator's psql), every poll of every peer carried
every revocation since it began, four polls a second, never held (review of 2026-12-05). A
"v3" cursor names the snapshot instead: transactions below its `xmax` are delivered, except
the ones it saw running (`in_progress`, `pg_snapshot_xip`), which the next poll reads, with
every transaction at or above `xmax`. A snapshot with more than MAX_IN_PROGRESS running
transactions falls back to the "v2" horizon (`pg_snapshot_xmin`), which is always safe.

A pass that does not fit one answer continues from the last (transaction, sequence) it sent,
and keeps the horizon (or snapshot) of its first page for the pass that follows; its later
pages read every row after that position, a superset of what the first page's cursor asked.

Transaction ids are a server's own: a failover to a standby that lost the last transactions,
or a restore, hands out ids again that a poller's cursor has passed, and a revocation
committed under such an id would never be read. A cursor therefore names the server that
issued it too (`incarnation`: when its postmaster started, which differs between a primary and
its promoted standby, and after any restart); a cursor of another incarnation starts over
(the look-back window, re-read; applying a revocation twice is harmless). A "v1" cursor, from
before incarnations, is of an unknown one.

    FeedCursor.parse("")                        # a first poll: everything in the look-back
    FeedCursor(horizon=812, incarnation=7).encode()          # "v2.7.812"
    FeedCursor(812, after=(815, 40), incarnation=7).encode()  # "v2.7.812.815.40": mid-pass
    FeedCursor(820, incarnation=7, in_progress=(790, 815)).encode()  # "v3.7.820.790-815"
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from vaultpay_common.errors import ValidationError

__all__ = [
    "MAX_IN_PROGRESS",
    "FeedCursor",
    "FeedPage",
    "FeedRead",
    "FeedRow",
    "RevokedSession",
    "inactive_reason_of",
    "page_of",
]

_CURSOR = re.compile(r"v1\.(\d{1,20})(?:\.(\d{1,20})\.(\d{1,20}))?")
_CURSOR_V2 = re.compile(r"v2\.(\d{1,20})\.(\d{1,20})(?:\.(\d{1,20})\.(\d{1,20}))?")
# The running transactions a v3 cursor may name; a snapshot with more is cursored by its horizon.
MAX_IN_PROGRESS = 64
_CURSOR_V3 = re.compile(
    r"v3\.(\d{1,20})\.(\d{1,20})\.((?:\d{1,20}(?:-\d{1,20}){0,"
    + str(MAX_IN_PROGRESS - 1)
    + r"})?)(?:\.(\d{1,20})\.(\d{1,20}))?"
)
_MAX_U64 = 2**64 - 1
# revoke_reason values whose tokens are reported as a disabled account, as IntrospectToken does.
_ACCOUNT_DISABLED_REASONS = frozenset({"deactivated"})


@dataclass(frozen=True, slots=True)
class RevokedSession:
    session_id: str
    user_id: str
    revoked_at: datetime
    # The sessions.revoke_reason it was revoked with, e.g. "logout", "role_changed".
    revoke_reason: str


def inactive_reason_of(revoked: RevokedSession) -> str:
    """The UPPER_SNAKE reason a token of this session is refused with."""
    if revoked.revoke_reason in _ACCOUNT_DISABLED_REASONS:
        return "ACCOUNT_DISABLED"
    return "TOKEN_REVOKED"


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """`horizon`: transactions below it are fully delivered, but those of `in_progress` when it
    is given (a v3 cursor: `horizon` is then a snapshot's xmax, `in_progress` its running
    transactions). `after`: inside a pass that spans several answers, the last (xact_id,
    sequence) delivered."""

    horizon: int = 0
    after: tuple[int, int] | None = None
    incarnation: int = 0  # the issuing server's (0: unknown, a "v1" cursor)
    in_progress: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> FeedCursor:
        if not text:
            return cls()
        incarnation = "0"
        running: str | None = None
        if (found := _CURSOR_V3.fullmatch(text)) is not None:
            incarnation, horizon, running, xact, sequence = found.groups()
        elif (found := _CURSOR_V2.fullmatch(text)) is not None:
            incarnation, horizon, xact, sequence = found.groups()
        elif (found := _CURSOR.fullmatch(text)) is not None:
            horizon, xact, sequence = found.groups()
        else:
            raise ValidationError.single("cursor", "is not a cursor this feed returned")
        in_progress = None
        if running is not None:
            in_progress = tuple(int(n) for n in running.split("-")) if running else ()
        numbers = [int(n) for n in (incarnation, horizon, xact, sequence) if n is not None]
        if any(n > _MAX_U64 for n in (*numbers, *(in_progress or ()))):
            raise ValidationError.single("cursor", "is not a cursor this feed returned")
        if in_progress is not None and any(n >= int(horizon) for n in in_progress):
            raise ValidationError.single("cursor", "is not a cursor this feed returned")
        after = None if xact is None else (int(xact), int(sequence))
        return cls(int(horizon), after, int(incarnation), in_progress)

    @property
    def is_fresh(self) -> bool:
        """A first poll's cursor: it reads the whole look-back window anyway."""
        return self.horizon == 0 and self.after is None

    def encode(self) -> str:
        if self.in_progress is None:
            head = f"v2.{self.incarnation}.{self.horizon}"
        else:
            running = "-".join(str(n) for n in self.in_progress)
            head = f"v3.{self.incarnation}.{self.horizon}.{running}"
        return head if self.after is None else f"{head}.{self.after[0]}.{self.after[1]}"


@dataclass(frozen=True, slots=True)
class FeedPage:
    revocations: list[RevokedSession]
    next_cursor: FeedCursor
    # Every revocation committed before the read is in this page or an earlier one of the pass.
    caught_up: bool
    # How long the poll was held before its read (zero: answered at once).
    waited: timedelta = timedelta(0)
    # The signing keys withdrawn within the look-back, as of the read (every page carries them).
    withdrawn_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedRow:
    xact_id: int
    sequence: int
    revoked: RevokedSession


@dataclass(frozen=True, slots=True)
class FeedRead:
    """One consistent read of the feed: the rows after the cursor, in (xact_id, sequence)
    order, and the transaction horizon of the same snapshot."""

    horizon: int  # the oldest transaction still running (pg_snapshot_xmin)
    newest: int  # the first transaction id not yet assigned (pg_snapshot_xmax)
    rows: list[FeedRow]
    incarnation: int  # the server that read (FeedCursor.incarnation; never 0)
    withdrawn_keys: tuple[str, ...] = ()  # signing keys withdrawn within the look-back
    # The transactions the snapshot saw running (pg_snapshot_xip); None: not read.
    in_progress: tuple[int, ...] | None = None


def page_of(cursor: FeedCursor, read: FeedRead, limit: int, *, snapshot: bool = True) -> FeedPage:
    """The answer to a poll at `cursor`, given a read of at most `limit` + 1 rows after it.

    A pass that starts here continues next time from this read's snapshot (its xmax and the
    transactions it saw running) or, when it saw more than MAX_IN_PROGRESS running, its
    horizon; a pass already under way keeps those of its first page (a transaction that
    commits meanwhile with an id below our position is then read again by the next pass,
    never skipped). `snapshot` False: always the horizon (a "v2" cursor, which a build
    before v3 cursors reads: a rolling update from one, AuthSettings.feed_snapshot_cursors).
    """
    if cursor.after is not None:
        next_start = FeedCursor(
            cursor.horizon, incarnation=read.incarnation, in_progress=cursor.in_progress
        )
    elif snapshot and read.in_progress is not None and len(read.in_progress) <= MAX_IN_PROGRESS:
        next_start = FeedCursor(
            read.newest, incarnation=read.incarnation, in_progress=read.in_progress
        )
    else:
        next_start = FeedCursor(read.horizon, incarnation=read.incarnation)
    withdrawn = read.withdrawn_keys
    if len(read.rows) <= limit:
        return FeedPage(
            [r.revoked for r in read.rows],
            next_start,
            caught_up=True,
            withdrawn_keys=withdrawn,
        )
    shown = read.rows[:limit]
    position = (shown[-1].xact_id, shown[-1].sequence)
    return FeedPage(
        [r.revoked for r in shown],
        dataclasses.replace(next_start, after=position),
        caught_up=False,
        withdrawn_keys=withdrawn,
    )
