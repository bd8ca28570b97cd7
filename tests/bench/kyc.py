"""The KYC bench: SubmitKyc with a 1 MiB file and AdminGetKycSubmission through Envoy beside
the GetJwks baseline, and a key rotation of 10,000 submissions with the reads' p99 during it.

    .venv/bin/python -m tests.bench.kyc                 # 1, 8 workers; 10,000 submissions
    .venv/bin/python -m tests.bench.kyc --quick         # a short smoke run; 1,000 submissions
    .venv/bin/python -m tests.bench.kyc --concurrency 1,4 --submissions 20000

Starts the mesh (auth, wallet, kyc and Envoy, private PostgreSQL and Redis on free ports, in a
scratch directory), makes a super_admin and a moderator the way an operator does, then, through
Envoy as JSON:

* per worker count: the baseline GetJwks; SubmitKyc with a 1 MiB file inline (base64 in the
  JSON, as a web client sends it), each from a user who has a wallet and has not submitted yet
  (one pending submission per user), cycling through PAN, Aadhaar, passport and driving licence
  numbers; AdminGetKycSubmission of those submissions (kyc decrypts the 1 MiB file, audits the
  view, Envoy returns it as base64): req/s against the baseline's, p50/p99, CPU ms per request
  per process;
* the rotation: the table is filled to --submissions rows through kyc's own use case
  in-process (small files; the rotation re-wraps a 60-byte data key per row and never reads a
  file), then AdminRotateKycKey is called through Envoy and called again with the same
  requestId until it answers (its way of "poll the status": a call that runs out of time
  answers 409/504 and the next one resumes), while readers call AdminGetKycSubmission: the
  rotation's time and rows/s, and the reads' p99 during it against their p99 just before.

No goals: the table is the product. Prints it and saves it with the machine's description to
bench-results/bench-kyc-<timestamp>.json. The mesh is stopped on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select

from tests.bench.cpu import CLIENT, CpuUsage, measure_window, sample, usage_between
from tests.bench.harness import (
    Progress,
    envoy_rate_limit,
    exit_on_sigterm,
    int_list,
    raise_if_died,
    run_async,
    warn_if_busy_before_run,
    workers_text,
)
from tests.bench.httpclient import HttpConnection, HttpStatusError
from tests.bench.kyc_workloads import (
    DocumentNumbers,
    FreshUsers,
    KycRequests,
    MiB,
    OutOfUsersError,
    SeedResult,
    Staff,
    document_file,
    file_size_text,
    kyc_settings,
    make_staff,
    seed_submissions,
)
from tests.bench.load import (
    CellStats,
    Completion,
    classify_error,
    run_cell,
    run_recorded,
    stats_within,
)
from tests.bench.report import (
    FEW_SAMPLES,
    RATE_LIMITED,
    Against,
    Row,
    attach_references,
    format_table,
    machine_info,
    save_results,
)
from tests.bench.workloads import BASELINE, HttpTarget, Target, UserPool
from vaultpay_common.context import Role
from vaultpay_common.db import create_engine
from vaultpay_devstack.infra import scratch_dir
from vaultpay_devstack.mesh import Mesh, MeshConfig, print_progress
from vaultpay_kyc.adapters.keys_sql import SqlKeyRepository
from vaultpay_kyc.adapters.tables import kyc_keys, kyc_submissions
from vaultpay_kyc.domain.staff_reads import number_shown

REPO_ROOT = Path(__file__).resolve().parents[2]
PATH = "Envoy JSON"
GET = "AdminGetKycSubmission"
READ_IDLE = f"{GET}, idle"
READ_ROTATING = f"{GET}, rotating"
ROTATION = "rotation"
SERVICES = ("auth", "wallet", "kyc")
# The processes whose CPU per request the printed table shows (the JSON has every one).
CPU_COLUMNS = (CLIENT, "envoy", "auth", "wallet", "kyc", "postgres", "redis")
SETUP_PARALLEL = 4
SEED_PARALLEL = 4
# Auth's password cost for the run: the bench registers hundreds of submitters and measures
# no Login, so the cheapest cost bcrypt allows (the wallet's PIN cost follows it; no PIN is
# checked either).
BCRYPT_ROUNDS = 4
# Fresh users prepared for a SubmitKyc cell: this many times what the cell can manage at the
# rate its workers showed, plus a margin per worker.
USER_HEADROOM = 1.5
USERS_PER_WORKER = 3
# The mesh counts as settled once its processes use less than this many cores (the audit
# sealer chains the seeded rows' audit entries, 500 a round, after the seeding).
SETTLED_CORES = 0.25
SETTLE_LIMIT_S = 120.0
# How many times AdminRotateKycKey is called (same requestId) before the bench gives up.
ROTATE_ATTEMPTS = 40
LIFTED_SIGN_UPS = "1000000"


@dataclass(frozen=True)
class Options:
    concurrency: tuple[int, ...]
    seconds: float
    warmup: float
    submissions: int
    file_bytes: int
    seed_file_bytes: int
    readers: int
    read_seconds: float
    rotations: int
    profile: str
    timeout: float
    out: Path
    quick: bool
    gateway_rate_limit: str
    rotation_batch_size: int | None
    ignored: tuple[str, ...] = ()

    @property
    def submit_name(self) -> str:
        return f"SubmitKyc, {file_size_text(self.file_bytes)} file"


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.kyc",
        description="KYC through Envoy: SubmitKyc (1 MiB file) and AdminGetKycSubmission "
        "against the GetJwks baseline, and a key rotation under reads.",
        epilog="Options of tests.bench.run that this bench does not have (e.g. --workloads, "
        "--pin-load from a shared BENCH_ARGS) are ignored with a warning.",
    )
    parser.add_argument(
        "--concurrency", type=partial(int_list, example="1,8"), help="worker counts (1,8)"
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (3)")
    parser.add_argument("--warmup", type=float, help="unmeasured warm-up seconds per cell (1)")
    parser.add_argument(
        "--submissions",
        type=int,
        help="submissions in the table when the key rotates (10000; --quick 1000)",
    )
    parser.add_argument(
        "--file-bytes",
        type=int,
        default=MiB,
        help="the file SubmitKyc sends and AdminGetKycSubmission reads back (1 MiB)",
    )
    parser.add_argument(
        "--seed-file-bytes",
        type=int,
        default=4096,
        help="the file of each seeded submission (4096; 0 for none)",
    )
    parser.add_argument(
        "--readers",
        type=int,
        default=1,
        help="AdminGetKycSubmission workers during the rotation and just before it (1)",
    )
    parser.add_argument(
        "--read-seconds",
        type=float,
        help="the idle read window just before each rotation (5; --quick 1)",
    )
    parser.add_argument(
        "--rotations",
        type=int,
        help="rotations of the whole table, one after another, each after its own idle "
        "window (3; --quick 1): one rotation of 10,000 rows lasts seconds, too few reads for "
        "a p99",
    )
    parser.add_argument(
        "--profile",
        choices=("dev", "test"),
        default="dev",
        help="mesh profile: dev = durable PostgreSQL (default); test = PostgreSQL without fsync",
    )
    parser.add_argument(
        "--rotation-batch-size",
        type=int,
        help="KYC_ROTATION_BATCH_SIZE for the run (the service's default, 500)",
    )
    parser.add_argument(
        "--gateway-rate-limit",
        default="1000000/1000000",
        help="the gateway's buckets RATE/BURST for the run; lifted by default so the cells "
        "measure Envoy and kyc, not the limiter",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout in seconds (60)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "bench-results", help="where the JSON goes"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: concurrency 1,4, 0.5 s cells, 0.2 s warm-up, one rotation of 1,000 "
        "submissions after 1 s of idle reads (explicit flags still win)",
    )
    args, unknown = parser.parse_known_args(argv)
    quick = bool(args.quick)
    defaults = ((1, 4), 0.5, 0.2, 1000, 1.0, 1) if quick else ((1, 8), 3.0, 1.0, 10_000, 5.0, 3)
    options = Options(
        concurrency=args.concurrency or defaults[0],
        seconds=args.seconds if args.seconds is not None else defaults[1],
        warmup=args.warmup if args.warmup is not None else defaults[2],
        submissions=args.submissions if args.submissions is not None else defaults[3],
        file_bytes=args.file_bytes,
        seed_file_bytes=args.seed_file_bytes,
        readers=args.readers,
        read_seconds=args.read_seconds if args.read_seconds is not None else defaults[4],
        rotations=args.rotations if args.rotations is not None else defaults[5],
        profile=args.profile,
        timeout=args.timeout,
        out=args.out,
        quick=quick,
        gateway_rate_limit=args.gateway_rate_limit,
        rotation_batch_size=args.rotation_batch_size,
        ignored=tuple(unknown),
    )
    if options.seconds <= 0 or options.warmup < 0 or options.timeout <= 0:
        parser.error("--seconds and --timeout must be > 0, --warmup >= 0")
    if min(options.submissions, options.readers, options.rotations) < 1:
        parser.error("--submissions, --readers and --rotations must be at least 1")
    if options.read_seconds <= 0:
        parser.error("--read-seconds must be positive")
    if not 32 <= options.file_bytes <= 10 * MiB:
        parser.error("--file-bytes must be between 32 and 10 MiB (kyc's cap)")
    if options.seed_file_bytes and not 32 <= options.seed_file_bytes <= 10 * MiB:
        parser.error("--seed-file-bytes must be 0 or between 32 and 10 MiB")
    return options


def users_needed(
    concurrency: int, window_s: float, per_worker_rps: float, machine_rps: float | None
) -> int:
    """Fresh users for one SubmitKyc cell of `window_s` seconds (warm-up included).

    A closed-loop worker does at most what one showed alone (`per_worker_rps`), and all of them
    together at most what the machine's CPU allows (`machine_rps`, from a previous cell's CPU
    per request, when known)."""
    rate = concurrency * per_worker_rps
    if machine_rps is not None:
        rate = min(rate, machine_rps)
    return math.ceil(rate * window_s * USER_HEADROOM) + USERS_PER_WORKER * concurrency


class KycBenchMesh(Mesh):
    """The mesh with auth's sign-up throttle lifted (every submitter registers from 127.0.0.1,
    and auth allows 100 sign-ups per address and hour) and, if asked, kyc's rotation batch."""

    def __init__(self, config: MeshConfig, *, rotation_batch_size: int | None) -> None:
        super().__init__(config)
        self.rotation_batch_size = rotation_batch_size

    def env_for(self, service: str, *, operator: bool = False) -> dict[str, str]:
        env = super().env_for(service, operator=operator)
        if service == "auth":
            env["AUTH_REGISTER_PER_IP"] = LIFTED_SIGN_UPS
            env["AUTH_REGISTER_GLOBAL"] = LIFTED_SIGN_UPS
        if service == "kyc" and self.rotation_batch_size is not None:
            env["KYC_ROTATION_BATCH_SIZE"] = str(self.rotation_batch_size)
        return env


@dataclass
class Rotation:
    """What one rotation through the gateway took."""

    rows_before: int
    seconds: float = 0.0
    reencrypted: int = 0
    key_id: str = ""
    previous_key_id: str = ""
    calls: list[tuple[str, float]] = field(default_factory=list)
    keys_after: dict[str, str] = field(default_factory=dict)
    rows_by_key_after: dict[str, int] = field(default_factory=dict)
    cpu: CpuUsage | None = None
    idle_cpu: CpuUsage | None = None
    # perf_counter() windows: the reads just before the rotation, and the rotation itself.
    idle_window: tuple[float, float] | None = None
    window: tuple[float, float] | None = None
    error: str | None = None

    @property
    def idle_seconds(self) -> float:
        return 0.0 if self.idle_window is None else self.idle_window[1] - self.idle_window[0]

    @property
    def rows_per_s(self) -> float:
        return self.reencrypted / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        cpu_seconds = (
            {k: round(v * self.seconds, 3) for k, v in self.cpu.parts.items()}
            if self.cpu is not None
            else None
        )
        return {
            "rows_before": self.rows_before,
            "seconds": round(self.seconds, 3),
            "reencrypted_count": self.reencrypted,
            "rows_per_s": round(self.rows_per_s, 1),
            "idle_read_seconds": round(self.idle_seconds, 3),
            "key_id": self.key_id,
            "previous_key_id": self.previous_key_id,
            "calls": [{"result": r, "seconds": round(s, 3)} for r, s in self.calls],
            "keys_after": self.keys_after,
            "rows_by_key_after": self.rows_by_key_after,
            "cpu": None if self.cpu is None else self.cpu.as_json(),
            "cpu_seconds_by_component": cpu_seconds,
            "error": self.error,
        }


class KycRunner:
    """Every cell of one KYC bench run against a started mesh."""

    def __init__(self, mesh: Mesh, opts: Options, run_id: str, cores: int) -> None:
        self.mesh = mesh
        self.opts = opts
        self.run_id = run_id
        self.cores = cores
        self.notes: list[str] = []
        self.rows: list[Row] = []
        self.components = {p.popen.pid: name for name, p in mesh.processes().items()}
        self.kyc_env = mesh.env_for("kyc")
        gateway = urlsplit(mesh.gateway_url)
        self.requests = KycRequests(gateway.hostname or "127.0.0.1", gateway.port or 80)
        self.numbers = DocumentNumbers()
        self.file = b""
        self.file_b64 = b""
        # Submissions with the bench's file, as AdminGetKycSubmission reads them.
        self.readable: list[str] = []
        # The first one, with its number as the moderator's view shows it (an Aadhaar masked),
        # to check after the rotation.
        self.probe: tuple[str, str] | None = None
        self.per_worker_rps = 0.0
        self.machine_rps: float | None = None
        self.seeding: SeedResult | None = None
        self.rotations: list[Rotation] = []
        # Every read of every rotation cycle (idle and rotation windows are cut from them).
        self.completions: list[Completion] = []
        self.users_created = 0

    # ----- the run ----------------------------------------------------------------------

    async def measure(self) -> list[Row]:
        opts, mesh = self.opts, self.mesh
        self.file = document_file(opts.file_bytes)
        self.file_b64 = base64.b64encode(self.file)
        print_progress("making a super_admin and a moderator (auth CLI + SQL, as operators do)")
        admin = await make_staff(mesh, "SUPER_ADMIN", self.run_id)
        moderator = await make_staff(mesh, "MODERATOR", self.run_id)
        users = FreshUsers(
            mesh.grpc_address("auth"),
            mesh.grpc_address("wallet"),
            self.run_id,
            SETUP_PARALLEL,
        )
        began = time.perf_counter()
        await users.ensure(4 + 2 * max(opts.concurrency))
        print_progress(
            f"{users.created} submitters registered, logged in and given a wallet in "
            f"{time.perf_counter() - began:.1f} s"
        )
        baseline_users = await UserPool.create(
            mesh.grpc_address("auth"), 1, f"{self.run_id}-jwks", parallel=1
        )
        baseline = HttpTarget(self.requests.host, self.requests.port, baseline_users)
        for problem in await baseline.check([BASELINE]):
            self._warn(f"sanity check: {problem}")
        await self._probe_submissions(users, moderator)

        cells = 3 * len(opts.concurrency) + opts.rotations
        progress = Progress(cells, time.perf_counter())
        for concurrency in opts.concurrency:
            await self._baseline_cell(baseline, concurrency, progress)
            await self._submit_cell(users, concurrency, progress)
            await self._read_cell(moderator, concurrency, progress)
        self.users_created = users.created
        await self._rotation_section(admin, moderator, progress)
        return attach_references(self.rows)

    def _warn(self, note: str) -> None:
        self.notes.append(note)
        print_progress(f"warning: {note}")

    def _check_mesh(self) -> None:
        raise_if_died(self.mesh.exited(), self.mesh.log_dir)

    # ----- setup checks -----------------------------------------------------------------

    async def _probe_submissions(self, users: FreshUsers, moderator: Staff) -> None:
        """A few submissions one after another, each read back and checked byte for byte:
        the sanity check, and the first estimate of what one SubmitKyc worker manages."""
        connection = self.requests.connection()
        token = await moderator.fresh_token()
        took: list[float] = []
        try:
            for _ in range(3):
                kind, number = next(self.numbers)
                raw = self.requests.submit(users.take(), kind, number, self.file_b64)
                began = time.perf_counter()
                reply = json.loads((await connection.request(raw)).body)
                took.append(time.perf_counter() - began)
                submission = reply.get("submission", {})
                sid = str(submission.get("submissionId", ""))
                if not sid or not submission.get("hasDocumentFile"):
                    self._warn(f"POST /v1/kyc/submissions returned {str(reply)[:300]}")
                    continue
                self.readable.append(sid)
                # The reader is a moderator: an Aadhaar number comes back masked.
                shown = number_shown(Role.MODERATOR, kind, number).text
                self.probe = self.probe or (sid, shown)
                problem = await self._check_read(connection, token, sid, shown)
                if problem:
                    self._warn(problem)
        except (HttpStatusError, OSError, ValueError) as exc:
            raise RuntimeError(f"the SubmitKyc sanity check failed: {exc}") from exc
        finally:
            await connection.close()
        self.per_worker_rps = 1.0 / min(took) if took else 10.0
        print_progress(
            f"sanity check: {len(took)} submissions of a {file_size_text(len(self.file))} file "
            f"read back intact; one took {min(took) * 1000:.0f} ms at best"
        )

    async def _check_read(
        self, connection: HttpConnection, token: str, sid: str, number: str
    ) -> str | None:
        """None when GET /v1/admin/kyc/{id} returns `number` (the number sent, as the reader
        is shown it) and the file sent."""
        reply = json.loads((await connection.request(self.requests.get(token, sid))).body)
        if reply.get("documentNumber") != number:
            return f"GET /v1/admin/kyc/{sid} returned another number"
        if base64.b64decode(reply.get("documentFile", "")) != self.file:
            return f"GET /v1/admin/kyc/{sid} returned another file"
        return None

    # ----- the plain cells --------------------------------------------------------------

    async def _measured(self, call: Any, concurrency: int) -> tuple[CellStats, CpuUsage | None]:
        opts = self.opts
        stats, cpu = await asyncio.gather(
            run_cell(
                call,
                concurrency=concurrency,
                seconds=opts.seconds,
                warmup=opts.warmup,
                request_timeout=opts.timeout,
            ),
            measure_window(opts.warmup, opts.seconds, self.components),
        )
        return stats, cpu

    def _add(
        self, workload: str, stats: CellStats, cpu: CpuUsage | None, *, baseline: bool = False
    ) -> None:
        print(summary(stats, cpu), flush=True)
        against = Against.NOTHING if baseline else Against.BASELINE
        row = Row(workload, PATH, baseline, stats, self.opts.warmup, against=against, cpu=cpu)
        self.rows.append(row)
        self._check_mesh()

    async def _baseline_cell(self, target: Target, concurrency: int, progress: Progress) -> None:
        progress.cell(f"{BASELINE} via {PATH}, {workers_text(concurrency)} ...")
        session = await target.open(BASELINE, concurrency)
        try:
            stats, cpu = await self._measured(session.call, concurrency)
        finally:
            await session.close()
        self._add(BASELINE, stats, cpu, baseline=True)

    async def _submit_cell(self, users: FreshUsers, concurrency: int, progress: Progress) -> None:
        opts = self.opts
        need = users_needed(
            concurrency, opts.warmup + opts.seconds, self.per_worker_rps, self.machine_rps
        )
        made = await users.ensure(need)
        if made:
            print_progress(f"{made} more submitters registered, with wallets ({need} ready)")
        progress.cell(f"{opts.submit_name} via {PATH}, {workers_text(concurrency)} ...")
        connections = [self.requests.connection() for _ in range(concurrency)]
        submitted: list[str] = []

        async def submit(worker: int) -> None:
            try:
                token = users.take()
            except OutOfUsersError:
                await asyncio.sleep(0.05)  # not a busy loop: the cell ends at its deadline
                raise
            kind, number = next(self.numbers)
            raw = self.requests.submit(token, kind, number, self.file_b64)
            reply = await connections[worker].request(raw)
            submitted.append(json.loads(reply.body)["submission"]["submissionId"])

        try:
            stats, cpu = await self._measured(submit, concurrency)
        finally:
            await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        self.readable += submitted
        if stats.errors.get(OutOfUsersError.__name__):
            self._warn(
                f"{opts.submit_name}, {workers_text(concurrency)}: the cell ran out of fresh users "
                f"({need} prepared), so its req/s is understated"
            )
        if stats.rps > 0:
            self.per_worker_rps = max(self.per_worker_rps, stats.rps / concurrency)
            if cpu is not None and cpu.ours > 0:
                self.machine_rps = self.cores / (cpu.ours / stats.rps)
        self._add(opts.submit_name, stats, cpu)

    def _read_call(self, token: str, concurrency: int) -> tuple[Any, list[HttpConnection]]:
        connections = [self.requests.connection() for _ in range(concurrency)]
        reads = [self.requests.get(token, sid) for sid in self.readable]
        turn = itertools.count()

        async def read(worker: int) -> None:
            await connections[worker].request(reads[next(turn) % len(reads)])

        return read, connections

    async def _read_cell(self, moderator: Staff, concurrency: int, progress: Progress) -> None:
        progress.cell(
            f"{GET} via {PATH}, {workers_text(concurrency)} (of {len(self.readable)} submissions "
            f"with a {file_size_text(len(self.file))} file) ..."
        )
        call, connections = self._read_call(await moderator.fresh_token(), concurrency)
        try:
            stats, cpu = await self._measured(call, concurrency)
        finally:
            await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        self._add(GET, stats, cpu)

    # ----- the rotation -----------------------------------------------------------------

    async def _rotation_section(self, admin: Staff, moderator: Staff, progress: Progress) -> None:
        opts = self.opts
        settings = kyc_settings(self.kyc_env)
        engine = create_engine(
            settings.database_url.get_secret_value(),
            pool_size=1,
            application_name="vaultpay-bench-watch",
        )
        try:
            existing = await _row_count(engine)
            to_seed = max(0, opts.submissions - existing)
            print_progress(
                f"seeding {to_seed} submissions ({file_size_text(opts.seed_file_bytes)} files) "
                f"through kyc's SubmissionService in-process, {SEED_PARALLEL} at a time, so "
                f"the table holds {max(existing + to_seed, opts.submissions)} "
                f"({existing} already there)"
            )
            step = max(1, to_seed // 5)

            def seeded(done: int) -> None:
                if done % step == 0 or done == to_seed:
                    print_progress(f"  seeded {done}/{to_seed}")

            if to_seed:
                self.seeding = await seed_submissions(
                    self.kyc_env,
                    to_seed,
                    file_bytes=opts.seed_file_bytes,
                    parallel=SEED_PARALLEL,
                    progress=seeded,
                    numbers=self.numbers,
                )
                print_progress(
                    f"seeded {to_seed} in {self.seeding.seconds:.1f} s "
                    f"({to_seed / max(self.seeding.seconds, 1e-9):.0f}/s)"
                )
            for cycle in range(opts.rotations):
                await self._settle()
                rotation = await self._rotate_under_reads(admin, moderator, engine, progress)
                self.rotations.append(rotation)
                if rotation.error is not None:
                    break
                if cycle < opts.rotations - 1:
                    print_progress("the next rotation re-wraps the same rows again")
        finally:
            await engine.dispose()
        self._read_rows()

    async def _settle(self) -> None:
        """Waits until the mesh is quiet, so that an idle window is idle: seeding leaves audit
        rows to the services' audit sealers (500 a round), a rotation leaves dead row versions
        to autovacuum."""
        began = time.perf_counter()
        mesh_parts = set(self.components.values())
        while time.perf_counter() - began < SETTLE_LIMIT_S:
            usage = await measure_window(0.0, 1.0, self.components)
            if usage is None:
                return
            busy = sum(v for k, v in usage.parts.items() if k in mesh_parts)
            if busy < SETTLED_CORES:
                print_progress(
                    f"mesh settled ({busy:.2f} cores) after {time.perf_counter() - began:.0f} s"
                )
                return
        self._warn(f"the mesh was still busy after {SETTLE_LIMIT_S:.0f} s of waiting")

    async def _rotate_under_reads(
        self, admin: Staff, moderator: Staff, engine: Any, progress: Progress
    ) -> Rotation:
        """One cycle: readers start, warm up, read for --read-seconds (the idle window), then
        AdminRotateKycKey runs to completion while they go on (the rotation window)."""
        opts = self.opts
        readers = opts.readers
        rotation = Rotation(await _row_count(engine))
        progress.cell(
            f"{GET} via {PATH}, {workers_text(readers)}: {opts.read_seconds:g} s idle, then while "
            f"AdminRotateKycKey re-wraps {rotation.rows_before} submissions ..."
        )
        admin_token = await admin.fresh_token()
        call, connections = self._read_call(await moderator.fresh_token(), readers)
        stop = asyncio.Event()
        reading = asyncio.create_task(
            run_recorded(call, concurrency=readers, stop=stop, request_timeout=opts.timeout)
        )
        try:
            await asyncio.sleep(opts.warmup)
            idle_start, idle_cpu0 = time.perf_counter(), sample(self.components)
            await asyncio.sleep(opts.read_seconds)
            rotation_start, rotation_cpu0 = time.perf_counter(), sample(self.components)
            watching = asyncio.create_task(_watch_rotation(engine, rotation_start))
            try:
                await rotate_until_done(
                    self.requests, admin_token, rotation, call_timeout=opts.timeout + 30
                )
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            rotation_end, rotation_cpu1 = time.perf_counter(), sample(self.components)
        finally:
            stop.set()
            completions = await reading
            await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        rotation.seconds = rotation_end - rotation_start
        rotation.cpu = _usage(rotation_cpu0, rotation_cpu1)
        rotation.idle_cpu = _usage(idle_cpu0, rotation_cpu0)
        rotation.idle_window = (idle_start, rotation_start)
        rotation.window = (rotation_start, rotation_end)
        self.completions += completions
        idle = stats_within(completions, [rotation.idle_window], concurrency=readers)
        during = stats_within(completions, [rotation.window], concurrency=readers)
        print(summary(idle, rotation.idle_cpu) + "  <- idle", flush=True)
        print(summary(during, rotation.cpu) + "  <- during the rotation", flush=True)
        if rotation.error is not None:
            self._warn(f"AdminRotateKycKey: {rotation.error}")
        rotation.keys_after, rotation.rows_by_key_after = await _keys_and_rows(engine)
        print_progress(
            f"rotation: {rotation.reencrypted} submissions re-wrapped in {rotation.seconds:.2f} s "
            f"({rotation.rows_per_s:.0f}/s) in {len(rotation.calls)} call(s); keys now "
            f"{rotation.keys_after}"
        )
        await self._check_after_rotation(moderator, rotation)
        self._check_mesh()
        return rotation

    def _read_rows(self) -> None:
        """The reads of every cycle's idle windows, and of every rotation window, as two rows:
        the second's ratio is its p99 over the first's."""
        done = [r for r in self.rotations if r.window is not None and r.idle_window is not None]
        if not done:
            return
        readers = self.opts.readers
        idle_windows = [r.idle_window for r in done if r.idle_window is not None]
        windows = [r.window for r in done if r.window is not None]
        idle = stats_within(self.completions, idle_windows, concurrency=readers)
        during = stats_within(self.completions, windows, concurrency=readers)
        idle_cpu = combine_usage([(r.idle_cpu, r.idle_seconds) for r in done])
        during_cpu = combine_usage([(r.cpu, r.seconds) for r in done])
        self.rows.append(
            Row(READ_IDLE, PATH, False, idle, self.opts.warmup, section=ROTATION, cpu=idle_cpu)
        )
        self.rows.append(
            Row(
                READ_ROTATING,
                PATH,
                False,
                during,
                self.opts.warmup,
                against=Against.IDLE_P99,
                idle_workload=READ_IDLE,
                section=ROTATION,
                cpu=during_cpu,
            )
        )

    async def _check_after_rotation(self, moderator: Staff, rotation: Rotation) -> None:
        if rotation.error is None:
            if rotation.reencrypted != rotation.rows_before:
                self._warn(
                    f"the rotation re-wrapped {rotation.reencrypted} of {rotation.rows_before} "
                    "submissions"
                )
            if set(rotation.keys_after) != {rotation.key_id} or set(rotation.rows_by_key_after) != {
                rotation.key_id
            }:
                self._warn(
                    f"after the rotation: keys {rotation.keys_after}, rows by key "
                    f"{rotation.rows_by_key_after} (expected only {rotation.key_id})"
                )
        if self.probe is None:
            return
        connection = self.requests.connection()
        try:
            sid, number = self.probe
            problem = await self._check_read(connection, await moderator.fresh_token(), sid, number)
        except (HttpStatusError, OSError, ValueError) as exc:
            problem = f"reading {self.probe[0]} after the rotation failed: {exc}"
        finally:
            await connection.close()
        if problem:
            self._warn(f"after the rotation: {problem}")
        else:
            print_progress("after the rotation: the first submission still reads back intact")


RETRY_STATUSES = frozenset({409, 503, 504})


async def rotate_until_done(
    requests: KycRequests,
    token: str,
    rotation: Rotation,
    *,
    call_timeout: float,
    attempts: int = ROTATE_ATTEMPTS,
    pause: float = 0.1,
) -> None:
    """AdminRotateKycKey through Envoy, called again with the same requestId until it answers
    200 (the API's way to follow a rotation to its end): a call that runs out of time (Envoy's
    route timeout: 504; kyc's settle budget: 409 KYC_KEY_ROTATION_INCOMPLETE) leaves the new
    key active and the sweep resumable, and the next call resumes it. Records every call in
    `rotation.calls`, the answer in `rotation`, and a failure in `rotation.error`."""
    raw = requests.rotate(token, str(uuid.uuid4()))
    connection = requests.connection()
    try:
        for _ in range(attempts):
            began = time.perf_counter()
            try:
                async with asyncio.timeout(call_timeout):
                    reply = await connection.request(raw)
            except (HttpStatusError, OSError, TimeoutError) as exc:
                label = classify_error(exc)
                rotation.calls.append((label, time.perf_counter() - began))
                if isinstance(exc, HttpStatusError) and exc.status not in RETRY_STATUSES:
                    rotation.error = label
                    return
                print_progress(f"  AdminRotateKycKey: {label}; calling again (same requestId)")
                await asyncio.sleep(pause)
                continue
            rotation.calls.append(("200", time.perf_counter() - began))
            body = json.loads(reply.body)
            rotation.reencrypted = int(body.get("reencryptedCount", 0))
            rotation.key_id = str(body.get("keyId", ""))
            rotation.previous_key_id = str(body.get("previousKeyId", ""))
            return
        rotation.error = f"no answer after {attempts} calls"
    finally:
        await connection.close()


def _usage(first: Any, last: Any) -> CpuUsage | None:
    return None if first is None or last is None else usage_between(first, last)


async def _row_count(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(kyc_submissions))).scalar_one()
        )


async def _keys_and_rows(engine: Any) -> tuple[dict[str, str], dict[str, int]]:
    async with engine.connect() as conn:
        keys = {
            str(row.key_id): str(row.state)
            for row in await conn.execute(select(kyc_keys.c.key_id, kyc_keys.c.state))
        }
        by_key = {
            str(row.key_id): int(row.n)
            for row in await conn.execute(
                select(kyc_submissions.c.key_id, func.count().label("n")).group_by(
                    kyc_submissions.c.key_id
                )
            )
        }
    return keys, by_key


async def _watch_rotation(engine: Any, began: float) -> None:
    """Prints the sweep's progress every 2 s (rows left on the retiring key)."""
    while True:
        await asyncio.sleep(2.0)
        async with engine.connect() as conn:
            left = await SqlKeyRepository(conn).count_rows_to_rewrap()
        print_progress(f"  {time.perf_counter() - began:.0f} s: {left} submissions left to re-wrap")


def summary(stats: CellStats, cpu: CpuUsage | None = None) -> str:
    """One cell in two lines: req/s and latency, then CPU ms per request by process."""
    p50, p99 = stats.quantile_ms(50), stats.quantile_ms(99)
    text = f"    {stats.rps:.1f} req/s ({stats.ok} ok in {stats.seconds:.3g} s)"
    if p50 is not None and p99 is not None:
        text += f", p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    if stats.errors:
        text += ", errors: " + ", ".join(f"{k} x{v}" for k, v in stats.errors.most_common())
    if cpu is not None and stats.rps > 0:
        per = cpu.ms_per_request(stats.rps)
        busiest = sorted(((k, v) for k, v in per.items() if v >= 0.05), key=lambda kv: -kv[1])
        text += f"\n    CPU ms per request: {sum(per.values()):.1f} ("
        text += ", ".join(f"{k} {v:.1f}" for k, v in busiest) + ")"
        text += f"; other processes: {cpu.other:.2f} cores"
    return text


def format_cpu_table(rows: list[Row]) -> str:
    """CPU milliseconds per request by process, one line per row that has them."""
    header = ["workload", "workers", *CPU_COLUMNS, "all"]
    body: list[list[str]] = []
    for row in rows:
        # During a rotation the window's CPU is mostly the rotation's (the rotation table
        # shows it per row re-wrapped), not the reads'.
        if row.cpu is None or row.stats.rps <= 0 or row.workload == READ_ROTATING:
            continue
        per = row.cpu.ms_per_request(row.stats.rps)
        body.append(
            [
                row.workload,
                str(row.stats.concurrency),
                *(f"{per.get(name, 0.0):.2f}" for name in CPU_COLUMNS),
                f"{sum(per.values()):.2f}",
            ]
        )
    return _grid(header, body)


def combine_usage(parts: list[tuple[CpuUsage | None, float]]) -> CpuUsage | None:
    """Several windows' CPU usage as one: each average weighted by its window's length."""
    known = [(usage, seconds) for usage, seconds in parts if usage is not None and seconds > 0]
    total = sum(seconds for _, seconds in known)
    if not known or total <= 0:
        return None
    names = {name for usage, _ in known for name in usage.parts}
    return CpuUsage(
        total,
        sum(u.ours * s for u, s in known) / total,
        sum(u.other * s for u, s in known) / total,
        {n: sum(u.parts.get(n, 0.0) * s for u, s in known) / total for n in sorted(names)},
    )


def format_rotation(rotations: list[Rotation], rows: list[Row], seeding: SeedResult | None) -> str:
    """The rotations' numbers and the reads' ratio, as a small two-column table."""
    idle = next((r for r in rows if r.workload == READ_IDLE), None)
    during = next((r for r in rows if r.workload == READ_ROTATING), None)
    done = [r for r in rotations if r.error is None and r.seconds > 0]
    lines: list[list[str]] = [
        [
            "submissions re-wrapped, each rotation",
            ", ".join(f"{r.reencrypted} of {r.rows_before}" for r in rotations) or "-",
        ],
        [
            "rotation time (first call to its 200)",
            ", ".join(f"{r.seconds:.2f} s" for r in rotations)
            + (f" (median {statistics.median(r.seconds for r in done):.2f} s)" if done else ""),
        ],
        [
            "submissions re-wrapped per second",
            ", ".join(f"{r.rows_per_s:.0f}" for r in rotations) or "-",
        ],
        [
            "calls (same requestId)",
            "; ".join(
                ", ".join(f"{label} after {s:.1f} s" for label, s in r.calls) for r in rotations
            )
            or "-",
        ],
    ]
    cpu = combine_usage([(r.cpu, r.seconds) for r in done])
    rewrapped = sum(r.reencrypted for r in done)
    if cpu is not None and rewrapped:
        per_row = {k: v * cpu.seconds * 1000 / rewrapped for k, v in cpu.parts.items()}
        shown = [(k, v) for k, v in sorted(per_row.items(), key=lambda kv: -kv[1]) if v >= 0.005]
        lines.append(
            [
                "CPU ms per row re-wrapped (reads included)",
                ", ".join(f"{k} {v:.2f}" for k, v in shown) or "-",
            ]
        )
        lines.append(["other processes meanwhile", f"{cpu.other:.2f} cores"])
    if idle is not None and during is not None:
        idle_p99, during_p99 = idle.stats.quantile_ms(99), during.stats.quantile_ms(99)
        if idle_p99 is not None and during_p99 is not None:
            rough = "~" if min(idle.stats.ok, during.stats.ok) < FEW_SAMPLES else ""
            lines.append(
                [
                    f"{GET} p99 during / idle",
                    f"{during_p99:.1f} / {idle_p99:.1f} ms = {rough}{during_p99 / idle_p99:.2f}",
                ]
            )
        ratio = f" = {during.stats.rps / idle.stats.rps:.2f}" if idle.stats.rps > 0 else ""
        lines.append(
            [f"{GET} req/s during / idle", f"{during.stats.rps:.1f} / {idle.stats.rps:.1f}{ratio}"]
        )
        lines.append(
            [
                f"{GET} reads (errors) during / idle",
                f"{during.stats.ok} ({during.stats.error_count}) / "
                f"{idle.stats.ok} ({idle.stats.error_count})",
            ]
        )
    if seeding is not None:
        lines.append(
            [
                "seeding (in-process, before; not a cell)",
                f"{seeding.count} in {seeding.seconds:.1f} s "
                f"({seeding.count / max(seeding.seconds, 1e-9):.0f}/s)",
            ]
        )
    for r in rotations:
        if r.error:
            lines.append(["error", r.error])
    return _grid(["rotation", "value"], lines)


def _grid(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), "-+-".join("-" * w for w in widths), *map(line, body)])


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    exit_on_sigterm()
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_id = f"kyc-{stamp.lower()}-{uuid.uuid4().hex[:6]}"
    machine = machine_info()
    cores = int(machine["nproc"] or 1)
    notes = [
        f"client and servers share the {cores} cores of this machine: the load generator "
        f"(this process), {', '.join(SERVICES)}, Envoy, PostgreSQL and Redis all compete for "
        "them. Read ratios, not absolutes."
    ]
    if opts.ignored:
        notes.append(f"ignored (options of tests.bench.run): {' '.join(opts.ignored)}")
    print_progress(
        f"VaultPay KYC bench: concurrency {','.join(map(str, opts.concurrency))}, "
        f"{opts.seconds:g} s per cell after {opts.warmup:g} s warm-up, "
        f"{file_size_text(opts.file_bytes)} files, rotation of {opts.submissions} submissions, "
        f"profile {opts.profile}{' (quick)' if opts.quick else ''}"
    )
    for note in notes:
        print_progress(f"note: {note}")
    warn_if_busy_before_run(notes, cores)

    var_dir = scratch_dir("vaultpay-bench-kyc-")
    config = MeshConfig.for_tests(
        var_dir,
        profile=opts.profile,
        services=SERVICES,
        bcrypt_rounds=BCRYPT_ROUNDS,
        gateway_rate_limit=opts.gateway_rate_limit,
    )
    rows: list[Row] = []
    mesh_info: dict[str, Any] = {}
    loop_name = "?"
    runner: KycRunner | None = None
    began = time.perf_counter()
    try:
        with KycBenchMesh(config, rotation_batch_size=opts.rotation_batch_size) as mesh:
            kyc_env = mesh.env_for("kyc")
            mesh_info = {
                "profile": opts.profile,
                "services": list(config.services),
                "gateway_url": mesh.gateway_url,
                "auth_bcrypt_rounds": BCRYPT_ROUNDS,
                "kyc_rotation_batch_size": int(kyc_env.get("KYC_ROTATION_BATCH_SIZE", "500")),
                "envoy_rate_limit": envoy_rate_limit(mesh.var_dir / "gateway" / "envoy.json"),
            }
            runner = KycRunner(mesh, opts, run_id, cores)
            rows, loop_name = run_async(runner.measure())
            notes += runner.notes
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    elapsed = time.perf_counter() - began

    if any(RATE_LIMITED in r.stats.errors for r in rows):
        notes.append("HTTP 429 seen: Envoy's rate limit capped some cells")
    print()
    print(format_table(rows))
    print()
    print(format_cpu_table(rows))
    rotations = runner.rotations if runner is not None else []
    if rotations:
        print()
        print(format_rotation(rotations, rows, runner.seeding if runner else None))
    print()
    print(
        f"req/s = successful requests completed in the measured window ({opts.seconds:g} s) "
        "after a warm-up, through Envoy as JSON. ratio of 'baseline' = req/s / GetJwks req/s "
        f"at the same workers; of 'idle p99' = the reads' p99 while the key rotated / their "
        f"p99 in the {opts.read_seconds:g} s before each rotation (same readers and "
        "connections). "
        f"'~' marks a p99 from fewer than {FEW_SAMPLES} requests. CPU ms per request = each "
        "process's CPU time in the window / requests completed (client = this process). "
        f"No goals: nothing is judged. The run took {elapsed:.0f} s."
    )
    for note in notes:
        print(f"note: {note}")

    document = {
        "bench": "kyc",
        "machine": machine,
        "config": {
            "concurrency": list(opts.concurrency),
            "seconds": opts.seconds,
            "warmup": opts.warmup,
            "submissions": opts.submissions,
            "file_bytes": opts.file_bytes,
            "seed_file_bytes": opts.seed_file_bytes,
            "readers": opts.readers,
            "read_seconds": opts.read_seconds,
            "rotations": opts.rotations,
            "profile": opts.profile,
            "timeout": opts.timeout,
            "quick": opts.quick,
            "path": PATH,
        },
        "client": {
            "event_loop": loop_name,
            "http": "asyncio HTTP/1.1 keep-alive, one connection per worker",
            "pid": os.getpid(),
        },
        "mesh": mesh_info,
        "notes": notes,
        "submitters_created": runner.users_created if runner else 0,
        "seeding": None
        if runner is None or runner.seeding is None
        else {
            "count": runner.seeding.count,
            "seconds": round(runner.seeding.seconds, 2),
            "file_bytes": runner.seeding.file_bytes,
            "key_id": runner.seeding.key_id,
            "by_type": runner.seeding.by_type,
            "how": "kyc's SubmissionService.submit in-process with the mesh's kyc settings; "
            "the wallet check skipped",
        },
        "rotations": [r.as_json() for r in rotations],
        "results": [r.as_json() for r in rows],
        "elapsed_s": round(elapsed, 1),
    }
    saved = save_results(opts.out, f"kyc-{stamp}", document)
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
