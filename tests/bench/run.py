"""`make bench`: Login and GetMe throughput and latency, each next to a trivial baseline RPC.

    .venv/bin/python -m tests.bench.run                      # 1, 8, 32 workers, 3 s per cell
    .venv/bin/python -m tests.bench.run --quick              # a tiny smoke run
    .venv/bin/python -m tests.bench.run --concurrency 1,16 --seconds 5 --profile test

Starts the mesh (auth + Envoy, private PostgreSQL and Redis on free ports, in a scratch
directory), registers users and logs them in, then measures every (path, concurrency) cell:
the baseline GetJwks, GetMe (pre-issued tokens) and Login (round-robin over the users), direct
gRPC and through Envoy as JSON. Prints a table and saves it with the machine's description to
bench-results/bench-<timestamp>.json. No thresholds: the table is the product. The mesh is
stopped on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tests.bench.load import CellStats, run_cell
from tests.bench.report import (
    FEW_SAMPLES,
    RATE_LIMITED,
    Row,
    format_table,
    machine_info,
    save_results,
)
from tests.bench.workloads import (
    BASELINE,
    GETME,
    LOGIN,
    GrpcTarget,
    HttpTarget,
    Target,
    UserPool,
)
from vaultpay_devstack.infra import scratch_dir
from vaultpay_devstack.mesh import Mesh, MeshConfig, print_progress

REPO_ROOT = Path(__file__).resolve().parents[2]
PATHS = {"grpc": "gRPC", "http": "Envoy JSON"}
MEASURED = {"getme": GETME, "login": LOGIN}
SETUP_PARALLEL = 4

T = TypeVar("T")


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
    gateway_rate_limit: str


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,8,32, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return values


def _choice_list(choices: dict[str, str]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(part.strip().lower() for part in text.split(",") if part.strip())
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}, got {text!r}")
        return values

    return parse


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run",
        description="Login/GetMe vs a GetJwks baseline, direct gRPC and Envoy JSON.",
    )
    parser.add_argument(
        "--concurrency", type=_int_list, help="worker counts, comma-separated (1,8,32)"
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (3)")
    parser.add_argument("--warmup", type=float, help="unmeasured warm-up seconds per cell (1)")
    parser.add_argument("--users", type=int, help="users registered and logged in first (32)")
    parser.add_argument(
        "--profile",
        choices=("dev", "test"),
        default="dev",
        help="mesh profile: dev = bcrypt cost 12 and durable PostgreSQL (default); "
        "test = bcrypt cost 4 and PostgreSQL without fsync",
    )
    parser.add_argument(
        "--paths", type=_choice_list(PATHS), default=tuple(PATHS), help="grpc,http (both)"
    )
    parser.add_argument(
        "--workloads",
        type=_choice_list(MEASURED),
        default=tuple(MEASURED),
        help="getme,login (both; the GetJwks baseline always runs)",
    )
    parser.add_argument(
        "--bcrypt-rounds",
        type=int,
        default=10,
        help="auth's bcrypt cost for the run (10; the dev profile uses 12, tests 4)",
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
    defaults = ((1, 4), 0.5, 0.2, 4) if quick else ((1, 8, 32), 3.0, 1.0, 32)
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
        gateway_rate_limit=args.gateway_rate_limit,
    )
    if options.seconds <= 0 or options.warmup < 0 or options.users < 1 or options.timeout <= 0:
        parser.error("--seconds and --timeout must be > 0, --warmup >= 0, --users >= 1")
    return options


def _run_async(coro: Coroutine[Any, Any, T]) -> tuple[T, str]:
    """Runs the client on uvloop when it is installed (cheaper per request), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro), "asyncio"
    return uvloop.run(coro), "uvloop"


def _bcrypt_ms(rounds: int) -> float:
    """Median time of one bcrypt hash at `rounds` on one core of this machine, in ms."""
    import bcrypt

    salt = bcrypt.gensalt(rounds)
    samples = []
    for _ in range(3):
        began = time.perf_counter()
        bcrypt.hashpw(b"x" * 44, salt)  # the service hashes a 44-byte HMAC-SHA256 in base64
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def envoy_rate_limit(bootstrap: Path) -> str | None:
    """The local rate limit's token bucket in the Envoy config the mesh rendered, as text."""
    try:
        config = json.loads(bootstrap.read_text())
    except (OSError, ValueError):
        return None
    found: list[dict[str, Any]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            bucket = node.get("token_bucket")
            if isinstance(bucket, dict):
                found.append(bucket)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return (
        "; ".join(
            f"{b.get('tokens_per_fill')} tokens per {b.get('fill_interval')}, "
            f"burst {b.get('max_tokens')}"
            for b in found
        )
        or None
    )


def _summary(stats: CellStats) -> str:
    p50, p99 = stats.quantile_ms(50), stats.quantile_ms(99)
    text = f"    {stats.rps:.1f} req/s ({stats.ok} ok in {stats.seconds:g} s)"
    if p50 is not None and p99 is not None:
        text += f", p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    if stats.errors:
        text += ", errors: " + ", ".join(f"{k} x{v}" for k, v in stats.errors.most_common())
    return text


class MeshDiedError(RuntimeError):
    pass


def _login_warmup(opts: Options, concurrency: int, bcrypt_ms: float, cores: int) -> float:
    """Login's warm-up covers one pass through the server's bcrypt queue (one thread per core).

    All workers start at once, so until every one of them has been served once the cell is not
    in steady state; with cost 12 and 32 workers that takes ~4 s, longer than the default window.
    """
    queue_s = concurrency * bcrypt_ms / 1000 / max(1, cores)
    return max(opts.warmup, round(1.2 * queue_s, 1))


async def measure(
    mesh: Mesh, opts: Options, run_id: str, *, bcrypt_ms: float, cores: int
) -> tuple[list[Row], list[str]]:
    """Sets up users, checks each path once, then runs every cell. Returns rows and notes."""
    notes: list[str] = []
    auth = mesh.grpc_address("auth")
    print_progress(f"registering {opts.users} users and logging them in (through gRPC)")
    began = time.perf_counter()
    users = await UserPool.create(auth, opts.users, run_id, parallel=SETUP_PARALLEL)
    print_progress(f"users ready in {time.perf_counter() - began:.1f} s")

    targets: list[Target] = []
    if "grpc" in opts.paths:
        targets.append(GrpcTarget(auth, users))
    if "http" in opts.paths:
        try:
            gateway = urlsplit(mesh.gateway_url)
        except RuntimeError as exc:
            notes.append(f"Envoy JSON path skipped: {exc}")
            print_progress(f"warning: {notes[-1]}")
        else:
            targets.append(HttpTarget(gateway.hostname or "127.0.0.1", gateway.port or 80, users))
    for target in targets:
        for problem in await target.check():
            notes.append(f"sanity check: {problem}")
            print_progress(f"warning: {problem}")

    workloads = [BASELINE, *(MEASURED[w] for w in opts.workloads)]
    rows: list[Row] = []
    for target in targets:
        for concurrency in opts.concurrency:
            for workload in workloads:
                if workload == GETME and await users.ensure_fresh_tokens(parallel=SETUP_PARALLEL):
                    print_progress("access tokens were close to expiry: logged everyone in again")
                warmup = opts.warmup
                if workload == LOGIN:
                    warmup = _login_warmup(opts, concurrency, bcrypt_ms, cores)
                longer = f" (warm-up {warmup:g} s)" if warmup != opts.warmup else ""
                print_progress(
                    f"{workload} via {target.path}, concurrency {concurrency}{longer} ..."
                )
                await target.open(concurrency)
                try:
                    stats = await run_cell(
                        target.call(workload),
                        concurrency=concurrency,
                        seconds=opts.seconds,
                        warmup=warmup,
                        request_timeout=opts.timeout,
                    )
                finally:
                    await target.close()
                print(_summary(stats), flush=True)
                rows.append(Row(workload, target.path, workload == BASELINE, stats, warmup))
                if dead := mesh.exited():
                    raise MeshDiedError(
                        "mesh processes exited during the run: "
                        + ", ".join(f"{name} (code {code})" for name, code in dead.items())
                        + f"; logs in {mesh.log_dir}"
                    )
    return _with_ratios(rows), notes


def _with_ratios(rows: list[Row]) -> list[Row]:
    baselines = {(r.path, r.stats.concurrency): r.stats for r in rows if r.baseline}
    with_ratios = []
    for row in rows:
        baseline = baselines.get((row.path, row.stats.concurrency))
        with_ratios.append(
            dataclasses.replace(
                row,
                baseline_rps=None if baseline is None else baseline.rps,
                baseline_rate_limited=baseline is not None and RATE_LIMITED in baseline.errors,
            )
        )
    return with_ratios


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the `with Mesh(...)` block stops every child."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    _exit_on_sigterm()
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp.lower()}-{uuid.uuid4().hex[:6]}"
    machine = machine_info()
    cores = machine["nproc"]
    shared_note = (
        f"client and servers share the {cores} cores of this machine: the load generator "
        "(this process), auth, Envoy, PostgreSQL and Redis all compete for them. "
        "Read ratios, not absolutes."
    )
    print_progress(
        f"VaultPay bench: concurrency {','.join(map(str, opts.concurrency))}, "
        f"{opts.seconds:g} s per cell after {opts.warmup:g} s warm-up, {opts.users} users, "
        f"profile {opts.profile}{' (quick)' if opts.quick else ''}"
    )
    print_progress(f"note: {shared_note}")

    var_dir = scratch_dir("vaultpay-bench-")
    config = MeshConfig.for_tests(
        var_dir,
        profile=opts.profile,
        services=("auth",),
        bcrypt_rounds=opts.bcrypt_rounds,
        gateway_rate_limit=opts.gateway_rate_limit,
    )
    rows: list[Row] = []
    notes: list[str] = [shared_note]
    mesh_info: dict[str, Any] = {}
    loop_name = "?"
    try:
        with Mesh(config) as mesh:
            rounds = int(mesh.env_for("auth")["AUTH_BCRYPT_ROUNDS"])
            print_progress(f"timing one bcrypt hash at cost {rounds} on this machine")
            bcrypt_ms = _bcrypt_ms(rounds)
            ceiling = (cores or 1) / (bcrypt_ms / 1000)
            bcrypt_note = (
                f"bcrypt cost {rounds} (AUTH_BCRYPT_ROUNDS, --bcrypt-rounds): one "
                f"hash takes {bcrypt_ms:.1f} ms of a core here, so Login cannot exceed "
                f"~{ceiling:.0f}/s on {cores} cores (less: the cores are shared)"
            )
            print_progress(bcrypt_note)
            notes.append(bcrypt_note)
            mesh_info = {
                "profile": opts.profile,
                "bcrypt_rounds": rounds,
                "bcrypt_ms_one_core": round(bcrypt_ms, 2),
                "login_ceiling_rps": round(ceiling, 1),
                "auth_address": mesh.grpc_address("auth"),
                "gateway_url": mesh.gateway_url if mesh.envoy is not None else None,
                "services": list(config.services),
            }
            rate_limit = envoy_rate_limit(mesh.var_dir / "gateway" / "envoy.json")
            mesh_info["envoy_rate_limit"] = rate_limit
            (rows, run_notes), loop_name = _run_async(
                measure(mesh, opts, run_id, bcrypt_ms=bcrypt_ms, cores=cores or 1)
            )
            notes += run_notes
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)

    if any(RATE_LIMITED in r.stats.errors for r in rows):
        limit = mesh_info.get("envoy_rate_limit") or "see the gateway's --rate-limit"
        notes.append(
            f"HTTP 429 seen: Envoy's local rate limit ({limit}) capped some cells; those rows "
            "measure the limiter, not the service, and a ratio marked '!' is against a capped "
            "baseline (so overstated). The mesh offers no way to raise the limit for a bench run."
        )
    print()
    print(format_table(rows))
    print()
    print(
        f"req/s = successful requests completed in the {opts.seconds:g} s window after a "
        f"{opts.warmup:g} s warm-up (Login: long enough for every worker to pass the bcrypt "
        "queue once); ratio = req/s / baseline (GetJwks) req/s at the same path and "
        f"concurrency; '~' marks a p99 from fewer than {FEW_SAMPLES} requests; '!' a ratio "
        "against a baseline that Envoy's rate limit capped."
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
