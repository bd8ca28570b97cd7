"""Processes and clients for the gateway tests: held ports, a real Envoy, plain HTTP calls.

The auth double runs on its own event loop in a background thread, so tests may block on
HTTP calls without starving the upstream (or Envoy's health checks and JWKS fetches).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import threading
import time
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from tests.gateway.auth_double import AuthDouble, SigningKey, start_auth_double
from tests.ports import ListenerPort, closed_port
from vaultpay_devstack.procs import setpriv_prefix
from vaultpay_gateway import (
    DEFAULT_RPC_RATE_LIMITS,
    GatewaySettings,
    HostPort,
    RateLimit,
    UnixSocket,
    admin_get,
    build_config,
    envoy_command,
    load_contract,
    validate,
)

T = TypeVar("T")

__all__ = [
    "LIFTED_RPC_RATE_LIMIT",
    "EnvoyProcess",
    "GatewayUnderTest",
    "Reply",
    "ThreadedAuthDouble",
    "closed_port",
    "envoy_port",
    "http_call",
    "loopback_settings",
    "start_gateway",
]

# Budgets no test module spends from 127.0.0.1.
LIFTED_RPC_RATE_LIMIT = RateLimit(
    max_tokens=10_000, tokens_per_fill=10_000, fill_interval_seconds=1
)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    source: str | None = None,
) -> Reply:
    """One HTTP/1.1 request to 127.0.0.1:port; lower-cased response header names.

    `source` binds the client socket to another loopback address (all of 127/8 is local), so
    a test can be several clients: `http_call(port, "GET", "/", source="127.0.0.2")`.
    """
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=None if source is None else (source, 0)
    )
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


class ServerThread:
    """A gRPC server on a private event loop thread, so that Envoy health checks it while a
    test blocks. Subclasses start theirs with `run(start())` and set `_server`."""

    _server: grpc.aio.Server

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on the server's loop and waits for it (10 s at most)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    def stop(self) -> None:
        try:
            self.run(self._server.stop(None))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()


class ThreadedAuthDouble(ServerThread):
    """The auth double on 127.0.0.1:<free port>, served from a private event loop thread."""

    def __init__(self, keys: list[SigningKey]) -> None:
        super().__init__()
        server, servicer, port = self.run(start_auth_double(keys))
        self._server = server
        self.servicer: AuthDouble = servicer
        self.port: int = port


class EnvoyProcess:
    """A real Envoy on a rendered config; always stopped by PID."""

    def __init__(
        self,
        config: Path,
        admin: HostPort | UnixSocket,
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.admin = admin
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            # Dies with the test session, even one the watchdog ends at once (os._exit).
            # One worker is plenty for tests; flush access logs quickly so tests can read them.
            setpriv_prefix(["--pdeathsig", "SIGTERM"])
            + envoy_command(
                config,
                "--log-level",
                "warn",
                "--concurrency",
                "1",
                "--file-flush-interval-msec",
                "100",
            ),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.output()}")
            try:
                if admin_get(self.admin, "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"envoy not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=5)
        finally:
            self._log_file.close()


@dataclass
class GatewayUnderTest:
    """A rendered, validated and running gateway."""

    settings: GatewaySettings
    config: Path
    envoy: EnvoyProcess

    @property
    def port(self) -> int:
        return self.settings.listen.port

    @property
    def access_log(self) -> Path:
        assert self.settings.access_log_path is not None
        return self.settings.access_log_path

    def active_requests(self, cluster: str) -> int:
        """Requests in flight to `cluster` now, as Envoy counts them against its breaker
        (`upstream_rq_active` of the admin interface's stats)."""
        status, body = admin_get(
            self.settings.admin, f"/stats?filter=^cluster\\.{cluster}\\.upstream_rq_active$"
        )
        assert status == 200, body
        [line] = body.decode().split("\n")[:1]
        return int(line.rsplit(":", 1)[1])

    def logged(self, request_id: str, *, within: float = 5.0) -> dict[str, Any]:
        """The access log's line of the request `request_id` (Envoy writes it after the
        reply), polled for at most `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.access_log.exists():
                for line in self.access_log.read_text().splitlines():
                    entry: dict[str, Any] = json.loads(line)
                    if entry["request_id"] == request_id:
                        return entry
            time.sleep(0.1)
        raise AssertionError(f"no access log line for {request_id}")

    def call(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        source: str | None = None,
    ) -> Reply:
        return http_call(self.port, method, path, body, headers, source=source)

    def wait_until_token_accepted(self, token: str, timeout: float = 10.0) -> None:
        """Retries an authenticated call until the JWKS holding the token's key is loaded."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.call("GET", "/v1/auth/me", headers={"authorization": f"Bearer {token}"})
            if reply.status == 200:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"token still refused: {reply.status} {reply.body!r}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.envoy.stop()


# Ports handed out by `envoy_port`, held until the Envoy whose settings name them is ready.
_HELD_FOR_ENVOY: dict[int, ListenerPort] = {}


def envoy_port() -> HostPort:
    """A loopback address for one of Envoy's listeners, its port held (`ListenerPort`) from
    other processes until `start_gateway` has the Envoy listening there."""
    held = ListenerPort()
    _HELD_FOR_ENVOY[held.port] = held
    return HostPort("127.0.0.1", held.port)


def _release_for_envoy(settings: GatewaySettings) -> None:
    for address in (settings.listen, settings.ready_listen):
        held = _HELD_FOR_ENVOY.pop(address.port, None) if address is not None else None
        if held is not None:
            held.release()


def start_gateway(
    workdir: Path, settings: GatewaySettings, env: Mapping[str, str] | None = None
) -> GatewayUnderTest:
    """Renders `settings` into `workdir`, validates it, starts Envoy (with `env` added to its
    environment) and waits for /ready; then lets go of the listener ports `envoy_port` held."""
    config = build_config(settings, workdir / "envoy.json")
    validate(config)
    try:
        envoy = EnvoyProcess(config, settings.admin, workdir / "envoy.log", env)
        try:
            envoy.wait_ready()
        except BaseException:
            envoy.stop()
            raise
    finally:
        _release_for_envoy(settings)
    return GatewayUnderTest(settings, config, envoy)


def loopback_settings(
    workdir: Path,
    descriptor_set: Path,
    upstreams: Mapping[str, HostPort],
    **overrides: Any,
) -> GatewaySettings:
    """Settings on a held loopback port (`envoy_port`), the admin interface on a Unix socket in
    `workdir`; every upstream not given points at a port that stays closed (`closed_port`).
    The RPC budgets are there but lifted far above what a test module sends from one address
    (tests that need them tight say so)."""
    closed = HostPort("127.0.0.1", closed_port())
    names = load_contract(descriptor_set).upstreams
    settings: dict[str, Any] = {
        "listen": envoy_port(),
        "admin": UnixSocket(workdir.resolve() / "admin" / "admin.sock"),
        "upstreams": {**dict.fromkeys(names, closed), **upstreams},
        "access_log_path": workdir / "access.log",
        "rpc_rate_limits": dict.fromkeys(DEFAULT_RPC_RATE_LIMITS, LIFTED_RPC_RATE_LIMIT),
        **overrides,
    }
    return GatewaySettings(descriptor_set=descriptor_set, **settings)
