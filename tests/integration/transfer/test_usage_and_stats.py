"""What transfer tells wallet (GetLimitUsage, behind wallet's GetLimits) and the admin dashboard
(GetTransferStats), read from real PostgreSQL by `SqlTransactionStore`: each action's use of
the wallet's business day and month (Asia/Kolkata), and the completed movements counted once
(the debit of a send, the credit of a top-up; a withdrawal once it is no longer pending) in the
last 24 hours and 30 days. The usage is read in the business day of the database's clock (the
one the ledger's functions count by), or of a time given to the store, so the day and month
boundaries are tested at fixed instants (usage rows the owner writes), without waiting for them;
the statistics' clock is the store's argument. A movement is counted by the time it completed: a
withdrawal made before a window and settled inside it is in it, one made inside it and still
pending is not (read at instants set from the database's clock around them).

The module shares one database: the stats are read as the change since a snapshot taken before
the test's own movements, and "now" is the database's clock read around them (the ledger stamps
movements with it), never the test's clock read afterwards."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tests.integration.transfer.conftest import LedgerWorld, key
from tests.support import eventually
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.domain.model import TransferStats, UsageFigures
from vaultpay_transfer.domain.windows import BUSINESS_TIME_ZONE

pytestmark = pytest.mark.integration


async def _database_now(ledger: LedgerWorld) -> datetime:
    """The database's clock, the one the ledger functions stamp movements and usage with."""
    [row] = await ledger.fetch("SELECT clock_timestamp() AS at")
    at: datetime = row["at"]
    return at


def _business_day(at: datetime) -> date:
    return at.astimezone(BUSINESS_TIME_ZONE).date()


def _added(
    since: TransferStats, now: TransferStats
) -> tuple[int, dict[str, int], int, dict[str, int]]:
    """(daily count, daily volumes, monthly count, monthly volumes) added since `since`."""

    def volumes(
        old: tuple[tuple[str, int], ...], new: tuple[tuple[str, int], ...]
    ) -> dict[str, int]:
        earlier = dict(old)
        return {c: v - earlier.get(c, 0) for c, v in new if v != earlier.get(c, 0)}

    return (
        now.daily_count - since.daily_count,
        volumes(since.daily_volumes, now.daily_volumes),
        now.monthly_count - since.monthly_count,
        volumes(since.monthly_volumes, now.monthly_volumes),
    )


async def test_usage_per_action_and_the_counted_movements(ledger: LedgerWorld) -> None:
    store = SqlTransactionStore(ledger.engine)
    # Movements straddling midnight Asia/Kolkata (a run at 18:30 UTC) split their usage over
    # two business days: they are made once more, with new wallets; twice in a row fails.
    for _ in range(2):
        before = await _database_now(ledger)
        earlier = await store.stats(before)
        alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
        await ledger.fund(alice, 10_000)
        for amount in (1_000, 500):
            sent = await ledger.ledger.send_money(
                key(alice.user_id), alice.user_id, bob.wallet_id, amount, "INR", ""
            )
            assert sent.code == "OK", sent
        withdrawn = await ledger.withdraw(alice, 300)
        assert withdrawn.code == "OK", withdrawn
        now = await _database_now(ledger)
        if _business_day(before) == _business_day(now):
            break
    else:
        pytest.fail("the movements straddled midnight Asia/Kolkata twice in a row")

    read_at, used = await store.usage(alice.wallet_id, now)
    assert read_at == now
    assert {u.action: u for u in used} == {
        "top_up": UsageFigures("top_up", 10_000, 10_000),
        "send": UsageFigures("send", 1_500, 1_500),
        "withdraw": UsageFigures("withdraw", 300, 300),
    }
    assert await store.usage(bob.wallet_id, now) == (now, [])  # receiving uses no limit

    # The top-up's credit and the two sends' debits; the withdrawal is still pending.
    assert _added(earlier, await store.stats(now)) == (3, {"INR": 11_500}, 3, {"INR": 11_500})
    two_days_on = await store.stats(now + timedelta(days=2))
    assert two_days_on.daily_count == 0  # nothing was made in the day before that instant
    assert _added(earlier, two_days_on)[2:] == (3, {"INR": 11_500})
    assert (await store.stats(now + timedelta(days=31))).monthly_count == 0


async def test_a_withdrawal_counts_in_the_windows_it_settled_in_not_where_it_was_made(
    ledger: LedgerWorld,
) -> None:
    """`mark` lies between a withdrawal's creation and its settlement (both stamped by the
    database's clock): read at `mark + 24 h`, the day's window starts at `mark`; read at `mark +
    30 days`, the month's does. Each read is compared with the same read before the settlement
    (the module's other movements completed before `mark`). A withdrawal made after `mark` and
    still pending is in neither. By creation time (before t0018's change) the settled one was
    missing from both."""
    store = SqlTransactionStore(ledger.engine)
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    made = await ledger.withdraw(alice, 400)
    assert made.code == "OK" and made.transaction is not None, made
    created_at = made.transaction.created_at

    async def past_creation() -> datetime | None:
        at = await _database_now(ledger)
        return at if at > created_at else None

    # The database's clock read once it has moved past the withdrawal's creation.
    mark = await eventually(past_creation, within=10, what="the database's clock past creation")
    day_on, month_on = mark + timedelta(hours=24), mark + timedelta(days=30)
    before = {at: await store.stats(at) for at in (day_on, month_on)}

    settled = await ledger.ledger.settle_payout(made.transaction.transaction_id)
    assert settled.outcome == "OK" and settled.transaction is not None, settled
    completed_at = settled.transaction.completed_at
    assert completed_at is not None and completed_at > mark
    pending = await ledger.withdraw(alice, 250)  # made inside both windows, never settled
    assert pending.code == "OK" and pending.transaction is not None, pending
    assert pending.transaction.created_at > mark

    # The day from `mark`: the settled withdrawal (made before it), not the pending one.
    assert _added(before[day_on], await store.stats(day_on)) == (1, {"INR": 400}, 1, {"INR": 400})
    # The month from `mark` (its last day starts 29 days later): the settled one only.
    assert _added(before[month_on], await store.stats(month_on)) == (0, {}, 1, {"INR": 400})


async def test_usage_resets_at_midnight_asia_kolkata_and_with_the_month(
    ledger: LedgerWorld,
) -> None:
    """Usage rows at fixed business days (as the ledger functions keep them), read at fixed
    instants on either side of midnight Asia/Kolkata (18:30 UTC) and of a month's end."""
    wallet = await ledger.new_wallet()
    conn = await ledger.owner()
    try:
        await conn.executemany(
            "INSERT INTO limit_usage (wallet_id, action, day, used) VALUES ($1, $2, $3, $4)",
            [
                (wallet.wallet_id, "send", date(2026, 1, 30), 400),
                (wallet.wallet_id, "send", date(2026, 1, 31), 1_000),
                (wallet.wallet_id, "send", date(2025, 12, 31), 9_000),  # the month before
                (wallet.wallet_id, "withdraw", date(2026, 2, 1), 50),
            ],
        )
    finally:
        await conn.close()
    store = SqlTransactionStore(ledger.engine)

    async def usage(at: datetime) -> dict[str, tuple[int, int]]:
        return {
            u.action: (u.daily_used_minor, u.monthly_used_minor)
            for u in (await store.usage(wallet.wallet_id, at))[1]
        }

    # 30 January, 17:30 in Kolkata: that day's use only (the 31st is still to come).
    assert await usage(datetime(2026, 1, 30, 12, 0, tzinfo=UTC)) == {"send": (400, 400)}
    # 31 January, 23:59:59 in Kolkata: the day's use, and the month's since the 1st.
    assert await usage(datetime(2026, 1, 31, 18, 29, 59, tzinfo=UTC)) == {"send": (1_000, 1_400)}
    # One second later it is 1 February in Kolkata (still 31 January in UTC): a new month.
    assert await usage(datetime(2026, 1, 31, 18, 30, tzinfo=UTC)) == {"withdraw": (50, 50)}
    # A later day of February: nothing today, the month's use still counted.
    assert await usage(datetime(2026, 2, 15, 6, 0, tzinfo=UTC)) == {"withdraw": (0, 50)}


class _FixedClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


async def test_limit_usage_names_a_malformed_wallet_id_and_is_read_by_the_databases_clock(
    ledger: LedgerWorld,
) -> None:
    from vaultpay_common.errors import ValidationError
    from vaultpay_transfer.service_layer.queries import TransactionQueries

    # A service host a day and seven hours ahead: its day is not the one the ledger counted in.
    ahead = datetime.now(UTC) + timedelta(days=1, hours=7)
    queries = TransactionQueries(SqlTransactionStore(ledger.engine), _FixedClock(ahead))
    for bad in ("", "   ", "wallet-1"):
        with pytest.raises(ValidationError) as refused:
            await queries.limit_usage(bad)
        assert [v.field for v in refused.value.violations] == ["wallet_id"]
    for _ in range(2):  # once more if the top-up and the reading straddle midnight in Kolkata
        before = await _database_now(ledger)
        alice = await ledger.new_wallet()
        await ledger.fund(alice, 700)
        usage = await queries.limit_usage(f"  {alice.wallet_id.lower()} ")
        after = await _database_now(ledger)
        if _business_day(before) == _business_day(after):
            break
    else:
        pytest.fail("the top-up straddled midnight Asia/Kolkata twice in a row")
    assert usage.currency == "INR"
    assert before <= usage.read_at <= after
    assert usage.actions[2] == UsageFigures("top_up", 700, 700)
    # The store answers the same for a wallet with no usage, as of the database's clock too.
    bob = await ledger.new_wallet()
    nothing = await queries.limit_usage(bob.wallet_id)
    assert nothing.read_at >= after
    assert all(u.daily_used_minor == u.monthly_used_minor == 0 for u in nothing.actions)
