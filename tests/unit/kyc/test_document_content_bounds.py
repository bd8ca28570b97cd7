"""The content check's bounds at the service's real cap (10 MiB): a decompression bomb is
refused at its bound in little time and memory, a file crafted to be slow to read is read in
well under a second, and the use cases run the check in a worker thread, not on the event
loop (it reads the whole file: ~0.5 s for the worst 10 MiB file found, against ~10 ms to seal
one)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import tracemalloc
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.unit.kyc import sample_files as sf
from tests.unit.kyc.kyc_world import World, chunks_of, upload_command
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import ValidationError
from vaultpay_kyc.domain import pdf_check, upload
from vaultpay_kyc.domain.errors import KycBusyError
from vaultpay_kyc.domain.files import DocumentContentType, inspect_document
from vaultpay_kyc.entrypoints.servicers import KycServicer
from vaultpay_kyc.service_layer import submissions

CAP = 10 * 1024 * 1024
PDF = DocumentContentType.PDF


@functools.cache
def _bomb(inflated: int) -> bytes:
    packer = zlib.compressobj(9)
    zeros = b"\x00" * (1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(inflated >> 20)) + packer.flush()


def _refused(data: bytes) -> str:
    with pytest.raises(ValidationError) as caught:
        inspect_document(PDF, data, max_bytes=CAP)
    (violation,) = caught.value.violations
    return violation.description


@pytest.mark.parametrize(
    ("dictionary", "said"),
    [
        (b"/Subtype /Image /Width 1 /Height 1 /Filter /FlateDecode", f"beyond {4 * CAP} bytes"),
        (b"/Filter /FlateDecode", f"more than {CAP} bytes of compressed objects"),
    ],
    ids=["image", "page-content"],
)
def test_a_bomb_of_256_mib_is_refused_at_its_bound_in_little_time_and_memory(
    dictionary: bytes, said: str
) -> None:
    data = sf.pdf(sf.catalog(), sf.page(), sf.stream(dictionary, _bomb(256 << 20)))
    assert len(data) < CAP
    tracemalloc.start()
    started = time.perf_counter()
    try:
        description = _refused(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert said in description
    assert time.perf_counter() - started < 2.0
    assert peak < 3 * CAP  # the file's copy, the bound, a step: never the 256 MiB


def test_bombs_spread_over_streams_are_refused_at_the_bound_per_file() -> None:
    image = sf.stream(b"/Subtype /Image /Filter /FlateDecode", _bomb(30 << 20))
    data = sf.pdf(sf.catalog(), sf.page(), image, image, image)
    assert f"beyond {8 * CAP} bytes" in _refused(data)


@pytest.mark.parametrize(
    "body",
    [
        b"/J" * (4 << 20),
        b"(" * (9 << 20),
        b"<<" * (4 << 20),
        b"1 " * (4 << 20),
        b"%\n" * (4 << 20),
        b"stream\n" * (1 << 20),
    ],
    ids=["names", "parentheses", "dictionaries", "numbers", "comments", "stream-keywords"],
)
def test_a_pdf_crafted_to_be_slow_is_read_in_well_under_a_second(body: bytes) -> None:
    data = b"%PDF-1.7\n" + body + b"\n%%EOF\n"
    started = time.perf_counter()
    with contextlib.suppress(ValidationError):
        inspect_document(PDF, data, max_bytes=CAP)
    assert time.perf_counter() - started < 1.5


def test_a_stream_whose_length_skips_its_first_endstream_is_refused() -> None:
    """A viewer trusts /Length when "endstream" follows it: the body it reads would hide
    from this check whatever lies after the first "endstream", as object syntax."""
    hiding = b"x endstream endobj (" + b"z" * 40 + b")"
    direct = b"<< /Length %d /Subtype /Image /Filter /DCTDecode >>\nstream\n" % len(hiding)
    data = sf.pdf(sf.catalog(), sf.page(), direct + hiding + b"\nendstream")
    assert "/Length disagrees" in _refused(data)
    indirect = b"<< /Length 4 0 R /Subtype /Image /Filter /DCTDecode >>\nstream\n"
    data = sf.pdf(sf.catalog(), sf.page(), indirect + hiding + b"\nendstream", b"%d" % len(hiding))
    assert "/Length disagrees" in _refused(data)


async def test_the_use_cases_inspect_the_file_in_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[threading.Thread] = []

    def recorded(kind: DocumentContentType, data: bytes, **kwargs: object) -> bytes:
        threads.append(threading.current_thread())
        return inspect_document(kind, data, max_bytes=CAP)

    monkeypatch.setattr(submissions, "inspect_document", recorded)
    monkeypatch.setattr(upload, "inspect_document", recorded)
    world = World()
    document = sf.pdf(sf.catalog(), sf.page())
    await world.submit("alice", file=document, content_type="application/pdf")
    await world.submissions.upload(upload_command("bob", document), chunks_of(document))
    assert len(threads) == 2
    assert threading.main_thread() not in threads


# ----- review of fe29cc4: inputs that took minutes, and the worker pool --------------------


def _refused_in_time(data: bytes, kind: DocumentContentType = PDF) -> str:
    """The refusal's description, which must come in well under the seconds the input took
    before (a bound against growth with the input, not a benchmark)."""
    started = time.monotonic()
    with pytest.raises(ValidationError) as caught:
        inspect_document(kind, data, max_bytes=CAP)
    assert time.monotonic() - started < 5.0
    (violation,) = caught.value.violations
    return violation.description


def test_an_object_stream_whose_offsets_repeat_is_refused_without_copying_its_body() -> None:
    """Each pair's text was sliced to the next distinct offset: 5,000 pairs at offset 0 over
    4 MiB copied 20 GB (an 8.5 KB file took 108 s)."""
    header = b" ".join(b"%d 0" % number for number in range(5, 5005)) + b"\n"
    packed = zlib.compress(header + b" " * (4 << 20), 9)
    objects = sf.stream(
        b"/Type /ObjStm /N 5000 /First %d /Filter /FlateDecode" % len(header), packed
    )
    data = sf.pdf(sf.catalog(), sf.page(), objects)
    assert "offsets repeat or go backwards" in _refused_in_time(data)


def test_many_streams_with_an_indirect_length_of_many_values_are_refused_in_time() -> None:
    """Every pending /Length n 0 R was tried against every value object n was given: 2,000
    streams times 20,000 values."""
    values = [b"%d" % value for value in range(20_000)]
    lengths = [sf.catalog(), sf.page(), *values]
    number = 3  # the first value's object
    streams = b"".join(
        b"%d 0 obj\n<< /Length %d 0 R /Subtype /Image >>\nstream\nxx\nendstream\nendobj\n"
        % (90_000 + i, number)
        for i in range(2_000)
    )
    data = sf.pdf(*lengths).replace(b"xref\n", streams + b"xref\n", 1)
    # Values past the end of the file: none meets an "endstream", none is refused.
    redefined = b"".join(b"%d 0 obj\n%d\nendobj\n" % (number, 10**9 + v) for v in range(20_000))
    data = data.replace(b"xref\n", redefined + b"xref\n", 1)
    assert "given over 64 values" in _refused_in_time(data)


def test_direct_lengths_into_a_long_run_of_spaces_are_refused_in_time() -> None:
    """Each /Length pointing into one run of 8 MiB of spaces read the run again (1,000
    streams: 9 s)."""
    run_at = 1_000 * 80 + 200
    streams = b"".join(
        b"%d 0 obj\n<< /Length %010d /Subtype /Image >>\nstream\nxx\nendstream\nendobj\n"
        % (10 + i, run_at - 80 * i)
        for i in range(1_000)
    )
    data = b"%PDF-1.7\n" + streams + b" " * (8 << 20) + b"x\n%%EOF\n"
    assert "spaces or comments" in _refused_in_time(data)


def test_a_jpeg_scan_of_fill_bytes_is_read_in_linear_time() -> None:
    """`\\xff++` re-read the run of fill bytes from each of its bytes: 160,000 took 3.4 s,
    10 MiB hours."""
    scan_start = sf.jpeg().index(b"\xff\xda")
    data = sf.jpeg()[: scan_start + 10] + b"\x00" + b"\xff" * (1 << 20)
    assert "end-of-image marker" in _refused_in_time(data, DocumentContentType.JPEG)


async def test_the_use_cases_inspect_on_a_pool_of_their_own_not_the_default_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names: list[str] = []

    def recorded(kind: DocumentContentType, data: bytes, **kwargs: object) -> bytes:
        names.append(threading.current_thread().name)
        return inspect_document(kind, data, max_bytes=CAP)

    monkeypatch.setattr(submissions, "inspect_document", recorded)
    monkeypatch.setattr(upload, "inspect_document", recorded)
    world = World()
    document = sf.pdf(sf.catalog(), sf.page())
    await world.submit("alice", file=document, content_type="application/pdf")
    await world.submissions.upload(upload_command("bob", document), chunks_of(document))
    assert len(names) == 2
    assert all(name.startswith("kyc-inspect") for name in names), names


async def test_a_file_over_the_cpu_budget_is_refused_on_the_file_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pdf_check, "CPU_BUDGET_SECONDS", 0.0, raising=False)
    world = World()
    document = sf.pdf(sf.catalog(), sf.page(), sf.stream(b"", b"%c\n" * 3_000))
    with pytest.raises(ValidationError) as caught:
        await world.submit("alice", file=document, content_type="application/pdf")
    (violation,) = caught.value.violations
    assert violation.field == "document_file"
    assert "too intricate to check" in violation.description


async def test_a_cancelled_call_holds_its_document_slot_until_its_inspection_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread cannot be stopped: a caller that gave up freed its slot while its inspection
    ran on, so cancelled calls could keep every core busy past KYC_MAX_DOCUMENTS_IN_FLIGHT."""
    started, release = threading.Event(), threading.Event()

    def held(kind: DocumentContentType, data: bytes, **kwargs: object) -> bytes:
        started.set()
        release.wait(30)
        return data

    monkeypatch.setattr(submissions, "inspect_document", held)
    world = World()
    pool = ThreadPoolExecutor(1, thread_name_prefix="kyc-inspect-test")
    service = submissions.SubmissionService(
        lambda: world.uow,
        world.clock,
        world.wallets,
        world.cipher,
        world.hasher,
        max_file_bytes=CAP,
        max_chunk_bytes=1 << 20,
        inspection_pool=pool,
    )
    servicer = KycServicer(
        service,
        upload_drain_limit_bytes=1 << 20,
        fingerprint_key=b"k" * 32,
        max_documents_in_flight=1,
    )
    PRINCIPAL.set(Principal("alice", Role.USER, str(uuid.uuid4())))
    METHOD.set("/vaultpay.kyc.v1.KycService/SubmitKyc")

    def request() -> kyc_pb2.SubmitKycRequest:
        return kyc_pb2.SubmitKycRequest(
            request_id=str(uuid.uuid4()),
            document_type=kyc_pb2.DOCUMENT_TYPE_PAN,
            document_number="ABCPE1234F",
            document_file=sf.pdf(sf.catalog(), sf.page()),
            document_content_type="application/pdf",
        )

    call = asyncio.ensure_future(servicer.SubmitKyc(request(), None))  # type: ignore[arg-type]
    assert await asyncio.to_thread(started.wait, 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    with pytest.raises(KycBusyError):  # the thread still runs: its slot is still taken
        await servicer.SubmitKyc(request(), None)  # type: ignore[arg-type]
    release.set()
    # The pool's one thread ran the cancelled call's inspection first: once this is done,
    # that one is too, and its release was queued on the loop before this answer.
    await asyncio.wrap_future(pool.submit(lambda: None))
    started.clear()
    answered = await servicer.SubmitKyc(request(), None)  # type: ignore[arg-type]
    assert answered.HasField("submission")
    pool.shutdown()
