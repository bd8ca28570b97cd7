"""The common case of a keyed PIN check through asyncpg: two short transactions of three
statements each, instead of three transactions of some twenty statements through the unit of
work (the PIN check was three quarters of the wallet's time per SendMoney).

Reserve: BEGIN; the advisory locks of both idempotency keys (as `SqlIdempotencyRecords.claim`
takes them); one statement that locks the wallet row when it is ACTIVE without freezes and
neither key has a stored reply, and counts the attempt when fewer than three are counted;
the reservation stored under the "#reserve" key; COMMIT.
Settle a right PIN: BEGIN; the key's advisory lock; one statement that locks the same kind of
wallet row and clears the counter when the PIN is still the one checked and the key has no
reply; the OK reply stored; COMMIT.

The locks are taken in a statement of their own so the next one reads with a snapshot taken
after they were granted (READ COMMITTED), as the unit of work's claim does. Whenever a
condition does not hold the transaction rolls back having changed nothing and the use case
takes the general path (service_layer/pins.py), which has every rule and every refusal: the
two paths share the lockout counter, the keys and the stored replies.

Failures: no connection -> DatabaseUnavailableError, as is a connection lost during a call
(it is discarded; a retry with the same key replays what committed). The reservation honours
the caller's deadline; the settlement, which runs on after its caller is gone, has the
engine's statement timeout only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

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
from vaultpay_wallet.service_layer.results import PinReservation

__all__ = ["PgPinCheckFastPath"]

_LOCK_BOTH = "SELECT pg_try_advisory_xact_lock($1) AND pg_try_advisory_xact_lock($2)"
_LOCK_ONE = "SELECT pg_try_advisory_xact_lock($1)"

# $1 user, $2 caller, $3 request id, $4 the key's method, $5 the reserve key's method,
# $6 now, $7 the attempts limit, $8 ACTIVE.
_RESERVE = """
WITH target AS (
    SELECT w.id FROM wallets w
    WHERE w.user_id = $1 AND w.status = $8
      AND NOT EXISTS (SELECT 1 FROM wallet_freezes f WHERE f.wallet_id = w.id)
      AND NOT EXISTS (SELECT 1 FROM idempotency_records r
                      WHERE r.caller = $2 AND r.request_id = $3::uuid AND r.method IN ($4, $5))
    FOR UPDATE OF w
)
UPDATE wallet_pins p
SET failed_attempts = p.failed_attempts + 1, last_attempt_at = $6
FROM target
WHERE p.wallet_id = target.id AND p.failed_attempts < $7
RETURNING p.wallet_id, p.failed_attempts, p.pin_hash, p.updated_at
"""

# $1 wallet, $2 caller, $3 request id, $4 method, $5 the PIN's updated_at when reserved,
# $6 ACTIVE.
_CLEAR = """
WITH target AS (
    SELECT w.id FROM wallets w
    WHERE w.id = $1 AND w.status = $6
      AND NOT EXISTS (SELECT 1 FROM wallet_freezes f WHERE f.wallet_id = w.id)
      AND NOT EXISTS (SELECT 1 FROM idempotency_records r
                      WHERE r.caller = $2 AND r.request_id = $3::uuid AND r.method = $4)
    FOR UPDATE OF w
)
UPDATE wallet_pins p SET failed_attempts = 0
FROM target
WHERE p.wallet_id = target.id AND p.updated_at = $5
RETURNING p.wallet_id
"""

_SAVE = """
INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply)
VALUES ($1, $2, $3::uuid, $4, $5)
"""

_ACTIVE = WalletStatus.ACTIVE.value


def _save_args(key: IdempotencyKey, reply: bytes) -> tuple[Any, ...]:
    return (key.caller, key.method, key.request_id, key.fingerprint, reply)


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
        encode: Callable[[PinReservation], bytes],
    ) -> tuple[PinReservation, str] | None:
        left = remaining_seconds()
        if left is not None and left <= 0:
            raise DeadlineExceededError()
        try:
            async with borrowed_driver(self._engine) as driver, driver.transaction():
                if not await driver.fetchval(
                    _LOCK_BOTH, lock_of(key), lock_of(reserve_key), timeout=left
                ):
                    return None
                row = await driver.fetchrow(
                    _RESERVE,
                    user_id,
                    key.caller,
                    key.request_id,
                    key.method,
                    reserve_key.method,
                    now,
                    MAX_FAILED_PIN_ATTEMPTS,
                    _ACTIVE,
                    timeout=left,
                )
                if row is None:
                    raise _NotTheCommonCaseError()
                reservation = PinReservation(
                    row["wallet_id"], row["failed_attempts"], row["updated_at"]
                )
                await driver.execute(
                    _SAVE, *_save_args(reserve_key, encode(reservation)), timeout=left
                )
            return reservation, str(row["pin_hash"])
        except _NotTheCommonCaseError:
            return None
        except asyncpg.UniqueViolationError as exc:  # as SqlIdempotencyRecords.save
            raise IdempotencyKeyInUseError() from exc
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            raise DeadlineExceededError() from exc
        except LOST_CONNECTION as exc:
            raise DatabaseUnavailableError() from exc

    async def settle_match(
        self, reservation: PinReservation, key: IdempotencyKey, reply: bytes
    ) -> bool:
        try:
            async with borrowed_driver(self._engine) as driver, driver.transaction():
                if not await driver.fetchval(_LOCK_ONE, lock_of(key)):
                    return False
                cleared = await driver.fetchval(
                    _CLEAR,
                    reservation.wallet_id,
                    key.caller,
                    key.request_id,
                    key.method,
                    reservation.pin_updated_at,
                    _ACTIVE,
                )
                if cleared is None:
                    raise _NotTheCommonCaseError()
                await driver.execute(_SAVE, *_save_args(key, reply))
            return True
        except _NotTheCommonCaseError:
            return False
        except asyncpg.UniqueViolationError as exc:
            raise IdempotencyKeyInUseError() from exc
        except LOST_CONNECTION as exc:
            raise DatabaseUnavailableError() from exc


class _NotTheCommonCaseError(Exception):
    """Rolls the transaction back: the general path decides."""
