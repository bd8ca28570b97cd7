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
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "DEFAULT_NICENESS",
    "MAX_NICE",
    "low_priority_executor",
    "lower_current_thread_priority",
    "lowers_thread_priority",
    "thread_nice_value",
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
