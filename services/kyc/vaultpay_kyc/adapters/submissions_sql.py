"""SQLAlchemy Core repository of KYC submissions and their sealed documents."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, cast, exists, func, insert, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vaultpay_kyc.adapters.tables import kyc_documents, kyc_submissions
from vaultpay_kyc.domain.crypto import WrappedKey
from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.errors import KycAlreadySubmittedError
from vaultpay_kyc.domain.files import DocumentContentType
from vaultpay_kyc.domain.model import (
    DocumentFile,
    KycStatus,
    KycTier,
    Submission,
    highest_tier,
)
from vaultpay_kyc.service_layer.ports import (
    ListedSubmission,
    QueueCursor,
    QueueFilter,
    SealedDocument,
)

__all__ = ["SqlSubmissionRepository"]

_UNIQUE_VIOLATION = "23505"
# The class of the documents' advisory locks (two-key form; bytes "VPKD"), the object being
# hashtext(number_hash): an approval holds its document's until it commits.
_DOCUMENT_LOCK_CLASS = int.from_bytes(b"VPKD", "big") & 0x7FFF_FFFF
_LOCK_DOCUMENT = text(
    "SELECT pg_advisory_xact_lock(:lock_class, hashtext(number_hash))"
    " FROM kyc_submissions WHERE id = :id"
)
_DUPLICATES_SHOWN = 50
s = kyc_submissions.c
_other = kyc_submissions.alias("other")
# Everything but the ciphertexts: what listing and deciding need.
_COLUMNS = (
    s.id,
    s.user_id,
    s.document_type,
    s.masked_number,
    s.status,
    s.rejection_reason,
    s.granted_tier,
    s.reviewer_id,
    s.created_at,
    s.reviewed_at,
    s.file_content_type,
    s.file_size_bytes,
    s.key_id,
)
_POSSIBLE_DUPLICATE = (
    exists()
    .where(_other.c.number_hash == s.number_hash, _other.c.user_id != s.user_id)
    .label("possible_duplicate")
)


def _uuid(value: str) -> Any:
    return cast(literal(value), UUID(as_uuid=False))


def _submission(row: Any) -> Submission:
    file = None
    if row.file_content_type is not None:
        file = DocumentFile(DocumentContentType(row.file_content_type), int(row.file_size_bytes))
    return Submission(
        id=str(row.id),
        user_id=row.user_id,
        document_type=DocumentType(row.document_type),
        masked_number=row.masked_number,
        status=KycStatus(row.status),
        created_at=row.created_at,
        file=file,
        rejection_reason=row.rejection_reason,
        granted_tier=KycTier(row.granted_tier) if row.granted_tier else None,
        reviewer_id=row.reviewer_id,
        reviewed_at=row.reviewed_at,
        key_id=row.key_id,
    )


class SqlSubmissionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, submission: Submission, sealed: SealedDocument) -> None:
        file = submission.file
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    insert(kyc_submissions).values(
                        id=submission.id,
                        user_id=submission.user_id,
                        document_type=submission.document_type.value,
                        masked_number=submission.masked_number,
                        number_hash=sealed.number_hash,
                        status=submission.status.value,
                        created_at=submission.created_at,
                        file_content_type=file.content_type.value if file else None,
                        file_size_bytes=file.size_bytes if file else None,
                        key_id=sealed.wrapped_key.key_id,
                        wrapped_key=sealed.wrapped_key.blob,
                        sealed_number=sealed.sealed_number,
                    )
                )
                if sealed.sealed_file is not None:
                    await self._conn.execute(
                        insert(kyc_documents).values(
                            submission_id=submission.id, sealed_file=sealed.sealed_file
                        )
                    )
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", "") == _UNIQUE_VIOLATION:
                raise KycAlreadySubmittedError() from exc  # kyc_submissions_one_pending
            raise

    async def _one(self, query: Select[Any]) -> Submission | None:
        row = (await self._conn.execute(query)).first()
        return None if row is None else _submission(row)

    async def get(self, submission_id: str, *, for_update: bool = False) -> Submission | None:
        query = select(*_COLUMNS).where(s.id == submission_id)
        if for_update:
            query = query.with_for_update(key_share=True)  # FOR NO KEY UPDATE
        return await self._one(query)

    async def sealed(self, submission_id: str, *, with_file: bool) -> SealedDocument | None:
        columns = [s.number_hash, s.key_id, s.wrapped_key, s.sealed_number]
        query = select(*columns).where(s.id == submission_id)
        if with_file:
            query = (
                select(*columns, kyc_documents.c.sealed_file)
                .select_from(
                    kyc_submissions.outerjoin(kyc_documents, kyc_documents.c.submission_id == s.id)
                )
                .where(s.id == submission_id)
            )
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        return SealedDocument(
            row.number_hash,
            WrappedKey(row.key_id, bytes(row.wrapped_key)),
            bytes(row.sealed_number),
            bytes(row.sealed_file) if with_file and row.sealed_file is not None else None,
        )

    async def latest_for_user(self, user_id: str) -> Submission | None:
        return await self._one(
            select(*_COLUMNS)
            .where(s.user_id == user_id)
            .order_by(s.created_at.desc(), s.id.desc())
            .limit(1)
        )

    async def pending_for_user(self, user_id: str) -> Submission | None:
        return await self._one(
            select(*_COLUMNS).where(s.user_id == user_id, s.status == KycStatus.PENDING.value)
        )

    async def held_tier(self, user_id: str) -> KycTier:
        rows = await self._conn.execute(
            select(s.granted_tier)
            .distinct()
            .where(s.user_id == user_id, s.status == KycStatus.VERIFIED.value)
        )
        return highest_tier(KycTier(tier) for tier in rows.scalars() if tier)

    async def update_review(self, submission: Submission) -> None:
        await self._conn.execute(
            update(kyc_submissions)
            .where(s.id == submission.id)
            .values(
                status=submission.status.value,
                rejection_reason=submission.rejection_reason,
                granted_tier=submission.granted_tier.value if submission.granted_tier else None,
                reviewer_id=submission.reviewer_id,
                reviewed_at=submission.reviewed_at,
            )
        )

    async def verified_for_another_user(self, submission_id: str) -> bool:
        """Two statements: the lock, then the check. Under READ COMMITTED the check's snapshot
        is taken after the lock is granted, so it sees an approval that committed while this
        one waited (one statement would read a snapshot taken before the wait). A hash
        collision of two documents only serialises their approvals."""
        await self._conn.execute(
            _LOCK_DOCUMENT, {"lock_class": _DOCUMENT_LOCK_CLASS, "id": submission_id}
        )
        this = kyc_submissions.alias("this")
        query = select(
            exists().where(
                this.c.id == submission_id,
                s.number_hash == this.c.number_hash,
                s.user_id != this.c.user_id,
                s.status == KycStatus.VERIFIED.value,
            )
        )
        return bool((await self._conn.execute(query)).scalar_one())

    async def duplicates(self, number_hash: str, *, other_than_user: str) -> list[str]:
        rows = await self._conn.execute(
            select(s.id)
            .where(s.number_hash == number_hash, s.user_id != other_than_user)
            .order_by(s.created_at, s.id)
            .limit(_DUPLICATES_SHOWN)
        )
        return [str(row.id) for row in rows]

    async def list_queue(
        self, flt: QueueFilter, after: QueueCursor | None, limit: int
    ) -> list[ListedSubmission]:
        """Pending ones (oldest first), then reviewed ones (newest first), keyset-paginated
        within each part; each part has its own partial index."""
        base = select(*_COLUMNS, _POSSIBLE_DUPLICATE)
        if flt.user_id:
            base = base.where(s.user_id == flt.user_id)
        rows: list[Any] = []
        want_pending = flt.status in (None, KycStatus.PENDING)
        want_reviewed = flt.status is not KycStatus.PENDING
        if want_pending and (after is None or not after.reviewed):
            query = base.where(s.status == KycStatus.PENDING.value)
            if after is not None:
                query = query.where(
                    tuple_(s.created_at, s.id) > tuple_(after.at, _uuid(after.submission_id))
                )
            query = query.order_by(s.created_at, s.id).limit(limit)
            rows += list(await self._conn.execute(query))
        if want_reviewed and len(rows) < limit:
            query = base.where(s.status != KycStatus.PENDING.value)
            if flt.status is not None:
                query = query.where(s.status == flt.status.value)
            if after is not None and after.reviewed:
                query = query.where(
                    tuple_(s.reviewed_at, s.id) < tuple_(after.at, _uuid(after.submission_id))
                )
            query = query.order_by(s.reviewed_at.desc(), s.id.desc()).limit(limit - len(rows))
            rows += list(await self._conn.execute(query))
        return [ListedSubmission(_submission(row), bool(row.possible_duplicate)) for row in rows]

    async def pending_count(self) -> int:
        query = select(func.count()).where(s.status == KycStatus.PENDING.value)
        return int((await self._conn.execute(query)).scalar_one())
