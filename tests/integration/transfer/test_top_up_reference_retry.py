"""A TopUp retried under a new request id with a payment reference already credited is told
so (transfer t0019), whatever else the wallet would now be refused for.

The review's scenario: a daily top-up limit of 1,000, a top-up of 1,000 with reference R
commits and its reply is lost; the client retries under a new request id with R. t0016's
function answered DAILY_LIMIT_EXCEEDED (WALLET_FROZEN for a wallet frozen meanwhile), a
definite refusal saying the payment was not credited; t0019's answers PAYMENT_REFERENCE_USED.
The same request id still replays the first answer, a fresh reference is still judged by the
wallet's state and limits, and a retry that waited on the wallet's row lock while its first
attempt committed sees that attempt's payment. The last test downgrades to t0018 (t0016's
function, the review's answers) and upgrades again.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.transfer.conftest import (
    TOP_UP,
    TRANSFER_HEAD,
    LedgerWorld,
    Wallet,
    footprint,
    key,
    run_transfer_cli,
    top_up_on,
    waiting_on_a_lock,
)
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.outcomes import LedgerOutcome
from vaultpay_wallet.domain.model import FreezeSource

pytestmark = pytest.mark.integration


def _reference() -> str:
    return f"upi-{uuid.uuid4().hex}"


async def _top_up(
    ledger: LedgerWorld, wallet: Wallet, reference: str, request: IdempotencyKey | None = None
) -> LedgerOutcome:
    """A top-up of 1,000 by UPI with `reference`, under `request` (a new request id if none)."""
    return await ledger.ledger.top_up(
        request or key(wallet.user_id, TOP_UP),
        wallet.user_id,
        1_000,
        "INR",
        PaymentMethod.UPI,
        reference,
        "UPI test",
    )


async def _credited_up_to_the_days_limit(ledger: LedgerWorld) -> tuple[Wallet, str, LedgerOutcome]:
    """A wallet whose daily top-up limit is 1,000, topped up by 1,000 with a reference: the
    wallet, the reference and the first attempt's answer (whose reply the client lost)."""
    alice = await ledger.new_wallet()
    await ledger.set_limit(alice, "top_up", daily=1_000, monthly=100_000)
    reference = _reference()
    first = await _top_up(ledger, alice, reference)
    assert first.code == "OK", first
    return alice, reference, first


async def test_a_retry_under_a_new_request_id_is_told_the_reference_was_credited(
    ledger: LedgerWorld,
) -> None:
    alice, reference, _ = await _credited_up_to_the_days_limit(ledger)
    before = await footprint(ledger)
    retry = await _top_up(ledger, alice, reference)
    assert (retry.code, retry.transaction) == ("PAYMENT_REFERENCE_USED", None), retry
    assert await footprint(ledger) == before  # the refusal wrote nothing
    assert await ledger.balance(alice) == 1_000
    # A fresh reference is still judged by the day's limit.
    assert (await _top_up(ledger, alice, _reference())).code == "DAILY_LIMIT_EXCEEDED"


async def test_a_wallet_frozen_since_is_told_the_reference_was_credited(
    ledger: LedgerWorld,
) -> None:
    alice, reference, _ = await _credited_up_to_the_days_limit(ledger)
    await ledger.freeze(alice, FreezeSource.SELF)
    before = await footprint(ledger)
    retry = await _top_up(ledger, alice, reference)
    assert (retry.code, retry.transaction) == ("PAYMENT_REFERENCE_USED", None), retry
    assert await footprint(ledger) == before
    assert await ledger.balance(alice) == 1_000


async def test_the_same_request_id_still_replays_the_first_answer(ledger: LedgerWorld) -> None:
    alice = await ledger.new_wallet()
    await ledger.set_limit(alice, "top_up", daily=1_000, monthly=100_000)
    reference = _reference()
    request = key(alice.user_id, TOP_UP)
    first = await _top_up(ledger, alice, reference, request)
    assert first.code == "OK", first
    await ledger.freeze(alice, FreezeSource.SELF)
    replay = await _top_up(ledger, alice, reference, request)
    assert (replay.code, replay.transaction) == ("REPLAY", first.transaction), replay
    assert await ledger.balance(alice) == 1_000


async def test_a_fresh_reference_on_a_frozen_wallet_is_still_refused_for_the_freeze(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 500)
    await ledger.freeze(alice, FreezeSource.SELF)
    before = await footprint(ledger)
    outcome = await _top_up(ledger, alice, _reference())
    assert (outcome.code, outcome.transaction) == ("WALLET_FROZEN", None), outcome
    assert await footprint(ledger) == before
    assert await ledger.balance(alice) == 500


async def test_a_retry_waiting_on_the_row_lock_sees_its_first_attempt_commit(
    ledger: LedgerWorld,
) -> None:
    """The first attempt holds the wallet's row lock (another session, its transaction still
    open) when the retry, under a new request id, arrives and waits for that lock; the first
    commits: the retry's lookup, after the wait, sees its payment."""
    alice = await ledger.new_wallet()
    await ledger.set_limit(alice, "top_up", daily=1_000, monthly=100_000)
    reference = _reference()
    first = await ledger.owner()
    try:
        transaction = first.transaction()
        await transaction.start()
        credit = key(alice.user_id, TOP_UP)
        assert await top_up_on(first, credit, alice, 1_000, reference) == "OK"
        retrying = asyncio.create_task(_top_up(ledger, alice, reference))
        await waiting_on_a_lock(ledger, "transfer_top_up")
        await transaction.commit()
    finally:
        await first.close()
    retry = await retrying
    assert (retry.code, retry.transaction) == ("PAYMENT_REFERENCE_USED", None), retry
    assert await ledger.balance(alice) == 1_000


async def test_t0016s_function_gave_the_reviews_answers_and_t0019_gives_them_back(
    ledger: LedgerWorld,
) -> None:
    """Downgraded to t0018 (t0016's function, put back by t0019's downgrade), the retry was
    refused for the limit and for the freeze; upgraded again, it is told the reference was
    credited. Last in the module: it migrates the module's database."""
    await ledger.migrate("downgrade", "t0018")
    try:
        [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
        assert version["version_num"] == "t0018"
        alice, reference, _ = await _credited_up_to_the_days_limit(ledger)
        assert (await _top_up(ledger, alice, reference)).code == "DAILY_LIMIT_EXCEEDED"
        await ledger.freeze(alice, FreezeSource.SELF)
        assert (await _top_up(ledger, alice, reference)).code == "WALLET_FROZEN"
    finally:
        migrated = await asyncio.to_thread(run_transfer_cli, ledger.env, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
    assert version["version_num"] == TRANSFER_HEAD
    assert (await _top_up(ledger, alice, reference)).code == "PAYMENT_REFERENCE_USED"
    assert await ledger.balance(alice) == 1_000
