"""What the wallet use cases need from the outside world, as protocols.

The SQL adapters (`adapters/repositories.py`, `adapters/unit_of_work.py`) and the test fakes
(`tests/fakes/wallet.py`) implement the repositories; the lead's composition root provides the
peer ports (`LimitUsageSource`, `TransferStatsSource`, `KycStatsSource`, `TrustedIpCounter`,
`UserRoleSource`),
the `PinHasher` (`adapters/pin_hasher.py`) and the `SecretSealer`
(`vaultpay_common.sealing.AesGcmSealer`).

`WalletReads` is the read side of the hot, read-only RPCs (GetBalance, GetMyWallet,
GetLimits): one statement each, no unit of work (`adapters/reads_pg.py`; over a unit of work
in `service_layer/reads.py` for the fakes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from vaultpay_common.audit import AuditEntry
from vaultpay_common.context import Role
from vaultpay_common.idempotency import IdempotencyKey, IdempotencyRecords
from vaultpay_common.outbox import Outbox
from vaultpay_wallet.domain.limits import (
    LimitAction,
    LimitOverride,
    LimitSource,
    UsageReading,
)
from vaultpay_wallet.domain.model import KycTier, Wallet, WalletStatus
from vaultpay_wallet.domain.pin import PinRecord

if TYPE_CHECKING:  # results.py imports this module
    from vaultpay_wallet.service_layer.results import MovementAddress, PinReservation

__all__ = [
    "CurrencyAmount",
    "KycStatsSource",
    "LimitOverrideFilter",
    "LimitOverrideRepository",
    "LimitUsageSource",
    "ListedOverride",
    "PinCheckFastPath",
    "PinHasher",
    "PinRepository",
    "PinResetToken",
    "PinResetTokenRepository",
    "SecretSealer",
    "SettingRepository",
    "StoredBalance",
    "StoredSetting",
    "TransferStats",
    "TransferStatsSource",
    "TrustedIpCounter",
    "UserRoleSource",
    "WalletFilter",
    "WalletForLimits",
    "WalletReads",
    "WalletRepository",
    "WalletStats",
    "WalletUnitOfWork",
]


# ----- value types crossing the ports ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrencyAmount:
    """An amount in minor units of one currency (a total per currency, a volume)."""

    currency: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class WalletFilter:
    """Filters of AdminListWallets; None/"" means any."""

    status: WalletStatus | None = None
    kyc_tier: KycTier | None = None
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class WalletStats:
    counts: dict[WalletStatus, int]
    total_balances: tuple[CurrencyAmount, ...]


@dataclass(frozen=True, slots=True)
class PinResetToken:
    token_hash: str
    wallet_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.used_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class LimitOverrideFilter:
    """Filters of AdminListLimits; None/"" means any."""

    wallet_id: str = ""
    source: LimitSource | None = None
    action: LimitAction | None = None


@dataclass(frozen=True, slots=True)
class ListedOverride:
    """An override as AdminListLimits lists it, with its wallet's currency and its keyset
    position (the row's identity, given when it was created and kept while it exists)."""

    position: int
    override: LimitOverride
    currency: str


@dataclass(frozen=True, slots=True)
class StoredSetting:
    key: str
    value: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class TransferStats:
    """The transfer service's figures for GetSystemStats."""

    daily_transaction_count: int
    daily_volumes: tuple[CurrencyAmount, ...]
    monthly_transaction_count: int
    monthly_volumes: tuple[CurrencyAmount, ...]
    open_dispute_count: int


@dataclass(frozen=True, slots=True)
class StoredBalance:
    """A wallet's balance as stored (GetBalance)."""

    wallet_id: str
    currency: str
    balance_minor: int


@dataclass(frozen=True, slots=True)
class WalletForLimits:
    """A wallet with what its effective limits are made of, read at one instant: the stored
    values of its tier's default settings (`limits.tier_<tier>.` keys; a missing key takes
    the catalogue default) and its limit overrides."""

    wallet: Wallet
    tier_settings: Mapping[str, str]
    overrides: tuple[LimitOverride, ...]


# ----- repositories ---------------------------------------------------------------------


class WalletRepository(Protocol):
    async def add(self, wallet: Wallet) -> None:
        """Raises WalletIdCollisionError (id taken) or WalletAlreadyExistsError (user has one).
        A failed insert leaves the transaction usable (savepoint)."""

    async def get(self, wallet_id: str, *, for_update: bool = False) -> Wallet | None: ...

    async def get_by_user(self, user_id: str, *, for_update: bool = False) -> Wallet | None: ...

    async def update(self, wallet: Wallet) -> None:
        """Writes status, tier, times and the freezes; never the balance (transfer's)."""

    async def list(
        self, flt: WalletFilter, after: tuple[datetime, str] | None, limit: int, now: datetime
    ) -> Sequence[Wallet]:
        """Newest first, keyset on (created_at, id) strictly after `after`. The status filter
        matches the status as of `now` (freezes past their until-time lifted), the one the
        listed wallets show."""

    async def ids_with_expired_freezes(self, now: datetime, limit: int) -> Sequence[str]: ...

    async def stats(self, now: datetime) -> WalletStats:
        """Wallets by status as of `now` (as `list` filters them) and balances by currency."""


class PinRepository(Protocol):
    async def get(self, wallet_id: str) -> PinRecord | None: ...

    async def create(self, wallet_id: str, pin_hash: str, now: datetime) -> bool:
        """False when the wallet already has a PIN (the primary key decides under races)."""

    async def reserve_attempt(self, wallet_id: str, now: datetime) -> int | None:
        """Counts one attempt atomically, before the PIN is checked, and returns its number
        (1 to 3); None when none is left. One conditional UPDATE: fails closed."""

    async def reset_attempts(self, wallet_id: str) -> None: ...

    async def set_hash(self, wallet_id: str, pin_hash: str, now: datetime) -> None:
        """A new PIN; also clears the failed-attempt counter."""

    async def stale_lock_wallet_ids(self, before: datetime, limit: int) -> Sequence[str]:
        """Wallets with every attempt used, no lockout written, last attempt before `before`."""


class PinResetTokenRepository(Protocol):
    async def add(self, token: PinResetToken) -> None: ...

    async def invalidate_for_wallet(self, wallet_id: str, now: datetime) -> int:
        """Marks every unused token of the wallet used (a new request supersedes them)."""

    async def get(self, token_hash: str, *, for_update: bool = False) -> PinResetToken | None: ...

    async def mark_used(self, token_hash: str, now: datetime) -> None: ...

    async def newest_usable(self, wallet_id: str, now: datetime) -> PinResetToken | None:
        """The wallet's most recently created token that is unused and unexpired at `now`."""

    async def created_since(self, wallet_id: str, since: datetime) -> Sequence[datetime]:
        """When each of the wallet's tokens created after `since` was, used or not (the
        mails sent), oldest first."""


class LimitOverrideRepository(Protocol):
    async def for_wallet(self, wallet_id: str) -> Sequence[LimitOverride]: ...

    async def replace_admin(self, wallet_id: str, overrides: Sequence[LimitOverride]) -> None:
        """PUT semantics: the wallet's admin overrides become exactly `overrides`."""

    async def put_user(self, override: LimitOverride) -> None: ...

    async def delete_user(self, wallet_id: str, action: LimitAction) -> bool: ...

    async def list(
        self, flt: LimitOverrideFilter, after: int | None, limit: int
    ) -> Sequence[ListedOverride]:
        """Most recently created first; keyset on `position` strictly after (below) `after`.
        A row keeps its position while it exists: a change of its values does not move it."""


class SettingRepository(Protocol):
    async def values(self, key_prefix: str) -> dict[str, str]:
        """Current values of the keys starting with `key_prefix`."""

    async def list(
        self, key_prefix: str, after_key: str, limit: int
    ) -> Sequence[StoredSetting]: ...

    async def get(self, key: str, *, for_update: bool = False) -> StoredSetting | None: ...

    async def update(
        self, key: str, old_value: str, new_value: str, actor_id: str, reason: str, now: datetime
    ) -> StoredSetting:
        """Sets the value and appends the change to the history table."""


class WalletUnitOfWork(Protocol):
    """One transaction over the wallet's tables, with audit, idempotency and outbox."""

    @property
    def wallets(self) -> WalletRepository: ...
    @property
    def pins(self) -> PinRepository: ...
    @property
    def reset_tokens(self) -> PinResetTokenRepository: ...
    @property
    def limits(self) -> LimitOverrideRepository: ...
    @property
    def settings(self) -> SettingRepository: ...
    @property
    def idempotency(self) -> IdempotencyRecords: ...
    @property
    def outbox(self) -> Outbox: ...

    async def audit(self, entry: AuditEntry) -> None: ...
    async def commit(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


# ----- the read side --------------------------------------------------------------------


class WalletReads(Protocol):
    """Read-only queries of the caller's own wallet, each one consistent snapshot.

    Nothing read here is locked or written, so an implementation may skip the unit of work
    (no explicit transaction): the SQL one is a single autocommit statement per call.
    """

    async def balance(self, user_id: str) -> StoredBalance | None:
        """None when the user has no wallet."""

    async def wallet_for_limits(self, user_id: str) -> WalletForLimits | None:
        """None when the user has no wallet."""


# ----- other ports ----------------------------------------------------------------------


class PinHasher(Protocol):
    """bcrypt over a peppered PIN, off the event loop (adapters/pin_hasher.py). A money
    movement's check (`movement=True`) runs on threads of its own, never queued behind the
    owner's work (SetPin, ResetPin, VerifyPin, ChangePin)."""

    async def hash(self, pin: str, *, movement: bool = False, refusable: bool = False) -> str:
        """`refusable`: nothing has been written for this hash yet (SetPin, ResetPin), so it
        may be refused PinHashingBusyError when too many such hashes already wait."""
        ...

    async def verify(self, pin: str, pin_hash: str, *, movement: bool = False) -> bool: ...


class PinCheckFastPath(Protocol):
    """The common case of a keyed PIN check in the fewest database round trips
    (adapters/pins_pg.py): an open wallet without freezes, attempts left, no stored reply yet.
    Each method answers None / False, having changed nothing, for anything else, and the
    use case takes the general path (which tells the exact refusal or replays the reply).
    """

    async def reserve(
        self,
        user_id: str,
        key: IdempotencyKey,
        reserve_key: IdempotencyKey,
        now: datetime,
        encode: Callable[[PinReservation], bytes],
    ) -> tuple[PinReservation, str] | None:
        """Counts an attempt and stores `encode(reservation)` under `reserve_key`, in one
        committed transaction; returns the reservation and the PIN hash to check."""
        ...

    async def settle_match(
        self, reservation: PinReservation, key: IdempotencyKey, reply: bytes
    ) -> bool:
        """A right PIN: clears the counter and stores `reply` under `key`, committed,
        unless the PIN changed, a freeze appeared or the key has a reply already."""
        ...

    async def settle_movement_match(
        self,
        reservation: PinReservation,
        key: IdempotencyKey,
        reply: bytes,
        address: MovementAddress,
        now: datetime,
    ) -> tuple[bool, bool]:
        """`settle_match` for a money movement, which also reads, in the same call, whether
        `address` is trusted at `now`: (settled, trusted). Not settled: nothing written, and
        the address not looked at (False)."""
        ...


class SecretSealer(Protocol):
    """Seals a secret that must pass through the outbox (vaultpay_common.sealing)."""

    def seal(self, plaintext: str) -> str: ...


class LimitUsageSource(Protocol):
    """Usage of the current windows, from transfer's GetLimitUsage."""

    async def usage(self, wallet_id: str) -> UsageReading | None:
        """None when usage is unknown (transfer absent, down or too slow); never raises for
        that. An action missing from the answer has used nothing."""


class TransferStatsSource(Protocol):
    async def stats(self, now: datetime) -> TransferStats | None:
        """None when the transfer service cannot answer."""


class KycStatsSource(Protocol):
    async def pending_count(self) -> int | None:
        """KYC submissions waiting for review; None when kyc cannot answer."""


class TrustedIpCounter(Protocol):
    async def count_trusted(self, user_id: str, now: datetime) -> int:
        """How many IP addresses the user trusts now (the IP-trust engineer's repository)."""


class UserRoleSource(Protocol):
    """A user's current role, from auth's GetUserRole (adapters/peers.py), for the rank
    rule of staff actions (domain/staff.py)."""

    async def role_of(self, user_id: str) -> Role:
        """Raises an UnavailableError when auth cannot tell (down, too slow, an answer
        without a role, or the user unknown to it): the staff action then fails closed."""
