"""The common case of a keyed PIN check through asyncpg: one statement per phase, calling a
PL/pgSQL function of migration w0003 (sql/pin_check.sql), instead of three transactions of
some twenty statements through the unit of work (the PIN check was three quarters of the
wallet's time per SendMoney), or the two transactions of five round trips each it took
before w0003.

Reserve, `wallet_pin_reserve`: the advisory locks of both idempotency keys (as
`SqlIdempotencyRecords.claim` takes them); one statement that locks the wallet row when it
is ACTIVE without freezes and neither key has a stored reply, and counts the attempt when
fewer than three are counted; the reservation stored under the "#reserve" key (the function
writes `encode(reservation)`'s bytes itself, as it alone knows the attempt: the SQL file
says how, a test compares the two).
Settle a right PIN, `wallet_pin_settle_match`: the key's advisory lock; one statement that
locks the same kind of wallet row and clears the counter when the PIN is still the one
checked and the key has no reply; the OK reply stored.

Settle a money movement's right PIN, `wallet_pin_settle_movement` (w0004): the same settlement,
then, in the same call, whether the client's address is trusted (its `last_seen_at` touched
at most every `LAST_SEEN_EVERY`), so the movement check reads no Redis.

The locks are taken in a statement of their own so the next one reads with a snapshot taken
after they were granted (READ COMMITTED), as the unit of work's claim does. The call runs
outside any explicit transaction, so its implicit transaction commits before the answer
comes back. Whenever a condition does not hold the function writes nothing and answers no
row / false, and the use case takes the general path (service_layer/pins.py), which has
every rule and every refusal: the two paths share the lockout counter, the keys and the
stored replies.

Failures: no connection -> DatabaseUnavailableError, as is a connection lost during a call
(it is discarded; a retry with the same key replays what committed). A unique violation on
the idempotency insert undoes the whole call -> IdempotencyKeyInUseError. The reservation
honours the caller's deadline (a deadline that runs out while the committed answer is on its
way reports DeadlineExceededError for an attempt counted and stored, which a retry with the
key replays, as after a lost connection); the settlement, which runs on after its caller is
gone, has the engine's statement timeout only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.context import remaining_seconds
from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_common.idempotency import IdempotencyKey, IdempotencyKeyInUseError
from vaultpay_common.idempotency import idempotency_lock_key as lock_of
from vaultpay_common.pg_failures import LOST_CONNECTION
from vaultpay_common.pg_raw import borrowed_driver
from vaultpay_wallet.domain.model import WalletStatus
from vaultpay_wallet.domain.pin import MAX_FAILED_PIN_ATTEMPTS
from vaultpay_wallet.service_layer.results import MovementAddress, PinReservation

__all__ = ["LAST_SEEN_EVERY", "PgPinCheckFastPath"]

_RESERVE = (
    "SELECT r_wallet_id, r_attempt, r_pin_hash, r_pin_updated_at FROM wallet_pin_reserve("
    "$1::text, $2::text, $3::uuid, $4::text, $5::timestamptz, $6::integer, $7::text,"
    " $8::bigint, $9::bigint, $10::text, $11::text, $12::uuid, $13::text)"
)
_SETTLE_MATCH = (
    "SELECT wallet_pin_settle_match($1::text, $2::timestamptz, $3::text, $4::bigint,"
    " $5::text, $6::text, $7::uuid, $8::text, $9::bytea)"
)

_SETTLE_MOVEMENT = (
    "SELECT r_settled, r_ip_trusted FROM wallet_pin_settle_movement($1::text,"
    " $2::timestamptz, $3::text, $4::bigint, $5::text, $6::text, $7::uuid, $8::text,"
    " $9::bytea, $10::uuid, $11::text, $12::timestamptz, $13::interval)"
)

_ACTIVE = WalletStatus.ACTIVE.value
# How stale a trusted address's last_seen_at may get (the Redis cache's TTL bounds it the same).
LAST_SEEN_EVERY = timedelta(minutes=5)


class PgPinCheckFastPath:
    """`PinCheckFastPath` on PostgreSQL (see the module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def reserve(
        self,
        user_id: str,
        key: IdempotencyKey,
        reserve_key: IdempotencyKey,
        now: datetime,
        encode: Callable[[PinReservation], bytes],  # what wallet_pin_reserve writes
    ) -> tuple[PinReservation, str] | None:
        left = remaining_seconds()
        if left is not None and left <= 0:
            raise DeadlineExceededError()
        try:
            async with borrowed_driver(self._engine) as driver:
                row = await driver.fetchrow(
                    _RESERVE,
                    user_id,
                    key.caller,
                    key.request_id,
                    key.method,
                    now,
                    MAX_FAILED_PIN_ATTEMPTS,
                    _ACTIVE,
                    lock_of(key),
                    lock_of(reserve_key),
                    reserve_key.caller,
                    reserve_key.method,
                    reserve_key.request_id,
                    reserve_key.fingerprint,
                    timeout=left,
                )
        except asyncpg.UniqueViolationError as exc:  # as SqlIdempotencyRecords.save
            raise IdempotencyKeyInUseError() from exc
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            raise DeadlineExceededError() from exc
        except LOST_CONNECTION as exc:
            raise DatabaseUnavailableError() from exc
        if row is None:
            return None
        reservation = PinReservation(row[0], row[1], row[3])
        return reservation, str(row[2])

    async def settle_match(
        self, reservation: PinReservation, key: IdempotencyKey, reply: bytes
    ) -> bool:
        row = await self._settle(_SETTLE_MATCH, reservation, key, reply)
        return row is not None and row[0] is True

    async def settle_movement_match(
        self,
        reservation: PinReservation,
        key: IdempotencyKey,
        reply: bytes,
        address: MovementAddress,
        now: datetime,
    ) -> tuple[bool, bool]:
        extra = (address.user_id, address.ip_hash, now, LAST_SEEN_EVERY)
        row = await self._settle(_SETTLE_MOVEMENT, reservation, key, reply, *extra)
        assert row is not None  # a function with OUT parameters answers one row
        return row[0] is True, row[1] is True

    async def _settle(
        self,
        sql: str,
        reservation: PinReservation,
        key: IdempotencyKey,
        reply: bytes,
        *extra: object,
    ) -> asyncpg.Record | None:
        """One settlement statement: the nine arguments both functions begin with, then
        `extra`."""
        try:
            async with borrowed_driver(self._engine) as driver:
                row: asyncpg.Record | None = await driver.fetchrow(
                    sql,
                    reservation.wallet_id,
                    reservation.pin_updated_at,
                    _ACTIVE,
                    lock_of(key),
                    key.caller,
                    key.method,
                    key.request_id,
                    key.fingerprint,
                    reply,
                    *extra,
                )
        except asyncpg.UniqueViolationError as exc:
            raise IdempotencyKeyInUseError() from exc
        except LOST_CONNECTION as exc:
            raise DatabaseUnavailableError() from exc
        return row
