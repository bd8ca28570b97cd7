"""A limit's refusal is timed by the database that decided it (transfer t0016), on real
PostgreSQL.

The ledger counts a movement's limits in the business day and month of its time, read from the
database's clock under the wallet's lock; the refusal tells that time (`decided_at`) and the use
case's Retry-After counts from it. The database's clock cannot be set, so the test brackets the
call between two readings of it, and gives the use case a service clock a day and seven hours
ahead of the database: a wait counted from that clock would be another one. Downgraded to t0015,
the functions tell no time and the use case falls back to its own clock (a new service against
an old function, mid-deploy); upgraded again, they are t0016's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from tests.integration.transfer.conftest import TOP_UP, LedgerWorld, Wallet, key
from vaultpay_transfer.domain.errors import LimitExceededError
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.windows import seconds_until, window_end
from vaultpay_transfer.service_layer.commands import AmountInput, TopUp
from vaultpay_transfer.service_layer.movements import MovementService
from vaultpay_transfer.service_layer.ports import MovementChecked

pytestmark = pytest.mark.integration

_AHEAD = timedelta(days=1, hours=7)
_LIMITED = ("transfer_send_money", "transfer_top_up", "transfer_withdraw")


class _AheadClock:
    """The service host's clock, a day and seven hours ahead of the database's."""

    def now(self) -> datetime:
        return datetime.now(UTC) + _AHEAD


class _NoWallet:
    """A top-up asks wallet nothing."""

    async def check_movement(
        self, user_id: str, pin: str, client_ip: str, check_id: str
    ) -> MovementChecked:
        raise AssertionError("a top-up checks no PIN")


def _service(ledger: LedgerWorld) -> MovementService:
    return MovementService(
        ledger.ledger,
        _NoWallet(),
        str,
        max_amount_minor=10**12,
        pin_check_key=b"k" * 32,
        clock=_AheadClock(),
    )


async def _limited_wallet(ledger: LedgerWorld, window: Literal["daily", "monthly"]) -> Wallet:
    """A wallet whose top-ups `window` allows 1,000 a day or month (the other window wide),
    800 of it used: a top-up of 500 is refused until the window resets."""
    wallet = await ledger.new_wallet()
    daily, monthly = (1_000, 10**9) if window == "daily" else (10**9, 1_000)
    await ledger.set_limit(wallet, "top_up", per_transaction=10**9, daily=daily, monthly=monthly)
    await ledger.fund(wallet, 800)
    return wallet


async def _refused_top_up(
    ledger: LedgerWorld, wallet: Wallet
) -> tuple[LimitExceededError, datetime, datetime]:
    """A top-up of 500 through the use case, refused; with the database's clock read just
    before and just after it."""
    conn = await ledger.owner()
    try:
        before: datetime = await conn.fetchval("SELECT clock_timestamp()")
        with pytest.raises(LimitExceededError) as refused:
            await _service(ledger).top_up(
                TopUp(
                    wallet.user_id,
                    key(wallet.user_id, TOP_UP),
                    AmountInput("INR", 500),
                    PaymentMethod.UPI,
                    f"upi-{uuid.uuid4().hex}",
                )
            )
        after: datetime = await conn.fetchval("SELECT clock_timestamp()")
    finally:
        await conn.close()
    return refused.value, before, after


def _wait(window: Literal["daily", "monthly"], at: datetime) -> int:
    return seconds_until(window_end(window, at), at)


async def _decided_at(ledger: LedgerWorld, wallet: Wallet) -> str | None:
    outcome = await ledger.ledger.top_up(
        key(wallet.user_id, TOP_UP),
        wallet.user_id,
        500,
        "INR",
        PaymentMethod.UPI,
        f"upi-{uuid.uuid4().hex}",
        "UPI test",
    )
    assert outcome.code in ("DAILY_LIMIT_EXCEEDED", "MONTHLY_LIMIT_EXCEEDED"), outcome
    return outcome.details.get("decided_at")


@pytest.mark.parametrize("window", ["daily", "monthly"])
async def test_a_limit_refusal_waits_from_the_time_the_database_decided_it_at(
    ledger: LedgerWorld, window: Literal["daily", "monthly"]
) -> None:
    wallet = await _limited_wallet(ledger, window)
    conn = await ledger.owner()
    try:
        before: datetime = await conn.fetchval("SELECT clock_timestamp()")
        told = await _decided_at(ledger, wallet)
        after: datetime = await conn.fetchval("SELECT clock_timestamp()")
    finally:
        await conn.close()
    assert told is not None
    assert before <= datetime.fromisoformat(told) <= after  # the database's clock

    error, before, after = await _refused_top_up(ledger, wallet)
    assert error.reason == f"{window.upper()}_LIMIT_EXCEEDED"
    # The wait of the window the database decided in, from its time: between the waits at the
    # two readings around the call, and not the one the service's own clock would tell.
    assert _wait(window, after) <= (error.retry_after_seconds or 0) <= _wait(window, before)
    ahead = datetime.now(UTC) + _AHEAD
    assert error.retry_after_seconds != _wait(window, ahead)
    assert "decided_at" not in error.metadata


@pytest.mark.parametrize("action", ["send", "withdraw"])
async def test_a_send_or_withdrawal_refused_for_its_limit_tells_when_too(
    ledger: LedgerWorld, action: str
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 5_000)
    await ledger.set_limit(alice, action, per_transaction=10**9, daily=1_000, monthly=10**9)
    conn = await ledger.owner()
    try:
        before: datetime = await conn.fetchval("SELECT clock_timestamp()")
        if action == "send":
            refused = await ledger.ledger.send_money(
                key(alice.user_id), alice.user_id, bob.wallet_id, 1_500, "INR", ""
            )
        else:
            refused = await ledger.withdraw(alice, 1_500)
        after: datetime = await conn.fetchval("SELECT clock_timestamp()")
    finally:
        await conn.close()
    assert refused.code == "DAILY_LIMIT_EXCEEDED", refused
    assert before <= datetime.fromisoformat(refused.details["decided_at"]) <= after


async def _functions(ledger: LedgerWorld) -> list[tuple[str, str, str]]:
    rows = await ledger.fetch(
        "SELECT p.proname::text AS name, pg_get_functiondef(p.oid) AS definition,"
        " pg_get_userbyid(p.proowner) || ' ' || coalesce(p.proacl::text, '') AS acl"
        " FROM pg_proc AS p"
        " WHERE p.pronamespace = 'public'::regnamespace AND p.proname = ANY($1::text[])"
        " ORDER BY 1",
        list(_LIMITED),
    )
    return [(r["name"], r["definition"], r["acl"]) for r in rows]


async def test_t0016_downgrades_to_t0015s_functions_and_upgrades_back(
    ledger: LedgerWorld,
) -> None:
    wallet = await _limited_wallet(ledger, "daily")
    head = await _functions(ledger)
    assert [name for name, _, _ in head] == sorted(_LIMITED)
    assert all("'decided_at', v_now" in definition for _, definition, _ in head)
    try:
        await ledger.migrate("downgrade", "t0015")
        old = await _functions(ledger)
        assert [(n, acl) for n, _, acl in old] == [(n, acl) for n, _, acl in head]
        assert not any("decided_at" in definition for _, definition, _ in old)
        assert await _decided_at(ledger, wallet) is None
        # A new service against t0015's functions: the wait counts from its own clock.
        error, _, _ = await _refused_top_up(ledger, wallet)
        before = datetime.now(UTC) + _AHEAD
        assert error.reason == "DAILY_LIMIT_EXCEEDED" and error.retry_after_seconds is not None
        assert abs(error.retry_after_seconds - _wait("daily", before)) <= 5
    finally:
        await ledger.migrate("upgrade", "head")
    assert await _functions(ledger) == head
    assert await _decided_at(ledger, wallet) is not None
