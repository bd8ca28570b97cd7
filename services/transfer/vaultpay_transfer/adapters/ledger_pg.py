"""The money path: one ledger function call per movement, through asyncpg.

Each call borrows a pooled connection from the engine, takes its raw asyncpg connection and
runs `SELECT * FROM transfer_xxx(...)` as a single statement outside any explicit
transaction: one client round trip, whose implicit transaction has committed before the
reply arrives (asyncpg resolves the call on ReadyForQuery, after the COMMIT). No SQLAlchemy
on this path (ARCHITECTURE.md, "Performance").

Failures are told apart by what they prove:
- the connection could not be had (PostgreSQL unreachable, the pool exhausted for its
  timeout), or was known closed before the call was sent (the pool replaces those at
  checkout, `vaultpay_common.db`): nothing happened -> DatabaseUnavailableError;
- the connection died after the call was sent, or was found dead when it was made
  (pg_failures.LOST_CONNECTION): the COMMIT may have happened ->
  CommitOutcomeUnknownError (UNAVAILABLE); the client asks GetTransactionByRequestId;
- the statement was cancelled by its timeout: rolled back -> DeadlineExceededError;
- a unique request_id index raced (the same request_id on two methods at once): rolled
  back -> IdempotencyKeyInUseError (a retry is told IDEMPOTENCY_KEY_REUSED).

`hold(key)` serves a PIN-checked movement (transfer t0005): one connection for its whole
run. Its first statement (`transfer_hold_lookup`, t0023) reads the stored answer and, when
there is none, takes the key's session-level advisory lock (the id the ledger's claim locks)
and reads again, in the same round trip: an attempt that committed between the first read and
the lock let go of the key only after its commit, so its answer is not missed. A request id
that moved the user's money without a stored answer left (expired, or another method's) is
IdempotencyKeyReusedError there, before wallet is asked. A key
another session holds is IdempotencyKeyInUseError (and a connection lost during it is
DatabaseUnavailableError: a lookup commits nothing). The movement's ledger call, on the same
connection, goes through `transfer_*_held`, which hands the lock to its own transaction and
releases the session's: no round trip is added. A movement that ends without its ledger
call (wallet refused the PIN) unlocks the key, one more round trip; a connection that may
still hold a key (a call that failed on its way, a cancelled task) is discarded, never
handed to another caller. A session-level lock outlives no session, but a process that is
paused (not dead, so its socket answers the keepalives) would keep its session, and the key
IN_USE, until it resumed: the lookup that takes the lock also sets that session's
`idle_session_timeout` to `hold_idle_timeout` (in the same statement), and the statements
that let go of the key reset it, so a holder idle for longer loses its session and the lock
(its ledger call then finds the connection closed: DatabaseUnavailableError, or
CommitOutcomeUnknownError if the driver had not yet read the close; nothing moved either way).

A movement the ledger refuses WALLET_FROZEN (a TopUp into a frozen wallet; a send or
withdrawal whose wallet was frozen after wallet's PIN check) costs one more statement, on
the same connection: the freeze that holds the caller's wallet (in force, the hardest to lift
first: staff's, a PIN lockout, the owner's, as wallet's FREEZE_AUTHORITY has it; a lockout
reaches the ledger on a TopUp, which has no PIN check, or on a send or withdrawal locked out
after its own check passed, which the refusal then calls PIN_LOCKED; transfer's role reads those
columns of `wallet_freezes` since t0022) fills the outcome's `details` (`freeze_reason`,
`until`), so the refusal tells what wallet's PIN check tells. A read that fails leaves the
refusal bare (a WARNING), never turns it into another error; no freeze found (FROZEN with
no freeze to explain it), bare too. Every other outcome, the money
path's included, runs exactly the statements it ran before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.errors import DeadlineExceededError, metadata_time
from vaultpay_common.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    idempotency_lock_key,
)
from vaultpay_common.pg_failures import LOST_CONNECTION
from vaultpay_common.pg_raw import connect_or_unavailable
from vaultpay_transfer.adapters.rows import transaction_from_row
from vaultpay_transfer.domain.errors import CommitOutcomeUnknownError
from vaultpay_transfer.domain.model import PaymentMethod, Transaction, TransactionStatus
from vaultpay_transfer.domain.outcomes import LedgerOutcome
from vaultpay_transfer.service_layer.ports import (
    ClaimAnswer,
    ClosedWalletPayoutError,
    HeldMovement,
    PayoutClaim,
    PayoutLease,
    PayoutSettlement,
)

__all__ = ["DEFAULT_HOLD_IDLE_TIMEOUT", "PgLedger"]

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
# A session holding a movement's key ends if it sits idle for longer than the hold's bound
# ($5 of _HOLD; see the module docstring); the statements that let go of the key put the
# session's own setting back (set_config with NULL is RESET).
_IDLE_RESET = "set_config('idle_session_timeout', NULL, false) AS idle_reset"
_SEND_HELD = _SEND.replace(
    "outcome, reply FROM transfer_send_money(",
    f"outcome, reply, {_IDLE_RESET} FROM transfer_send_money_held(",
)
_WITHDRAW_HELD = _WITHDRAW.replace(
    "outcome, reply FROM transfer_withdraw(",
    f"outcome, reply, {_IDLE_RESET} FROM transfer_withdraw_held(",
)
# The stored answer, or (none stored) the key's session-level lock: held is NULL, or whether
# this session took it. A function (t0023), as it reads again after taking the lock.
_HOLD = (
    "SELECT fingerprint, reply, held, used,"
    " CASE WHEN held THEN set_config('idle_session_timeout', $5::text, false) END AS idle_bound"
    " FROM transfer_hold_lookup($1::text, $2::text, $3::uuid, $4::bigint)"
)
_UNHOLD = f"SELECT pg_advisory_unlock($1::bigint), {_IDLE_RESET}"
# A stored answer, read only (`stored_answer`), and whether the request id moved the caller's
# money (a movement's caller is its user), for an answer that expired: what
# transfer_hold_lookup reads, without its lock.
# A refused retry's look for its stored answer, and whether an attempt with the key is running
# (a movement holds its key's advisory lock exclusively from before its PIN check until its
# commit): a shared try-lock, released as this one statement ends.
_STORED = (
    "SELECT r.fingerprint, convert_from(r.reply, 'UTF8') AS reply,"
    " EXISTS (SELECT 1 FROM wallet_transactions AS t"
    " WHERE t.user_id = $1::text AND t.request_id = $3::uuid) AS used,"
    " pg_try_advisory_xact_lock_shared($4::bigint) AS free"
    " FROM (SELECT 1) AS one LEFT JOIN idempotency_records AS r"
    " ON r.caller = $1::text AND r.method = $2::text AND r.request_id = $3::uuid"
)
_LEASE = (
    "SELECT transaction_id::text AS transaction_id, account_hash, amount, currency, attempts,"
    " lease_until FROM transfer_lease_payouts($1::integer, $2::double precision)"
)
_CLAIM = (
    "SELECT answer, lease_until, attempts"
    " FROM transfer_claim_payout_for_bank($1::uuid, $2::timestamptz,"
    " $3::double precision, $4::double precision)"
)
_SETTLE = "SELECT outcome, reply FROM transfer_settle_payout($1::uuid)"
_RETURN = "SELECT outcome, reply FROM transfer_return_payout($1::uuid, $2::text)"
_CLOSED_HOLDS_NOTHING = "wallets_closed_with_zero_balance"  # wallet w0011
# The freeze that holds the user's wallet, after a WALLET_FROZEN only (see the module
# docstring): in force, the hardest to lift first (wallet's FREEZE_AUTHORITY).
_HOLDING_FREEZE = (
    "SELECT f.source, f.until FROM wallets AS w JOIN wallet_freezes AS f ON f.wallet_id = w.id"
    " WHERE w.user_id = $1 AND (f.until IS NULL OR f.until > now())"
    " ORDER BY CASE f.source WHEN 'ADMIN' THEN 0 WHEN 'PIN_LOCKOUT' THEN 1 ELSE 2 END LIMIT 1"
)
_REQUEST_INDEX = "wallet_transactions_request_idx"
# How long a session holding a movement's key may sit idle (waiting for wallet's PIN check)
# before PostgreSQL ends it, and the lock with it: well past the check's own timeouts.
DEFAULT_HOLD_IDLE_TIMEOUT = 60.0  # seconds


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


async def _with_holding_freeze(
    conn: AsyncConnection, driver: asyncpg.Connection, outcome: LedgerOutcome, user_id: str
) -> LedgerOutcome:
    """A WALLET_FROZEN outcome with the freeze that holds `user_id`'s wallet in its details;
    any other outcome as it is (see the module docstring)."""
    if outcome.code != "WALLET_FROZEN":
        return outcome
    try:
        # The driver itself, not `_run`: a read's lost connection is no movement's unknown
        # commit, so neither its log line nor its error.
        rows = await driver.fetch(_HOLDING_FREEZE, user_id)
    except Exception:  # the refusal stands, whatever failed telling why
        if driver.is_closed() and not conn.invalidated:
            await conn.invalidate()
        log.warning(
            "the freeze holding a wallet could not be read; WALLET_FROZEN is answered without it",
            exc_info=True,
        )
        return outcome
    except BaseException:
        # Cancelled mid-statement: the connection goes rather than back to the pool busy.
        if not conn.invalidated:
            await conn.invalidate()
        raise
    if not rows:
        return outcome
    details = {**outcome.details, "freeze_reason": f"FREEZE_REASON_{rows[0]['source']}"}
    if rows[0]["until"] is not None:
        details["until"] = metadata_time(rows[0]["until"])
    return replace(outcome, details=details)


async def _driver(conn: AsyncConnection) -> asyncpg.Connection:
    try:
        raw = await conn.get_raw_connection()
    except DBAPIError as exc:  # checking out the raw connection failed
        raise DatabaseUnavailableError() from exc
    driver: asyncpg.Connection = raw.driver_connection
    return driver


async def _run(
    conn: AsyncConnection, driver: asyncpg.Connection, sql: str, *args: Any
) -> list[asyncpg.Record]:
    if driver.is_closed():  # found closed before anything was sent: nothing happened
        await conn.invalidate()
        raise DatabaseUnavailableError()
    try:
        rows: list[asyncpg.Record] = await driver.fetch(sql, *args)
    except asyncpg.QueryCanceledError as exc:
        raise DeadlineExceededError() from exc
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == _REQUEST_INDEX:
            raise IdempotencyKeyInUseError() from exc
        raise
    except LOST_CONNECTION as exc:
        # Also a pooled connection that PostgreSQL ended while it was idle: the call may
        # have failed before anything was sent, but the commit of one that was sent is
        # unknown. Either way the connection is discarded, never reused.
        await conn.invalidate()
        log.warning("ledger connection lost during a call", exc_info=True)
        raise CommitOutcomeUnknownError() from exc
    return rows


class PgLedger:
    """`Ledger` and `PayoutLedger` on PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        on_commit: Callable[[], None] | None = None,
        *,
        hold_idle_timeout: float = DEFAULT_HOLD_IDLE_TIMEOUT,
    ) -> None:
        if hold_idle_timeout < 1:
            raise ValueError("hold_idle_timeout is at least a second")
        self._engine = engine
        # Told after a movement committed (wakes the outbox relay: the events are due now).
        self._on_commit = on_commit
        # idle_session_timeout's text for a session holding a movement's key.
        self._hold_idle_bound = f"{int(hold_idle_timeout * 1000)}ms"

    async def _connect(self) -> AsyncConnection:
        # The pool exhausted (every pooled connection checked out by movements waiting at
        # wallet, say, for the pool's whole timeout), the server unreachable, or a new
        # connection refused (starting, stopping, no slot left): DatabaseUnavailableError.
        return await connect_or_unavailable(self._engine)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self._connect()
        try:
            return await _run(conn, await _driver(conn), sql, *args)
        finally:
            await conn.close()

    def _committed(self, outcome: str) -> None:
        if outcome == "OK" and self._on_commit is not None:
            self._on_commit()

    async def _call(self, sql: str, key: IdempotencyKey, user_id: str, *args: Any) -> LedgerOutcome:
        conn = await self._connect()
        try:
            driver = await _driver(conn)
            try:
                rows = await _run(conn, driver, sql, *_key_args(key), user_id, *args)
            except BaseException as exc:
                # Interrupted mid-call (a cancelled task): the connection goes rather than back
                # to the pool with the statement maybe still running (`_run` handles errors).
                if not isinstance(exc, Exception) and not conn.invalidated:
                    await conn.invalidate()
                raise
            outcome = _outcome(rows[0] if rows else None)
            self._committed(outcome.code)
            return await _with_holding_freeze(conn, driver, outcome, user_id)
        finally:
            await conn.close()

    @asynccontextmanager
    async def hold(self, key: IdempotencyKey) -> AsyncIterator[HeldMovement]:
        """The key held for one PIN-checked movement (see the module docstring)."""
        conn = await self._connect()
        try:
            driver = await _driver(conn)
            try:
                [row] = await _run(
                    conn,
                    driver,
                    _HOLD,
                    key.caller,
                    key.method,
                    key.request_id,
                    idempotency_lock_key(key),
                    self._hold_idle_bound,
                )
            except BaseException as exc:
                # Whether the lock was taken is unknown (a cancelled or timed-out statement
                # keeps a session lock it took): the connection goes, and the lock with it.
                if not conn.invalidated:
                    await conn.invalidate()
                if isinstance(exc, CommitOutcomeUnknownError):  # a lookup commits nothing
                    raise DatabaseUnavailableError() from exc
                raise
            if row["fingerprint"] is not None:
                if row["fingerprint"] != key.fingerprint:
                    raise IdempotencyKeyReusedError()
                stored = transaction_from_row(json.loads(row["reply"]))
                yield _PgHeldMovement(self._committed, conn, driver, key, stored)
                return
            if row["used"]:  # its answer expired; the request id moved money once
                raise IdempotencyKeyReusedError()
            if not row["held"]:
                raise IdempotencyKeyInUseError()
            held = _PgHeldMovement(self._committed, conn, driver, key, None)
            try:
                yield held
            finally:
                if not held.released:
                    await held.release()
        finally:
            await conn.close()

    async def stored_answer(self, key: IdempotencyKey) -> Transaction | None:
        try:
            [row] = await self._fetch(
                _STORED, key.caller, key.method, key.request_id, idempotency_lock_key(key)
            )
        except CommitOutcomeUnknownError as exc:  # a lookup commits nothing
            raise DatabaseUnavailableError() from exc
        if row["fingerprint"] is None:
            if row["used"]:  # its answer expired; the request id moved money once
                raise IdempotencyKeyReusedError()
            if not row["free"]:
                # An attempt with this key is still running and may commit: a definite
                # refusal of its retry's input would be wrong (review of 2026-12-05).
                raise IdempotencyKeyInUseError()
            return None
        if row["fingerprint"] != key.fingerprint:
            return None
        return transaction_from_row(json.loads(row["reply"]))

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
            _SEND, key, user_id, recipient_wallet_id, amount_minor, currency, note
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
            key,
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
            key,
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
                r["transaction_id"],
                r["account_hash"],
                r["amount"],
                r["currency"],
                r["attempts"],
                r["lease_until"],
            )
            for r in rows
        ]

    async def claim_for_bank(
        self, lease: PayoutLease, hold_seconds: float, bank_seconds: float
    ) -> PayoutClaim:
        rows = await self._fetch(
            _CLAIM, lease.transaction_id, lease.lease_until, hold_seconds, bank_seconds
        )
        if not rows:
            raise RuntimeError("a payout function returned no row")
        row = rows[0]
        return PayoutClaim(ClaimAnswer(str(row["answer"])), row["lease_until"], row["attempts"])

    async def settle_payout(self, transaction_id: str) -> PayoutSettlement:
        return await self._settlement(_SETTLE, transaction_id)

    async def return_payout(self, transaction_id: str, reason: str) -> PayoutSettlement:
        """A CLOSED wallet is never credited: it holds no money (wallet w0011's CHECK), and
        none closes with a withdrawal pending (t0003); one closed before t0003 is
        ClosedWalletPayoutError. Raised without PostgreSQL's error, whose detail is the
        failing row: the owner's name and the balance, which no log may hold."""
        try:
            return await self._settlement(_RETURN, transaction_id, reason)
        except asyncpg.CheckViolationError as exc:
            if exc.constraint_name != _CLOSED_HOLDS_NOTHING:
                raise
        raise ClosedWalletPayoutError(transaction_id)

    async def _settlement(self, sql: str, *args: Any) -> PayoutSettlement:
        """The function's answer and the payout's withdrawal row it replies: the row this call
        finished (OK) or, since t0020, the row an earlier call finished (ALREADY_FINISHED; a
        ledger before t0020 replied nothing there). How the payout finished is read from that
        row's status, so the reply keeps the one shape every release parses."""
        rows = await self._fetch(sql, *args)
        if not rows:
            raise RuntimeError("a payout function returned no row")
        outcome, reply = str(rows[0]["outcome"]), rows[0]["reply"]
        self._committed(outcome)
        if reply is None:
            return PayoutSettlement(outcome, None)
        withdrawal = transaction_from_row(json.loads(reply))
        return PayoutSettlement(outcome, withdrawal, _payout_end(withdrawal))


def _payout_end(withdrawal: Transaction) -> str:
    """How a finished payout ended, by its withdrawal's status: settling completes the
    withdrawal, returning fails it (one transaction sets both); only a completed one can
    later be reversed. A PENDING withdrawal here would be a broken ledger."""
    if withdrawal.status is TransactionStatus.FAILED:
        return "RETURNED"
    if withdrawal.status in (TransactionStatus.COMPLETED, TransactionStatus.REVERSED):
        return "SETTLED"
    raise RuntimeError(f"a finished payout's withdrawal is {withdrawal.status.name}")


class _PgHeldMovement:
    """A movement's key held on `conn` (PgLedger.hold): its stored answer, if any, and its
    ledger call through the `_held` functions, which release the session's lock."""

    def __init__(
        self,
        committed: Callable[[str], None],
        conn: AsyncConnection,
        driver: asyncpg.Connection,
        key: IdempotencyKey,
        stored: Transaction | None,
    ) -> None:
        self._committed = committed  # told the outcome of the ledger call
        self._conn = conn
        self._driver = driver
        self._key = key
        self.stored = stored
        # True once nothing of ours can be left locked on the connection.
        self.released = stored is not None

    async def _call(self, sql: str, user_id: str, *args: Any) -> LedgerOutcome:
        if self.released:
            raise RuntimeError(
                "a held movement calls the ledger once, and only when it holds the key"
            )
        try:
            rows = await _run(self._conn, self._driver, sql, *_key_args(self._key), user_id, *args)
        except BaseException:
            # Whether the call reached the point that releases the lock is unknown: the
            # connection goes rather than come back to the pool still holding the key.
            await self._discard()
            raise
        self.released = True
        outcome = _outcome(rows[0] if rows else None)
        self._committed(outcome.code)
        # The key is no longer held: a read that fails here leaves nothing locked.
        return await _with_holding_freeze(self._conn, self._driver, outcome, user_id)

    async def send_money(
        self, user_id: str, recipient_wallet_id: str, amount_minor: int, currency: str, note: str
    ) -> LedgerOutcome:
        return await self._call(
            _SEND_HELD, user_id, recipient_wallet_id, amount_minor, currency, note
        )

    async def withdraw(
        self,
        user_id: str,
        amount_minor: int,
        currency: str,
        ifsc: str,
        account_mask: str,
        account_hash: str,
        holder_name: str,
    ) -> LedgerOutcome:
        return await self._call(
            _WITHDRAW_HELD,
            user_id,
            amount_minor,
            currency,
            ifsc,
            account_mask,
            account_hash,
            holder_name,
        )

    async def release(self) -> None:
        """Unlocks the key of a movement that ends without its ledger call. A connection that
        cannot be told to (PostgreSQL ended it, say) is discarded: its session, and the lock,
        end with it, so the movement's own outcome (wallet unavailable, a wrong PIN) stands."""
        self.released = True
        try:
            await self._driver.fetchval(_UNHOLD, idempotency_lock_key(self._key))
        except Exception:
            log.warning(
                "could not unlock a movement's key; its connection is discarded", exc_info=True
            )
            await self._discard()
        except BaseException:
            await self._discard()
            raise

    async def _discard(self) -> None:
        self.released = True
        if not self._conn.invalidated:
            await self._conn.invalidate()
