"""Limits use cases: effective limits with usage, a user's own lower limits, staff overrides.

Tier defaults are read from `system_settings` on every call, so a setting change applies to
the next request without a restart or a cache to invalidate: on the read path (GetLimits,
GetMyWallet) they come in the same single statement as the wallet and its overrides
(`WalletReads.wallet_for_limits`), so not caching them costs no extra round trip. Usage comes
from the transfer service through `LimitUsageSource`; when it cannot answer, the limits are
still shown, with usage unknown. Usage is never cached: it changes with every money movement,
and a user checking what is left today right after a send must see that send.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.context import Role
from vaultpay_common.errors import AbortedError, FieldViolation, ValidationError
from vaultpay_common.idempotency import DataclassCodec, IdempotencyKey, run_once, stored_reply
from vaultpay_common.input_checks import InputChecks
from vaultpay_common.ranks import acts_on_anyone
from vaultpay_wallet.domain.errors import WalletClosedError, WalletNotFoundError
from vaultpay_wallet.domain.limits import (
    ActionCaps,
    ActionLimitsView,
    LimitAction,
    LimitOverride,
    LimitSource,
    LimitWindow,
    UsageReading,
    base_cap,
    effective_caps,
    limits_view,
    loosens,
    tier_settings_prefix,
    window_order_conflicts,
)
from vaultpay_wallet.domain.model import KycTier, Wallet
from vaultpay_wallet.domain.settings_catalog import MAX_LIMIT_MINOR, SETTINGS
from vaultpay_wallet.domain.staff import check_may_replace_staff_limits
from vaultpay_wallet.domain.staff_reads import StaffViewer, limits_listed
from vaultpay_wallet.domain.validation import clean_text
from vaultpay_wallet.service_layer._shared import (
    NO_ROLES,
    check_staff_rank,
    clean_wallet_id,
    load_own_wallet,
    load_wallet,
)
from vaultpay_wallet.service_layer.commands import (
    AdminSetWalletLimits,
    AmountInput,
    DeleteMyLimit,
    LimitValuesInput,
    SetMyLimit,
)
from vaultpay_wallet.service_layer.notify import NotificationKind, notify
from vaultpay_wallet.service_layer.ports import (
    LimitOverrideFilter,
    LimitUsageSource,
    UserRoleSource,
    WalletForLimits,
    WalletReads,
    WalletUnitOfWork,
)
from vaultpay_wallet.service_layer.reads import UnitOfWorkReads
from vaultpay_wallet.service_layer.results import EffectiveLimits, LimitOverridePage, WalletLimits

__all__ = [
    "MAX_OVERRIDE_ENTRIES",
    "LimitsService",
    "caps_for",
    "check_override_count",
    "defaults_from_stored",
    "parse_limit_action",
    "tier_defaults",
]

log = logging.getLogger(__name__)

_EFFECTIVE = DataclassCodec(EffectiveLimits)
_Work = Callable[[WalletUnitOfWork], Awaitable[EffectiveLimits]]
# An admin override set names each action once at most: the entrypoint refuses a longer one
# before it converts any entry (a 1 MiB request holds ~250,000, which cost wallet's event loop
# 2.3 s to convert and check, stalling every SendMoney's VerifyTransferPin meanwhile).
MAX_OVERRIDE_ENTRIES = len(LimitAction)


def check_override_count(count: int) -> None:
    """AdminSetWalletLimits' `limits` holds at most one entry per action; checked on the
    count alone, before any entry is converted."""
    if count > MAX_OVERRIDE_ENTRIES:
        raise ValidationError.single(
            "limits", f"must hold at most {MAX_OVERRIDE_ENTRIES} entries, one per action"
        )


def parse_limit_action(raw: str, *, field: str = "action") -> LimitAction:
    """The path spelling ("send", "withdraw", "top_up") of an action."""
    try:
        return LimitAction(raw.strip().lower())
    except ValueError:
        raise ValidationError.single(field, "must be one of send, withdraw, top_up") from None


def _amount(
    value: AmountInput | None, currency: str, field: str, violations: list[FieldViolation]
) -> int | None:
    """The amount of a window, in the wallet's currency (its shape: `_window_violations`)."""
    if value is None:
        return None
    if value.currency_code != currency:
        violations.append(
            FieldViolation(f"{field}.currency_code", f"must be the wallet's currency {currency}")
        )
    return value.amount_minor


def _window_violations(value: AmountInput | None, field: str) -> list[FieldViolation]:
    """A window's amount: positive, and at most MAX_LIMIT_MINOR (a tier default's bound: an
    override of 9,223,372,036,854,775,807 is a typo, not a cap)."""
    if value is None:
        return []
    if value.amount_minor <= 0:
        return [FieldViolation(f"{field}.amount_minor", "must be positive")]
    if value.amount_minor > MAX_LIMIT_MINOR:
        return [FieldViolation(f"{field}.amount_minor", f"must be at most {MAX_LIMIT_MINOR}")]
    return []


def _check_override_shapes(
    limits: Sequence[LimitValuesInput] | ValidationError,
) -> Sequence[LimitValuesInput]:
    """Every entry of an admin override set that is bad on its own, in one refusal: its
    action (required, once), its amounts, at least one window, the windows' order. A set the
    entrypoint refused (too many entries, `check_override_count`) is that refusal alone."""
    if isinstance(limits, ValidationError):
        raise limits
    violations: list[FieldViolation] = []
    seen: set[LimitAction] = set()
    for i, entry in enumerate(limits):
        if isinstance(entry.action, ValidationError):
            violations += entry.action.violations
        elif entry.action is None:
            violations.append(FieldViolation(f"limits[{i}].action", "is required"))
        elif entry.action in seen:
            violations.append(FieldViolation(f"limits[{i}].action", "is listed twice"))
        else:
            seen.add(entry.action)
        given = {w: getattr(entry, w.value) for w in LimitWindow}
        if all(v is None for v in given.values()):
            violations.append(FieldViolation(f"limits[{i}]", "sets no window"))
        violations += _windows_violations(given, f"limits[{i}].")
    if violations:
        raise ValidationError(violations)
    return limits


def _windows_violations(
    given: Mapping[LimitWindow, AmountInput | None], prefix: str = ""
) -> list[FieldViolation]:
    """Each window's amount (`_window_violations`), then the order of the windows whose
    amounts are good (a bad one is not compared: one bad window hides no order error
    between the other two)."""
    violations: list[FieldViolation] = []
    good: dict[LimitWindow, int | None] = {}
    for window, value in given.items():
        found = _window_violations(value, f"{prefix}{window.value}")
        violations += found
        good[window] = None if found or value is None else value.amount_minor
    return violations + _order_violations(good, prefix)


def _order_violations(
    values: Mapping[LimitWindow, int | None], prefix: str = ""
) -> list[FieldViolation]:
    """One violation per window set below a narrower window of the same request, on the
    wider window's field: "limits[0].daily: must be at least per_transaction"."""
    violations: list[FieldViolation] = []
    named: set[LimitWindow] = set()
    for narrower, wider in window_order_conflicts(values):
        if wider not in named:
            named.add(wider)
            violations.append(
                FieldViolation(f"{prefix}{wider.value}", f"must be at least {narrower.value}")
            )
    return violations


def defaults_from_stored(stored: Mapping[str, str], tier: KycTier) -> dict[str, int]:
    """The tier's default caps by setting key, from the stored values of its settings. A
    missing row is a cap of 0, as the ledger reads it (transfer's `transfer_caps`, t0020):
    the catalogue's default filled it here, so GetLimits showed, and SetMyLimit allowed up
    to, a cap the ledger refused every movement under (review of 2026-12-05)."""
    prefix = tier_settings_prefix(tier)
    return {key: int(stored.get(key, "0")) for key in SETTINGS if key.startswith(prefix)}


async def tier_defaults(uow: WalletUnitOfWork, tier: KycTier) -> dict[str, int]:
    """The tier's default caps by setting key (a missing row is a cap of 0)."""
    return defaults_from_stored(await uow.settings.values(tier_settings_prefix(tier)), tier)


async def caps_for(uow: WalletUnitOfWork, wallet: Wallet) -> tuple[ActionCaps, ...]:
    defaults = await tier_defaults(uow, wallet.kyc_tier)
    return effective_caps(wallet.kyc_tier, defaults, await uow.limits.for_wallet(wallet.id))


class LimitsService:
    """`reads` serves GetLimits (and GetMyWallet through `view_of`); by default it goes
    through the unit of work, the server passes the single-statement SQL reads. `roles`
    (auth) gives the wallet owner's role for the staff override; without it the override
    fails closed (UNAVAILABLE)."""

    def __init__(
        self,
        uow: Callable[[], WalletUnitOfWork],
        clock: Clock,
        usage: LimitUsageSource,
        *,
        reads: WalletReads | None = None,
        roles: UserRoleSource = NO_ROLES,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._usage = usage
        self._reads = reads or UnitOfWorkReads(uow)
        self._roles = roles

    # ----- reading --------------------------------------------------------------------

    async def _usage_or_unknown(self, wallet_id: str) -> UsageReading | None:
        try:
            return await self._usage.usage(wallet_id)
        except Exception as exc:  # a peer's failure must never fail GetLimits
            log.warning(
                "limit usage unavailable", extra={"error": type(exc).__name__}, exc_info=True
            )
            return None

    async def _with_usage(
        self, wallet: Wallet, caps: tuple[ActionCaps, ...]
    ) -> tuple[tuple[ActionLimitsView, ...], bool]:
        return await self._joined(wallet.id, wallet.currency, caps)

    async def _joined(
        self, wallet_id: str, currency: str, caps: Sequence[ActionCaps]
    ) -> tuple[tuple[ActionLimitsView, ...], bool]:
        """Caps joined with transfer's usage; (views, usage_known). The windows' resets are
        placed by the time transfer read the usage by (the database's clock, by which the
        ledger counts the windows), so a host clock a few seconds off never shows today's
        usage with tomorrow's reset; this host's clock only when usage is unknown."""
        reading = await self._usage_or_unknown(wallet_id)
        if reading is None:
            return limits_view(currency, caps, None, self._clock.now()), False
        at = reading.read_at or self._clock.now()
        return limits_view(currency, caps, reading.actions, at), True

    async def view_for(self, wallet: Wallet) -> tuple[tuple[ActionLimitsView, ...], bool]:
        """Effective limits and usage of a wallet already loaded; (views, usage_known)."""
        async with self._uow() as uow:
            caps = await caps_for(uow, wallet)
        return await self._with_usage(wallet, caps)

    async def view_of(self, found: WalletForLimits) -> WalletLimits:
        """A wallet read with its limit inputs (`WalletReads.wallet_for_limits`), as readers
        see it (expired freezes lifted), with its effective limits and usage."""
        wallet = found.wallet.current(self._clock.now())
        defaults = defaults_from_stored(found.tier_settings, wallet.kyc_tier)
        caps = effective_caps(wallet.kyc_tier, defaults, found.overrides)
        views, known = await self._with_usage(wallet, caps)
        return WalletLimits(wallet, views, known)

    async def get_limits(self, user_id: str) -> WalletLimits:
        found = await self._reads.wallet_for_limits(user_id)
        if found is None:
            raise WalletNotFoundError()
        return await self.view_of(found)

    async def effective_limits(self, wallet_id: str) -> EffectiveLimits:
        """For transfer (GetEffectiveLimits): caps only, usage is transfer's own data."""
        cleaned = clean_wallet_id(wallet_id)
        async with self._uow() as uow:
            wallet = await load_wallet(uow, cleaned)
            caps = await caps_for(uow, wallet)
        return EffectiveLimits(wallet.id, wallet.currency, wallet.kyc_tier, caps)

    # ----- the owner's own limits -----------------------------------------------------

    async def set_my_limit(self, cmd: SetMyLimit) -> ActionLimitsView:
        """Replaces the owner's own caps for one action (unset windows fall through). Only
        lower or equal to the admin override / tier default, and in order (per transaction
        <= daily <= monthly among the windows set); INVALID_ARGUMENT otherwise. A request
        setting no window is INVALID_ARGUMENT too: it used to delete the owner's limits
        silently, which is DeleteMyLimit's job, not a PUT's that forgot its body."""
        action = parse_limit_action(cmd.action)
        if all(getattr(cmd, w.value) is None for w in LimitWindow):
            raise ValidationError(
                [
                    FieldViolation(
                        w.value,
                        "set at least one of per_transaction, daily and monthly "
                        "(DeleteMyLimit goes back to the defaults)",
                    )
                    for w in LimitWindow
                ]
            )

        async def work(uow: WalletUnitOfWork) -> EffectiveLimits:
            wallet = await load_own_wallet(uow, cmd.user_id, for_update=True)
            if wallet.is_closed:
                raise WalletClosedError()
            violations = _windows_violations({w: getattr(cmd, w.value) for w in LimitWindow})
            values = {
                window: _amount(
                    getattr(cmd, window.value), wallet.currency, window.value, violations
                )
                for window in LimitWindow
            }
            if violations:
                raise ValidationError(violations)
            defaults = await tier_defaults(uow, wallet.kyc_tier)
            overrides = await uow.limits.for_wallet(wallet.id)
            admin = next(
                (
                    o
                    for o in overrides
                    if o.source is LimitSource.ADMIN_OVERRIDE and o.action is action
                ),
                None,
            )
            for window, value in values.items():
                ceiling = base_cap(defaults, wallet.kyc_tier, admin, action, window)
                if value is not None and value > ceiling.amount_minor:
                    violations.append(
                        FieldViolation(
                            window.value,
                            f"may only lower the limit; the most allowed is {ceiling.amount_minor}",
                        )
                    )
            if violations:
                raise ValidationError(violations)
            now = self._clock.now()
            mine = LimitOverride(
                wallet.id,
                LimitSource.USER,
                action,
                values[LimitWindow.PER_TRANSACTION],
                values[LimitWindow.DAILY],
                values[LimitWindow.MONTHLY],
                cmd.user_id,
                "",
                now,
            )
            await uow.limits.put_user(mine)
            await uow.audit(
                AuditEntry(
                    "wallet.own_limit_set", "wallet", wallet.id, {"limits": _describe([mine])}
                )
            )
            earlier = next(
                (o for o in overrides if o.source is LimitSource.USER and o.action is action),
                None,
            )
            if earlier is not None and loosens(earlier, mine):
                await _tell_owner_own_limit_loosened(uow, wallet, action, now)
            return await self._effective(uow, wallet)

        return await self._one_action(cmd.idempotency, work, action)

    async def delete_my_limit(self, cmd: DeleteMyLimit) -> ActionLimitsView:
        """Back to the admin override / tier default for one action. Removing a limit of the
        owner's own is audited and notified (SECURITY), as it loosens their guard."""
        action = parse_limit_action(cmd.action)

        async def work(uow: WalletUnitOfWork) -> EffectiveLimits:
            wallet = await load_own_wallet(uow, cmd.user_id, for_update=True)
            if await uow.limits.delete_user(wallet.id, action):
                await uow.audit(
                    AuditEntry(
                        "wallet.own_limit_removed", "wallet", wallet.id, {"action": action.value}
                    )
                )
                await _tell_owner_own_limit_loosened(uow, wallet, action, self._clock.now())
            return await self._effective(uow, wallet)

        return await self._one_action(cmd.idempotency, work, action)

    async def _effective(self, uow: WalletUnitOfWork, wallet: Wallet) -> EffectiveLimits:
        return EffectiveLimits(
            wallet.id, wallet.currency, wallet.kyc_tier, await caps_for(uow, wallet)
        )

    async def _one_action(
        self, key: IdempotencyKey | None, work: _Work, action: LimitAction
    ) -> ActionLimitsView:
        views = await self._run(key, work)
        return next(v for v in views if v.action is action)

    async def _run(self, key: IdempotencyKey | None, work: _Work) -> tuple[ActionLimitsView, ...]:
        """Runs a change once (its reply is the caps), then joins today's usage."""
        async with self._uow() as uow:
            effective = await run_once(uow, key, _EFFECTIVE, lambda: work(uow))
        views, _ = await self._joined(effective.wallet_id, effective.currency, effective.limits)
        return views

    async def _replayed(
        self, key: IdempotencyKey | ValidationError | None
    ) -> tuple[ActionLimitsView, ...] | None:
        """The views of an earlier change with `key` that committed (joined with today's
        usage, as `_run` joins them), or None; looked up in its own short transaction. A
        refused key (a malformed request_id) has none: the input checks name it."""
        if isinstance(key, ValidationError):
            return None
        async with self._uow() as uow:
            effective = await stored_reply(uow, key, _EFFECTIVE)
        if effective is None:
            return None
        views, _ = await self._joined(effective.wallet_id, effective.currency, effective.limits)
        return views

    # ----- staff ----------------------------------------------------------------------

    async def admin_set_wallet_limits(
        self, cmd: AdminSetWalletLimits
    ) -> tuple[ActionLimitsView, ...]:
        """PUT: the request is the wallet's complete set of admin overrides. Never the
        caller's own wallet (CANNOT_MODIFY_SELF), nor one whose owner the caller does not
        outrank (INSUFFICIENT_PERMISSIONS). Every field the request alone shows bad is named
        in one refusal before auth is asked anything (only the currency needs the wallet).
        Audited with the set it replaced as well as the new one: a PUT from a stale view
        removes another admin's clamp, and the audit row says which."""
        # First: a committed change's retry replays, whatever the checks below now say (a
        # bound added since it committed) and before the rank check. A stored answer matches
        # this very request (the key's fingerprint), which was checked when it committed.
        replay = await self._replayed(cmd.idempotency)
        if replay is not None:
            return replay
        with InputChecks() as checks:
            key = checks.take(cmd.idempotency)
            wallet = checks.run(lambda: clean_wallet_id(cmd.wallet_id))
            why = checks.run(
                lambda: clean_text(cmd.reason, field="reason", min_length=1, max_length=500)
            )
            entries = checks.run(lambda: _check_override_shapes(cmd.limits))
        wallet_id, limits, reason = wallet.value, entries.value, why.value
        await check_staff_rank(self._uow, self._roles, wallet_id, cmd.actor_id, cmd.actor_role)
        checked = await self._check_override_setters(wallet_id, cmd.actor_id, cmd.actor_role)

        async def work(uow: WalletUnitOfWork) -> EffectiveLimits:
            wallet = await load_wallet(uow, wallet_id, for_update=True)
            wallet.check_staff_may_change(cmd.actor_id)
            in_force = await uow.limits.for_wallet(wallet.id)
            if checked is not None and _set_by_others(in_force, cmd.actor_id) != checked:
                raise AbortedError("the wallet's admin limits changed while checked; retry")
            violations: list[FieldViolation] = []
            now = self._clock.now()
            overrides = []
            for i, entry in enumerate(limits):
                assert isinstance(entry.action, LimitAction)  # _check_override_shapes
                values = {
                    w: _amount(
                        getattr(entry, w.value),
                        wallet.currency,
                        f"limits[{i}].{w.value}",
                        violations,
                    )
                    for w in LimitWindow
                }
                overrides.append(
                    LimitOverride(
                        wallet.id,
                        LimitSource.ADMIN_OVERRIDE,
                        entry.action,
                        values[LimitWindow.PER_TRANSACTION],
                        values[LimitWindow.DAILY],
                        values[LimitWindow.MONTHLY],
                        cmd.actor_id,
                        reason,
                        now,
                    )
                )
            if violations:
                raise ValidationError(violations)
            await uow.limits.replace_admin(wallet.id, overrides)
            replaced = [o for o in in_force if o.source is LimitSource.ADMIN_OVERRIDE]
            await uow.audit(
                AuditEntry(
                    "wallet.limits_overridden",
                    "wallet",
                    wallet.id,
                    {
                        "reason": reason,
                        "limits": _describe(overrides),
                        "replaced": _describe(replaced, with_setter=True),
                    },
                )
            )
            return await self._effective(uow, wallet)

        return await self._run(key.value, work)

    async def _check_override_setters(
        self, wallet_id: str, actor_id: str, actor_role: Role
    ) -> tuple[LimitOverride, ...] | None:
        """The setters' rank rule (domain/staff.py) for the admin overrides in force that
        others set, asked before the change's transaction as the owner's rank is (no row
        locked while auth answers; AUTH_UNAVAILABLE fails closed). Returns the overrides
        checked, which the change requires unchanged under the wallet's lock (another staff
        member's change that commits meanwhile: ABORTED, retry); None for a super_admin."""
        if acts_on_anyone(actor_role):
            return None
        async with self._uow() as uow:
            held = _set_by_others(await uow.limits.for_wallet(wallet_id), actor_id)
        for setter in sorted({o.set_by for o in held}):
            role = await self._roles.role_of(setter) if setter else None
            check_may_replace_staff_limits(actor_role, role)
        return held

    async def admin_list_limits(
        self,
        flt: LimitOverrideFilter,
        after: int | None,
        limit: int,
        *,
        viewer: StaffViewer,
    ) -> LimitOverridePage:
        """Overrides across wallets, most recently created first (a changed override keeps
        its place, so a listing paged meanwhile shows it once); `limit` already bounded.
        Audited (`limits.listed`) with the read, as wallet's other staff listings are."""
        async with self._uow() as uow:
            rows = await uow.limits.list(flt, after, limit + 1)
            shown = tuple(rows[:limit])
            await uow.audit(
                limits_listed(viewer, [o.override.wallet_id for o in shown], _set_filters(flt))
            )
            await uow.commit()
        return LimitOverridePage(shown, len(rows) > limit)


def _set_filters(flt: LimitOverrideFilter) -> dict[str, str]:
    """The filters of a listing that are set, named as the request names them."""
    filters = {
        "wallet_id": flt.wallet_id,
        "source": flt.source.name if flt.source is not None else "",
        "action": flt.action.value if flt.action is not None else "",
    }
    return {name: value for name, value in filters.items() if value}


def _describe(overrides: Sequence[LimitOverride], *, with_setter: bool = False) -> str:
    """ "send:per_transaction=100,daily=-,monthly=-; ..." for the audit log; `with_setter`
    adds who set each (" by <user id>")."""
    parts = []
    for o in overrides:
        windows = ",".join(
            f"{w.value}={'-' if o.window(w) is None else o.window(w)}" for w in LimitWindow
        )
        setter = f" by {o.set_by or '-'}" if with_setter else ""
        parts.append(f"{o.action.value}:{windows}{setter}")
    return "; ".join(parts) or "(none)"


def _set_by_others(overrides: Sequence[LimitOverride], actor_id: str) -> tuple[LimitOverride, ...]:
    """The admin overrides among `overrides` that someone other than `actor_id` set, in a
    fixed order (compared before and under the wallet's lock)."""
    return tuple(
        sorted(
            (
                o
                for o in overrides
                if o.source is LimitSource.ADMIN_OVERRIDE and o.set_by != actor_id
            ),
            key=lambda o: o.action.value,
        )
    )


async def _tell_owner_own_limit_loosened(
    uow: WalletUnitOfWork, wallet: Wallet, action: LimitAction, now: datetime
) -> None:
    """A SECURITY notification on every device: a limit the owner set as a guard was raised
    or removed (by them, or by whoever holds their session)."""
    await notify(
        uow.outbox,
        user_id=wallet.user_id,
        kind=NotificationKind.SECURITY,
        title="Your own limit was raised",
        body=f"A limit you set on your wallet ({action.name.lower()}) was raised or removed. "
        "If this was not you, set it again and change your password.",
        dedupe_key=f"wallet.own_limit_loosened:{wallet.id}:{action.name}:{now.isoformat()}",
    )
