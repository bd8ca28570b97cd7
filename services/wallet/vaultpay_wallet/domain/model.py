"""Wallets and their freezes: the life-cycle rules, as pure values.

A wallet is ACTIVE, FROZEN or CLOSED. Freezes come from three sources that coexist, one
per source (SELF, ADMIN, PIN_LOCKOUT); the wallet is FROZEN while any of them is active,
and who may lift a freeze depends on its source. Expired freezes (until-time passed) no
longer count; `Wallet.current(now)` is the wallet as a reader should see it.

Values are frozen dataclasses: a rule returns a new `Wallet`, the use case persists it, and
the same objects serve as idempotent replies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from vaultpay_wallet.domain.errors import (
    StaffSelfActionError,
    WalletAlreadyFrozenError,
    WalletClosedError,
    WalletHasBalanceError,
)

__all__ = [
    "FREEZE_AUTHORITY",
    "Freeze",
    "FreezeSource",
    "KycTier",
    "Wallet",
    "WalletStatus",
]


class WalletStatus(Enum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


class FreezeSource(Enum):
    """Who froze a wallet; decides who may lift it."""

    SELF = "SELF"
    ADMIN = "ADMIN"
    PIN_LOCKOUT = "PIN_LOCKOUT"


# The freeze a wallet shows when several coexist: the one that is hardest to lift.
FREEZE_AUTHORITY: tuple[FreezeSource, ...] = (
    FreezeSource.ADMIN,
    FreezeSource.PIN_LOCKOUT,
    FreezeSource.SELF,
)


class KycTier(Enum):
    """In ascending order: NONE < BASIC < FULL (kyc_tier.proto)."""

    NONE = "NONE"
    BASIC = "BASIC"
    FULL = "FULL"

    def is_below(self, other: KycTier) -> bool:
        order = list(KycTier)
        return order.index(self) < order.index(other)


@dataclass(frozen=True, slots=True)
class Freeze:
    source: FreezeSource
    note: str
    frozen_at: datetime
    until: datetime | None = None
    set_by: str = ""

    def is_active(self, now: datetime) -> bool:
        return self.until is None or now < self.until

    def lasts_at_least_as_long_as(self, other: Freeze) -> bool:
        """Whether this freeze ends no earlier than `other` (no end outlasts every end)."""
        if self.until is None:
            return True
        return other.until is not None and self.until >= other.until


@dataclass(frozen=True, slots=True)
class Wallet:
    id: str
    user_id: str
    display_name: str
    currency: str
    balance_minor: int
    status: WalletStatus
    kyc_tier: KycTier
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    freezes: tuple[Freeze, ...] = ()
    pin_set: bool = False

    @classmethod
    def open(
        cls, wallet_id: str, user_id: str, display_name: str, currency: str, now: datetime
    ) -> Wallet:
        return cls(
            id=wallet_id,
            user_id=user_id,
            display_name=display_name,
            currency=currency,
            balance_minor=0,
            status=WalletStatus.ACTIVE,
            kyc_tier=KycTier.NONE,
            created_at=now,
            updated_at=now,
        )

    # ----- reading -------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self.status is WalletStatus.CLOSED

    @property
    def can_receive(self) -> bool:
        return not self.is_closed

    def freeze_by(self, source: FreezeSource) -> Freeze | None:
        return next((f for f in self.freezes if f.source is source), None)

    def frozen_besides_lockout(self, now: datetime) -> bool:
        """Whether a freeze other than a PIN lockout is in force (self or admin; or FROZEN with
        no freeze to explain it, as the ledger's `transfer_is_frozen` counts it): such a wallet
        cannot send or withdraw whatever PIN is given. A lockout alone is not this: it is the
        PIN rule's own refusal (PIN_LOCKED), lifted by a PIN reset."""
        if self.is_closed:
            return False
        active = [f for f in self.freezes if f.is_active(now)]
        if any(f.source is not FreezeSource.PIN_LOCKOUT for f in active):
            return True
        return self.status is WalletStatus.FROZEN and not self.freezes

    def movement_hold(self, now: datetime) -> Freeze | None:
        """The freeze in force, other than a PIN lockout, that is hardest to lift (staff's
        before the owner's): what a refused movement tells its caller. None when no such
        freeze is in force, also for a wallet FROZEN with no freeze to explain it."""
        for source in FREEZE_AUTHORITY:
            found = self.freeze_by(source)
            if source is not FreezeSource.PIN_LOCKOUT and found and found.is_active(now):
                return found
        return None

    def staff_freeze_set_by_other(self, actor_id: str, now: datetime) -> Freeze | None:
        """The staff freeze in force, unless `actor_id` set it: what a staff change by
        `actor_id` would lift or replace, subject to the setter's rank (domain/staff.py)."""
        held = self.freeze_by(FreezeSource.ADMIN)
        if held is None or not held.is_active(now) or held.set_by == actor_id:
            return None
        return held

    def expired_freezes(self, now: datetime) -> tuple[Freeze, ...]:
        return tuple(f for f in self.freezes if not f.is_active(now))

    def current(self, now: datetime) -> Wallet:
        """The wallet with expired freezes lifted (what readers see before the sweep runs).

        A lapsed PIN lockout also means the attempt counter starts again; the PIN rules
        handle that in the same transaction as they persist this.
        """
        if not self.expired_freezes(now):
            return self
        return self._with_freezes(tuple(f for f in self.freezes if f.is_active(now)), now)

    @property
    def displayed_freeze(self) -> Freeze | None:
        """The one freeze the Wallet message shows: the most authoritative one."""
        for source in FREEZE_AUTHORITY:
            found = self.freeze_by(source)
            if found is not None:
                return found
        return None

    # ----- rules ---------------------------------------------------------------------------

    def check_staff_may_change(self, actor_id: str) -> None:
        """Separation of duties: staff never change their own wallet with staff powers (a
        freeze put on them, their limits); another staff member must. Checked on the wallet
        row loaded under its lock, so the owner seen is the owner changed."""
        if actor_id == self.user_id:
            raise StaffSelfActionError()

    def _with_freezes(self, freezes: tuple[Freeze, ...], now: datetime) -> Wallet:
        if self.is_closed:
            status = WalletStatus.CLOSED
        else:
            status = WalletStatus.FROZEN if freezes else WalletStatus.ACTIVE
        ordered = tuple(sorted(freezes, key=lambda f: FREEZE_AUTHORITY.index(f.source)))
        changed = ordered != self.freezes or status is not self.status
        return replace(
            self,
            freezes=ordered,
            status=status,
            updated_at=now if changed else self.updated_at,
        )

    def _require_open(self) -> None:
        if self.is_closed:
            raise WalletClosedError()

    def frozen(self, freeze: Freeze, now: datetime) -> Wallet:
        """Adds or replaces the freeze of `freeze.source` (one per source).

        A staff freeze never shortens the staff freeze in force: a hold with no end (or a
        later one), put there for fraud, say, is not undone by another staff member's
        shorter freeze; that answers WALLET_ALREADY_FROZEN with the end in force (lift the
        freeze first to shorten it). One that lasts at least as long replaces it."""
        self._require_open()
        in_force = self.freeze_by(freeze.source)
        if (
            freeze.source is FreezeSource.ADMIN
            and in_force is not None
            and in_force.is_active(now)
            and not freeze.lasts_at_least_as_long_as(in_force)
        ):
            raise WalletAlreadyFrozenError(in_force.until)
        others = tuple(f for f in self.freezes if f.source is not freeze.source)
        return self._with_freezes((*others, freeze), now)

    def lifted(self, sources: frozenset[FreezeSource], now: datetime) -> Wallet:
        """Lifts the freezes of the given sources (absent ones are ignored)."""
        self._require_open()
        return self._with_freezes(tuple(f for f in self.freezes if f.source not in sources), now)

    def closed(self, now: datetime) -> Wallet:
        """CLOSED is terminal and needs a zero balance; any remaining freeze goes with it.

        The caller decides which freezes block closing (see `WalletService.close_my_wallet`).
        """
        self._require_open()
        if self.balance_minor != 0:
            raise WalletHasBalanceError()
        return replace(self, status=WalletStatus.CLOSED, freezes=(), closed_at=now, updated_at=now)

    def with_tier(self, tier: KycTier, now: datetime) -> Wallet:
        if tier is self.kyc_tier:
            return self
        return replace(self, kyc_tier=tier, updated_at=now)
