"""The physical references of the transfer bench: pgbench on the mesh's own PostgreSQL.

Two scripts (tests/bench/pgbench/), each after the same prelude that picks the sender and the
recipient exactly as the service bench does (client i sends from wallet i + 1 in wallet-id
order; the recipient is any other wallet, or the hot wallet for a share of the sends):

* `plain`: the equivalent plain-SQL transfer, seven statements (BEGIN, both wallets locked
  FOR UPDATE in id order, the check, both balances, one INSERT of the movement, its postings
  and both sides' rows, COMMIT) on `bench_ref` copies of the service's tables;
* `function`: the service's own PL/pgSQL `transfer_send_money`, one statement, on the real
  tables: the floor of the stack's design.

`prepare_reference` makes the copies: the same columns, defaults, CHECKs, indexes, foreign
keys and triggers as the service's `wallets`, `ledger_transactions`, `ledger_postings` and
`wallet_transactions`, and the same wallet rows (ids, balances, statuses), plus
`bench_ref.accounts` numbering the wallets 1..n in id order. pgbench runs as the superuser,
over TCP like the services, with prepared statements (asyncpg prepares its statements too).

`run_pgbench` runs one cell for warm-up + window seconds with per-transaction logs and keeps
only the transactions that completed inside the window, so its figures are read exactly like
the load generator's (`load.CellStats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.cpu import CpuUsage, measure_window
from tests.bench.load import CellStats
from vaultpay_devstack.postgres import find_pg_bindir

__all__ = [
    "FUNCTION",
    "PLAIN",
    "REFERENCE_SCHEMA",
    "SCRIPTS",
    "PgbenchRun",
    "PgbenchTarget",
    "count_aborted",
    "find_pgbench",
    "prepare_reference",
    "read_logs",
    "script_text",
]

SCRIPT_DIR = Path(__file__).resolve().parent / "pgbench"
PRELUDE = "choose.sql"
PLAIN = "plain"
FUNCTION = "function"
SCRIPTS = {PLAIN: "plain_send.sql", FUNCTION: "function_send.sql"}
REFERENCE_SCHEMA = "bench_ref"
# The service's tables the plain-SQL transfer touches, copied into REFERENCE_SCHEMA.
COPIED_TABLES = ("wallets", "ledger_transactions", "ledger_postings", "wallet_transactions")
# "client 1 aborted in command 17 (set) of script 0; evaluation of meta-command failed",
# "client 0 script 0 aborted in command 14 query 0: ERROR:  division by zero"
_ABORTED = re.compile(
    r"client \d+ (?:script \d+ )?aborted in command \d+[^;:\n]*[;:] (?P<why>.*)$", re.MULTILINE
)


def find_pgbench() -> Path:
    """pgbench of the PostgreSQL the mesh runs (postgresql-15's bin directory), else PATH."""
    with contextlib.suppress(Exception):
        candidate = find_pg_bindir() / "pgbench"
        if candidate.is_file():
            return candidate
    found = shutil.which("pgbench")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "pgbench not found: it ships with the PostgreSQL server package "
        "(`apt-get install -y postgresql-15`), like initdb"
    )


def script_text(kind: str) -> str:
    """The prelude and one transfer script, as pgbench reads them."""
    prelude = (SCRIPT_DIR / PRELUDE).read_text()
    return prelude + "\n" + (SCRIPT_DIR / SCRIPTS[kind]).read_text()


# -- the bench_ref copies ----------------------------------------------------------------------


def _qualified_copy(sql: str, tables: Iterable[str]) -> str:
    """A trigger or foreign-key definition of a public table, pointed at its copy."""
    for table in tables:
        sql = re.sub(
            rf"\b(ON|REFERENCES) public\.{re.escape(table)}\b",
            rf"\1 {REFERENCE_SCHEMA}.{table}",
            sql,
        )
    return sql


async def prepare_reference(conn: Any, wallet_order: Sequence[str], user_ids: Sequence[str]) -> int:
    """(Re)creates REFERENCE_SCHEMA on `conn` (a superuser connection to the service's
    database): the copies of COPIED_TABLES with their wallets, and `accounts` numbering the
    bench's wallets 1..n in `wallet_order` (which must be wallet-id order). Returns how many
    triggers and foreign keys were copied."""
    if list(wallet_order) != sorted(wallet_order):
        raise ValueError("the wallets must be numbered in id order (the lock order)")
    schema = REFERENCE_SCHEMA
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await conn.execute(f"CREATE SCHEMA {schema}")
    for table in COPIED_TABLES:
        await conn.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
    # Definitions as pg_catalog alone on the search path prints them: fully qualified.
    await conn.execute("SET search_path = pg_catalog")
    try:
        names = [f"public.{t}" for t in COPIED_TABLES]
        foreign = await conn.fetch(
            "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def "
            "FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text = ANY($1) "
            "ORDER BY conname",
            names,
        )
        triggers = await conn.fetch(
            "SELECT pg_get_triggerdef(oid) AS def FROM pg_trigger "
            "WHERE NOT tgisinternal AND tgrelid::regclass::text = ANY($1) ORDER BY tgname",
            names,
        )
    finally:
        await conn.execute("RESET search_path")
    copied = 0
    for row in foreign:
        table = str(row["tbl"]).removeprefix("public.")
        definition = _qualified_copy(str(row["def"]), COPIED_TABLES)
        await conn.execute(
            f'ALTER TABLE {schema}.{table} ADD CONSTRAINT "{row["conname"]}" {definition}'
        )
        copied += 1
    for row in triggers:
        await conn.execute(_qualified_copy(str(row["def"]), COPIED_TABLES))
        copied += 1
    await conn.execute(f"INSERT INTO {schema}.wallets SELECT * FROM public.wallets")
    await conn.execute(
        f"CREATE TABLE {schema}.accounts (n integer PRIMARY KEY, user_id text NOT NULL, "
        "wallet_id text NOT NULL UNIQUE)"
    )
    await conn.executemany(
        f"INSERT INTO {schema}.accounts (n, user_id, wallet_id) VALUES ($1, $2, $3)",
        [(i + 1, u, w) for i, (u, w) in enumerate(zip(user_ids, wallet_order, strict=True))],
    )
    for table in (*COPIED_TABLES, "accounts"):
        await conn.execute(f"ANALYZE {schema}.{table}")
    return copied


# -- running pgbench ---------------------------------------------------------------------------


def read_logs(
    lines: Iterable[str], *, window_start: float, window_end: float
) -> tuple[list[float], Counter[str]]:
    """Latencies (s) of the transactions pgbench logged as completed inside the window, and
    the failed ones there. A log line (pgbench -l, PostgreSQL 15) is
    `client_id transaction_no time script_no time_epoch time_us [schedule_lag]`, `time` in
    microseconds (or `failed`/`skipped`), time_epoch.time_us when it completed."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    for line in lines:
        fields = line.split()
        if len(fields) < 6:
            continue
        try:
            completed = int(fields[4]) + int(fields[5]) / 1e6
        except ValueError:
            continue
        if not window_start <= completed < window_end:
            continue
        if fields[2].isdigit():
            latencies.append(int(fields[2]) / 1e6)
        else:
            errors[f"pgbench {fields[2]}"] += 1
    return latencies, errors


def count_aborted(stderr: str) -> Counter[str]:
    """Clients pgbench aborted (PostgreSQL 15 ends a client at its first SQL error), by why."""
    return Counter(
        f"pgbench client aborted: {m.group('why').strip()[:80]}" for m in _ABORTED.finditer(stderr)
    )


@dataclass(frozen=True)
class PgbenchRun:
    stats: CellStats
    cpu: CpuUsage | None
    pid: int
    returncode: int
    stderr_tail: str


@dataclass(frozen=True)
class PgbenchTarget:
    """pgbench against the mesh's PostgreSQL, as the superuser on the service's database."""

    binary: Path
    host: str
    port: int
    user: str
    password: str | None
    database: str
    workdir: Path
    wallets: int
    max_amount: int

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        env["PGAPPNAME"] = "vaultpay-bench-pgbench"
        return env

    def argv(
        self, script: Path, *, clients: int, threads: int, seconds: int, hot_percent: int
    ) -> list[str]:
        log_prefix = self.workdir / f"{script.stem}-log"
        return [
            str(self.binary),
            "--no-vacuum",
            "-n",
            "-M",
            "prepared",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(seconds),
            "-l",
            f"--log-prefix={log_prefix}",
            "-D",
            f"n={self.wallets}",
            "-D",
            f"hot_percent={hot_percent}",
            "-D",
            f"max_amount={self.max_amount}",
            "-f",
            str(script),
            self.database,
        ]

    async def run(
        self,
        kind: str,
        *,
        clients: int,
        warmup: float,
        seconds: float,
        hot_percent: int,
        cores: int,
        base_env: Mapping[str, str],
        components: Mapping[int, str],
    ) -> PgbenchRun:
        """One cell: `clients` pgbench clients for warm-up + window, only the window counted."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for old in self.workdir.glob("*-log.*"):
            old.unlink()
        script = self.workdir / f"{kind}.sql"
        script.write_text(script_text(kind))
        threads = max(1, min(clients, cores))
        total = max(1, math.ceil(warmup + seconds + 0.5))
        argv = self.argv(
            script, clients=clients, threads=threads, seconds=total, hot_percent=hot_percent
        )
        began = time.time()
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(base_env),
            cwd=self.workdir,
        )
        watched = {**components, process.pid: "pgbench"}
        try:
            cpu, (_, stderr) = await asyncio.gather(
                measure_window(warmup, seconds, watched),
                asyncio.wait_for(process.communicate(), timeout=total + 60),
            )
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        lines: list[str] = []
        for log in sorted(self.workdir.glob(f"{script.stem}-log.*")):
            lines += log.read_text().splitlines()
        latencies, errors = read_logs(
            lines, window_start=began + warmup, window_end=began + warmup + seconds
        )
        text = stderr.decode(errors="replace")
        errors += count_aborted(text)
        returncode = process.returncode if process.returncode is not None else -1
        if returncode not in (0, 2) and not latencies:
            errors[f"pgbench exited with {returncode}"] += 1
        stats = CellStats(clients, seconds, latencies, errors)
        tail = "\n".join(text.strip().splitlines()[-5:])
        return PgbenchRun(stats, cpu, process.pid, returncode, tail)
