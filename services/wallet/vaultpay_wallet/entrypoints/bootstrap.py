"""Composition root of the wallet service, shared by the server and the integration tests.

Builds everything inside the event loop: the runtime (engine, Redis, page tokens), peers,
adapters, use cases, periodic jobs (audit sealer, freeze sweep, outbox relay, the cleanup of
idempotency records, outbox events, expired rows and old notifications), the notification
listener, and the gRPC host with the three servicers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select

from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_common.cleanup import shared_tables_cleanup
from vaultpay_common.clock import Clock, SystemClock
from vaultpay_common.config import SmtpSettings
from vaultpay_common.grpc.server import GrpcServiceHost
from vaultpay_common.mail import SmtpMailer
from vaultpay_common.outbox import OutboxRelay
from vaultpay_common.runtime import ServiceRuntime
from vaultpay_common.sealing import AesGcmSealer
from vaultpay_wallet.adapters.deliveries import wallet_outbox_handlers
from vaultpay_wallet.adapters.ip_trust_redis import RedisTrustedIpCache
from vaultpay_wallet.adapters.ip_trust_sql import trusted_ips
from vaultpay_wallet.adapters.notification_hub import NotificationHub, PgNotificationListener
from vaultpay_wallet.adapters.notification_retention_sql import purge_old_notifications
from vaultpay_wallet.adapters.peers import GrpcKycStats, GrpcTransferFigures, GrpcUserContacts
from vaultpay_wallet.adapters.pin_hasher import BcryptPinHasher
from vaultpay_wallet.adapters.pins_pg import PgPinCheckFastPath
from vaultpay_wallet.adapters.reads_pg import PgWalletReads
from vaultpay_wallet.adapters.retention_sql import purge_expired_wallet_rows
from vaultpay_wallet.adapters.unit_of_work import OUTBOX_PRODUCER, SqlWalletUnitOfWork
from vaultpay_wallet.entrypoints.servicers import WalletServicer
from vaultpay_wallet.entrypoints.servicers_staff import (
    WalletAdminServicer,
    WalletInternalServicer,
)
from vaultpay_wallet.service_layer.admin import AdminService
from vaultpay_wallet.service_layer.audit_log import AuditEvents
from vaultpay_wallet.service_layer.internal import FreezeSweeper, KycTierService, MovementChecks
from vaultpay_wallet.service_layer.ip_trust import IpTrustService
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.notifications import NotificationService
from vaultpay_wallet.service_layer.pins import PinService
from vaultpay_wallet.service_layer.settings import SettingsService
from vaultpay_wallet.service_layer.wallets import WalletService
from vaultpay_wallet.settings import WalletSettings

__all__ = ["IDEMPOTENCY_SERVICE", "SERVICES", "build_host"]

# Whose idempotency records the cleanup purges: the service its methods name
# ("/vaultpay.wallet.v1.…", vaultpay_common.idempotency.idempotency_service).
IDEMPOTENCY_SERVICE = "wallet"
SERVICES = [
    wallet_pb2.DESCRIPTOR.services_by_name[name]
    for name in ("WalletService", "WalletAdminService", "WalletInternalService")
]


class _TrustedIpCount:
    """AdminGetWallet's trusted-IP count, straight from the table."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self._engine = runtime.engine

    async def count_trusted(self, user_id: str, now: datetime) -> int:
        query = select(func.count()).where(
            trusted_ips.c.user_id == user_id, trusted_ips.c.expires_at > now
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


async def build_host(
    settings: WalletSettings, *, clock: Clock | None = None, smtp: SmtpSettings | None = None
) -> GrpcServiceHost:
    clock = clock or SystemClock()
    runtime = ServiceRuntime("wallet", settings)
    peers = runtime.peer_auth()
    timeout = settings.peer_timeout_seconds
    identity = peers.identity
    transfer = GrpcTransferFigures(
        runtime.channel(settings.transfer_address), identity.for_peer("transfer"), timeout
    )
    kyc = GrpcKycStats(runtime.channel(settings.kyc_address), identity.for_peer("kyc"), timeout)
    contacts = GrpcUserContacts(
        runtime.channel(settings.auth_address), identity.for_peer("auth"), timeout
    )

    relay: OutboxRelay | None = None

    def uow() -> SqlWalletUnitOfWork:
        return SqlWalletUnitOfWork(runtime.engine, on_commit=_wake_relay)

    def _wake_relay() -> None:
        if relay is not None:
            relay.wake()

    sealer = AesGcmSealer(settings.derived_key("outbox-secrets"), purpose="mail")
    hasher = BcryptPinHasher(settings.derived_key("pin-pepper"), settings.pin_bcrypt_rounds)
    hub = NotificationHub(
        max_streams_per_user=settings.max_watch_streams_per_user,
        max_streams=settings.max_watch_streams,
    )
    listener = PgNotificationListener(settings.database_url.get_secret_value(), hub)

    reads = PgWalletReads(runtime.engine)  # the hot reads: one statement, no transaction
    limits = LimitsService(uow, clock, transfer, reads=reads, roles=contacts)
    wallets = WalletService(uow, clock, limits, reads=reads, currencies=settings.currencies)
    pins = PinService(uow, clock, hasher, sealer, PgPinCheckFastPath(runtime.engine))
    ip_trust = IpTrustService(
        uow,
        RedisTrustedIpCache(runtime.redis, clock),
        sealer,
        clock,
        ip_hash_key=settings.derived_key("ip-hash"),
    )
    notifications = NotificationService(uow, hub, clock)
    admin = AdminService(
        uow, clock, limits, _TrustedIpCount(runtime), transfer, kyc, roles=contacts
    )
    settings_service = SettingsService(uow, clock)
    tiers = KycTierService(uow, clock)
    sweeper = FreezeSweeper(uow, clock)

    # The mailer has a thread for each delivery the relay runs at once: no mail waits for one.
    deliveries_at_once = 8
    relay = OutboxRelay(
        runtime.engine,
        OUTBOX_PRODUCER,
        wallet_outbox_handlers(
            contacts,
            SmtpMailer(smtp or SmtpSettings(), threads=deliveries_at_once),
            sealer,
            notifications,
            reset_codes=pins,  # a superseded or used PIN reset code is not mailed
            ip_codes=ip_trust,  # nor a used IP confirmation code, or one trusted meanwhile
            clock=clock,
        ),
        poll_interval=settings.outbox_poll_seconds,
        max_concurrent_deliveries=deliveries_at_once,
    )
    expired_margin = timedelta(hours=settings.expired_row_retention_hours)

    async def expired_wallet_rows() -> int:
        deleted = await purge_expired_wallet_rows(
            runtime.engine, clock=clock, margin=expired_margin
        )
        return sum(deleted.values())

    notification_retention = timedelta(days=settings.notification_retention_days)

    async def old_notifications() -> int:
        return await purge_old_notifications(
            runtime.engine, clock=clock, retention=notification_retention
        )

    cleanup = shared_tables_cleanup(
        runtime.engine,
        service=IDEMPOTENCY_SERVICE,
        producer=OUTBOX_PRODUCER,
        clock=clock,
        idempotency_retention=timedelta(hours=settings.idempotency_retention_hours),
        own={
            "expired PIN reset codes, IP confirmations and trusted IPs": expired_wallet_rows,
            "old notifications": old_notifications,
        },
    )

    async def close_hasher() -> None:
        hasher.close()

    async def stop_streams() -> None:
        hub.close()
        await listener.stop()

    async def settle_pin_checks() -> None:
        await pins.drain(within=10.0)

    await listener.start()
    runtime.on_shutdown(close_hasher)
    runtime.on_shutdown(settle_pin_checks)  # runs first: before the hasher closes
    runtime.seal_audit()
    runtime.every(settings.freeze_sweep_seconds, sweeper.sweep_expired_freezes, name="freeze sweep")
    runtime.every(0.0, relay.run, name="outbox relay")
    runtime.every(
        3600.0, cleanup, name="idempotency, outbox, expired rows and notifications cleanup"
    )

    host = runtime.host(SERVICES, peers.verifier, peers.introspector, revocations=peers.revocations)
    host.on_stopping(stop_streams)
    tokens = runtime.page_tokens
    fingerprint_key = settings.fingerprint_key
    user = WalletServicer(
        wallets, pins, limits, ip_trust, notifications, tokens, fingerprint_key=fingerprint_key
    )
    staff = WalletAdminServicer(admin, limits, settings_service, AuditEvents(uow), tokens)
    internal = WalletInternalServicer(
        MovementChecks(pins, ip_trust, uow),
        ip_trust,
        limits,
        tiers,
        notifications,
        fingerprint_key=fingerprint_key,
    )
    host.add(SERVICES[0], lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(user, s))
    host.add(
        SERVICES[1], lambda s: wallet_pb2_grpc.add_WalletAdminServiceServicer_to_server(staff, s)
    )
    host.add(
        SERVICES[2],
        lambda s: wallet_pb2_grpc.add_WalletInternalServiceServicer_to_server(internal, s),
    )
    return host
