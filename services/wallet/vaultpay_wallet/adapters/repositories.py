"""SQLAlchemy Core repositories of wallets, freezes, PINs, reset tokens, limits and settings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vaultpay_wallet.adapters.tables import (
    pin_reset_tokens,
    system_setting_changes,
    system_settings,
    wallet_freezes,
    wallet_limit_overrides,
    wallet_pins,
    wallets,
)
from vaultpay_wallet.domain.errors import (
    WalletAlreadyExistsError,
    WalletHasPendingWithdrawalError,
    WalletIdCollisionError,
)
from vaultpay_wallet.domain.limits import LimitAction, LimitOverride, LimitSource
from vaultpay_wallet.domain.model import Freeze, FreezeSource, KycTier, Wallet, WalletStatus
from vaultpay_wallet.domain.pin import MAX_FAILED_PIN_ATTEMPTS, PinRecord
from vaultpay_wallet.service_layer.ports import (
    CurrencyAmount,
    LimitOverrideFilter,
    ListedOverride,
    PinResetToken,
    StoredSetting,
    WalletFilter,
    WalletStats,
)

__all__ = [
    "SqlLimitOverrideRepository",
    "SqlPinRepository",
    "SqlPinResetTokenRepository",
    "SqlSettingRepository",
    "SqlWalletRepository",
]

_CHECK_VIOLATION = "23514"
# Transfer's trigger on wallets (its migration t0003): no close while a withdrawal is pending.
_PENDING_WITHDRAWAL = "wallets_close_without_pending_withdrawal"
_PIN_SET = exists().where(wallet_pins.c.wallet_id == wallets.c.id).label("pin_set")


def _freeze(row: Any) -> Freeze:
    return Freeze(FreezeSource(row.source), row.note, row.frozen_at, row.until, row.set_by)


def _wallet(row: Any, freezes: Sequence[Freeze]) -> Wallet:
    return Wallet(
        id=row.id,
        user_id=row.user_id,
        display_name=row.display_name,
        currency=row.currency,
        balance_minor=row.balance,
        status=WalletStatus(row.status),
        kyc_tier=KycTier(row.kyc_tier),
        created_at=row.created_at,
        updated_at=row.updated_at,
        closed_at=row.closed_at,
        freezes=tuple(sorted(freezes, key=lambda f: f.source.value)),
        pin_set=bool(row.pin_set),
    )


def _is_pending_withdrawal_refusal(exc: IntegrityError) -> bool:
    # The driver's error (asyncpg's, behind SQLAlchemy's adapter) carries the constraint name.
    orig = exc.orig
    if getattr(orig, "sqlstate", "") != _CHECK_VIOLATION:
        return False
    driver = getattr(orig, "__cause__", None)
    return getattr(driver, "constraint_name", None) == _PENDING_WITHDRAWAL


class SqlWalletRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, wallet: Wallet) -> None:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    insert(wallets).values(
                        id=wallet.id,
                        user_id=wallet.user_id,
                        display_name=wallet.display_name,
                        currency=wallet.currency,
                        balance=wallet.balance_minor,
                        status=wallet.status.value,
                        kyc_tier=wallet.kyc_tier.value,
                        created_at=wallet.created_at,
                        updated_at=wallet.updated_at,
                        closed_at=wallet.closed_at,
                    )
                )
        except IntegrityError as exc:
            # Two unique keys: the user's (a concurrent CreateWallet) or the drawn id.
            if await self.get_by_user(wallet.user_id) is not None:
                raise WalletAlreadyExistsError() from exc
            raise WalletIdCollisionError(wallet.id) from exc

    async def _one(self, where: Any, for_update: bool) -> Wallet | None:
        query = select(wallets, _PIN_SET).where(where)
        if for_update:
            query = query.with_for_update(of=wallets)
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        freezes = await self._freezes([row.id])
        return _wallet(row, freezes.get(row.id, []))

    async def _freezes(self, ids: Sequence[str]) -> dict[str, list[Freeze]]:
        if not ids:
            return {}
        rows = await self._conn.execute(
            select(wallet_freezes).where(wallet_freezes.c.wallet_id.in_(ids))
        )
        found: dict[str, list[Freeze]] = {}
        for row in rows:
            found.setdefault(row.wallet_id, []).append(_freeze(row))
        return found

    async def get(self, wallet_id: str, *, for_update: bool = False) -> Wallet | None:
        return await self._one(wallets.c.id == wallet_id, for_update)

    async def get_by_user(self, user_id: str, *, for_update: bool = False) -> Wallet | None:
        return await self._one(wallets.c.user_id == user_id, for_update)

    async def update(self, wallet: Wallet) -> None:
        """Writes what a wallet's use cases change: its status, tier, times and freezes
        (wallet's role may UPDATE those columns of `wallets` only, migration w0008).

        Raises WalletHasPendingWithdrawalError when `wallet` is being closed while a
        withdrawal of it is still PENDING (transfer's trigger refuses it; the transaction is
        then lost, and the unit of work rolls it back)."""
        try:
            await self._conn.execute(
                update(wallets)
                .where(wallets.c.id == wallet.id)
                .values(
                    status=wallet.status.value,
                    kyc_tier=wallet.kyc_tier.value,
                    updated_at=wallet.updated_at,
                    closed_at=wallet.closed_at,
                )
            )
        except IntegrityError as exc:
            if _is_pending_withdrawal_refusal(exc):
                raise WalletHasPendingWithdrawalError() from exc
            raise
        await self._conn.execute(
            delete(wallet_freezes).where(wallet_freezes.c.wallet_id == wallet.id)
        )
        if wallet.freezes:
            await self._conn.execute(
                insert(wallet_freezes),
                [
                    {
                        "wallet_id": wallet.id,
                        "source": f.source.value,
                        "note": f.note,
                        "frozen_at": f.frozen_at,
                        "until": f.until,
                        "set_by": f.set_by,
                    }
                    for f in wallet.freezes
                ],
            )

    async def list(
        self, flt: WalletFilter, after: tuple[datetime, str] | None, limit: int, now: datetime
    ) -> Sequence[Wallet]:
        c = wallets.c
        query = select(wallets, _PIN_SET)
        if flt.status is not None:
            query = query.where(_effective_status(now) == flt.status.value)
        if flt.kyc_tier is not None:
            query = query.where(c.kyc_tier == flt.kyc_tier.value)
        if flt.user_id:
            query = query.where(c.user_id == flt.user_id)
        if after is not None:
            query = query.where(tuple_(c.created_at, c.id) < tuple_(*after))
        rows = (
            await self._conn.execute(query.order_by(c.created_at.desc(), c.id.desc()).limit(limit))
        ).all()
        freezes = await self._freezes([r.id for r in rows])
        return [_wallet(r, freezes.get(r.id, [])) for r in rows]

    async def ids_with_expired_freezes(self, now: datetime, limit: int) -> Sequence[str]:
        rows = await self._conn.execute(
            select(wallet_freezes.c.wallet_id)
            .where(wallet_freezes.c.until <= now)
            .group_by(wallet_freezes.c.wallet_id)
            .order_by(wallet_freezes.c.wallet_id)
            .limit(limit)
        )
        return [r.wallet_id for r in rows]

    async def stats(self, now: datetime) -> WalletStats:
        effective = select(_effective_status(now).label("status")).subquery()
        counts = await self._conn.execute(
            select(effective.c.status, func.count()).group_by(effective.c.status)
        )
        totals = await self._conn.execute(
            select(wallets.c.currency, func.sum(wallets.c.balance))
            .group_by(wallets.c.currency)
            .order_by(wallets.c.currency)
        )
        return WalletStats(
            counts={WalletStatus(status): int(n) for status, n in counts},
            total_balances=tuple(CurrencyAmount(cur, int(total)) for cur, total in totals),
        )


def _effective_status(now: datetime) -> Any:
    """A wallet's status as `Wallet.current(now)` has it: FROZEN whose freezes have all
    passed their until-time reads ACTIVE (the sweep persists that within a minute; the list
    filter and the figures must not lag the wallet they show). A FROZEN row with no freeze
    row at all stays FROZEN, as the model keeps it. The freeze subqueries run only for
    FROZEN rows (CASE) and use the freezes' primary key (wallet_id first)."""
    f = wallet_freezes.c
    mine = f.wallet_id == wallets.c.id
    lapsed = and_(
        wallets.c.status == WalletStatus.FROZEN.value,
        exists().where(mine),
        ~exists().where(mine, or_(f.until.is_(None), f.until > now)),
    )
    return case((lapsed, WalletStatus.ACTIVE.value), else_=wallets.c.status)


def _pin(row: Any) -> PinRecord:
    return PinRecord(
        row.wallet_id, row.pin_hash, row.failed_attempts, row.updated_at, row.last_attempt_at
    )


class SqlPinRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, wallet_id: str) -> PinRecord | None:
        row = (
            await self._conn.execute(
                select(wallet_pins).where(wallet_pins.c.wallet_id == wallet_id)
            )
        ).first()
        return None if row is None else _pin(row)

    async def create(self, wallet_id: str, pin_hash: str, now: datetime) -> bool:
        created = await self._conn.execute(
            pg_insert(wallet_pins)
            .values(wallet_id=wallet_id, pin_hash=pin_hash, failed_attempts=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=[wallet_pins.c.wallet_id])
            .returning(wallet_pins.c.wallet_id)
        )
        return created.first() is not None

    async def reserve_attempt(self, wallet_id: str, now: datetime) -> int | None:
        c = wallet_pins.c
        row = (
            await self._conn.execute(
                update(wallet_pins)
                .where(c.wallet_id == wallet_id, c.failed_attempts < MAX_FAILED_PIN_ATTEMPTS)
                .values(failed_attempts=c.failed_attempts + 1, last_attempt_at=now)
                .returning(c.failed_attempts)
            )
        ).first()
        return None if row is None else int(row.failed_attempts)

    async def reset_attempts(self, wallet_id: str) -> None:
        await self._conn.execute(
            update(wallet_pins)
            .where(wallet_pins.c.wallet_id == wallet_id)
            .values(failed_attempts=0)
        )

    async def set_hash(self, wallet_id: str, pin_hash: str, now: datetime) -> None:
        await self._conn.execute(
            update(wallet_pins)
            .where(wallet_pins.c.wallet_id == wallet_id)
            .values(pin_hash=pin_hash, updated_at=now, failed_attempts=0)
        )

    async def stale_lock_wallet_ids(self, before: datetime, limit: int) -> Sequence[str]:
        """Reads `wallet_pins_stale_lock_idx` (w0009), the used-up counters only. Its predicate
        is literal SQL, never a bind parameter: asyncpg prepares the statement, and a generic
        plan cannot prove `failed_attempts >= 3` from `failed_attempts >= $1` (it scanned the
        whole table)."""
        c = wallet_pins.c
        lockout = exists().where(
            wallet_freezes.c.wallet_id == c.wallet_id,
            wallet_freezes.c.source == FreezeSource.PIN_LOCKOUT.value,
        )
        rows = await self._conn.execute(
            select(c.wallet_id)
            .where(
                c.failed_attempts >= literal_column(str(MAX_FAILED_PIN_ATTEMPTS)),
                c.last_attempt_at < before,
                ~lockout,
            )
            .order_by(c.wallet_id)
            .limit(limit)
        )
        return [r.wallet_id for r in rows]


def _token(row: Any) -> PinResetToken:
    return PinResetToken(row.token_hash, row.wallet_id, row.created_at, row.expires_at, row.used_at)


class SqlPinResetTokenRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, token: PinResetToken) -> None:
        await self._conn.execute(
            insert(pin_reset_tokens).values(
                token_hash=token.token_hash,
                wallet_id=token.wallet_id,
                created_at=token.created_at,
                expires_at=token.expires_at,
                used_at=token.used_at,
            )
        )

    async def invalidate_for_wallet(self, wallet_id: str, now: datetime) -> int:
        c = pin_reset_tokens.c
        result = await self._conn.execute(
            update(pin_reset_tokens)
            .where(c.wallet_id == wallet_id, c.used_at.is_(None))
            .values(used_at=now)
        )
        return int(result.rowcount)

    async def get(self, token_hash: str, *, for_update: bool = False) -> PinResetToken | None:
        query = select(pin_reset_tokens).where(pin_reset_tokens.c.token_hash == token_hash)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return None if row is None else _token(row)

    async def mark_used(self, token_hash: str, now: datetime) -> None:
        await self._conn.execute(
            update(pin_reset_tokens)
            .where(pin_reset_tokens.c.token_hash == token_hash)
            .values(used_at=now)
        )

    async def newest_usable(self, wallet_id: str, now: datetime) -> PinResetToken | None:
        """Reads `pin_reset_tokens_wallet_idx` (the unused tokens; one per wallet at most,
        as a new one supersedes the others)."""
        c = pin_reset_tokens.c
        row = (
            await self._conn.execute(
                select(pin_reset_tokens)
                .where(c.wallet_id == wallet_id, c.used_at.is_(None), c.expires_at > now)
                .order_by(c.created_at.desc())
                .limit(1)
            )
        ).first()
        return None if row is None else _token(row)

    async def created_since(self, wallet_id: str, since: datetime) -> Sequence[datetime]:
        """Reads the wallet's range of `pin_reset_tokens_wallet_created_idx` from `since` on
        (w0013), in order: a handful of rows. It read `pin_reset_tokens_expires_idx` before,
        through an `expires_at > since` that added nothing, the last ~75 minutes of every
        wallet's tokens under the wallet's row lock (review of 1d32ff0)."""
        c = pin_reset_tokens.c
        rows = await self._conn.execute(
            select(c.created_at)
            .where(c.wallet_id == wallet_id, c.created_at > since)
            .order_by(c.created_at)
        )
        return [r.created_at for r in rows]


def _override(row: Any) -> LimitOverride:
    return LimitOverride(
        wallet_id=row.wallet_id,
        source=LimitSource(row.source),
        action=LimitAction(row.action),
        per_transaction=row.per_transaction,
        daily=row.daily,
        monthly=row.monthly,
        set_by=row.set_by,
        reason=row.reason,
        updated_at=row.updated_at,
    )


def _override_values(o: LimitOverride) -> dict[str, Any]:
    return {
        "wallet_id": o.wallet_id,
        "source": o.source.value,
        "action": o.action.value,
        "per_transaction": o.per_transaction,
        "daily": o.daily,
        "monthly": o.monthly,
        "set_by": o.set_by,
        "reason": o.reason,
        "updated_at": o.updated_at,
    }


class SqlLimitOverrideRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def for_wallet(self, wallet_id: str) -> Sequence[LimitOverride]:
        rows = await self._conn.execute(
            select(wallet_limit_overrides).where(wallet_limit_overrides.c.wallet_id == wallet_id)
        )
        return [_override(r) for r in rows]

    async def replace_admin(self, wallet_id: str, overrides: Sequence[LimitOverride]) -> None:
        """PUT semantics, each row kept in place: an action set again is updated where it is
        (it keeps its `position`, AdminListLimits' order, with its new values), a new one is
        added, and the wallet's admin rows of the actions not in `overrides` go."""
        c = wallet_limit_overrides.c
        await self._conn.execute(
            delete(wallet_limit_overrides).where(
                c.wallet_id == wallet_id,
                c.source == LimitSource.ADMIN_OVERRIDE.value,
                c.action.not_in([o.action.value for o in overrides]),
            )
        )
        if overrides:
            await self._upsert([_override_values(o) for o in overrides])

    async def put_user(self, override: LimitOverride) -> None:
        """Updated in place when the action has one (its `position` kept), else added."""
        await self._upsert([_override_values(override)])

    async def _upsert(self, rows: list[dict[str, Any]]) -> None:
        """One row per (wallet, source, action): its values replaced where it exists (an
        UPDATE: the row keeps its `position`), inserted where not."""
        statement = pg_insert(wallet_limit_overrides).values(rows)
        await self._conn.execute(
            statement.on_conflict_do_update(
                constraint="wallet_limit_overrides_key",
                set_={
                    k: statement.excluded[k]
                    for k in rows[0]
                    if k not in ("wallet_id", "source", "action")
                },
            )
        )

    async def delete_user(self, wallet_id: str, action: LimitAction) -> bool:
        c = wallet_limit_overrides.c
        result = await self._conn.execute(
            delete(wallet_limit_overrides).where(
                c.wallet_id == wallet_id,
                c.source == LimitSource.USER.value,
                c.action == action.value,
            )
        )
        return bool(result.rowcount)

    async def list(
        self, flt: LimitOverrideFilter, after: int | None, limit: int
    ) -> Sequence[ListedOverride]:
        """Most recently created first, on `position`, which a row keeps for as long as it
        exists (`put_user` and `replace_admin` update in place): an override changed between
        two page fetches is neither missed nor listed twice. Each filter reads a range of an
        index in this order (w0012), a wallet's the few rows of its key. The source and the
        action are literal SQL (one of a few fixed values each), never bind parameters:
        asyncpg prepares the statement, and a generic plan, which cannot tell the few
        ADMIN_OVERRIDE rows from the many USER rows behind `source = $1`, walks the primary
        key filtering row by row."""
        c = wallet_limit_overrides.c
        query = select(wallet_limit_overrides, wallets.c.currency).join(
            wallets, wallets.c.id == c.wallet_id
        )
        if flt.wallet_id:
            query = query.where(c.wallet_id == flt.wallet_id)
        if flt.source is not None:
            query = query.where(c.source == literal(flt.source.value, literal_execute=True))
        if flt.action is not None:
            query = query.where(c.action == literal(flt.action.value, literal_execute=True))
        if after is not None:
            query = query.where(c.position < after)
        rows = await self._conn.execute(query.order_by(c.position.desc()).limit(limit))
        return [ListedOverride(r.position, _override(r), r.currency) for r in rows]


def _setting(row: Any) -> StoredSetting:
    return StoredSetting(row.key, row.value, row.updated_at, row.updated_by)


class SqlSettingRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def values(self, key_prefix: str) -> dict[str, str]:
        c = system_settings.c
        rows = await self._conn.execute(
            select(c.key, c.value).where(c.key.startswith(key_prefix, autoescape=True))
        )
        return {r.key: r.value for r in rows}

    async def list(self, key_prefix: str, after_key: str, limit: int) -> Sequence[StoredSetting]:
        c = system_settings.c
        query = select(system_settings).where(c.key.startswith(key_prefix, autoescape=True))
        if after_key:
            query = query.where(c.key > after_key)
        rows = await self._conn.execute(query.order_by(c.key).limit(limit))
        return [_setting(r) for r in rows]

    async def get(self, key: str, *, for_update: bool = False) -> StoredSetting | None:
        query = select(system_settings).where(system_settings.c.key == key)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return None if row is None else _setting(row)

    async def update(
        self, key: str, old_value: str, new_value: str, actor_id: str, reason: str, now: datetime
    ) -> StoredSetting:
        await self._conn.execute(
            update(system_settings)
            .where(system_settings.c.key == key)
            .values(value=new_value, updated_at=now, updated_by=actor_id)
        )
        await self._conn.execute(
            insert(system_setting_changes).values(
                key=key,
                old_value=old_value,
                new_value=new_value,
                changed_by=actor_id,
                reason=reason,
                changed_at=now,
            )
        )
        return StoredSetting(key, new_value, now, actor_id)
