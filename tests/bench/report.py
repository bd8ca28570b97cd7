"""The results table, the ratios and goals behind it, the machine description and the JSON file.

Every measured row is a ratio against something measured or timed in the same run:

* `baseline`: req/s over the baseline's req/s (GetJwks) at the same path and worker count;
* `ceiling`: req/s over what bcrypt allows, min(workers, cores) / one hash's time (timed
  in-process at the service's cost), for the bcrypt-bound RPCs;
* `idle p99`: p99 latency over the same RPC's p99 measured without the extra load (same path,
  same worker count).

A row may carry a goal (for example ">= 0.6"); the table says whether the ratio met it. Goals
never fail the command: the table is the product.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.cpu import CpuUsage
from tests.bench.load import CellStats

__all__ = [
    "BUSY_ELSEWHERE",
    "FEW_COMPLETIONS",
    "FEW_SAMPLES",
    "RATE_LIMITED",
    "Against",
    "Goal",
    "Row",
    "attach_references",
    "bcrypt_ceiling_rps",
    "format_goals",
    "format_table",
    "machine_info",
    "save_results",
]

# Below this many successful requests a p99 is really the maximum: marked with "~".
FEW_SAMPLES = 100
# Below this many completions in the window a throughput ratio moves by > 3 % per request.
FEW_COMPLETIONS = 30
# Cores busy outside the bench during a window from which a missed goal says so.
BUSY_ELSEWHERE = 0.25
# The error label of Envoy's local rate limit rejecting a request (load.classify_error).
RATE_LIMITED = "HTTP 429 vaultpay.gateway RATE_LIMITED"


class Against(enum.Enum):
    """What a row's ratio divides by."""

    NOTHING = "-"  # the baseline row itself
    BASELINE = "baseline"  # req/s / the baseline's req/s, same path and workers
    CEILING = "ceiling"  # req/s / (min(workers, cores) / bcrypt time)
    IDLE_P99 = "idle p99"  # p99 / the same RPC's p99 without the extra load


@dataclass(frozen=True)
class Goal:
    """A target for a ratio: at least or at most `value`."""

    value: float
    at_most: bool = False

    def met(self, ratio: float | None) -> bool | None:
        if ratio is None:
            return None
        return ratio <= self.value if self.at_most else ratio >= self.value

    def __str__(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.value:g}"


def bcrypt_ceiling_rps(workers: int, cores: int, bcrypt_ms: float) -> float:
    """Requests/s a bcrypt-bound RPC cannot exceed: one hash per request, at most one running
    per core and one per closed-loop worker."""
    return max(1, min(workers, cores)) / (bcrypt_ms / 1000.0)


@dataclass(frozen=True)
class Row:
    workload: str
    path: str
    baseline: bool
    stats: CellStats
    warmup: float
    baseline_rps: float | None = None
    baseline_rate_limited: bool = False
    against: Against = Against.BASELINE
    # CEILING: the ceiling in req/s (set by the runner); IDLE_P99: the idle p99 in ms (filled
    # in by attach_references from the row of `idle_workload`).
    reference: float | None = None
    idle_workload: str | None = None
    reference_samples: int | None = None
    goal: Goal | None = None
    # "" for the plain cells; a name (e.g. "contention") for cells run under extra load.
    section: str = ""
    # Where the machine's CPU went during the window (None where /proc is not readable).
    cpu: CpuUsage | None = None

    @property
    def baseline_ratio(self) -> float | None:
        if self.baseline_rps is None or self.baseline_rps <= 0:
            return None
        return self.stats.rps / self.baseline_rps

    @property
    def ratio(self) -> float | None:
        if self.against is Against.NOTHING:
            return None
        if self.against is Against.BASELINE:
            return self.baseline_ratio
        if self.reference is None or self.reference <= 0:
            return None
        if self.against is Against.CEILING:
            return self.stats.rps / self.reference
        p99 = self.stats.quantile_ms(99)
        return None if p99 is None else p99 / self.reference

    @property
    def goal_met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self.ratio)

    @property
    def rough(self) -> bool:
        """Whether the ratio rests on too few requests to read its second digit."""
        if self.ratio is None:
            return False
        if self.against is Against.IDLE_P99:
            return self.stats.ok < FEW_SAMPLES or (self.reference_samples or 0) < FEW_SAMPLES
        return self.stats.ok < FEW_COMPLETIONS

    def ratio_text(self) -> str:
        if self.baseline:
            return "1.000"
        ratio = self.ratio
        if ratio is None:
            return "-"
        shown = f"{ratio:.3f}"
        if self.goal is not None and self.goal.met(float(shown)) != self.goal.met(ratio):
            shown = f"{ratio:.4f}"  # 0.8497 is no "0.850" beside a goal of 0.85 it missed
        text = ("~" if self.rough else "") + shown
        if self.against is Against.BASELINE and self.baseline_rate_limited:
            text += "!"
        return text

    def of_text(self) -> str:
        """What the ratio is of, with the reference value when it is not a table row."""
        if self.baseline or self.against is Against.NOTHING:
            return "-"
        if self.against is Against.BASELINE:
            return "baseline"
        if self.reference is None:
            return f"{self.against.value} (none)"
        if self.against is Against.CEILING:
            return f"ceiling {self.reference:.1f}/s"
        return f"idle p99 {_ms(self.reference)} ms"

    def table_group(self) -> tuple[str, int | str]:
        """Rows of one group are printed together, a rule between groups: per path and worker
        count (or section). A runner whose rows differ by path within a group overrides it."""
        return (self.path, self.section or self.stats.concurrency)

    def met_text(self) -> str:
        met = self.goal_met
        return "-" if met is None else ("yes" if met else "NO")

    def as_json(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "workload": self.workload,
            "path": self.path,
            "section": self.section,
            "baseline": self.baseline,
            "concurrency": stats.concurrency,
            "seconds": stats.seconds,
            "warmup": self.warmup,
            "ok": stats.ok,
            "errors": stats.error_count,
            "error_kinds": dict(stats.errors),
            "rps": round(stats.rps, 2),
            "p50_ms": _round(stats.quantile_ms(50)),
            "p90_ms": _round(stats.quantile_ms(90)),
            "p99_ms": _round(stats.quantile_ms(99)),
            "max_ms": _round(stats.quantile_ms(100)),
            "baseline_rps": None if self.baseline_rps is None else round(self.baseline_rps, 2),
            "ratio_vs_baseline": _round(self.baseline_ratio, 4),
            "baseline_rate_limited": self.baseline_rate_limited,
            "ratio": 1.0 if self.baseline else _round(self.ratio, 4),
            "ratio_of": self.against.value,
            "reference": _round(self.reference, 3),
            "reference_workload": self.idle_workload,
            "ratio_rough": self.rough,
            "goal": None if self.goal is None else str(self.goal),
            "goal_met": self.goal_met,
            "cpu": None if self.cpu is None else self.cpu.as_json(stats.rps),
        }


def attach_references(rows: list[Row]) -> list[Row]:
    """Each row with its baseline's req/s (same path and workers) and, for an IDLE_P99 row, the
    p99 of its `idle_workload` at the same path and workers: the one in its own section (idle
    just before, so under the same machine noise) if there is one, else the plain cell."""
    cells = {(r.workload, r.path, r.stats.concurrency, r.section): r.stats for r in rows}
    baselines = {(r.path, r.stats.concurrency): r.stats for r in rows if r.baseline}
    done = []
    for row in rows:
        key = (row.path, row.stats.concurrency)
        baseline = baselines.get(key)
        changes: dict[str, Any] = {
            "baseline_rps": None if baseline is None else baseline.rps,
            "baseline_rate_limited": baseline is not None and RATE_LIMITED in baseline.errors,
        }
        if row.baseline:
            changes["against"] = Against.NOTHING
        if row.against is Against.IDLE_P99 and row.idle_workload is not None:
            idle = cells.get((row.idle_workload, *key, row.section)) or cells.get(
                (row.idle_workload, *key, "")
            )
            changes["reference"] = None if idle is None else idle.quantile_ms(99)
            changes["reference_samples"] = None if idle is None else idle.ok
        done.append(dataclasses.replace(row, **changes))
    return done


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


HEADER = [
    "workload",
    "path",
    "workers",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "ratio",
    "of",
    "goal",
    "met",
    "other cpu",
]
_LEFT = {0, 1, 8}  # text columns; numbers are right-aligned


def format_table(rows: list[Row]) -> str:
    body: list[list[str]] = []
    for row in rows:
        stats = row.stats
        p99 = _ms(stats.quantile_ms(99))
        if 0 < stats.ok < FEW_SAMPLES:
            p99 = "~" + p99
        body.append(
            [
                row.workload,
                row.path,
                str(stats.concurrency),
                f"{stats.rps:.1f}",
                _ms(stats.quantile_ms(50)),
                p99,
                str(stats.error_count),
                row.ratio_text(),
                row.of_text(),
                "-" if row.goal is None else str(row.goal),
                row.met_text(),
                "?" if row.cpu is None else f"{row.cpu.other:.2f}",
            ]
        )
    widths = [max(len(r[i]) for r in [HEADER, *body]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.ljust(w) if i in _LEFT else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    out = [line(HEADER), rule]
    previous: tuple[str, int | str] | None = None
    for row, cells in zip(rows, body, strict=True):
        group = row.table_group()
        if previous is not None and group != previous:
            out.append(rule)
        out.append(line(cells))
        previous = group
    return "\n".join(out)


def format_goals(rows: list[Row]) -> str:
    """One line per goal outcome: how many were met, and which were not, with the numbers."""
    judged = [r for r in rows if r.goal is not None]
    if not judged:
        return "goals: none in this run"
    missed = [r for r in judged if r.goal_met is False]
    unknown = [r for r in judged if r.goal_met is None]
    met = len(judged) - len(missed) - len(unknown)
    lines = [f"goals: {met} of {len(judged)} met"]
    for row in missed:
        busy = ""
        if row.cpu is not None and row.cpu.other >= BUSY_ELSEWHERE:
            busy = f"; {row.cpu.other:.2f} cores were busy outside the bench meanwhile"
        lines.append(
            f"  not met: {row.workload} via {row.path}, {_workers(row.stats.concurrency)}: "
            f"{row.ratio_text()} of {row.of_text()} (goal {row.goal}){busy}"
        )
    for row in unknown:
        lines.append(
            f"  no ratio: {row.workload} via {row.path}, {_workers(row.stats.concurrency)} "
            f"(nothing to compare with; goal {row.goal})"
        )
    return "\n".join(lines)


def _workers(count: int) -> str:
    return f"{count} worker{'' if count == 1 else 's'}"


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    import grpc

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    status = _git("status", "--porcelain")
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": affinity or os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "grpcio": grpc.__version__,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


def save_results(directory: Path, stamp: str, document: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"bench-{stamp}.json"
    target.write_text(json.dumps(document, indent=2) + "\n")
    return target
