"""The wallet holder's use cases: submit (inline file or streamed), and read the status.

Everything that can be refused is refused before a transaction opens: the number's format, the
file's size and magic bytes, the wallet's existence, then what the whole file carries
(`inspect_document`, after the cheaper refusals: a retry of a stored submission and a user who
may not submit cost no inspection). The inspection reads the whole file (about half a second
of CPU for the slowest crafted one at the 10 MiB cap, against ~10 ms to seal it, and
milliseconds for a scan), so it runs in a worker thread, not on the event loop: on a pool of
its own (`usable_cpus()` threads at a lower priority, not the default executor sized from the
node's CPUs), with a CPU budget per file (`CPU_BUDGET_SECONDS`: over it, refused as too
intricate). A thread cannot be stopped, so a caller that gives up does not give back its
document slot (KYC_MAX_DOCUMENTS_IN_FLIGHT) until its worker is done (`watching_workers`).
Encryption happens in memory before the transaction too (a fresh data key per submission), of
the file as inspected (an image without its Exif location); the transaction only takes the
active key-encryption key, wraps the data key under it, stores the row and the audit entry. A
stream that fails half-way has written nothing, because nothing is written before it ends.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.cpu_pool import low_priority_executor, usable_cpus
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import DataclassCodec, IdempotencyKey, run_once, stored_reply
from vaultpay_kyc.domain.crypto import (
    DataKey,
    DocumentHasher,
    EnvelopeCipher,
    Field,
    SubmissionRef,
)
from vaultpay_kyc.domain.documents import (
    DocumentType,
    check_document_number,
    mask_document_number,
)
from vaultpay_kyc.domain.files import (
    DocumentContentType,
    check_document_file,
    inspect_document,
)
from vaultpay_kyc.domain.model import DocumentFile, KycStatus, Submission, check_may_submit
from vaultpay_kyc.domain.upload import METADATA_FIELD, UploadAssembler, plan_upload
from vaultpay_kyc.service_layer.commands import KycStatusView, SubmitKyc, UploadKycDocument
from vaultpay_kyc.service_layer.ports import KycUnitOfWork, SealedDocument, WalletDirectory

__all__ = ["SUBMISSION_CODEC", "SubmissionService", "watching_workers"]

SUBMISSION_CODEC = DataclassCodec(Submission)

T = TypeVar("T")

# Told of each worker future the call being handled starts (the servicer's document slot).
_worker_watch: ContextVar[Callable[[Future[Any]], None] | None] = ContextVar(
    "kyc_document_workers", default=None
)


@contextmanager
def watching_workers(watch: Callable[[Future[Any]], None]) -> Iterator[None]:
    """Within the block, `watch` is given each inspection's future as it is submitted, so that
    the caller can hold a resource until the thread is done, not merely until it stops
    waiting (a cancelled call's inspection runs on)."""
    token = _worker_watch.set(watch)
    try:
        yield
    finally:
        _worker_watch.reset(token)


@dataclass(frozen=True, slots=True)
class _Sealed:
    """A submission ready to store: validated, and sealed under its own data key."""

    ref: SubmissionRef
    dek: DataKey
    document_type: DocumentType
    number: str
    number_hash: str
    sealed_number: bytes
    file: DocumentFile | None
    sealed_file: bytes | None
    channel: str


def _document_type(value: DocumentType | None, field: str) -> DocumentType:
    if value is None:
        raise ValidationError.single(field, "is required")
    return value


async def _check_may_submit(uow: KycUnitOfWork, user_id: str) -> None:
    """No pending submission, and a tier below FULL (`check_may_submit`). A race of two
    submissions ends at the one-pending index; no approval can race this check, since one
    needs a pending submission, which would have refused this one."""
    pending = await uow.submissions.pending_for_user(user_id)
    check_may_submit(pending, await uow.submissions.held_tier(user_id))


class SubmissionService:
    def __init__(
        self,
        uow: Callable[[], KycUnitOfWork],
        clock: Clock,
        wallets: WalletDirectory,
        cipher: EnvelopeCipher,
        hasher: DocumentHasher,
        *,
        max_file_bytes: int,
        max_chunk_bytes: int,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        inspection_pool: Executor | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._wallets = wallets
        self._cipher = cipher
        self._hasher = hasher
        self._max_file = max_file_bytes
        self._max_chunk = max_chunk_bytes
        self._new_id = new_id
        self._pool = inspection_pool or low_priority_executor(
            usable_cpus(), thread_name_prefix="kyc-inspect"
        )

    async def _in_worker(self, work: Callable[[], T]) -> T:
        """`work` on the inspection pool; the watcher of the call (`watching_workers`) is
        told of its future."""
        future = self._pool.submit(work)
        watch = _worker_watch.get()
        if watch is not None:
            watch(future)
        return await asyncio.wrap_future(future)

    # ----- submit -----------------------------------------------------------------------

    async def submit(self, cmd: SubmitKyc) -> Submission:
        """SubmitKyc: a number and an optional inline file."""
        document_type = _document_type(cmd.document_type, "document_type")
        number = check_document_number(
            document_type, cmd.document_number, current_year=self._clock.now().year
        )
        kind: DocumentContentType | None = None
        if cmd.document_file:
            kind = check_document_file(
                cmd.document_file, cmd.document_content_type, max_bytes=self._max_file
            )
        elif cmd.document_content_type.strip():
            raise ValidationError.single(
                "document_content_type", "must be empty without a document_file"
            )
        stored = await self._stored(cmd.idempotency)
        if stored is not None:
            return stored  # a retry of a submission that committed: wallet is not asked
        await self._wallets.require_wallet(cmd.user_id)
        # Before the file is sealed (a copy of it): a user with a submission pending is told
        # so without the service spending memory and CPU on it (review of 2026-12-05).
        await self._refuse_early_when_already_submitted(cmd.idempotency, cmd.user_id)
        ref = SubmissionRef(self._new_id(), cmd.user_id)
        dek = DataKey.generate(ref)
        sealed = self._seal(ref, dek, document_type, number, channel="inline")
        if kind is not None:
            file, max_file = cmd.document_file, self._max_file
            stored_file = await self._in_worker(
                lambda: inspect_document(kind, file, max_bytes=max_file)
            )
            sealed = replace(
                sealed,
                file=DocumentFile(kind, len(stored_file)),
                sealed_file=dek.seal(Field.DOCUMENT_FILE, stored_file),
            )
        async with self._uow() as uow:
            return await run_once(
                uow, cmd.idempotency, SUBMISSION_CODEC, lambda: self._store(uow, sealed)
            )

    async def upload(self, cmd: UploadKycDocument, chunks: AsyncIterator[bytes]) -> Submission:
        """UploadKycDocument: the metadata, then the file in chunks, sealed as they arrive."""
        document_type = _document_type(cmd.document_type, f"{METADATA_FIELD}.document_type")
        number = check_document_number(
            document_type,
            cmd.document_number,
            current_year=self._clock.now().year,
            field=f"{METADATA_FIELD}.document_number",
        )
        plan = plan_upload(
            cmd.document_size_bytes,
            cmd.document_sha256,
            cmd.document_content_type,
            max_bytes=self._max_file,
        )
        replay = await self._stored(cmd.idempotency) is not None
        if not replay:
            # A retry of an upload that committed is answered its stored reply at the end of
            # the stream (run_once), whether or not wallet answers now.
            await self._wallets.require_wallet(cmd.user_id)
            await self._refuse_early_when_already_submitted(cmd.idempotency, cmd.user_id)
        ref = SubmissionRef(self._new_id(), cmd.user_id)
        dek = DataKey.generate(ref)
        assembler = UploadAssembler(
            plan, dek.sealer(Field.DOCUMENT_FILE), max_chunk_bytes=self._max_chunk
        )
        async for chunk in chunks:
            assembler.add(chunk)
        # Inspected even when a replay was seen at the start: its idempotency record may be
        # purged by the time run_once runs, which then stores this file (review of fe29cc4).
        sealed_file = await self._in_worker(assembler.finish)
        sealed = replace(
            self._seal(ref, dek, document_type, number, channel="stream"),
            file=DocumentFile(plan.content_type, assembler.stored_bytes),
            sealed_file=sealed_file,
        )
        async with self._uow() as uow:
            return await run_once(
                uow, cmd.idempotency, SUBMISSION_CODEC, lambda: self._store(uow, sealed)
            )

    async def _stored(self, key: IdempotencyKey | None) -> Submission | None:
        """The reply of an earlier submission with `key` that committed, looked up before
        wallet is asked (ARCHITECTURE.md: a retry gets its first answer whatever a peer says
        now), in a short transaction of its own."""
        async with self._uow() as uow:
            return await stored_reply(uow, key, SUBMISSION_CODEC)

    async def _refuse_early_when_already_submitted(
        self, key: IdempotencyKey | None, user_id: str
    ) -> None:
        """Refuses KYC_ALREADY_SUBMITTED before any chunk is sealed or stored, unless the
        request is a retry of a stored success (then the end of the stream replays it). The
        client still sends the rest of its stream before it hears the refusal (the stream is
        drained so the answer is not lost to a reset, `upload_stream`); the service spends
        nothing on it.

        The claim is only a look: the block ends without commit, which releases it."""
        async with self._uow() as uow:
            if key is not None and await uow.idempotency.claim(key) is not None:
                return
            await _check_may_submit(uow, user_id)

    def _seal(
        self,
        ref: SubmissionRef,
        dek: DataKey,
        document_type: DocumentType,
        number: str,
        *,
        channel: str,
    ) -> _Sealed:
        return _Sealed(
            ref=ref,
            dek=dek,
            document_type=document_type,
            number=number,
            number_hash=self._hasher.digest(document_type, number),
            sealed_number=dek.seal(Field.DOCUMENT_NUMBER, number.encode()),
            file=None,
            sealed_file=None,
            channel=channel,
        )

    async def _store(self, uow: KycUnitOfWork, sealed: _Sealed) -> Submission:
        user_id = sealed.ref.owner_id
        await _check_may_submit(uow, user_id)
        key_id = await uow.keys.active_key_id(for_write=True)
        wrapped = self._cipher.wrap(sealed.dek, key_id)
        submission = Submission(
            id=sealed.ref.submission_id,
            user_id=user_id,
            document_type=sealed.document_type,
            masked_number=mask_document_number(sealed.number),
            status=KycStatus.PENDING,
            created_at=self._clock.now(),
            file=sealed.file,
            key_id=key_id,
        )
        await uow.submissions.add(
            submission,
            SealedDocument(sealed.number_hash, wrapped, sealed.sealed_number, sealed.sealed_file),
        )
        await uow.audit(
            AuditEntry(
                "kyc.submitted",
                "kyc_submission",
                submission.id,
                {
                    "document_type": submission.document_type.value,
                    "has_file": str(submission.file is not None).lower(),
                    "channel": sealed.channel,
                },
            )
        )
        return submission

    # ----- read -------------------------------------------------------------------------

    async def status(self, user_id: str) -> KycStatusView:
        """The latest submission and the tier the user holds. The two differ for an upgrade:
        the latest may be a pending or rejected request while an earlier approval's BASIC
        still holds, so the tier is read from the approvals, not from the latest."""
        async with self._uow() as uow:
            latest = await uow.submissions.latest_for_user(user_id)
            tier = await uow.submissions.held_tier(user_id)
        return KycStatusView(latest, tier)
