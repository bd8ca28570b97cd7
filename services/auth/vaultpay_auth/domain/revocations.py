"""The session revocation feed as the domain sees it: revoked sessions and the poller's cursor.

Why a cursor is a transaction horizon and not "the last sequence seen": sequence numbers are
taken when a row is inserted, not when its transaction commits, so a revocation with a lower
number can become visible after one with a higher number. A reader that resumed after the
highest number would skip it for good, and a revoked token would be honoured until it expired.
Instead an answer's cursor is the oldest transaction still running when auth read the rows
(`pg_snapshot_xmin`): everything below it is settled, and the next poll reads every row of a
transaction at or above it again. Rows can therefore repeat across answers, which is harmless
(a revocation applied twice is one revocation); none can be left out.

A pass that does not fit one answer continues from the last (transaction, sequence) it sent,
and keeps the horizon of its first page for the pass that follows.

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from vaultpay_common.errors import ValidationError

__all__ = [
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
    """`horizon`: transactions below it are fully delivered. `after`: inside a pass that spans
    several answers, the last (xact_id, sequence) delivered."""

    horizon: int = 0
    after: tuple[int, int] | None = None
    incarnation: int = 0  # the issuing server's (0: unknown, a "v1" cursor)

    @classmethod
    def parse(cls, text: str) -> FeedCursor:
        if not text:
            return cls()
        incarnation = "0"
        if (found := _CURSOR_V2.fullmatch(text)) is not None:
            incarnation, horizon, xact, sequence = found.groups()
        elif (found := _CURSOR.fullmatch(text)) is not None:
            horizon, xact, sequence = found.groups()
        else:
            raise ValidationError.single("cursor", "is not a cursor this feed returned")
        numbers = [int(n) for n in (incarnation, horizon, xact, sequence) if n is not None]
        if any(n > _MAX_U64 for n in numbers):
            raise ValidationError.single("cursor", "is not a cursor this feed returned")
        after = None if xact is None else (int(xact), int(sequence))
        return cls(int(horizon), after, int(incarnation))

    @property
    def is_fresh(self) -> bool:
        """A first poll's cursor: it reads the whole look-back window anyway."""
        return self.horizon == 0 and self.after is None

    def encode(self) -> str:
        head = f"v2.{self.incarnation}.{self.horizon}"
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


def page_of(cursor: FeedCursor, read: FeedRead, limit: int) -> FeedPage:
    """The answer to a poll at `cursor`, given a read of at most `limit` + 1 rows after it.

    A pass that starts here continues next time from this read's horizon; a pass already
    under way keeps the horizon of its first page (a transaction that commits meanwhile with
    an id below our position is then read again by the next pass, never skipped).
    """
    next_horizon = read.horizon if cursor.after is None else cursor.horizon
    withdrawn = read.withdrawn_keys
    if len(read.rows) <= limit:
        return FeedPage(
            [r.revoked for r in read.rows],
            FeedCursor(next_horizon, incarnation=read.incarnation),
            caught_up=True,
            withdrawn_keys=withdrawn,
        )
    shown = read.rows[:limit]
    position = (shown[-1].xact_id, shown[-1].sequence)
    return FeedPage(
        [r.revoked for r in shown],
        FeedCursor(next_horizon, position, read.incarnation),
        caught_up=False,
        withdrawn_keys=withdrawn,
    )
