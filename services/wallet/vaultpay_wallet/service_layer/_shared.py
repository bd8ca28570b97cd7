"""Steps several use cases share: loading a caller's wallet, persisting the lifting of
expired freezes, the staff rank check, and reply codecs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vaultpay_common.audit import AuditEntry
from vaultpay_common.context import Role
from vaultpay_common.errors import UnavailableError, ValidationError
from vaultpay_common.ranks import acts_on_anyone
from vaultpay_wallet.domain.errors import WalletNotFoundError
from vaultpay_wallet.domain.ids import is_wallet_id, normalize_wallet_id
from vaultpay_wallet.domain.model import FreezeSource, Wallet
from vaultpay_wallet.domain.staff import check_staff_outranks_owner
from vaultpay_wallet.service_layer.ports import UserRoleSource, WalletUnitOfWork

__all__ = [
    "NO_ROLES",
    "check_staff_rank",
    "clean_wallet_id",
    "load_own_wallet",
    "load_wallet",
    "persist_expired_lifts",
]


def clean_wallet_id(raw: str, *, field: str = "wallet_id") -> str:
    wallet_id = normalize_wallet_id(raw)
    if not is_wallet_id(wallet_id):
        raise ValidationError.single(field, "must look like VPY-XXXXXX (letters and digits)")
    return wallet_id


async def load_own_wallet(
    uow: WalletUnitOfWork, user_id: str, *, for_update: bool = False
) -> Wallet:
    wallet = await uow.wallets.get_by_user(user_id, for_update=for_update)
    if wallet is None:
        raise WalletNotFoundError()
    return wallet


async def load_wallet(uow: WalletUnitOfWork, wallet_id: str, *, for_update: bool = False) -> Wallet:
    wallet = await uow.wallets.get(wallet_id, for_update=for_update)
    if wallet is None:
        raise WalletNotFoundError()
    return wallet


async def persist_expired_lifts(uow: WalletUnitOfWork, wallet: Wallet, now: datetime) -> Wallet:
    """Lifts the wallet's expired freezes for good (the wallet row must be locked). A lapsed
    PIN lockout also restarts the attempt counter. Audited as a system action."""
    expired = wallet.expired_freezes(now)
    if not expired:
        return wallet
    current = wallet.current(now)
    await uow.wallets.update(current)
    if any(f.source is FreezeSource.PIN_LOCKOUT for f in expired):
        await uow.pins.reset_attempts(wallet.id)
    await uow.audit(
        AuditEntry(
            "wallet.freeze_expired",
            "wallet",
            wallet.id,
            {"sources": ",".join(sorted(f.source.value for f in expired))},
            actor_id="system",
        )
    )
    return current


class _NoRoles:
    """A `UserRoleSource` that can never tell: a service built without one fails its staff
    changes closed instead of skipping the rank rule."""

    async def role_of(self, user_id: str) -> Role:
        raise UnavailableError("no source of user roles is configured")


NO_ROLES: UserRoleSource = _NoRoles()


async def check_staff_rank(
    uow_factory: Callable[[], WalletUnitOfWork],
    roles: UserRoleSource,
    wallet_id: str,
    actor_id: str,
    actor_role: Role,
) -> Wallet:
    """The rules of a staff change of another user's wallet that need no lock, before the
    change's transaction opens, so a refusal writes nothing and no row stays locked while
    auth is asked: not the actor's own wallet (CANNOT_MODIFY_SELF, decided without auth,
    as auth decides it first too), then the owner ranked below the actor
    (INSUFFICIENT_PERMISSIONS; domain/staff.py). A wallet's owner never changes, so the
    owner checked here is the owner of the row the change locks. A super_admin acts on
    anyone, so auth is not asked for them (`acts_on_anyone`): they can act while auth is
    down or does not know the owner. Raises WALLET_NOT_FOUND, and AUTH_UNAVAILABLE (or
    UNAVAILABLE) when the owner's role is needed and cannot be had. Returns the wallet as
    read (unlocked), for the change's other checks before its transaction."""
    async with uow_factory() as uow:
        wallet = await load_wallet(uow, wallet_id)
    wallet.check_staff_may_change(actor_id)
    if not acts_on_anyone(actor_role):
        check_staff_outranks_owner(actor_role, await roles.role_of(wallet.user_id))
    return wallet
