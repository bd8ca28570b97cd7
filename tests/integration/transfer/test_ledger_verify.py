"""AdminVerifyLedger's checks and `vaultpay-transfer verify-ledger`: clean after real
movements, and a balance changed behind the ledger's back is caught (own module: the tampering
stays in this module's database)."""

from __future__ import annotations

from tests.integration.transfer.conftest import LedgerWorld, key, run_transfer_cli
from vaultpay_transfer.adapters.verify_sql import SqlLedgerAuditor


async def test_verify_ledger_is_clean_then_catches_a_balance_changed_behind_its_back(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 9_000)
    sent = await ledger.ledger.send_money(
        key(alice.user_id), alice.user_id, bob.wallet_id, 4_000, "INR", ""
    )
    assert sent.code == "OK"
    clean = run_transfer_cli(ledger.env, "verify-ledger")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "the ledger is consistent" in clean.stdout
    for name in (
        "postings_balanced",
        "wallet_balances_match_postings",
        "total_balance_zero",
        "no_negative_user_balance",
        "audit_chain_intact",
    ):
        assert f"ok   {name}" in clean.stdout

    # The owner (never the app role) can still write the table directly: the proof catches it.
    conn = await ledger.owner()
    try:
        await conn.execute("UPDATE wallets SET balance = balance + 1 WHERE id = $1", bob.wallet_id)
    finally:
        await conn.close()
    checks = {c.name: c for c in await SqlLedgerAuditor(ledger.engine, b"k" * 32, None).check()}
    assert not checks["wallet_balances_match_postings"].ok
    assert bob.wallet_id in checks["wallet_balances_match_postings"].detail
    assert not checks["total_balance_zero"].ok
    assert checks["postings_balanced"].ok
    broken = run_transfer_cli(ledger.env, "verify-ledger")
    assert broken.returncode == 1
    assert "FAIL wallet_balances_match_postings" in broken.stdout


async def test_verify_ledger_catches_a_wallet_posting_missing_from_the_wallets_history(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 5_000)
    sent = await ledger.ledger.send_money(
        key(alice.user_id), alice.user_id, bob.wallet_id, 1_200, "INR", ""
    )
    assert sent.code == "OK"
    # Bob's side of the send deleted by the owner, with the append-only triggers switched off:
    # every balance still equals its postings, but Bob's history no longer shows the credit.
    conn = await ledger.owner()
    try:
        async with conn.transaction():
            await conn.execute("ALTER TABLE wallet_transactions DISABLE TRIGGER USER")
            ledger_id = await conn.fetchval(
                "DELETE FROM wallet_transactions WHERE wallet_id = $1"
                " RETURNING ledger_transaction_id::text",
                bob.wallet_id,
            )
            await conn.execute("ALTER TABLE wallet_transactions ENABLE TRIGGER USER")
    finally:
        await conn.close()
    checks = {c.name: c for c in await SqlLedgerAuditor(ledger.engine, b"k" * 32, None).check()}
    missing = checks["wallet_postings_have_transactions"]
    assert not missing.ok
    assert ledger_id in missing.detail
    assert checks["wallet_transactions_match_postings"].ok  # the other direction still holds
