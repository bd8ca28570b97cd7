"""Which statuses carry a reversed amount (transfer t0026), on real PostgreSQL with the wallet
and transfer chains at their heads.

t0001's transition trigger kept a row's status on its transitions and its reversed amount from
shrinking, and a CHECK kept the amount within `[0, amount]`; nothing tied the two together, and
the trigger never looks at an INSERT. As the owner (whom the ledger's SECURITY DEFINER
functions run as), a FAILED withdrawal took a reversed amount of 100 and a COMPLETED top-up
became REVERSED with nothing reversed. The proto's rule (TransactionStatus REVERSED: "fully
refunded or reversed; partial ones stay COMPLETED") is now three CHECKs, for every writer and
every INSERT and UPDATE: only a settled row (COMPLETED, REVERSED) carries a reversed amount, a
REVERSED row is reversed in full, a COMPLETED one at most in part.

Each attempt runs in a transaction rolled back (the ledger's rows are never deleted). The last
two tests migrate the module's database: t0025 lets the owner write the contradictions again;
an upgrade over a row that breaks the rule stops at its validation, naming the constraint, and
runs again once the row is put right.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.integration.transfer.conftest import TRANSFER_HEAD, LedgerWorld, run_transfer_cli

pytestmark = pytest.mark.integration

SETTLED = "wallet_transactions_reversed_only_when_settled"
IN_FULL = "wallet_transactions_reversed_status_in_full"
IN_PART = "wallet_transactions_completed_reversed_in_part"
_SET = "UPDATE wallet_transactions SET {} WHERE id = $1::uuid"
# A copy of a row under a new id, with the status and reversed amount given.
_COPY = (
    "INSERT INTO wallet_transactions (id, ledger_transaction_id, reference, user_id, wallet_id,"
    " type, category, status, amount, currency, balance_after, reversed_amount, created_at,"
    " completed_at) SELECT gen_random_uuid(), ledger_transaction_id, reference, user_id,"
    " wallet_id, type, category, $2, amount, currency, balance_after, $3, created_at,"
    " CASE WHEN $2 = 'PENDING' THEN NULL ELSE coalesce(completed_at, now()) END"
    " FROM wallet_transactions WHERE id = $1::uuid"
)


async def _refused_by(ledger: LedgerWorld, *statements: tuple[Any, ...]) -> str | None:
    """Runs `statements` (each SQL and its arguments) as the owner in one transaction, rolled
    back: the CHECK constraint that refused one (a trigger's refusal names none: its message),
    None when all went through."""
    conn = await ledger.owner()
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            for sql, *args in statements:
                await conn.execute(sql, *args)
        except asyncpg.CheckViolationError as exc:
            return str(exc.constraint_name or exc)
        finally:
            await transaction.rollback()
        return None
    finally:
        await conn.close()


async def _rows(ledger: LedgerWorld) -> dict[str, str]:
    """A COMPLETED top-up of 5,000, a PENDING withdrawal and a FAILED one (its payout
    returned): their ids."""
    alice = await ledger.new_wallet()
    top_up = await ledger.fund(alice, 5_000)
    pending = await ledger.withdraw(alice, 1_000)
    failed = await ledger.withdraw(alice, 700)
    assert pending.transaction is not None and failed.transaction is not None
    back = await ledger.ledger.return_payout(failed.transaction.transaction_id, "account closed")
    assert back.transaction is not None and back.transaction.status.name == "FAILED"
    return {
        "COMPLETED": top_up.transaction_id,
        "PENDING": pending.transaction.transaction_id,
        "FAILED": failed.transaction.transaction_id,
    }


@pytest.fixture(scope="module")
async def rows(ledger: LedgerWorld) -> dict[str, str]:
    return await _rows(ledger)


@pytest.mark.parametrize("status", ["FAILED", "PENDING"])
async def test_a_row_that_never_settled_carries_no_reversed_amount(
    ledger: LedgerWorld, rows: dict[str, str], status: str
) -> None:
    """The review's FAILED withdrawal that took 100; a PENDING one alike, and a copy of either
    inserted with a reversed amount."""
    row = rows[status]
    assert await _refused_by(ledger, (_SET.format("reversed_amount = 100"), row)) == SETTLED
    assert await _refused_by(ledger, (_COPY, row, status, 100)) == SETTLED


async def test_a_completed_row_becomes_reversed_only_reversed_in_full(
    ledger: LedgerWorld, rows: dict[str, str]
) -> None:
    """The review's COMPLETED row that became REVERSED with nothing reversed; nor with part of
    it; nor inserted so."""
    row = rows["COMPLETED"]
    assert await _refused_by(ledger, (_SET.format("status = 'REVERSED'"), row)) == IN_FULL
    assert (
        await _refused_by(
            ledger, (_SET.format("status = 'REVERSED', reversed_amount = amount - 1"), row)
        )
        == IN_FULL
    )
    assert await _refused_by(ledger, (_COPY, row, "REVERSED", 0)) == IN_FULL


async def test_a_row_reversed_in_full_is_reversed_not_completed(
    ledger: LedgerWorld, rows: dict[str, str]
) -> None:
    row = rows["COMPLETED"]
    assert await _refused_by(ledger, (_SET.format("reversed_amount = amount"), row)) == IN_PART
    assert await _refused_by(ledger, (_COPY, row, "COMPLETED", 5_000)) == IN_PART


async def test_partial_then_full_reversals_still_go_through(
    ledger: LedgerWorld, rows: dict[str, str]
) -> None:
    """What a refund or a reversal will write: part of it (the row stays COMPLETED), then the
    rest with the status in the same UPDATE; or all of it at once."""
    row = rows["COMPLETED"]
    assert (
        await _refused_by(
            ledger,
            (_SET.format("reversed_amount = 2000"), row),
            (_SET.format("reversed_amount = 4999"), row),
            (_SET.format("status = 'REVERSED', reversed_amount = amount"), row),
        )
        is None
    )
    assert (
        await _refused_by(
            ledger, (_SET.format("status = 'REVERSED', reversed_amount = amount"), row)
        )
        is None
    )
    # The trigger's rules hold as before: a reversed amount never shrinks.
    assert "never decreases" in str(
        await _refused_by(
            ledger,
            (_SET.format("reversed_amount = 2000"), row),
            (_SET.format("reversed_amount = 1000"), row),
        )
    )


async def _constraints(ledger: LedgerWorld) -> dict[str, tuple[str, bool]]:
    found = await ledger.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS def, convalidated FROM pg_constraint"
        " WHERE conrelid = 'wallet_transactions'::regclass AND conname = ANY($1::text[])",
        [SETTLED, IN_FULL, IN_PART],
    )
    return {r["conname"]: (r["def"], r["convalidated"]) for r in found}


async def test_the_constraints_are_validated(ledger: LedgerWorld) -> None:
    assert await _constraints(ledger) == {
        SETTLED: (
            "CHECK (((reversed_amount = 0)"
            " OR (status = ANY (ARRAY['COMPLETED'::text, 'REVERSED'::text]))))",
            True,
        ),
        IN_FULL: ("CHECK (((status <> 'REVERSED'::text) OR (reversed_amount = amount)))", True),
        IN_PART: ("CHECK (((status <> 'COMPLETED'::text) OR (reversed_amount < amount)))", True),
    }


async def _migrate(ledger: LedgerWorld) -> tuple[int, str]:
    done = await asyncio.to_thread(run_transfer_cli, ledger.env, "migrate")
    return done.returncode, done.stdout + done.stderr


async def _version(ledger: LedgerWorld) -> str:
    [row] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
    return str(row["version_num"])


async def test_t0025_let_the_owner_write_the_contradictions_and_t0026_does_not(
    ledger: LedgerWorld, rows: dict[str, str]
) -> None:
    """Downgraded to t0025: no constraint, the review's two writes go through (rolled back);
    upgraded again: refused."""
    await ledger.migrate("downgrade", "t0025")
    try:
        assert await _version(ledger) == "t0025"
        assert await _constraints(ledger) == {}
        assert (
            await _refused_by(ledger, (_SET.format("reversed_amount = 100"), rows["FAILED"]))
            is None
        )
        assert (
            await _refused_by(ledger, (_SET.format("status = 'REVERSED'"), rows["COMPLETED"]))
            is None
        )
    finally:
        code, output = await _migrate(ledger)
        assert code == 0, output
    assert await _version(ledger) == TRANSFER_HEAD
    assert await _refused_by(ledger, (_SET.format("reversed_amount = 100"), rows["FAILED"])) == (
        SETTLED
    )


async def test_an_upgrade_over_a_contradiction_stops_at_its_validation_and_runs_again(
    ledger: LedgerWorld,
) -> None:
    """A row t0025 let through (a COMPLETED top-up made REVERSED with nothing reversed): the
    upgrade names the constraint and stops at t0025; the constraint is there NOT VALID, and
    holds every new write already. Once the row is put right (reversed in full, which the
    trigger allows: the amount only grows), the upgrade runs again to the head. Last in the
    module: it leaves a REVERSED row."""
    fresh = await _rows(ledger)
    await ledger.migrate("downgrade", "t0025")
    row = fresh["COMPLETED"]
    conn = await ledger.owner()
    try:
        await conn.execute(_SET.format("status = 'REVERSED'"), row)
    finally:
        await conn.close()
    code, output = await _migrate(ledger)
    assert code != 0 and IN_FULL in output, output
    assert await _version(ledger) == "t0025"
    assert (await _constraints(ledger))[IN_FULL][1] is False
    assert await _refused_by(ledger, (_SET.format("reversed_amount = 100"), fresh["FAILED"])) == (
        SETTLED
    )
    conn = await ledger.owner()
    try:
        await conn.execute(_SET.format("reversed_amount = amount"), row)
    finally:
        await conn.close()
    code, output = await _migrate(ledger)
    assert code == 0, output
    assert await _version(ledger) == TRANSFER_HEAD
    assert {name: valid for name, (_, valid) in (await _constraints(ledger)).items()} == {
        SETTLED: True,
        IN_FULL: True,
        IN_PART: True,
    }
