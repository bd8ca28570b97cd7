"""proto <-> domain conversion for the kyc service."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from vaultpay.kyc.v1 import kyc_pb2
from vaultpay.type.v1 import kyc_tier_pb2
from vaultpay_common.errors import ValidationError
from vaultpay_common.grpc.convert import timestamp
from vaultpay_common.pagination import uuid_cursor
from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.model import KycStatus, KycTier, Submission
from vaultpay_kyc.service_layer.ports import QueueCursor

__all__ = [
    "document_type_from_proto",
    "queue_cursor",
    "queue_position",
    "status_from_proto",
    "submission_to_proto",
    "tier_from_proto",
    "tier_to_proto",
]

E = TypeVar("E")

_TYPES = {
    DocumentType.PAN: kyc_pb2.DOCUMENT_TYPE_PAN,
    DocumentType.AADHAAR: kyc_pb2.DOCUMENT_TYPE_AADHAAR,
    DocumentType.PASSPORT: kyc_pb2.DOCUMENT_TYPE_PASSPORT,
    DocumentType.DRIVING_LICENCE: kyc_pb2.DOCUMENT_TYPE_DRIVING_LICENCE,
}
_STATUSES = {
    KycStatus.PENDING: kyc_pb2.KYC_STATUS_PENDING,
    KycStatus.VERIFIED: kyc_pb2.KYC_STATUS_VERIFIED,
    KycStatus.REJECTED: kyc_pb2.KYC_STATUS_REJECTED,
}
_TIERS: dict[KycTier, kyc_tier_pb2.KycTier.ValueType] = {
    KycTier.NONE: kyc_tier_pb2.KYC_TIER_NONE,
    KycTier.BASIC: kyc_tier_pb2.KYC_TIER_BASIC,
    KycTier.FULL: kyc_tier_pb2.KYC_TIER_FULL,
}


def _from_proto(table: Mapping[E, int], value: int, field: str, what: str) -> E | None:
    """0 (UNSPECIFIED) -> None; an unknown number is invalid input."""
    if value == 0:
        return None
    for member, number in table.items():
        if number == value:
            return member
    raise ValidationError.single(field, f"is not a known {what}")


def document_type_from_proto(value: int, field: str = "document_type") -> DocumentType | None:
    return _from_proto(_TYPES, value, field, "document type")


def status_from_proto(value: int, field: str = "status") -> KycStatus | None:
    return _from_proto(_STATUSES, value, field, "KYC status")


def tier_from_proto(value: int, field: str = "kyc_tier") -> KycTier | None:
    return _from_proto(_TIERS, value, field, "KYC tier")


def tier_to_proto(tier: KycTier) -> kyc_tier_pb2.KycTier.ValueType:
    return _TIERS[tier]


def submission_to_proto(
    submission: Submission, *, staff_view: bool, possible_duplicate: bool = False
) -> kyc_pb2.KycSubmission:
    """`possible_duplicate` (another user submitted the same document) is shown to staff only."""
    message = kyc_pb2.KycSubmission(
        submission_id=submission.id,
        user_id=submission.user_id,
        document_type=_TYPES[submission.document_type],
        masked_document_number=submission.masked_number,
        status=_STATUSES[submission.status],
        rejection_reason=submission.rejection_reason,
        has_document_file=submission.file is not None,
        create_time=timestamp(submission.created_at),
    )
    if submission.file is not None:
        message.document_content_type = submission.file.content_type.value
        message.document_size_bytes = submission.file.size_bytes
    if submission.granted_tier is not None:
        message.granted_kyc_tier = _TIERS[submission.granted_tier]
    if submission.reviewed_at is not None:
        message.review_time.CopyFrom(timestamp(submission.reviewed_at))
    if staff_view:
        message.reviewer_id = submission.reviewer_id
        message.possible_duplicate = possible_duplicate
    return message


def queue_position(submission: Submission) -> dict[str, str | int]:
    """The page-token position after `submission` in the queue order."""
    reviewed = submission.reviewed_at is not None
    at: datetime = submission.reviewed_at if submission.reviewed_at else submission.created_at
    return {"r": int(reviewed), "c": at.isoformat(), "i": submission.id}


def queue_cursor(position: Mapping[str, Any]) -> QueueCursor:
    """The id is read by the strict parser like every other id (`uuid_cursor`): the token is
    signed, so only a token kyc never wrote could carry another spelling."""
    reviewed = position["r"]
    if reviewed not in (0, 1) or isinstance(reviewed, bool):
        raise ValueError("bad part")
    at, submission_id = uuid_cursor(position)
    return QueueCursor(bool(reviewed), at, submission_id)
