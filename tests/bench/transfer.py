"""The transfer table of `make bench`: SendMoney against pgbench on the same PostgreSQL.

    .venv/bin/python -m tests.bench.transfer                 # 8, 32, 64 clients (~6 minutes)
    .venv/bin/python -m tests.bench.transfer --quick         # a short smoke run
    .venv/bin/python -m tests.bench.transfer --sections uniform,hot --concurrency 16

Starts the mesh (auth, wallet, transfer and Envoy; private PostgreSQL and Redis on free ports,
in a scratch directory), then sets up the wallets through the services (tests/bench/
transfer_setup.py): registered users, their wallets and PINs at a low bcrypt cost (4, the
bench's: the ledger is measured, not bcrypt), KYC approved (SetKycTier), the FULL tier's
limits raised by a super_admin so none binds, 127.0.0.1 trusted (CheckIpTrust + ConfirmIp)
and each wallet funded (TopUp). Then, each section's cells back to back at each client
count, so a reference and the figures compared with it see the same machine:

* `uniform`: pgbench running the plain-SQL transfer (the reference, on bench_ref copies of
  the service's tables and wallets), pgbench calling the service's own transfer_send_money()
  (the floor of the design), SendMoney direct gRPC and through Envoy as JSON; each client
  sends from its own wallet to a random other one. Goal: SendMoney >= 1.0 of the plain SQL.
* `hot`: the same with half the sends into one hot wallet. Goal: >= 0.6 of the plain SQL
  doing the same, p99 < 250 ms.
* `pin`: PIN-checked SendMoney from wallets whose PIN was set at the production cost (the
  wallet restarted at that cost for them) against min(clients, cores) / one bcrypt hash's
  CPU time. Goal: >= 0.85.
* `two`: SendMoney with a second transfer process (its own port, a second endpoint of
  Envoy's transfer cluster; direct gRPC splits its channels over both) against one process.

Every cell records where the machine's CPU went (tests/bench/cpu.py: CPU ms per request for
the client, pgbench, PostgreSQL, each service and Envoy). At the end the ledger verifier
(`vaultpay-transfer verify-ledger`) runs and the sends the bench saw acknowledged are
compared with the ledger's. Goals are printed, never enforced: the command fails only if the
mesh does. Results go to bench-results/bench-transfer-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tests.bench.cpu import CpuUsage, measure_window, usage_between
from tests.bench.cpu import sample as cpu_sample
from tests.bench.harness import (
    PRODUCTION_PIN_ROUNDS,
    Bcrypt,
    BenchMesh,
    Progress,
    available_cores,
    bcrypt_ms,
    choice_list,
    envoy_rate_limit,
    exit_on_sigterm,
    format_ms,
    int_list,
    process_env,
    queue_warmup,
    raise_if_died,
    run_async,
    slow_window,
    summary,
    warn_if_busy_before_run,
)
from tests.bench.load import CellStats, run_cell
from tests.bench.report import (
    FEW_SAMPLES,
    Against,
    Goal,
    Row,
    format_goals,
    format_table,
    machine_info,
    save_results,
)
from tests.bench.transfer_pgbench import (
    FUNCTION,
    PLAIN,
    REFERENCE_SCHEMA,
    PgbenchTarget,
    find_pgbench,
    prepare_reference,
)
from tests.bench.transfer_report import (
    FUNCTION_ROW,
    HOT,
    PIN,
    PLAIN_ROW,
    SEND,
    TWO,
    UNIFORM,
    TailGoal,
    TransferRow,
    against_reference,
)
from tests.bench.transfer_setup import (
    Account,
    Accounts,
    approve_kyc,
    fund,
    ping_wallet,
    raise_limits,
    trust_loopback,
)
from tests.bench.transfer_workloads import Draw, GrpcSends, HttpSends, SendTarget, Tally, check_send
from tests.bench.workloads import UserPool
from vaultpay_devstack.infra import scratch_dir
from vaultpay_devstack.mesh import Mesh, MeshConfig, print_progress
from vaultpay_devstack.probes import GrpcHealthProbe
from vaultpay_devstack.procs import LOOPBACK, ManagedProcess, free_ports, wait_until
from vaultpay_devstack.services import spec
from vaultpay_devstack.workspace import python_env

REPO_ROOT = Path(__file__).resolve().parents[2]
PATHS = {"grpc": "gRPC", "http": "Envoy JSON"}
SECTIONS = {"uniform": UNIFORM, "hot": HOT, "pin": PIN, "two": TWO}
# The transfer issue's goals (issue 8, section 5).
UNIFORM_GOAL = Goal(1.0)
HOT_GOAL = TailGoal(0.6, p99_ms=250.0)
PIN_GOAL = Goal(0.85)
# The bench's own PIN cost for the ledger cells: the cheapest bcrypt allows, so the table
# measures the ledger and the RPCs, not bcrypt (the `pin` section measures bcrypt).
BENCH_PIN_ROUNDS = 4
SETUP_PARALLEL = 8
# How long the bench waits for the notifications of one cell to be delivered before the next.
DRAIN_TIMEOUT = 180.0
# --pg-statements: the private PostgreSQL loads pg_stat_statements, nested statements included.
PG_STATEMENTS_SETTINGS = (
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
)
PG_STATEMENTS_KEPT = 12  # statements recorded per cell, by total time
PG_STATEMENTS_SHOWN = 5  # of those, printed after the cell
# function_send.sql's p_caller is this and pgbench's client id; its method is SendMoney's own.
PGBENCH_CALLER_PREFIX = "pgbench:"
EXTRA_TRANSFER = "transfer-2"
# Money: every wallet gets FUND_MINOR; a send moves 1..MAX_AMOUNT_MINOR paise.
FUND_MINOR = 10**9
MAX_AMOUNT_MINOR = 100


@dataclass(frozen=True)
class Options:
    concurrency: tuple[int, ...]
    seconds: float
    warmup: float
    profile: str
    paths: tuple[str, ...]
    sections: tuple[str, ...]
    pin_workers: int
    pin_bcrypt_rounds: int
    production_pin_rounds: int
    bcrypt_rounds: int
    hot_percent: int
    timeout: float
    out: Path
    quick: bool
    gateway_rate_limit: str
    service_env: tuple[tuple[str, str], ...] = ()
    pg_statements: bool = False
    ignored: tuple[str, ...] = ()

    @property
    def wallets(self) -> int:
        """Senders (one per client at the most clients) plus the hot wallet."""
        return max(self.concurrency) + 1

    @property
    def two_clients(self) -> int:
        return max(self.concurrency)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.transfer",
        description="SendMoney against pgbench on the same PostgreSQL: plain SQL, the "
        "service's ledger function, direct gRPC and Envoy JSON; hot wallet, production PIN "
        "cost, two transfer processes; the ledger verified at the end.",
    )
    parser.add_argument(
        "--concurrency", type=int_list, help="client counts, comma-separated (8,32,64)"
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (4)")
    parser.add_argument("--warmup", type=float, help="unmeasured warm-up seconds per cell (1)")
    parser.add_argument(
        "--profile",
        choices=("dev", "test"),
        default="dev",
        help="mesh profile: dev = durable PostgreSQL, synchronous commit (default); "
        "test = PostgreSQL without fsync",
    )
    parser.add_argument(
        "--paths", type=choice_list(PATHS), default=tuple(PATHS), help="grpc,http (both)"
    )
    parser.add_argument(
        "--sections",
        type=choice_list(SECTIONS),
        default=tuple(SECTIONS),
        help="uniform,hot,pin,two (all)",
    )
    parser.add_argument(
        "--pin-workers",
        type=int,
        help="clients of the production-PIN cells, one wallet each (8; --quick: 2)",
    )
    parser.add_argument(
        "--ledger-pin-rounds",
        type=int,
        default=BENCH_PIN_ROUNDS,
        help=f"PIN cost of the ledger cells' wallets ({BENCH_PIN_ROUNDS}, the bench's low cost)",
    )
    parser.add_argument(
        "--pin-bcrypt-rounds",
        type=int,
        default=PRODUCTION_PIN_ROUNDS,
        help=f"PIN cost of the `pin` section's wallets ({PRODUCTION_PIN_ROUNDS}, the wallet's "
        "production default; as in tests.bench.run)",
    )
    parser.add_argument(
        "--bcrypt-rounds",
        type=int,
        default=4,
        help="auth's password cost for the run (4: no Login is measured here)",
    )
    parser.add_argument(
        "--hot-percent",
        type=int,
        default=50,
        help="share of the `hot` section's sends into the hot wallet, in percent (50)",
    )
    parser.add_argument(
        "--gateway-rate-limit",
        default="1000000/1000000",
        help="the gateway's rate limits RATE/BURST for the run (lifted by default)",
    )
    parser.add_argument(
        "--service-env",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the service whose prefix NAME starts with, for experiments "
        "(e.g. TRANSFER_DB_POOL_SIZE=20); repeatable",
    )
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="record what PostgreSQL spent its time on in each SendMoney cell "
        "(pg_stat_statements, track = all: nested statements too; costs some CPU of its own)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="per-request timeout in seconds (30)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "bench-results", help="where the JSON goes"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2,4 clients, 0.5 s cells, 0.2 s warm-up, 2 PIN workers "
        "(explicit flags still win)",
    )
    # Options only tests.bench.run has (--workloads, --users, --pin-load) may come with a
    # BENCH_ARGS shared by both benches: ignored, and told.
    args, unknown = parser.parse_known_args(argv)
    quick = bool(args.quick)
    defaults = ((2, 4), 0.5, 0.2, 2) if quick else ((8, 32, 64), 4.0, 1.0, 8)
    options = Options(
        concurrency=args.concurrency or defaults[0],
        seconds=args.seconds if args.seconds is not None else defaults[1],
        warmup=args.warmup if args.warmup is not None else defaults[2],
        profile=args.profile,
        paths=args.paths,
        sections=args.sections,
        pin_workers=args.pin_workers if args.pin_workers is not None else defaults[3],
        pin_bcrypt_rounds=args.ledger_pin_rounds,
        production_pin_rounds=args.pin_bcrypt_rounds,
        bcrypt_rounds=args.bcrypt_rounds,
        hot_percent=args.hot_percent,
        timeout=args.timeout,
        out=args.out,
        quick=quick,
        gateway_rate_limit=args.gateway_rate_limit,
        service_env=tuple(args.service_env),
        pg_statements=bool(args.pg_statements),
        ignored=tuple(unknown),
    )
    if options.seconds <= 0 or options.warmup < 0 or options.timeout <= 0:
        parser.error("--seconds and --timeout must be > 0, --warmup >= 0")
    if options.pin_workers < 1 or not 0 <= options.hot_percent <= 100:
        parser.error("--pin-workers must be >= 1 and --hot-percent between 0 and 100")
    for rounds in (options.pin_bcrypt_rounds, options.production_pin_rounds):
        if not 4 <= rounds <= 16:
            parser.error("PIN costs must be between 4 and 16")
    return options


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.isupper() or "_" not in name:
        raise argparse.ArgumentTypeError(f"expected e.g. TRANSFER_DB_POOL_SIZE=20, got {text!r}")
    return name, value


def cell_count(opts: Options) -> int:
    per_level = 2 + len(opts.paths)
    count = 0
    for section in opts.sections:
        if section in ("uniform", "hot"):
            count += per_level * len(opts.concurrency)
        elif section == "pin":
            count += len(opts.paths)
        else:
            count += 2 * len(opts.paths)
    return count


# -- the mesh ----------------------------------------------------------------------------------


def add_endpoint(envoy_config: Path, cluster: str, host: str, port: int) -> None:
    """Adds host:port as one more endpoint of `cluster` in a rendered Envoy bootstrap."""
    config = json.loads(envoy_config.read_text())
    clusters = config["static_resources"]["clusters"]
    found = [c for c in clusters if c.get("name") == cluster]
    if len(found) != 1:
        raise RuntimeError(f"no single cluster {cluster!r} in {envoy_config}")
    endpoints = found[0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    endpoints.append(
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
    )
    envoy_config.write_text(json.dumps(config, indent=2))


class TransferBenchMesh(BenchMesh):
    """The bench mesh (PIN cost apart from auth's) for the transfer table: auth accepts the
    bench's sign-ups from one address, and Envoy's transfer cluster gets a second endpoint
    (`extra_transfer_port`, a process the runner starts for the two-process cells only; while
    it is down Envoy's health checks keep every request on the first)."""

    def __init__(
        self,
        config: MeshConfig,
        *,
        pin_bcrypt_rounds: int,
        extra_transfer_port: int | None,
        service_env: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(config, pin_bcrypt_rounds=pin_bcrypt_rounds)
        self.extra_transfer_port = extra_transfer_port
        self.service_env = tuple(service_env)

    def env_for(self, service: str, *, operator: bool = False) -> dict[str, str]:
        env = super().env_for(service, operator=operator)
        if service == "auth":
            env["AUTH_REGISTER_PER_IP"] = "100000"  # every bench user signs up from 127.0.0.1
        if service == "transfer":
            # A few senders at 8 clients send tens of movements a second each, and the setup
            # funds every wallet at once: the per-user guard is off (--service-env sets it).
            env["TRANSFER_MOVEMENT_RATE_PER_SECOND"] = "0"
        prefix = spec(service).env_prefix + "_"
        env |= {name: value for name, value in self.service_env if name.startswith(prefix)}
        return env

    def _run_to_log(
        self, argv: Sequence[str | Path], log: Path, *, env: dict[str, str], what: str
    ) -> None:
        super()._run_to_log(argv, log, env=env, what=what)
        if what == "gateway config" and self.extra_transfer_port is not None:
            config = self.var_dir / "gateway" / "envoy.json"
            add_endpoint(config, "transfer", LOOPBACK, self.extra_transfer_port)

    def extra_transfer_address(self) -> str:
        return f"{LOOPBACK}:{self.extra_transfer_port}"

    def start_extra_transfer(self) -> ManagedProcess:
        """A second transfer process (same settings, its own port), once it answers health."""
        if self.extra_transfer_port is None:
            raise RuntimeError("the mesh was started without a second transfer endpoint")
        env = self.env_for("transfer") | {"TRANSFER_GRPC_ADDRESS": self.extra_transfer_address()}
        process = ManagedProcess.start(
            EXTRA_TRANSFER,
            [sys.executable, "-m", spec("transfer").server_module],
            log=self.log_dir / f"{EXTRA_TRANSFER}.log",
            env=python_env(env),
            stop_timeout=15.0,
        )
        try:
            with GrpcHealthProbe(self.extra_transfer_address()) as health:
                wait_until(health.probe, what="the second transfer process", proc=process)
        except BaseException:
            process.stop()
            raise
        return process


def envoy_admin(mesh: Mesh, path: str) -> str:
    """GET `path` on Envoy's admin interface (a Unix socket)."""
    conn = http.client.HTTPConnection("localhost", timeout=5.0)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(str(mesh.envoy_admin_socket))
        conn.sock = sock
        conn.request("GET", path)
        return conn.getresponse().read().decode(errors="replace")
    finally:
        conn.close()
        sock.close()


def healthy_endpoints(clusters_text: str, cluster: str) -> list[str]:
    """The endpoints of `cluster` Envoy's /clusters output reports healthy."""
    healthy = []
    for line in clusters_text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and (parts[0], parts[2], parts[3].strip()) == (
            cluster,
            "health_flags",
            "healthy",
        ):
            healthy.append(parts[1])
    return healthy


# -- the runner --------------------------------------------------------------------------------


async def _pending_events(conn: Any) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox_events WHERE status = 'PENDING'"))


async def _reset_statements(conn: Any) -> None:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await conn.execute("SELECT pg_stat_statements_reset()")


async def _top_statements(conn: Any) -> list[Any]:
    """The service database's statements by total execution time since the reset (wall time
    inside PostgreSQL, lock waits included; with track = all a function's own statements
    count inside its call too)."""
    return list(
        await conn.fetch(
            "SELECT calls, total_exec_time, rows, query FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " ORDER BY total_exec_time DESC LIMIT $1",
            PG_STATEMENTS_KEPT,
        )
    )


def per_request(top: Sequence[Any], requests: int) -> list[dict[str, Any]]:
    """Each statement's calls and milliseconds per completed request of the cell."""
    per = max(requests, 1)
    return [
        {
            "calls_per_request": round(row["calls"] / per, 3),
            "ms_per_request": round(row["total_exec_time"] / per, 3),
            "ms_per_call": round(row["total_exec_time"] / max(row["calls"], 1), 3),
            "calls": row["calls"],
            "rows": row["rows"],
            "query": " ".join(row["query"].split())[:300],
        }
        for row in top
    ]


def format_statements(statements: Sequence[dict[str, Any]]) -> str:
    lines = ["    PostgreSQL's time per send, by statement (ms; calls per send; statement):"]
    for s in statements[:PG_STATEMENTS_SHOWN]:
        lines.append(
            f"      {s['ms_per_request']:7.3f}  {s['calls_per_request']:5.2f}  {s['query'][:90]}"
        )
    return "\n".join(lines)


async def _vacuum(conn: Any) -> None:
    """Clears the dead rows of the cells so far (refreshing the planner's statistics) and
    writes their dirty pages out, so that neither autovacuum nor a checkpoint does it inside
    the next cell's window."""
    await conn.execute("VACUUM (ANALYZE)")
    await conn.execute("CHECKPOINT")


@dataclass
class LedgerCheck:
    verdict_ok: bool
    verifier_output: str
    acknowledged: int
    failed: int
    service_sends: int
    pgbench_sends: int
    # Acknowledged sends whose request id is not in the ledger exactly once (lost, or twice).
    acknowledged_not_once: int = 0
    # Sends of the services in the ledger under a request id the bench never sent.
    beyond_the_sends_made: int = 0

    @property
    def consistent_with_acks(self) -> bool:
        """Every acknowledged send is in the ledger exactly once (by its request id), and every
        other send of the services in it is one the bench made and saw fail (its outcome
        unknown)."""
        return self.acknowledged_not_once == 0 and self.beyond_the_sends_made == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "verifier_ok": self.verdict_ok,
            "verifier_output": self.verifier_output,
            "sendmoney_acknowledged": self.acknowledged,
            "sendmoney_failed": self.failed,
            "sendmoney_in_ledger": self.service_sends,
            "pgbench_function_sends_in_ledger": self.pgbench_sends,
            "acknowledged_sends_all_in_ledger": self.consistent_with_acks,
            "acknowledged_not_in_ledger_once": self.acknowledged_not_once,
            "sends_in_ledger_beyond_those_made": self.beyond_the_sends_made,
        }


class Runner:
    """Sets up the wallets and runs every cell of one transfer bench run."""

    def __init__(self, mesh: TransferBenchMesh, opts: Options, pgbench: Path, cores: int) -> None:
        self.mesh = mesh
        self.opts = opts
        self.pgbench_binary = pgbench
        self.cores = cores
        self.notes: list[str] = []
        self.rows: list[TransferRow] = []
        self.tally = Tally()
        self.components = {p.popen.pid: name for name, p in mesh.processes().items()}
        self.extra: ManagedProcess | None = None
        self.pools: list[UserPool] = []
        self.mesh_info: dict[str, Any] = {}
        self.drains: list[dict[str, Any]] = []
        self._last_cell = "the setup"
        self._db: asyncpg.Connection | None = None
        self.sessions: dict[str, int] = {}
        self.pg_statements: dict[str, list[dict[str, Any]]] = {}

    # -- setup ---------------------------------------------------------------------------------

    async def setup(self, run_id: str) -> tuple[Accounts, Accounts | None]:
        opts, mesh = self.opts, self.mesh
        auth, wallet = mesh.grpc_address("auth"), mesh.grpc_address("wallet")
        began = time.perf_counter()
        print_progress(
            f"registering {opts.wallets} users, opening their wallets with a PIN at cost "
            f"{opts.pin_bcrypt_rounds}"
        )
        main = await UserPool.create(auth, opts.wallets, run_id, parallel=SETUP_PARALLEL)
        await main.open_wallets(wallet, parallel=SETUP_PARALLEL)
        self.pools = [main]
        prod: UserPool | None = None
        if "pin" in opts.sections:
            print_progress(
                f"restarting the wallet at PIN cost {opts.production_pin_rounds} and opening "
                f"{opts.pin_workers} more wallets there (bcrypt verifies at the cost a PIN "
                "was set with)"
            )
            mesh.pin_bcrypt_rounds = opts.production_pin_rounds
            mesh.restart_service("wallet")
            await ping_wallet(mesh)
            self.components = {p.popen.pid: name for name, p in mesh.processes().items()}
            prod = await UserPool.create(
                auth, opts.pin_workers, f"{run_id}-pin", parallel=SETUP_PARALLEL
            )
            await prod.open_wallets(wallet, parallel=SETUP_PARALLEL)
            self.pools.append(prod)
        accounts = Accounts.of(main)
        production = Accounts.of(prod) if prod is not None else None
        everyone = [*accounts.all, *(production.all if production else ())]
        print_progress("raising the FULL tier's send and top-up limits (a super_admin)")
        keys = await raise_limits(mesh, run_id)
        print_progress(f"approving KYC for {len(everyone)} wallets (SetKycTier FULL)")
        await approve_kyc(mesh, everyone, parallel=SETUP_PARALLEL)
        print_progress("trusting 127.0.0.1 for every user (CheckIpTrust, mailed code, ConfirmIp)")
        await trust_loopback(mesh, everyone, parallel=SETUP_PARALLEL)
        print_progress(f"funding every wallet with {FUND_MINOR} paise (TopUp)")
        await fund(mesh, everyone, FUND_MINOR, parallel=SETUP_PARALLEL)
        copied = await self._with_database(
            lambda conn: prepare_reference(conn, accounts.wallet_ids, accounts.user_ids)
        )
        pin_costs = await self._pin_costs([*accounts.all, *(production.all if production else ())])
        print_progress(
            f"wallets ready in {time.perf_counter() - began:.1f} s; pgbench's {REFERENCE_SCHEMA} "
            f"copies made ({copied} foreign keys and triggers copied); stored PIN costs: "
            + ", ".join(f"{cost} x{count}" for cost, count in sorted(pin_costs.items()))
        )
        self.mesh_info |= {
            "wallets": len(accounts),
            "production_pin_wallets": 0 if production is None else len(production),
            "limits_raised": keys,
            "fund_minor": FUND_MINOR,
            "max_amount_minor": MAX_AMOUNT_MINOR,
            "stored_pin_costs": pin_costs,
            "reference_schema": REFERENCE_SCHEMA,
            "copied_foreign_keys_and_triggers": copied,
        }
        return accounts, production

    async def _with_database(self, work: Any) -> Any:
        """`work(connection)` on the bench's own connection: the superuser on the service's
        database (opened once, so the bench's polls add no sessions of their own)."""
        if self._db is None or self._db.is_closed():
            infra, dbs = self.mesh.infra, self.mesh.databases
            assert infra is not None and dbs is not None
            server = infra.postgres
            self._db = await asyncpg.connect(
                host=server.host,
                port=server.port,
                user=server.superuser,
                password=server.password,
                database=dbs.vaultpay_database,
                timeout=30,
            )
        return await work(self._db)

    async def _sessions(self) -> int:
        """Sessions ever opened on the service's database (PostgreSQL's statistics)."""

        async def read(conn: Any) -> int:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            return int(
                await conn.fetchval(
                    "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
                )
            )

        found: int = await self._with_database(read)
        return found

    async def _pin_costs(self, accounts: Sequence[Account]) -> dict[str, int]:
        """How many of the wallets' stored PIN hashes have each bcrypt cost."""

        async def read(conn: Any) -> dict[str, int]:
            rows = await conn.fetch(
                "SELECT split_part(pin_hash, '$', 3) AS cost, count(*) AS n FROM wallet_pins "
                "WHERE wallet_id = ANY($1) GROUP BY 1",
                [a.wallet_id for a in accounts],
            )
            return {str(r["cost"]): int(r["n"]) for r in rows}

        found: dict[str, int] = await self._with_database(read)
        return found

    def pgbench_target(self, accounts: Accounts) -> PgbenchTarget:
        infra, dbs = self.mesh.infra, self.mesh.databases
        assert infra is not None and dbs is not None
        server = infra.postgres
        return PgbenchTarget(
            binary=self.pgbench_binary,
            host=server.host,
            port=server.port,
            user=server.superuser,
            password=server.password,
            database=dbs.vaultpay_database,
            workdir=self.mesh.var_dir / "pgbench",
            wallets=len(accounts),
            max_amount=MAX_AMOUNT_MINOR,
        )

    def targets(self, extra: bool = False) -> list[SendTarget]:
        found: list[SendTarget] = []
        if "grpc" in self.opts.paths:
            addresses = [self.mesh.grpc_address("transfer")]
            if extra:
                addresses.append(self.mesh.extra_transfer_address())
            found.append(GrpcSends(addresses, self.tally))
        if "http" in self.opts.paths:
            try:
                gateway = urlsplit(self.mesh.gateway_url)
            except RuntimeError as exc:
                self._warn(f"Envoy JSON path skipped: {exc}")
            else:
                host, port = gateway.hostname or LOOPBACK, gateway.port or 80
                found.append(HttpSends(host, port, self.tally))
        return found

    # -- cells ---------------------------------------------------------------------------------

    async def measure(self, run_id: str) -> tuple[list[TransferRow], list[str], LedgerCheck]:
        opts = self.opts
        accounts, production = await self.setup(run_id)
        pgbench = self.pgbench_target(accounts)
        targets = self.targets()
        for target in targets:
            draw = Draw(accounts, 0, MAX_AMOUNT_MINOR)
            problem = await check_send(target, draw, accounts.sender(0))
            if problem:
                self._warn(f"sanity check: {problem}")
        progress = Progress(cell_count(opts), time.perf_counter())
        try:
            for key in opts.sections:
                section = SECTIONS[key]
                if key in ("uniform", "hot"):
                    hot = opts.hot_percent if key == "hot" else 0
                    for clients in opts.concurrency:
                        await self._fresh_tokens()
                        await self._level(
                            section, clients, hot, accounts, pgbench, targets, progress
                        )
                elif key == "pin" and production is not None:
                    await self._fresh_tokens()
                    await self._pin_cells(accounts, production, targets, progress)
                elif key == "two":
                    await self._fresh_tokens()
                    await self._two_cells(accounts, targets, progress)
        finally:
            if self.extra is not None:
                self.extra.stop()
                self.extra = None
        await self._quiesce(self._last_cell)
        ledger = await self.verify_ledger()
        if self._db is not None:
            await self._db.close()
        return self.rows, self.notes, ledger

    async def _fresh_tokens(self) -> None:
        for pool in self.pools:
            if await pool.ensure_fresh_tokens(parallel=SETUP_PARALLEL):
                print_progress("access tokens were close to expiry: logged everyone in again")

    def _warn(self, note: str) -> None:
        self.notes.append(note)
        print_progress(f"warning: {note}")

    def _check_mesh(self) -> None:
        dead = self.mesh.exited()
        if self.extra is not None and (code := self.extra.exited()) is not None:
            dead[EXTRA_TRANSFER] = code
        raise_if_died(dead, self.mesh.log_dir)

    async def _quiesce(self, after: str) -> None:
        """Waits until every outbox event (the notifications of the sends so far) is
        delivered, then vacuums the database (as pgbench does before a run unless told not
        to) and checkpoints it, so the relay's, the wallet's, autovacuum's and the
        checkpointer's work for one cell's rows does not run in the next one; records how
        many were pending and how long each step took."""
        began = time.perf_counter()
        deadline = began + DRAIN_TIMEOUT
        before = cpu_sample(self._components())
        pending = first = await self._with_database(_pending_events)
        while pending and time.perf_counter() < deadline:
            await asyncio.sleep(0.2)
            pending = await self._with_database(_pending_events)
        took = time.perf_counter() - began
        after_cpu = cpu_sample(self._components())
        per_event = (
            usage_between(before, after_cpu).ms_per_request((first - pending) / took)
            if before and after_cpu and first > pending
            else {}
        )
        vacuum_began = time.perf_counter()
        await self._with_database(_vacuum)
        vacuumed = time.perf_counter() - vacuum_began
        self.drains.append(
            {
                "after": after,
                "pending": first,
                "seconds": round(took, 2),
                "left": pending,
                "vacuum_seconds": round(vacuumed, 2),
                "cpu_ms_per_event": {k: round(v, 3) for k, v in per_event.items()},
            }
        )
        if pending:
            self._warn(f"{pending} outbox events still pending {DRAIN_TIMEOUT:g} s after {after}")
        elif first:
            print(
                f"    outbox: {first} notification events were pending; delivered in {took:.1f} s"
                + (f"; CPU ms per event: {format_ms(per_event)}" if first >= 100 else "")
            )

    def _components(self) -> dict[int, str]:
        found = dict(self.components)
        if self.extra is not None:
            found[self.extra.pid] = EXTRA_TRANSFER
        return found

    async def _pgbench_cell(
        self,
        pgbench: PgbenchTarget,
        kind: str,
        section: str,
        clients: int,
        hot: int,
        progress: Progress,
    ) -> TransferRow:
        name = PLAIN_ROW if kind == PLAIN else FUNCTION_ROW
        await self._quiesce(self._last_cell)
        self._last_cell = f"{name}, {section}, {clients} clients"
        progress.cell(f"{self._last_cell} ...")
        run = await pgbench.run(
            kind,
            clients=clients,
            warmup=self.opts.warmup,
            seconds=self.opts.seconds,
            hot_percent=hot,
            cores=self.cores,
            base_env=os.environ,
            components=self._components(),
        )
        print(summary(run.stats, run.cpu), flush=True)
        if run.stats.errors or run.returncode not in (0,):
            self._warn(f"pgbench {kind} ({section}, {clients} clients) said: {run.stderr_tail}")
        self._check_mesh()
        return TransferRow(
            name,
            "pgbench",
            kind == PLAIN,
            run.stats,
            self.opts.warmup,
            against=Against.NOTHING if kind == PLAIN else Against.BASELINE,
            section=section,
            cpu=run.cpu,
        )

    async def _send_cell(
        self,
        target: SendTarget,
        draw: Draw,
        senders: Sequence[Account],
        clients: int,
        progress: Progress,
        *,
        what: str,
        warmup: float | None = None,
        window: float | None = None,
    ) -> tuple[CellStats, CpuUsage | None]:
        warmup = self.opts.warmup if warmup is None else warmup
        window = self.opts.seconds if window is None else window
        longer = ""
        if (warmup, window) != (self.opts.warmup, self.opts.seconds):
            longer = f" (warm-up {warmup:g} s, window {window:g} s)"
        await self._quiesce(self._last_cell)
        self._last_cell = f"{what} via {target.path}, {clients} clients"
        progress.cell(f"{self._last_cell}{longer} ...")
        session = await target.open(clients, draw, senders)
        opened = await self._sessions()
        try:
            stats, cpu, _ = await asyncio.gather(
                run_cell(
                    session.call,
                    concurrency=clients,
                    seconds=window,
                    warmup=warmup,
                    request_timeout=self.opts.timeout,
                ),
                measure_window(warmup, window, self._components()),
                self._reset_statements_after(warmup),
            )
        finally:
            await session.close()
        opened = await self._sessions() - opened
        self.sessions[self._last_cell] = opened
        print(summary(stats, cpu), flush=True)
        print(f"    database sessions the services opened during the cell: {opened}", flush=True)
        if self.opts.pg_statements:
            top = await self._with_database(_top_statements)
            self.pg_statements[self._last_cell] = per_request(top, stats.ok)
            print(format_statements(self.pg_statements[self._last_cell]), flush=True)
        self._check_mesh()
        return stats, cpu

    async def _reset_statements_after(self, warmup: float) -> None:
        """With --pg-statements, starts PostgreSQL's statement counts when the cell's window
        does (the warm-up's requests are not counted in its figures either)."""
        if self.opts.pg_statements:
            await asyncio.sleep(warmup)
            await self._with_database(_reset_statements)

    async def _level(
        self,
        section: str,
        clients: int,
        hot: int,
        accounts: Accounts,
        pgbench: PgbenchTarget,
        targets: Sequence[SendTarget],
        progress: Progress,
    ) -> None:
        """One client count of a section: both pgbench references, then SendMoney per path."""
        plain = await self._pgbench_cell(pgbench, PLAIN, section, clients, hot, progress)
        function = await self._pgbench_cell(pgbench, FUNCTION, section, clients, hot, progress)
        self.rows.append(plain)
        self.rows.append(against_reference(function, plain, "pgbench plain"))
        draw = Draw(accounts, hot, MAX_AMOUNT_MINOR)
        senders = [accounts.sender(i) for i in range(clients)]
        goal = HOT_GOAL if hot else UNIFORM_GOAL
        for target in targets:
            stats, cpu = await self._send_cell(
                target, draw, senders, clients, progress, what=f"{SEND}, {section}"
            )
            row = TransferRow(
                SEND,
                target.path,
                False,
                stats,
                self.opts.warmup,
                goal=goal,
                section=section,
                cpu=cpu,
            )
            self.rows.append(against_reference(row, plain, "pgbench plain"))

    async def _pin_cells(
        self,
        accounts: Accounts,
        production: Accounts,
        targets: Sequence[SendTarget],
        progress: Progress,
    ) -> None:
        """PIN-checked SendMoney at the production cost against cores / bcrypt time."""
        opts = self.opts
        rounds = opts.production_pin_rounds
        running = process_env(self.mesh.services["wallet"].popen.pid, "WALLET_PIN_BCRYPT_ROUNDS")
        if running != str(rounds):
            self._warn(f"the wallet runs at PIN cost {running}, not {rounds}")
        bcrypt = Bcrypt(rounds, bcrypt_ms(rounds))
        workers = len(production)
        ceiling = bcrypt.ceiling(workers, self.cores)
        self.mesh_info |= {
            "production_pin_rounds": rounds,
            "pin_bcrypt_ms_one_core": round(bcrypt.ms, 2),
            "pin_ceiling_rps": round(ceiling, 2),
        }
        self.notes.append(
            f"production PIN cost {rounds}: one hash takes {bcrypt.ms:.1f} ms of CPU here, so a "
            f"PIN-checked send cannot exceed ~{ceiling:.1f}/s with {workers} clients on "
            f"{self.cores} cores"
        )
        print_progress(self.notes[-1])
        warmup = queue_warmup(opts.warmup, workers, bcrypt.ms, self.cores)
        window = slow_window(opts, ceiling)
        # Recipients among the ledger cells' wallets (production wallets only send).
        draw = Draw(accounts, 0, MAX_AMOUNT_MINOR)
        senders = list(production.all)
        for target in targets:
            stats, cpu = await self._send_cell(
                target,
                draw,
                senders,
                workers,
                progress,
                what=f"{SEND}, PIN cost {rounds}",
                warmup=warmup,
                window=window,
            )
            self.rows.append(
                TransferRow(
                    f"{SEND}, PIN cost {rounds}",
                    target.path,
                    False,
                    stats,
                    warmup,
                    against=Against.CEILING,
                    reference=ceiling,
                    goal=PIN_GOAL,
                    section=PIN,
                    cpu=cpu,
                )
            )

    async def _wait_envoy_endpoints(self, count: int) -> bool:
        """Waits (up to 20 s) until Envoy's transfer cluster has `count` healthy endpoints."""
        if self.mesh.envoy is None:
            return False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                text = await asyncio.to_thread(envoy_admin, self.mesh, "/clusters")
            except OSError:
                text = ""
            if len(healthy_endpoints(text, "transfer")) == count:
                return True
            await asyncio.sleep(0.25)
        return False

    async def _two_cells(
        self, accounts: Accounts, targets: Sequence[SendTarget], progress: Progress
    ) -> None:
        """SendMoney at the most clients with one transfer process, then with two."""
        clients = self.opts.two_clients
        draw = Draw(accounts, 0, MAX_AMOUNT_MINOR)
        senders = [accounts.sender(i) for i in range(clients)]
        one: dict[str, TransferRow] = {}
        if not await self._wait_envoy_endpoints(1):
            self._warn("Envoy does not show exactly one healthy transfer endpoint")
        for target in targets:
            stats, cpu = await self._send_cell(
                target, draw, senders, clients, progress, what=f"{SEND}, 1 transfer process"
            )
            row = TransferRow(
                f"{SEND}, 1 process",
                target.path,
                False,
                stats,
                self.opts.warmup,
                section=TWO,
                cpu=cpu,
            )
            one[target.path] = row
            self.rows.append(dataclasses.replace(row, baseline=True, against=Against.NOTHING))
        print_progress("starting a second transfer process (Envoy's second endpoint)")
        self.extra = await asyncio.to_thread(self.mesh.start_extra_transfer)
        if not await self._wait_envoy_endpoints(2):
            self._warn("Envoy did not report both transfer endpoints healthy within 20 s")
        try:
            for target in self.targets(extra=True):
                stats, cpu = await self._send_cell(
                    target, draw, senders, clients, progress, what=f"{SEND}, 2 transfer processes"
                )
                row = TransferRow(
                    f"{SEND}, 2 processes",
                    target.path,
                    False,
                    stats,
                    self.opts.warmup,
                    section=TWO,
                    cpu=cpu,
                )
                self.rows.append(against_reference(row, one.get(target.path), "1 process"))
        finally:
            extra, self.extra = self.extra, None
            if extra is not None:
                await asyncio.to_thread(extra.stop)

    # -- the ledger ------------------------------------------------------------------------------

    async def verify_ledger(self) -> LedgerCheck:
        """The verifier's verdict, and the acknowledged sends against the ledger's."""
        print_progress("verifying the ledger (vaultpay-transfer verify-ledger)")
        argv = [sys.executable, "-m", "vaultpay_transfer.entrypoints.cli", "verify-ledger"]
        done = await asyncio.to_thread(
            subprocess.run,
            argv,
            env=python_env(self.mesh.env_for("transfer")),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = (done.stdout + done.stderr).strip()

        acknowledged = self.tally.acknowledged
        made = acknowledged | self.tally.failed_ids

        async def compare(conn: Any) -> tuple[int, int, int, int]:
            # The services' sends: every P2P debit but those pgbench's function cells made
            # (their keys' callers are pgbench's), each by its request id.
            rows = await conn.fetch(
                "SELECT request_id::text AS id, count(*) AS n FROM wallet_transactions"
                " WHERE category = 'P2P_SEND' AND request_id NOT IN (SELECT request_id::uuid"
                " FROM idempotency_records WHERE starts_with(caller, $1)) GROUP BY request_id",
                PGBENCH_CALLER_PREFIX,
            )
            pgbench = await conn.fetchval(
                "SELECT count(*) FROM idempotency_records WHERE starts_with(caller, $1)",
                PGBENCH_CALLER_PREFIX,
            )
            in_ledger = {str(r["id"]): int(r["n"]) for r in rows}
            not_once = sum(1 for rid in acknowledged if in_ledger.get(rid) != 1)
            beyond = sum(n for rid, n in in_ledger.items() if rid not in made)
            return sum(in_ledger.values()), int(pgbench), not_once, beyond

        sends, pgbench, not_once, beyond = await self._with_database(compare)
        return LedgerCheck(
            done.returncode == 0,
            output,
            self.tally.ok,
            self.tally.failed,
            sends,
            pgbench,
            acknowledged_not_once=not_once,
            beyond_the_sends_made=beyond,
        )


# -- output ------------------------------------------------------------------------------------

PROFILE_ORDER = ("client", "pgbench", "envoy", "transfer", EXTRA_TRANSFER, "wallet", "auth")


def format_profile(rows: Sequence[Row]) -> str:
    """CPU milliseconds per completed request, by process, for every measured cell."""
    names: list[str] = []
    for row in rows:
        if row.cpu is not None:
            names += [n for n in row.cpu.parts if n not in names]

    def busy(name: str) -> bool:  # used a noticeable share in some cell
        return any(
            r.cpu is not None
            and r.stats.rps > 0
            and r.cpu.ms_per_request(r.stats.rps).get(name, 0) >= 0.05
            for r in rows
        )

    names = [n for n in names if busy(n)]
    ordered = [n for n in PROFILE_ORDER if n in names] + sorted(
        n for n in names if n not in PROFILE_ORDER
    )
    header = ["cell", "clients", *ordered, "total", "other cpu"]
    body: list[list[str]] = []
    for row in rows:
        if row.cpu is None or row.stats.rps <= 0:
            continue
        per = row.cpu.ms_per_request(row.stats.rps)
        shown = [per.get(n, 0.0) for n in ordered]
        if not any(v >= 0.005 for v in shown):
            continue
        label = f"{row.workload} / {row.path} / {row.section}"
        body.append(
            [
                label,
                str(row.stats.concurrency),
                *(f"{v:.2f}" for v in shown),
                f"{sum(shown):.2f}",
                f"{row.cpu.other:.2f}",
            ]
        )
    if not body:
        return "CPU per request: not measured (no /proc)"
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *body]
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def format_drains(drains: Sequence[dict[str, Any]], *, at_least: int = 100) -> str:
    """The notification backlogs the bench waited out between cells (the relay delivering each
    event to wallet's CreateNotification): how fast the notifications follow the ledger, and
    what a notification event costs each process while a backlog drains."""
    lines = []
    for drain in drains:
        pending, seconds = int(drain["pending"]), float(drain["seconds"])
        per_event = drain.get("cpu_ms_per_event") or {}
        if pending >= at_least and seconds > 0:
            lines.append(
                f"  after {drain['after']}: {pending} pending, delivered in {seconds:.1f} s "
                f"({pending / seconds:.0f} events/s)"
                + (f", {drain['left']} left" if drain["left"] else "")
                + (f"; CPU ms per event: {format_ms(per_event)}" if per_event else "")
            )
    if not lines:
        return "notification backlogs: none worth telling"
    return "notification backlogs waited out before the next cell:\n" + "\n".join(lines)


def format_ledger(check: LedgerCheck) -> str:
    verdict = "CONSISTENT" if check.verdict_ok else "NOT CONSISTENT"
    lines = [f"ledger verifier: {verdict}"]
    lines += [f"  {line}" for line in check.verifier_output.splitlines()]
    acks = "yes" if check.consistent_with_acks else "NO"
    lines.append(
        f"sends: {check.acknowledged} SendMoney acknowledged, {check.failed} failed; "
        f"{check.service_sends} in the ledger (+ {check.pgbench_sends} by pgbench's function "
        f"cells); every acknowledged send in the ledger once by its request id, none beyond"
        f" the sends made: {acks}"
        + (
            ""
            if check.consistent_with_acks
            else f" ({check.acknowledged_not_once} acknowledged not there once,"
            f" {check.beyond_the_sends_made} there beyond them)"
        )
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    exit_on_sigterm()
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp.lower()}-{uuid.uuid4().hex[:6]}"
    machine = machine_info()
    cores = available_cores()
    notes = [
        f"client and servers share the {cores} cores of this machine: the load generator "
        "(this process) or pgbench, auth, wallet, transfer, Envoy, PostgreSQL and Redis all "
        "compete for them. Read ratios, not absolutes."
    ]
    print_progress(
        f"VaultPay transfer bench: clients {','.join(map(str, opts.concurrency))}, "
        f"{opts.seconds:g} s per cell after {opts.warmup:g} s warm-up, {opts.wallets} wallets, "
        f"sections {','.join(opts.sections)}, profile {opts.profile}"
        f"{' (quick)' if opts.quick else ''}"
    )
    print_progress(f"note: {notes[0]}")
    if opts.ignored:
        notes.append(f"ignored (options of tests.bench.run): {' '.join(opts.ignored)}")
        print_progress(f"warning: {notes[-1]}")
    pgbench = find_pgbench()
    warn_if_busy_before_run(notes, cores)

    var_dir = scratch_dir("vaultpay-bench-transfer-")
    config = MeshConfig.for_tests(
        var_dir,
        profile=opts.profile,
        services=("auth", "wallet", "transfer"),
        bcrypt_rounds=opts.bcrypt_rounds,
        gateway_rate_limit=opts.gateway_rate_limit,
        postgres_settings=PG_STATEMENTS_SETTINGS if opts.pg_statements else (),
    )
    extra_port = free_ports(1)[0] if "two" in opts.sections else None
    rows: list[TransferRow] = []
    mesh_info: dict[str, Any] = {}
    ledger: LedgerCheck | None = None
    drains: list[dict[str, Any]] = []
    sessions: dict[str, int] = {}
    pg_statements: dict[str, list[dict[str, Any]]] = {}
    loop_name = "?"
    try:
        mesh = TransferBenchMesh(
            config,
            pin_bcrypt_rounds=opts.pin_bcrypt_rounds,
            extra_transfer_port=extra_port,
            service_env=opts.service_env,
        )
        with mesh:
            runner = Runner(mesh, opts, pgbench, cores)
            runner.mesh_info = {
                "profile": opts.profile,
                "transfer_address": mesh.grpc_address("transfer"),
                "gateway_url": mesh.gateway_url if mesh.envoy is not None else None,
                "envoy_rate_limit": envoy_rate_limit(mesh.var_dir / "gateway" / "envoy.json"),
                "pgbench": str(pgbench),
                "pin_bcrypt_rounds": opts.pin_bcrypt_rounds,
            }
            try:
                (rows, run_notes, ledger), loop_name = run_async(runner.measure(run_id))
            finally:
                mesh_info = runner.mesh_info
                drains = runner.drains
                sessions = runner.sessions
                pg_statements = runner.pg_statements
            notes += run_notes
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)

    print()
    print(format_table(list(rows)))
    print()
    print(format_goals(list(rows)))
    print()
    print("CPU milliseconds per request, by process (tests/bench/cpu.py):")
    print(format_profile(rows))
    print()
    print(format_drains(drains))
    print()
    if ledger is not None:
        print(format_ledger(ledger))
        print()
    print(
        f"req/s = successful requests completed in the measured window ({opts.seconds:g} s; "
        "PIN-checked cells longer) after a warm-up; pgbench counts the transactions its "
        "per-transaction log shows completed in the same window. ratio of 'pgbench plain' = "
        "req/s / the plain-SQL pgbench's at the same clients and variant (measured just "
        "before); of 'ceiling' = req/s / (min(clients, cores) / one bcrypt hash's CPU time); "
        "of '1 process' = req/s with two transfer processes / with one. The hot-wallet goal "
        f"also needs p99 < {HOT_GOAL.p99_ms:g} ms. '~' marks a p99 from fewer than "
        f"{FEW_SAMPLES} requests or a ratio from too few. other cpu = cores busy outside the "
        "bench during the window. Goals are printed, never enforced."
    )
    for note in notes:
        print(f"note: {note}")

    document = {
        "machine": machine,
        "config": {
            "concurrency": list(opts.concurrency),
            "seconds": opts.seconds,
            "warmup": opts.warmup,
            "profile": opts.profile,
            "paths": [PATHS[p] for p in opts.paths],
            "sections": [SECTIONS[s] for s in opts.sections],
            "pin_workers": opts.pin_workers,
            "hot_percent": opts.hot_percent,
            "timeout": opts.timeout,
            "quick": opts.quick,
            "service_env": dict(opts.service_env),
            "goals": {
                UNIFORM: str(UNIFORM_GOAL),
                HOT: str(HOT_GOAL),
                PIN: str(PIN_GOAL),
            },
        },
        "client": {
            "event_loop": loop_name,
            "grpc": "grpc.aio, one channel (own connection) per 4 workers",
            "http": "asyncio HTTP/1.1 keep-alive, one connection per worker",
            "pgbench": "-M prepared, -j min(clients, cores), per-transaction log",
            "pid": os.getpid(),
        },
        "mesh": mesh_info,
        "notes": notes,
        "ledger": None if ledger is None else ledger.as_json(),
        "outbox_drains": drains,
        "database_sessions_opened_per_send_cell": sessions,
        "pg_statements_per_send_cell": pg_statements,
        "results": [r.as_json() for r in rows],
    }
    saved = save_results(opts.out, f"transfer-{stamp}", document)
    print(f"saved {saved}")
    return 0


def cli() -> int:
    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted: the mesh was stopped, no results saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(cli())
