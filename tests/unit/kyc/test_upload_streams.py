"""One upload stream per user at a time (review of 2026-12-04, third): each stream holds up to
a file of the cap while it is received, so parallel streams of one user could hold the
service's memory. A second stream while the first is being received is refused
KYC_UPLOAD_IN_PROGRESS (after draining it, as every refusal); another user's is not, and the
user may upload again once the first has answered. The servicer is called directly, with a
stand-in use case that holds the first upload on an event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from vaultpay.kyc.v1 import kyc_pb2
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_kyc.domain.errors import KycUploadInProgressError
from vaultpay_kyc.entrypoints.servicers import KycServicer
from vaultpay_kyc.service_layer.commands import UploadKycDocument

_KEY = b"fingerprint-key-of-this-test-32b"


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
