"""`make bench`: auth's Login and GetMe and the wallet's GetBalance, GetMyWallet and VerifyPin,
each against a reference measured or timed in the same run.

    .venv/bin/python -m tests.bench.run                      # 1, 8, 32 workers (~4 minutes)
    .venv/bin/python -m tests.bench.run --quick              # a short smoke run
    .venv/bin/python -m tests.bench.run --workloads getbalance,contention --concurrency 1,16

Starts the mesh (auth, wallet and Envoy, private PostgreSQL and Redis on free ports, in a scratch
directory) with the wallet at its production PIN cost, registers users, logs them in and opens
their wallets with a PIN, then measures every (path, workers) cell, direct gRPC and through
Envoy as JSON:

* the baseline GetJwks, GetMe, GetBalance and GetMyWallet: req/s against the baseline's;
* Login and VerifyPin: req/s against what bcrypt allows, min(workers, cores) / one hash's time
  (timed in-process at the service's cost);
* once per path, GetBalance alone and then while VerifyPin saturates the CPU, back to back:
  the loaded p99 against the idle one (same path, same workers).

Rows with a goal say whether it was met; nothing fails the command. Prints the table and saves
it with the machine's description to bench-results/bench-<timestamp>.json. The mesh is stopped
on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.bench.cpu import CpuUsage, measure_window
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
    int_list,
    process_env,
    queue_warmup,
    raise_if_died,
    run_async,
    slow_window,
    summary,
    warn_if_busy_before_run,
    workers_text,
)
from tests.bench.load import CellStats, run_cell
from tests.bench.report import (
    FEW_SAMPLES,
    RATE_LIMITED,
    Against,
    Goal,
    Row,
    attach_references,
    format_goals,
    format_table,
    machine_info,
    save_results,
)
from tests.bench.workloads import (
    BASELINE,
    GETBALANCE,
    GETME,
    GETMYWALLET,
    LOGIN,
    VERIFYPIN,
    WALLET_WORKLOADS,
    GrpcTarget,
    HttpTarget,
    Target,
    UserPool,
)
from vaultpay_devstack.infra import scratch_dir
from vaultpay_devstack.mesh import Mesh, MeshConfig, print_progress

REPO_ROOT = Path(__file__).resolve().parents[2]
PATHS = {"grpc": "gRPC", "http": "Envoy JSON"}
# The contention cell: GetBalance probed while VerifyPin saturates the CPU.
CONTENTION = "contention"
PROBE = "GetBalance, VerifyPin load"
PROBE_IDLE = "GetBalance, idle"
PROBE_LOAD = "VerifyPin (the load)"
MEASURED = {
    "getme": GETME,
    "login": LOGIN,
    "getbalance": GETBALANCE,
    "getmywallet": GETMYWALLET,
    "verifypin": VERIFYPIN,
    CONTENTION: PROBE,
}
# The wallet issue's goals: a read costs little more than an echo; VerifyPin keeps the cores
# busy with bcrypt; a read's tail stays usable while PIN checks saturate the CPU.
GOALS = {
    GETBALANCE: Goal(0.6),
    GETMYWALLET: Goal(0.6),
    VERIFYPIN: Goal(0.85),
    PROBE: Goal(3.0, at_most=True),
}
SETUP_PARALLEL = 4


@dataclass(frozen=True)
class Options:
    concurrency: tuple[int, ...]
    seconds: float
    warmup: float
    users: int
    profile: str
    paths: tuple[str, ...]
    workloads: tuple[str, ...]
    timeout: float
    out: Path
    quick: bool
    bcrypt_rounds: int
    pin_bcrypt_rounds: int
    pin_load: int
    gateway_rate_limit: str

    @property
    def wallet(self) -> bool:
        """Whether any selected workload needs the wallet service."""
        return any(MEASURED[w] in WALLET_WORKLOADS or w == CONTENTION for w in self.workloads)

    @property
    def verify_workers(self) -> int:
        """The most VerifyPin workers any cell runs (each acts as one user)."""
        most = max(self.concurrency) if "verifypin" in self.workloads else 0
        return max(most, self.pin_load if CONTENTION in self.workloads else 0)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run",
        description="auth and wallet RPCs against a GetJwks baseline or their bcrypt ceiling, "
        "direct gRPC and Envoy JSON.",
    )
    parser.add_argument(
        "--concurrency", type=int_list, help="worker counts, comma-separated (1,8,32)"
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (3)")
    parser.add_argument("--warmup", type=float, help="unmeasured warm-up seconds per cell (1)")
    parser.add_argument(
        "--users",
        type=int,
        help="users registered, logged in and given a wallet first (32; raised to the most "
        "VerifyPin workers, so no wallet has two PIN checks in flight)",
    )
    parser.add_argument(
        "--profile",
        choices=("dev", "test"),
        default="dev",
        help="mesh profile: dev = durable PostgreSQL (default); test = PostgreSQL without fsync",
    )
    parser.add_argument(
        "--paths", type=choice_list(PATHS), default=tuple(PATHS), help="grpc,http (both)"
    )
    parser.add_argument(
        "--workloads",
        type=choice_list(MEASURED),
        default=tuple(MEASURED),
        help=f"{','.join(MEASURED)} (all; the GetJwks baseline always runs)",
    )
    parser.add_argument(
        "--bcrypt-rounds",
        type=int,
        default=10,
        help="auth's password bcrypt cost for the run (10; the dev profile uses 12, tests 4)",
    )
    parser.add_argument(
        "--pin-bcrypt-rounds",
        type=int,
        default=PRODUCTION_PIN_ROUNDS,
        help=f"the wallet's PIN bcrypt cost (WALLET_PIN_BCRYPT_ROUNDS; default "
        f"{PRODUCTION_PIN_ROUNDS}, the production cost)",
    )
    parser.add_argument(
        "--pin-load",
        type=int,
        help="VerifyPin workers that saturate the CPU in the contention cell (4 x cores; "
        "--quick: 2 x cores)",
    )
    parser.add_argument(
        "--gateway-rate-limit",
        default="1000000/1000000",
        help="the gateway's global bucket RATE/BURST for the run; lifted by default so the "
        "baseline measures Envoy, not its rate limit (production default 1000/2000)",
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
        help="smoke run: concurrency 1,4, 0.5 s cells, 0.2 s warm-up, 4 users "
        "(explicit flags still win)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    cores = available_cores()
    defaults = ((1, 4), 0.5, 0.2, 4, 2 * cores) if quick else ((1, 8, 32), 3.0, 1.0, 32, 4 * cores)
    options = Options(
        concurrency=args.concurrency or defaults[0],
        seconds=args.seconds if args.seconds is not None else defaults[1],
        warmup=args.warmup if args.warmup is not None else defaults[2],
        users=args.users if args.users is not None else defaults[3],
        profile=args.profile,
        paths=args.paths,
        workloads=args.workloads,
        timeout=args.timeout,
        out=args.out,
        quick=quick,
        bcrypt_rounds=args.bcrypt_rounds,
        pin_bcrypt_rounds=args.pin_bcrypt_rounds,
        pin_load=args.pin_load if args.pin_load is not None else defaults[4],
        gateway_rate_limit=args.gateway_rate_limit,
    )
    if options.seconds <= 0 or options.warmup < 0 or options.users < 1 or options.timeout <= 0:
        parser.error("--seconds and --timeout must be > 0, --warmup >= 0, --users >= 1")
    if options.pin_load < 1 or not 4 <= options.pin_bcrypt_rounds <= 16:
        parser.error("--pin-load must be >= 1 and --pin-bcrypt-rounds between 4 and 16")
    return options


def _bcrypt_parallel_rps(rounds: int, threads: int) -> float:
    """Hashes per second with `threads` threads hashing at once (bcrypt releases the GIL): what
    the cores deliver in parallel, which on shared or SMT cores is less than cores / one hash."""
    import bcrypt

    salt = bcrypt.gensalt(rounds)
    count = 2 * threads
    with ThreadPoolExecutor(max_workers=threads) as pool:
        began = time.perf_counter()
        list(pool.map(lambda _: bcrypt.hashpw(b"x" * 44, salt), range(count)))
        return count / (time.perf_counter() - began)


class Runner:
    """Runs every cell of one bench run against a started mesh."""

    def __init__(
        self, mesh: Mesh, opts: Options, *, auth: Bcrypt, pin: Bcrypt | None, cores: int
    ) -> None:
        self.mesh = mesh
        self.opts = opts
        self.auth = auth
        self.pin = pin
        self.cores = cores
        self.notes: list[str] = []
        self.rows: list[Row] = []
        # pid -> name of each process the mesh started, for the per-component CPU figures.
        self.components = {p.popen.pid: name for name, p in mesh.processes().items()}

    def _plain_workloads(self) -> list[str]:
        return [BASELINE, *(MEASURED[w] for w in self.opts.workloads if w != CONTENTION)]

    def cell_count(self, targets: int) -> int:
        per_target = len(self._plain_workloads()) * len(self.opts.concurrency)
        return targets * (per_target + 2 * (CONTENTION in self.opts.workloads))

    async def measure(self, run_id: str) -> tuple[list[Row], list[str]]:
        """Sets up users and wallets, checks each path once, then runs every cell."""
        opts, mesh = self.opts, self.mesh
        auth = mesh.grpc_address("auth")
        print_progress(f"registering {opts.users} users and logging them in (through gRPC)")
        began = time.perf_counter()
        users = await UserPool.create(auth, opts.users, run_id, parallel=SETUP_PARALLEL)
        print_progress(f"users ready in {time.perf_counter() - began:.1f} s")
        addresses = {"auth": auth}
        if opts.wallet:
            addresses["wallet"] = mesh.grpc_address("wallet")
            print_progress(
                f"opening {opts.users} wallets and setting their PINs (through gRPC; "
                f"SetPin hashes at cost {self.pin.rounds if self.pin else '?'})"
            )
            began = time.perf_counter()
            await users.open_wallets(addresses["wallet"], parallel=SETUP_PARALLEL)
            print_progress(f"wallets ready in {time.perf_counter() - began:.1f} s")

        targets: list[Target] = []
        if "grpc" in opts.paths:
            targets.append(GrpcTarget(addresses, users))
        if "http" in opts.paths:
            try:
                gateway = urlsplit(mesh.gateway_url)
            except RuntimeError as exc:
                self._warn(f"Envoy JSON path skipped: {exc}")
            else:
                host, port = gateway.hostname or "127.0.0.1", gateway.port or 80
                targets.append(HttpTarget(host, port, users))
        selected = self._plain_workloads()
        for target in targets:
            for problem in await target.check(selected):
                self._warn(f"sanity check: {problem}")

        progress = Progress(self.cell_count(len(targets)), time.perf_counter())
        for target in targets:
            for concurrency in opts.concurrency:
                for workload in selected:
                    await self._fresh_tokens(users)
                    await self._plain_cell(target, workload, concurrency, progress)
            if CONTENTION in opts.workloads:
                await self._fresh_tokens(users)
                await self._contention_cell(target, progress)
        return attach_references(self.rows), self.notes

    def _warn(self, note: str) -> None:
        self.notes.append(note)
        print_progress(f"warning: {note}")

    async def _fresh_tokens(self, users: UserPool) -> None:
        if await users.ensure_fresh_tokens(parallel=SETUP_PARALLEL):
            print_progress("access tokens were close to expiry: logged everyone in again")

    def _timing(self, workload: str, workers: int) -> tuple[float, float, float | None]:
        """(warm-up, window, bcrypt ceiling req/s or None) of one cell."""
        opts = self.opts
        bound = {LOGIN: self.auth, VERIFYPIN: self.pin}.get(workload)
        if bound is None:
            return opts.warmup, opts.seconds, None
        ceiling = bound.ceiling(workers, self.cores)
        warmup = queue_warmup(opts.warmup, workers, bound.ms, self.cores)
        window = slow_window(opts, ceiling) if workload == VERIFYPIN else opts.seconds
        return warmup, window, ceiling

    def _row(
        self,
        workload: str,
        target: Target,
        stats: CellStats,
        warmup: float,
        *,
        ceiling: float | None,
        cpu: CpuUsage | None,
        section: str = "",
    ) -> Row:
        against = Against.BASELINE
        if workload == BASELINE:
            against = Against.NOTHING
        elif ceiling is not None:
            against = Against.CEILING
        elif workload == PROBE:
            against = Against.IDLE_P99
        return Row(
            workload,
            target.path,
            workload == BASELINE,
            stats,
            warmup,
            against=against,
            reference=ceiling,
            idle_workload=PROBE_IDLE if workload == PROBE else None,
            goal=GOALS.get(workload) if section != CONTENTION or workload == PROBE else None,
            section=section,
            cpu=cpu,
        )

    async def _plain_cell(
        self,
        target: Target,
        workload: str,
        concurrency: int,
        progress: Progress,
        *,
        name: str | None = None,
        section: str = "",
        window: float | None = None,
    ) -> None:
        """One workload alone; `name`, `section` and `window` for the contention's idle cell."""
        warmup, default_window, ceiling = self._timing(workload, concurrency)
        window = window or default_window
        longer = ""
        if (warmup, window) != (self.opts.warmup, self.opts.seconds):
            longer = f" (warm-up {warmup:g} s, window {window:g} s)"
        what = f"{workload} via {target.path}, {workers_text(concurrency)}"
        if section:
            what += " (idle, the reference for the next cell)"
        progress.cell(f"{what}{longer} ...")
        session = await target.open(workload, concurrency)
        try:
            stats, cpu = await asyncio.gather(
                run_cell(
                    session.call,
                    concurrency=concurrency,
                    seconds=window,
                    warmup=warmup,
                    request_timeout=self.opts.timeout,
                ),
                measure_window(warmup, window, self.components),
            )
        finally:
            await session.close()
        print(summary(stats, cpu), flush=True)
        self.rows.append(
            self._row(
                name or workload, target, stats, warmup, ceiling=ceiling, cpu=cpu, section=section
            )
        )
        self._check_mesh()

    async def _contention_cell(self, target: Target, progress: Progress) -> None:
        """GetBalance at the smallest worker count alone, then while VerifyPin saturates the
        CPU: back to back, so both see the same machine (others' load changes by the minute)."""
        opts = self.opts
        probe_workers, load_workers = min(opts.concurrency), opts.pin_load
        warmup, window, ceiling = self._timing(VERIFYPIN, load_workers)
        await self._plain_cell(
            target,
            GETBALANCE,
            probe_workers,
            progress,
            name=PROBE_IDLE,
            section=CONTENTION,
            window=window,
        )
        progress.cell(
            f"{GETBALANCE} via {target.path}, {workers_text(probe_workers)}, while "
            f"{workers_text(load_workers)} of VerifyPin saturate the CPU (warm-up {warmup:g} s, "
            f"window {window:g} s) ..."
        )
        load = await target.open(VERIFYPIN, load_workers)
        probe = await target.open(GETBALANCE, probe_workers)
        try:
            load_stats, probe_stats, cpu = await asyncio.gather(
                run_cell(
                    load.call,
                    concurrency=load_workers,
                    seconds=window,
                    warmup=warmup,
                    request_timeout=opts.timeout,
                ),
                run_cell(
                    probe.call,
                    concurrency=probe_workers,
                    seconds=window,
                    warmup=warmup,
                    request_timeout=opts.timeout,
                ),
                measure_window(warmup, window, self.components),
            )
        finally:
            await asyncio.gather(load.close(), probe.close())
        print(summary(probe_stats, cpu) + "  <- GetBalance", flush=True)
        print(summary(load_stats) + "  <- VerifyPin load", flush=True)
        for workload, stats, bound in (
            (PROBE, probe_stats, None),
            (PROBE_LOAD, load_stats, ceiling),
        ):
            row = self._row(
                workload, target, stats, warmup, ceiling=bound, cpu=cpu, section=CONTENTION
            )
            self.rows.append(row)
        self._check_mesh()

    def _check_mesh(self) -> None:
        raise_if_died(self.mesh.exited(), self.mesh.log_dir)


def _wallet_pin_rounds(mesh: Mesh, wanted: int) -> tuple[int, str | None]:
    """The PIN cost the running wallet really has, and a warning if it is not `wanted`."""
    process = mesh.services.get("wallet")
    if process is None:
        return wanted, "the wallet service is not running: no wallet cells"
    seen = process_env(process.popen.pid, "WALLET_PIN_BCRYPT_ROUNDS")
    if seen is None:
        return wanted, (
            f"could not read the wallet's environment to confirm its PIN cost; assuming {wanted}"
        )
    if seen != str(wanted):
        return int(seen), (
            f"the wallet runs at PIN cost {seen}, not {wanted}: VerifyPin is measured and "
            "its ceiling computed at the cost it really has"
        )
    return wanted, None


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    exit_on_sigterm()
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp.lower()}-{uuid.uuid4().hex[:6]}"
    machine = machine_info()
    cores = int(machine["nproc"] or 1)
    notes: list[str] = []
    if opts.verify_workers > opts.users:
        notes.append(
            f"users raised from {opts.users} to {opts.verify_workers}, one per VerifyPin "
            "worker, so no wallet has two PIN checks in flight"
        )
        opts = dataclasses.replace(opts, users=opts.verify_workers)
    services = ("auth", "wallet") if opts.wallet else ("auth",)
    shared_note = (
        f"client and servers share the {cores} cores of this machine: the load generator "
        f"(this process), {', '.join(services)}, Envoy, PostgreSQL and Redis all compete for "
        "them. Read ratios, not absolutes."
    )
    notes.insert(0, shared_note)
    print_progress(
        f"VaultPay bench: concurrency {','.join(map(str, opts.concurrency))}, "
        f"{opts.seconds:g} s per cell after {opts.warmup:g} s warm-up, {opts.users} users, "
        f"profile {opts.profile}{' (quick)' if opts.quick else ''}"
    )
    for note in notes:
        print_progress(f"note: {note}")
    warn_if_busy_before_run(notes, cores)

    var_dir = scratch_dir("vaultpay-bench-")
    config = MeshConfig.for_tests(
        var_dir,
        profile=opts.profile,
        services=services,
        bcrypt_rounds=opts.bcrypt_rounds,
        gateway_rate_limit=opts.gateway_rate_limit,
    )
    rows: list[Row] = []
    mesh_info: dict[str, Any] = {}
    loop_name = "?"
    try:
        with BenchMesh(config, pin_bcrypt_rounds=opts.pin_bcrypt_rounds) as mesh:
            rounds = int(mesh.env_for("auth")["AUTH_BCRYPT_ROUNDS"])
            print_progress(f"timing one bcrypt hash at cost {rounds} on this machine")
            auth = Bcrypt(rounds, bcrypt_ms(rounds))
            ceiling = auth.ceiling(cores, cores)
            notes.append(
                f"bcrypt cost {rounds} (AUTH_BCRYPT_ROUNDS, --bcrypt-rounds): one "
                f"hash takes {auth.ms:.1f} ms of CPU here, so Login cannot exceed "
                f"~{ceiling:.0f}/s on {cores} cores (less: the cores are shared)"
            )
            print_progress(notes[-1])
            mesh_info = {
                "profile": opts.profile,
                "bcrypt_rounds": rounds,
                "bcrypt_ms_one_core": round(auth.ms, 2),
                "login_ceiling_rps": round(ceiling, 1),
                "auth_address": mesh.grpc_address("auth"),
                "gateway_url": mesh.gateway_url if mesh.envoy is not None else None,
                "services": list(config.services),
            }
            pin: Bcrypt | None = None
            if opts.wallet:
                pin_rounds, problem = _wallet_pin_rounds(mesh, opts.pin_bcrypt_rounds)
                if problem:
                    notes.append(problem)
                    print_progress(f"warning: {problem}")
                print_progress(f"timing one bcrypt hash at PIN cost {pin_rounds} on this machine")
                pin = Bcrypt(pin_rounds, bcrypt_ms(pin_rounds))
                parallel = _bcrypt_parallel_rps(pin_rounds, cores)
                pin_ceiling = pin.ceiling(cores, cores)
                production = " (production)" if pin_rounds == PRODUCTION_PIN_ROUNDS else ""
                notes.append(
                    f"PIN bcrypt cost {pin_rounds}{production} (WALLET_PIN_BCRYPT_ROUNDS, "
                    f"--pin-bcrypt-rounds): one hash takes {pin.ms:.1f} ms of CPU here, so "
                    f"VerifyPin cannot exceed ~{pin_ceiling:.1f}/s on {cores} cores "
                    f"(min(workers, cores) / hash time per cell); {cores} threads hashing at "
                    f"once in-process managed {parallel:.1f}/s ({parallel / pin_ceiling:.2f} of "
                    "that), before any RPC work"
                )
                print_progress(notes[-1])
                mesh_info |= {
                    "wallet_address": mesh.grpc_address("wallet"),
                    "pin_bcrypt_rounds": pin_rounds,
                    "pin_bcrypt_ms_one_core": round(pin.ms, 2),
                    "verify_pin_ceiling_rps": round(pin_ceiling, 2),
                    "pin_bcrypt_parallel_rps_in_process": round(parallel, 2),
                }
            mesh_info["envoy_rate_limit"] = envoy_rate_limit(
                mesh.var_dir / "gateway" / "envoy.json"
            )
            runner = Runner(mesh, opts, auth=auth, pin=pin, cores=cores)
            (rows, run_notes), loop_name = run_async(runner.measure(run_id))
            notes += run_notes
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)

    if any(RATE_LIMITED in r.stats.errors for r in rows):
        limit = mesh_info.get("envoy_rate_limit") or "see the gateway's --rate-limit"
        notes.append(
            f"HTTP 429 seen: Envoy's local rate limit ({limit}) capped some cells; those rows "
            "measure the limiter, not the service, and a ratio marked '!' is against a capped "
            "baseline (so overstated)."
        )
    throttled = sorted(
        {
            f"{r.workload} via {r.path} ({kind})"
            for r in rows
            for kind in r.stats.errors
            if "RATE_LIMITED" in kind and kind != RATE_LIMITED
        }
    )
    if throttled:
        notes.append(
            "a service's own rate limit refused requests in: "
            + "; ".join(throttled)
            + ". Every bench request comes from 127.0.0.1, so per-address throttles (auth's "
            "password-attempt limit) count all workers as one client; those rows' req/s "
            "measure the throttle as much as the service."
        )
    print()
    print(format_table(rows))
    print()
    print(format_goals(rows))
    print()
    print(
        f"req/s = successful requests completed in the measured window ({opts.seconds:g} s; "
        "VerifyPin longer) after a warm-up (Login/VerifyPin: long enough for every worker to "
        "pass the bcrypt queue once). ratio of 'baseline' = req/s / GetJwks req/s at the same "
        "path and workers; of 'ceiling' = req/s / (min(workers, cores) / one bcrypt hash's "
        "time); of 'idle p99' = p99 / the p99 of GetBalance alone just before (same path and "
        f"workers). '~' marks a p99 from fewer than {FEW_SAMPLES} requests or a "
        "ratio from too few; '!' a ratio against a baseline that Envoy's rate limit capped. "
        "other cpu = cores busy outside the bench (other processes on the machine, hypervisor "
        "steal) during the window: the cores this cell did not have. Goals are printed, never "
        "enforced."
    )
    for note in notes:
        print(f"note: {note}")

    document = {
        "machine": machine,
        "config": {
            "concurrency": list(opts.concurrency),
            "seconds": opts.seconds,
            "warmup": opts.warmup,
            "users": opts.users,
            "profile": opts.profile,
            "paths": [PATHS[p] for p in opts.paths],
            "workloads": [BASELINE, *(MEASURED[w] for w in opts.workloads)],
            "timeout": opts.timeout,
            "quick": opts.quick,
            "pin_load": opts.pin_load,
            "goals": {name: str(goal) for name, goal in GOALS.items()},
        },
        "client": {
            "event_loop": loop_name,
            "grpc": "grpc.aio, one channel (own connection) per 4 workers",
            "http": "asyncio HTTP/1.1 keep-alive, one connection per worker",
            "pid": os.getpid(),
        },
        "mesh": mesh_info,
        "notes": notes,
        "results": [r.as_json() for r in rows],
    }
    saved = save_results(opts.out, stamp, document)
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
