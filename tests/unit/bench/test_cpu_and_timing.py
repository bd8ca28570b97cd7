"""The bench's CPU accounting, cell timing, requests and error labels, without a mesh."""

from __future__ import annotations

import json
import sys

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from tests.bench.cpu import CpuSample, descendants_time, sample, usage_between
from tests.bench.harness import (
    MAX_SLOW_WINDOW,
    PRODUCTION_PIN_ROUNDS,
    format_ms,
    queue_warmup,
    slow_window,
)
from tests.bench.httpclient import HttpStatusError
from tests.bench.load import classify_error
from tests.bench.report import RATE_LIMITED
from tests.bench.run import parse_args
from tests.bench.workloads import PIN, HttpTarget, UserPool


def test_descendants_time_sums_a_process_tree() -> None:
    table = {1: (0, 5), 10: (1, 100), 11: (10, 7), 12: (11, 3), 20: (1, 50)}
    assert descendants_time(10, table) == 110
    assert descendants_time(1, table) == 165
    assert descendants_time(99, table) == 0


def test_usage_splits_the_machine_into_ours_and_others() -> None:
    first = CpuSample(0.0, busy=1000, steal=10, ours=400, parts={"client": 100, "wallet": 300})
    last = CpuSample(2.0, busy=1300, steal=30, ours=600, parts={"client": 140, "wallet": 460})
    usage = usage_between(first, last, hz=100)
    assert usage.ours == pytest.approx(1.0)  # 200 jiffies over 2 s
    assert usage.other == pytest.approx(0.6)  # (300 + 20 - 200) jiffies over 2 s
    assert usage.parts == pytest.approx({"client": 0.2, "wallet": 0.8})
    assert usage.ms_per_request(400.0) == pytest.approx({"client": 0.5, "wallet": 2.0})
    assert usage.as_json(400.0)["cpu_ms_per_request"]["wallet"] == 2.0


def test_cpu_per_request_reads_busiest_first() -> None:
    text = format_ms({"wallet": 0.128, "postgres": 0.2249, "transfer": 0.08})
    assert text == "postgres 0.22, wallet 0.13, transfer 0.08"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_sample_of_this_machine_can_be_taken() -> None:
    taken = sample({})
    assert taken is not None and taken.parts["client"] > 0


def test_quick_is_a_short_smoke_and_the_pin_cost_is_production() -> None:
    quick = parse_args(["--quick"])
    assert (quick.concurrency, quick.seconds, quick.users) == ((1, 4), 0.5, 4)
    assert quick.pin_bcrypt_rounds == PRODUCTION_PIN_ROUNDS == 12
    assert quick.wallet
    full = parse_args([])
    assert full.concurrency == (1, 8, 32)
    assert full.verify_workers == max(32, full.pin_load)
    auth_only = parse_args(["--workloads", "getme,login"])
    assert not auth_only.wallet and auth_only.verify_workers == 0


def test_bcrypt_cells_warm_up_through_the_queue_and_measure_enough_hashes() -> None:
    assert queue_warmup(1.0, 32, 250.0, 2) == 4.8  # 32 x 0.25 s / 2 cores, +20 %
    assert queue_warmup(1.0, 1, 250.0, 2) == 1.0
    full, quick = parse_args([]), parse_args(["--quick"])
    assert slow_window(full, 8.0) == 12.5  # 100 hashes at 8/s
    assert slow_window(full, 1.0) == MAX_SLOW_WINDOW
    assert slow_window(full, 100.0) == full.seconds
    assert slow_window(quick, 8.0) == quick.seconds


def test_verify_pin_sends_the_right_pin_with_a_fresh_request_id_as_the_workers_user() -> None:
    users = UserPool("127.0.0.1:1", ["a@example.com", "b@example.com"], ["tok-a", "tok-b"])
    target = HttpTarget("127.0.0.1", 8080, users)
    first, second = target._verify_request(1), target._verify_request(1)
    assert first.startswith(b"POST /v1/wallets/me/pin:verify HTTP/1.1\r\n")
    assert b"Authorization: Bearer tok-b\r\n" in first
    assert f'"pin": "{PIN}"'.encode() in first
    assert first != second  # a new requestId per attempt
    assert [users.user_of_worker(w) for w in range(4)] == [0, 1, 0, 1]


def test_errors_are_labelled_with_who_refused_and_why() -> None:
    gateway = json.dumps(
        {
            "code": 8,
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMITED",
                    "domain": "vaultpay.gateway",
                }
            ],
        }
    ).encode()
    assert classify_error(HttpStatusError(429, gateway)) == RATE_LIMITED
    assert classify_error(HttpStatusError(502, b"upstream connect error")) == "HTTP 502"
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="vaultpay.auth"))
    status = status_pb2.Status(code=8, details=[detail]).SerializeToString()
    refused = grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status)),
    )
    assert classify_error(refused) == "grpc RESOURCE_EXHAUSTED vaultpay.auth RATE_LIMITED"
    bare = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), None)
    assert classify_error(bare) == "grpc UNAVAILABLE"
    assert classify_error(TimeoutError()) == "timeout"
