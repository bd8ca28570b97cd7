"""The hot reads (GetBalance, GetMyWallet, GetLimits) as one autocommit statement each.

Each call borrows a pooled connection from the engine, takes its raw asyncpg connection and
runs one SELECT outside any explicit transaction: one client round trip, one snapshot (every
subquery of a statement sees the same one), nothing to roll back. asyncpg keeps the statement
prepared per connection, so the server plans it once. Through the unit of work the same read
was BEGIN, a SELECT per repository call and ROLLBACK, all through SQLAlchemy's statement
compilation and result processing: about a third of the wallet's CPU per GetBalance.

Failures: no connection -> DatabaseUnavailableError; the caller's deadline passed (asyncpg's
timeout, which also cancels the statement) or the statement timeout -> DeadlineExceededError;
a connection that died mid-call is discarded -> DatabaseUnavailableError (a read: a retry is
safe).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.context import remaining_seconds
from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_common.pg_failures import LOST_CONNECTION
from vaultpay_common.pg_raw import borrowed_driver
from vaultpay_wallet.domain.limits import LimitAction, LimitOverride, LimitSource
from vaultpay_wallet.domain.model import Freeze, FreezeSource, KycTier, Wallet, WalletStatus
from vaultpay_wallet.service_layer.ports import StoredBalance, WalletForLimits

__all__ = ["PgWalletReads"]

_BALANCE = "SELECT id, currency, balance FROM wallets WHERE user_id = $1"

# The wallet row, whether it has a PIN, its freezes, its limit overrides and the stored values
# of its tier's default settings (the prefix is domain.limits.tier_settings_prefix).
_WALLET_FOR_LIMITS = """
SELECT w.id, w.user_id, w.display_name, w.currency, w.balance, w.status, w.kyc_tier,
       w.created_at, w.updated_at, w.closed_at,
       EXISTS (SELECT 1 FROM wallet_pins p WHERE p.wallet_id = w.id) AS pin_set,
       ARRAY(SELECT ROW(f.source, f.note, f.frozen_at, f.until, f.set_by)
             FROM wallet_freezes f WHERE f.wallet_id = w.id) AS freezes,
       ARRAY(SELECT ROW(o.source, o.action, o.per_transaction, o.daily, o.monthly,
                        o.set_by, o.reason, o.updated_at)
             FROM wallet_limit_overrides o WHERE o.wallet_id = w.id) AS overrides,
       ARRAY(SELECT ROW(s.key, s.value) FROM system_settings s
             WHERE starts_with(s.key, 'limits.tier_' || lower(w.kyc_tier) || '.'))
         AS tier_settings
FROM wallets w
WHERE w.user_id = $1
"""


def _wallet(row: Any) -> Wallet:
    freezes = (
        Freeze(FreezeSource(source), note, frozen_at, until, set_by)
        for source, note, frozen_at, until, set_by in row["freezes"]
    )
    return Wallet(
        id=row["id"],
        user_id=row["user_id"],
        display_name=row["display_name"],
        currency=row["currency"],
        balance_minor=row["balance"],
        status=WalletStatus(row["status"]),
        kyc_tier=KycTier(row["kyc_tier"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        closed_at=row["closed_at"],
        freezes=tuple(sorted(freezes, key=lambda f: f.source.value)),
        pin_set=bool(row["pin_set"]),
    )


def _overrides(wallet_id: str, rows: Any) -> tuple[LimitOverride, ...]:
    return tuple(
        LimitOverride(
            wallet_id=wallet_id,
            source=LimitSource(source),
            action=LimitAction(action),
            per_transaction=per_transaction,
            daily=daily,
            monthly=monthly,
            set_by=set_by,
            reason=reason,
            updated_at=updated_at,
        )
        for source, action, per_transaction, daily, monthly, set_by, reason, updated_at in rows
    )


class PgWalletReads:
    """`WalletReads` on PostgreSQL (see the module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        left = remaining_seconds()
        if left is not None and left <= 0:
            raise DeadlineExceededError()
        try:
            async with borrowed_driver(self._engine) as driver:
                row: asyncpg.Record | None = await driver.fetchrow(sql, *args, timeout=left)
                return row
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            raise DeadlineExceededError() from exc
        except LOST_CONNECTION as exc:
            raise DatabaseUnavailableError() from exc

    async def balance(self, user_id: str) -> StoredBalance | None:
        row = await self._fetchrow(_BALANCE, user_id)
        if row is None:
            return None
        return StoredBalance(row["id"], row["currency"], row["balance"])

    async def wallet_for_limits(self, user_id: str) -> WalletForLimits | None:
        row = await self._fetchrow(_WALLET_FOR_LIMITS, user_id)
        if row is None:
            return None
        wallet = _wallet(row)
        settings = {key: value for key, value in row["tier_settings"]}
        return WalletForLimits(wallet, settings, _overrides(wallet.id, row["overrides"]))
