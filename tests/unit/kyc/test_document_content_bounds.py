"""The content check's bounds at the service's real cap (10 MiB): a decompression bomb is
refused at its bound in little time and memory, a file crafted to be slow to read is read in
well under a second, and the use cases run the check in a worker thread, not on the event
loop (it reads the whole file: ~0.5 s for the worst 10 MiB file found, against ~10 ms to seal
one)."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import tracemalloc
import zlib

import pytest

from tests.unit.kyc import sample_files as sf
from tests.unit.kyc.kyc_world import World, chunks_of, upload_command
from vaultpay_common.errors import ValidationError
from vaultpay_kyc.domain import upload
from vaultpay_kyc.domain.files import DocumentContentType, inspect_document
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
