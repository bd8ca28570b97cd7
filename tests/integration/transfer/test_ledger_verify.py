"""AdminVerifyLedger's checks and `vaultpay-transfer verify-ledger`: clean after real
movements (top-ups, sends, withdrawals settled and returned by the payout worker, one still
pending), and each check catches the owner's tampering it is there for, naming what it found,
while the others it does not concern still pass.

The owner's edits (append-only triggers switched off where they stand in the way) are made in
one transaction, the checks run in it, and it is rolled back: every test starts from a clean
ledger (own module all the same: the first test's edit is committed, then put back)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from tests.fakes.transfer import ScriptedBank
from tests.integration.transfer.conftest import (
    TOP_UP,
    LedgerWorld,
    Wallet,
    key,
    ledger_is_clean,
    run_transfer_cli,
)
from tests.support import eventually
from vaultpay_common.context import DEADLINE
from vaultpay_common.db import create_engine
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_transfer.adapters.verify_sql import _CHECKS, SqlLedgerAuditor, check_ledger
from vaultpay_transfer.domain.model import LedgerCheck, PaymentMethod
from vaultpay_transfer.service_layer.payouts import PayoutWorker
from vaultpay_transfer.service_layer.verification import (
    ANSWER_MARGIN_SECONDS,
    ChecksNotFinishedError,
    LedgerVerification,
)

# Every check AdminVerifyLedger answers, in its order.
CHECKS = (
    "postings_balanced",
    "wallet_balances_match_postings",
    "total_balance_zero",
    "wallet_postings_in_wallet_currency",
    "no_negative_user_balance",
    "wallet_transactions_match_postings",
    "wallet_postings_have_transactions",
    "payouts_in_flight_match_pending",
    "ledger_transactions_match_postings",
    "wallet_transactions_match_ledger",
    "wallet_histories_add_up",
    "top_up_payments_match_top_ups",
    "limit_usage_matches_movements",
    "withdrawals_match_payouts",
    "returned_payouts_credited_back",
    "statuses_match_movements",
    "p2p_sides_name_each_other",
    "history_rows_owned_by_wallet_owner",
    "audit_chain_intact",
)


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
    # Put back, so that the tests below start from a clean ledger.
    conn = await ledger.owner()
    try:
        await conn.execute("UPDATE wallets SET balance = balance - 1 WHERE id = $1", bob.wallet_id)
    finally:
        await conn.close()
    await ledger_is_clean(ledger)


@dataclass
class World:
    """Real movements of three fresh wallets: the ids the tampering aims at."""

    alice: Wallet
    bob: Wallet
    carol: Wallet
    top_up: str  # Alice's first top-up (wallet-side id), with later rows in her history
    send: str  # Alice -> Bob (Alice's side)
    settled: str  # Alice's withdrawal the bank paid
    returned: str  # Alice's withdrawal the bank refused
    pending: str  # Alice's withdrawal not sent to the bank yet


async def _world(ledger: LedgerWorld) -> World:
    alice, bob, carol = [await ledger.new_wallet() for _ in range(3)]
    top_up = await ledger.fund(alice, 50_000)
    await ledger.fund(bob, 20_000)
    send = await ledger.send(alice, bob, 7_000)
    await ledger.send(bob, alice, 2_000)
    await ledger.send(bob, carol, 500)
    refusing = secrets.token_hex(32)
    settled = await ledger.withdraw(alice, 3_000)
    returned = await ledger.withdraw(alice, 4_000, account_hash=refusing)
    assert settled.transaction is not None and returned.transaction is not None
    await PayoutWorker(ledger.ledger, ScriptedBank(refusing={refusing}), batch_size=1000).run_once()
    pending = await ledger.withdraw(alice, 1_000)
    assert pending.transaction is not None
    await ledger.fund(alice, 600)
    return World(
        alice,
        bob,
        carol,
        top_up.transaction_id,
        send.transaction_id,
        settled.transaction.transaction_id,
        returned.transaction.transaction_id,
        pending.transaction.transaction_id,
    )


async def _tampered(ledger: LedgerWorld, *edits: str, **params: Any) -> dict[str, LedgerCheck]:
    """The ledger checks seen inside the owner's transaction that made `edits` (with
    `params`), rolled back afterwards."""
    engine = create_engine(ledger.dbs.vaultpay_owner_dsn, pool_size=1, application_name="tamper")
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            try:
                for edit in edits:
                    await conn.execute(text(edit), params)
                return {c.name: c for c in await check_ledger(conn)}
            finally:
                await transaction.rollback()
    finally:
        await engine.dispose()


def _failed(checks: dict[str, LedgerCheck]) -> set[str]:
    return {name for name, check in checks.items() if not check.ok}


async def _ledger_id(ledger: LedgerWorld, transaction_id: str) -> str:
    [row] = await ledger.fetch(
        "SELECT ledger_transaction_id::text AS id FROM wallet_transactions WHERE id = $1::uuid",
        transaction_id,
    )
    return str(row["id"])


async def test_a_ledger_the_real_code_wrote_passes_every_check(ledger: LedgerWorld) -> None:
    world = await _world(ledger)
    statuses = {
        str(r["transaction_id"]): (r["status"], r["tx_status"])
        for r in await ledger.fetch(
            "SELECT p.transaction_id, p.status, t.status AS tx_status FROM payouts AS p"
            " JOIN wallet_transactions AS t ON t.id = p.transaction_id"
            " WHERE p.wallet_id = $1",
            world.alice.wallet_id,
        )
    }
    assert statuses == {
        world.settled: ("SETTLED", "COMPLETED"),
        world.returned: ("RETURNED", "FAILED"),
        world.pending: ("PENDING", "PENDING"),
    }
    heard: list[LedgerCheck] = []  # each check as it completes: the CLI's progress
    checks = await SqlLedgerAuditor(ledger.engine, b"k" * 32, None).check(heard.append)
    assert [c.name for c in checks] == list(CHECKS)
    assert heard == list(checks)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    clean = run_transfer_cli(ledger.env, "verify-ledger")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    lines = clean.stdout.splitlines()
    assert lines[0] == f"verifying the ledger: {len(CHECKS)} checks, each a full scan"
    assert [line.split(":")[0] for line in lines[1:-1]] == [f"ok   {name}" for name in CHECKS]
    assert lines[-1] == "the ledger is consistent"
    # A reader that stops early (`| head -1`) does not turn the verdict into an error.
    shell = f"{sys.executable} -m vaultpay_transfer.entrypoints.cli verify-ledger | head -1"
    piped = subprocess.run(
        ["bash", "-c", shell + "; exit ${PIPESTATUS[0]}"],
        env={**os.environ, **ledger.env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert piped.stdout.startswith("verifying the ledger:")
    assert piped.stderr == ""
    assert clean.stdout.endswith("the ledger is consistent\n")


async def test_a_top_up_inflated_across_its_rows_is_caught(ledger: LedgerWorld) -> None:
    """The review's case: both postings, the wallet-side amount and the balance x1000."""
    world = await _world(ledger)
    movement = await _ledger_id(ledger, world.top_up)
    inflate = (
        "ALTER TABLE ledger_postings DISABLE TRIGGER USER",
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "UPDATE ledger_postings SET amount = amount * 1000 WHERE ledger_transaction_id = :m",
        "UPDATE wallet_transactions SET amount = amount * 1000 WHERE id = :t",
        "UPDATE wallets SET balance = balance + 49950000 WHERE id = :w",
    )
    params = {"m": movement, "t": world.top_up, "w": world.alice.wallet_id}
    checks = await _tampered(ledger, *inflate, **params)
    assert _failed(checks) == {
        "ledger_transactions_match_postings",
        "wallet_histories_add_up",
        "limit_usage_matches_movements",
    }
    assert movement in checks["ledger_transactions_match_postings"].detail
    assert world.top_up in checks["wallet_histories_add_up"].detail
    assert world.alice.wallet_id in checks["limit_usage_matches_movements"].detail

    # Every balance_after from it on raised too, and the day's usage: the movement's own
    # amount still tells.
    rewrite = (
        *inflate,
        "UPDATE wallet_transactions AS t SET balance_after = t.balance_after + 49950000"
        " FROM ledger_postings AS p WHERE t.wallet_id = :w"
        " AND p.ledger_transaction_id = t.ledger_transaction_id AND p.account = t.wallet_id"
        " AND p.id >= (SELECT min(id) FROM ledger_postings"
        "              WHERE ledger_transaction_id = :m AND account = :w)",
        "UPDATE limit_usage SET used = used + 49950000 WHERE wallet_id = :w AND action = 'top_up'",
    )
    checks = await _tampered(ledger, *rewrite, **params)
    assert _failed(checks) == {"ledger_transactions_match_postings"}
    assert movement in checks["ledger_transactions_match_postings"].detail

    # ... and the movement's amount too: every redundant record agrees, nothing is left to
    # tell (decisions.md: internal consistency, not authenticity).
    checks = await _tampered(
        ledger,
        "ALTER TABLE ledger_transactions DISABLE TRIGGER USER",
        *rewrite,
        "UPDATE ledger_transactions SET amount = amount * 1000 WHERE id = :m",
        **params,
    )
    assert _failed(checks) == set()


async def test_postings_that_do_not_balance_are_caught(ledger: LedgerWorld) -> None:
    """Two top-ups' clearing postings changed by one unit each way: every total still holds,
    each movement still credits its amount; only the postings' own sums tell."""
    world = await _world(ledger)
    first = await _ledger_id(ledger, world.top_up)
    [later] = await ledger.fetch(
        "SELECT ledger_transaction_id::text AS id FROM wallet_transactions"
        " WHERE wallet_id = $1 AND category = 'TOP_UP' AND id <> $2::uuid",
        world.alice.wallet_id,
        world.top_up,
    )
    checks = await _tampered(
        ledger,
        "ALTER TABLE ledger_postings DISABLE TRIGGER USER",
        "UPDATE ledger_postings SET amount = amount + 1"
        " WHERE ledger_transaction_id = :a AND account = 'sys:clearing'",
        "UPDATE ledger_postings SET amount = amount - 1"
        " WHERE ledger_transaction_id = :b AND account = 'sys:clearing'",
        a=first,
        b=later["id"],
    )
    assert _failed(checks) == {"postings_balanced"}
    assert first in checks["postings_balanced"].detail
    assert later["id"] in checks["postings_balanced"].detail


async def test_a_wallet_side_amount_unlike_its_posting_is_caught(ledger: LedgerWorld) -> None:
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "UPDATE wallet_transactions SET amount = amount + 100 WHERE id = :t",
        t=world.send,
    )
    # The row no longer chains either; its limit usage no longer matches.
    assert _failed(checks) == {
        "wallet_transactions_match_postings",
        "wallet_histories_add_up",
        "limit_usage_matches_movements",
    }
    assert world.send in checks["wallet_transactions_match_postings"].detail
    assert world.send in checks["wallet_histories_add_up"].detail


async def test_a_wallet_posting_missing_from_the_wallets_history_is_caught(
    ledger: LedgerWorld,
) -> None:
    # Carol's only row (the credit of Bob's send) deleted: every balance still equals its
    # postings, but her history no longer shows it.
    world = await _world(ledger)
    [row] = await ledger.fetch(
        "SELECT ledger_transaction_id::text AS id FROM wallet_transactions WHERE wallet_id = $1",
        world.carol.wallet_id,
    )
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "DELETE FROM wallet_transactions WHERE wallet_id = :w",
        w=world.carol.wallet_id,
    )
    # The send lost its receiving side too.
    assert _failed(checks) == {"wallet_postings_have_transactions", "p2p_sides_name_each_other"}
    assert row["id"] in checks["wallet_postings_have_transactions"].detail
    assert row["id"] in checks["p2p_sides_name_each_other"].detail


async def test_a_payout_settled_without_its_movement_is_caught(ledger: LedgerWorld) -> None:
    """The pending payout and its withdrawal marked paid (no trigger stands in the way), but
    its money never left payouts-in-flight."""
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "UPDATE payouts SET status = 'SETTLED', finished_at = now() WHERE transaction_id = :t",
        "UPDATE wallet_transactions SET status = 'COMPLETED', completed_at = now() WHERE id = :t",
        t=world.pending,
    )
    assert _failed(checks) == {"payouts_in_flight_match_pending"}
    assert "INR" in checks["payouts_in_flight_match_pending"].detail


async def test_a_negative_balance_is_caught(ledger: LedgerWorld) -> None:
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallets DROP CONSTRAINT wallets_balance_not_negative",  # the owner may
        "UPDATE wallets SET balance = -100 WHERE id = :w",
        w=world.carol.wallet_id,
    )
    # A balance no posting made: its sums and its history's end tell too.
    assert _failed(checks) == {
        "no_negative_user_balance",
        "wallet_balances_match_postings",
        "total_balance_zero",
        "wallet_histories_add_up",
    }
    assert world.carol.wallet_id in checks["no_negative_user_balance"].detail


async def test_a_movement_amount_unlike_its_postings_is_caught(ledger: LedgerWorld) -> None:
    world = await _world(ledger)
    movement = await _ledger_id(ledger, world.send)
    checks = await _tampered(
        ledger,
        "ALTER TABLE ledger_transactions DISABLE TRIGGER USER",
        "UPDATE ledger_transactions SET amount = amount + 1 WHERE id = :m",
        m=movement,
    )
    assert _failed(checks) == {"ledger_transactions_match_postings"}
    assert movement in checks["ledger_transactions_match_postings"].detail


async def test_a_movement_between_accounts_its_kind_never_names_is_caught(
    ledger: LedgerWorld,
) -> None:
    """A top-up's money drawn from payouts-in-flight instead of clearing: both system
    accounts' sum is unchanged, but in-flight no longer holds the pending payouts."""
    world = await _world(ledger)
    movement = await _ledger_id(ledger, world.top_up)
    checks = await _tampered(
        ledger,
        "ALTER TABLE ledger_postings DISABLE TRIGGER USER",
        "UPDATE ledger_postings SET account = 'sys:payouts_in_flight'"
        " WHERE ledger_transaction_id = :m AND account = 'sys:clearing'",
        m=movement,
    )
    assert _failed(checks) == {
        "ledger_transactions_match_postings",
        "payouts_in_flight_match_pending",
    }
    assert movement in checks["ledger_transactions_match_postings"].detail


async def test_a_wallet_side_row_unlike_its_movement_is_caught(ledger: LedgerWorld) -> None:
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "UPDATE wallet_transactions SET reference = 'VP-TXN-FORGED00' WHERE id = :t",
        t=world.send,
    )
    assert _failed(checks) == {"wallet_transactions_match_ledger"}
    assert world.send in checks["wallet_transactions_match_ledger"].detail


async def test_a_history_row_whose_balance_after_does_not_follow_is_caught(
    ledger: LedgerWorld,
) -> None:
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "UPDATE wallet_transactions SET balance_after = balance_after + 5 WHERE id = :t",
        t=world.send,
    )
    assert _failed(checks) == {"wallet_histories_add_up"}
    assert world.send in checks["wallet_histories_add_up"].detail


async def test_a_top_up_without_its_payment_is_caught(ledger: LedgerWorld) -> None:
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "ALTER TABLE top_up_payments DISABLE TRIGGER USER",
        "DELETE FROM top_up_payments WHERE transaction_id = :t",
        t=world.top_up,
    )
    assert _failed(checks) == {"top_up_payments_match_top_ups"}
    assert world.top_up in checks["top_up_payments_match_top_ups"].detail


async def test_limit_usage_unlike_the_days_movements_is_caught(ledger: LedgerWorld) -> None:
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "UPDATE limit_usage SET used = 0 WHERE wallet_id = :w AND action = 'send'",
        w=world.alice.wallet_id,
    )
    assert _failed(checks) == {"limit_usage_matches_movements"}
    assert f"{world.alice.wallet_id} send " in checks["limit_usage_matches_movements"].detail


async def test_a_withdrawal_completed_while_its_payout_is_pending_is_caught(
    ledger: LedgerWorld,
) -> None:
    """The review's case: PENDING -> COMPLETED is a transition the trigger allows."""
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "UPDATE wallet_transactions SET status = 'COMPLETED', completed_at = now() WHERE id = :t",
        t=world.pending,
    )
    assert _failed(checks) == {"withdrawals_match_payouts"}
    assert world.pending in checks["withdrawals_match_payouts"].detail


async def test_a_payout_of_another_amount_than_its_withdrawal_is_caught(
    ledger: LedgerWorld,
) -> None:
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "ALTER TABLE payouts DISABLE TRIGGER USER",  # t0017 refuses it otherwise
        "UPDATE payouts SET amount = amount + 1 WHERE transaction_id = :t",
        t=world.settled,
    )
    assert _failed(checks) == {"withdrawals_match_payouts"}
    assert world.settled in checks["withdrawals_match_payouts"].detail


async def test_a_return_credit_that_names_no_payout_is_caught(ledger: LedgerWorld) -> None:
    world = await _world(ledger)
    [credit] = await ledger.fetch(
        "SELECT id::text FROM wallet_transactions WHERE original_transaction_id = $1::uuid",
        world.returned,
    )
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "UPDATE wallet_transactions SET original_transaction_id = NULL WHERE id = :c",
        c=credit["id"],
    )
    assert _failed(checks) == {"returned_payouts_credited_back"}
    detail = checks["returned_payouts_credited_back"].detail
    assert world.returned in detail and credit["id"] in detail


async def test_a_send_marked_refunded_with_no_money_back_is_caught(ledger: LedgerWorld) -> None:
    """COMPLETED -> REVERSED with the whole amount reversed: a transition the trigger allows
    and t0026's CHECKs accept; no balance, posting or history sum changes (review of
    2026-12-05)."""
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "UPDATE wallet_transactions SET status = 'REVERSED', reversed_amount = amount"
        " WHERE id = :t",
        t=world.send,
    )
    assert _failed(checks) == {"statuses_match_movements"}
    assert world.send in checks["statuses_match_movements"].detail


async def test_a_top_up_left_pending_while_its_money_stands_is_caught(
    ledger: LedgerWorld,
) -> None:
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "UPDATE wallet_transactions SET status = 'PENDING', completed_at = NULL WHERE id = :t",
        t=world.top_up,
    )
    assert _failed(checks) == {"statuses_match_movements"}
    assert world.top_up in checks["statuses_match_movements"].detail


async def test_receiving_sides_swapped_between_two_sends_are_caught(ledger: LedgerWorld) -> None:
    """Two sends of one amount between four wallets (Alice -> Bob, Carol -> Dave, 500 each);
    each receiving side, its posting and its reference moved to the other's movement: every
    sum and kind holds, and Alice's history says she paid Bob while her movement credits
    Dave."""
    world = await _world(ledger)
    dave = await ledger.new_wallet()
    first = await ledger.send(world.alice, world.bob, 500)
    second = await ledger.send(world.carol, dave, 500)
    first_id = await _ledger_id(ledger, first.transaction_id)
    second_id = await _ledger_id(ledger, second.transaction_id)
    swap = (
        "UPDATE {table} SET ledger_transaction_id = CASE ledger_transaction_id"
        " WHEN CAST(:a AS uuid) THEN CAST(:b AS uuid) ELSE CAST(:a AS uuid) END{extra}"
        " WHERE ledger_transaction_id IN (CAST(:a AS uuid), CAST(:b AS uuid)) AND {credit}"
    )
    checks = await _tampered(
        ledger,
        "ALTER TABLE ledger_postings DISABLE TRIGGER USER",
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        swap.format(table="ledger_postings", extra="", credit="amount > 0"),
        swap.format(
            table="wallet_transactions",
            extra=", reference = (SELECT reference FROM ledger_transactions"
            " WHERE id = CASE wallet_transactions.ledger_transaction_id WHEN CAST(:a AS uuid)"
            " THEN CAST(:b AS uuid) ELSE CAST(:a AS uuid) END)",
            credit="category = 'P2P_RECEIVE'",
        ),
        a=first_id,
        b=second_id,
    )
    assert _failed(checks) == {"p2p_sides_name_each_other"}
    detail = checks["p2p_sides_name_each_other"].detail
    assert first_id in detail and second_id in detail


async def test_a_counterparty_rewritten_is_caught(ledger: LedgerWorld) -> None:
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "UPDATE wallet_transactions SET counterparty_wallet_id = :c WHERE id = :t",
        c=world.carol.wallet_id,
        t=world.send,
    )
    assert _failed(checks) == {"p2p_sides_name_each_other"}
    assert await _ledger_id(ledger, world.send) in checks["p2p_sides_name_each_other"].detail


async def test_a_history_row_given_to_another_user_is_caught(ledger: LedgerWorld) -> None:
    """Alice's side of her send to Bob, re-assigned to Bob's user: ListTransactions would show
    it to Bob and hide it from Alice, while every sum still holds."""
    world = await _world(ledger)
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "UPDATE wallet_transactions SET user_id = :u WHERE id = :t",
        u=world.bob.user_id,
        t=world.send,
    )
    assert _failed(checks) == {"history_rows_owned_by_wallet_owner"}
    detail = checks["history_rows_owned_by_wallet_owner"].detail
    assert world.send in detail and world.bob.user_id not in detail


async def test_transfers_role_catches_a_history_row_given_to_another_user(
    ledger: LedgerWorld,
) -> None:
    """As AdminVerifyLedger and the CLI run it, as transfer's role (which may read the wallets'
    owners since t0021): the owner's edit committed, seen, then put back."""
    world = await _world(ledger)
    owner = await ledger.owner()
    try:
        async with owner.transaction():
            await owner.execute("ALTER TABLE wallet_transactions DISABLE TRIGGER USER")
            await owner.execute(
                "UPDATE wallet_transactions SET user_id = $1 WHERE id = $2::uuid",
                world.carol.user_id,
                world.top_up,
            )
            await owner.execute("ALTER TABLE wallet_transactions ENABLE TRIGGER USER")
        try:
            checks = {
                c.name: c for c in await SqlLedgerAuditor(ledger.engine, b"k" * 32, None).check()
            }
            assert _failed(checks) == {"history_rows_owned_by_wallet_owner"}
            assert world.top_up in checks["history_rows_owned_by_wallet_owner"].detail
            broken = run_transfer_cli(ledger.env, "verify-ledger")
            assert broken.returncode == 1
            assert "FAIL history_rows_owned_by_wallet_owner" in broken.stdout
        finally:
            async with owner.transaction():
                await owner.execute("ALTER TABLE wallet_transactions DISABLE TRIGGER USER")
                await owner.execute(
                    "UPDATE wallet_transactions SET user_id = $1 WHERE id = $2::uuid",
                    world.alice.user_id,
                    world.top_up,
                )
                await owner.execute("ALTER TABLE wallet_transactions ENABLE TRIGGER USER")
    finally:
        await owner.close()
    await ledger_is_clean(ledger)


async def test_the_owner_check_reads_each_table_once_in_one_join(ledger: LedgerWorld) -> None:
    """Cheap on a large ledger: one join of the history and the wallets, no subplan run per
    row, planned as transfer's role."""
    [sql] = [sql for name, _, sql in _CHECKS if name == "history_rows_owned_by_wallet_owner"]
    async with ledger.engine.connect() as conn:
        plan = "\n".join(r[0] for r in await conn.execute(text("EXPLAIN " + sql)))
    joins = [line for line in plan.splitlines() if "Join" in line or "Nested Loop" in line]
    assert len(joins) == 1, plan
    assert "SubPlan" not in plan, plan
    assert plan.count("on wallet_transactions") == 1 and plan.count("on wallets") == 1, plan


async def _checked_behind_a_lock(
    ledger: LedgerWorld,
    check: Callable[[], Coroutine[Any, Any, Sequence[LedgerCheck]]],
    table: str = "ledger_postings",
) -> asyncio.Task[Sequence[LedgerCheck]]:
    """Runs `check` while the owner locks `table` against readers, until a statement of the
    checks has waited on that lock for 0.5 s (or the checks ended), then lets go: the checks'
    task, done or still running."""
    conn = await ledger.owner()
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            checking = asyncio.create_task(check())

            async def waited(seconds: float) -> bool:
                if checking.done():
                    return True
                async with ledger.engine.connect() as seen:  # a role sees its own sessions
                    count = await seen.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE application_name = 'verify' AND wait_event_type = 'Lock'"
                            " AND datname = current_database()"
                            " AND clock_timestamp() - query_start > make_interval(secs => :s)"
                        ),
                        {"s": seconds},
                    )
                return bool(count)

            await eventually(
                lambda: waited(0), within=30, what="the checks wait on the postings' lock"
            )
            # Longer than the bounds below (the engine's 0.1 s, the deadline's 0.2 s): a
            # statement they bound is cancelled while it waits.
            await eventually(
                lambda: waited(0.5), within=30, what="a check waited 0.5 s on the lock"
            )
    finally:
        await conn.close()
    return checking


@pytest.mark.parametrize("table", ["ledger_postings", "audit_seals"])
async def test_the_checks_outlast_the_services_statement_bound_but_not_a_callers_deadline(
    ledger: LedgerWorld, table: str
) -> None:
    """A large ledger's (or audit chain's) full scans take longer than DB_STATEMENT_TIMEOUT_MS
    (sized for requests): a scan waiting longer than the engine's bound still completes, while
    a gRPC caller's deadline still bounds it, and its passing answers DEADLINE_EXCEEDED."""
    engine = create_engine(
        ledger.dbs.app_dsn("transfer"), application_name="verify", statement_timeout_ms=100
    )
    try:
        auditor = SqlLedgerAuditor(engine, b"k" * 32, None)
        checking = await _checked_behind_a_lock(ledger, auditor.check, table)
        checks = await asyncio.wait_for(checking, 60)  # a hang guard
        assert all(c.ok for c in checks), [c for c in checks if not c.ok]

        async def within_a_deadline() -> Sequence[LedgerCheck]:
            DEADLINE.set(time.monotonic() + 0.2)  # this task's context only
            return await auditor.check()

        checking = await _checked_behind_a_lock(ledger, within_a_deadline, table)
        with pytest.raises(DeadlineExceededError) as cut:
            await asyncio.wait_for(checking, 60)
        # Saying which checks ran and which did not (the one cut short first).
        assert isinstance(cut.value, ChecksNotFinishedError)
        ran = 0 if table == "ledger_postings" else len(CHECKS) - 1
        assert [c.name for c in cut.value.finished] == list(CHECKS[:ran])
        assert cut.value.not_run == CHECKS[ran:]
    finally:
        await engine.dispose()


async def test_wrong_currency_movements_that_mirror_each_other_are_caught(
    ledger: LedgerWorld,
) -> None:
    """The review's case: A (INR) pays B (USD) 500 posted in rupees, C (USD) pays D (INR) 500
    posted in dollars. Each wallet's balance is the sum of its postings (in any currency),
    and the balances summed by their wallets' currency still cancel out: only the postings'
    and rows' currency against their wallet's tells. Written by the real ledger between
    wallets of one currency, then B and D relabelled, as a ledger that skipped the recipient's
    currency would have left them."""
    a, b = await ledger.new_wallet(), await ledger.new_wallet()
    c, d = await ledger.new_wallet(currency="USD"), await ledger.new_wallet(currency="USD")
    await ledger.fund(a, 1_000)
    funded = await ledger.ledger.top_up(
        key(c.user_id, TOP_UP), c.user_id, 1_000, "USD", PaymentMethod.UPI, f"upi-{c.user_id}", ""
    )
    assert funded.code == "OK", funded
    rupees = await ledger.send(a, b, 500)
    dollars = await ledger.ledger.send_money(key(c.user_id), c.user_id, d.wallet_id, 500, "USD", "")
    assert dollars.code == "OK" and dollars.transaction is not None, dollars
    [b_side, d_side] = [
        str(r["id"])
        for r in await ledger.fetch(
            "SELECT id::text FROM wallet_transactions WHERE wallet_id = ANY($1::text[])"
            " ORDER BY wallet_id = $2 DESC",
            [b.wallet_id, d.wallet_id],
            b.wallet_id,
        )
    ]
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallets DISABLE TRIGGER USER",
        "UPDATE wallets SET currency = CASE id WHEN :b THEN 'USD' ELSE 'INR' END"
        " WHERE id IN (:b, :d)",
        b=b.wallet_id,
        d=d.wallet_id,
    )
    assert _failed(checks) == {"wallet_postings_in_wallet_currency"}
    detail = checks["wallet_postings_in_wallet_currency"].detail
    movements = [
        await _ledger_id(ledger, rupees.transaction_id),
        await _ledger_id(ledger, dollars.transaction.transaction_id),
    ]
    for named in (*movements, b_side, d_side):
        assert named in detail, (named, detail)
    assert checks["total_balance_zero"].ok  # the totals alone cancel out

    # One such movement alone unbalances the wallets' totals too.
    checks = await _tampered(
        ledger,
        "ALTER TABLE wallets DISABLE TRIGGER USER",
        "UPDATE wallets SET currency = 'USD' WHERE id = :b",
        b=b.wallet_id,
    )
    assert _failed(checks) == {"wallet_postings_in_wallet_currency", "total_balance_zero"}


async def test_an_admin_call_answers_in_time_with_the_checks_it_could_not_run(
    ledger: LedgerWorld,
) -> None:
    """AdminVerifyLedger through the gateway (no deadline, 12 s to answer; here 3 s): a
    check that takes longer (waiting behind a lock here, a large table's scan in life) is
    stopped before the answer is due, and the answer names what ran and what did not, the
    rest of the database's work cancelled with it."""
    verification = LedgerVerification(SqlLedgerAuditor(ledger.engine, b"k" * 32, None), _Clock())
    conn = await ledger.owner()
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE limit_usage IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            answer = await verification.answer(3.0)
            took = time.monotonic() - started
    finally:
        await conn.close()
    assert 3.0 - ANSWER_MARGIN_SECONDS - 0.5 < took < 3.0
    blocked = CHECKS.index("limit_usage_matches_movements")
    assert answer.not_run == CHECKS[blocked:]
    assert [c.name for c in answer.report.checks] == list(CHECKS)
    assert all(c.ok for c in answer.report.checks[:blocked])
    assert all(
        not c.ok and c.detail.startswith("not run: this call answers within 3 s")
        for c in answer.report.checks[blocked:]
    )
    # Nothing left running: the same call completes once the lock is gone.
    assert (await verification.answer(3.0)).complete


class _Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)
