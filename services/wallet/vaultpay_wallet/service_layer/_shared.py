"""Steps several use cases share: loading a caller's wallet, persisting the lifting of
expired freezes, and reply codecs."""

from __future__ import annotations

from datetime import datetime

from vaultpay_common.audit import AuditEntry
from vaultpay_common.errors import ValidationError
from vaultpay_wallet.domain.errors import WalletNotFoundError
from vaultpay_wallet.domain.ids import is_wallet_id, normalize_wallet_id
from vaultpay_wallet.domain.model import FreezeSource, Wallet
from vaultpay_wallet.service_layer.ports import WalletUnitOfWork

__all__ = [
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
