"""Commands and results of the kyc use cases: small frozen dataclasses.

Commands carry the actor explicitly (a staff command its client address too, for its audit
row) and the idempotency key the entrypoint built from the request. Inputs arrive as the client sent them; the use cases validate them and name the
offending request field. Results are what `DataclassCodec` stores as idempotent replies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vaultpay_common.context import Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.model import KycTier, Submission
from vaultpay_kyc.service_layer.ports import ListedSubmission

__all__ = [
    "ApproveKyc",
    "KycStats",
    "KycStatusView",
    "QueuePage",
    "RejectKyc",
    "RotateKycKey",
    "RotationOutcome",
    "RotationProgress",
    "RotationStarted",
    "SubmissionDetails",
    "SubmitKyc",
    "UploadKycDocument",
]


@dataclass(frozen=True, slots=True)
class SubmitKyc:
    user_id: str
    document_type: DocumentType | None  # None: DOCUMENT_TYPE_UNSPECIFIED (refused)
    document_number: str
    document_file: bytes  # b"" for none
    document_content_type: str
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class UploadKycDocument:
    """The metadata message of an upload stream; the chunks follow separately."""

    user_id: str
    document_type: DocumentType | None
    document_number: str
    document_content_type: str
    document_size_bytes: int
    document_sha256: str
    idempotency: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class ApproveKyc:
    """`kyc_tier` and `idempotency` may hold the refusal the entrypoint met reading them
    (an unknown tier number, a bad request_id): the use case names it with the request's
    other bad fields."""

    reviewer_id: str
    reviewer_role: Role
    submission_id: str
    # None: KYC_TIER_UNSPECIFIED, which grants FULL
    kyc_tier: KycTier | ValidationError | None
    note: str
    idempotency: IdempotencyKey | ValidationError | None
    client_ip: str = ""  # the reviewer's address, the `ip` of the audit row


@dataclass(frozen=True, slots=True)
class RejectKyc:
    reviewer_id: str
    reviewer_role: Role
    submission_id: str
    reason: str
    idempotency: IdempotencyKey | ValidationError | None  # as ApproveKyc's
    client_ip: str = ""  # the reviewer's address, the `ip` of the audit row


@dataclass(frozen=True, slots=True)
class RotateKycKey:
    """Who asked, as `kyc_key_rotations.started_by` and the audit row record it: a staff
    member through AdminRotateKycKey (their user id and role, from `client_ip`), or the CLI's
    operator (`operator:<login>`, no role, no client address)."""

    idempotency: IdempotencyKey | None
    actor_id: str
    actor_role: Role | None = None  # None: the CLI
    client_ip: str = ""

    def origin(self) -> dict[str, str]:
        """Where the rotation was asked from, as its audit row records it: the caller's client
        address (`ip`, as every staff action's row), or the CLI (`via: cli`, as auth's CLI
        rows say)."""
        return {"via": "cli"} if self.actor_role is None else {"ip": self.client_ip}


@dataclass(frozen=True, slots=True)
class KycStatusView:
    latest: Submission | None
    tier: KycTier


@dataclass(frozen=True, slots=True)
class SubmissionDetails:
    """A decrypted submission, as AdminGetKycSubmission returns it: the number as the viewer
    may see it (an Aadhaar number masked below an admin, `staff_reads.number_shown`), the other
    users' submissions of the same document that the viewer could open listed, the others
    counted."""

    submission: Submission
    document_number: str
    document_file: bytes
    duplicate_submission_ids: tuple[str, ...]
    hidden_duplicate_count: int = 0

    @property
    def possible_duplicate(self) -> bool:
        return bool(self.duplicate_submission_ids) or self.hidden_duplicate_count > 0


@dataclass(frozen=True, slots=True)
class QueuePage:
    items: list[ListedSubmission]
    has_more: bool


@dataclass(frozen=True, slots=True)
class RotationStarted:
    rotation_id: str
    key_id: str
    previous_key_id: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class RotationProgress:
    rewrapped: int  # by this call so far
    remaining: int  # rows still on retiring keys


@dataclass(frozen=True, slots=True)
class RotationOutcome:
    key_id: str
    previous_key_id: str
    reencrypted_count: int  # over the whole rotation, resumed runs included
    finished: bool
    dropped_key_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KycStats:
    pending_count: int
    computed_at: datetime
