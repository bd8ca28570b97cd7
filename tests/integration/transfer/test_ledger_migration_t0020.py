"""Migration t0020 on real PostgreSQL: a missing tier default fails closed.

A window with neither an admin override nor its tier's default setting is capped at 0, also
for a user who set their own (lower) limit: t0002's `transfer_caps` gave that user's limit
(PostgreSQL's least() ignores NULLs), so the movement went through. The last test downgrades
to t0019 (the review's answers) and upgrades again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.integration.transfer.conftest import (
    TOP_UP,
    LedgerWorld,
    Wallet,
    footprint,
    key,
    run_transfer_cli,
)
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.outcomes import LedgerOutcome

pytestmark = pytest.mark.integration

BASIC_TOP_UP_DAILY = "limits.tier_basic.top_up.daily"


def _reference() -> str:
    return f"upi-{uuid.uuid4().hex}"


async def _top_up(
    ledger: LedgerWorld, wallet: Wallet, amount: int, reference: str | None = None
) -> LedgerOutcome:
    """A top-up by UPI under a new request id (a fresh reference if none)."""
    return await ledger.ledger.top_up(
        key(wallet.user_id, TOP_UP),
        wallet.user_id,
        amount,
        "INR",
        PaymentMethod.UPI,
        reference or _reference(),
        "UPI test",
    )


@asynccontextmanager
async def _setting_missing(ledger: LedgerWorld, setting: str) -> AsyncIterator[None]:
    """`setting` deleted from system_settings for the block, then put back as it was."""
    owner = await ledger.owner()
    try:
        row = await owner.fetchrow(
            "DELETE FROM system_settings WHERE key = $1 RETURNING key, value, updated_at,"
            " updated_by",
            setting,
        )
        assert row is not None, setting
        try:
            yield
        finally:
            await owner.execute(
                "INSERT INTO system_settings (key, value, updated_at, updated_by)"
                " VALUES ($1, $2, $3, $4)",
                *row,
            )
    finally:
        await owner.close()


async def _caps(ledger: LedgerWorld, wallet: Wallet, tier: str, action: str) -> tuple[int, ...]:
    [row] = await ledger.fetch(
        "SELECT * FROM transfer_caps($1, $2, $3)", wallet.wallet_id, tier, action
    )
    return (row["per_transaction"], row["daily"], row["monthly"])


async def test_a_missing_tier_default_refuses_a_top_up_under_the_users_own_limit(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet(tier="BASIC")
    await ledger.set_limit(alice, "top_up", source="USER", daily=5_000)
    async with _setting_missing(ledger, BASIC_TOP_UP_DAILY):
        assert (await _caps(ledger, alice, "BASIC", "top_up"))[1] == 0
        before = await footprint(ledger)
        outcome = await _top_up(ledger, alice, 100)
        assert (outcome.code, outcome.transaction) == ("DAILY_LIMIT_EXCEEDED", None), outcome
        assert outcome.details["limit_minor"] == "0"
        assert await footprint(ledger) == before
    assert await ledger.balance(alice) == 0
    # The default back: the user's own limit is the cap again.
    assert (await _caps(ledger, alice, "BASIC", "top_up"))[1] == 5_000
    assert (await _top_up(ledger, alice, 100)).code == "OK"


async def test_an_admin_override_still_stands_in_for_a_missing_default(
    ledger: LedgerWorld,
) -> None:
    """The base is the admin override's window when set: the user's lower limit still caps
    it, and without one the override is the cap."""
    bob, carol = await ledger.new_wallet(tier="BASIC"), await ledger.new_wallet(tier="BASIC")
    for wallet in (bob, carol):
        await ledger.set_limit(wallet, "top_up", daily=8_000)
    await ledger.set_limit(bob, "top_up", source="USER", daily=3_000)
    async with _setting_missing(ledger, BASIC_TOP_UP_DAILY):
        assert (await _caps(ledger, bob, "BASIC", "top_up"))[1] == 3_000
        assert (await _caps(ledger, carol, "BASIC", "top_up"))[1] == 8_000
        assert (await _top_up(ledger, bob, 3_001)).code == "DAILY_LIMIT_EXCEEDED"
        assert (await _top_up(ledger, bob, 3_000)).code == "OK"


async def test_t0019s_caps_let_the_users_limit_through_and_t0020_closes_them_again(
    ledger: LedgerWorld,
) -> None:
    """Downgraded to t0019 (t0002's transfer_caps, put back by t0020's downgrade), the user's
    own limit was the cap; upgraded again, the movement is refused. Last in the module: it
    migrates the module's database."""
    dave = await ledger.new_wallet(tier="BASIC")
    await ledger.set_limit(dave, "top_up", source="USER", daily=5_000)
    await ledger.migrate("downgrade", "t0019")
    try:
        [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
        assert version["version_num"] == "t0019"
        async with _setting_missing(ledger, BASIC_TOP_UP_DAILY):
            assert (await _caps(ledger, dave, "BASIC", "top_up"))[1] == 5_000
            assert (await _top_up(ledger, dave, 100)).code == "OK"
    finally:
        migrated = await asyncio.to_thread(run_transfer_cli, ledger.env, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
    assert version["version_num"] == "t0020"
    async with _setting_missing(ledger, BASIC_TOP_UP_DAILY):
        assert (await _top_up(ledger, dave, 100)).code == "DAILY_LIMIT_EXCEEDED"
    assert await ledger.balance(dave) == 100
