"""Composition root of the transfer service, shared by the server, the CLI and the tests.

Builds everything inside the event loop: the runtime (engine, Redis, page tokens), the
ledger (asyncpg through the engine's pool), the wallet peer, the use cases, the periodic jobs
(audit sealer, outbox relay, payout worker, idempotency and outbox cleanup) and the gRPC host
with the three servicers. Tests pass `auth` to run the real host without a real auth, and
`bank` to script the bank's answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from vaultpay_common.audit import FileCheckpointStore
from vaultpay_common.cleanup import shared_tables_cleanup
from vaultpay_common.clock import Clock, SystemClock
from vaultpay_common.grpc.revocations import SessionRevocations
from vaultpay_common.grpc.server import GrpcServiceHost
from vaultpay_common.grpc.tokens import TokenIntrospector, TokenVerifier
from vaultpay_common.outbox import OutboxRelay
from vaultpay_common.runtime import ServiceRuntime
from vaultpay_transfer.adapters.bank import AccountHasher, SimulatedBank
from vaultpay_transfer.adapters.deliveries import notification_relay
from vaultpay_transfer.adapters.ledger_pg import DEFAULT_HOLD_IDLE_TIMEOUT, PgLedger
from vaultpay_transfer.adapters.stats_sql import SqlStatsRollup
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.adapters.verify_sql import SqlLedgerAuditor
from vaultpay_transfer.adapters.wallet_peer import GrpcWalletGate, GrpcWalletNotifications
from vaultpay_transfer.entrypoints.servicers import (
    TransferAdminServicer,
    TransferInternalServicer,
    TransferServicer,
)
from vaultpay_transfer.service_layer.movements import MovementService
from vaultpay_transfer.service_layer.payouts import PayoutWorker
from vaultpay_transfer.service_layer.ports import Bank
from vaultpay_transfer.service_layer.queries import TransactionQueries
from vaultpay_transfer.service_layer.throttle import MovementThrottle, TokenBuckets
from vaultpay_transfer.service_layer.verification import LedgerVerification
from vaultpay_transfer.settings import TransferSettings

__all__ = [
    "IDEMPOTENCY_SERVICE",
    "MOVEMENT_METHODS",
    "OUTBOX_PRODUCER",
    "SERVICES",
    "CallerAuth",
    "build_host",
    "build_verifier",
]

OUTBOX_PRODUCER = "transfer"  # the producer the ledger functions write their events as
# Whose idempotency records the cleanup purges: the service its methods name
# ("/vaultpay.transfer.v1.…", vaultpay_common.idempotency.idempotency_service).
IDEMPOTENCY_SERVICE = "transfer"
# The methods whose idempotency keys a movement holds while it runs (GetTransactionByRequestId
# answers IDEMPOTENCY_KEY_IN_USE for them, see TransactionQueries.by_request_id).
MOVEMENT_METHODS = tuple(
    f"/{transfer_pb2.DESCRIPTOR.services_by_name['TransferService'].full_name}/{name}"
    for name in ("TopUp", "SendMoney", "Withdraw")
)
SERVICES = [
    transfer_pb2.DESCRIPTOR.services_by_name[name]
    for name in ("TransferService", "TransferAdminService", "TransferInternalService")
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


def build_verifier(
    settings: TransferSettings, engine: AsyncEngine, clock: Clock | None = None
) -> LedgerVerification:
    """AdminVerifyLedger's use case (the host's RPC and the CLI's `verify-ledger`)."""
    checkpoints = (
        FileCheckpointStore(settings.audit_checkpoint_dir, settings.audit_checkpoint_key)
        if settings.audit_checkpoint_dir is not None
        else None
    )
    # Rows are sealed within a round (1 s by default); ten minutes, or 60 rounds of a slower
    # sealer, behind is a sealer that stopped.
    bound = timedelta(seconds=max(600.0, 60 * settings.audit_seal_interval_seconds))
    auditor = SqlLedgerAuditor(engine, settings.audit_key, checkpoints, sealing_bound=bound)
    return LedgerVerification(auditor, clock or SystemClock())


async def build_host(
    settings: TransferSettings,
    *,
    clock: Clock | None = None,
    auth: CallerAuth | None = None,
    bank: Bank | None = None,
) -> GrpcServiceHost:
    clock = clock or SystemClock()
    runtime = ServiceRuntime("transfer", settings)
    peers: CallerAuth = auth or runtime.peer_auth()
    wallet_channel = runtime.channel(settings.wallet_address)
    timeout = settings.peer_timeout_seconds
    wallet_token = peers.identity.for_peer("wallet")

    relay: OutboxRelay | None = None

    def _wake_relay() -> None:
        if relay is not None:
            relay.wake()

    ledger = PgLedger(
        runtime.engine,
        on_commit=_wake_relay,
        # Past the longest wait at wallet: the PIN check and the address check, each bounded.
        hold_idle_timeout=max(DEFAULT_HOLD_IDLE_TIMEOUT, 4 * settings.peer_timeout_seconds),
    )
    hasher = AccountHasher(settings.bank_account_key)
    throttle = (
        MovementThrottle(TokenBuckets(settings.movement_rate_per_second, settings.movement_burst))
        if settings.movement_rate_per_second > 0
        else None
    )
    movements = MovementService(
        ledger,
        GrpcWalletGate(wallet_channel, wallet_token, timeout),
        hasher,
        max_amount_minor=settings.max_amount_minor,
        pin_check_key=settings.fingerprint_key,
        clock=clock,
        throttle=throttle,
    )
    queries = TransactionQueries(SqlTransactionStore(runtime.engine), clock, MOVEMENT_METHODS)
    verification = build_verifier(settings, runtime.engine, clock)
    relay = notification_relay(
        runtime.engine,
        OUTBOX_PRODUCER,
        GrpcWalletNotifications(wallet_channel, wallet_token, timeout),
        batch_size=settings.outbox_batch_size,
        poll_interval=settings.outbox_poll_seconds,
        clock=clock,
    )
    payouts = PayoutWorker(
        ledger,
        bank or SimulatedBank(hasher),
        batch_size=settings.payout_batch_size,
        hold_seconds=settings.payout_hold_seconds,
        bank_seconds=settings.payout_bank_seconds,
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
    runtime.every(settings.payout_interval_seconds, payouts.run_once, name="payout worker")
    runtime.every(3600.0, cleanup, name="idempotency and outbox cleanup")
    runtime.every(
        settings.stats_rollup_seconds, SqlStatsRollup(runtime.engine).run_once, name="stats rollup"
    )

    host = runtime.host(SERVICES, peers.verifier, peers.introspector, revocations=peers.revocations)
    user = TransferServicer(
        movements, queries, runtime.page_tokens, fingerprint_key=settings.fingerprint_key
    )
    staff = TransferAdminServicer(queries, verification, runtime.page_tokens)
    internal = TransferInternalServicer(queries)
    host.add(
        SERVICES[0], lambda s: transfer_pb2_grpc.add_TransferServiceServicer_to_server(user, s)
    )
    host.add(
        SERVICES[1],
        lambda s: transfer_pb2_grpc.add_TransferAdminServiceServicer_to_server(staff, s),
    )
    host.add(
        SERVICES[2],
        lambda s: transfer_pb2_grpc.add_TransferInternalServiceServicer_to_server(internal, s),
    )
    return host
