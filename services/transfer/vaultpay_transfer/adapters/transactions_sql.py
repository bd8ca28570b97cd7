"""Reads of the ledger with SQLAlchemy Core (not the money path): lookups, keyset-paginated
histories on the (user_id, created_at, id) indexes (the staff's on the wallet's, the time's or
a rare category's or status's partial index), limit usage and statistics (`stats_sql`: closed
hours from t0027's rollup, the rest by completion time).

A read on a connection PostgreSQL ended answers DATABASE_UNAVAILABLE (retry), and one that
outlived the caller's deadline (each read's statements are bounded by it) DEADLINE_EXCEEDED,
never an unexpected error: GetTransactionByRequestId is how a client learns what became of a
send whose reply was lost, so it must say "try again" when the database is failing over or
slow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    Select,
    TextClause,
    bindparam,
    literal,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.audit import AuditEntry, AuditLog
from vaultpay_common.context import remaining_seconds
from vaultpay_common.db import (
    DatabaseUnavailableError,
    limit_statements_to_deadline,
    query_canceled,
)
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_common.idempotency import scope_lock_key
from vaultpay_common.pg_failures import connection_lost
from vaultpay_transfer.adapters.rows import transaction_from_row
from vaultpay_transfer.adapters.stats_sql import read_stats
from vaultpay_transfer.adapters.tables import wallet_transactions, wallets
from vaultpay_transfer.domain.model import (
    Transaction,
    TransactionCategory,
    TransactionStatus,
    TransactionType,
    TransferStats,
    UsageFigures,
)
from vaultpay_transfer.domain.windows import BUSINESS_TIME_ZONE
from vaultpay_transfer.service_layer.ports import TransactionCursor, TransactionFilter

__all__ = ["SqlTransactionStore", "listing_query", "partial_index_predicates"]

_T = wallet_transactions.c

# The partial indexes' predicates (t0015's two, t0001's pending one), literally as the indexes
# state them: asyncpg prepares every statement, and a generic plan cannot prove an index's
# predicate from `category = $1`, so a listing that may use one says it in constant SQL (the
# values come from the enums, never from a caller's text). Without a user or a wallet to
# narrow by, a rare category or status otherwise walks the time index of the whole table.
_COMMON_CATEGORIES = frozenset({TransactionCategory.P2P_SEND, TransactionCategory.P2P_RECEIVE})
_RARE_CATEGORY = text("wallet_transactions.category NOT IN ('P2P_SEND', 'P2P_RECEIVE')")
_RARE_STATUSES = frozenset({TransactionStatus.FAILED, TransactionStatus.REVERSED})
_RARE_STATUS = text("wallet_transactions.status IN ('FAILED', 'REVERSED')")
_PENDING = text("wallet_transactions.status = 'PENDING'")
# t0024's index of an owner's rows other than COMPLETED P2P sides, its predicate literally.
_OWNER_RARE = text(
    "(wallet_transactions.category NOT IN ('P2P_SEND', 'P2P_RECEIVE')"
    " OR wallet_transactions.status <> 'COMPLETED')"
)
# t0028's indexes of the returned payouts (everyone's, each owner's), their predicate literally.
_PAYOUT_RETURN = text(
    "wallet_transactions.category = 'WITHDRAW' AND wallet_transactions.type = 'CREDIT'"
)
_P2P_OF_TYPE = {
    TransactionType.DEBIT: TransactionCategory.P2P_SEND,
    TransactionType.CREDIT: TransactionCategory.P2P_RECEIVE,
}


# One row per action used in the business day's month (Asia/Kolkata), each with the time the
# day is taken from; one row without an action when none was.
_USAGE = text(
    "WITH clock AS (SELECT coalesce(CAST(:at AS timestamptz), now()) AS at),"
    " today AS (SELECT at, CAST(at AT TIME ZONE :zone AS date) AS day FROM clock)"
    " SELECT t.at, u.action, coalesce(sum(u.used) FILTER (WHERE u.day = t.day), 0),"
    " coalesce(sum(u.used), 0)"
    " FROM today AS t LEFT JOIN limit_usage AS u ON u.wallet_id = :wallet_id"
    " AND u.day >= CAST(date_trunc('month', t.day) AS date) AND u.day <= t.day"
    " GROUP BY t.at, u.action"
).bindparams(zone=BUSINESS_TIME_ZONE.key)


# Whether another session holds one of the keys' advisory locks exclusively (as a movement
# does): a shared try-lock of each, released when this read's transaction ends. No scan of
# pg_locks, whose read stops every lock manager partition for a moment. A movement whose own
# try-lock falls in that instant is answered IDEMPOTENCY_KEY_IN_USE, which it retries.
_KEYS_HELD = text(
    "SELECT coalesce(bool_or(NOT pg_try_advisory_xact_lock_shared(k)), false)"
    " FROM unnest(CAST(:locks AS bigint[])) AS k"
).bindparams(bindparam("locks", type_=ARRAY(BigInteger)))


def partial_index_predicates(flt: TransactionFilter) -> list[TextClause]:
    """The predicates of the partial indexes that `flt` implies, for a listing of everyone's
    rows; none for an owner's (`listing_query` reads those by the owner's indexes)."""
    if flt.user_id is not None or flt.wallet_id:
        return []
    predicates: list[TextClause] = []
    if _asks_payout_returns(flt):
        predicates.append(_PAYOUT_RETURN)
    elif flt.category is not None and flt.category not in _COMMON_CATEGORIES:
        predicates.append(_RARE_CATEGORY)
    if flt.status in _RARE_STATUSES:
        predicates.append(_RARE_STATUS)
    elif flt.status is TransactionStatus.PENDING:
        predicates.append(_PENDING)
    return predicates


def listing_query(
    flt: TransactionFilter, after: TransactionCursor | None, limit: int
) -> Select[Any]:
    """A page of `flt`'s rows, newest first, strictly after `after`, in one index range per
    part whatever the size of the table or of the owner's history.

    Everyone's rows (staff without a wallet): the time index, or a rare category's or
    status's partial index. An owner's (a user's history, or staff's view of one wallet,
    which is its owner's: wallets.user_id is unique and the ledger's functions write each
    side with its wallet's owner): the owner's own indexes, also where the rows asked for
    may be sparse in the history (a hot wallet holds millions of P2P_RECEIVE rows): a
    status other than COMPLETED reads t0024's index of the owner's rare rows, the returned
    payouts (WITHDRAW CREDIT) t0028's index of the owner's, and a type without a category
    two ranges merged, its P2P category's and its rare rows' (each part a page at most).
    Everyone's returned payouts read t0028's other index.

    An owner's query names no wallet_id (the wallet's index would walk a hot wallet's
    payments), and gives the owner as a sub-select, whose value the planner does not see: it
    plans for an owner of average size. Told a hot owner's id, it judged from the column's
    statistics that a quarter of every index is that owner's, and read the rare rows by a
    seq scan or a global partial index filtered by owner (review, 2026-12-04): for an
    owner's page, the owner's indexes are right whatever the owner's size."""
    owner = _owner(flt)
    if owner is None:
        where = _filters(flt, after)
        return _page(
            select(wallet_transactions).where(*where, *partial_index_predicates(flt)), limit
        )
    where = [owner, *_filters(replace(flt, wallet_id=""), after)]
    if flt.status is not None and flt.status is not TransactionStatus.COMPLETED:
        return _page(select(wallet_transactions).where(*where, _OWNER_RARE), limit)
    if _asks_payout_returns(flt):
        return _page(select(wallet_transactions).where(*where, _PAYOUT_RETURN), limit)
    if flt.type is not None and flt.category is None:
        p2p = _P2P_OF_TYPE[flt.type]
        parts = [
            _page(select(wallet_transactions).where(*where, _T.category == p2p.value), limit),
            _page(select(wallet_transactions).where(*where, _OWNER_RARE, _RARE_CATEGORY), limit),
        ]
        merged = union_all(*parts).subquery("page")
        return _page(select(merged), limit, merged.c)
    return _page(select(wallet_transactions).where(*where), limit)


def _asks_payout_returns(flt: TransactionFilter) -> bool:
    """WITHDRAW CREDIT: the payouts the bank returned, few among the withdrawals (t0028)."""
    return flt.category is TransactionCategory.WITHDRAW and flt.type is TransactionType.CREDIT


def _owner(flt: TransactionFilter) -> ColumnElement[bool] | None:
    """The owner whose rows `flt` asks for, the user or the wallet's owner, as a sub-select
    (run once, before the owner's index is read); None for everyone's."""
    if flt.user_id is not None:
        return _T.user_id == select(literal(flt.user_id, _T.user_id.type)).scalar_subquery()
    if flt.wallet_id:
        owner_of = select(wallets.c.user_id).where(wallets.c.id == flt.wallet_id)
        return _T.user_id == owner_of.scalar_subquery()
    return None


def _filters(flt: TransactionFilter, after: TransactionCursor | None) -> list[Any]:
    where: list[Any] = []
    if flt.wallet_id:
        where.append(_T.wallet_id == flt.wallet_id)
    if flt.type is not None:
        where.append(_T.type == flt.type.value)
    if flt.category is not None:
        where.append(_T.category == flt.category.value)
    if flt.status is not None:
        where.append(_T.status == flt.status.value)
    if flt.start is not None:
        where.append(_T.created_at >= flt.start)
    if flt.end is not None:
        where.append(_T.created_at < flt.end)
    if after is not None:
        # Typed binds: a bare str would be sent as VARCHAR, and uuid < varchar is no
        # operator in PostgreSQL.
        created_at, last_id = after
        position = tuple_(
            bindparam(None, created_at, type_=_T.created_at.type),
            bindparam(None, last_id, type_=_T.id.type),
        )
        where.append(tuple_(_T.created_at, _T.id) < position)
    return where


def _page(query: Select[Any], limit: int, columns: Any = _T) -> Select[Any]:
    return query.order_by(columns.created_at.desc(), columns.id.desc()).limit(limit)


class SqlTransactionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _connect(self, *, snapshot: bool = False) -> AsyncIterator[AsyncConnection]:
        """A pooled connection for one read, bounded by the caller's deadline; a lost one is
        discarded (not handed to the next read) and becomes DatabaseUnavailableError, a read
        cancelled by the deadline DeadlineExceededError. `snapshot`: its statements read one
        REPEATABLE READ snapshot (read only)."""
        left = remaining_seconds()
        if left is not None and left <= 0:
            raise DeadlineExceededError()
        try:
            async with self._engine.connect() as conn:
                if snapshot:
                    await conn.execution_options(
                        isolation_level="REPEATABLE READ", postgresql_readonly=True
                    )
                try:
                    await limit_statements_to_deadline(conn)
                    yield conn
                except DBAPIError as exc:
                    if connection_lost(exc) and not exc.connection_invalidated:
                        await conn.invalidate()
                    raise
        except (DBAPIError, OSError) as exc:
            if connection_lost(exc):
                raise DatabaseUnavailableError() from exc
            if query_canceled(exc):
                raise DeadlineExceededError() from exc
            raise

    async def _one(self, *where: Any) -> Transaction | None:
        async with self._connect() as conn:
            row = (await conn.execute(select(wallet_transactions).where(*where))).first()
        return None if row is None else transaction_from_row(row._mapping)

    async def get(self, user_id: str, transaction_id: str) -> Transaction | None:
        return await self._one(_T.id == transaction_id, _T.user_id == user_id)

    async def by_reference(self, user_id: str, reference: str) -> Transaction | None:
        """The caller's side of the movement (the newest, should a wallet hold two sides)."""
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(wallet_transactions)
                    .where(_T.reference == reference, _T.user_id == user_id)
                    .order_by(_T.created_at.desc(), _T.id.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else transaction_from_row(row._mapping)

    async def by_request_id(self, user_id: str, request_id: str) -> Transaction | None:
        return await self._one(_T.request_id == request_id, _T.user_id == user_id)

    async def movement_in_flight(
        self, caller: str, methods: Sequence[str], request_id: str
    ) -> bool:
        """Whether another session holds the advisory lock of one of the keys: a movement
        holds its key's exclusively from before its PIN check until its commit (PgLedger.hold's
        session lock, the ledger function's transaction lock)."""
        locks = [scope_lock_key(caller, method, request_id) for method in methods]
        async with self._connect() as conn:
            held = await conn.scalar(_KEYS_HELD, {"locks": locks})
        return bool(held)

    async def list(
        self, flt: TransactionFilter, after: TransactionCursor | None, limit: int
    ) -> Sequence[Transaction]:
        async with self._connect() as conn:
            rows = (await conn.execute(listing_query(flt, after, limit))).all()
        return [transaction_from_row(r._mapping) for r in rows]

    async def list_audited(
        self,
        flt: TransactionFilter,
        after: TransactionCursor | None,
        limit: int,
        audit: Callable[[Sequence[Transaction]], AuditEntry],
    ) -> Sequence[Transaction]:
        async with self._connect() as conn:
            rows = (await conn.execute(listing_query(flt, after, limit))).all()
            found = [transaction_from_row(r._mapping) for r in rows]
            await AuditLog().append(conn, audit(found))
            await conn.commit()
        return found

    async def wallet_currency(self, wallet_id: str) -> str | None:
        async with self._connect() as conn:
            value = await conn.scalar(select(wallets.c.currency).where(wallets.c.id == wallet_id))
        return None if value is None else str(value)

    async def usage(
        self, wallet_id: str, at: datetime | None = None
    ) -> tuple[datetime, Sequence[UsageFigures]]:
        """The time read and each action's use in its business day and month. Without `at`,
        the database's clock, in the same statement: the window the ledger's functions count
        by (their time is the database's), whatever the service host's clock says."""
        async with self._connect() as conn:
            rows = (await conn.execute(_USAGE, {"wallet_id": wallet_id, "at": at})).all()
        read_at: datetime = rows[0][0]  # the clock's row: one, with no action when none
        return read_at, [
            UsageFigures(str(a), int(d), int(m)) for _, a, d, m in rows if a is not None
        ]

    async def stats(self, now: datetime) -> TransferStats:
        """Movements completed in the 24 hours and the 30 days before `now`, counted once (the
        debit side, or the credit of a top-up; a reversed one still counts), by the time they
        completed: closed hours from t0027's rollup, the rest counted (`stats_sql`), in one
        REPEATABLE READ snapshot (the day's figures never exceed the month's)."""
        async with self._connect(snapshot=True) as conn:
            return await read_stats(conn, now)
