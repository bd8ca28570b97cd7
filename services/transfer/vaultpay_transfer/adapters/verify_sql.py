"""The ledger's invariants, checked on one REPEATABLE READ snapshot (with the audit chain).

Each check names the first five offending ids (never amounts of other people or secrets). They
are full scans: an operator's proof, not a hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.audit import CheckpointStore, verify_audit
from vaultpay_transfer.domain.model import LedgerCheck

__all__ = ["SqlLedgerAuditor"]

_CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "postings_balanced",
        "every ledger transaction's postings sum to zero per currency, and it has postings",
        """
        SELECT id::text FROM (
            SELECT ledger_transaction_id AS id FROM ledger_postings
            GROUP BY ledger_transaction_id, currency HAVING sum(amount) <> 0
            UNION
            SELECT t.id FROM ledger_transactions AS t
            WHERE NOT EXISTS (SELECT 1 FROM ledger_postings AS p
                              WHERE p.ledger_transaction_id = t.id)
        ) AS bad LIMIT 5
        """,
    ),
    (
        "wallet_balances_match_postings",
        "every wallet's balance equals the sum of its postings",
        """
        SELECT coalesce(w.id, p.account) FROM wallets AS w
        FULL JOIN (SELECT account, sum(amount) AS total FROM ledger_postings
                   WHERE account LIKE 'VPY-%' GROUP BY account) AS p ON p.account = w.id
        WHERE coalesce(w.balance, 0) <> coalesce(p.total, 0)
        LIMIT 5
        """,
    ),
    (
        "total_balance_zero",
        "all balances, wallets and system accounts, sum to zero per currency",
        """
        SELECT coalesce(w.currency, s.currency) FROM
            (SELECT currency, sum(balance) AS total FROM wallets GROUP BY currency) AS w
        FULL JOIN
            (SELECT currency, sum(amount) AS total FROM ledger_postings
             WHERE account LIKE 'sys:%' GROUP BY currency) AS s ON s.currency = w.currency
        WHERE coalesce(w.total, 0) + coalesce(s.total, 0) <> 0
        LIMIT 5
        """,
    ),
    (
        "no_negative_user_balance",
        "no wallet balance is negative",
        "SELECT id FROM wallets WHERE balance < 0 LIMIT 5",
    ),
    (
        "wallet_transactions_match_postings",
        "every wallet-side transaction has exactly its posting in its ledger transaction",
        """
        SELECT t.id::text FROM wallet_transactions AS t
        LEFT JOIN ledger_postings AS p
            ON p.ledger_transaction_id = t.ledger_transaction_id AND p.account = t.wallet_id
        WHERE p.id IS NULL
           OR p.amount <> CASE WHEN t.type = 'DEBIT' THEN -t.amount ELSE t.amount END
        LIMIT 5
        """,
    ),
    (
        "wallet_postings_have_transactions",
        "every posting to a wallet shows in that wallet's history",
        """
        SELECT p.ledger_transaction_id::text FROM ledger_postings AS p
        WHERE p.account LIKE 'VPY-%' AND NOT EXISTS (
            SELECT 1 FROM wallet_transactions AS t
            WHERE t.ledger_transaction_id = p.ledger_transaction_id AND t.wallet_id = p.account)
        LIMIT 5
        """,
    ),
    (
        "payouts_in_flight_match_pending",
        "the payouts-in-flight account holds exactly the pending withdrawals",
        """
        SELECT coalesce(f.currency, q.currency) FROM
            (SELECT currency, sum(amount) AS total FROM ledger_postings
             WHERE account = 'sys:payouts_in_flight' GROUP BY currency) AS f
        FULL JOIN
            (SELECT currency, sum(amount) AS total FROM payouts WHERE status = 'PENDING'
             GROUP BY currency) AS q ON q.currency = f.currency
        WHERE coalesce(f.total, 0) <> coalesce(q.total, 0)
        """,
    ),
)


async def _check(conn: AsyncConnection, name: str, what: str, sql: str) -> LedgerCheck:
    bad: Sequence[Any] = (await conn.execute(text(sql))).scalars().all()
    if not bad:
        return LedgerCheck(name, True, what)
    return LedgerCheck(name, False, f"{what}: violated by {', '.join(str(b) for b in bad)}")


class SqlLedgerAuditor:
    """`LedgerAuditor`: the ledger checks in one snapshot, then the audit chain in its own."""

    def __init__(
        self, engine: AsyncEngine, audit_key: bytes, checkpoints: CheckpointStore | None
    ) -> None:
        self._engine = engine
        self._audit_key = audit_key
        self._checkpoints = checkpoints

    async def check(self) -> Sequence[LedgerCheck]:
        async with self._engine.connect() as conn:
            await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with conn.begin():
                checks = [await _check(conn, *spec) for spec in _CHECKS]
        # The audit chain in a snapshot of its own, taken after its latest checkpoint is read
        # (verify_audit does both): in the ledger's snapshot, a checkpoint the sealer saved
        # during the checks above would name seals the snapshot cannot see, and read as rows
        # deleted.
        audit = await verify_audit(self._engine, self._audit_key, self._checkpoints)
        checks.append(
            LedgerCheck(
                "audit_chain_intact",
                audit.ok,
                f"{audit.sealed} audit rows sealed, {audit.verified} verified, "
                f"{audit.unsealed} not sealed yet"
                + ("" if audit.ok else f"; BROKEN: {audit.broken}")
                + "".join(f"; warning: {warning}" for warning in audit.warnings),
            )
        )
        return checks
