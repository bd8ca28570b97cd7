"""The ledger's invariants, checked on one REPEATABLE READ snapshot (with the audit chain).

Each check names the first five offending ids (never amounts of other people or secrets). They
are full scans: an operator's proof, not a hot path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.audit import AuditVerification, CheckpointStore, verify_audit
from vaultpay_common.context import remaining_seconds
from vaultpay_common.db import limit_statements, query_canceled
from vaultpay_transfer.domain.model import LedgerCheck
from vaultpay_transfer.service_layer.ports import CheckDone
from vaultpay_transfer.service_layer.verification import ChecksNotFinishedError

__all__ = [
    "AUDIT_CHECK",
    "CHECK_COUNT",
    "CHECK_NAMES",
    "SqlLedgerAuditor",
    "audit_chain_check",
    "check_ledger",
]

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
        # A wallet's balance is in its wallet's currency; its postings each carry their own.
        # Summed by the wallets' label alone, two wrong-currency movements that mirror each
        # other (INR posted into a USD wallet, USD into an INR one) cancelled out: the
        # wallets' side is summed by the postings' currency too (the same scan of the
        # postings), and the next check ties each posting to its wallet's currency.
        "total_balance_zero",
        "all balances, wallets and system accounts, sum to zero per currency (the wallets'"
        " by their balances, in the wallet's currency, and by their postings, in the"
        " posting's)",
        """
        SELECT coalesce(w.currency, p.currency) FROM
            (SELECT currency, sum(balance) AS total FROM wallets GROUP BY currency) AS w
        FULL JOIN
            (SELECT currency,
                    coalesce(sum(amount) FILTER (WHERE account LIKE 'VPY-%'), 0) AS wallets,
                    coalesce(sum(amount) FILTER (WHERE account LIKE 'sys:%'), 0) AS system
             FROM ledger_postings GROUP BY currency) AS p ON p.currency = w.currency
        WHERE coalesce(w.total, 0) + coalesce(p.system, 0) <> 0
           OR coalesce(p.wallets, 0) + coalesce(p.system, 0) <> 0
        LIMIT 5
        """,
    ),
    (
        # Nothing else compares a posting's currency with its wallet's: each wallet's
        # balance is the sum of its postings whatever their currency, and the totals above
        # balance when wrong-currency movements mirror each other. Named: the movement of
        # a wrong posting, the wallet-side row of a wrong row.
        "wallet_postings_in_wallet_currency",
        "every posting to a wallet, and every wallet-side transaction, is in the wallet's currency",
        """
        SELECT id FROM (
            SELECT p.ledger_transaction_id::text AS id FROM ledger_postings AS p
            JOIN wallets AS w ON w.id = p.account
            WHERE p.account LIKE 'VPY-%' AND p.currency <> w.currency
            UNION
            SELECT t.id::text FROM wallet_transactions AS t
            JOIN wallets AS w ON w.id = t.wallet_id
            WHERE t.currency <> w.currency
        ) AS bad LIMIT 5
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
    (
        # The accounts each kind moves money between, as the ledger functions write them
        # (a wallet is `wallet`). REFUND and REVERSAL have no writer yet: the one that adds
        # them adds their shape here.
        "ledger_transactions_match_postings",
        "every ledger transaction's amount and currency are what its two postings move,"
        " between the accounts of its kind",
        """
        SELECT t.id::text FROM ledger_transactions AS t
        LEFT JOIN (
            SELECT ledger_transaction_id AS id, count(*) AS postings,
                   sum(amount) FILTER (WHERE amount > 0) AS moved,
                   min(currency) AS low_currency, max(currency) AS high_currency,
                   min(CASE WHEN account LIKE 'VPY-%' THEN 'wallet' ELSE account END)
                       FILTER (WHERE amount < 0) AS source,
                   min(CASE WHEN account LIKE 'VPY-%' THEN 'wallet' ELSE account END)
                       FILTER (WHERE amount > 0) AS target
            FROM ledger_postings GROUP BY ledger_transaction_id
        ) AS p ON p.id = t.id
        WHERE p.id IS NULL OR p.postings <> 2 OR p.moved IS DISTINCT FROM t.amount
           OR p.low_currency <> t.currency OR p.high_currency <> t.currency
           OR concat_ws(' ', t.kind, p.source, p.target) NOT IN (
               'TOP_UP sys:clearing wallet',
               'P2P wallet wallet',
               'WITHDRAW wallet sys:payouts_in_flight',
               'PAYOUT_SETTLED sys:payouts_in_flight sys:clearing',
               'PAYOUT_RETURNED sys:payouts_in_flight wallet')
        LIMIT 5
        """,
    ),
    (
        # The sides each kind writes (REFUND and REVERSAL: as above, added with their writer).
        "wallet_transactions_match_ledger",
        "every wallet-side transaction has its ledger transaction's reference, currency and kind",
        """
        SELECT w.id::text FROM wallet_transactions AS w
        JOIN ledger_transactions AS t ON t.id = w.ledger_transaction_id
        WHERE w.reference IS DISTINCT FROM t.reference OR w.currency <> t.currency
           OR concat_ws(' ', t.kind, w.type, w.category) NOT IN (
               'TOP_UP CREDIT TOP_UP',
               'P2P DEBIT P2P_SEND',
               'P2P CREDIT P2P_RECEIVE',
               'WITHDRAW DEBIT WITHDRAW',
               'PAYOUT_RETURNED CREDIT WITHDRAW')
        LIMIT 5
        """,
    ),
    (
        # In the order the ledger wrote them: by their postings' ids (an identity without a
        # cache), drawn under the wallet's row lock; created_at was read before the lock until
        # t0012, so it is no order for older rows. Every row counts, whatever
        # its status: a pending or returned withdrawal left the balance when it was accepted,
        # and a return is a credit of its own.
        "wallet_histories_add_up",
        "every wallet's history adds up: each balance_after is the previous one plus or minus"
        " its amount, and the last is the wallet's balance",
        """
        SELECT h.id::text FROM (
            SELECT t.id, t.wallet_id, t.balance_after,
                   CASE WHEN t.type = 'DEBIT' THEN -t.amount ELSE t.amount END AS moved,
                   lag(t.balance_after, 1, 0::bigint) OVER history AS before,
                   lead(t.id) OVER history IS NULL AS last
            FROM wallet_transactions AS t
            JOIN ledger_postings AS p
                ON p.ledger_transaction_id = t.ledger_transaction_id AND p.account = t.wallet_id
            WINDOW history AS (PARTITION BY t.wallet_id ORDER BY p.id)
        ) AS h
        LEFT JOIN wallets AS w ON w.id = h.wallet_id
        WHERE h.balance_after <> h.before + h.moved
           OR (h.last AND h.balance_after IS DISTINCT FROM w.balance)
        LIMIT 5
        """,
    ),
    (
        "top_up_payments_match_top_ups",
        "every top-up has exactly one external payment, made at its time, and every payment"
        " has its top-up",
        """
        SELECT coalesce(t.id, p.transaction_id)::text FROM
            (SELECT id, created_at FROM wallet_transactions WHERE category = 'TOP_UP') AS t
        FULL JOIN
            (SELECT transaction_id, count(*) AS payments, min(created_at) AS first,
                    max(created_at) AS last
             FROM top_up_payments GROUP BY transaction_id) AS p ON p.transaction_id = t.id
        WHERE t.id IS NULL OR p.transaction_id IS NULL OR p.payments <> 1
           OR p.first <> t.created_at OR p.last <> t.created_at
        LIMIT 5
        """,
    ),
    (
        # Days of Asia/Kolkata, as transfer_business_day counts them (the app role, which runs
        # this, may not call it); a returned withdrawal gives its usage back on the
        # withdrawal's day, not the return's (t0012 `transfer_return_payout`).
        "limit_usage_matches_movements",
        "every wallet's limit usage per day is what its sends, top-ups and unreturned"
        " withdrawals of that day add up to",
        """
        SELECT concat_ws(' ', coalesce(u.wallet_id, m.wallet_id), coalesce(u.action, m.action),
                         coalesce(u.day, m.day))
        FROM limit_usage AS u
        FULL JOIN (
            SELECT wallet_id,
                   CASE category WHEN 'P2P_SEND' THEN 'send' WHEN 'TOP_UP' THEN 'top_up'
                                 ELSE 'withdraw' END AS action,
                   (created_at AT TIME ZONE 'Asia/Kolkata')::date AS day, sum(amount) AS used
            FROM wallet_transactions
            WHERE category IN ('P2P_SEND', 'TOP_UP')
               OR (category = 'WITHDRAW' AND type = 'DEBIT' AND status <> 'FAILED')
            GROUP BY 1, 2, 3
        ) AS m ON m.wallet_id = u.wallet_id AND m.action = u.action AND m.day = u.day
        WHERE coalesce(u.used, 0) <> coalesce(m.used, 0)
        LIMIT 5
        """,
    ),
    (
        "withdrawals_match_payouts",
        "every withdrawal has its payout, of the same wallet and amount, and their statuses"
        " agree (PENDING, COMPLETED when SETTLED, FAILED when RETURNED)",
        """
        SELECT coalesce(t.id, p.transaction_id)::text FROM
            (SELECT * FROM wallet_transactions
             WHERE category = 'WITHDRAW' AND type = 'DEBIT') AS t
        FULL JOIN payouts AS p ON p.transaction_id = t.id
        WHERE t.id IS NULL OR p.transaction_id IS NULL
           OR p.ledger_transaction_id <> t.ledger_transaction_id OR p.wallet_id <> t.wallet_id
           OR p.amount <> t.amount OR p.currency <> t.currency
           OR concat_ws(' ', p.status, t.status) NOT IN (
               'PENDING PENDING', 'SETTLED COMPLETED', 'RETURNED FAILED')
        LIMIT 5
        """,
    ),
    (
        "returned_payouts_credited_back",
        "every returned payout is credited back to its wallet once, in full, and every such"
        " credit is of a returned payout",
        """
        SELECT coalesce(p.transaction_id::text, c.first_id) FROM
            (SELECT * FROM payouts WHERE status = 'RETURNED') AS p
        FULL JOIN
            (SELECT original_transaction_id, count(*) AS credits, min(id::text) AS first_id,
                    min(amount) AS low, max(amount) AS high, min(wallet_id) AS low_wallet,
                    max(wallet_id) AS high_wallet, bool_and(status = 'COMPLETED') AS completed
             FROM wallet_transactions WHERE category = 'WITHDRAW' AND type = 'CREDIT'
             GROUP BY original_transaction_id) AS c
            ON c.original_transaction_id = p.transaction_id
        WHERE p.transaction_id IS NULL OR c.original_transaction_id IS NULL OR c.credits <> 1
           OR c.low <> p.amount OR c.high <> p.amount OR c.low_wallet <> p.wallet_id
           OR c.high_wallet <> p.wallet_id OR NOT c.completed
        LIMIT 5
        """,
    ),
    (
        # The trigger lets a row go COMPLETED -> REVERSED and its reversed amount grow (for the
        # refunds and reversals to come), and t0026's CHECKs only tie the two together: a row
        # marked refunded with no money back, or a side of a top-up or send left PENDING or
        # FAILED while its postings stand, changed no sum above. A reversed amount is what the
        # REFUND and REVERSAL rows naming the row returned (none are written yet: zero).
        "statuses_match_movements",
        "only a withdrawal waits or fails (every other side is settled when written), and each"
        " row's reversed amount is what the refunds and reversals of it returned",
        """
        SELECT t.id::text FROM wallet_transactions AS t
        LEFT JOIN (SELECT original_transaction_id, sum(amount) AS returned
                   FROM wallet_transactions WHERE category IN ('REFUND', 'REVERSAL')
                   GROUP BY original_transaction_id) AS r
            ON r.original_transaction_id = t.id
        WHERE (t.status IN ('PENDING', 'FAILED')
               AND NOT (t.category = 'WITHDRAW' AND t.type = 'DEBIT'))
           OR t.reversed_amount <> coalesce(r.returned, 0)
        LIMIT 5
        """,
    ),
    (
        # Each side of a send names the other's wallet as its counterparty (a history's "paid
        # to"): two sends of one amount whose receiving sides were swapped between them, or a
        # counterparty rewritten, kept every sum and every kind above (review of 2026-12-05).
        "p2p_sides_name_each_other",
        "every send has one paying and one receiving side, each naming the other's wallet",
        """
        SELECT m.id::text FROM ledger_transactions AS m
        LEFT JOIN (
            SELECT ledger_transaction_id,
                   count(*) FILTER (WHERE category = 'P2P_SEND') AS payers,
                   count(*) FILTER (WHERE category = 'P2P_RECEIVE') AS payees,
                   min(wallet_id) FILTER (WHERE category = 'P2P_SEND') AS payer,
                   min(counterparty_wallet_id) FILTER (WHERE category = 'P2P_SEND') AS paid_to,
                   min(wallet_id) FILTER (WHERE category = 'P2P_RECEIVE') AS payee,
                   min(counterparty_wallet_id) FILTER (WHERE category = 'P2P_RECEIVE')
                       AS paid_by
            FROM wallet_transactions WHERE category IN ('P2P_SEND', 'P2P_RECEIVE')
            GROUP BY ledger_transaction_id
        ) AS s ON s.ledger_transaction_id = m.id
        WHERE m.kind = 'P2P'
          AND (s.ledger_transaction_id IS NULL OR s.payers <> 1 OR s.payees <> 1
               OR s.paid_to <> s.payee OR s.paid_by <> s.payer)
        LIMIT 5
        """,
    ),
    (
        # ListTransactions and GetTransaction find a user's rows by wallet_transactions.user_id:
        # a row re-assigned to another user would be shown to them, and hidden from its owner,
        # while every sum above still holds. One join of the two tables (the wallets are few
        # beside the history rows: hashed once), reading only the owner's column of `wallets`
        # (transfer's role may read it since t0021).
        "history_rows_owned_by_wallet_owner",
        "every wallet-side transaction belongs to its wallet's owner, the user it is listed for",
        """
        SELECT t.id::text FROM wallet_transactions AS t
        LEFT JOIN wallets AS w ON w.id = t.wallet_id
        WHERE w.user_id IS DISTINCT FROM t.user_id
        LIMIT 5
        """,
    ),
)
AUDIT_CHECK = "audit_chain_intact"
# Every check, in the order they run: the ledger's, then the audit chain's.
CHECK_NAMES = (*(name for name, _, _ in _CHECKS), AUDIT_CHECK)
CHECK_COUNT = len(CHECK_NAMES)


async def _check(conn: AsyncConnection, name: str, what: str, sql: str) -> LedgerCheck:
    bad: Sequence[Any] = (await conn.execute(text(sql))).scalars().all()
    if not bad:
        return LedgerCheck(name, True, what)
    return LedgerCheck(name, False, f"{what}: violated by {', '.join(str(b) for b in bad)}")


# Full scans of a large ledger outlast the services' per-statement bound (DB_STATEMENT_TIMEOUT_MS,
# sized for requests): the checks together are bounded by the caller's gRPC deadline when it
# sent one, else by this (the CLI; an operator can interrupt it sooner).
UNBOUNDED_CALL_TIMEOUT = timedelta(minutes=30)


def _checks_end() -> float:
    """The monotonic time by which every check must have ended."""
    left = remaining_seconds()
    return time.monotonic() + (UNBOUNDED_CALL_TIMEOUT.total_seconds() if left is None else left)


async def check_ledger(
    conn: AsyncConnection, *, ends: float | None = None, on_check: CheckDone | None = None
) -> list[LedgerCheck]:
    """The ledger's checks (not the audit chain), in the snapshot `conn` is in; each statement
    bounded by what is left until `ends` (monotonic), when given; `on_check` hears each."""
    checks = []
    for spec in _CHECKS:
        if ends is not None:
            await limit_statements(conn, ends - time.monotonic())
        checks.append(await _check(conn, *spec))
        if on_check is not None:
            on_check(checks[-1])
    return checks


class SqlLedgerAuditor:
    """`LedgerAuditor`: the ledger checks in one snapshot, then the audit chain in its own.

    `audit_chain_intact` passes only when the chain is unbroken and, with a checkpoint store
    configured, proven whole: its head reaches a signed checkpoint outside the database (or
    nothing is sealed yet), since without one deleting the newest rows goes unnoticed; and,
    given `sealing_bound`, no committed row has waited longer than that to be sealed (a sealer
    that stopped, or stopped at a break it found, leaves rows that no chain vouches for).
    Without a store (a deployment that set no `*_AUDIT_CHECKPOINT_DIR`: the Kubernetes and
    compose files, whose replicas would need shared storage for it) nothing can be anchored:
    the check says so in a warning rather than failing every run. Warnings that prove nothing
    wrong (seals after the latest checkpoint, rows sealed within the bound) stay warnings.
    On a replica the chain is read once the replica has replayed the latest checkpoint's
    seals (`verify_audit`; ReplicaBehindError when it does not within the bound)."""

    def __init__(
        self,
        engine: AsyncEngine,
        audit_key: bytes,
        checkpoints: CheckpointStore | None,
        *,
        sealing_bound: timedelta | None = None,
    ) -> None:
        self._engine = engine
        self._audit_key = audit_key
        self._checkpoints = checkpoints
        self._sealing_bound = sealing_bound

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read-only REPEATABLE READ transaction (its snapshot taken at its first query)."""
        async with self._engine.connect() as conn:
            await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with conn.begin():
                yield conn

    async def check(self, on_check: CheckDone | None = None) -> Sequence[LedgerCheck]:
        """Every check, in CHECK_NAMES' order, by the caller's deadline (30 minutes without
        one): the ledger's and the audit chain's statements share that bound, and so does the
        whole (the audit chain is streamed, a statement per batch; a pool may keep it waiting
        for a connection). Past it ChecksNotFinishedError (a DeadlineExceededError) names the
        checks that ran and those that did not, the one cut short first."""
        ends = _checks_end()
        finished: list[LedgerCheck] = []

        def heard(check: LedgerCheck) -> None:
            finished.append(check)
            if on_check is not None:
                on_check(check)

        bound = asyncio.timeout(max(0.0, ends - time.monotonic()))
        try:
            async with bound:
                async with self._snapshot() as conn:
                    await check_ledger(conn, ends=ends, on_check=heard)
                # The audit chain in a snapshot of its own, taken after its latest checkpoint
                # is read (verify_audit reads it first, then waits for a replica to replay
                # it): in the ledger's snapshot, a checkpoint the sealer saved during the checks
                # above would name seals the snapshot cannot see, and read as rows deleted.
                audit = await verify_audit(
                    self._engine,
                    self._audit_key,
                    self._checkpoints,
                    within_seconds=ends - time.monotonic(),
                )
        except Exception as exc:
            # A statement cancelled by its bound (57014), or the bound cancelling the call
            # (TimeoutError; or whatever a connection cancelled mid-statement raised instead).
            if bound.expired() or query_canceled(exc):
                raise ChecksNotFinishedError(finished, CHECK_NAMES[len(finished) :]) from exc
            raise
        anchored_required = self._checkpoints is not None
        heard(audit_chain_check(audit, self._sealing_bound, anchored_required))
        return finished


def audit_chain_check(
    audit: AuditVerification, sealing_bound: timedelta | None, anchored_required: bool = True
) -> LedgerCheck:
    """`audit_chain_intact` from what `verify_audit` found (see SqlLedgerAuditor);
    `anchored_required`: a checkpoint store is configured."""
    age, bound = audit.oldest_unsealed_age, sealing_bound
    detail = (
        f"{audit.sealed} audit rows sealed, {audit.verified} verified, "
        f"{audit.unsealed} not sealed yet"
    )
    if not audit.ok:
        detail += f"; BROKEN: {audit.broken}"
    elif anchored_required and not audit.anchored:
        detail += "; NOT PROVEN: the chain's head reaches no signed checkpoint"
    overdue = False
    if bound is not None and age is not None and age > bound:
        overdue = True
        detail += (
            f"; SEALER BEHIND: a row has waited {int(age.total_seconds())} s to be sealed"
            f" (bound {int(bound.total_seconds())} s): is the sealer running?"
        )
    detail += "".join(f"; warning: {warning}" for warning in audit.warnings)
    proven = audit.anchored if anchored_required else audit.ok
    return LedgerCheck(AUDIT_CHECK, proven and not overdue, detail)
