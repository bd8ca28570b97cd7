"""What transfer tells wallet (GetLimitUsage, behind wallet's GetLimits) and the admin dashboard
(GetTransferStats), read from real PostgreSQL by `SqlTransactionStore`: each action's use of
the wallet's business day and month (Asia/Kolkata), and the completed movements counted once
(the debit of a send, the credit of a top-up; a withdrawal once it is no longer pending) in the
last 24 hours and 30 days. The clock is the store's argument, so the day and month boundaries
are tested without waiting for them."""

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

    usage = {u.action: u for u in await store.usage(alice.wallet_id, now)}
    assert usage == {
        "top_up": UsageFigures("top_up", 10_000, 10_000),
        "send": UsageFigures("send", 1_500, 1_500),
        "withdraw": UsageFigures("withdraw", 300, 300),
    }
    assert await store.usage(bob.wallet_id, now) == []  # receiving uses no limit

    tomorrow = now + timedelta(days=1)
    same_month = tomorrow.astimezone(KOLKATA).month == now.astimezone(KOLKATA).month
    later = {u.action: u for u in await store.usage(alice.wallet_id, tomorrow)}
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


async def test_limit_usage_names_a_malformed_wallet_id_and_is_read_as_of_its_clock(
    ledger: LedgerWorld,
) -> None:
    from vaultpay_common.errors import ValidationError
    from vaultpay_transfer.service_layer.queries import TransactionQueries

    alice = await ledger.new_wallet()
    await ledger.fund(alice, 700)
    at = datetime.now(UTC).replace(microsecond=0)
    queries = TransactionQueries(SqlTransactionStore(ledger.engine), _FixedClock(at))
    for bad in ("", "   ", "wallet-1"):
        with pytest.raises(ValidationError) as refused:
            await queries.limit_usage(bad)
        assert [v.field for v in refused.value.violations] == ["wallet_id"]
    usage = await queries.limit_usage(f"  {alice.wallet_id.lower()} ")
    assert (usage.currency, usage.read_at) == ("INR", at)
    assert usage.actions[2] == UsageFigures("top_up", 700, 700)
