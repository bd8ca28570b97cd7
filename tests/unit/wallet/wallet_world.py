"""A wallet service wired to fakes, shared by the wallet unit tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from tests.fakes.wallet import (
    FakeKycStats,
    FakePinHasher,
    FakeTransferStats,
    FakeTrustedIps,
    FakeUsage,
    FakeUserRoles,
    FakeWalletUnitOfWork,
    FixedClock,
    ReversibleSealer,
)
from vaultpay_common.context import Role
from vaultpay_common.idempotency import IdempotencyKey, request_fingerprint
from vaultpay_wallet.domain.model import Wallet
from vaultpay_wallet.domain.staff_reads import StaffViewer
from vaultpay_wallet.service_layer.admin import AdminService
from vaultpay_wallet.service_layer.commands import CreateWallet, SetPin
from vaultpay_wallet.service_layer.internal import FreezeSweeper, KycTierService
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.settings import SettingsService
from vaultpay_wallet.service_layer.wallets import WalletService

__all__ = ["STAFF", "World", "key"]

# The staff member reading wallets in tests that are not about who reads them.
STAFF = StaffViewer("staff-reader", Role.ADMIN, "198.51.100.9")


def key(
    caller: str = "alice", method: str = "M", body: bytes = b"", request_id: str = ""
) -> IdempotencyKey:
    return IdempotencyKey(
        caller, method, request_id or str(uuid.uuid4()), request_fingerprint(body)
    )


@dataclass
class World:
    uow: FakeWalletUnitOfWork = field(default_factory=FakeWalletUnitOfWork)
    clock: FixedClock = field(default_factory=FixedClock)
    hasher: FakePinHasher = field(default_factory=FakePinHasher)
    sealer: ReversibleSealer = field(default_factory=ReversibleSealer)
    usage: FakeUsage = field(default_factory=FakeUsage)
    trusted_ips: FakeTrustedIps = field(default_factory=FakeTrustedIps)
    transfer_stats: FakeTransferStats = field(default_factory=FakeTransferStats)
    kyc_stats: FakeKycStats = field(default_factory=FakeKycStats)
    roles: FakeUserRoles = field(default_factory=FakeUserRoles)

    def __post_init__(self) -> None:
        factory = lambda: self.uow  # noqa: E731
        self.limits = LimitsService(factory, self.clock, self.usage, roles=self.roles)
        self.wallets = WalletService(factory, self.clock, self.limits)
        self.pins = PinService(factory, self.clock, self.hasher, self.sealer)
        self.admin = AdminService(
            factory,
            self.clock,
            self.limits,
            self.trusted_ips,
            self.transfer_stats,
            self.kyc_stats,
            roles=self.roles,
        )
        self.settings = SettingsService(factory, self.clock)
        self.kyc = KycTierService(factory, self.clock)
        self.sweeper = FreezeSweeper(factory, self.clock)

    async def open_wallet(self, user_id: str = "alice", currency: str = "") -> Wallet:
        return await self.wallets.create_wallet(
            CreateWallet(user_id, "Alice A", currency, key(user_id))
        )

    async def open_wallet_with_pin(self, user_id: str = "alice", pin: str = "2468") -> Wallet:
        wallet = await self.open_wallet(user_id)
        await self.pins.set_pin(SetPin(user_id, pin, pin, key(user_id)))
        return wallet

    def snapshot(self) -> object:
        """Everything a command could write, to prove a refused one wrote nothing."""
        u = self.uow
        return (
            dict(u.wallets.wallets),
            dict(u.pins.records),
            dict(u.reset_tokens.tokens),
            dict(u.limits.rows),
            dict(u.settings.values_by_key),
            dict(u.idempotency.records),
            dict(u.outbox.events),
            list(u.audit_entries),
        )
