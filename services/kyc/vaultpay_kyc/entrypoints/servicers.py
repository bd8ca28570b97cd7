"""gRPC servicers of the kyc service. Each method: convert the request, await a use case,
convert the result. No SQL, no try/except, no context.abort here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from google.protobuf.message import Message

from vaultpay.kyc.v1 import kyc_pb2, kyc_pb2_grpc
from vaultpay_common.context import CLIENT_IP
from vaultpay_common.errors import ValidationError
from vaultpay_common.grpc.convert import current_principal, current_staff, page_scope, timestamp
from vaultpay_common.grpc.idempotency import idempotency_key
from vaultpay_common.grpc.servicer import ServicerContext
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_common.ids import parse_optional_uuid
from vaultpay_common.input_checks import InputChecks, refusal_or
from vaultpay_common.pagination import PageTokens, SliceOf, page_size, paginate
from vaultpay_kyc.domain.documents import MAX_RAW_NUMBER_LENGTH, normalise_document_number
from vaultpay_kyc.domain.errors import KycBusyError, KycUploadInProgressError
from vaultpay_kyc.domain.model import Submission
from vaultpay_kyc.domain.staff_reads import StaffViewer
from vaultpay_kyc.domain.upload import MIN_CHUNK_BYTES
from vaultpay_kyc.entrypoints.convert import (
    document_type_from_proto,
    queue_cursor,
    queue_position,
    status_from_proto,
    submission_to_proto,
    tier_from_proto,
    tier_to_proto,
)
from vaultpay_kyc.entrypoints.upload_stream import UploadStream
from vaultpay_kyc.service_layer import commands as cmd
from vaultpay_kyc.service_layer.ports import ListedSubmission, QueueCursor, QueueFilter
from vaultpay_kyc.service_layer.review import ReviewService
from vaultpay_kyc.service_layer.rotation import KeyRotationService
from vaultpay_kyc.service_layer.submissions import SubmissionService, watching_workers

__all__ = ["KycAdminServicer", "KycInternalServicer", "KycServicer"]

Ctx = ServicerContext


# Longer values are refused by the use cases whatever their spelling: they enter the
# fingerprint as sent, so an oversized value costs no respelling on the event loop (a 10 MiB
# number took half a second).
_RESPELLED_UP_TO = 256


def _number(value: str) -> str:
    return normalise_document_number(value) if len(value) <= MAX_RAW_NUMBER_LENGTH else value


def _lowered(value: str) -> str:
    return value.strip().lower() if len(value) <= _RESPELLED_UP_TO else value


# How the use cases read the document fields (documents.py, files.py, upload.py), for the
# requests that have them.
_SPELLINGS: dict[str, Callable[[str], str]] = {
    "document_number": _number,
    "document_content_type": _lowered,
    "document_sha256": _lowered,
}


# A decision's fields as the review reads them (the submission id lower-cased by parse_uuid,
# the text trimmed), so that a retry spelt otherwise replays the decision instead of being
# refused IDEMPOTENCY_KEY_REUSED for one that took effect.
_APPROVAL: Mapping[str, Callable[[str], str]] = {
    "submission_id": lambda value: value.lower() if value.isascii() else value,
    "note": str.strip,
}
_REJECTION: Mapping[str, Callable[[str], str]] = {
    "submission_id": _APPROVAL["submission_id"],
    "reason": str.strip,
}


class KycServicer(kyc_pb2_grpc.KycServiceServicer):
    def __init__(
        self,
        submissions: SubmissionService,
        *,
        upload_drain_limit_bytes: int,
        fingerprint_key: bytes,
        upload_min_chunk_bytes: int = MIN_CHUNK_BYTES,
        max_documents_in_flight: int = 8,
    ) -> None:
        self._fingerprint_key = fingerprint_key
        self._submissions = submissions
        self._drain_limit = upload_drain_limit_bytes
        self._min_chunk = upload_min_chunk_bytes
        self._uploading: set[str] = set()  # users whose upload stream is being received
        self._max_documents = max_documents_in_flight
        self._documents = 0  # SubmitKyc calls and upload streams being handled now

    @contextmanager
    def _document_slot(self) -> Iterator[None]:
        """One of the documents this process handles at once (KYC_MAX_DOCUMENTS_IN_FLIGHT);
        none left: KYC_BUSY. One user's streams are also one at a time (`_one_upload_of`),
        but many users' (or one user's inline SubmitKyc calls, each a whole file) were not
        bounded: fifteen parallel 10 MiB calls took the pod past its memory (review of
        2026-12-05)."""
        if self._documents >= self._max_documents:
            raise KycBusyError()
        self._documents += 1
        workers: list[Future[Any]] = []
        try:
            with watching_workers(workers.append):
                yield
        finally:
            self._release_when_done([worker for worker in workers if not worker.done()])

    def _release_when_done(self, running: list[Future[Any]]) -> None:
        """Gives the slot back once every inspection thread the call started is done: a
        cancelled caller's thread runs on, and held the slot's CPU and memory unseen (review
        of fe29cc4)."""
        if not running:
            self._documents -= 1
            return
        loop = asyncio.get_running_loop()
        left = len(running)

        def one_done() -> None:
            nonlocal left
            left -= 1
            if left == 0:
                self._documents -= 1

        def finished(_: Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody counts any more
                loop.call_soon_threadsafe(one_done)

        for worker in running:
            worker.add_done_callback(finished)

    @contextmanager
    def _one_upload_of(self, user_id: str) -> Iterator[None]:
        """Refuses a second upload stream of `user_id` while one is being received, or drained
        after its refusal, in this process (KYC_UPLOAD_IN_PROGRESS, drained like any refusal).
        Another replica does not see it; the gateway's limits bound what a user reaches
        there."""
        if user_id in self._uploading:
            raise KycUploadInProgressError()
        self._uploading.add(user_id)
        try:
            yield
        finally:
            self._uploading.discard(user_id)

    def _document_key(self, request: Message) -> IdempotencyKey | None:
        """The call's key with the document number keyed into the fingerprint (its mask and
        check digit leave few values to try; grpc/idempotency.py). The fields the use cases
        read whatever their spelling enter it as they read them: a retry that writes the
        number with spaces or in lower case, or the digest in upper case, is the same request
        (it was IDEMPOTENCY_KEY_REUSED)."""
        return idempotency_key(
            request,
            secret=("document_number",),
            secret_key=self._fingerprint_key,
            canonical={
                name: respell
                for name, respell in _SPELLINGS.items()
                if name in request.DESCRIPTOR.fields_by_name
            },
        )

    def _upload_key(self, metadata: kyc_pb2.UploadKycDocumentMetadata) -> IdempotencyKey | None:
        """The upload's key, from its metadata message: a bad request_id is named as the
        stream's first message holds it (`metadata.request_id`), like its other fields."""
        try:
            return self._document_key(metadata)
        except ValidationError as refused:
            raise refused.within("metadata") from None

    async def SubmitKyc(
        self, request: kyc_pb2.SubmitKycRequest, context: Ctx
    ) -> kyc_pb2.SubmitKycResponse:
        with self._document_slot():
            submission = await self._submissions.submit(
                cmd.SubmitKyc(
                    current_principal().user_id,
                    document_type_from_proto(request.document_type),
                    request.document_number,
                    request.document_file,
                    request.document_content_type,
                    self._document_key(request),
                )
            )
        return kyc_pb2.SubmitKycResponse(
            submission=submission_to_proto(submission, staff_view=False)
        )

    async def UploadKycDocument(
        self, request_iterator: AsyncIterable[kyc_pb2.UploadKycDocumentRequest], context: Ctx
    ) -> kyc_pb2.UploadKycDocumentResponse:
        user_id = current_principal().user_id
        stream = UploadStream(
            request_iterator,
            drain_limit_bytes=self._drain_limit,
            min_message_bytes=self._min_chunk,
        )

        async def upload(
            metadata: kyc_pb2.UploadKycDocumentMetadata, chunks: AsyncIterator[bytes]
        ) -> Submission:
            # The slot is taken once the metadata arrived, and given back before a refused
            # stream is drained: a stream that sends nothing, or one refused, holds none
            # (review of 2026-12-05: eight silent streams kept every document out).
            with self._document_slot():
                return await self._upload(user_id, metadata, chunks)

        submission = await stream.answer(upload, hold=self._one_upload_of(user_id))
        return kyc_pb2.UploadKycDocumentResponse(
            submission=submission_to_proto(submission, staff_view=False)
        )

    async def _upload(
        self,
        user_id: str,
        metadata: kyc_pb2.UploadKycDocumentMetadata,
        chunks: AsyncIterator[bytes],
    ) -> Submission:
        return await self._submissions.upload(
            cmd.UploadKycDocument(
                user_id,
                document_type_from_proto(metadata.document_type, "metadata.document_type"),
                metadata.document_number,
                metadata.document_content_type,
                metadata.document_size_bytes,
                metadata.document_sha256,
                self._upload_key(metadata),
            ),
            chunks,
        )

    async def GetKycStatus(
        self, request: kyc_pb2.GetKycStatusRequest, context: Ctx
    ) -> kyc_pb2.GetKycStatusResponse:
        view = await self._submissions.status(current_principal().user_id)
        reply = kyc_pb2.GetKycStatusResponse(kyc_tier=tier_to_proto(view.tier))
        if view.latest is not None:
            latest = submission_to_proto(view.latest, staff_view=False)
            reply.latest_submission.CopyFrom(latest)
            reply.status = latest.status
            reply.rejection_reason = latest.rejection_reason
        return reply


class KycAdminServicer(kyc_pb2_grpc.KycAdminServiceServicer):
    def __init__(
        self, review: ReviewService, rotation: KeyRotationService, page_tokens: PageTokens
    ) -> None:
        self._review = review
        self._rotation = rotation
        self._tokens = page_tokens

    async def AdminListKycSubmissions(
        self, request: kyc_pb2.AdminListKycSubmissionsRequest, context: Ctx
    ) -> kyc_pb2.AdminListKycSubmissionsResponse:
        with InputChecks() as checks:  # one refusal names every bad field
            checks.run(lambda: page_size(request.page_size))
            status = checks.run(lambda: status_from_proto(request.status))
            user_id = checks.run(lambda: parse_optional_uuid(request.user_id, "user_id"))
        flt = QueueFilter(status=status.value, user_id=user_id.value)
        viewer = StaffViewer(*current_staff(), CLIENT_IP.get())

        async def fetch(after: QueueCursor | None, limit: int) -> SliceOf[ListedSubmission]:
            page = await self._review.list_queue(flt, after, limit, viewer=viewer)
            return SliceOf(page.items, page.has_more)

        page = await paginate(
            self._tokens,
            page_size=request.page_size,
            page_token=request.page_token,
            scope=page_scope(),
            filters={"status": flt.status, "user": flt.user_id},
            fetch_slice=fetch,
            cursor_of=lambda listed: queue_position(listed.submission),
            parse=queue_cursor,
        )
        return kyc_pb2.AdminListKycSubmissionsResponse(
            submissions=[
                submission_to_proto(
                    i.submission, staff_view=True, possible_duplicate=i.possible_duplicate
                )
                for i in page.items
            ],
            next_page_token=page.next_page_token,
        )

    async def AdminGetKycSubmission(
        self, request: kyc_pb2.AdminGetKycSubmissionRequest, context: Ctx
    ) -> kyc_pb2.AdminGetKycSubmissionResponse:
        details = await self._review.view(
            request.submission_id, viewer=StaffViewer(*current_staff(), CLIENT_IP.get())
        )
        return kyc_pb2.AdminGetKycSubmissionResponse(
            submission=submission_to_proto(
                details.submission,
                staff_view=True,
                possible_duplicate=details.possible_duplicate,
            ),
            document_number=details.document_number,
            document_file=details.document_file,
            duplicate_submission_ids=details.duplicate_submission_ids,
            hidden_duplicate_count=details.hidden_duplicate_count,
        )

    async def AdminApproveKyc(
        self, request: kyc_pb2.AdminApproveKycRequest, context: Ctx
    ) -> kyc_pb2.AdminApproveKycResponse:
        submission = await self._review.approve(
            cmd.ApproveKyc(
                *current_staff(),
                request.submission_id,
                refusal_or(tier_from_proto, request.kyc_tier),
                request.note,
                refusal_or(idempotency_key, request, canonical=_APPROVAL),
                CLIENT_IP.get(),
            )
        )
        return kyc_pb2.AdminApproveKycResponse(
            submission=submission_to_proto(submission, staff_view=True)
        )

    async def AdminRejectKyc(
        self, request: kyc_pb2.AdminRejectKycRequest, context: Ctx
    ) -> kyc_pb2.AdminRejectKycResponse:
        submission = await self._review.reject(
            cmd.RejectKyc(
                *current_staff(),
                request.submission_id,
                request.reason,
                refusal_or(idempotency_key, request, canonical=_REJECTION),
                CLIENT_IP.get(),
            )
        )
        return kyc_pb2.AdminRejectKycResponse(
            submission=submission_to_proto(submission, staff_view=True)
        )

    async def AdminRotateKycKey(
        self, request: kyc_pb2.AdminRotateKycKeyRequest, context: Ctx
    ) -> kyc_pb2.AdminRotateKycKeyResponse:
        outcome = await self._rotation.rotate(
            cmd.RotateKycKey(
                idempotency_key(request, required=True), *current_staff(), CLIENT_IP.get()
            ),
            answer_within=ROTATION_ANSWER_WITHIN_SECONDS,
        )
        return kyc_pb2.AdminRotateKycKeyResponse(
            key_id=outcome.key_id,
            previous_key_id=outcome.previous_key_id,
            reencrypted_count=outcome.reencrypted_count,
        )


# What AdminRotateKycKey answers within when its caller sent no deadline: a JSON call through
# the gateway carries none, and the gateway ends a unary call at 15 s (a 504 where the contract
# promises KYC_KEY_ROTATION_INCOMPLETE); the background job goes on with the rest.
ROTATION_ANSWER_WITHIN_SECONDS = 12.0


class KycInternalServicer(kyc_pb2_grpc.KycInternalServiceServicer):
    def __init__(self, review: ReviewService) -> None:
        self._review = review

    async def GetKycStats(
        self, request: kyc_pb2.GetKycStatsRequest, context: Ctx
    ) -> kyc_pb2.GetKycStatsResponse:
        stats = await self._review.stats()
        return kyc_pb2.GetKycStatsResponse(
            pending_count=stats.pending_count, compute_time=timestamp(stats.computed_at)
        )
