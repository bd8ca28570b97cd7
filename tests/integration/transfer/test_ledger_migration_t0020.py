"""Migration t0020 on real PostgreSQL: a missing tier default fails closed, TopUp tells a
credited payment reference early only to the wallet it credited, and a finished payout's
answer tells how it finished in the shape every release reads.

* A window with neither an admin override nor its tier's default setting is capped at 0, also
  for a user who set their own (lower) limit: t0002's `transfer_caps` gave that user's limit
  (PostgreSQL's least() ignores NULLs), so the movement went through.
* t0019's TopUp answered PAYMENT_REFERENCE_USED for a reference credited to ANY wallet before
  the wallet's own refusals, so a frozen or KYC-NONE wallet could probe other users'
  references. Now that early answer is for the wallet's own credit only (the lost-reply retry
  under a new request id, tests/integration/transfer/test_top_up_reference_retry.py); another
  wallet's reference is refused after the wallet's own refusals, by the INSERT's backstop,
  still PAYMENT_REFERENCE_USED and still credited once, racing or not.
* A payout's settle and return answer ALREADY_FINISHED with the payout's withdrawal row, as
  their OK does: the previous release's adapter, which parses any reply as a transaction row,
  reads it during a rolling deploy, and this release tells from its status how the payout
  ended.

The last test downgrades to t0019 (the review's answers) and upgrades again.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from tests.integration.transfer.conftest import (
    TOP_UP,
    TRANSFER_HEAD,
    LedgerWorld,
    Wallet,
    footprint,
    key,
    ledger_is_clean,
    plain_dsn,
    run_transfer_cli,
    top_up_on,
    waiting_on_a_lock,
)
from vaultpay_transfer.adapters.rows import transaction_from_row
from vaultpay_transfer.domain.model import PaymentMethod, TransactionStatus
from vaultpay_transfer.domain.outcomes import LedgerOutcome
from vaultpay_transfer.service_layer.ports import PayoutSettlement
from vaultpay_wallet.domain.model import FreezeSource

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


async def _credited(ledger: LedgerWorld) -> tuple[Wallet, str]:
    """A wallet topped up by 1,000 with a reference: the wallet and the reference."""
    alice = await ledger.new_wallet()
    reference = _reference()
    assert (await _top_up(ledger, alice, 1_000, reference)).code == "OK"
    return alice, reference


async def _close(ledger: LedgerWorld, wallet: Wallet) -> None:
    owner = await ledger.owner()
    try:
        await owner.execute(
            "UPDATE wallets SET status = 'CLOSED', closed_at = now() WHERE id = $1",
            wallet.wallet_id,
        )
    finally:
        await owner.close()


async def test_another_wallets_reference_is_refused_for_the_wallets_own_state_first(
    ledger: LedgerWorld,
) -> None:
    """Frozen, closed, KYC-NONE or over its limit, a wallet trying a reference credited to
    another wallet is told its own refusal, as for any fresh reference: nothing about the
    other wallet's payment."""
    _, reference = await _credited(ledger)
    frozen, closed, unverified, limited = (
        await ledger.new_wallet(),
        await ledger.new_wallet(),
        await ledger.new_wallet(tier="NONE"),
        await ledger.new_wallet(),
    )
    await ledger.freeze(frozen, FreezeSource.ADMIN)
    await _close(ledger, closed)
    await ledger.set_limit(limited, "top_up", daily=500, monthly=100_000)
    before = await footprint(ledger)
    for wallet, refusal in (
        (frozen, "WALLET_FROZEN"),
        (closed, "WALLET_CLOSED"),
        (unverified, "KYC_NOT_VERIFIED"),
        (limited, "DAILY_LIMIT_EXCEEDED"),
    ):
        probe = await _top_up(ledger, wallet, 1_000, reference)
        assert (probe.code, probe.transaction) == (refusal, None), (refusal, probe)
        # Told the same as for a reference nobody was credited with.
        assert (await _top_up(ledger, wallet, 1_000)).code == refusal
    assert await footprint(ledger) == before


async def test_another_wallets_reference_is_still_refused_and_never_credited_twice(
    ledger: LedgerWorld,
) -> None:
    """A wallet that may be topped up is refused another wallet's reference by the INSERT's
    backstop, having written nothing; the wallet's own retry is still told first, frozen."""
    alice, reference = await _credited(ledger)
    bob = await ledger.new_wallet()
    before = await footprint(ledger)
    taken = await _top_up(ledger, bob, 1_000, reference)
    assert (taken.code, taken.transaction) == ("PAYMENT_REFERENCE_USED", None), taken
    assert await footprint(ledger) == before
    await ledger.freeze(alice, FreezeSource.SELF)
    own = await _top_up(ledger, alice, 1_000, reference)
    assert (own.code, own.transaction) == ("PAYMENT_REFERENCE_USED", None), own
    assert (await ledger.balance(alice), await ledger.balance(bob)) == (1_000, 0)


@pytest.mark.parametrize("first_commits", [True, False], ids=["commits", "rolls_back"])
async def test_two_wallets_racing_one_reference_credit_it_once(
    ledger: LedgerWorld, first_commits: bool
) -> None:
    """Alice's top-up with the reference has written its payment row and not committed when
    Bob's, under his own row lock and past his own checks (the early lookup saw no credit of
    his), waits for it on the INSERT. Alice commits: Bob is refused PAYMENT_REFERENCE_USED.
    She rolls back: Bob is credited."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    reference = _reference()
    first = await ledger.owner()
    try:
        transaction = first.transaction()
        await transaction.start()
        assert await top_up_on(first, key(alice.user_id, TOP_UP), alice, 1_000, reference) == "OK"
        racing = asyncio.create_task(_top_up(ledger, bob, 1_000, reference))
        await waiting_on_a_lock(ledger, "transfer_top_up")
        if first_commits:
            await transaction.commit()
        else:
            await transaction.rollback()
    finally:
        await first.close()
    second = await racing
    if first_commits:
        assert (second.code, second.transaction) == ("PAYMENT_REFERENCE_USED", None), second
        assert (await ledger.balance(alice), await ledger.balance(bob)) == (1_000, 0)
    else:
        assert second.code == "OK", second
        assert (await ledger.balance(alice), await ledger.balance(bob)) == (0, 1_000)
    [payments] = await ledger.fetch(
        "SELECT count(*) AS n FROM top_up_payments WHERE payment_reference = $1", reference
    )
    assert payments["n"] == 1
    await ledger_is_clean(ledger)


async def test_ten_wallets_topping_up_one_reference_at_once_credit_it_once(
    ledger: LedgerWorld,
) -> None:
    wallets = [await ledger.new_wallet() for _ in range(10)]
    reference = _reference()
    answers = await asyncio.gather(*(_top_up(ledger, w, 1_000, reference) for w in wallets))
    assert sorted(a.code for a in answers) == ["OK"] + ["PAYMENT_REFERENCE_USED"] * 9, answers
    assert sum([await ledger.balance(w) for w in wallets]) == 1_000
    await ledger_is_clean(ledger)


def _previous_releases_settlement(outcome: str, reply: str | None) -> PayoutSettlement:
    """How the previous release's adapter read a settle or return answer (`PgLedger.
    _settlement` as of 8f4a911, before t0020), kept here as it was: any reply as a withdrawal
    row. Its payout worker caught only unavailability and timeouts around it, so a reply it
    could not parse ended its whole round, during a rolling deploy (t0020 runs before the
    old processes are replaced)."""
    return PayoutSettlement(
        outcome,
        None if reply is None else transaction_from_row(json.loads(reply)),
    )


async def test_a_finished_payouts_answer_reads_in_the_previous_release_and_tells_how_it_ended(
    ledger: LedgerWorld,
) -> None:
    """ALREADY_FINISHED replies the withdrawal's row as the OK that finished the payout
    replied it: the previous release's parsing reads it (COMPLETED, FAILED), and the adapter
    tells the payout's end from it (SETTLED, RETURNED), a contradiction included."""
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    settled, returned = [
        (await ledger.withdraw(alice, amount)).transaction for amount in (3_000, 2_000)
    ]
    assert settled is not None and returned is not None
    app = await asyncpg.connect(plain_dsn(ledger.dbs.app_dsn("transfer")))
    try:

        async def previous_release(sql: str, *args: str) -> PayoutSettlement:
            row = await app.fetchrow(f"SELECT outcome, reply FROM {sql}", *args)
            assert row is not None
            return _previous_releases_settlement(row["outcome"], row["reply"])

        settle = "transfer_settle_payout($1::uuid)"
        give_back = "transfer_return_payout($1::uuid, $2::text)"
        paid = await previous_release(settle, settled.transaction_id)
        refused = await previous_release(give_back, returned.transaction_id, "account closed")
        assert paid.outcome == refused.outcome == "OK"
        for late, finished in (
            (await previous_release(settle, settled.transaction_id), paid),
            (await previous_release(give_back, settled.transaction_id, "late"), paid),
            (await previous_release(settle, returned.transaction_id), refused),
            (await previous_release(give_back, returned.transaction_id, "again"), refused),
        ):
            assert late == PayoutSettlement("ALREADY_FINISHED", finished.transaction)
    finally:
        await app.close()
    assert paid.transaction is not None and refused.transaction is not None
    assert paid.transaction.status is TransactionStatus.COMPLETED
    assert refused.transaction.status is TransactionStatus.FAILED
    # This release's adapter: the payout's end, from the same row.
    for late, outcome in (
        (await ledger.ledger.settle_payout(settled.transaction_id), "SETTLED"),
        (await ledger.ledger.return_payout(settled.transaction_id, "late"), "SETTLED"),
        (await ledger.ledger.settle_payout(returned.transaction_id), "RETURNED"),
        (await ledger.ledger.return_payout(returned.transaction_id, "again"), "RETURNED"),
    ):
        assert (late.outcome, late.final_status) == ("ALREADY_FINISHED", outcome)
        assert late.transaction in (paid.transaction, refused.transaction)
    assert await ledger.balance(alice) == 7_000
    await ledger_is_clean(ledger)


async def test_t0019s_functions_gave_the_reviews_answers_and_t0020_closes_them(
    ledger: LedgerWorld,
) -> None:
    """Downgraded to t0019 (t0002's transfer_caps and t0019's TopUp, put back by t0020's
    downgrade), the user's own limit was the cap and a frozen wallet was told another
    wallet's reference was credited; upgraded again, the movement is refused and the frozen
    wallet is told it is frozen. Last in the module: it migrates the module's database."""
    dave = await ledger.new_wallet(tier="BASIC")
    await ledger.set_limit(dave, "top_up", source="USER", daily=5_000)
    _, reference = await _credited(ledger)
    frozen = await ledger.new_wallet()
    await ledger.freeze(frozen, FreezeSource.ADMIN)
    await ledger.migrate("downgrade", "t0019")
    try:
        [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
        assert version["version_num"] == "t0019"
        async with _setting_missing(ledger, BASIC_TOP_UP_DAILY):
            assert (await _caps(ledger, dave, "BASIC", "top_up"))[1] == 5_000
            assert (await _top_up(ledger, dave, 100)).code == "OK"
        # The probe t0019 answered: another wallet's reference, told to a frozen wallet.
        probe = await _top_up(ledger, frozen, 1_000, reference)
        assert probe.code == "PAYMENT_REFERENCE_USED"
    finally:
        migrated = await asyncio.to_thread(run_transfer_cli, ledger.env, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
    assert version["version_num"] == TRANSFER_HEAD
    async with _setting_missing(ledger, BASIC_TOP_UP_DAILY):
        assert (await _top_up(ledger, dave, 100)).code == "DAILY_LIMIT_EXCEEDED"
    assert await ledger.balance(dave) == 100
    assert (await _top_up(ledger, frozen, 1_000, reference)).code == "WALLET_FROZEN"
