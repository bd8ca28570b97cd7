"""The ledger's rules on real PostgreSQL: what one movement writes, what a refusal does not
write, the guards under the row lock, and what the database itself refuses to anyone."""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from tests.integration.transfer.conftest import (
    SEND,
    TOP_UP,
    LedgerWorld,
    footprint,
    key,
    plain_dsn,
)
from vaultpay_transfer.domain.model import PaymentMethod, TransactionStatus, TransactionType
from vaultpay_transfer.domain.outcomes import LedgerOutcome
from vaultpay_wallet.domain.limits import LimitAction, LimitOverride, LimitSource, effective_caps
from vaultpay_wallet.domain.model import FreezeSource, KycTier
from vaultpay_wallet.domain.settings_catalog import SETTINGS


async def test_a_send_writes_one_balanced_movement_both_sides_and_two_notifications(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet(name="Alice")
    bob = await ledger.new_wallet(name="Bob")
    await ledger.fund(alice, 10_000)
    sent = await ledger.ledger.send_money(
        key(alice.user_id), alice.user_id, bob.wallet_id, 2_500, "INR", "lunch"
    )
    assert sent.code == "OK"
    debit = sent.transaction
    assert debit is not None
    assert re.fullmatch(r"VP-TXN-[A-Z0-9]{8}", debit.reference)
    assert (debit.type, debit.amount_minor, debit.balance_after_minor) == (
        TransactionType.DEBIT,
        2_500,
        7_500,
    )
    assert (debit.counterparty.wallet_id, debit.counterparty.display_name) == (
        bob.wallet_id,
        "Bob",
    )
    sides = await ledger.fetch(
        "SELECT wallet_id, type, category, balance_after, request_id FROM wallet_transactions"
        " WHERE reference = $1 ORDER BY type",
        debit.reference,
    )
    assert [(s["wallet_id"], s["type"], s["category"], s["balance_after"]) for s in sides] == [
        (bob.wallet_id, "CREDIT", "P2P_RECEIVE", 2_500),
        (alice.wallet_id, "DEBIT", "P2P_SEND", 7_500),
    ]
    assert sides[0]["request_id"] is None
    postings = await ledger.fetch(
        "SELECT p.account, p.amount FROM ledger_postings p JOIN ledger_transactions t"
        " ON t.id = p.ledger_transaction_id WHERE t.reference = $1 ORDER BY p.amount",
        debit.reference,
    )
    assert [(p["account"], p["amount"]) for p in postings] == [
        (alice.wallet_id, -2_500),
        (bob.wallet_id, 2_500),
    ]
    events = await ledger.fetch(
        "SELECT key, payload->>'kind' AS kind FROM outbox_events"
        " WHERE producer = 'transfer' AND payload->>'reference' = $1 ORDER BY key",
        debit.reference,
    )
    assert sorted((e["key"], e["kind"]) for e in events) == sorted(
        [(alice.user_id, "MONEY_SENT"), (bob.user_id, "MONEY_RECEIVED")]
    )


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("poor", "INSUFFICIENT_BALANCE"),
        ("frozen", "WALLET_FROZEN"),
        ("closed", "WALLET_CLOSED"),
        ("recipient_closed", "RECIPIENT_CLOSED"),
        ("self", "SELF_TRANSFER"),
        ("unknown_recipient", "RECIPIENT_NOT_FOUND"),
        ("no_kyc", "KYC_NOT_VERIFIED"),
        ("usd", "CURRENCY_MISMATCH"),
        ("recipient_usd", "CURRENCY_MISMATCH"),
        ("per_transaction", "PER_TRANSACTION_LIMIT_EXCEEDED"),
        ("monthly", "MONTHLY_LIMIT_EXCEEDED"),
        ("user_lower_daily", "DAILY_LIMIT_EXCEEDED"),
        ("no_wallet", "WALLET_NOT_FOUND"),
    ],
)
async def test_a_refused_send_names_its_guard_and_writes_nothing(
    ledger: LedgerWorld, setup: str, expected: str
) -> None:
    alice = await ledger.new_wallet()
    bob = await ledger.new_wallet(currency="USD" if setup == "recipient_usd" else "INR")
    await ledger.fund(alice, 5_000)
    sender, recipient, currency, amount = alice.user_id, bob.wallet_id, "INR", 1_000
    if setup == "poor":
        amount = 5_001
    elif setup == "frozen":
        await ledger.freeze(alice, FreezeSource.SELF)
    elif setup in ("closed", "recipient_closed"):
        # A CLOSED wallet holds no money (wallet's w0011): the closed sender is an empty one.
        target = bob if setup == "recipient_closed" else await ledger.new_wallet()
        if setup == "closed":
            sender = target.user_id
        conn = await ledger.owner()
        try:
            await conn.execute(
                "UPDATE wallets SET status = 'CLOSED', closed_at = now() WHERE id = $1",
                target.wallet_id,
            )
        finally:
            await conn.close()
    elif setup == "self":
        recipient = alice.wallet_id
    elif setup == "unknown_recipient":
        recipient = "VPY-ZZZZZZ"
    elif setup == "no_kyc":
        conn = await ledger.owner()
        try:
            await conn.execute(
                "UPDATE wallets SET kyc_tier = 'NONE' WHERE id = $1", alice.wallet_id
            )
        finally:
            await conn.close()
    elif setup == "usd":
        currency = "USD"
    elif setup == "per_transaction":
        await ledger.set_limit(alice, "send", per_transaction=999)
    elif setup == "monthly":
        await ledger.set_limit(alice, "send", monthly=999)
    elif setup == "user_lower_daily":
        await ledger.set_limit(alice, "send", source="USER", daily=999)
    elif setup == "no_wallet":
        sender = str(uuid.uuid4())
    before = await footprint(ledger)
    outcome = await ledger.ledger.send_money(key(sender), sender, recipient, amount, currency, "")
    assert outcome.code == expected, outcome
    assert outcome.transaction is None
    assert await footprint(ledger) == before
    assert await ledger.balance(alice) == 5_000


async def test_a_daily_refusal_tells_the_months_limit_and_usage_too(ledger: LedgerWorld) -> None:
    # The service's Retry-After needs both windows: tomorrow the month still holds today's
    # usage (transfer t0006).
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 5_000)
    await ledger.set_limit(alice, "send", daily=1_000, monthly=1_500)
    sent = await ledger.ledger.send_money(
        key(alice.user_id), alice.user_id, bob.wallet_id, 700, "INR", ""
    )
    assert sent.accepted, sent
    refused = await ledger.ledger.send_money(
        key(alice.user_id), alice.user_id, bob.wallet_id, 400, "INR", ""
    )
    assert refused.code == "DAILY_LIMIT_EXCEEDED"
    details = dict(refused.details)
    assert details.pop("decided_at")  # transfer t0016: test_limit_refusal_time.py
    assert details == {
        "action": "send",
        "limit_minor": "1000",
        "used_minor": "700",
        "currency": "INR",
        "monthly_limit_minor": "1500",
        "monthly_used_minor": "700",
    }


async def test_a_retry_replays_the_stored_answer_and_another_request_is_refused(
    ledger: LedgerWorld,
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 5_000)
    first_key = key(alice.user_id, SEND, body="A")
    first = await ledger.ledger.send_money(first_key, alice.user_id, bob.wallet_id, 100, "INR", "")
    replay = await ledger.ledger.send_money(first_key, alice.user_id, bob.wallet_id, 100, "INR", "")
    assert (replay.code, replay.transaction) == ("REPLAY", first.transaction)
    async with ledger.ledger.hold(first_key) as held:  # what SendMoney's lookup answers
        assert held.stored == first.transaction
    other = key(alice.user_id, SEND, first_key.request_id, body="B")
    reused = await ledger.ledger.send_money(other, alice.user_id, bob.wallet_id, 200, "INR", "")
    assert reused.code == "IDEMPOTENCY_KEY_REUSED"
    # The same request_id on another money-moving method never moves money again either.
    as_top_up = key(alice.user_id, TOP_UP, first_key.request_id)
    top_up = await ledger.ledger.top_up(
        as_top_up, alice.user_id, 100, "INR", PaymentMethod.CARD, "card-1", "Card"
    )
    assert top_up.code == "IDEMPOTENCY_KEY_REUSED"
    assert await ledger.balance(bob) == 100


async def test_a_payment_reference_is_credited_once_per_method(ledger: LedgerWorld) -> None:
    alice = await ledger.new_wallet()
    reference = f"upi-{uuid.uuid4().hex}"

    async def top_up(method: PaymentMethod) -> str:
        outcome = await ledger.ledger.top_up(
            key(alice.user_id, TOP_UP), alice.user_id, 1_000, "INR", method, reference, "x"
        )
        return outcome.code

    assert await top_up(PaymentMethod.UPI) == "OK"
    before = await footprint(ledger)
    assert await top_up(PaymentMethod.UPI) == "PAYMENT_REFERENCE_USED"
    assert await footprint(ledger) == before  # the refusal wrote nothing
    assert await top_up(PaymentMethod.CARD) == "OK"
    assert await ledger.balance(alice) == 2_000


@pytest.mark.parametrize(
    ("setup", "expected", "limit_minor", "used_minor"),
    [
        ("poor", "INSUFFICIENT_BALANCE", None, None),
        ("per_transaction", "PER_TRANSACTION_LIMIT_EXCEEDED", "599", "0"),
        ("daily", "DAILY_LIMIT_EXCEEDED", "1500", "1000"),
        ("monthly", "MONTHLY_LIMIT_EXCEEDED", "1500", "1000"),
    ],
    ids=["poor", "per_transaction", "daily", "monthly"],
)
async def test_a_refused_withdrawal_names_its_guard_and_writes_nothing(
    ledger: LedgerWorld,
    setup: str,
    expected: str,
    limit_minor: str | None,
    used_minor: str | None,
) -> None:
    """After a withdrawal of 1,000 today (its usage, payout and postings in place), another
    of 600 (of 4,001 when the balance is short) is refused and changes none of them."""
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 5_000)
    assert (await ledger.withdraw(alice, 1_000)).code == "OK"
    amount = 4_001 if setup == "poor" else 600
    if setup == "per_transaction":
        await ledger.set_limit(alice, "withdraw", per_transaction=599)
    elif setup == "daily":
        await ledger.set_limit(alice, "withdraw", daily=1_500, monthly=100_000)
    elif setup == "monthly":
        await ledger.set_limit(alice, "withdraw", daily=100_000, monthly=1_500)
    before = await footprint(ledger)
    outcome = await ledger.withdraw(alice, amount)
    assert (outcome.code, outcome.transaction) == (expected, None), outcome
    if limit_minor is not None:
        assert (outcome.details["limit_minor"], outcome.details["used_minor"]) == (
            limit_minor,
            used_minor,
        )
    assert await footprint(ledger) == before
    assert await ledger.balance(alice) == 4_000


@pytest.mark.parametrize(
    ("setup", "expected", "limit_minor", "used_minor"),
    [
        ("payment_reference_used", "PAYMENT_REFERENCE_USED", None, None),
        ("per_transaction", "PER_TRANSACTION_LIMIT_EXCEEDED", "599", "0"),
        ("daily", "DAILY_LIMIT_EXCEEDED", "1500", "1000"),
        ("monthly", "MONTHLY_LIMIT_EXCEEDED", "1500", "1000"),
    ],
    ids=["payment_reference_used", "per_transaction", "daily", "monthly"],
)
async def test_a_refused_top_up_names_its_guard_and_writes_nothing(
    ledger: LedgerWorld,
    setup: str,
    expected: str,
    limit_minor: str | None,
    used_minor: str | None,
) -> None:
    """After a top-up of 1,000 today, another of 600 is refused and changes nothing."""
    alice = await ledger.new_wallet()
    credited = f"upi-{uuid.uuid4().hex}"

    async def top_up(amount: int, reference: str) -> LedgerOutcome:
        return await ledger.ledger.top_up(
            key(alice.user_id, TOP_UP),
            alice.user_id,
            amount,
            "INR",
            PaymentMethod.UPI,
            reference,
            "UPI test",
        )

    assert (await top_up(1_000, credited)).code == "OK"
    reference = credited if setup == "payment_reference_used" else f"upi-{uuid.uuid4().hex}"
    if setup == "per_transaction":
        await ledger.set_limit(alice, "top_up", per_transaction=599)
    elif setup == "daily":
        await ledger.set_limit(alice, "top_up", daily=1_500, monthly=100_000)
    elif setup == "monthly":
        await ledger.set_limit(alice, "top_up", daily=100_000, monthly=1_500)
    before = await footprint(ledger)
    outcome = await top_up(600, reference)
    assert (outcome.code, outcome.transaction) == (expected, None), outcome
    if limit_minor is not None:
        assert (outcome.details["limit_minor"], outcome.details["used_minor"]) == (
            limit_minor,
            used_minor,
        )
    assert await footprint(ledger) == before
    assert await ledger.balance(alice) == 1_000


async def test_a_withdrawal_moves_money_into_flight_and_settles_or_comes_back(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 10_000)

    async def withdraw(amount: int) -> str:
        outcome = await ledger.withdraw(alice, amount)
        assert outcome.code == "OK", outcome
        assert outcome.transaction is not None
        assert outcome.transaction.status is TransactionStatus.PENDING
        return outcome.transaction.transaction_id

    settled, returned = await withdraw(3_000), await withdraw(2_000)
    assert await ledger.balance(alice) == 5_000
    done = await ledger.ledger.settle_payout(settled)
    assert done.outcome == "OK"
    assert done.transaction is not None and done.transaction.status is TransactionStatus.COMPLETED
    back = await ledger.ledger.return_payout(returned, "account closed")
    assert back.transaction is not None and back.transaction.status is TransactionStatus.FAILED
    late_settle = await ledger.ledger.settle_payout(returned)
    assert (late_settle.outcome, late_settle.final_status) == ("ALREADY_FINISHED", "RETURNED")
    late_return = await ledger.ledger.return_payout(settled, "late")
    assert (late_return.outcome, late_return.final_status) == ("ALREADY_FINISHED", "SETTLED")
    assert await ledger.balance(alice) == 7_000
    credit = await ledger.fetch(
        "SELECT type, category, amount, balance_after FROM wallet_transactions"
        " WHERE original_transaction_id = $1::uuid",
        returned,
    )
    assert [tuple(c.values()) for c in credit] == [("CREDIT", "WITHDRAW", 2_000, 7_000)]
    usage = await ledger.fetch(
        "SELECT sum(used) AS used FROM limit_usage WHERE wallet_id = $1 AND action = 'withdraw'",
        alice.wallet_id,
    )
    assert usage[0]["used"] == 3_000  # the returned payout no longer counts


async def _as_app(ledger: LedgerWorld, service: str, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(plain_dsn(ledger.dbs.app_dsn(service)))
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def _as_owner(ledger: LedgerWorld, sql: str, *args: Any) -> None:
    conn = await ledger.owner()
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_postings SET amount = amount * 2",
        "DELETE FROM ledger_postings",
        "UPDATE wallet_transactions SET amount = 1",
        "DELETE FROM wallet_transactions",
        "INSERT INTO ledger_transactions (id, kind, currency, amount, created_at)"
        " VALUES (gen_random_uuid(), 'P2P', 'INR', 1, now())",
        "UPDATE wallets SET balance = balance + 1",
    ],
)
@pytest.mark.parametrize("service", ["transfer", "wallet"])
async def test_the_app_roles_cannot_write_the_ledger_or_balances_directly(
    ledger: LedgerWorld, service: str, statement: str
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 1_000)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _as_app(ledger, service, statement)


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("UPDATE ledger_postings SET amount = amount * 2", asyncpg.InsufficientPrivilegeError),
        ("DELETE FROM ledger_postings", asyncpg.InsufficientPrivilegeError),
        ("TRUNCATE ledger_postings CASCADE", asyncpg.InsufficientPrivilegeError),
        ("DELETE FROM ledger_transactions", asyncpg.InsufficientPrivilegeError),
        ("UPDATE wallet_transactions SET amount = amount + 1", asyncpg.InsufficientPrivilegeError),
        ("UPDATE wallet_transactions SET note = 'rewritten'", asyncpg.InsufficientPrivilegeError),
        (
            "UPDATE wallet_transactions SET status = 'PENDING', completed_at = NULL"
            " WHERE status = 'COMPLETED'",
            asyncpg.CheckViolationError,
        ),
        ("DELETE FROM wallet_transactions", asyncpg.InsufficientPrivilegeError),
    ],
)
async def test_even_the_owner_cannot_rewrite_history(
    ledger: LedgerWorld, statement: str, error: type[Exception]
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 1_000)
    with pytest.raises(error):
        await _as_owner(ledger, statement)


async def test_postings_that_do_not_balance_are_refused_even_for_the_owner(
    ledger: LedgerWorld,
) -> None:
    movement = str(uuid.uuid4())
    conn = await ledger.owner()
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO ledger_transactions (id, kind, currency, amount, created_at)"
                " VALUES ($1::uuid, 'P2P', 'INR', 5, now())",
                movement,
            )
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    "INSERT INTO ledger_postings (ledger_transaction_id, account, currency,"
                    " amount, created_at) VALUES ($1::uuid, 'sys:clearing', 'INR', -5, now()),"
                    " ($1::uuid, 'VPY-AAAAAA', 'INR', 4, now())",
                    movement,
                )
            # Leaving the block asks for a COMMIT: the refused statement makes it a rollback.
    finally:
        await conn.close()
    # Read from a new connection: nothing of the movement was kept, not even its header.
    kept = await ledger.fetch(
        "SELECT (SELECT count(*) FROM ledger_transactions WHERE id = $1::uuid) AS headers,"
        " (SELECT count(*) FROM ledger_postings WHERE ledger_transaction_id = $1::uuid)"
        " AS postings",
        movement,
    )
    assert [tuple(r) for r in kept] == [(0, 0)]


async def _settings(ledger: LedgerWorld) -> dict[str, int]:
    rows = await ledger.fetch("SELECT key, value FROM system_settings")
    return {r["key"]: int(r["value"]) for r in rows}


async def test_the_caps_read_in_sql_are_wallets_effective_limits(ledger: LedgerWorld) -> None:
    """transfer_caps() computes in SQL what wallet's `effective_caps` computes in Python;
    every combination of tier, admin override and user limit agrees."""
    defaults = await _settings(ledger)
    now = datetime.now(UTC)
    windows: list[dict[str, int | None]] = [
        {},
        {"daily": 1_000},
        {"per_transaction": 700_000_00, "monthly": 5_000},
    ]
    for tier, admin, user in itertools.product(
        (KycTier.BASIC, KycTier.FULL), windows, [{}, {"daily": 900}, {"per_transaction": 10**10}]
    ):
        wallet = await ledger.new_wallet(tier=tier.value)
        overrides = []
        for source, values in ((LimitSource.ADMIN_OVERRIDE, admin), (LimitSource.USER, user)):
            if values:
                await ledger.set_limit(wallet, "send", source=source.value, **values)
                overrides.append(
                    LimitOverride(
                        wallet.wallet_id,
                        source,
                        LimitAction.SEND,
                        values.get("per_transaction"),
                        values.get("daily"),
                        values.get("monthly"),
                        "test",
                        "",
                        now,
                    )
                )
        expected = next(
            c for c in effective_caps(tier, defaults, overrides) if c.action is LimitAction.SEND
        )
        # As the owner, whom the money functions that call it run as.
        [row] = await ledger.fetch(
            "SELECT * FROM transfer_caps($1, $2, 'send')", wallet.wallet_id, tier.value
        )
        assert (row["per_transaction"], row["daily"], row["monthly"]) == (
            expected.per_transaction.amount_minor,
            expected.daily.amount_minor,
            expected.monthly.amount_minor,
        ), (tier, admin, user)
    assert SETTINGS  # the catalogue the migration seeded
