"""A/B of the ledger's money functions: one transfer migration revision against another.

    .venv/bin/python -m tests.bench.ledger_function_ab                   # t0001 against head
    .venv/bin/python -m tests.bench.ledger_function_ab --rounds 6 --clients 1,8 --plain
    .venv/bin/python -m tests.bench.ledger_function_ab --durable         # fsync, sync commit

No mesh: a private PostgreSQL (durability off unless --durable: what is compared is the CPU a
call costs, not how long the disk takes to flush) holding two `vaultpay` databases side by
side, each migrated by the real chains (platform, wallet, transfer) but the transfer chain
stopped at a different revision (`--a`, `--b`). Each gets the transfer bench's world, made
as its owner would: 65 ACTIVE wallets of the FULL tier, the FULL tier's send and top-up
limits raised to the catalogue's maximum, every wallet funded by `transfer_top_up`, and the
bench_ref copies of `tests.bench.transfer_pgbench.prepare_reference`. Then, interleaved
A B B A ... so that a shared machine's load falls on both alike:

* `loop`: one backend calls `transfer_send_money` --loop-calls times from a DO block that
  commits after every call (the helpers' plans are per session, anything per transaction is
  redone each time, as under pgbench), random sender and recipient; the backend's own CPU
  time from /proc divided by the calls. The least noisy figure on a busy machine.
* `function` (and with --plain `plain`): the very pgbench cells of `tests.bench.transfer`
  (`function_send.sql`, `plain_send.sql`) for each client count of --clients: transactions
  per second and PostgreSQL's CPU milliseconds per transaction (the postmaster and all its
  backends, from /proc).

It prints every cell, then per cell kind the median of each variant and B/A.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.bench.transfer_pgbench import (
    FUNCTION,
    PLAIN,
    PgbenchTarget,
    find_pgbench,
    prepare_reference,
)
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain
from vaultpay_devstack.postgres import (
    PostgresServer,
    Provisioned,
    provision,
    start_postgres,
    unique_suffix,
)
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN, WALLET_CHAIN

WALLETS = 65
FUNDS = 10_000_000_000
LIMIT_MINOR = 10**12  # the settings catalogue's largest limit
MAX_AMOUNT = 100
LOOP = "loop"
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# pgbench's function_send.sql, as a loop in one backend: a new transaction for every call.
_LOOP_SQL = """
DO $loop$
DECLARE
    s integer;
    r integer;
    sender text;
    recipient text;
    answer record;
BEGIN
    FOR i IN 1..{calls} LOOP
        s := 1 + floor(random() * {senders})::integer;
        r := 1 + floor(random() * {senders})::integer;
        IF r >= s THEN r := r + 1; END IF;
        SELECT user_id INTO sender FROM bench_ref.accounts WHERE n = s;
        SELECT wallet_id INTO recipient FROM bench_ref.accounts WHERE n = r;
        SELECT * INTO answer FROM transfer_send_money(
            'bench:loop', '/vaultpay.transfer.v1.TransferService/SendMoney',
            gen_random_uuid(), repeat('0', 64),
            (random() * 9e18)::bigint, sender, recipient,
            1 + floor(random() * {max_amount})::bigint, 'INR', '');
        IF answer.outcome <> 'OK' THEN
            RAISE EXCEPTION 'transfer_send_money answered %', answer.outcome;
        END IF;
        COMMIT;
    END LOOP;
END
$loop$"""


@dataclass(frozen=True)
class Variant:
    label: str
    revision: str
    dbs: Provisioned


@dataclass(frozen=True)
class Cell:
    variant: str
    kind: str
    clients: int
    tps: float
    pg_ms: float | None
    errors: int


def _upgrade(chain: MigrationChain, url: str, app_role: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(chain.script_location))
    config.attributes.update(database_url=url, app_role=app_role, version_table=chain.version_table)
    command.upgrade(config, revision)


def migrate(dbs: Provisioned, transfer_revision: str) -> None:
    """What `vaultpay-transfer migrate` does, the transfer chain stopped at a revision."""
    for chain, revision in (
        (PLATFORM_CHAIN, "head"),
        (WALLET_CHAIN, "head"),
        (TRANSFER_CHAIN, transfer_revision),
    ):
        _upgrade(chain, dbs.vaultpay_owner_dsn, dbs.app_role("transfer"), revision)


def wallet_ids(count: int) -> list[str]:
    """`count` distinct wallet ids, in id order (the lock order pgbench's numbering follows)."""
    rng = secrets.SystemRandom()
    ids: set[str] = set()
    while len(ids) < count:
        ids.add("VPY-" + "".join(rng.choice(_ALPHABET) for _ in range(6)))
    return sorted(ids)


def _database_dsn(server: PostgresServer, database: str) -> str:
    return server.admin_dsn.rsplit("/", 1)[0] + "/" + database


async def seed(dsn: str, ids: Sequence[str], users: Sequence[str]) -> None:
    """The bench's world on one database (a superuser connection)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO wallets (id, user_id, display_name, currency, balance, status, kyc_tier,"
            " created_at, updated_at) VALUES ($1, $2, $3, 'INR', 0, 'ACTIVE', 'FULL', now(),"
            " now())",
            [(w, u, f"Bench {i}") for i, (w, u) in enumerate(zip(ids, users, strict=True))],
        )
        await conn.execute(
            "UPDATE system_settings SET value = $1 WHERE key LIKE 'limits.tier_full.send.%'"
            " OR key LIKE 'limits.tier_full.top_up.%'",
            str(LIMIT_MINOR),
        )
        for user in users:
            row = await conn.fetchrow(
                "SELECT outcome, reply FROM transfer_top_up('bench:seed',"
                " '/vaultpay.transfer.v1.TransferService/TopUp', $1::uuid,"
                " repeat('0', 64), $2, $3, $4, 'INR', 'UPI', $5, 'seed')",
                str(uuid.uuid4()),
                secrets.randbits(62),
                user,
                FUNDS,
                f"seed-{uuid.uuid4().hex}",
            )
            if row is None or row["outcome"] != "OK":
                raise RuntimeError(f"funding {user} failed: {row}")
        await prepare_reference(conn, list(ids), list(users))
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def _backend_cpu_seconds(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def loop_cell(dsn: str, label: str, calls: int) -> Cell:
    """`calls` transfers from one backend (the server must run on this machine)."""
    conn = await asyncpg.connect(dsn)
    try:
        pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
        sql = _LOOP_SQL.format(senders=WALLETS - 1, max_amount=MAX_AMOUNT, calls="{calls}")
        await conn.execute(sql.format(calls=min(calls, 100)))  # plans made, caches warm
        cpu, began = _backend_cpu_seconds(pid), time.perf_counter()
        await conn.execute(sql.format(calls=calls))
        wall = time.perf_counter() - began
        cpu = _backend_cpu_seconds(pid) - cpu
    finally:
        await conn.close()
    return Cell(label, LOOP, 1, calls / wall, cpu * 1000 / calls, 0)


async def pgbench_cell(
    target: PgbenchTarget,
    label: str,
    kind: str,
    clients: int,
    args: argparse.Namespace,
    postmaster: int,
) -> Cell:
    run = await target.run(
        kind,
        clients=clients,
        warmup=args.warmup,
        seconds=args.seconds,
        hot_percent=args.hot_percent,
        cores=os.cpu_count() or 2,
        base_env=dict(os.environ),
        components={postmaster: "postgres"},
    )
    rps = run.stats.rps
    pg_ms = run.cpu.ms_per_request(rps).get("postgres") if run.cpu is not None else None
    if run.stats.error_count:
        print(f"   errors: {dict(run.stats.errors)} {run.stderr_tail}")
    return Cell(label, kind, clients, rps, pg_ms, run.stats.error_count)


def summary(cells: Sequence[Cell], variants: Sequence[Variant]) -> list[str]:
    lines = ["medians: transactions/s, PostgreSQL CPU ms per transaction"]
    a, b = variants
    for kind, clients in sorted({(c.kind, c.clients) for c in cells}):
        medians: dict[str, tuple[float, float]] = {}
        for v in variants:
            mine = [c for c in cells if (c.variant, c.kind, c.clients) == (v.label, kind, clients)]
            cpu = [c.pg_ms for c in mine if c.pg_ms is not None]
            medians[v.label] = (
                statistics.median(c.tps for c in mine),
                statistics.median(cpu) if cpu else float("nan"),
            )
        (a_tps, a_ms), (b_tps, b_ms) = medians[a.label], medians[b.label]
        lines.append(
            f"{kind:8} c={clients:<3} | {a.label} {a.revision}: {a_tps:7.1f}/s {a_ms:6.3f} ms"
            f" | {b.label} {b.revision}: {b_tps:7.1f}/s {b_ms:6.3f} ms"
            f" | B/A: rate {b_tps / a_tps:4.2f}, CPU {b_ms / a_ms:4.2f}"
        )
    return lines


async def measure(
    server: PostgresServer, variants: Sequence[Variant], args: argparse.Namespace, root: Path
) -> list[Cell]:
    assert server.process is not None
    postmaster = server.process.popen.pid
    ids = wallet_ids(WALLETS)
    users = [str(uuid.uuid4()) for _ in ids]
    targets: dict[str, PgbenchTarget] = {}
    for v in variants:
        await seed(_database_dsn(server, v.dbs.vaultpay_database), ids, users)
        targets[v.label] = PgbenchTarget(
            binary=find_pgbench(),
            host=server.host,
            port=server.port,
            user=server.superuser,
            password=server.password,
            database=v.dbs.vaultpay_database,
            workdir=root / f"pgbench-{v.label}",
            wallets=WALLETS,
            max_amount=MAX_AMOUNT,
        )
    kinds = [FUNCTION, *([PLAIN] if args.plain else [])]
    cells: list[Cell] = []
    for round_no in range(args.rounds):
        order = variants if round_no % 2 == 0 else list(reversed(variants))
        runs: list[tuple[Variant, str, int]] = []
        if args.loop_calls:
            runs += [(v, LOOP, 1) for v in order]
        runs += [(v, kind, c) for c in args.clients for kind in kinds for v in order]
        for v, kind, clients in runs:
            if kind == LOOP:
                dsn = _database_dsn(server, v.dbs.vaultpay_database)
                cell = await loop_cell(dsn, v.label, args.loop_calls)
            else:
                cell = await pgbench_cell(
                    targets[v.label], v.label, kind, clients, args, postmaster
                )
            cells.append(cell)
            cpu = "-" if cell.pg_ms is None else f"{cell.pg_ms:.3f}"
            print(
                f"round {round_no} {kind:8} c={clients:<3} {v.label} {v.revision}: "
                f"{cell.tps:7.1f}/s, PostgreSQL {cpu} ms per transaction",
                flush=True,
            )
    return cells


def run(args: argparse.Namespace) -> int:
    root = Path(args.workdir or tempfile.mkdtemp(prefix="vaultpay-ledger-ab-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)  # PostgreSQL runs as its own OS user when we are root
    password = secrets.token_urlsafe(18)
    server = start_postgres(
        root / "postgres",
        log=root / "postgres.log",
        fast=not args.durable,
        superuser_password=password,
    )
    try:
        variants = []
        for label, revision in (("A", args.a), ("B", args.b)):
            dbs = provision(
                server.admin_dsn, suffix=unique_suffix(label.lower()), password=password
            )
            migrate(dbs, revision)
            variants.append(Variant(label, revision, dbs))
        print(f"PostgreSQL {server.host}:{server.port}, durable={args.durable}, in {root}")
        cells = asyncio.run(measure(server, variants, args, root))
        print("\n" + "\n".join(summary(cells, variants)))
    finally:
        server.stop()
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.ledger_function_ab",
        description="The ledger's money functions at two transfer revisions, A/B, on a "
        "private PostgreSQL: a loop in one backend and the transfer bench's pgbench cells.",
    )
    parser.add_argument("--a", default="t0001", help="transfer revision of variant A (t0001)")
    parser.add_argument("--b", default="head", help="transfer revision of variant B (head)")
    parser.add_argument("--rounds", type=int, default=4, help="A/B rounds (4)")
    parser.add_argument(
        "--clients",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 8],
        help="pgbench client counts, comma-separated (1,8; empty: no pgbench cells)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="pgbench window (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="pgbench warm-up (1)")
    parser.add_argument("--hot-percent", type=int, default=0, help="sends into the hot wallet")
    parser.add_argument("--loop-calls", type=int, default=2000, help="loop cell calls (0: none)")
    parser.add_argument("--plain", action="store_true", help="also pgbench's plain-SQL transfer")
    parser.add_argument("--durable", action="store_true", help="fsync and synchronous commit on")
    parser.add_argument("--workdir", help="where the cluster goes (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse(argv))


if __name__ == "__main__":
    raise SystemExit(main())
