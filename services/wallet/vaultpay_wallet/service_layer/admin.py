"""Staff use cases on wallets: list, inspect, freeze, unfreeze and system figures.

Object-level rules do not apply (staff see every wallet); the role rules live in the
contract and the interceptor. Staff never change their own wallet here (CANNOT_MODIFY_SELF,
checked on the wallet row locked by the change), nor the wallet of someone they do not outrank
(INSUFFICIENT_PERMISSIONS, the owner's role asked of auth before the change's transaction; see
`check_staff_rank`), nor lift or replace a staff freeze in force that someone ranked above
them set (FREEZE_HELD_BY_HIGHER_RANK, the setter's current role asked of auth the same way;
see `_check_freeze_setter`; a staff freeze that records no setter only a super_admin lifts
or replaces, FREEZE_SETTER_UNKNOWN). A super_admin outranks anyone, so auth is never asked
for them. Every change writes its audit row in its own transaction; a refusal writes nothing;
a retry of a change that committed gets its stored reply before any of these checks runs
(`_stored`). Staff reads (AdminGetWallet, AdminListWallets) are audited too, in the read's
transaction, with the ids shown and the client address (ASVS 5.0 V16, as auth audits staff
reads of users; domain/staff_reads.py): never a balance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.context import Role
from vaultpay_common.errors import AbortedError, ValidationError
from vaultpay_common.idempotency import DataclassCodec, IdempotencyKey, run_once, stored_reply
from vaultpay_common.ranks import acts_on_anyone
from vaultpay_wallet.domain.errors import WalletClosedError
from vaultpay_wallet.domain.model import Freeze, FreezeSource, Wallet, WalletStatus
from vaultpay_wallet.domain.staff import check_may_override_staff_freeze, check_setter_recorded
from vaultpay_wallet.domain.staff_reads import StaffViewer, wallet_viewed, wallets_listed
from vaultpay_wallet.domain.validation import clean_text
from vaultpay_wallet.service_layer._shared import (
    NO_ROLES,
    check_staff_rank,
    clean_wallet_id,
    load_wallet,
    persist_expired_lifts,
)
from vaultpay_wallet.service_layer.commands import AdminFreezeWallet, AdminUnfreezeWallet
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.notify import NotificationKind, notify
from vaultpay_wallet.service_layer.ports import (
    KycStatsSource,
    TransferStatsSource,
    TrustedIpCounter,
    UserRoleSource,
    WalletFilter,
    WalletUnitOfWork,
)
from vaultpay_wallet.service_layer.results import AdminWalletView, SystemStats, WalletPage

__all__ = ["AdminService"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_WALLET = DataclassCodec(Wallet)
_ALL_SOURCES = frozenset(FreezeSource)


def _audited_filters(flt: WalletFilter) -> dict[str, str]:
    """The filters of a listing as the audit log keeps them (the ones set; no secret among
    them: a status, a tier, a user id)."""
    filters: dict[str, str] = {}
    if flt.status is not None:
        filters["status"] = flt.status.value
    if flt.kyc_tier is not None:
        filters["kyc_tier"] = flt.kyc_tier.value
    if flt.user_id:
        filters["user_id"] = flt.user_id
    return filters


def _require_same_staff_freeze(
    locked: Wallet, checked: Freeze | None, actor_id: str, actor_role: Role, now: datetime
) -> None:
    """Under the wallet's lock: the staff freeze the change would lift or replace is still
    the one whose setter was checked (or one has lapsed meanwhile). Another staff member's
    freeze that committed in between is answered ABORTED, nothing written; a retry checks
    its setter."""
    if acts_on_anyone(actor_role):
        return
    held = locked.staff_freeze_set_by_other(actor_id, now)
    if held is not None and held != checked:
        raise AbortedError("the staff freeze changed while this change was checked; retry")


class AdminService:
    def __init__(
        self,
        uow: Callable[[], WalletUnitOfWork],
        clock: Clock,
        limits: LimitsService,
        trusted_ips: TrustedIpCounter,
        transfer_stats: TransferStatsSource,
        kyc_stats: KycStatsSource,
        *,
        roles: UserRoleSource = NO_ROLES,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._limits = limits
        self._trusted_ips = trusted_ips
        self._transfer_stats = transfer_stats
        self._kyc_stats = kyc_stats
        self._roles = roles

    # ----- inspect --------------------------------------------------------------------

    async def list_wallets(
        self,
        flt: WalletFilter,
        after: tuple[datetime, str] | None,
        limit: int,
        *,
        viewer: StaffViewer,
    ) -> WalletPage:
        """Newest first; `after` is the (created_at, id) of the previous page's last wallet;
        `limit` is the already-bounded page size. Audited (`wallets.listed`) with the page's
        wallet ids and the filters, committed with the read."""
        now = self._clock.now()
        async with self._uow() as uow:
            rows = await uow.wallets.list(flt, after, limit + 1, now)
            shown = tuple(w.current(now) for w in rows[:limit])
            await uow.audit(wallets_listed(viewer, shown, _audited_filters(flt)))
            await uow.commit()
        return WalletPage(shown, len(rows) > limit)

    async def get_wallet(self, wallet_id: str, *, viewer: StaffViewer) -> AdminWalletView:
        """The staff view of one wallet. Audited (`wallet.viewed`), committed with the read;
        an unknown wallet writes nothing."""
        cleaned = clean_wallet_id(wallet_id)
        now = self._clock.now()
        async with self._uow() as uow:
            stored = await load_wallet(uow, cleaned)
            pin = await uow.pins.get(stored.id)
            await uow.audit(wallet_viewed(viewer, stored))
            await uow.commit()
        wallet = stored.current(now)
        limits, known = await self._limits.view_for(wallet)
        try:
            trusted: int | None = await self._trusted_ips.count_trusted(wallet.user_id, now)
        except Exception as exc:  # an inspection page must not fail for a side figure
            log.warning(
                "trusted IP count unavailable",
                extra={"error": type(exc).__name__},
                exc_info=True,
            )
            trusted = None
        # A lapsed lockout shows its counter cleared, as the next attempt will find it.
        lapsed = (
            stored.freeze_by(FreezeSource.PIN_LOCKOUT) is not None
            and wallet.freeze_by(FreezeSource.PIN_LOCKOUT) is None
        )
        failed = 0 if pin is None or lapsed or pin.stale_lock_expired(now) else pin.failed_attempts
        return AdminWalletView(
            wallet=wallet,
            limits=limits,
            usage_known=known,
            failed_pin_attempts=failed,
            pin_updated_at=None if pin is None else pin.updated_at,
            trusted_ip_count=trusted,
        )

    # ----- freeze ---------------------------------------------------------------------

    async def freeze_wallet(self, cmd: AdminFreezeWallet) -> Wallet:
        """Adds (or replaces) the staff freeze, with a reason and an optional end in the
        future; never shortens the staff freeze in force (WALLET_ALREADY_FROZEN, see
        `Wallet.frozen`), nor replaces one set by a higher rank (FREEZE_HELD_BY_HIGHER_RANK:
        the replacement would then be the actor's to lift). Another staff member's freeze
        that commits while this one is checked answers ABORTED (`_require_same_staff_freeze`).
        Coexists with a self-freeze or lockout; only staff can lift it. Audited, and the owner
        is notified (without the staff note)."""
        # The stored answer first: a retry of a change that committed gets it, whatever the
        # checks below now say (a rule added since, such as one-line reasons, 2026-12-05).
        replay = await self._stored(cmd.idempotency)
        if replay is not None:
            return replay
        wallet_id = clean_wallet_id(cmd.wallet_id)
        reason = clean_text(cmd.reason, field="reason", min_length=1, max_length=500)
        if cmd.until is not None and cmd.until <= self._clock.now():
            raise ValidationError.single("until_time", "must be in the future")
        read = await check_staff_rank(
            self._uow, self._roles, wallet_id, cmd.actor_id, cmd.actor_role
        )
        checked = await self._check_freeze_setter(read, cmd.actor_id, cmd.actor_role)

        async def work(uow: WalletUnitOfWork) -> Wallet:
            now = self._clock.now()
            loaded = await load_wallet(uow, wallet_id, for_update=True)
            loaded.check_staff_may_change(cmd.actor_id)
            _require_same_staff_freeze(loaded, checked, cmd.actor_id, cmd.actor_role, now)
            wallet = await persist_expired_lifts(uow, loaded, now)
            wallet = wallet.frozen(
                Freeze(FreezeSource.ADMIN, reason, now, cmd.until, cmd.actor_id), now
            )
            await uow.wallets.update(wallet)
            details = {"reason": reason}
            if cmd.until is not None:
                details["until"] = cmd.until.isoformat()
            await uow.audit(AuditEntry("wallet.frozen", "wallet", wallet.id, details))
            await notify(
                uow.outbox,
                user_id=wallet.user_id,
                kind=NotificationKind.WALLET_STATUS,
                title="Your wallet was frozen",
                body="Our team froze your wallet: it can still receive money but cannot send "
                "or withdraw. Contact support for details.",
                dedupe_key=f"wallet.frozen:{wallet.id}:{now.isoformat()}",
            )
            return wallet

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _WALLET, lambda: work(uow))

    async def unfreeze_wallet(self, cmd: AdminUnfreezeWallet) -> Wallet:
        """Lifts every freeze (staff, self, PIN lockout) and clears the PIN counter. A staff
        freeze in force set by someone ranked above the actor refuses the whole call
        (FREEZE_HELD_BY_HIGHER_RANK, nothing lifted); a lockout or the owner's own freeze
        any staff member may lift. A closed wallet answers WALLET_CLOSED. Audited (also when
        there was nothing to lift)."""
        # The stored answer first: a retry of a change that committed gets it, whatever the
        # checks below now say (a rule added since, such as one-line reasons, 2026-12-05).
        replay = await self._stored(cmd.idempotency)
        if replay is not None:
            return replay
        wallet_id = clean_wallet_id(cmd.wallet_id)
        reason = clean_text(cmd.reason, field="reason", min_length=1, max_length=500)
        read = await check_staff_rank(
            self._uow, self._roles, wallet_id, cmd.actor_id, cmd.actor_role
        )
        checked = await self._check_freeze_setter(read, cmd.actor_id, cmd.actor_role)

        async def work(uow: WalletUnitOfWork) -> Wallet:
            now = self._clock.now()
            wallet = await load_wallet(uow, wallet_id, for_update=True)
            wallet.check_staff_may_change(cmd.actor_id)
            if wallet.is_closed:
                raise WalletClosedError("a closed wallet stays closed")
            _require_same_staff_freeze(wallet, checked, cmd.actor_id, cmd.actor_role, now)
            lifted = sorted(f.source.value for f in wallet.freezes)
            wallet = wallet.lifted(_ALL_SOURCES, now)
            await uow.wallets.update(wallet)
            if await uow.pins.get(wallet.id) is not None:
                await uow.pins.reset_attempts(wallet.id)
            await uow.audit(
                AuditEntry(
                    "wallet.unfrozen",
                    "wallet",
                    wallet.id,
                    {"reason": reason, "lifted": ",".join(lifted)},
                )
            )
            if lifted:
                await notify(
                    uow.outbox,
                    user_id=wallet.user_id,
                    kind=NotificationKind.WALLET_STATUS,
                    title="Your wallet is active again",
                    body="Our team lifted the freeze on your wallet.",
                    dedupe_key=f"wallet.unfrozen:{wallet.id}:{now.isoformat()}",
                )
            return wallet

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _WALLET, lambda: work(uow))

    async def _stored(self, key: IdempotencyKey | None) -> Wallet | None:
        """The reply of an earlier call with `key` that committed, looked up before the checks
        that precede the change's transaction (the owner's and the setter's rank, the end in
        the future): a retry gets the first call's reply whatever changed since (a colleague
        froze the wallet again, someone's role changed, auth is down, the end has passed),
        never a refusal the first call did not get. Its own short transaction, ended before
        auth is asked."""
        async with self._uow() as uow:
            return await stored_reply(uow, key, _WALLET)

    async def _check_freeze_setter(
        self, wallet: Wallet, actor_id: str, actor_role: Role
    ) -> Freeze | None:
        """The setter's rank rule (domain/staff.py) for the staff freeze in force that the
        change would lift or replace, asked before the change's transaction as the owner's
        rank is (no row stays locked while auth answers; AUTH_UNAVAILABLE fails closed). A
        freeze that records no setter is refused below super_admin without asking auth
        (FREEZE_SETTER_UNKNOWN). Returns the freeze checked, which the change requires
        unchanged under its lock."""
        if acts_on_anyone(actor_role):
            return None  # outranked by nobody: no need to ask
        held = wallet.staff_freeze_set_by_other(actor_id, self._clock.now())
        if held is not None:
            check_setter_recorded(held, actor_role)  # auth is never asked about no one
            check_may_override_staff_freeze(actor_role, await self._roles.role_of(held.set_by))
        return held

    # ----- figures --------------------------------------------------------------------

    async def system_stats(self) -> SystemStats:
        """Wallet figures from the wallet table; transfer and KYC figures from their
        services, None when a peer cannot answer (never a reason to fail)."""
        now = self._clock.now()
        async with self._uow() as uow:
            stats = await uow.wallets.stats(now)
        transfer, pending = await asyncio.gather(
            self._peer(self._transfer_stats.stats(now)), self._peer(self._kyc_stats.pending_count())
        )
        counts = stats.counts
        return SystemStats(
            wallet_count=sum(counts.values()),
            active_wallet_count=counts.get(WalletStatus.ACTIVE, 0),
            frozen_wallet_count=counts.get(WalletStatus.FROZEN, 0),
            closed_wallet_count=counts.get(WalletStatus.CLOSED, 0),
            total_balances=stats.total_balances,
            transfer=transfer,
            pending_kyc_count=pending,
            computed_at=now,
        )

    @staticmethod
    async def _peer(call: Awaitable[T | None]) -> T | None:
        try:
            return await call
        except Exception as exc:
            log.warning(
                "peer figures unavailable", extra={"error": type(exc).__name__}, exc_info=True
            )
            return None
