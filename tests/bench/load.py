"""The closed-loop load generator: N workers call one function back to back for a fixed time.

Every cell is bounded: workers start no request after the deadline, every request has its own
timeout, and the whole cell has an outer timeout on top. A warm-up phase runs the same load
first; only requests that *complete* inside the measurement window count, so throughput is
completions per second of steady state (in-flight requests at the deadline are drained, not
counted, and not cancelled, so their server-side work does not bleed into the next cell).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from tests.bench.httpclient import HttpStatusError

__all__ = [
    "Call",
    "CellStats",
    "Completion",
    "classify_error",
    "percentile",
    "run_cell",
    "run_recorded",
    "stats_within",
]

# worker index -> one request; raises on failure.
Call = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class CellStats:
    """What one (workload, path, concurrency) cell measured."""

    concurrency: int
    seconds: float
    latencies_s: list[float] = field(repr=False)
    errors: Counter[str]

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def quantile_ms(self, q: float) -> float | None:
        value = percentile(sorted(self.latencies_s), q)
        return None if value is None else value * 1000.0


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of already sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), -(-len(sorted_values) * q // 100)))
    return sorted_values[int(rank) - 1]


def classify_error(exc: BaseException) -> str:
    """A short, stable label for the error table: gRPC code or HTTP status, plus who refused
    and why when the reply carries an ErrorInfo (e.g. "HTTP 429 vaultpay.gateway RATE_LIMITED"
    is Envoy's own limiter, "grpc RESOURCE_EXHAUSTED vaultpay.auth RATE_LIMITED" auth's
    password-attempt throttle); else the exception type."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return _with_reason(f"grpc {exc.code().name}", _grpc_error_info(exc))
    if isinstance(exc, HttpStatusError):
        return _with_reason(f"HTTP {exc.status}", _json_error_info(exc.body))
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


def _with_reason(label: str, info: tuple[str, str] | None) -> str:
    return label if info is None else f"{label} {info[0]} {info[1]}"


def _grpc_error_info(exc: grpc.aio.AioRpcError) -> tuple[str, str] | None:
    """(domain, reason) of the ErrorInfo in a gRPC error's status details, if any."""
    try:
        for key, value in exc.trailing_metadata() or ():
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                for detail in status_pb2.Status.FromString(value).details:
                    info = error_details_pb2.ErrorInfo()
                    if detail.Unpack(info):
                        return info.domain, info.reason
    except (DecodeError, TypeError, ValueError):
        return None
    return None


def _json_error_info(body: bytes) -> tuple[str, str] | None:
    """(domain, reason) of the ErrorInfo in a JSON google.rpc.Status body, if any."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    details = document.get("details") if isinstance(document, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("ErrorInfo"):
            return str(detail.get("domain", "")), str(detail.get("reason", ""))
    return None


def _is_transport_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError | asyncio.IncompleteReadError | ConnectionError)


async def run_cell(
    call: Call,
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    request_timeout: float,
) -> CellStats:
    """Runs `concurrency` workers for `warmup + seconds`; measures the last `seconds`."""
    start = time.perf_counter()
    window_start = start + warmup
    deadline = window_start + seconds
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def worker(index: int) -> None:
        while (began := time.perf_counter()) < deadline:
            failure: BaseException | None = None
            try:
                async with asyncio.timeout(request_timeout):
                    await call(index)
            except Exception as exc:
                failure = exc
            ended = time.perf_counter()
            if window_start <= ended < deadline:
                if failure is None:
                    latencies.append(ended - began)
                else:
                    errors[classify_error(failure)] += 1
            if failure is not None and _is_transport_error(failure):
                await asyncio.sleep(0.01)  # a refused connection must not become a busy loop

    workers = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*workers), timeout=warmup + seconds + request_timeout + 5
        )
    except TimeoutError:  # cannot happen while every request has its own timeout; be safe
        errors["cell timed out"] += 1
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return CellStats(concurrency, seconds, latencies, errors)


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished request of `run_recorded`: when it began and ended (perf_counter), and
    its error label (None when it succeeded)."""

    began: float
    ended: float
    error: str | None


async def run_recorded(
    call: Call,
    *,
    concurrency: int,
    stop: asyncio.Event,
    request_timeout: float,
) -> list[Completion]:
    """Runs `concurrency` workers until `stop` is set and records every request, for a load
    whose windows are known only afterwards (e.g. "while a key rotation ran"): cut it with
    `stats_within`. Requests in flight when `stop` is set are awaited and recorded too."""
    completions: list[Completion] = []

    async def worker(index: int) -> None:
        while not stop.is_set():
            began = time.perf_counter()
            failure: BaseException | None = None
            try:
                async with asyncio.timeout(request_timeout):
                    await call(index)
            except Exception as exc:
                failure = exc
            label = None if failure is None else classify_error(failure)
            completions.append(Completion(began, time.perf_counter(), label))
            if failure is not None and _is_transport_error(failure):
                await asyncio.sleep(0.01)  # a refused connection must not become a busy loop

    workers = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return completions


def stats_within(
    completions: list[Completion],
    windows: Sequence[tuple[float, float]],
    *,
    concurrency: int,
) -> CellStats:
    """The requests of `run_recorded` that completed inside any of `windows` ([start, end)
    each, not overlapping), as one cell's stats over their total length."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    for done in completions:
        if any(start <= done.ended < end for start, end in windows):
            if done.error is None:
                latencies.append(done.ended - done.began)
            else:
                errors[done.error] += 1
    seconds = sum(max(0.0, end - start) for start, end in windows)
    return CellStats(concurrency, seconds, latencies, errors)
