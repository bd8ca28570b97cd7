"""GetTransferStats' figures: closed hours from the rollup (t0027), the rest counted live.

A movement is counted once, by the time it completed: a send and a settled withdrawal by their
debit, a top-up by its credit, a reversed one still (`_COUNTED_BETWEEN`, the predicate t0018's
index states). `SqlStatsRollup.run_once` (transfer's job) adds each hour that closed at least
`ROLLUP_MARGIN` ago to `transfer_stats_hourly` and moves `transfer_stats_rollup.rolled_until`
to its end, in one transaction. `read_stats` reads, for each window (24 hours, 30 days, from
`now`), the rolled hours inside it, and counts live only its partial first hour and what
completed since `rolled_until`: an hour or two of movements, not a month. Before the first
rollup (or with the job stopped for longer than a window), the window is counted live, as
before t0027: the figures are the same either way, only their cost differs.

All of it reads one REPEATABLE READ snapshot: the rolled hours and `rolled_until` change in one
transaction, so a call sees an hour either rolled or live, never both or neither.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_transfer.adapters.tables import wallet_transactions
from vaultpay_transfer.domain.model import TransferStats

__all__ = ["ROLLUP_MARGIN", "SqlStatsRollup", "hour_ceiling", "read_stats"]

# How long after an hour ends it is rolled up at the earliest: a movement's completion time is
# taken before its COMMIT (milliseconds before). The rollup also waits for every transaction
# still open (`_LOCK_WATERMARK`), whatever the statement timeout.
ROLLUP_MARGIN = timedelta(minutes=10)
# The rollup keeps the hours of the longest window and a day more.
_KEPT = timedelta(days=31)
# At most a day of hours per transaction: the first run on a ledger with history (31 days
# back) catches up in 31 of them, each statement well within the statement timeout.
_HOURS_PER_RUN = timedelta(hours=24)

_TIME = wallet_transactions.c.completed_at.type

# The movements completed in [lo, hi), per currency. Two branches, each one
# range of an index: P2P rows complete at creation (completed_at = created_at, one v_now in
# transfer_send_money; protect.sql sets it once), so they are found by created_at on
# wallet_transactions_created_idx; the rare categories by completed_at on t0018's partial
# index, whose predicate the branch states literally (a generic plan cannot prove it).
# (Also the rollup's rows, with their completion time.)
_COUNTED = (
    "WITH counted AS ("
    " SELECT currency, amount, completed_at FROM wallet_transactions"
    " WHERE category IN ('P2P_SEND', 'P2P_RECEIVE')"
    " AND status IN ('COMPLETED', 'REVERSED') AND (type = 'DEBIT' OR category = 'TOP_UP')"
    " AND created_at >= :lo AND created_at < :hi AND completed_at >= :lo AND completed_at < :hi"
    " UNION ALL"
    " SELECT currency, amount, completed_at FROM wallet_transactions"
    " WHERE category NOT IN ('P2P_SEND', 'P2P_RECEIVE')"
    " AND status IN ('COMPLETED', 'REVERSED') AND (type = 'DEBIT' OR category = 'TOP_UP')"
    " AND completed_at >= :lo AND completed_at < :hi)"
)
_PER_CURRENCY = " SELECT currency, count(*), sum(amount) FROM counted GROUP BY currency"
_COUNTED_BETWEEN = text(
    _COUNTED + _PER_CURRENCY  # constant text only
).bindparams(bindparam("lo", type_=_TIME), bindparam("hi", type_=_TIME))
# The end of a range that has none.
_NO_END = datetime(9999, 12, 31, tzinfo=UTC)

_ROLLED_BETWEEN = text(
    "SELECT currency, sum(movements), sum(volume_minor) FROM transfer_stats_hourly"
    " WHERE hour >= :lo AND hour < :hi GROUP BY currency"
).bindparams(bindparam("lo", type_=_TIME), bindparam("hi", type_=_TIME))

_ROLLED_UNTIL = text("SELECT rolled_until FROM transfer_stats_rollup")

# The rollup, one transaction: the watermark's row locked (one rollup at a time, whatever the
# number of transfer processes), the closed hours since it counted per hour and currency, the
# watermark moved to the last closed hour's end, hours past the longest window deleted.
# The last hour that may be closed: ended `margin` ago, and before every transaction still
# open (a movement's completion time is taken inside its transaction, so no row an open one
# writes can complete before it began; the movements run in transfer's sessions, whose start
# times its role may read).
_LOCK_WATERMARK = text(
    "SELECT rolled_until, date_trunc('hour', least(now() - CAST(:margin AS interval),"
    " (SELECT min(xact_start) FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL)), 'UTC')"
    " FROM transfer_stats_rollup FOR UPDATE"
)
_HOURS = (
    " INSERT INTO transfer_stats_hourly (hour, currency, movements, volume_minor)"
    " SELECT date_trunc('hour', completed_at, 'UTC'), currency, count(*), sum(amount)"
    " FROM counted GROUP BY 1, 2"
)
_ROLL_UP = text(
    _COUNTED + _HOURS  # constant text only
).bindparams(bindparam("lo", type_=_TIME), bindparam("hi", type_=_TIME))
_MOVE_WATERMARK = text("UPDATE transfer_stats_rollup SET rolled_until = :until").bindparams(
    bindparam("until", type_=_TIME)
)
_FORGET = text("DELETE FROM transfer_stats_hourly WHERE hour < now() - CAST(:kept AS interval)")


def hour_ceiling(at: datetime) -> datetime:
    """The first whole UTC hour at or after `at`."""
    floor = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return floor if floor == at else floor + timedelta(hours=1)


Figures = dict[str, tuple[int, int]]  # currency -> (movements, volume in minor units)


def _add(into: Figures, rows: Iterable[tuple[str, int | Decimal, int | Decimal]]) -> None:
    """Adds each row's (currency, movements, volume); PostgreSQL's sums are numeric (Decimal,
    exact: 50000 may come as Decimal('5E+4'), which int() reads and int(str()) does not)."""
    for currency, movements, volume in rows:
        count, total = into.get(str(currency), (0, 0))
        into[str(currency)] = (count + int(movements), total + int(volume))


async def _window(conn: AsyncConnection, start: datetime, rolled_until: datetime | None) -> Figures:
    """The movements completed since `start`: the rolled hours from its first whole hour to
    `rolled_until`, and live the partial hour before them and everything since."""
    whole = hour_ceiling(start)
    figures: Figures = defaultdict(lambda: (0, 0))
    if start < whole:
        _add(figures, (await conn.execute(_COUNTED_BETWEEN, {"lo": start, "hi": whole})).all())
    tail = whole
    if rolled_until is not None and rolled_until > whole:
        rolled = await conn.execute(_ROLLED_BETWEEN, {"lo": whole, "hi": rolled_until})
        _add(figures, rolled.all())
        tail = rolled_until
    _add(figures, (await conn.execute(_COUNTED_BETWEEN, {"lo": tail, "hi": _NO_END})).all())
    return dict(figures)


async def read_stats(conn: AsyncConnection, now: datetime) -> TransferStats:
    """The 24 hours' and the 30 days' figures before `now`, in `conn`'s transaction (one
    REPEATABLE READ snapshot, so the day's figures never exceed the month's)."""
    rolled_until = (await conn.execute(_ROLLED_UNTIL)).scalar()
    day = await _window(conn, now - timedelta(hours=24), rolled_until)
    month = await _window(conn, now - timedelta(days=30), rolled_until)
    return TransferStats(
        sum(count for count, _ in day.values()),
        tuple((currency, volume) for currency, (_, volume) in sorted(day.items())),
        sum(count for count, _ in month.values()),
        tuple((currency, volume) for currency, (_, volume) in sorted(month.items())),
        0,
        now,
    )


class SqlStatsRollup:
    """Transfer's statistics rollup (t0027): `run_once` adds the hours closed since the last
    run to `transfer_stats_hourly`, a day of them per transaction; the first run starts 31
    days back."""

    def __init__(self, engine: AsyncEngine, margin: timedelta = ROLLUP_MARGIN) -> None:
        self._engine = engine
        self._margin = margin

    async def run_once(self) -> int:
        """How many hours were rolled up (0: none closed since the last run), a day of them
        per transaction until caught up (the first run: 31 days, in 31 transactions)."""
        total = 0
        for _ in range(_KEPT // _HOURS_PER_RUN + 1):
            rolled = await self._roll_up_a_day()
            total += rolled
            if rolled < _HOURS_PER_RUN // timedelta(hours=1):
                break
        return total

    async def _roll_up_a_day(self) -> int:
        """At most a day of the hours closed since the watermark, in one transaction."""
        async with self._engine.begin() as conn:
            rolled_until, closed = (
                await conn.execute(_LOCK_WATERMARK, {"margin": self._margin})
            ).one()
            # Hours older than the longest window are not kept: never rolled up either.
            start = closed - _KEPT if rolled_until is None else max(rolled_until, closed - _KEPT)
            end = min(closed, start + _HOURS_PER_RUN)
            if end <= start:
                return 0
            await conn.execute(_ROLL_UP, {"lo": start, "hi": end})
            await conn.execute(_MOVE_WATERMARK, {"until": end})
            await conn.execute(_FORGET, {"kept": _KEPT})
        return int((end - start) / timedelta(hours=1))
