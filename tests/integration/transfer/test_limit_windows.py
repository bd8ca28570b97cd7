"""The windows the ledger's own functions count a limit in: the business day (midnight
Asia/Kolkata, 18:30 UTC) and its month, for SendMoney, TopUp and Withdraw alike.

`transfer_limit_refusal` sums `limit_usage` of the movement's business day for the daily
limit and of that day's month up to it for the monthly one; `transfer_business_day` is the
day every money function takes under the wallet's row lock. Usage of other days is put in
`limit_usage` as the database owner, at days relative to the business day the database
itself answers, so each test means the same whatever the real time. Each test also moves
money that a wrong window would refuse (or lets through money it would pass): counting
yesterday in the day, leaving the month's earlier days out of the month, or counting last
month in either.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.integration.transfer.conftest import TOP_UP, WITHDRAW, LedgerWorld, Wallet, key
from vaultpay_transfer.adapters.ledger_pg import PgLedger
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.outcomes import LedgerOutcome

ACTIONS = ("send", "top_up", "withdraw")
T = TypeVar("T")
KOLKATA = ZoneInfo("Asia/Kolkata")


async def _business_day(ledger: LedgerWorld) -> date:
    [row] = await ledger.fetch("SELECT transfer_business_day(clock_timestamp()) AS day")
    day: date = row["day"]
    return day


async def _on_one_business_day(
    ledger: LedgerWorld, scenario: Callable[[date], Awaitable[T]], *, attempts: int = 3
) -> tuple[date, T]:
    """Runs `scenario(today)` (it sets up a fresh wallet, puts usage at days relative to
    `today` and moves money) and returns `today` and what it answered, once the business day
    read after it is still `today`: every movement in between was made on that day. When
    Kolkata's midnight (18:30 UTC) fell in between, the scenario runs again on the new day.
    Scenarios return what they saw and the caller asserts on it, so a run that straddled
    midnight is retried rather than failed."""
    for _ in range(attempts):
        today = await _business_day(ledger)
        answered = await scenario(today)
        if await _business_day(ledger) == today:
            return today, answered
    raise AssertionError(f"the business day changed during each of {attempts} attempts")


async def _used(ledger: LedgerWorld, wallet: Wallet, action: str, day: date, amount: int) -> None:
    conn = await ledger.owner()
    try:
        await conn.execute(
            "INSERT INTO limit_usage (wallet_id, action, day, used) VALUES ($1, $2, $3, $4)",
            wallet.wallet_id,
            action,
            day,
            amount,
        )
    finally:
        await conn.close()


async def _usage(ledger: LedgerWorld, wallet: Wallet, action: str) -> dict[date, int]:
    rows = await ledger.fetch(
        "SELECT day, used FROM limit_usage WHERE wallet_id = $1 AND action = $2",
        wallet.wallet_id,
        action,
    )
    return {r["day"]: r["used"] for r in rows}


async def _wallet_with_limits(
    ledger: LedgerWorld, action: str, *, daily: int, monthly: int
) -> Wallet:
    """A FULL wallet with 100,000 in it (funded before its limits are set: funding is a
    top-up) and `action`'s windows set by an admin override."""
    wallet = await ledger.new_wallet()
    await ledger.fund(wallet, 100_000)
    conn = await ledger.owner()
    try:  # the funding's own usage is not what these tests count
        await conn.execute("DELETE FROM limit_usage WHERE wallet_id = $1", wallet.wallet_id)
    finally:
        await conn.close()
    await ledger.set_limit(wallet, action, per_transaction=10_000_000, daily=daily, monthly=monthly)
    return wallet


async def _move(
    ledger: LedgerWorld, action: str, wallet: Wallet, amount: int, via: PgLedger | None = None
) -> LedgerOutcome:
    """One movement of `action` by `wallet`'s owner, as the ledger (or `via`) answers it."""
    moves = via or ledger.ledger
    if action == "send":
        recipient = await ledger.new_wallet()
        return await moves.send_money(
            key(wallet.user_id), wallet.user_id, recipient.wallet_id, amount, "INR", ""
        )
    if action == "top_up":
        return await moves.top_up(
            key(wallet.user_id, TOP_UP),
            wallet.user_id,
            amount,
            "INR",
            PaymentMethod.UPI,
            f"upi-{uuid.uuid4().hex}",
            "UPI test",
        )
    return await moves.withdraw(
        key(wallet.user_id, WITHDRAW),
        wallet.user_id,
        amount,
        "INR",
        "HDFC0001234",
        "····9012",
        "b" * 64,
        "Account Holder",
    )


async def test_the_business_day_turns_at_midnight_in_kolkata_which_is_1830_utc(
    ledger: LedgerWorld,
) -> None:
    rows = await ledger.fetch(
        "SELECT transfer_business_day('2026-11-30 18:29:59.999999+00') AS before_midnight,"
        " transfer_business_day('2026-11-30 18:30:00+00') AS at_midnight,"
        " transfer_business_day('2026-12-01 18:29:59.999999+00') AS a_day_later"
    )
    assert (rows[0]["before_midnight"], rows[0]["at_midnight"], rows[0]["a_day_later"]) == (
        date(2026, 11, 30),
        date(2026, 12, 1),  # the next day, and the next month
        date(2026, 12, 1),
    )


async def test_the_databases_business_day_is_todays_date_in_kolkata(ledger: LedgerWorld) -> None:
    """The day the other tests take as "today" is the real one, not one the function agrees
    with itself about."""
    before = datetime.now(UTC).astimezone(KOLKATA).date()
    today = await _business_day(ledger)
    after = datetime.now(UTC).astimezone(KOLKATA).date()
    assert today in (before, after)


@pytest.mark.parametrize("action", ACTIONS)
async def test_a_movement_counts_toward_the_business_day_it_was_made_on(
    ledger: LedgerWorld, action: str
) -> None:
    wallet = await _wallet_with_limits(ledger, action, daily=100_000, monthly=1_000_000)
    before = await _business_day(ledger)
    moved = await _move(ledger, action, wallet, 700)
    after = await _business_day(ledger)
    assert moved.code == "OK", moved
    usage = await _usage(ledger, wallet, action)
    assert len(usage) == 1 and set(usage) <= {before, after}, usage
    assert sum(usage.values()) == 700


# Kolkata's date is never both Kiritimati's (UTC+14) and that of UTC-12: a function that took
# the session's own date would count toward another day in one of the two.
@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12"])
@pytest.mark.parametrize("action", ACTIONS)
async def test_the_business_day_is_kolkatas_whatever_the_sessions_time_zone(
    ledger: LedgerWorld, action: str, zone: str
) -> None:
    wallet = await _wallet_with_limits(ledger, action, daily=100_000, monthly=1_000_000)
    engine = create_async_engine(
        ledger.dbs.app_dsn("transfer"),
        pool_size=1,
        connect_args={"server_settings": {"timezone": zone}},
    )
    try:
        before = datetime.now(UTC).astimezone(KOLKATA).date()
        moved = await _move(ledger, action, wallet, 700, via=PgLedger(engine))
        after = datetime.now(UTC).astimezone(KOLKATA).date()
    finally:
        await engine.dispose()
    assert moved.code == "OK", moved
    usage = await _usage(ledger, wallet, action)
    assert len(usage) == 1 and set(usage) <= {before, after}, (usage, before)


@pytest.mark.parametrize("action", ACTIONS)
async def test_yesterdays_usage_does_not_count_toward_todays_daily_limit(
    ledger: LedgerWorld, action: str
) -> None:
    async def scenario(today: date) -> tuple[LedgerOutcome, LedgerOutcome, dict[date, int]]:
        wallet = await _wallet_with_limits(ledger, action, daily=1_000, monthly=1_000_000)
        yesterday = today - timedelta(days=1)
        await _used(ledger, wallet, action, yesterday, 1_000)  # yesterday's whole daily limit
        moved = await _move(ledger, action, wallet, 1_000)
        # Today's own usage does count: one more unit is over the day.
        refused = await _move(ledger, action, wallet, 1)
        return moved, refused, await _usage(ledger, wallet, action)

    today, (moved, refused, usage) = await _on_one_business_day(ledger, scenario)
    yesterday = today - timedelta(days=1)
    assert moved.code == "OK", moved
    assert refused.code == "DAILY_LIMIT_EXCEEDED", refused
    this_month = yesterday.month == today.month
    assert (refused.details["used_minor"], refused.details["monthly_used_minor"]) == (
        "1000",
        "2000" if this_month else "1000",
    )
    assert usage[yesterday] == 1_000


@pytest.mark.parametrize(
    ("day", "earlier"),
    [
        (date(2026, 3, 15), date(2026, 3, 1)),  # the month's first day
        (date(2026, 3, 2), date(2026, 3, 1)),  # yesterday, in the same month
        (date(2026, 2, 28), date(2026, 2, 1)),  # the last day of a short month
    ],
)
@pytest.mark.parametrize("action", ACTIONS)
async def test_an_earlier_day_of_this_month_counts_toward_the_month_but_not_the_day(
    ledger: LedgerWorld, action: str, day: date, earlier: date
) -> None:
    """1,000 used on `earlier`, an earlier day of `day`'s month: 500 more on `day` is within
    the day (1,000) and the month (1,500); with those 500 used on `day`, 1 more is refused by
    the month alone. At fixed business days, through the function every money function calls
    with its business day: the money functions take the database's clock, which a test cannot
    set, and on the 1st of a month no earlier day of it exists, so a check relative to today
    would not run on those days. That they pass today's business day is checked above."""
    wallet = await ledger.new_wallet()
    await ledger.set_limit(wallet, action, per_transaction=10_000_000, daily=1_000, monthly=1_500)
    await _used(ledger, wallet, action, earlier, 1_000)

    async def refusals(amount: int) -> list[tuple[str, dict[str, str]]]:
        rows = await ledger.fetch(
            "SELECT outcome, reply FROM transfer_limit_refusal($1, 'FULL', $2, $3, $4, 'INR')",
            wallet.wallet_id,
            action,
            amount,
            day,
        )
        return [(r["outcome"], json.loads(r["reply"])) for r in rows]

    assert await refusals(500) == []  # 1,500 this month, 500 today
    await _used(ledger, wallet, action, day, 500)  # as the movement of those 500 counts them
    [(outcome, reply)] = await refusals(1)  # 501 today: only the month refuses
    assert outcome == "MONTHLY_LIMIT_EXCEEDED"
    assert (reply["limit_minor"], reply["used_minor"]) == ("1500", "1500")


@pytest.mark.parametrize("action", ACTIONS)
async def test_last_months_usage_counts_toward_neither_window(
    ledger: LedgerWorld, action: str
) -> None:
    async def scenario(today: date) -> tuple[LedgerOutcome, LedgerOutcome]:
        last_day_of_last_month = today.replace(day=1) - timedelta(days=1)
        wallet = await _wallet_with_limits(ledger, action, daily=1_000, monthly=1_000)
        await _used(ledger, wallet, action, last_day_of_last_month, 1_000)
        await _used(ledger, wallet, action, last_day_of_last_month.replace(day=1), 1_000)
        moved = await _move(ledger, action, wallet, 1_000)
        refused = await _move(ledger, action, wallet, 1)
        return moved, refused

    _, (moved, refused) = await _on_one_business_day(ledger, scenario)
    assert moved.code == "OK", moved
    assert refused.code == "DAILY_LIMIT_EXCEEDED", refused
    assert refused.details["monthly_used_minor"] == "1000"


@pytest.mark.parametrize(
    ("day", "earlier", "expected"),
    [
        # The 1st after the last day of the month before: yesterday and last month at once.
        (date(2026, 3, 1), date(2026, 2, 28), None),
        (date(2026, 3, 31), date(2026, 3, 1), "MONTHLY_LIMIT_EXCEEDED"),
        (date(2026, 3, 31), date(2026, 3, 30), "MONTHLY_LIMIT_EXCEEDED"),
        (date(2026, 3, 31), date(2026, 3, 31), "DAILY_LIMIT_EXCEEDED"),
        (date(2026, 1, 1), date(2025, 12, 31), None),
        (date(2026, 3, 15), date(2025, 3, 15), None),  # the same day of last year's month
    ],
)
async def test_the_windows_at_fixed_days_whatever_today_is(
    ledger: LedgerWorld, day: date, earlier: date, expected: str | None
) -> None:
    """The function the money functions call, at fixed days (the 1st of a month included,
    which the tests above meet only on such a day): 600 used on `earlier`, 500 more on
    `day` against a daily limit of 1,000 and a monthly one of 1,000."""
    wallet = await ledger.new_wallet()
    await ledger.set_limit(wallet, "send", per_transaction=10_000, daily=1_000, monthly=1_000)
    await _used(ledger, wallet, "send", earlier, 600)
    rows = await ledger.fetch(
        "SELECT outcome FROM transfer_limit_refusal($1, 'FULL', 'send', 500, $2, 'INR')",
        wallet.wallet_id,
        day,
    )
    assert [r["outcome"] for r in rows] == ([] if expected is None else [expected])
