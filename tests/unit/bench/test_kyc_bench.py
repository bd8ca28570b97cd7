"""The KYC bench's pieces without a mesh: document numbers, requests, user sizing, options,
the recorded load and its windows, and the rotation table."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter

import pytest

from tests.bench.cpu import CpuUsage
from tests.bench.kyc import (
    READ_IDLE,
    READ_ROTATING,
    ROTATION,
    Rotation,
    combine_usage,
    format_cpu_table,
    format_rotation,
    parse_args,
    rotate_until_done,
    users_needed,
)
from tests.bench.kyc_workloads import (
    DocumentNumbers,
    FreshUsers,
    KycRequests,
    MiB,
    OutOfUsersError,
    aadhaar_number,
    document_file,
    driving_licence_number,
    file_size_text,
    pan_number,
    passport_number,
)
from tests.bench.load import CellStats, Completion, run_recorded, stats_within
from tests.bench.report import Against, Row, attach_references
from vaultpay_kyc.domain.documents import (
    DocumentType,
    check_document_number,
    verhoeff_is_valid,
)
from vaultpay_kyc.domain.files import DocumentContentType, check_document_file

YEAR = 2026


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        (DocumentType.PAN, pan_number),
        (DocumentType.AADHAAR, aadhaar_number),
        (DocumentType.PASSPORT, passport_number),
        (
            DocumentType.DRIVING_LICENCE,
            lambda n: driving_licence_number(n, current_year=YEAR),
        ),
    ],
)
def test_generated_numbers_pass_kycs_own_check_and_are_distinct(
    kind: DocumentType, make: object
) -> None:
    assert callable(make)
    starts = (0, 10_000, 999_983, 9_345_678)  # 500 numbers from each, no overlap
    numbers = [make(start + i) for start in starts for i in range(500)]
    for number in numbers:
        assert check_document_number(kind, number, current_year=YEAR) == number
    assert len(set(numbers)) == len(numbers)


def test_aadhaar_numbers_carry_their_verhoeff_digit() -> None:
    number = aadhaar_number(424_242)
    assert verhoeff_is_valid(number)
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert not verhoeff_is_valid(wrong)


def test_document_numbers_cycle_through_the_four_types() -> None:
    numbers = DocumentNumbers(start=0, current_year=YEAR)
    drawn = [next(numbers) for _ in range(400)]
    assert Counter(kind for kind, _ in drawn) == dict.fromkeys(DocumentType, 100)
    assert len({number for _, number in drawn}) == 400
    for kind, number in drawn:
        check_document_number(kind, number, current_year=YEAR)


def test_the_file_is_a_pdf_by_its_magic_bytes_and_of_the_size_asked() -> None:
    data = document_file(MiB)
    assert len(data) == MiB
    assert check_document_file(data, "application/pdf", max_bytes=10 * MiB) is (
        DocumentContentType.PDF
    )
    assert document_file(MiB) != data  # random content: nothing compresses it
    assert file_size_text(MiB) == "1 MiB" and file_size_text(4096) == "4 KiB"


def test_submit_request_is_json_with_the_file_in_base64() -> None:
    requests = KycRequests("127.0.0.1", 8080)
    data = document_file(2048)
    raw = requests.submit("tok", DocumentType.AADHAAR, "234567890124", base64.b64encode(data))
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v1/kyc/submissions HTTP/1.1\r\n")
    assert b"Authorization: Bearer tok" in head
    assert f"Content-Length: {len(body)}".encode() in head
    sent = json.loads(body)
    assert sent["documentType"] == "DOCUMENT_TYPE_AADHAAR"
    assert sent["documentNumber"] == "234567890124"
    assert sent["documentContentType"] == "application/pdf"
    assert base64.b64decode(sent["documentFile"]) == data
    assert len(sent["requestId"]) == 36
    bare = json.loads(
        requests.submit("tok", DocumentType.PAN, "ABCPE1234F", b"").split(b"\r\n\r\n")[1]
    )
    assert "documentFile" not in bare and bare["documentContentType"] == ""


def test_read_and_rotate_requests() -> None:
    requests = KycRequests("127.0.0.1", 8080)
    assert requests.get("tok", "abc").startswith(b"GET /v1/admin/kyc/abc HTTP/1.1\r\n")
    raw = requests.rotate("tok", "r-1")
    assert raw.startswith(b"POST /v1/admin/kyc:rotateKey HTTP/1.1\r\n")
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1]) == {"requestId": "r-1"}


def test_users_needed_follows_the_worker_rate_capped_by_the_machine() -> None:
    # 1 worker at 20/s for 4 s, with 50 % headroom, plus 3 per worker.
    assert users_needed(1, 4.0, 20.0, None) == 120 + 3
    # 8 workers would do 160/s alone, but the machine allows 25/s.
    assert users_needed(8, 4.0, 20.0, 25.0) == 150 + 24


def test_fresh_users_run_out_loudly() -> None:
    users = FreshUsers("a", "w", "run", 1)
    assert users.available == 0
    with pytest.raises(OutOfUsersError):
        users.take()


def test_quick_and_full_options_and_run_py_options_are_ignored() -> None:
    quick = parse_args(["--quick"])
    assert (quick.concurrency, quick.seconds, quick.submissions, quick.rotations) == (
        (1, 4),
        0.5,
        1000,
        1,
    )
    full = parse_args([])
    assert (full.concurrency, full.submissions, full.rotations, full.file_bytes) == (
        (1, 8),
        10_000,
        3,
        MiB,
    )
    assert full.submit_name == "SubmitKyc, 1 MiB file"
    shared = parse_args(["--quick", "--workloads", "getbalance", "--pin-load", "4"])
    assert shared.ignored == ("--workloads", "getbalance", "--pin-load", "4")
    assert parse_args(["--submissions", "20000", "--readers", "2"]).submissions == 20_000
    with pytest.raises(SystemExit):
        parse_args(["--rotations", "0"])


def test_recorded_load_is_cut_into_windows() -> None:
    async def scenario() -> list[Completion]:
        stop, enough = asyncio.Event(), asyncio.Event()
        calls = 0

        async def call(worker: int) -> None:
            nonlocal calls
            calls += 1
            number = calls  # this call's own number (the other worker moves `calls` on)
            if number >= 10:  # two timeouts begun; calls in flight at the stop are recorded
                enough.set()
            await asyncio.sleep(0.001)
            if number % 5 == 0:
                raise TimeoutError

        async def stopper() -> None:
            await asyncio.wait_for(enough.wait(), timeout=30)
            stop.set()

        done, _ = await asyncio.gather(
            run_recorded(call, concurrency=2, stop=stop, request_timeout=1.0), stopper()
        )
        return done

    completions = asyncio.run(scenario())
    assert completions and any(c.error == "timeout" for c in completions)
    first, last = completions[0].ended, completions[-1].ended
    everything = stats_within(completions, [(first, last + 1)], concurrency=2)
    assert everything.ok + everything.error_count == len(completions)
    assert everything.errors["timeout"] == sum(c.error is not None for c in completions)


def test_windows_keep_only_their_completions() -> None:
    done = [
        Completion(0.0, 1.0, None),
        Completion(1.0, 2.5, None),
        Completion(2.5, 3.0, "timeout"),
        Completion(3.0, 6.0, None),
    ]
    both = stats_within(done, [(0.5, 2.0), (2.9, 4.0)], concurrency=1)
    assert both.latencies_s == [1.0]
    assert both.errors == Counter({"timeout": 1})
    assert both.seconds == pytest.approx(2.6)
    assert stats_within(done, [], concurrency=1).ok == 0


def test_usage_of_several_windows_is_weighted_by_their_length() -> None:
    one = CpuUsage(1.0, ours=1.0, other=0.0, parts={"kyc": 1.0})
    three = CpuUsage(3.0, ours=2.0, other=0.4, parts={"kyc": 1.0, "postgres": 1.0})
    both = combine_usage([(one, 1.0), (three, 3.0), (None, 5.0)])
    assert both is not None
    assert both.seconds == 4.0
    assert both.ours == pytest.approx(1.75)
    assert both.other == pytest.approx(0.3)
    assert both.parts == pytest.approx({"kyc": 1.0, "postgres": 0.75})
    assert combine_usage([(None, 1.0)]) is None


def _stats(latencies_ms: list[float], seconds: float = 1.0) -> CellStats:
    return CellStats(1, seconds, [v / 1000 for v in latencies_ms], Counter())


def test_rotation_rows_and_tables() -> None:
    cpu = CpuUsage(2.0, ours=1.5, other=0.1, parts={"client": 0.1, "kyc": 0.8, "postgres": 0.6})
    rows = attach_references(
        [
            Row("GetJwks (baseline)", "Envoy JSON", True, _stats([1.0] * 100), 1.0, cpu=cpu),
            Row(
                READ_IDLE, "Envoy JSON", False, _stats([20.0] * 100), 1.0, section=ROTATION, cpu=cpu
            ),
            Row(
                READ_ROTATING,
                "Envoy JSON",
                False,
                _stats([30.0] * 100, 2.0),
                1.0,
                against=Against.IDLE_P99,
                idle_workload=READ_IDLE,
                section=ROTATION,
                cpu=cpu,
            ),
        ]
    )
    assert rows[2].ratio == pytest.approx(1.5)
    assert rows[1].ratio == pytest.approx(1.0)  # 100 req/s beside the baseline's 100
    table = format_cpu_table(rows)
    assert READ_IDLE in table and READ_ROTATING not in table
    rotation = Rotation(10_000, seconds=2.0, reencrypted=10_000, cpu=cpu)
    rotation.calls.append(("200", 2.0))
    text = format_rotation([rotation], rows, None)
    assert "10000 of 10000" in text
    assert "2.00 s (median 2.00 s)" in text
    assert "5000" in text  # rows per second
    assert "30.0 / 20.0 ms = 1.50" in text
    assert "kyc 0.16" in text  # 0.8 cores x 2 s / 10,000 rows
    assert rotation.as_json()["rows_per_s"] == 5000.0


async def _serve(answers: list[tuple[int, bytes]], seen: list[bytes]) -> asyncio.Server:
    """An HTTP/1.1 server that answers each request with the next (status, JSON body)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            seen.append(await reader.readexactly(length))
            status, body = answers.pop(0)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_the_rotation_is_called_again_with_the_same_request_id_until_it_answers() -> None:
    incomplete = json.dumps(
        {
            "code": 10,
            "details": [
                {"@type": "x/google.rpc.ErrorInfo", "reason": "KYC_KEY_ROTATION_INCOMPLETE"}
            ],
        }
    ).encode()
    done = json.dumps({"keyId": "kek-b", "previousKeyId": "kek-a", "reencryptedCount": "7"})
    answers = [(504, b"{}"), (409, incomplete), (200, done.encode())]
    seen: list[bytes] = []

    async def scenario() -> Rotation:
        server = await _serve(answers, seen)
        port = server.sockets[0].getsockname()[1]
        rotation = Rotation(7)
        try:
            await rotate_until_done(
                KycRequests("127.0.0.1", port), "tok", rotation, call_timeout=5, pause=0
            )
        finally:
            server.close()
        return rotation

    rotation = asyncio.run(scenario())
    assert [label.split()[:2] for label, _ in rotation.calls] == [
        ["HTTP", "504"],
        ["HTTP", "409"],
        ["200"],
    ]
    assert "KYC_KEY_ROTATION_INCOMPLETE" in rotation.calls[1][0]
    assert len({json.loads(body)["requestId"] for body in seen}) == 1  # one rotation, resumed
    assert (rotation.key_id, rotation.previous_key_id, rotation.reencrypted) == (
        "kek-b",
        "kek-a",
        7,
    )
    assert rotation.error is None


def test_a_refused_rotation_is_not_called_again() -> None:
    seen: list[bytes] = []

    async def scenario() -> Rotation:
        server = await _serve([(403, b"{}"), (200, b"{}")], seen)
        port = server.sockets[0].getsockname()[1]
        rotation = Rotation(1)
        try:
            await rotate_until_done(
                KycRequests("127.0.0.1", port), "tok", rotation, call_timeout=5, pause=0
            )
        finally:
            server.close()
        return rotation

    rotation = asyncio.run(scenario())
    assert rotation.error == "HTTP 403" and len(seen) == 1
