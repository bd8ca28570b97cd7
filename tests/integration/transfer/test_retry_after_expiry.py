"""A retry whose stored answer expired is told that its request id was used (transfer t0023),
on real PostgreSQL, with the real ledger functions.

A movement's stored answer is kept 48 h (`TRANSFER_IDEMPOTENCY_RETENTION_HOURS`); after the
cleanup deleted it, the ledger's own guard (a request id moves a user's money once) still
refuses a retry. A review (2026-12-04, third) found that guard judged after the wallet's
state, the recipient's, the currency and KYC: a client retrying a payment that went through,
once the sender's wallet was frozen, was told WALLET_FROZEN, a definite refusal for a payment
its commit made. It is judged first now, under the wallet's lock, and still writes nothing;
and for SendMoney and Withdraw, whose PIN check at wallet refuses a frozen wallet before the
ledger is asked, by the held movement's look-up too (`transfer_hold_lookup`'s `used`), so
the use case answers IDEMPOTENCY_KEY_REUSED without asking wallet.
"""

from __future__ import annotations

import uuid

import pytest

from tests.integration.transfer.conftest import (
    HOME,
    TOP_UP,
    WITHDRAW,
    LedgerWorld,
    footprint,
    key,
    movement_service,
    wallet_gate,
)
from vaultpay_common.idempotency import IdempotencyKey, IdempotencyKeyReusedError
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.validation import BankAccountInput
from vaultpay_transfer.service_layer.commands import AmountInput, SendMoney, Withdraw
from vaultpay_wallet.domain.model import FreezeSource

pytestmark = pytest.mark.integration


async def _expire(ledger: LedgerWorld, request: IdempotencyKey) -> None:
    """What the cleanup does to a stored answer 48 h old: it is deleted."""
    conn = await ledger.owner()
    try:
        deleted = await conn.execute(
            "DELETE FROM idempotency_records"
            " WHERE caller = $1 AND method = $2 AND request_id = $3::uuid",
            request.caller,
            request.method,
            request.request_id,
        )
    finally:
        await conn.close()
    assert deleted == "DELETE 1"


async def test_a_send_retried_after_its_answer_expired_is_reused_not_frozen(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 1_000)
    sent = key(alice.user_id)
    first = await ledger.ledger.send_money(sent, alice.user_id, bob.wallet_id, 300, "INR", "")
    assert first.code == "OK", first
    await _expire(ledger, sent)
    await ledger.freeze(alice, FreezeSource.ADMIN)
    before = await footprint(ledger)
    retry = await ledger.ledger.send_money(sent, alice.user_id, bob.wallet_id, 300, "INR", "")
    assert (retry.code, retry.transaction) == ("IDEMPOTENCY_KEY_REUSED", None), retry
    assert await footprint(ledger) == before
    assert (await ledger.balance(alice), await ledger.balance(bob)) == (700, 300)


async def test_a_withdrawal_retried_after_its_answer_expired_is_reused_not_frozen(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 1_000)
    withdrawn = key(alice.user_id, WITHDRAW)
    first = await ledger.withdraw(alice, 400, request=withdrawn)
    assert first.code == "OK", first
    await _expire(ledger, withdrawn)
    await ledger.freeze(alice, FreezeSource.SELF)
    before = await footprint(ledger)
    retry = await ledger.withdraw(alice, 400, request=withdrawn)
    assert (retry.code, retry.transaction) == ("IDEMPOTENCY_KEY_REUSED", None), retry
    assert await footprint(ledger) == before
    assert await ledger.balance(alice) == 600


async def test_a_top_up_request_id_used_again_after_its_answer_expired_is_reused_not_frozen(
    ledger: LedgerWorld,
) -> None:
    """Another payment under a request id that already credited the wallet (a retry of the
    same payment is answered PAYMENT_REFERENCE_USED first, t0020, as truly)."""
    alice = await ledger.new_wallet()
    request_id = str(uuid.uuid4())

    async def top_up(body: str) -> str:
        outcome = await ledger.ledger.top_up(
            key(alice.user_id, TOP_UP, request_id, body=body),
            alice.user_id,
            500,
            "INR",
            PaymentMethod.UPI,
            f"upi-{body}",
            "UPI test",
        )
        return outcome.code

    assert await top_up("first") == "OK"
    await _expire(ledger, key(alice.user_id, TOP_UP, request_id, body="first"))
    await ledger.freeze(alice, FreezeSource.ADMIN)
    before = await footprint(ledger)
    assert await top_up("second") == "IDEMPOTENCY_KEY_REUSED"
    assert await footprint(ledger) == before
    assert await ledger.balance(alice) == 500


async def test_a_send_and_a_withdrawal_retried_after_expiry_are_reused_before_the_pin_check(
    ledger: LedgerWorld,
) -> None:
    """Through the use cases: the held look-up answers IDEMPOTENCY_KEY_REUSED before wallet
    is asked (a frozen sender's PIN check would refuse WALLET_FROZEN), writing nothing."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 1_000)
    gate = wallet_gate(alice)
    service = movement_service(ledger.ledger, gate)
    sent = key(alice.user_id)
    send = SendMoney(alice.user_id, sent, bob.wallet_id, AmountInput("INR", 300), "", "1234", HOME)
    withdrawn = key(alice.user_id, WITHDRAW)
    account = BankAccountInput("123456789012", "HDFC0001234", "Alice")
    withdraw = Withdraw(alice.user_id, withdrawn, AmountInput("INR", 200), account, "1234", HOME)
    await service.send_money(send)
    await service.withdraw(withdraw)
    await _expire(ledger, sent)
    await _expire(ledger, withdrawn)
    asked = len(gate.calls)
    before = await footprint(ledger)
    for retry in (service.send_money(send), service.withdraw(withdraw)):
        with pytest.raises(IdempotencyKeyReusedError):
            await retry
    assert len(gate.calls) == asked  # wallet was not asked again
    assert await footprint(ledger) == before
    assert await ledger.key_is_free(sent) and await ledger.key_is_free(withdrawn)
