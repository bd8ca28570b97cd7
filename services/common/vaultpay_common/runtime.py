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

__all__ = ["PeriodicJob", "ServiceRuntime", "stop_tasks"]

log = logging.getLogger(__name__)


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
        """A channel to a peer, closed at shutdown; a refused service token is renewed."""
        channel = grpc.aio.insecure_channel(address, interceptors=[self._renew_identity])
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
            alarms=(AuditChainBrokenError, CheckpointInvalidError, CheckpointConflictError),
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
        gateway = self.settings.gateway_secret
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
