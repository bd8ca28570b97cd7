"""The read-only lookup of a committed movement's stored answer (`PgLedger.stored_answer`), on
real PostgreSQL: what a retry the input checks now refuse is answered with (review of
2026-12-05). The answer of this very request (its key's fingerprint), a send's and a
top-up's alike; nothing for another request under the same id, another user's id or an id
never used."""

from __future__ import annotations

import pytest

from tests.integration.transfer.conftest import SEND, TOP_UP, LedgerWorld, key
from vaultpay_common.idempotency import IdempotencyKeyReusedError
from vaultpay_transfer.domain.model import PaymentMethod

pytestmark = pytest.mark.integration


async def test_a_committed_movements_answer_is_found_for_that_very_request(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    sent_key = key(alice.user_id, SEND, body="500 to bob")
    outcome = await ledger.ledger.send_money(sent_key, alice.user_id, bob.wallet_id, 500, "INR", "")
    assert outcome.code == "OK" and outcome.transaction is not None
    assert await ledger.ledger.stored_answer(sent_key) == outcome.transaction

    other_request = key(alice.user_id, SEND, sent_key.request_id, body="900 to bob")
    assert await ledger.ledger.stored_answer(other_request) is None
    bobs = key(bob.user_id, SEND, sent_key.request_id, body="500 to bob")
    assert await ledger.ledger.stored_answer(bobs) is None
    assert await ledger.ledger.stored_answer(key(alice.user_id, SEND)) is None

    top_up_key = key(alice.user_id, TOP_UP, body="700 by UPI")
    topped = await ledger.ledger.top_up(
        top_up_key, alice.user_id, 700, "INR", PaymentMethod.UPI, "UTR-LOOKUP-1", "UPI UP-1"
    )
    assert topped.code == "OK"
    assert await ledger.ledger.stored_answer(top_up_key) == topped.transaction


async def test_an_expired_answer_of_a_request_id_that_moved_money_is_key_reused(
    ledger: LedgerWorld,
) -> None:
    """Review of 349589b: the lookup read only the stored answers, which are purged after
    48 h: a refused retry of an older payment was answered 400, where `hold` answers
    IDEMPOTENCY_KEY_REUSED (the request id moved money once)."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    sent_key = key(alice.user_id, SEND, body="300 to bob")
    outcome = await ledger.ledger.send_money(sent_key, alice.user_id, bob.wallet_id, 300, "INR", "")
    assert outcome.code == "OK"
    conn = await ledger.owner()
    try:  # the purge of expired answers, as the owner (test data only)
        await conn.execute(
            "DELETE FROM idempotency_records WHERE caller = $1 AND request_id = $2::uuid",
            alice.user_id,
            sent_key.request_id,
        )
    finally:
        await conn.close()
    with pytest.raises(IdempotencyKeyReusedError):
        await ledger.ledger.stored_answer(sent_key)
    assert await ledger.ledger.stored_answer(key(alice.user_id, SEND)) is None
