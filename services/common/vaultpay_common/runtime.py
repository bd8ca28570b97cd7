"""The service runtime: what every service process is made of, built inside the event loop.

    runtime = ServiceRuntime("wallet", settings)          # engine, Redis, page tokens
    peers = runtime.peer_auth()                           # services other than auth (and
                                                          # their revocation feed job)
    runtime.every(settings.audit_seal_interval_seconds, sealer.seal_once, name="audit sealer")
    host = runtime.host(
        SERVICES, peers.verifier, peers.introspector, revocations=peers.revocations
    )
    host.add(descriptor, lambda server: add_XServicer_to_server(servicer, server))
    await host.start()                                    # also starts the periodic jobs
    await host.serve_until_signal()                       # stops jobs, server, then pools

Everything the runtime opens is closed by the host's graceful shutdown, in reverse order.
The audit sealer of the service's database is registered by `seal_audit()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from vaultpay_common.config import PeerServiceSettings, ServiceSettings
from vaultpay_common.db import create_engine
from vaultpay_common.grpc.auth_client import PeerAuth, RenewRejectedIdentity
from vaultpay_common.grpc.revocations import SessionRevocations
from vaultpay_common.grpc.server import GrpcServiceHost, standard_interceptors
from vaultpay_common.grpc.tokens import TokenIntrospector, TokenVerifier
from vaultpay_common.pagination import PageTokens
from vaultpay_common.redis import create_redis

__all__ = ["PEER_CHANNEL_OPTIONS", "PeriodicJob", "ServiceRuntime", "stop_tasks"]

log = logging.getLogger(__name__)

# Options of every channel to a peer service. A peer's address may resolve to several
# servers (on Kubernetes `dns:///wallet:50052` names a headless Service: one address per ready
# pod); round_robin keeps a connection to each and spreads the calls over them. gRPC's default,
# pick_first, would send every call of this process to the first address for as long as it
# stays up. One address (`127.0.0.1:50052`, `make run`) behaves the same under either.
# Keepalive: a connection whose peer vanished without closing it (a node that died, a dropped
# NAT entry) is found dead within 40 s, not after the kernel's retransmissions (~15 minutes,
# during which every call round_robin sent on it waited for its deadline): a ping after 30 s
# without reads, calls in flight or not, unanswered for 10 s closes it. gRPC (1.85) waits for a
# ping's answer `grpc.http2.ping_timeout_ms` (1 minute unless set): keepalive_timeout_ms alone
# (it also bounds unacknowledged writes, TCP_USER_TIMEOUT) left an unanswered ping waiting that
# minute, a peer that still acknowledged TCP found dead after 90 s. max_pings_without_data 0: gRPC
# would otherwise stop pinging an idle connection after two pings, and a dead pod's idle
# connection would be found only by the next call sent on it. Within every server's ping policy
# (grpc/server.py `server_options`: pings at least 10 s apart, allowed without calls).
# tests/integration/test_peer_keepalive.py proves it against a peer that goes silent.
PEER_CHANNEL_OPTIONS: tuple[tuple[str, str | int], ...] = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


Job = Callable[[], Awaitable[object]]
Cleanup = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    name: str
    every_seconds: float
    job: Job
    # Failures that need a person (a broken audit chain), logged at ERROR, not WARNING.
    alarms: tuple[type[Exception], ...] = ()


async def stop_tasks(
    tasks: Sequence[asyncio.Task[Any]], *, within: float = 10.0, recancel_every: float = 0.5
) -> list[str]:
    """Cancels `tasks` and waits for them to end; returns the names of those still running
    after `within` seconds. A task that swallowed its cancellation (in Python 3.11 an
    `asyncio.wait_for` whose inner await completes as the cancel arrives returns normally) is
    cancelled again every `recancel_every` seconds, at its next await: shutdown never hangs
    on one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recancel_every)
    return sorted(task.get_name() for task in pending)


async def _run_periodically(job: PeriodicJob) -> None:
    """Runs `job` every `every_seconds` (after each run ends); failures are logged, not fatal."""
    while True:
        try:
            await job.job()
        except asyncio.CancelledError:
            raise
        except job.alarms:
            log.error("periodic job raised an alarm", extra={"job": job.name}, exc_info=True)
        except Exception:
            log.warning("periodic job failed", extra={"job": job.name}, exc_info=True)
        await asyncio.sleep(job.every_seconds)


class ServiceRuntime:
    """Owns a service's connections, periodic jobs and shutdown order."""

    def __init__(self, name: str, settings: ServiceSettings) -> None:
        self.name = name
        self.settings = settings
        self.engine = create_engine(
            settings.database_url.get_secret_value(),
            pool_size=settings.db_pool_size,
            application_name=f"vaultpay-{name}",
            statement_timeout_ms=settings.db_statement_timeout_ms,
        )
        self.redis = create_redis(settings.redis_url.get_secret_value())
        self.page_tokens = PageTokens(settings.derived_key("page-token"))
        self._jobs: list[PeriodicJob] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._cleanups: list[Cleanup] = [self.engine.dispose, self.redis.aclose]
        self._channels: list[grpc.aio.Channel] = []
        self._renew_identity = RenewRejectedIdentity()
        self._host_built = False

    def every(
        self,
        seconds: float,
        job: Job,
        *,
        name: str,
        alarms: tuple[type[Exception], ...] = (),
    ) -> None:
        """Registers a job run every `seconds` while the server is up (started by host.start).

        A failure is logged at WARNING and the job runs again; one of `alarms` at ERROR.
        """
        self._jobs.append(PeriodicJob(name, seconds, job, alarms))

    def on_shutdown(self, cleanup: Cleanup) -> None:
        """Registers a cleanup run after the server stopped (last registered runs first).

        Register before `host()`: the host takes the list over.
        """
        if self._host_built:
            raise RuntimeError("register cleanups before building the host")
        self._cleanups.append(cleanup)

    def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to a peer, closed at shutdown; a refused service token is renewed. Calls
        are balanced round-robin over every address `address` resolves to."""
        channel = grpc.aio.insecure_channel(
            address, options=PEER_CHANNEL_OPTIONS, interceptors=[self._renew_identity]
        )
        self._channels.append(channel)
        return channel

    def peer_auth(self) -> PeerAuth:
        """Caller authentication through auth, and this service's own identity for its calls."""
        settings = self.settings
        if not isinstance(settings, PeerServiceSettings):
            raise TypeError("peer_auth needs PeerServiceSettings")
        auth = PeerAuth(
            self.channel(settings.auth_address),
            client_id=settings.service_client_id,
            client_secret=settings.service_client_secret.get_secret_value(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            service=self.name,
            accept_unscoped_service_tokens=settings.accept_unscoped_service_tokens,
            request_scoped_service_tokens=settings.request_scoped_service_tokens,
            revocation_poll_seconds=settings.revocation_poll_seconds,
            revocation_wait_seconds=settings.revocation_wait_seconds,
            revocation_max_staleness_seconds=settings.revocation_max_staleness_seconds,
        )
        self._renew_identity.provider = auth.identity
        if settings.revocation_feed:
            # Polls until shutdown; without it every call asks auth (the revocation set is
            # never established).
            self.every(0.0, auth.feed.run, name="revocation feed")
        return auth

    def seal_audit(self) -> None:
        """Runs this database's audit sealer (chains committed rows, writes checkpoints)."""
        from vaultpay_common.audit import AuditSealer, FileCheckpointStore
        from vaultpay_common.audit.checkpoints import (
            CheckpointConflictError,
            CheckpointInvalidError,
            CheckpointUnwritableError,
        )
        from vaultpay_common.audit.sealer import AuditChainBrokenError

        settings = self.settings
        checkpoints = (
            FileCheckpointStore(settings.audit_checkpoint_dir, settings.audit_checkpoint_key)
            if settings.audit_checkpoint_dir is not None
            else None
        )
        sealer = AuditSealer(self.engine, settings.audit_key, checkpoints)
        self.every(
            settings.audit_seal_interval_seconds,
            sealer.seal_once,
            name="audit sealer",
            # ERROR, not WARNING: each means the newest rows are no longer anchored.
            alarms=(
                AuditChainBrokenError,
                CheckpointInvalidError,
                CheckpointConflictError,
                CheckpointUnwritableError,
            ),
        )

    def host(
        self,
        contract: Sequence[ServiceDescriptor],
        verifier: TokenVerifier,
        introspector: TokenIntrospector,
        *,
        revocations: SessionRevocations | None,
        always_strict: bool = False,
    ) -> GrpcServiceHost:
        """The gRPC host with the standard interceptors; starts and stops this runtime's jobs."""
        gateway, previous = self.settings.gateway_secret, self.settings.gateway_previous_secret
        host = GrpcServiceHost(
            self.name,
            address=self.settings.grpc_address,
            interceptors=standard_interceptors(
                self.name,
                contract,
                verifier,
                introspector,
                revocations=revocations,
                always_strict=always_strict,
                gateway_secret=None if gateway is None else gateway.get_secret_value(),
                previous_gateway_secret=None if previous is None else previous.get_secret_value(),
            ),
            max_message_bytes=self.settings.max_message_bytes,
            shutdown_grace_seconds=self.settings.shutdown_grace_seconds,
        )
        host.on_start(self._start_jobs)
        for cleanup in self._cleanups:
            host.on_shutdown(cleanup)
        host.on_shutdown(self._close_channels)
        host.on_shutdown(self._stop_jobs)
        self._cleanups = []
        self._host_built = True
        return host

    async def _start_jobs(self) -> None:
        for job in self._jobs:
            self._tasks.append(asyncio.create_task(_run_periodically(job), name=job.name))

    async def _stop_jobs(self) -> None:
        for name in await stop_tasks(self._tasks):
            log.warning("periodic job did not stop", extra={"job": name})
        self._tasks = []

    async def _close_channels(self) -> None:
        for channel in self._channels:
            await channel.close()
