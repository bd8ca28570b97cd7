"""Thread pools for CPU-heavy work (bcrypt) that run at a lower CPU priority than the event loop.

bcrypt releases the GIL and keeps a core busy for 70-260 ms per hash, so a service's hashing
threads compete with its own event loop, with PostgreSQL, Envoy and every other service on
the machine. At equal priority a cheap call (GetBalance, ~1 ms of CPU over several hops)
waits behind a hash's time slice at each hop: with VerifyPin saturating two cores,
GetBalance's p99 grew 5x. At nice +10 the kernel gives a runnable event loop (nice 0) about
nine times the weight of a hashing thread, so short calls get through first, while the
hashes still use every cycle nobody else wants: hashing throughput is unchanged whenever the
cores would otherwise be idle, which is whenever the service is hashing-bound.

    pool = low_priority_executor(2, thread_name_prefix="pin-bcrypt")
    digest = await loop.run_in_executor(pool, bcrypt.hashpw, secret, salt)

How: each worker thread, as it starts, raises its own nice value by `niceness` (relative to
the thread that started it, capped at 19). On Linux the nice value belongs to each thread
(setpriority(2) with PRIO_PROCESS and a thread id), and raising it needs no privilege. On
other systems a thread id is not a process id, so nothing is changed there: the pool works,
at normal priority, and `lowers_thread_priority()` says False.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = [
    "DEFAULT_NICENESS",
    "MAX_NICE",
    "low_priority_executor",
    "lower_current_thread_priority",
    "lowers_thread_priority",
    "thread_nice_value",
    "usable_cpus",
]

log = logging.getLogger(__name__)

DEFAULT_NICENESS = 10
MAX_NICE = 19


def lowers_thread_priority() -> bool:
    """Whether this platform can lower one thread's priority (Linux)."""
    return sys.platform.startswith("linux") and hasattr(os, "setpriority")


def thread_nice_value() -> int | None:
    """The calling thread's nice value (Linux), None where threads have none of their own."""
    if not lowers_thread_priority():
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lower_current_thread_priority(niceness: int = DEFAULT_NICENESS) -> bool:
    """Raises the calling thread's nice value by `niceness` (at most to 19). Never raises:
    a pool whose initializer fails is broken, and a priority is not worth a refused hash.
    True when the thread now runs at the lower priority."""
    if niceness <= 0 or not lowers_thread_priority():
        return False
    thread_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(MAX_NICE, current + niceness))
    except OSError:
        log.warning("could not lower a worker thread's CPU priority", exc_info=True)
        return False
    return True


def low_priority_executor(
    max_workers: int, *, thread_name_prefix: str, niceness: int = DEFAULT_NICENESS
) -> ThreadPoolExecutor:
    """A ThreadPoolExecutor whose threads run `niceness` below the thread that starts them
    (the event loop's, in a service): see the module docstring."""
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    return ThreadPoolExecutor(
        max_workers=max_workers,
        thread_name_prefix=thread_name_prefix,
        initializer=lower_current_thread_priority,
        initargs=(niceness,),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_quota(root: Path, self_cgroup: str) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 `cpu.max`, v1 `cfs_quota_us` over
    `cfs_period_us`), or None without one. `self_cgroup`: /proc/self/cgroup's text."""
    for line in self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # cgroup v2: one unified hierarchy
            for folder in (root / relative, root):
                if (limit := _read(folder / "cpu.max")) is not None:
                    quota, _, period = limit.partition(" ")
                    if quota == "max" or not period:
                        return None
                    return int(quota) / int(period)
        elif "cpu" in controllers.split(","):
            for base in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
                for folder in (base / relative, base):
                    quota_text = _read(folder / "cpu.cfs_quota_us")
                    period_text = _read(folder / "cpu.cfs_period_us")
                    if quota_text is None or period_text is None:
                        continue
                    cfs_quota, cfs_period = int(quota_text), int(period_text)
                    return None if cfs_quota <= 0 or cfs_period <= 0 else cfs_quota / cfs_period
    return None


def usable_cpus(
    *, cgroup_root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """How many CPUs this process can keep busy: the fewest of the machine's, those it may run
    on (its affinity) and its cgroup's quota rounded up, at least 1. Python 3.11's
    `os.cpu_count()` is the node's: a pod limited to one CPU on a 32-core node sized its
    bcrypt pools at 32 threads, each hash then taking 32 times as long inside the quota, so a
    burst of sign-ins or PIN checks missed every deadline (review of 2026-12-05)."""
    count = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        count = min(count, len(os.sched_getaffinity(0)))
    text = _read(self_cgroup)
    if text:
        try:
            quota = _cgroup_quota(cgroup_root, text)
        except ValueError:  # a file of another shape: no limit read, none assumed
            quota = None
        if quota is not None:
            count = min(count, math.ceil(quota))
    return max(1, count)
