"""In-memory fakes for the wallet's core use cases (wallets, PIN, limits, settings, staff).

Repositories keep their state in plain public attributes, so `FakeUnitOfWork` snapshots and
restores them: a refused command provably writes nothing.

    uow = FakeWalletUnitOfWork()
    service = WalletService(lambda: uow, clock, limits)
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from tests.fakes.idempotency import FakeIdempotencyRecords
from tests.fakes.outbox import FakeOutbox
from tests.fakes.roles import FakeUserRoles
from tests.fakes.uow import FakeUnitOfWork
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_common.sealing import UnsealError
from vaultpay_wallet.domain.errors import (
    PinHashingBusyError,
    WalletAlreadyExistsError,
    WalletIdCollisionError,
)
from vaultpay_wallet.domain.limits import (
    ActionUsage,
    LimitAction,
    LimitOverride,
    LimitSource,
    UsageReading,
)
from vaultpay_wallet.domain.model import FreezeSource, Wallet, WalletStatus
from vaultpay_wallet.domain.pin import MAX_FAILED_PIN_ATTEMPTS, PinRecord
from vaultpay_wallet.domain.settings_catalog import SETTINGS
from vaultpay_wallet.service_layer.ports import (
    CurrencyAmount,
    LimitOverrideFilter,
    ListedOverride,
    PinResetToken,
    StoredSetting,
    TransferStats,
    WalletFilter,
    WalletStats,
)
from vaultpay_wallet.service_layer.results import MovementAddress, PinReservation

__all__ = [
    "FakeKycStats",
    "FakeLimitOverrideRepository",
    "FakePinCheckFastPath",
    "FakePinHasher",
    "FakePinRepository",
    "FakePinResetTokenRepository",
    "FakeSettingRepository",
    "FakeTransferStats",
    "FakeTrustedIps",
    "FakeUsage",
    "FakeUserRoles",
    "FakeWalletRepository",
    "FakeWalletUnitOfWork",
    "FixedClock",
    "ReversibleSealer",
]

EPOCH = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)


class FixedClock:
    def __init__(self, now: datetime = EPOCH) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


class FakePinRepository:
    def __init__(self) -> None:
        self.records: dict[str, PinRecord] = {}

    async def get(self, wallet_id: str) -> PinRecord | None:
        return self.records.get(wallet_id)

    async def create(self, wallet_id: str, pin_hash: str, now: datetime) -> bool:
        if wallet_id in self.records:
            return False
        self.records[wallet_id] = PinRecord(wallet_id, pin_hash, 0, now)
        return True

    async def reserve_attempt(self, wallet_id: str, now: datetime) -> int | None:
        record = self.records.get(wallet_id)
        if record is None or record.failed_attempts >= MAX_FAILED_PIN_ATTEMPTS:
            return None
        record = dataclasses.replace(
            record, failed_attempts=record.failed_attempts + 1, last_attempt_at=now
        )
        self.records[wallet_id] = record
        return record.failed_attempts

    async def reset_attempts(self, wallet_id: str) -> None:
        record = self.records.get(wallet_id)
        if record is not None:
            self.records[wallet_id] = dataclasses.replace(record, failed_attempts=0)

    async def set_hash(self, wallet_id: str, pin_hash: str, now: datetime) -> None:
        record = self.records[wallet_id]
        self.records[wallet_id] = dataclasses.replace(
            record, pin_hash=pin_hash, updated_at=now, failed_attempts=0
        )

    async def stale_lock_wallet_ids(self, before: datetime, limit: int) -> Sequence[str]:
        # the fake cannot see freezes; FakeWalletUnitOfWork wires `locked_out` in
        return [
            r.wallet_id
            for r in self.records.values()
            if r.failed_attempts >= MAX_FAILED_PIN_ATTEMPTS
            and r.last_attempt_at is not None
            and r.last_attempt_at < before
            and not self._locked_out(r.wallet_id)
        ][:limit]

    def _locked_out(self, wallet_id: str) -> bool:
        return False


class FakeWalletRepository:
    def __init__(self, pins: FakePinRepository) -> None:
        self.wallets: dict[str, Wallet] = {}
        self._pins = pins

    def _out(self, wallet: Wallet) -> Wallet:
        return dataclasses.replace(wallet, pin_set=wallet.id in self._pins.records)

    async def add(self, wallet: Wallet) -> None:
        if any(w.user_id == wallet.user_id for w in self.wallets.values()):
            raise WalletAlreadyExistsError()
        if wallet.id in self.wallets:
            raise WalletIdCollisionError(wallet.id)
        self.wallets[wallet.id] = wallet

    async def get(self, wallet_id: str, *, for_update: bool = False) -> Wallet | None:
        found = self.wallets.get(wallet_id)
        return None if found is None else self._out(found)

    async def get_by_user(self, user_id: str, *, for_update: bool = False) -> Wallet | None:
        found = next((w for w in self.wallets.values() if w.user_id == user_id), None)
        return None if found is None else self._out(found)

    async def update(self, wallet: Wallet) -> None:
        stored = self.wallets[wallet.id]
        # never the balance: that column is the transfer service's
        self.wallets[wallet.id] = dataclasses.replace(
            wallet, balance_minor=stored.balance_minor, pin_set=False
        )

    async def list(
        self, flt: WalletFilter, after: tuple[datetime, str] | None, limit: int, now: datetime
    ) -> Sequence[Wallet]:
        rows = sorted(self.wallets.values(), key=lambda w: (w.created_at, w.id), reverse=True)
        rows = [
            w
            for w in rows
            if (flt.status is None or w.current(now).status is flt.status)
            and (flt.kyc_tier is None or w.kyc_tier is flt.kyc_tier)
            and (not flt.user_id or w.user_id == flt.user_id)
            and (after is None or (w.created_at, w.id) < after)
        ]
        return [self._out(w) for w in rows[:limit]]

    async def ids_with_expired_freezes(self, now: datetime, limit: int) -> Sequence[str]:
        return sorted(
            w.id for w in self.wallets.values() if any(not f.is_active(now) for f in w.freezes)
        )[:limit]

    async def stats(self, now: datetime) -> WalletStats:
        counts: dict[WalletStatus, int] = {}
        totals: dict[str, int] = {}
        for w in self.wallets.values():
            status = w.current(now).status
            counts[status] = counts.get(status, 0) + 1
            totals[w.currency] = totals.get(w.currency, 0) + w.balance_minor
        return WalletStats(counts, tuple(CurrencyAmount(c, t) for c, t in sorted(totals.items())))

    def set_balance(self, wallet_id: str, balance_minor: int) -> None:
        """What the transfer service does inside its ledger transaction."""
        self.wallets[wallet_id] = dataclasses.replace(
            self.wallets[wallet_id], balance_minor=balance_minor
        )


class FakePinResetTokenRepository:
    def __init__(self) -> None:
        self.tokens: dict[str, PinResetToken] = {}

    async def add(self, token: PinResetToken) -> None:
        self.tokens[token.token_hash] = token

    async def invalidate_for_wallet(self, wallet_id: str, now: datetime) -> int:
        changed = 0
        for key, token in list(self.tokens.items()):
            if token.wallet_id == wallet_id and token.used_at is None:
                self.tokens[key] = dataclasses.replace(token, used_at=now)
                changed += 1
        return changed

    async def get(self, token_hash: str, *, for_update: bool = False) -> PinResetToken | None:
        return self.tokens.get(token_hash)

    async def mark_used(self, token_hash: str, now: datetime) -> None:
        self.tokens[token_hash] = dataclasses.replace(self.tokens[token_hash], used_at=now)

    async def newest_usable(self, wallet_id: str, now: datetime) -> PinResetToken | None:
        usable = [t for t in self.tokens.values() if t.wallet_id == wallet_id and t.usable(now)]
        return max(usable, key=lambda t: t.created_at, default=None)

    async def created_since(self, wallet_id: str, since: datetime) -> Sequence[datetime]:
        return sorted(
            t.created_at
            for t in self.tokens.values()
            if t.wallet_id == wallet_id and t.created_at > since
        )


class FakeLimitOverrideRepository:
    def __init__(self, wallets: FakeWalletRepository) -> None:
        self.rows: dict[tuple[str, LimitSource, LimitAction], tuple[int, LimitOverride]] = {}
        self.next_position = 1
        self._wallets = wallets

    def _put(self, override: LimitOverride) -> None:
        """Updated in place (its position kept) or added, as the SQL upsert does."""
        key = (override.wallet_id, override.source, override.action)
        held = self.rows.get(key)
        if held is None:
            self.rows[key] = (self.next_position, override)
            self.next_position += 1
        else:
            self.rows[key] = (held[0], override)

    async def for_wallet(self, wallet_id: str) -> Sequence[LimitOverride]:
        return [o for (w, _, _), (_, o) in self.rows.items() if w == wallet_id]

    async def replace_admin(self, wallet_id: str, overrides: Sequence[LimitOverride]) -> None:
        kept = {o.action for o in overrides}
        for key in [
            k
            for k in self.rows
            if k[0] == wallet_id and k[1] is LimitSource.ADMIN_OVERRIDE and k[2] not in kept
        ]:
            del self.rows[key]
        for override in overrides:
            self._put(override)

    async def put_user(self, override: LimitOverride) -> None:
        self._put(override)

    async def delete_user(self, wallet_id: str, action: LimitAction) -> bool:
        return self.rows.pop((wallet_id, LimitSource.USER, action), None) is not None

    async def list(
        self, flt: LimitOverrideFilter, after: int | None, limit: int
    ) -> Sequence[ListedOverride]:
        rows = sorted(self.rows.values(), key=lambda r: r[0], reverse=True)
        listed = [
            ListedOverride(pos, o, self._wallets.wallets[o.wallet_id].currency)
            for pos, o in rows
            if (not flt.wallet_id or o.wallet_id == flt.wallet_id)
            and (flt.source is None or o.source is flt.source)
            and (flt.action is None or o.action is flt.action)
            and (after is None or pos < after)
        ]
        return listed[:limit]


class FakeSettingRepository:
    def __init__(self) -> None:
        self.values_by_key: dict[str, StoredSetting] = {
            key: StoredSetting(key, spec.default, EPOCH, "system") for key, spec in SETTINGS.items()
        }
        self.history: list[tuple[str, str, str, str]] = []

    async def values(self, key_prefix: str) -> dict[str, str]:
        return {k: s.value for k, s in self.values_by_key.items() if k.startswith(key_prefix)}

    async def list(self, key_prefix: str, after_key: str, limit: int) -> Sequence[StoredSetting]:
        keys = sorted(k for k in self.values_by_key if k.startswith(key_prefix) and k > after_key)
        return [self.values_by_key[k] for k in keys[:limit]]

    async def get(self, key: str, *, for_update: bool = False) -> StoredSetting | None:
        return self.values_by_key.get(key)

    async def update(
        self, key: str, old_value: str, new_value: str, actor_id: str, reason: str, now: datetime
    ) -> StoredSetting:
        stored = StoredSetting(key, new_value, now, actor_id)
        self.values_by_key[key] = stored
        self.history.append((key, old_value, new_value, actor_id))
        return stored


class FakeWalletUnitOfWork(FakeUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self._pins = FakePinRepository()
        self._wallets = FakeWalletRepository(self._pins)
        self._pins._locked_out = self._has_lockout  # type: ignore[method-assign]
        self._reset_tokens = FakePinResetTokenRepository()
        self._limits = FakeLimitOverrideRepository(self._wallets)
        self._settings = FakeSettingRepository()
        self._idempotency = FakeIdempotencyRecords()
        self._outbox = FakeOutbox("wallet")

    def _has_lockout(self, wallet_id: str) -> bool:
        wallet = self._wallets.wallets.get(wallet_id)
        return wallet is not None and wallet.freeze_by(FreezeSource.PIN_LOCKOUT) is not None

    def _state_holders(self) -> list[object]:
        return [
            self._wallets,
            self._pins,
            self._reset_tokens,
            self._limits,
            self._settings,
            self._idempotency,
            self._outbox,
        ]

    @property
    def wallets(self) -> FakeWalletRepository:
        return self._wallets

    @property
    def pins(self) -> FakePinRepository:
        return self._pins

    @property
    def reset_tokens(self) -> FakePinResetTokenRepository:
        return self._reset_tokens

    @property
    def limits(self) -> FakeLimitOverrideRepository:
        return self._limits

    @property
    def settings(self) -> FakeSettingRepository:
        return self._settings

    @property
    def idempotency(self) -> FakeIdempotencyRecords:
        return self._idempotency

    @property
    def outbox(self) -> FakeOutbox:
        return self._outbox


class FakePinHasher:
    """Not bcrypt: "h:" + pin, so tests run in microseconds; counts the work it did."""

    def __init__(self) -> None:
        self.hashes = 0
        self.verifications = 0
        self.movement_verifications = 0
        self.busy = False  # a refusable hash is refused (the owner's queue is full)

    async def hash(self, pin: str, *, movement: bool = False, refusable: bool = False) -> str:
        if refusable and self.busy:
            raise PinHashingBusyError(retry_after_seconds=2)
        self.hashes += 1
        return "h:" + pin

    async def verify(self, pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        self.verifications += 1
        self.movement_verifications += movement
        return pin_hash == "h:" + pin


class FakePinCheckFastPath:
    """`PinCheckFastPath` on a fake unit of work, with the SQL functions' conditions
    (adapters/sql/pin_check.sql): it reserves or settles only an ACTIVE wallet without
    freezes whose keys have no stored record, and otherwise changes nothing and answers
    None / False, sending the use case down the general path. Each call commits at once, as
    the functions do. A movement's address is trusted when `trusted_at` says so, by default
    when its (user_id, ip_hash) is in `trusted`; `addresses` lists the ones settled."""

    def __init__(
        self,
        uow: FakeWalletUnitOfWork,
        trusted_at: Callable[[MovementAddress, datetime], Awaitable[bool]] | None = None,
    ) -> None:
        self._uow = uow
        self._trusted_at = trusted_at or self._in_trusted
        self.trusted: set[tuple[str, str]] = set()
        self.addresses: list[MovementAddress] = []
        self.reservations = 0
        self.settlements = 0

    async def _in_trusted(self, address: MovementAddress, now: datetime) -> bool:
        return (address.user_id, address.ip_hash) in self.trusted

    def _usable(self, wallet: Wallet | None, *keys: IdempotencyKey) -> bool:
        records = self._uow.idempotency
        return (
            wallet is not None
            and wallet.status is WalletStatus.ACTIVE
            and not wallet.freezes
            and all(records.reply_for(k) is None for k in keys)
        )

    async def reserve(
        self,
        user_id: str,
        key: IdempotencyKey,
        reserve_key: IdempotencyKey,
        now: datetime,
        encode: Callable[[PinReservation], bytes],
    ) -> tuple[PinReservation, str] | None:
        wallet = await self._uow.wallets.get_by_user(user_id)
        if wallet is None or not self._usable(wallet, key, reserve_key):
            return None
        attempt = await self._uow.pins.reserve_attempt(wallet.id, now)
        record = await self._uow.pins.get(wallet.id)
        if attempt is None or record is None:
            return None
        reservation = PinReservation(wallet.id, attempt, record.updated_at)
        await self._uow.idempotency.save(reserve_key, encode(reservation))
        self.reservations += 1
        return reservation, record.pin_hash

    async def settle_match(
        self, reservation: PinReservation, key: IdempotencyKey, reply: bytes
    ) -> bool:
        wallet = await self._uow.wallets.get(reservation.wallet_id)
        record = await self._uow.pins.get(reservation.wallet_id)
        if not self._usable(wallet, key) or record is None:
            return False
        if record.updated_at != reservation.pin_updated_at:
            return False
        await self._uow.pins.reset_attempts(reservation.wallet_id)
        await self._uow.idempotency.save(key, reply)
        self.settlements += 1
        return True

    async def settle_movement_match(
        self,
        reservation: PinReservation,
        key: IdempotencyKey,
        reply: bytes,
        address: MovementAddress,
        now: datetime,
    ) -> tuple[bool, bool]:
        if not await self.settle_match(reservation, key, reply):
            return False, False
        self.addresses.append(address)
        return True, await self._trusted_at(address, now)


class ReversibleSealer:
    """Never the clear text, but reversible so a test can read the mailed token."""

    def seal(self, plaintext: str) -> str:
        return "sealed:" + base64.b64encode(plaintext[::-1].encode()).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith("sealed:"):
            raise UnsealError("unknown sealing format")  # as the real sealer refuses it
        return base64.b64decode(sealed.removeprefix("sealed:")).decode()[::-1]


class FakeUsage:
    """Usage per action, read at `read_at` (None: not said); `down=True` answers unknown,
    `broken=True` raises."""

    def __init__(self) -> None:
        self.used: list[ActionUsage] = []
        self.read_at: datetime | None = None
        self.down = False
        self.broken = False

    async def usage(self, wallet_id: str) -> UsageReading | None:
        if self.broken:
            raise ConnectionError("transfer is down")
        return None if self.down else UsageReading(self.read_at, list(self.used))


class FakeTransferStats:
    def __init__(self, stats: TransferStats | None = None) -> None:
        self.value = stats

    async def stats(self, now: datetime) -> TransferStats | None:
        return self.value


class FakeKycStats:
    def __init__(self, pending: int | None = None) -> None:
        self.pending = pending

    async def pending_count(self) -> int | None:
        return self.pending


class FakeTrustedIps:
    def __init__(self, count: int = 0) -> None:
        self.count = count
        self.broken = False

    async def count_trusted(self, user_id: str, now: datetime) -> int:
        if self.broken:
            raise ConnectionError("ip trust store down")
        return self.count
