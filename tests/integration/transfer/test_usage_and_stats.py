"""What transfer tells wallet (GetLimitUsage, behind wallet's GetLimits) and the admin dashboard
(GetTransferStats), read from real PostgreSQL by `SqlTransactionStore`: each action's use of
the wallet's business day and month (Asia/Kolkata), and the completed movements counted once
(the debit of a send, the credit of a top-up; a withdrawal once it is no longer pending) in the
last 24 hours and 30 days. The usage is read in the business day of the database's clock (the
one the ledger's functions count by), or of a time given to the store, so the day and month
boundaries are tested without waiting for them; the statistics' clock is the store's argument."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.integration.transfer.conftest import LedgerWorld, key
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.domain.model import UsageFigures

pytestmark = pytest.mark.integration

KOLKATA = ZoneInfo("Asia/Kolkata")


async def test_usage_per_action_and_the_counted_movements(ledger: LedgerWorld) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    for amount in (1_000, 500):
        sent = await ledger.ledger.send_money(
            key(alice.user_id), alice.user_id, bob.wallet_id, amount, "INR", ""
        )
        assert sent.code == "OK", sent
    withdrawn = await ledger.withdraw(alice, 300)
    assert withdrawn.code == "OK", withdrawn
    store = SqlTransactionStore(ledger.engine)
    now = datetime.now(UTC)

    read_at, used = await store.usage(alice.wallet_id, now)
    assert read_at == now
    assert {u.action: u for u in used} == {
        "top_up": UsageFigures("top_up", 10_000, 10_000),
        "send": UsageFigures("send", 1_500, 1_500),
        "withdraw": UsageFigures("withdraw", 300, 300),
    }
    assert await store.usage(bob.wallet_id, now) == (now, [])  # receiving uses no limit

    tomorrow = now + timedelta(days=1)
    same_month = tomorrow.astimezone(KOLKATA).month == now.astimezone(KOLKATA).month
    later = {u.action: u for u in (await store.usage(alice.wallet_id, tomorrow))[1]}
    expected_month = 1_500 if same_month else 0
    assert later.get("send", UsageFigures("send", 0, 0)) == UsageFigures("send", 0, expected_month)

    stats = await store.stats(now)
    # The top-up's credit and the two sends' debits; the withdrawal is still pending.
    assert (stats.daily_count, stats.daily_volumes) == (3, (("INR", 11_500),))
    assert (stats.monthly_count, stats.monthly_volumes) == (3, (("INR", 11_500),))
    two_days_on = await store.stats(now + timedelta(days=2))
    assert (two_days_on.daily_count, two_days_on.monthly_count) == (0, 3)
    assert (await store.stats(now + timedelta(days=31))).monthly_count == 0


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

    alice = await ledger.new_wallet()
    await ledger.fund(alice, 700)
    # A service host a day and seven hours ahead: its day is not the one the ledger counted in.
    ahead = datetime.now(UTC) + timedelta(days=1, hours=7)
    queries = TransactionQueries(SqlTransactionStore(ledger.engine), _FixedClock(ahead))
    for bad in ("", "   ", "wallet-1"):
        with pytest.raises(ValidationError) as refused:
            await queries.limit_usage(bad)
        assert [v.field for v in refused.value.violations] == ["wallet_id"]
    conn = await ledger.owner()
    try:
        before: datetime = await conn.fetchval("SELECT clock_timestamp()")
        usage = await queries.limit_usage(f"  {alice.wallet_id.lower()} ")
        after: datetime = await conn.fetchval("SELECT clock_timestamp()")
    finally:
        await conn.close()
    assert usage.currency == "INR"
    assert before <= usage.read_at <= after
    assert usage.actions[2] == UsageFigures("top_up", 700, 700)
    # The store answers the same for a wallet with no usage, as of the database's clock too.
    bob = await ledger.new_wallet()
    nothing = await queries.limit_usage(bob.wallet_id)
    assert nothing.read_at >= after
    assert all(u.daily_used_minor == u.monthly_used_minor == 0 for u in nothing.actions)
