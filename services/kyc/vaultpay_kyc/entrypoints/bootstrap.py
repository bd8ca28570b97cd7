"""Composition root of the kyc service, shared by the server, the CLI and the tests.

Builds everything inside the event loop: the runtime (engine, Redis, page tokens), the
crypto (key ring and document hasher from settings), the wallet and auth peers, the use cases, the
periodic jobs (audit sealer, outbox relay, rotation resume, idempotency and outbox cleanup),
and the gRPC host with the three servicers. Tests pass `auth` to run the real host without a
real auth service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay.kyc.v1 import kyc_pb2, kyc_pb2_grpc
from vaultpay_common.cleanup import shared_tables_cleanup
from vaultpay_common.clock import Clock, SystemClock
from vaultpay_common.grpc.revocations import SessionRevocations
from vaultpay_common.grpc.server import GrpcServiceHost
from vaultpay_common.grpc.tokens import TokenIntrospector, TokenVerifier
from vaultpay_common.outbox import OutboxRelay
from vaultpay_common.runtime import ServiceRuntime
from vaultpay_kyc.adapters.auth_peer import GrpcOwnerStandings
from vaultpay_kyc.adapters.deliveries import kyc_outbox_handlers
from vaultpay_kyc.adapters.unit_of_work import OUTBOX_PRODUCER, SqlKycUnitOfWork
from vaultpay_kyc.adapters.wallet_peer import GrpcWalletDirectory, GrpcWalletEvents
from vaultpay_kyc.domain.crypto import DocumentHasher, EnvelopeCipher, KeyRing
from vaultpay_kyc.domain.upload import smallest_chunk
from vaultpay_kyc.entrypoints.servicers import (
    KycAdminServicer,
    KycInternalServicer,
    KycServicer,
)
from vaultpay_kyc.service_layer.review import ReviewService
from vaultpay_kyc.service_layer.rotation import KeyRotationService
from vaultpay_kyc.service_layer.submissions import SubmissionService
from vaultpay_kyc.settings import KycSettings

__all__ = [
    "IDEMPOTENCY_SERVICE",
    "SERVICES",
    "CallerAuth",
    "build_host",
    "build_rotation",
    "envelope_cipher",
]

# Whose idempotency records the cleanup purges: the service its methods name
# ("/vaultpay.kyc.v1.…", vaultpay_common.idempotency.idempotency_service).
IDEMPOTENCY_SERVICE = "kyc"
SERVICES = [
    kyc_pb2.DESCRIPTOR.services_by_name[name]
    for name in ("KycService", "KycAdminService", "KycInternalService")
]


class ServiceIdentity(Protocol):
    def for_peer(self, peer: str) -> Callable[[], Awaitable[str]]:
        """Our token for calls to `peer` (addressed to it alone)."""
        ...


class CallerAuth(Protocol):
    """What `PeerAuth` provides: our identity for peers, and the checks of our callers."""

    @property
    def identity(self) -> ServiceIdentity: ...
    @property
    def verifier(self) -> TokenVerifier: ...
    @property
    def introspector(self) -> TokenIntrospector: ...
    @property
    def revocations(self) -> SessionRevocations: ...


def envelope_cipher(settings: KycSettings) -> EnvelopeCipher:
    return EnvelopeCipher(KeyRing(settings.key_encryption_key_for))


def build_rotation(
    settings: KycSettings,
    engine: AsyncEngine,
    clock: Clock,
    *,
    on_commit: Callable[[], None] | None = None,
) -> KeyRotationService:
    """The rotation use case (the host's RPC and periodic resume, and the CLI's command)."""
    return KeyRotationService(
        lambda: SqlKycUnitOfWork(engine, on_commit=on_commit),
        clock,
        envelope_cipher(settings),
        batch_size=settings.rotation_batch_size,
        settle_seconds=settings.rotation_settle_seconds,
    )


async def build_host(
    settings: KycSettings, *, clock: Clock | None = None, auth: CallerAuth | None = None
) -> GrpcServiceHost:
    clock = clock or SystemClock()
    runtime = ServiceRuntime("kyc", settings)
    peers: CallerAuth = auth or runtime.peer_auth()
    wallet_channel = runtime.channel(settings.wallet_address)
    timeout = settings.peer_timeout_seconds

    relay: OutboxRelay | None = None

    def _wake_relay() -> None:
        if relay is not None:
            relay.wake()

    def uow() -> SqlKycUnitOfWork:
        return SqlKycUnitOfWork(runtime.engine, on_commit=_wake_relay)

    cipher = envelope_cipher(settings)
    submissions = SubmissionService(
        uow,
        clock,
        GrpcWalletDirectory(wallet_channel, timeout),
        cipher,
        DocumentHasher(settings.document_hash_key),
        max_file_bytes=settings.document_max_bytes,
        max_chunk_bytes=settings.upload_chunk_max_bytes,
    )
    roles = GrpcOwnerStandings(
        runtime.channel(settings.auth_address), peers.identity.for_peer("auth"), timeout
    )
    review = ReviewService(
        uow, clock, cipher, hasher=DocumentHasher(settings.document_hash_key), roles=roles
    )
    rotation = build_rotation(settings, runtime.engine, clock, on_commit=_wake_relay)
    relay = OutboxRelay(
        runtime.engine,
        OUTBOX_PRODUCER,
        kyc_outbox_handlers(
            GrpcWalletEvents(wallet_channel, peers.identity.for_peer("wallet"), timeout),
            review.held_tier,
        ),
        poll_interval=settings.outbox_poll_seconds,
        max_attempts=settings.outbox_max_attempts,
    )

    cleanup = shared_tables_cleanup(
        runtime.engine,
        service=IDEMPOTENCY_SERVICE,
        producer=OUTBOX_PRODUCER,
        clock=clock,
        idempotency_retention=timedelta(hours=settings.idempotency_retention_hours),
    )

    runtime.seal_audit()
    runtime.every(0.0, relay.run, name="outbox relay")
    runtime.every(
        settings.rotation_resume_seconds, rotation.resume_unfinished, name="kyc rotation resume"
    )
    runtime.every(3600.0, cleanup, name="idempotency and outbox cleanup")

    host = runtime.host(SERVICES, peers.verifier, peers.introspector, revocations=peers.revocations)
    user = KycServicer(
        submissions,
        upload_drain_limit_bytes=settings.document_max_bytes + (1 << 20),
        fingerprint_key=settings.fingerprint_key,
        upload_min_chunk_bytes=smallest_chunk(settings.upload_chunk_max_bytes),
        max_documents_in_flight=settings.max_documents_in_flight,
    )
    staff = KycAdminServicer(review, rotation, runtime.page_tokens)
    internal = KycInternalServicer(review)
    host.add(SERVICES[0], lambda s: kyc_pb2_grpc.add_KycServiceServicer_to_server(user, s))
    host.add(SERVICES[1], lambda s: kyc_pb2_grpc.add_KycAdminServiceServicer_to_server(staff, s))
    host.add(
        SERVICES[2], lambda s: kyc_pb2_grpc.add_KycInternalServiceServicer_to_server(internal, s)
    )
    return host
