"""Withdraw's idempotency on real PostgreSQL (ARCHITECTURE.md, "Idempotency"): a retry of the
same request is answered with the stored transaction and pays out once; the same request_id
with another amount or bank account is IDEMPOTENCY_KEY_REUSED and writes nothing; 20 copies
of one Withdraw at once, through the use case's key hold in two transfer processes, make one
debit and one payout.

The ledger tells requests apart by the key's fingerprint, which the entrypoint computes from
the request (amount and bank account included, the PIN left out); here `key(..., body=...)`
stands for it.
"""

from __future__ import annotations

import pytest

from tests.integration.transfer.conftest import (
    HOME,
    WITHDRAW,
    LedgerWorld,
    Wallet,
    account_hash,
    footprint,
    key,
    ledger_is_clean,
    movement_service,
    twenty_copies,
    wallet_gate,
)
from vaultpay_common.idempotency import (
    IdempotencyKey,
    IdempotencyKeyReusedError,
)
from vaultpay_transfer.domain.model import TransactionStatus
from vaultpay_transfer.domain.validation import BankAccountInput
from vaultpay_transfer.service_layer.commands import AmountInput, Withdraw

ACCOUNT = "123456789012"


def _withdraw(wallet: Wallet, amount: int, request: IdempotencyKey) -> Withdraw:
    return Withdraw(
        wallet.user_id,
        request,
        AmountInput("INR", amount),
        BankAccountInput(ACCOUNT, "HDFC0001234", "Account Holder"),
        "1234",
        HOME,
    )


async def _effects(ledger: LedgerWorld, request: IdempotencyKey) -> tuple[int, int, int]:
    """The debits written under the request's id, their payouts, and their postings."""
    [row] = await ledger.fetch(
        "SELECT count(DISTINCT t.id) AS debits, count(DISTINCT p.transaction_id) AS payouts,"
        " (SELECT count(*) FROM ledger_postings AS lp WHERE lp.ledger_transaction_id IN"
        "   (SELECT ledger_transaction_id FROM wallet_transactions WHERE request_id = $1::uuid)"
        " ) AS postings"
        " FROM wallet_transactions AS t LEFT JOIN payouts AS p ON p.transaction_id = t.id"
        " WHERE t.request_id = $1::uuid",
        request.request_id,
    )
    return row["debits"], row["payouts"], row["postings"]


async def test_a_retried_withdrawal_answers_the_stored_transaction_and_pays_out_once(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    request = key(alice.user_id, WITHDRAW, body="3000 to HDFC0001234 123456789012")
    first = await ledger.withdraw(alice, 3_000, request=request)
    assert first.code == "OK", first
    assert first.transaction is not None
    assert first.transaction.status is TransactionStatus.PENDING
    before = await footprint(ledger)
    retry = await ledger.withdraw(alice, 3_000, request=request)
    assert (retry.code, retry.transaction) == ("REPLAY", first.transaction)
    async with ledger.ledger.hold(request) as held:  # what Withdraw's lookup answers
        assert held.stored == first.transaction
    assert await footprint(ledger) == before
    assert await _effects(ledger, request) == (1, 1, 2)
    assert await ledger.balance(alice) == 7_000
    usage = await ledger.fetch(
        "SELECT sum(used) AS used FROM limit_usage WHERE wallet_id = $1 AND action = 'withdraw'",
        alice.wallet_id,
    )
    assert usage[0]["used"] == 3_000


@pytest.mark.parametrize(
    ("other", "amount", "account_hash"),
    [
        ("2000 to HDFC0001234 123456789012", 2_000, "b" * 64),  # another amount
        ("3000 to HDFC0001234 999999999999", 3_000, "c" * 64),  # another bank account
    ],
    ids=["another_amount", "another_bank_account"],
)
async def test_the_same_request_id_for_another_withdrawal_is_refused_and_writes_nothing(
    ledger: LedgerWorld, other: str, amount: int, account_hash: str
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    request = key(alice.user_id, WITHDRAW, body="3000 to HDFC0001234 123456789012")
    first = await ledger.withdraw(alice, 3_000, request=request)
    assert first.code == "OK", first
    before = await footprint(ledger)
    reused = key(alice.user_id, WITHDRAW, request.request_id, body=other)
    refused = await ledger.withdraw(alice, amount, request=reused, account_hash=account_hash)
    assert (refused.code, refused.transaction) == ("IDEMPOTENCY_KEY_REUSED", None)
    assert await footprint(ledger) == before
    assert await _effects(ledger, request) == (1, 1, 2)
    assert await ledger.balance(alice) == 7_000


async def test_withdraw_refuses_a_reused_request_id_before_asking_for_the_pin(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    gate = wallet_gate(alice)
    service = movement_service(ledger.ledger, gate)
    request = key(alice.user_id, WITHDRAW, body="3000")
    first = await service.withdraw(_withdraw(alice, 3_000, request))
    assert await service.withdraw(_withdraw(alice, 3_000, request)) == first
    before, asked = await footprint(ledger), len(gate.calls)
    reused = key(alice.user_id, WITHDRAW, request.request_id, body="2000")
    with pytest.raises(IdempotencyKeyReusedError) as refused:
        await service.withdraw(_withdraw(alice, 2_000, reused))
    assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert len(gate.calls) == asked  # neither the PIN nor the address was checked again
    assert await footprint(ledger) == before
    assert await _effects(ledger, request) == (1, 1, 2)


async def test_twenty_concurrent_copies_of_one_withdraw_through_the_service_pay_out_once(
    ledger: LedgerWorld,
) -> None:
    """As the SendMoney race in test_ledger_races.py: the copy that takes the key is kept
    inside its ledger call (the wallet's row locked elsewhere) until the 19 others answered
    IDEMPOTENCY_KEY_IN_USE; then one debit, one payout, and replays of the stored answer."""
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 10_000)
    request = key(alice.user_id, WITHDRAW, body="700 to HDFC0001234 123456789012")
    withdraw = _withdraw(alice, 700, request)
    race = await twenty_copies(
        ledger, alice, lambda service: service.withdraw(withdraw), "transfer_withdraw_held"
    )
    gates = race.gates
    assert sum(1 for g in gates for what, _, _ in g.calls if what == "pin") == 1
    assert await ledger.balance(alice) == 9_300
    assert await _effects(ledger, request) == (1, 1, 2)
    payouts = await ledger.fetch(
        "SELECT amount, account_hash, status FROM payouts WHERE wallet_id = $1",
        alice.wallet_id,
    )
    assert [tuple(p.values()) for p in payouts] == [(700, account_hash(ACCOUNT), "PENDING")]
    await ledger_is_clean(ledger)
