"""The money path: one ledger function call per movement, through asyncpg.

Each call borrows a pooled connection from the engine, takes its raw asyncpg connection and
runs `SELECT * FROM transfer_xxx(...)` as a single statement outside any explicit
transaction: one client round trip, whose implicit transaction has committed before the
reply arrives (asyncpg resolves the call on ReadyForQuery, after the COMMIT). No SQLAlchemy
on this path (ARCHITECTURE.md, "Performance").

Failures are told apart by what they prove:
- the connection could not be had: nothing happened -> DatabaseUnavailableError;
- the connection died after the call was sent, or was found dead when it was made
  (pg_failures.LOST_CONNECTION): the COMMIT may have happened ->
  CommitOutcomeUnknownError (UNAVAILABLE); the client asks GetTransactionByRequestId;
- the statement was cancelled by its timeout: rolled back -> DeadlineExceededError;
- a unique request_id index raced (the same request_id on two methods at once): rolled
  back -> IdempotencyKeyInUseError (a retry is told IDEMPOTENCY_KEY_REUSED).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_common.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    idempotency_lock_key,
)
from vaultpay_common.pg_failures import LOST_CONNECTION
from vaultpay_transfer.adapters.rows import transaction_from_row
from vaultpay_transfer.domain.errors import CommitOutcomeUnknownError
from vaultpay_transfer.domain.model import PaymentMethod, Transaction
from vaultpay_transfer.domain.outcomes import LedgerOutcome
from vaultpay_transfer.service_layer.ports import PayoutLease, PayoutSettlement

__all__ = ["PgLedger"]

log = logging.getLogger(__name__)

# $1..$5 are the idempotency key: caller, method, request_id, fingerprint, lock id.
_SEND = (
    "SELECT outcome, reply FROM transfer_send_money($1::text, $2::text, $3::uuid, $4::text,"
    " $5::bigint, $6::text, $7::text, $8::bigint, $9::text, $10::text)"
)
_TOP_UP = (
    "SELECT outcome, reply FROM transfer_top_up($1::text, $2::text, $3::uuid, $4::text,"
    " $5::bigint, $6::text, $7::bigint, $8::text, $9::text, $10::text, $11::text)"
)
_WITHDRAW = (
    "SELECT outcome, reply FROM transfer_withdraw($1::text, $2::text, $3::uuid, $4::text,"
    " $5::bigint, $6::text, $7::bigint, $8::text, $9::text, $10::text, $11::text, $12::text)"
)
_STORED = (
    "SELECT fingerprint, convert_from(reply, 'UTF8') AS reply FROM idempotency_records "
    "WHERE caller = $1 AND method = $2 AND request_id = $3::uuid"
)
_LEASE = (
    "SELECT transaction_id::text AS transaction_id, account_hash, amount, currency, attempts "
    "FROM transfer_lease_payouts($1::integer, $2::double precision)"
)
_SETTLE = "SELECT outcome, reply FROM transfer_settle_payout($1::uuid)"
_RETURN = "SELECT outcome, reply FROM transfer_return_payout($1::uuid, $2::text)"
_WALLET_STATUS = "SELECT status FROM wallets WHERE id = $1"
_REQUEST_INDEX = "wallet_transactions_request_idx"


def _key_args(key: IdempotencyKey) -> tuple[Any, ...]:
    return (key.caller, key.method, key.request_id, key.fingerprint, idempotency_lock_key(key))


def _details(reply: str | None) -> Mapping[str, str]:
    if not reply:
        return {}
    parsed = json.loads(reply)
    return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}


def _outcome(row: Mapping[str, Any] | None) -> LedgerOutcome:
    if row is None:
        raise RuntimeError("a ledger function returned no row")
    code, reply = str(row["outcome"]), row["reply"]
    if code in ("OK", "REPLAY"):
        return LedgerOutcome(code, transaction_from_row(json.loads(reply)))
    return LedgerOutcome(code, details=_details(reply))


class PgLedger:
    """`Ledger` and `PayoutLedger` on PostgreSQL (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, on_commit: Callable[[], None] | None = None) -> None:
        self._engine = engine
        # Told after a movement committed (wakes the outbox relay: the events are due now).
        self._on_commit = on_commit

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            conn: AsyncConnection = await self._engine.connect()
        except (OperationalError, InterfaceError, OSError) as exc:
            raise DatabaseUnavailableError() from exc
        try:
            raw = await conn.get_raw_connection()
            driver: asyncpg.Connection = raw.driver_connection
            try:
                rows: list[asyncpg.Record] = await driver.fetch(sql, *args)
            except asyncpg.QueryCanceledError as exc:
                raise DeadlineExceededError() from exc
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == _REQUEST_INDEX:
                    raise IdempotencyKeyInUseError() from exc
                raise
            except LOST_CONNECTION as exc:
                # Also a pooled connection that PostgreSQL ended while it was idle: the call
                # may have failed before anything was sent, but the commit of one that was
                # sent is unknown. Either way the connection is discarded, never reused.
                await conn.invalidate()
                log.warning("ledger connection lost during a call", exc_info=True)
                raise CommitOutcomeUnknownError() from exc
            return rows
        except DBAPIError as exc:  # checking out the raw connection failed
            raise DatabaseUnavailableError() from exc
        finally:
            await conn.close()

    def _committed(self, outcome: str) -> None:
        if outcome == "OK" and self._on_commit is not None:
            self._on_commit()

    async def _call(self, sql: str, *args: Any) -> LedgerOutcome:
        rows = await self._fetch(sql, *args)
        outcome = _outcome(rows[0] if rows else None)
        self._committed(outcome.code)
        return outcome

    async def stored_answer(self, key: IdempotencyKey) -> Transaction | None:
        """The answer an earlier identical request stored (checked before any PIN is asked
        again); IdempotencyKeyReusedError for the same key with another request."""
        rows = await self._fetch(_STORED, key.caller, key.method, key.request_id)
        if not rows:
            return None
        if rows[0]["fingerprint"] != key.fingerprint:
            raise IdempotencyKeyReusedError()
        return transaction_from_row(json.loads(rows[0]["reply"]))

    async def send_money(
        self,
        key: IdempotencyKey,
        user_id: str,
        recipient_wallet_id: str,
        amount_minor: int,
        currency: str,
        note: str,
    ) -> LedgerOutcome:
        return await self._call(
            _SEND, *_key_args(key), user_id, recipient_wallet_id, amount_minor, currency, note
        )

    async def top_up(
        self,
        key: IdempotencyKey,
        user_id: str,
        amount_minor: int,
        currency: str,
        method: PaymentMethod,
        payment_reference: str,
        description: str,
    ) -> LedgerOutcome:
        return await self._call(
            _TOP_UP,
            *_key_args(key),
            user_id,
            amount_minor,
            currency,
            method.value,
            payment_reference,
            description,
        )

    async def withdraw(
        self,
        key: IdempotencyKey,
        user_id: str,
        amount_minor: int,
        currency: str,
        ifsc: str,
        account_mask: str,
        account_hash: str,
        holder_name: str,
    ) -> LedgerOutcome:
        return await self._call(
            _WITHDRAW,
            *_key_args(key),
            user_id,
            amount_minor,
            currency,
            ifsc,
            account_mask,
            account_hash,
            holder_name,
        )

    # ----- payouts ---------------------------------------------------------------------

    async def lease_payouts(self, limit: int, lease_seconds: float) -> list[PayoutLease]:
        rows = await self._fetch(_LEASE, limit, lease_seconds)
        return [
            PayoutLease(
                r["transaction_id"], r["account_hash"], r["amount"], r["currency"], r["attempts"]
            )
            for r in rows
        ]

    async def settle_payout(self, transaction_id: str) -> PayoutSettlement:
        return await self._settlement(_SETTLE, transaction_id)

    async def return_payout(self, transaction_id: str, reason: str) -> PayoutSettlement:
        settled = await self._settlement(_RETURN, transaction_id, reason)
        if settled.outcome != "OK" or settled.transaction is None:
            return settled
        # Closed is terminal, so a status read after the commit tells whether the credit
        # went to a CLOSED wallet (one more round trip, for returned payouts only).
        rows = await self._fetch(_WALLET_STATUS, settled.transaction.wallet_id)
        closed = bool(rows) and rows[0]["status"] == "CLOSED"
        return replace(settled, wallet_closed=closed)

    async def _settlement(self, sql: str, *args: Any) -> PayoutSettlement:
        rows = await self._fetch(sql, *args)
        if not rows:
            raise RuntimeError("a payout function returned no row")
        reply = rows[0]["reply"]
        self._committed(str(rows[0]["outcome"]))
        return PayoutSettlement(
            str(rows[0]["outcome"]),
            None if reply is None else transaction_from_row(json.loads(reply)),
        )
