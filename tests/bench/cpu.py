"""Where the machine's CPU went during a measured window: the bench's own processes or others.

The cores are shared with whatever else runs on the machine (other people's test runs, the
hypervisor's other guests). A cell that lost a core to them is not comparable with one that
did not, so each window records, from /proc (Linux only; None elsewhere):

* `ours`: cores used by this process and its descendants (the load generator and the whole
  mesh: services, Envoy, PostgreSQL backends, Redis), and per component: `client` (this
  process) and each named mesh process with its own descendants (e.g. PostgreSQL's backends);
* `other`: cores busy with anything else, plus the hypervisor's steal time.

Divided by a cell's req/s, a component's cores give its CPU milliseconds per request: where a
request's cost goes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLIENT",
    "CpuSample",
    "CpuUsage",
    "descendants_time",
    "measure_window",
    "sample",
    "usage_between",
]

_PROC = Path("/proc")


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.perf_counter()
    busy: int  # machine-wide busy jiffies (user, nice, system, irq, softirq)
    steal: int  # machine-wide steal jiffies
    ours: int  # utime + stime jiffies of this process and its live descendants
    parts: dict[str, int] = field(default_factory=dict)  # the same, per component


@dataclass(frozen=True)
class CpuUsage:
    """Average cores used during a window."""

    seconds: float
    ours: float
    other: float
    parts: dict[str, float] = field(default_factory=dict)

    def ms_per_request(self, rps: float) -> dict[str, float]:
        """Each component's CPU milliseconds per request at `rps` (empty when rps is 0)."""
        if rps <= 0:
            return {}
        return {name: cores * 1000 / rps for name, cores in self.parts.items()}

    def as_json(self, rps: float | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "seconds": round(self.seconds, 2),
            "ours_cores": round(self.ours, 2),
            "other_cores": round(self.other, 2),
            "cores_by_component": {k: round(v, 3) for k, v in self.parts.items()},
        }
        if rps:
            document["cpu_ms_per_request"] = {
                k: round(v, 3) for k, v in self.ms_per_request(rps).items()
            }
        return document


def _machine() -> tuple[int, int]:
    fields = (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq, steal


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU jiffies) of every process we can read: its own utime + stime
    plus cutime + cstime, the time of its children that exited and were reaped (PostgreSQL's
    backends, which end with their connections, are reaped by the postmaster)."""
    found: dict[int, tuple[int, int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        # "pid (comm) state ppid ..." where comm may contain spaces and parentheses.
        rest = raw[raw.rfind(")") + 2 :].split()
        found[int(entry.name)] = (int(rest[1]), sum(int(v) for v in rest[11:15]))
    return found


def descendants_time(root: int, processes: dict[int, tuple[int, int]]) -> int:
    """CPU jiffies of `root` and every live descendant in `processes`."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += processes.get(pid, (0, 0))[1]
        stack += children.get(pid, [])
    return total


CLIENT = "client"


def sample(components: Mapping[int, str] | None = None) -> CpuSample | None:
    """Machine-wide and our own CPU time now; `components` maps a child's pid to its name."""
    root = os.getpid()
    try:
        busy, steal = _machine()
        processes = _processes()
    except (OSError, ValueError, IndexError):
        return None
    parts = {CLIENT: processes.get(root, (0, 0))[1]}
    for pid, name in (components or {}).items():
        parts[name] = descendants_time(pid, processes)
    return CpuSample(time.perf_counter(), busy, steal, descendants_time(root, processes), parts)


def usage_between(first: CpuSample, last: CpuSample, *, hz: int | None = None) -> CpuUsage:
    """Average cores used between two samples; `other` = busy + steal - ours, at least 0.

    A descendant that exits mid-window still counts: once reaped, its jiffies are in its
    parent's cutime/cstime (`_processes`), so a service that churns database connections is
    charged for the PostgreSQL backends it made. Only one whose parent is no descendant of
    ours, or not yet reaped at the second sample, goes uncounted (and into `other`).
    """
    ticks = hz or os.sysconf("SC_CLK_TCK")
    seconds = max(last.at - first.at, 1e-9)

    def cores(before: int, after: int) -> float:
        return max(0, after - before) / ticks / seconds

    ours = cores(first.ours, last.ours)
    busy = cores(first.busy + first.steal, last.busy + last.steal)
    parts = {
        name: cores(first.parts[name], after)
        for name, after in last.parts.items()
        if name in first.parts
    }
    return CpuUsage(seconds, ours, max(0.0, busy - ours), parts)


async def measure_window(
    warmup: float, seconds: float, components: Mapping[int, str] | None = None
) -> CpuUsage | None:
    """Waits out `warmup`, then measures the next `seconds` (run beside a cell's workers)."""
    await asyncio.sleep(warmup)
    first = sample(components)
    await asyncio.sleep(seconds)
    last = sample(components)
    if first is None or last is None:
        return None
    return usage_between(first, last)
