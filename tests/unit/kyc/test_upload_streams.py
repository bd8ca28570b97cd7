"""One upload stream per user at a time (review of 2026-12-04, third): each stream holds up to
a file of the cap while it is received, so parallel streams of one user could hold the
service's memory. A second stream while the first is being received is refused
KYC_UPLOAD_IN_PROGRESS (after draining it, as every refusal); another user's is not, and the
user may upload again once the first has answered. The servicer is called directly, with a
stand-in use case that holds the first upload on an event.

A refused stream is drained (its client hears the refusal, not a reset) within a bound that
every message counts toward, empty ones too, and the user's guard is held until the drain
ends (review of kyc, item 1)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from vaultpay.kyc.v1 import kyc_pb2
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import ValidationError
from vaultpay_kyc.domain.errors import KycBusyError, KycUploadInProgressError
from vaultpay_kyc.entrypoints.servicers import KycServicer
from vaultpay_kyc.service_layer.commands import UploadKycDocument

_KEY = b"fingerprint-key-of-this-test-32b"
MiB = 1 << 20


class _HeldUploads:
    """`upload` reads its chunks, puts its user on `reached`, then waits for `release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reached: asyncio.Queue[str] = asyncio.Queue()

    async def upload(self, cmd: UploadKycDocument, chunks: AsyncIterator[bytes]) -> Any:
        async for _ in chunks:
            pass
        self.reached.put_nowait(cmd.user_id)
        await self.release.wait()
        raise asyncio.CancelledError  # nothing to answer: the test looks at the guard only


def _stream() -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
    async def messages() -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
        yield kyc_pb2.UploadKycDocumentRequest(
            metadata=kyc_pb2.UploadKycDocumentMetadata(request_id=str(uuid.uuid4()))
        )
        yield kyc_pb2.UploadKycDocumentRequest(chunk=b"%PDF-1.7 test")

    return messages()


@pytest.fixture
def as_user() -> Iterator[str]:
    user_id = str(uuid.uuid4())
    token = PRINCIPAL.set(Principal(user_id, Role.USER, str(uuid.uuid4())))
    method = METHOD.set("/vaultpay.kyc.v1.KycService/UploadKycDocument")
    yield user_id
    METHOD.reset(method)
    PRINCIPAL.reset(token)


async def test_a_second_stream_of_the_same_user_is_refused_while_the_first_is_received(
    as_user: str,
) -> None:
    uploads = _HeldUploads()
    servicer = KycServicer(
        uploads,  # type: ignore[arg-type]
        upload_drain_limit_bytes=1 << 20,
        fingerprint_key=_KEY,
    )
    first = asyncio.ensure_future(servicer.UploadKycDocument(_stream(), None))  # type: ignore[arg-type]
    assert await asyncio.wait_for(uploads.reached.get(), 5) == as_user

    with pytest.raises(KycUploadInProgressError):
        await servicer.UploadKycDocument(_stream(), None)  # type: ignore[arg-type]

    async def others() -> None:  # another user, in its own context
        PRINCIPAL.set(Principal(str(uuid.uuid4()), Role.USER, str(uuid.uuid4())))
        await servicer.UploadKycDocument(_stream(), None)  # type: ignore[arg-type]

    other = asyncio.ensure_future(others())
    assert await asyncio.wait_for(uploads.reached.get(), 5) != as_user  # not refused

    uploads.release.set()
    for held in (first, other):
        with pytest.raises(asyncio.CancelledError):
            await held
    uploads.release.clear()
    again = asyncio.ensure_future(servicer.UploadKycDocument(_stream(), None))  # type: ignore[arg-type]
    # The first answered: the user may upload again.
    assert await asyncio.wait_for(uploads.reached.get(), 5) == as_user
    uploads.release.set()
    with pytest.raises(asyncio.CancelledError):
        await again


# ----- refused streams: the drain (review of kyc, item 1) -----------------------------------


class _Counted:
    """A client stream (`messages()`): the metadata, then `then`; `read` counts the messages
    the server has read so far."""

    def __init__(self, then: Iterator[kyc_pb2.UploadKycDocumentRequest]) -> None:
        self.read = 0
        self._then = then

    async def messages(self) -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
        self.read += 1
        yield kyc_pb2.UploadKycDocumentRequest(
            metadata=kyc_pb2.UploadKycDocumentMetadata(request_id=str(uuid.uuid4()))
        )
        for message in self._then:
            self.read += 1
            yield message


class _RefusesAtOnce:
    async def upload(self, cmd: UploadKycDocument, chunks: AsyncIterator[bytes]) -> Any:
        raise ValidationError.single("metadata.document_number", "is required")


async def _refused_and_drained(client: _Counted) -> None:
    """`client`'s stream through the servicer, drained up to 1 MiB after its refusal; its
    messages count as at least 16 KiB (the service's smallest chunk, the default)."""
    servicer = KycServicer(
        _RefusesAtOnce(),  # type: ignore[arg-type]
        upload_drain_limit_bytes=MiB,
        fingerprint_key=_KEY,
    )
    with pytest.raises(ValidationError):
        await servicer.UploadKycDocument(client.messages(), None)  # type: ignore[arg-type]


async def test_a_refused_stream_of_empty_messages_is_cut_off_after_a_bounded_number(
    as_user: str,
) -> None:
    """An empty message's ByteSize() is 0, so the drain never reached its bound and read every
    message a client sent; each costs the event loop tens of microseconds."""
    client = _Counted(kyc_pb2.UploadKycDocumentRequest() for _ in range(200_000))
    await _refused_and_drained(client)
    assert client.read <= 1 + MiB // (16 * 1024) + 1  # the metadata, the bound's worth, one over


async def test_a_refused_stream_of_one_byte_chunks_is_cut_off_as_early(as_user: str) -> None:
    client = _Counted(kyc_pb2.UploadKycDocumentRequest(chunk=b"x") for _ in range(200_000))
    await _refused_and_drained(client)
    assert client.read <= 1 + MiB // (16 * 1024) + 1


async def test_a_refused_stream_of_chunks_the_contract_allows_is_drained_whole(
    as_user: str,
) -> None:
    """A client whose chunks are at least the smallest one accepted is read to its end, and so
    hears its refusal, up to the bound: 60 chunks of 16 KiB and a last one of a byte."""
    chunks = [kyc_pb2.UploadKycDocumentRequest(chunk=b"x" * 16 * 1024)] * 60
    client = _Counted(iter([*chunks, kyc_pb2.UploadKycDocumentRequest(chunk=b"!")]))
    await _refused_and_drained(client)
    assert client.read == 1 + 61


async def test_the_users_next_stream_is_refused_while_a_refused_one_is_still_drained(
    as_user: str,
) -> None:
    """The one-upload guard was released when the use case refused, before the drain: a user
    could start the next stream while the last one was still being read."""
    draining = asyncio.Event()
    release = asyncio.Event()

    async def refused_then_still_sending() -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
        yield kyc_pb2.UploadKycDocumentRequest(
            metadata=kyc_pb2.UploadKycDocumentMetadata(request_id=str(uuid.uuid4()))
        )
        yield kyc_pb2.UploadKycDocumentRequest(chunk=b"%PDF-1.7 refused")
        draining.set()
        await release.wait()
        yield kyc_pb2.UploadKycDocumentRequest(chunk=b"the rest")

    class _RefusesAtTheFirstChunk:
        def __init__(self) -> None:
            self.reached = 0

        async def upload(self, cmd: UploadKycDocument, chunks: AsyncIterator[bytes]) -> Any:
            self.reached += 1
            async for _ in chunks:
                raise ValidationError.single("chunk", "refused")
            raise AssertionError("a chunk was sent")

    uploads = _RefusesAtTheFirstChunk()
    servicer = KycServicer(
        uploads,  # type: ignore[arg-type]
        upload_drain_limit_bytes=1 << 20,
        fingerprint_key=_KEY,
    )
    first = asyncio.ensure_future(
        servicer.UploadKycDocument(refused_then_still_sending(), None)  # type: ignore[arg-type]
    )
    await asyncio.wait_for(draining.wait(), 5)

    with pytest.raises(KycUploadInProgressError):
        await servicer.UploadKycDocument(_stream(), None)  # type: ignore[arg-type]
    assert uploads.reached == 1

    release.set()
    with pytest.raises(ValidationError):
        await first
    with pytest.raises(ValidationError):  # drained and answered: the user may upload again
        await servicer.UploadKycDocument(_stream(), None)  # type: ignore[arg-type]
    assert uploads.reached == 2


# ----- documents in flight, every user together (review of kyc, 2026-12-05) -----------------


class _HeldSubmissions(_HeldUploads):
    """Also holds SubmitKyc calls: `submit` puts its user on `reached` and waits."""

    async def submit(self, cmd: Any) -> Any:
        self.reached.put_nowait(cmd.user_id)
        await self.release.wait()
        raise asyncio.CancelledError


async def _as(user_id: str, call: Any) -> Any:
    PRINCIPAL.set(Principal(user_id, Role.USER, str(uuid.uuid4())))
    METHOD.set("/vaultpay.kyc.v1.KycService/SubmitKyc")
    return await call()


async def test_documents_in_flight_are_bounded_across_users_and_both_ways_in(
    as_user: str,
) -> None:
    """Every user's SubmitKyc (a whole file each) and upload streams together: fifteen
    parallel 10 MiB calls took the pod past its memory. Past the bound KYC_BUSY (429, retry
    in a second); a slot frees when a call answers."""
    held = _HeldSubmissions()
    servicer = KycServicer(
        held,  # type: ignore[arg-type]
        upload_drain_limit_bytes=MiB,
        fingerprint_key=_KEY,
        max_documents_in_flight=2,
    )
    request = kyc_pb2.SubmitKycRequest(request_id=str(uuid.uuid4()), document_file=b"%PDF")
    first = asyncio.ensure_future(
        _as(str(uuid.uuid4()), lambda: servicer.SubmitKyc(request, None))  # type: ignore[arg-type]
    )
    second = asyncio.ensure_future(
        _as(str(uuid.uuid4()), lambda: servicer.UploadKycDocument(_stream(), None))  # type: ignore[arg-type]
    )
    for _ in range(2):
        await asyncio.wait_for(held.reached.get(), 5)
    with pytest.raises(KycBusyError) as busy:  # a third user, in a task (context) of its own
        await asyncio.ensure_future(
            _as(str(uuid.uuid4()), lambda: servicer.SubmitKyc(request, None))  # type: ignore[arg-type]
        )
    assert (busy.value.reason, busy.value.retry_after_seconds) == ("KYC_BUSY", 1)
    with pytest.raises(KycBusyError):
        await servicer.UploadKycDocument(_stream(), None)  # type: ignore[arg-type]
    held.release.set()
    for call in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await call
    held.release.clear()
    again = asyncio.ensure_future(servicer.SubmitKyc(request, None))  # type: ignore[arg-type]
    assert await asyncio.wait_for(held.reached.get(), 5) == as_user  # a slot is free again
    held.release.set()
    with pytest.raises(asyncio.CancelledError):
        await again


async def test_a_stream_that_sends_nothing_yet_holds_no_document_slot(as_user: str) -> None:
    """Review of the bound above: the slot was taken before the stream's first message, so
    eight signed-in users whose streams sent nothing kept every document out."""
    held = _HeldSubmissions()
    servicer = KycServicer(
        held,  # type: ignore[arg-type]
        upload_drain_limit_bytes=MiB,
        fingerprint_key=_KEY,
        max_documents_in_flight=1,
    )
    never = asyncio.Event()

    async def silent() -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
        await never.wait()
        yield kyc_pb2.UploadKycDocumentRequest()

    quiet = [
        asyncio.ensure_future(
            _as(str(uuid.uuid4()), lambda: servicer.UploadKycDocument(silent(), None))  # type: ignore[arg-type]
        )
        for _ in range(3)
    ]
    request = kyc_pb2.SubmitKycRequest(request_id=str(uuid.uuid4()), document_file=b"%PDF")
    submitting = asyncio.ensure_future(servicer.SubmitKyc(request, None))  # type: ignore[arg-type]
    assert await asyncio.wait_for(held.reached.get(), 5) == as_user  # not KYC_BUSY
    held.release.set()
    with pytest.raises(asyncio.CancelledError):
        await submitting
    for stream in quiet:
        stream.cancel()
    await asyncio.gather(*quiet, return_exceptions=True)
