"""The wallet holder's use cases: open, read, look up, freeze, unfreeze and close.

Reads show expired freezes as lifted without writing (cheap polling); the writes persist the
lifting in the same transaction. Every write runs through `run_once`, so a retried request
replays its first answer. The hot reads (GetBalance, GetMyWallet) go through `WalletReads`,
one statement each, instead of a unit of work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.errors import ValidationError, metadata_time, wallet_frozen_refusal
from vaultpay_common.idempotency import DataclassCodec, IdempotencyKey, run_once, stored_reply
from vaultpay_wallet.domain.currency import DEFAULT_CURRENCY
from vaultpay_wallet.domain.errors import (
    WalletAlreadyExistsError,
    WalletClosedError,
    WalletFrozenError,
    WalletIdCollisionError,
    WalletNotFoundError,
)
from vaultpay_wallet.domain.ids import new_wallet_id
from vaultpay_wallet.domain.model import FREEZE_AUTHORITY, Freeze, FreezeSource, Wallet
from vaultpay_wallet.domain.validation import (
    clean_currency,
    clean_text,
    require_supported_currency,
)
from vaultpay_wallet.service_layer._shared import (
    clean_wallet_id,
    load_own_wallet,
    persist_expired_lifts,
)
from vaultpay_wallet.service_layer.commands import (
    CloseMyWallet,
    CreateWallet,
    FreezeMyWallet,
    UnfreezeMyWallet,
)
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.notify import NotificationKind, notify
from vaultpay_wallet.service_layer.ports import WalletReads, WalletUnitOfWork
from vaultpay_wallet.service_layer.reads import UnitOfWorkReads
from vaultpay_wallet.service_layer.results import Balance, WalletLimits, WalletPublicView

__all__ = ["WalletService"]

log = logging.getLogger(__name__)

_WALLET = DataclassCodec(Wallet)
_ID_ATTEMPTS = 8  # 36^6 ids: eight collisions in a row mean something else is wrong
_SELF = frozenset({FreezeSource.SELF})
# What UnfreezeMyWallet tells an owner whose wallet another freeze holds.
_HELD_MESSAGES = {
    FreezeSource.ADMIN: "the wallet is frozen by staff, which only staff can lift; "
    "nothing was changed",
    FreezeSource.PIN_LOCKOUT: "the wallet is locked after wrong PINs: reset the PIN or wait "
    "for the lockout to end; nothing was changed",
}


class WalletService:
    """`reads` serves GetBalance and GetMyWallet; by default it goes through the unit of
    work, the server passes the single-statement SQL reads. `currencies` are those a wallet
    may be opened in (`WALLET_CURRENCIES`; INR alone by default)."""

    def __init__(
        self,
        uow: Callable[[], WalletUnitOfWork],
        clock: Clock,
        limits: LimitsService,
        *,
        reads: WalletReads | None = None,
        new_id: Callable[[], str] = new_wallet_id,
        currencies: frozenset[str] = frozenset({DEFAULT_CURRENCY}),
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._limits = limits
        self._reads = reads or UnitOfWorkReads(uow)
        self._new_id = new_id
        self._currencies = currencies

    async def _replayed_or(self, key: IdempotencyKey | None, refused: ValidationError) -> Wallet:
        """The stored answer of this very request, or `refused`, its input's refusal: a retry
        of a call that committed gets its answer whatever the input checks now say (a rule
        added since, such as one-line text, 2026-12-05). Only a refused request pays the
        look."""
        async with self._uow() as uow:
            stored = await stored_reply(uow, key, _WALLET)
        if stored is None:
            raise refused
        return stored

    # ----- open -----------------------------------------------------------------------

    async def create_wallet(self, cmd: CreateWallet) -> Wallet:
        """One per user, ever: a user whose wallet is closed cannot open another."""
        try:
            display_name = clean_text(
                cmd.display_name, field="display_name", min_length=1, max_length=100
            )
            currency = require_supported_currency(
                clean_currency(cmd.currency_code), self._currencies
            )
        except ValidationError as refused:
            return await self._replayed_or(cmd.idempotency, refused)
        async with self._uow() as uow:
            return await run_once(
                uow,
                cmd.idempotency,
                _WALLET,
                lambda: self._create(uow, cmd.user_id, display_name, currency),
            )

    async def _create(
        self, uow: WalletUnitOfWork, user_id: str, display_name: str, currency: str
    ) -> Wallet:
        existing = await uow.wallets.get_by_user(user_id)
        if existing is not None:
            if existing.is_closed:
                raise WalletAlreadyExistsError(
                    "this user's wallet is closed; it cannot be reopened"
                )
            raise WalletAlreadyExistsError()
        now = self._clock.now()
        for _ in range(_ID_ATTEMPTS):
            wallet = Wallet.open(self._new_id(), user_id, display_name, currency, now)
            try:
                await uow.wallets.add(wallet)
            except WalletIdCollisionError:
                log.info("wallet id collision, drawing another")
                continue
            await uow.audit(
                AuditEntry("wallet.created", "wallet", wallet.id, {"currency": currency})
            )
            return wallet
        raise RuntimeError("could not draw a free wallet id")

    # ----- read -----------------------------------------------------------------------

    async def get_my_wallet(self, user_id: str) -> WalletLimits:
        found = await self._reads.wallet_for_limits(user_id)
        if found is None:
            raise WalletNotFoundError()
        return await self._limits.view_of(found)

    async def get_balance(self, user_id: str) -> Balance:
        found = await self._reads.balance(user_id)
        if found is None:
            raise WalletNotFoundError()
        return Balance(found.wallet_id, found.currency, found.balance_minor, self._clock.now())

    async def lookup_wallet(self, wallet_id: str) -> WalletPublicView:
        """Any user may look up any wallet: only what a payer needs, never the owner or balance."""
        cleaned = clean_wallet_id(wallet_id)
        async with self._uow() as uow:
            wallet = await uow.wallets.get(cleaned)
        if wallet is None:
            raise WalletNotFoundError()
        return WalletPublicView(wallet.id, wallet.display_name, wallet.currency, wallet.can_receive)

    # ----- freeze ---------------------------------------------------------------------

    async def freeze_my_wallet(self, cmd: FreezeMyWallet) -> Wallet:
        """Adds (or refreshes the note of) the owner's own freeze; other freezes stay."""
        try:
            note = clean_text(cmd.note, field="note", min_length=0, max_length=500)
        except ValidationError as refused:
            return await self._replayed_or(cmd.idempotency, refused)

        async def work(uow: WalletUnitOfWork) -> Wallet:
            now = self._clock.now()
            wallet = await persist_expired_lifts(
                uow, await load_own_wallet(uow, cmd.user_id, for_update=True), now
            )
            earlier = wallet.freeze_by(FreezeSource.SELF)
            frozen_at = now if earlier is None else earlier.frozen_at
            wallet = wallet.frozen(
                Freeze(FreezeSource.SELF, note, frozen_at, None, cmd.user_id), now
            )
            await uow.wallets.update(wallet)
            await uow.audit(AuditEntry("wallet.self_frozen", "wallet", wallet.id))
            return wallet

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _WALLET, lambda: work(uow))

    async def unfreeze_my_wallet(self, cmd: UnfreezeMyWallet) -> Wallet:
        """Lifts only the owner's own freeze, and answers OK only when the wallet is active
        again. While a staff freeze or a PIN lockout is in force, WALLET_FROZEN and nothing
        changes, whether or not a self-freeze sits under it: a 200 still FROZEN read as
        "unfrozen" to clients, and lifting the owner's guard (lost phone) while the wallet is
        held anyway buys the owner nothing. The self-freeze goes with the staff unfreeze, or
        stays, to be lifted here, once the other freeze expires. Not frozen at all: a no-op."""

        async def work(uow: WalletUnitOfWork) -> Wallet:
            now = self._clock.now()
            wallet = await persist_expired_lifts(
                uow, await load_own_wallet(uow, cmd.user_id, for_update=True), now
            )
            if wallet.is_closed:
                raise WalletClosedError()
            held = {f.source for f in wallet.freezes} - {FreezeSource.SELF}
            if held:  # named by the hardest to lift: staff's before a lockout
                raise WalletFrozenError(
                    _HELD_MESSAGES[next(s for s in FREEZE_AUTHORITY if s in held)]
                )
            if wallet.freeze_by(FreezeSource.SELF) is None:
                return wallet
            wallet = wallet.lifted(_SELF, now)
            await uow.wallets.update(wallet)
            await uow.audit(AuditEntry("wallet.self_unfrozen", "wallet", wallet.id))
            await notify(  # on every device: the guard of a lost phone was just lifted
                uow.outbox,
                user_id=wallet.user_id,
                kind=NotificationKind.SECURITY,
                title="Your wallet was unfrozen",
                body="The freeze you set on your wallet was lifted: it can send and withdraw "
                "again. If this was not you, freeze it again and change your password.",
                dedupe_key=f"wallet.self_unfrozen:{wallet.id}:{now.isoformat()}",
            )
            return wallet

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _WALLET, lambda: work(uow))

    # ----- close ----------------------------------------------------------------------

    async def close_my_wallet(self, cmd: CloseMyWallet) -> Wallet:
        """Only at zero balance (WALLET_HAS_BALANCE) and with no withdrawal still being paid
        out (WALLET_HAS_PENDING_WITHDRAWAL: a returned payout credits the wallet; transfer's
        trigger refuses the close, under this wallet's row lock). A staff freeze or a PIN
        lockout blocks closing (WALLET_FROZEN): closing must not be a way around a hold or a
        lockout; the owner's own freeze does not. Terminal; the user can never open another
        wallet."""

        async def work(uow: WalletUnitOfWork) -> Wallet:
            now = self._clock.now()
            wallet = await persist_expired_lifts(
                uow, await load_own_wallet(uow, cmd.user_id, for_update=True), now
            )
            if wallet.is_closed:
                raise WalletClosedError("the wallet is already closed")
            holds = [f for f in wallet.freezes if f.source is not FreezeSource.SELF]
            if holds:
                # Which hold, and until when (staff's first: only staff lift it), as a
                # movement's WALLET_FROZEN says it: the client can tell the user.
                hold = min(holds, key=lambda f: f.source is not FreezeSource.ADMIN)
                until = "" if hold.until is None else metadata_time(hold.until)
                _, metadata = wallet_frozen_refusal(hold.source.value, until)
                raise WalletFrozenError(
                    "a wallet frozen by staff or a PIN lockout cannot be closed",
                    metadata=metadata,
                )
            wallet = wallet.closed(now)
            await uow.wallets.update(wallet)
            await uow.reset_tokens.invalidate_for_wallet(wallet.id, now)
            await uow.audit(AuditEntry("wallet.closed", "wallet", wallet.id))
            await notify(
                uow.outbox,
                user_id=wallet.user_id,
                kind=NotificationKind.WALLET_STATUS,
                title="Your wallet is closed",
                body=f"Wallet {wallet.id} was closed at your request. This cannot be undone.",
                dedupe_key=f"wallet.closed:{wallet.id}",
            )
            return wallet

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _WALLET, lambda: work(uow))
