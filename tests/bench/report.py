"""The results table, the machine description and the JSON file under bench-results/."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.load import CellStats

__all__ = ["FEW_SAMPLES", "RATE_LIMITED", "Row", "format_table", "machine_info", "save_results"]

# Below this many successful requests a p99 is really the maximum: marked with "~".
FEW_SAMPLES = 100
# The error label of Envoy's local rate limit rejecting a request.
RATE_LIMITED = "HTTP 429"


@dataclass(frozen=True)
class Row:
    workload: str
    path: str
    baseline: bool
    stats: CellStats
    warmup: float
    baseline_rps: float | None = None
    baseline_rate_limited: bool = False

    @property
    def ratio(self) -> float | None:
        if self.baseline_rps is None or self.baseline_rps <= 0:
            return None
        return self.stats.rps / self.baseline_rps

    def as_json(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "workload": self.workload,
            "path": self.path,
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
            "ratio_vs_baseline": _round(self.ratio, 4),
            "baseline_rate_limited": self.baseline_rate_limited,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def format_table(rows: list[Row]) -> str:
    header = ["workload", "path", "concurrency", "req/s", "p50 ms", "p99 ms", "errors", "ratio"]
    body: list[list[str]] = []
    for row in rows:
        stats = row.stats
        p99 = _ms(stats.quantile_ms(99))
        if 0 < stats.ok < FEW_SAMPLES:
            p99 = "~" + p99
        ratio = "-" if row.ratio is None else f"{row.ratio:.3f}"
        if row.baseline_rate_limited and not row.baseline:
            ratio += "!"
        body.append(
            [
                row.workload,
                row.path,
                str(stats.concurrency),
                f"{stats.rps:.1f}",
                _ms(stats.quantile_ms(50)),
                p99,
                str(stats.error_count),
                ratio,
            ]
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    left = {0, 1}  # text columns; numbers are right-aligned

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "-+-".join("-" * w for w in widths)
    out = [line(header), rule]
    previous: tuple[str, int] | None = None
    for row, cells in zip(rows, body, strict=True):
        group = (row.path, row.stats.concurrency)
        if previous is not None and group != previous:
            out.append(rule)
        out.append(line(cells))
        previous = group
    return "\n".join(out)


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
