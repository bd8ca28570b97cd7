"""What the bench entry points (run.py, transfer.py, kyc.py) share.

* command lines: `int_list` and `choice_list` (argparse types), `available_cores`;
* running: `run_async` (uvloop when installed), `exit_on_sigterm`, `BenchMesh` (the mesh with
  the wallet's PIN cost apart from auth's password cost), `MeshDiedError` and
  `raise_if_died`, `process_env` (a running service's real environment), `envoy_rate_limit`;
* bcrypt-bound cells: `PRODUCTION_PIN_ROUNDS`, `bcrypt_ms`, `Bcrypt`, `queue_warmup`,
  `slow_window` (with `SLOW_COMPLETIONS` and `MAX_SLOW_WINDOW`);
* progress lines: `Progress`, `summary` (one cell's figures), `workers_text`.

What is specific to one bench stays in its own module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tests.bench.cpu import CpuUsage, measure_window
from tests.bench.load import CellStats
from tests.bench.report import BUSY_ELSEWHERE, bcrypt_ceiling_rps
from vaultpay_devstack.mesh import Mesh, MeshConfig, print_progress
from vaultpay_wallet.settings import WalletSettings

# The production PIN cost: the wallet's own default (WALLET_PIN_BCRYPT_ROUNDS unset).
PRODUCTION_PIN_ROUNDS = int(WalletSettings.model_fields["pin_bcrypt_rounds"].default)
# A bcrypt-bound cell runs long enough for this many completions at its ceiling (not --quick),
# but at most MAX_SLOW_WINDOW seconds. 40 (~5 s at cost 12 on 2 cores) moved the PIN-checked
# send's ratio by several per cent from run to run; ~100 settles it within about 2 %.
SLOW_COMPLETIONS = 100
MAX_SLOW_WINDOW = 15.0

T = TypeVar("T")


# -- command lines -----------------------------------------------------------------------------


def int_list(text: str, example: str = "1,8,32") -> tuple[int, ...]:
    """Comma-separated positive integers (an argparse type); `example` for the error."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected e.g. {example}, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return values


def choice_list(choices: Mapping[str, str]) -> Any:
    """An argparse type: comma-separated keys of `choices`, lowercased, at least one."""

    def parse(text: str) -> tuple[str, ...]:
        values = tuple(part.strip().lower() for part in text.split(",") if part.strip())
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}, got {text!r}")
        return values

    return parse


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# -- running -----------------------------------------------------------------------------------


def run_async(coro: Coroutine[Any, Any, T]) -> tuple[T, str]:
    """Runs the client on uvloop when it is installed (cheaper per request), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro), "asyncio"
    return uvloop.run(coro), "uvloop"


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the `with Mesh(...)` block stops every child."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


class MeshDiedError(RuntimeError):
    pass


def raise_if_died(dead: Mapping[str, int], log_dir: Path) -> None:
    """Raises MeshDiedError naming the processes in `dead` (name -> exit code), if any."""
    if dead:
        raise MeshDiedError(
            "mesh processes exited during the run: "
            + ", ".join(f"{name} (code {code})" for name, code in dead.items())
            + f"; logs in {log_dir}"
        )


class BenchMesh(Mesh):
    """The mesh with the wallet's PIN cost set apart from auth's password cost.

    MeshConfig.bcrypt_rounds sets both AUTH_BCRYPT_ROUNDS and WALLET_PIN_BCRYPT_ROUNDS; the
    bench keeps auth at --bcrypt-rounds (Login cells stay short) and runs the wallet at
    --pin-bcrypt-rounds (production by default). The runner checks the running wallet's real
    environment afterwards, so a change in how the mesh starts services cannot go unnoticed.
    """

    def __init__(self, config: MeshConfig, *, pin_bcrypt_rounds: int) -> None:
        super().__init__(config)
        self.pin_bcrypt_rounds = pin_bcrypt_rounds

    def env_for(self, service: str, *, operator: bool = False) -> dict[str, str]:
        env = super().env_for(service, operator=operator)
        if "WALLET_PIN_BCRYPT_ROUNDS" in env:
            env["WALLET_PIN_BCRYPT_ROUNDS"] = str(self.pin_bcrypt_rounds)
        return env


def process_env(pid: int, name: str) -> str | None:
    """Variable `name` in a running process's environment (Linux /proc), None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


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


# -- bcrypt-bound cells ------------------------------------------------------------------------


def bcrypt_ms(rounds: int) -> float:
    """CPU time of one bcrypt hash at `rounds` on one core of this machine, in ms (median of 3).

    CPU time, not wall time: on a busy shared machine the wall time of a hash includes the
    time other processes held the core, which would lower the ceiling it is compared with.
    """
    import bcrypt

    salt = bcrypt.gensalt(rounds)
    samples = []
    for _ in range(3):
        began = time.thread_time()
        bcrypt.hashpw(b"x" * 44, salt)  # both services hash a 44-byte HMAC-SHA256 in base64
        samples.append((time.thread_time() - began) * 1000)
    return statistics.median(samples)


@dataclass(frozen=True)
class Bcrypt:
    """One service's bcrypt cost and what one hash takes on a core here."""

    rounds: int
    ms: float

    def ceiling(self, workers: int, cores: int) -> float:
        return bcrypt_ceiling_rps(workers, cores, self.ms)


def queue_warmup(warmup: float, workers: int, bcrypt_ms: float, cores: int) -> float:
    """A bcrypt-bound cell's warm-up covers one pass through the server's bcrypt queue.

    All workers start at once, so until every one of them has been served once the cell is not
    in steady state; with cost 12 and 32 workers on 2 cores that takes ~4 s.
    """
    queue_s = workers * bcrypt_ms / 1000 / max(1, cores)
    return max(warmup, round(1.2 * queue_s, 1))


class CellTiming(Protocol):
    """The options slow_window reads (each bench's Options has them)."""

    @property
    def quick(self) -> bool: ...

    @property
    def seconds(self) -> float: ...


def slow_window(opts: CellTiming, ceiling_rps: float) -> float:
    """A bcrypt-bound cell's window: long enough for ~SLOW_COMPLETIONS requests at the
    ceiling, so one request more or less moves the ratio by ~1 % (not in --quick)."""
    if opts.quick or ceiling_rps <= 0:
        return opts.seconds
    return max(opts.seconds, min(MAX_SLOW_WINDOW, round(SLOW_COMPLETIONS / ceiling_rps, 1)))


# -- progress lines ----------------------------------------------------------------------------


@dataclass
class Progress:
    """Numbers the cells ([3/38]) and tells the elapsed time, for the long full run."""

    total: int
    began: float
    done: int = 0

    def cell(self, text: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.began
        print_progress(f"[{self.done}/{self.total}, {elapsed:.0f} s] {text}")


def summary(stats: CellStats, cpu: CpuUsage | None = None) -> str:
    """One cell's req/s, latency, cores and CPU per request by process, for the progress."""
    p50, p99 = stats.quantile_ms(50), stats.quantile_ms(99)
    text = f"    {stats.rps:.1f} req/s ({stats.ok} ok in {stats.seconds:g} s)"
    if p50 is not None and p99 is not None:
        text += f", p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    if cpu is not None:
        text += f"\n    cores: outside the bench {cpu.other:.2f}, bench {cpu.ours:.2f} ("
        text += ", ".join(f"{k} {v:.2f}" for k, v in _busiest(cpu.parts)) + ")"
        if stats.rps > 0:
            text += "; CPU ms per request: " + format_ms(cpu.ms_per_request(stats.rps))
    if stats.errors:
        text += ", errors: " + ", ".join(f"{k} x{v}" for k, v in stats.errors.most_common())
    return text


def format_ms(values: dict[str, float]) -> str:
    """{"postgres": 2.051, "wallet": 0.18, ...} -> "postgres 2.05, wallet 0.18" (busiest first)."""
    return ", ".join(f"{k} {v:.2f}" for k, v in _busiest(values))


def _busiest(values: dict[str, float]) -> list[tuple[str, float]]:
    """The components that used a noticeable share, busiest first."""
    return sorted(((k, v) for k, v in values.items() if v >= 0.005), key=lambda kv: -kv[1])


def workers_text(count: int) -> str:
    """'1 worker', '8 workers'."""
    return f"{count} worker{'' if count == 1 else 's'}"


def warn_if_busy_before_run(notes: list[str], cores: int) -> None:
    """Samples the machine for a second before a bench starts its mesh, and adds (and prints)
    a warning to `notes` when other processes keep its cores busy."""
    busy = asyncio.run(measure_window(0.0, 1.0))
    if busy is not None and busy.other >= BUSY_ELSEWHERE:
        notes.append(
            f"before the run, {busy.other:.2f} of the {cores} cores were busy with other "
            "processes: expect lower and noisier figures (see the 'other cpu' column)"
        )
        print_progress(f"warning: {notes[-1]}")
