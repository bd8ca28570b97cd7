"""`WalletReads` over a unit of work: the read side for the fakes, and the reference that the
single-statement SQL reads (`adapters/reads_pg.py`) must agree with.

The server does not use this: a unit of work costs a transaction (BEGIN, one SELECT per
repository call, ROLLBACK) for what one autocommit statement answers. The use cases take any
`WalletReads`, so unit tests run on the fakes through this class.
"""

from __future__ import annotations

from collections.abc import Callable

from vaultpay_wallet.domain.limits import tier_settings_prefix
from vaultpay_wallet.service_layer.ports import (
    StoredBalance,
    WalletForLimits,
    WalletUnitOfWork,
)

__all__ = ["UnitOfWorkReads"]


class UnitOfWorkReads:
    def __init__(self, uow: Callable[[], WalletUnitOfWork]) -> None:
        self._uow = uow

    async def balance(self, user_id: str) -> StoredBalance | None:
        async with self._uow() as uow:
            wallet = await uow.wallets.get_by_user(user_id)
        if wallet is None:
            return None
        return StoredBalance(wallet.id, wallet.currency, wallet.balance_minor)

    async def wallet_for_limits(self, user_id: str) -> WalletForLimits | None:
        async with self._uow() as uow:
            wallet = await uow.wallets.get_by_user(user_id)
            if wallet is None:
                return None
            stored = await uow.settings.values(tier_settings_prefix(wallet.kyc_tier))
            overrides = tuple(await uow.limits.for_wallet(wallet.id))
        return WalletForLimits(wallet, stored, overrides)
