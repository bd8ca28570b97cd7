"""KYC submissions and the review rules, as pure values.

A submission is PENDING until staff approve it (VERIFIED, with the tier granted) or reject it
(REJECTED, with a reason the user sees). Only a pending submission can be decided, and never by
its own owner, nor by staff who do not outrank the owner (`check_reviewer_outranks_owner`: the
rank rule wallet applies to staff changes of a wallet, `vaultpay_common.ranks`). A user holds
at most one PENDING submission. BASIC is a step on the way, not the end (kyc_tier.proto: FULL
is an identity *and address* document), so a user whose approvals granted BASIC may submit
again to be upgraded, while one granted FULL may not (`check_may_submit`); after a rejection
they may submit again. The tier a user holds is the highest their approvals granted
(`highest_tier`), and an approval never grants less than that (`Submission.approve`), so
neither a pending nor a rejected upgrade, nor an approval of one, lowers it. The number itself
never lives here: only its mask.

Values are frozen dataclasses: a rule returns a new `Submission`, the use case persists it, and
the same objects serve as idempotent replies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from vaultpay_common.context import Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.ranks import staff_outranks
from vaultpay_common.text import has_control_characters
from vaultpay_kyc.domain.documents import DocumentType, quotes_a_document_number
from vaultpay_kyc.domain.errors import (
    KycAlreadySubmittedError,
    KycNotPendingError,
    KycReviewerOutrankedError,
    KycSelfReviewError,
)
from vaultpay_kyc.domain.files import DocumentContentType

__all__ = [
    "MAX_NOTE_LENGTH",
    "MAX_REASON_LENGTH",
    "QUOTES_A_NUMBER",
    "DocumentFile",
    "KycStatus",
    "KycTier",
    "Submission",
    "check_may_submit",
    "check_reviewer_outranks_owner",
    "clean_review_text",
    "highest_tier",
    "tier_to_grant",
]

MAX_REASON_LENGTH = 500
MAX_NOTE_LENGTH = 500


class KycStatus(Enum):
    PENDING = "PENDING"
    VERIFIED = "VERIFIED"
    REJECTED = "REJECTED"


class KycTier(Enum):
    """Mirrors vaultpay.type.v1.KycTier (and the wallet's tiers), lowest first."""

    NONE = "NONE"
    BASIC = "BASIC"
    FULL = "FULL"

    def is_below(self, other: KycTier) -> bool:
        return _TIER_ORDER.index(self) < _TIER_ORDER.index(other)


_TIER_ORDER = tuple(KycTier)


def highest_tier(tiers: Iterable[KycTier]) -> KycTier:
    """The tier a user holds: the highest of those their approvals granted (NONE for none)."""
    return max(tiers, key=_TIER_ORDER.index, default=KycTier.NONE)


def check_may_submit(pending: Submission | None, held: KycTier) -> None:
    """A new submission needs no pending one (one review at a time) and a tier below FULL:
    BASIC may ask to be upgraded, FULL has nothing left to gain."""
    if pending is not None:
        raise KycAlreadySubmittedError(
            "you already have a pending KYC submission, waiting for review"
        )
    if held is KycTier.FULL:
        raise KycAlreadySubmittedError("your KYC is already verified at the full tier")


def check_reviewer_outranks_owner(reviewer_role: Role, owner_role: Role) -> None:
    """Staff review only the submissions of users ranked below them; a super_admin reviews
    anyone's. Otherwise two moderators approve each other (each reaching FULL) and a moderator
    decides an admin's identity. Raises KycReviewerOutrankedError (INSUFFICIENT_PERMISSIONS).

        check_reviewer_outranks_owner(Role.ADMIN, Role.MODERATOR)  # allowed
        check_reviewer_outranks_owner(Role.MODERATOR, Role.MODERATOR)  # refused
    """
    if not staff_outranks(reviewer_role, owner_role):
        raise KycReviewerOutrankedError()


@dataclass(frozen=True, slots=True)
class DocumentFile:
    content_type: DocumentContentType
    size_bytes: int


QUOTES_A_NUMBER = (
    "must not contain a document number: describe the problem without quoting the number"
)


def clean_review_text(
    value: str, *, field: str, required: bool, max_length: int, current_year: int
) -> str:
    """Trimmed text with no character of Unicode's C* categories but newlines and tabs (a
    reason the user reads may run over lines; bidi and zero-width characters would let it
    read other than it is stored, as in wallet and auth), and no document number of any format
    (`quotes_a_document_number`): the text goes to the audit log, the outbox and the user's
    notification, where a number never goes. The refusal does not repeat the number."""
    text = value.strip()
    if required and not text:
        raise ValidationError.single(field, "is required")
    if len(text) > max_length:
        raise ValidationError.single(field, f"must be at most {max_length} characters")
    if has_control_characters(text, allowed="\n\t"):
        raise ValidationError.single(
            field, "must not contain control or invisible formatting characters"
        )
    if quotes_a_document_number(text, current_year=current_year):
        raise ValidationError.single(field, QUOTES_A_NUMBER)
    return text


def tier_to_grant(requested: KycTier | None) -> KycTier:
    """The tier an approval grants: FULL when none is named (KYC_TIER_UNSPECIFIED, as the
    contract says), never NONE (ValidationError on kyc_tier)."""
    if requested is KycTier.NONE:
        raise ValidationError.single("kyc_tier", "must be KYC_TIER_BASIC or KYC_TIER_FULL")
    return requested or KycTier.FULL


@dataclass(frozen=True, slots=True)
class Submission:
    id: str
    user_id: str
    document_type: DocumentType
    masked_number: str
    status: KycStatus
    created_at: datetime
    file: DocumentFile | None = None
    rejection_reason: str = ""
    granted_tier: KycTier | None = None
    reviewer_id: str = ""
    reviewed_at: datetime | None = None
    # The key-encryption key its data key is wrapped under (changes with rotations).
    key_id: str = ""

    def check_not_own(self, reviewer_id: str) -> None:
        """Nobody decides their own submission (KYC_SELF_REVIEW), whatever their rank."""
        if reviewer_id == self.user_id:
            raise KycSelfReviewError()

    def _check_reviewable_by(self, reviewer_id: str) -> None:
        self.check_not_own(reviewer_id)
        if self.status is not KycStatus.PENDING:
            raise KycNotPendingError(f"the submission is already {self.status.value.lower()}")

    def approve(
        self, reviewer_id: str, tier: KycTier, now: datetime, *, held: KycTier = KycTier.NONE
    ) -> Submission:
        """`held` is the tier the owner's earlier approvals granted. Granting less would lower
        the wallet's tier through the outbox, which no approval should do: refused, naming
        kyc_tier (the same tier again is harmless and allowed)."""
        tier = tier_to_grant(tier)
        self._check_reviewable_by(reviewer_id)
        if tier.is_below(held):
            raise ValidationError.single(
                "kyc_tier",
                f"must not be lower than the tier the user already holds (KYC_TIER_{held.value})",
            )
        return replace(
            self,
            status=KycStatus.VERIFIED,
            granted_tier=tier,
            reviewer_id=reviewer_id,
            reviewed_at=now,
        )

    def reject(self, reviewer_id: str, reason: str, now: datetime) -> Submission:
        cleaned = clean_review_text(
            reason,
            field="reason",
            required=True,
            max_length=MAX_REASON_LENGTH,
            current_year=now.year,
        )
        self._check_reviewable_by(reviewer_id)
        return replace(
            self,
            status=KycStatus.REJECTED,
            rejection_reason=cleaned,
            reviewer_id=reviewer_id,
            reviewed_at=now,
        )
