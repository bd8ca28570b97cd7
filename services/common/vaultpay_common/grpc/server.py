"""Builds and runs a grpc.aio server the same way for every service.

    host = GrpcServiceHost("auth", settings, interceptors=[...])
    host.add(auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
             lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s))
    await host.start()
    await host.serve_until_signal()   # SIGTERM/SIGINT: NOT_SERVING -> stop(grace) -> cleanups

Every server gets health (grpc.health.v1), reflection, explicit keepalive and message-size
limits, and binds only the configured address.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vaultpay_common.config import ServiceSettings, load_settings
from vaultpay_common.db import asyncpg_dsn
from vaultpay_common.grpc.authz import AuthInterceptor
from vaultpay_common.grpc.errors import ErrorInterceptor
from vaultpay_common.grpc.hygiene import RequestHygieneInterceptor
from vaultpay_common.grpc.request_context import RequestContextInterceptor
from vaultpay_common.grpc.revocations import SessionRevocations
from vaultpay_common.grpc.rules import load_access_rules
from vaultpay_common.grpc.tokens import TokenIntrospector, TokenVerifier
from vaultpay_common.logging import configure_logging
from vaultpay_common.migrations import MigrationChain
from vaultpay_common.schema_gate import wait_for_schema

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)

__all__ = ["GrpcServiceHost", "run_service", "server_options", "standard_interceptors"]

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[object]]


def standard_interceptors(
    service: str,
    contract: Sequence[ServiceDescriptor],
    verifier: TokenVerifier,
    introspector: TokenIntrospector,
    *,
    revocations: SessionRevocations | None,
    always_strict: bool = False,
    gateway_secret: str | None = None,
    previous_gateway_secret: str | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptor chain every VaultPay service runs, outermost first.

    Request context (id, client IP, deadline) → error mapping → the access rules declared in
    `contract` (deny by default) → request hygiene. Errors from every later stage are mapped.
    `gateway_secret` (and, mid-rotation, `previous_gateway_secret`) lets calls from the
    gateway name their client's address. `revocations`
    (auth's revocation feed in memory, `PeerAuth.revocations`) is checked on every user call;
    only auth, whose every call is strict, passes None.
    """
    return [
        RequestContextInterceptor(gateway_secret, previous_gateway_secret),
        ErrorInterceptor(service),
        AuthInterceptor(
            load_access_rules(contract),
            verifier,
            introspector,
            revocations=revocations,
            always_strict=always_strict,
        ),
        RequestHygieneInterceptor(),
    ]


# The request metadata a server takes. gRPC counts each entry as name + value + 32 bytes and,
# by default, refuses at random between 8 KiB (soft) and 16 KiB (hard): a JSON call through the
# gateway within its header cap (the gateway's request_guard, names and values only: 8 KiB by
# default, at most 12 KiB, `vaultpay_gateway.settings.MAX_HEADER_BYTES`) grows by Envoy's
# headers (the original path again, the forwarded address, the request id, the identity
# secret) and the per-entry overhead to about 15 KiB at worst (19 KiB under the highest cap),
# and such calls were refused RESOURCE_EXHAUSTED now and then. 24 KiB soft, 32 KiB hard: all
# of them pass.
MAX_METADATA_BYTES = 24 * 1024


def server_options(
    max_message_bytes: int,
    *,
    min_ping_interval_ms: int = 10_000,
    max_connection_age_ms: int = 5 * 60_000,
) -> list[tuple[str, int]]:
    """The options of every service's server.

    `min_ping_interval_ms`: how often a client (the gateway's Envoy and the services' peer
    channels, `runtime.PEER_CHANNEL_OPTIONS`, ping every 30 s) may ping while no data flows,
    calls in flight or not (`keepalive_permit_without_calls`: without it, any ping on a
    connection with no call would be a strike); pings closer together are strikes, and after
    `max_ping_strikes` the server closes the connection with GOAWAY `too_many_pings`, ending
    every stream on it with UNAVAILABLE. The key is gRPC core's `GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS`,
    spelled `grpc.http2.min_ping_interval_without_data_ms`; gRPC ignores unknown keys, and a
    misspelled one left its default of 5 minutes, which cut idle WatchNotifications streams
    through the gateway after about two minutes. Tests shorten it.

    `max_connection_age_ms`: a client's connection is asked to go (GOAWAY, gRPC adds ±10 %
    jitter) once it is this old, so a peer's round_robin channel and Envoy reconnect, and a
    client that resolves a headless Service again meets the pods a scale-up added; without it
    they saw a new pod only once an old connection closed, which a busy one never does. The
    grace (`grpc.max_connection_age_grace_ms`) is left at gRPC's default, unbounded: a call or
    stream already on the connection (a WatchNotifications, auth's revocation feed) runs to its
    end there, new calls go on the new connection.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", min_ping_interval_ms),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", 15 * 60_000),
        ("grpc.max_connection_age_ms", max_connection_age_ms),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES * 4 // 3),
        ("grpc.so_reuseport", 0),
    ]


class GrpcServiceHost:
    def __init__(
        self,
        name: str,
        *,
        address: str,
        interceptors: list[grpc.aio.ServerInterceptor],
        max_message_bytes: int,
        shutdown_grace_seconds: float,
    ) -> None:
        self.name = name
        self._address = address
        self._grace = shutdown_grace_seconds
        self._server = grpc.aio.server(
            interceptors=interceptors, options=server_options(max_message_bytes)
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._service_names: list[str] = []
        self._cleanups: list[Cleanup] = []
        self._starters: list[Cleanup] = []
        self._stoppers: list[Cleanup] = []
        self.port = 0

    def add(self, service: ServiceDescriptor, register: Callable[[grpc.aio.Server], None]) -> None:
        register(self._server)
        self._service_names.append(service.full_name)

    def on_start(self, starter: Cleanup) -> None:
        """Registers a coroutine run once the server serves (e.g. starting periodic jobs)."""
        self._starters.append(starter)

    def on_stopping(self, stopper: Cleanup) -> None:
        """Registers a coroutine run before in-flight calls are waited for (e.g. ending
        long-lived streams, which would otherwise hold the whole grace period)."""
        self._stoppers.append(stopper)

    def on_shutdown(self, cleanup: Cleanup) -> None:
        """Registers a cleanup (closing pools, clients) run after the server has stopped."""
        self._cleanups.append(cleanup)

    async def start(self) -> int:
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        self.port = self._server.add_insecure_port(self._address)
        if self.port == 0:
            raise RuntimeError(f"could not bind {self._address}")
        await self._server.start()
        for service_name in ["", *self._service_names]:
            await self._health.set(service_name, health_pb2.HealthCheckResponse.SERVING)
        for starter in self._starters:
            await starter()
        host = self._address.rsplit(":", 1)[0]
        log.info(
            "serving", extra={"address": f"{host}:{self.port}", "services": self._service_names}
        )
        return self.port

    async def stop(self) -> None:
        """Graceful shutdown: NOT_SERVING, let in-flight calls finish, then close pools."""
        await self._health.enter_graceful_shutdown()
        for stopper in self._stoppers:
            try:
                await stopper()
            except Exception:
                log.warning("stopping hook failed", exc_info=True)
        await self._server.stop(self._grace)
        for cleanup in reversed(self._cleanups):
            try:
                await cleanup()
            except Exception:
                log.warning("cleanup failed", exc_info=True)
        log.info("stopped")

    async def serve_until_signal(self, stop: asyncio.Event | None = None) -> None:
        """Serves until SIGTERM or SIGINT, or until `stop` (an event those signals already set:
        `stop_on_signals`, so that one received before serving began is not lost)."""
        if stop is None:
            stop = stop_on_signals()
        await stop.wait()
        log.info("shutting down")
        await self.stop()


def run_service(
    name: str,
    settings_type: type[SettingsT],
    build_host: Callable[[SettingsT], Awaitable[GrpcServiceHost]],
    *,
    schema: Sequence[MigrationChain] = (),
) -> None:
    """A service's process: reads its settings (a bad one exits 2 naming the variable, never
    its value), logs as `name`, waits until its database has the migrations of `schema` this
    code needs (`vaultpay_common.schema_gate`; SIGTERM or SIGINT meanwhile ends it), builds
    and starts the host, serves until SIGTERM or SIGINT; on uvloop (faster asyncpg paths;
    grpc.aio works on it)."""
    import uvloop

    settings = load_settings(settings_type, f"vaultpay-{name}")

    async def serve() -> None:
        configure_logging(name, settings.log_level)
        stop = stop_on_signals()
        if schema:
            dsn = asyncpg_dsn(settings.database_url.get_secret_value())
            if not await wait_for_schema(dsn, schema, stop=stop):
                log.info("stopped before serving")
                return
        host = await build_host(settings)
        await host.start()
        await host.serve_until_signal(stop)

    uvloop.run(serve())


def stop_on_signals() -> asyncio.Event:
    """An event SIGTERM and SIGINT set from now on (in the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
