"""Use cases for the other services of the mesh (service principals only), and the
periodic sweep of expired freezes.

VerifyTransferPin and GetEffectiveLimits delegate to the same rules the holder's RPCs use
(`PinService.verify_transfer_pin`, `LimitsService.effective_limits`); a movement's PIN and IP
checks in one call (`MovementChecks`), SetKycTier and the sweep live here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import DataclassCodec, run_once
from vaultpay_wallet.domain.model import FreezeSource, KycTier, Wallet
from vaultpay_wallet.domain.pin import PIN_LOCKOUT_DURATION
from vaultpay_wallet.domain.validation import clean_text
from vaultpay_wallet.service_layer._shared import (
    load_own_wallet,
    load_wallet,
    persist_expired_lifts,
)
from vaultpay_wallet.service_layer.commands import SetKycTier, VerifyTransferPin
from vaultpay_wallet.service_layer.ip_trust import CheckIpTrust, IpTrustCheck, IpTrustService
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.ports import WalletUnitOfWork

__all__ = ["FreezeSweeper", "KycTierService", "MovementChecked", "MovementChecks"]

log = logging.getLogger(__name__)

_WALLET = DataclassCodec(Wallet)
_SWEEP_BATCH = 200
_TRUSTED = IpTrustCheck(trusted=True, confirmation_sent=False)
# An address not found trusted, and no link mailed: the wallet's tier refuses the movement.
_NOT_MAILED = IpTrustCheck(trusted=False, confirmation_sent=False)


@dataclass(frozen=True, slots=True)
class MovementChecked:
    wallet_id: str
    ip: IpTrustCheck | None  # None: no client address was given
    # The wallet's KYC tier, read only when the PIN's settlement did not find the address
    # trusted (to decide whether to mail); None otherwise: the ledger checks the tier under
    # its lock. With NONE, `ip` is untrusted and unmailed without CheckIpTrust's look (on
    # the general path the address may in fact be trusted: the movement fails on KYC all
    # the same).
    kyc_tier: KycTier | None = None


class MovementChecks:
    """A money movement's two checks in one call of the transfer service: the PIN under its
    lockout rule, then, only once it matched, the client's address, under the movement's
    request_id. A wrong PIN fails as `verify_transfer_pin` fails, and no address is looked at.

    The common case reads the address in the PIN's own settlement (one PostgreSQL call, no
    Redis on the money path: `PinVerified.address_trusted`). An address found untrusted
    there, or a check settled on the general path, is checked as CheckIpTrust checks it (an
    untrusted one mails its confirmation token; a retry mails nothing more), but without the
    Redis cache: a Redis outage does not fail a movement's address open, whether the
    settlement found it untrusted or did not read it (a replayed or joined check, the
    general path).

    Before mailing, the wallet's KYC tier is read: a wallet of tier NONE cannot send or
    withdraw, so confirming the address would only lead to KYC_NOT_VERIFIED (QA: the user
    was mailed a link, answered IP_NOT_TRUSTED, and learned of KYC only after confirming).
    Such a check mails nothing and answers the tier (`MovementChecked.kyc_tier`), which the
    caller refuses as KYC_NOT_VERIFIED before IP_NOT_TRUSTED. The order is PIN, KYC, IP. The
    read is one short query on the refusal path only: a trusted address (the common case)
    is answered as before, and the ledger stays the authority on the tier."""

    def __init__(
        self,
        pins: PinService,
        ip_trust: IpTrustService,
        uow: Callable[[], WalletUnitOfWork],
    ) -> None:
        self._pins = pins
        self._ip_trust = ip_trust
        self._uow = uow

    async def check(self, cmd: VerifyTransferPin, client_ip: str = "") -> MovementChecked:
        if not client_ip:
            verified = await self._pins.verify_transfer_pin(cmd)
            return MovementChecked(verified.wallet_id, None)
        address = self._ip_trust.movement_address(cmd.user_id, client_ip)
        verified = await self._pins.verify_transfer_pin(cmd, address)
        if verified.address_trusted:
            return MovementChecked(verified.wallet_id, _TRUSTED)
        async with self._uow() as uow:
            tier = (await load_wallet(uow, verified.wallet_id)).kyc_tier
        if tier is KycTier.NONE:
            return MovementChecked(verified.wallet_id, _NOT_MAILED, tier)
        assert cmd.idempotency is not None  # required: verify_transfer_pin checked it
        ip = await self._ip_trust.check_ip_trust(
            CheckIpTrust(cmd.idempotency.request_id, cmd.user_id, client_ip),
            movement=True,
        )
        return MovementChecked(verified.wallet_id, ip, tier)


class KycTierService:
    def __init__(self, uow: Callable[[], WalletUnitOfWork], clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def set_kyc_tier(self, cmd: SetKycTier) -> Wallet:
        """Raises the wallet to the given tier, never lowers it; idempotent by the approval's
        event id. Works on a closed wallet too (a late event must not dead-letter).

        kyc's tier events reach wallet in any order (the relay does not keep a user's events
        in order, and a call already in flight can land after a newer one), and no RPC lowers
        a tier (there is no KYC revocation). So a tier below the wallet's is answered with the
        wallet unchanged (not an error: the event is settled, not dead-lettered), audited as
        "wallet.kyc_tier_kept" with the old and the asked tier and the submission id. The same
        or a higher tier is set and audited as "wallet.kyc_tier_set" with the submission id."""
        if cmd.idempotency is None:
            raise ValidationError.single("request_id", "is required")
        if not cmd.user_id:
            raise ValidationError.single("user_id", "is required")
        if cmd.kyc_tier is None:
            raise ValidationError.single("kyc_tier", "is required")
        tier = cmd.kyc_tier
        submission_id = clean_text(
            cmd.submission_id, field="submission_id", min_length=0, max_length=100
        )

        async def work(uow: WalletUnitOfWork) -> Wallet:
            now = self._clock.now()
            wallet = await load_own_wallet(uow, cmd.user_id, for_update=True)
            old = wallet.kyc_tier
            if tier.is_below(old):
                await uow.audit(
                    AuditEntry(
                        "wallet.kyc_tier_kept",
                        "wallet",
                        wallet.id,
                        {
                            "old_tier": old.value,
                            "asked_tier": tier.value,
                            "submission_id": submission_id,
                        },
                    )
                )
                log.info(
                    "kyc tier kept: a lower tier was asked",
                    extra={
                        "wallet_id": wallet.id,
                        "old_tier": old.value,
                        "asked_tier": tier.value,
                        "submission_id": submission_id,
                    },
                )
                return wallet.current(now)
            wallet = wallet.with_tier(tier, now)
            await uow.wallets.update(wallet)
            await uow.audit(
                AuditEntry(
                    "wallet.kyc_tier_set",
                    "wallet",
                    wallet.id,
                    {"old_tier": old.value, "new_tier": tier.value, "submission_id": submission_id},
                )
            )
            return wallet.current(now)

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _WALLET, lambda: work(uow))


async def _restart_stale_counter(uow: WalletUnitOfWork, wallet_id: str, now: datetime) -> bool:
    """Restarts a counter found left at 3 with no lockout, judged again under the wallet's
    row lock, which a PIN check's reservation takes too: one that counted an attempt since
    the look (restarting the counter itself first) keeps it. Audited as a system action;
    whether it restarted."""
    wallet = await uow.wallets.get(wallet_id, for_update=True)
    record = await uow.pins.get(wallet_id)
    if wallet is None or record is None or not record.stale_lock_expired(now):
        return False
    if wallet.freeze_by(FreezeSource.PIN_LOCKOUT) is not None:
        return False  # a lockout ends by itself (the freeze sweep restarts the counter then)
    await uow.pins.reset_attempts(wallet_id)
    await uow.audit(
        AuditEntry(
            "wallet.pin_attempts_restarted",
            "wallet",
            wallet_id,
            {"failed_attempts": str(record.failed_attempts)},
            actor_id="system",
        )
    )
    return True


class FreezeSweeper:
    """Lifts freezes whose until-time has passed (readers already see them lifted), and
    restarts a PIN counter left at 3 by an attempt that died before it could lock out."""

    def __init__(self, uow: Callable[[], WalletUnitOfWork], clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def sweep_expired_freezes(self, now: datetime | None = None) -> int:
        """How many wallets changed. Runs in batches, one transaction each."""
        at = now or self._clock.now()
        total = 0
        while True:
            async with self._uow() as uow:
                ids = await uow.wallets.ids_with_expired_freezes(at, _SWEEP_BATCH)
                for wallet_id in ids:
                    wallet = await uow.wallets.get(wallet_id, for_update=True)
                    if wallet is not None:
                        await persist_expired_lifts(uow, wallet, at)
                await uow.commit()
            async with self._uow() as uow:
                stale = await uow.pins.stale_lock_wallet_ids(
                    at - PIN_LOCKOUT_DURATION, _SWEEP_BATCH
                )
                restarted = [await _restart_stale_counter(uow, w, at) for w in stale]
                await uow.commit()
            total += len(ids) + sum(restarted)
            if len(ids) < _SWEEP_BATCH and len(stale) < _SWEEP_BATCH:
                break
        if total:
            log.info("expired freezes lifted", extra={"wallets": total})
        return total
