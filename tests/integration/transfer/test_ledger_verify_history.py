"""The ledger's checks on a ledger older and newer functions wrote: no false failure.

The module's own database is downgraded to t0011 (the movements' time read before the wallet's
row lock, as until t0012), movements are made, it is upgraded to head (TRANSFER_HEAD) and the same
movements are made again; then every check of `SqlLedgerAuditor` must pass. The movements of
each era: a send overtaken while it waited for its wallet's row lock (the session holding the
lock tops the wallet up and commits first: under t0011 the send's created_at is earlier than
the top-up's while its posting id is later), one payment reference topped up under two methods
(UPI and CARD), a withdrawal the bank refuses (account 000000000000) and that is returned, and
one that stays pending. A wallet with no history at all is added last.

At t0011 the payout is returned through t0011's own `transfer_return_payout` (today's worker
calls t0014's claim, which t0011 lacks); at head the payout worker returns it. The pending
withdrawals go to an account whose bank call fails, so the worker leaves them PENDING.

Then the owner moves a returned withdrawal's given-back limit usage to another day (rolled
back): `limit_usage_matches_movements` must fail.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.fakes.transfer import ScriptedBank
from tests.integration.transfer.conftest import (
    TOP_UP,
    TRANSFER_HEAD,
    LedgerWorld,
    Wallet,
    account_hash,
    key,
    run_transfer_cli,
    send_overtaken_by_a_top_up,
)
from vaultpay_common.db import create_engine
from vaultpay_transfer.adapters.verify_sql import SqlLedgerAuditor, check_ledger
from vaultpay_transfer.domain.model import LedgerCheck, PaymentMethod
from vaultpay_transfer.domain.validation import REFUSING_TEST_ACCOUNT
from vaultpay_transfer.service_layer.payouts import PayoutWorker

pytestmark = pytest.mark.integration

REFUSED = account_hash(REFUSING_TEST_ACCOUNT)  # the bank refuses it: the payout is returned
UNREACHABLE = account_hash("111111111111")  # the bank call fails: the payout stays PENDING


@dataclass
class Era:
    """What one era's functions wrote (wallet-side ids)."""

    send: str  # the overtaken send (alice's side)
    top_up: str  # the top-up that overtook it
    returned: str  # the withdrawal the bank refused
    pending: str  # the withdrawal still pending


@dataclass
class History:
    alice: Wallet
    bob: Wallet
    idle: Wallet  # never moved money
    eras: dict[str, Era]


async def _overtaken_send(ledger: LedgerWorld, alice: Wallet, bob: Wallet) -> tuple[str, str]:
    """A send of alice's waits for her row lock; the session holding it tops her up and
    commits first. The send's and the top-up's wallet-side ids."""
    sent, credit = await send_overtaken_by_a_top_up(ledger, alice, bob)
    assert sent.code == "OK" and sent.transaction is not None, sent
    [top_up] = await ledger.fetch(
        "SELECT id::text AS id FROM wallet_transactions WHERE wallet_id = $1"
        " AND category = 'TOP_UP' AND request_id = $2::uuid",
        alice.wallet_id,
        credit.request_id,
    )
    return sent.transaction.transaction_id, str(top_up["id"])


async def _order(ledger: LedgerWorld, first: str, second: str) -> dict[str, bool]:
    """Whether `first` is before `second` by created_at and by its wallet posting's id."""
    [row] = await ledger.fetch(
        "SELECT a.created_at < b.created_at AS by_time, pa.id < pb.id AS by_posting"
        " FROM wallet_transactions AS a, wallet_transactions AS b, ledger_postings AS pa,"
        " ledger_postings AS pb WHERE a.id = $1::uuid AND b.id = $2::uuid"
        " AND pa.ledger_transaction_id = a.ledger_transaction_id AND pa.account = a.wallet_id"
        " AND pb.ledger_transaction_id = b.ledger_transaction_id AND pb.account = b.wallet_id",
        first,
        second,
    )
    return {"by_time": row["by_time"], "by_posting": row["by_posting"]}


async def _era(ledger: LedgerWorld, alice: Wallet, bob: Wallet, *, worker: bool) -> Era:
    send, top_up = await _overtaken_send(ledger, alice, bob)
    reference = f"ref-{uuid.uuid4().hex}"
    for method in (PaymentMethod.UPI, PaymentMethod.CARD):
        outcome = await ledger.ledger.top_up(
            key(alice.user_id, TOP_UP), alice.user_id, 900, "INR", method, reference, "test"
        )
        assert outcome.code == "OK", outcome
    refused = await ledger.withdraw(alice, 1_200, account_hash=REFUSED)
    pending = await ledger.withdraw(alice, 1_500, account_hash=UNREACHABLE)
    assert refused.transaction is not None and pending.transaction is not None
    returned = refused.transaction.transaction_id
    if worker:
        bank = ScriptedBank(refusing={REFUSED}, down={UNREACHABLE})
        await PayoutWorker(ledger.ledger, bank, batch_size=1000).run_once()
        assert returned in bank.asked
    else:
        settled = await ledger.ledger.return_payout(returned, "account closed")
        assert settled.outcome == "OK", settled
    await ledger.send(bob, alice, 100)
    return Era(send, top_up, returned, pending.transaction.transaction_id)


@pytest.fixture(scope="module")
async def history(ledger: LedgerWorld) -> History:
    await ledger.migrate("downgrade", "t0011")
    [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
    assert version["version_num"] == "t0011"
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 20_000)
    await ledger.fund(bob, 5_000)
    eras = {"t0011": await _era(ledger, alice, bob, worker=False)}

    migrated = await asyncio.to_thread(run_transfer_cli, ledger.env, "migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
    assert version["version_num"] == TRANSFER_HEAD
    eras["t0021"] = await _era(ledger, alice, bob, worker=True)
    return History(alice, bob, await ledger.new_wallet(), eras)


async def test_a_ledger_older_and_newer_functions_wrote_passes_every_check(
    ledger: LedgerWorld, history: History
) -> None:
    old, new = history.eras["t0011"], history.eras["t0021"]
    # The scenario is the one meant: t0011's overtaken send is timed before the top-up that
    # overtook it but posted after it; t0021's is after it both ways.
    assert await _order(ledger, old.top_up, old.send) == {"by_time": False, "by_posting": True}
    assert await _order(ledger, new.top_up, new.send) == {"by_time": True, "by_posting": True}
    statuses = {
        str(r["transaction_id"]): r["status"]
        for r in await ledger.fetch("SELECT transaction_id, status FROM payouts")
    }
    assert statuses == {
        old.returned: "RETURNED",
        old.pending: "PENDING",
        new.returned: "RETURNED",
        new.pending: "PENDING",
    }
    payments = await ledger.fetch(
        "SELECT payment_reference FROM top_up_payments WHERE payment_reference LIKE 'ref-%'"
        " GROUP BY payment_reference HAVING count(*) = 2"
    )
    assert len(payments) == 2
    assert (
        await ledger.fetch(
            "SELECT 1 FROM wallet_transactions WHERE wallet_id = $1", history.idle.wallet_id
        )
        == []
    )

    checks = await SqlLedgerAuditor(ledger.engine, b"k" * 32, None).check()
    assert len(checks) == 19
    failing = [c for c in checks if not c.ok]
    print("failing checks:", failing)
    assert all(c.ok for c in checks), failing


async def _tampered(ledger: LedgerWorld, *edits: str, **params: Any) -> dict[str, LedgerCheck]:
    """The ledger checks seen inside the owner's transaction that made `edits`, rolled back."""
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


@pytest.mark.parametrize("era", ["t0011", "t0021"])
async def test_a_returned_withdrawals_usage_given_back_on_another_day_is_caught(
    ledger: LedgerWorld, history: History, era: str
) -> None:
    """The era's pending withdrawal (1,500) is first moved to the next day with its usage: a
    consistent edit, which passes. Then the returned one's (1,200) given-back usage is taken
    again on its own day and given back on the next day instead: each month's total is
    unchanged, but its day now counts a withdrawal that was returned. limit_usage has no
    append-only trigger: the owner writes it directly."""
    rows = {
        str(r["id"]): r
        for r in await ledger.fetch(
            "SELECT id, wallet_id, amount, (created_at AT TIME ZONE 'Asia/Kolkata')::date AS day"
            " FROM wallet_transactions WHERE id = ANY($1::uuid[])",
            [history.eras[era].returned, history.eras[era].pending],
        )
    }
    returned, pending = rows[history.eras[era].returned], rows[history.eras[era].pending]
    day: date = returned["day"]
    assert pending["day"] == day and pending["amount"] >= returned["amount"]
    params = {
        "w": returned["wallet_id"],
        "p": pending["id"],
        "pa": pending["amount"],
        "ra": returned["amount"],
        "d": day,
        "n": day + timedelta(days=1),
    }
    move_pending = (
        "ALTER TABLE wallet_transactions DISABLE TRIGGER USER",
        "UPDATE wallet_transactions SET created_at = created_at + interval '1 day' WHERE id = :p",
        "UPDATE limit_usage SET used = used - :pa"
        " WHERE wallet_id = :w AND action = 'withdraw' AND day = :d",
        "INSERT INTO limit_usage (wallet_id, action, day, used) VALUES (:w, 'withdraw', :n, :pa)",
    )
    moved = await _tampered(ledger, *move_pending, **params)
    assert [c for c in moved.values() if not c.ok] == []

    checks = await _tampered(
        ledger,
        *move_pending,
        "UPDATE limit_usage SET used = used + :ra"
        " WHERE wallet_id = :w AND action = 'withdraw' AND day = :d",
        "UPDATE limit_usage SET used = used - :ra"
        " WHERE wallet_id = :w AND action = 'withdraw' AND day = :n",
        **params,
    )
    assert {name for name, check in checks.items() if not check.ok} == {
        "limit_usage_matches_movements"
    }
    detail = checks["limit_usage_matches_movements"].detail
    assert f"{returned['wallet_id']} withdraw {day.isoformat()}" in detail
    assert f"{returned['wallet_id']} withdraw {params['n'].isoformat()}" in detail
