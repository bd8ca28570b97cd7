"""The kyc domain's errors, each with the stable reason clients switch on.

Codes follow google/rpc/code.proto: a second open submission is ALREADY_EXISTS (the
contract says so), a decision on a submission that is no longer pending is FAILED_PRECONDITION,
staff deciding their own submission is PERMISSION_DENIED (KYC_SELF_REVIEW), and so is staff
deciding the submission of someone they do not outrank (INSUFFICIENT_PERMISSIONS, as wallet and
auth answer the same rule), a user without a wallet is
NOT_FOUND (WALLET_NOT_FOUND, as wallet and transfer answer it). A stored document that no longer
decrypts (altered, or copied from another row) is FAILED_PRECONDITION with its own reason:
the request is fine, the stored state is not, and retrying will not help. An approval of a
document already verified for another user is FAILED_PRECONDITION too (KYC_DOCUMENT_IN_USE): the
state of another submission refuses it; so is an approval of a deactivated user's submission
(KYC_OWNER_DEACTIVATED): the owner's state in auth refuses it.
"""

from __future__ import annotations

from vaultpay_common.errors import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    InsufficientPermissionsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
)

__all__ = [
    "DocumentUnreadableError",
    "KycAlreadySubmittedError",
    "KycBusyError",
    "KycDocumentInUseError",
    "KycNotPendingError",
    "KycOwnerDeactivatedError",
    "KycReviewerOutrankedError",
    "KycSelfReviewError",
    "KycSubmissionNotFoundError",
    "KycUploadInProgressError",
    "NoActiveKeyError",
    "WalletRequiredError",
    "WalletUnavailableError",
]


class KycAlreadySubmittedError(AlreadyExistsError):
    """A submission is waiting for review, or an approval already granted FULL. One reason
    for both (clients already switch on it); the message says which."""

    reason = "KYC_ALREADY_SUBMITTED"
    default_message = "you already have a pending or fully verified KYC submission"


class KycUploadInProgressError(AbortedError):
    """Another upload stream of this user is still being received (each holds up to a file
    of the cap until it ends): one at a time per user, so a client cannot hold the service's
    memory with parallel streams. Retry once the other has answered."""

    reason = "KYC_UPLOAD_IN_PROGRESS"
    default_message = "another upload of yours is still in progress: retry once it has answered"
    retry_after_seconds = 1


class KycBusyError(RateLimitedError):
    """As many documents as this process may hold at once are being received or sealed
    (`KYC_MAX_DOCUMENTS_IN_FLIGHT`; each holds a file of the cap several times over): parallel
    calls, from one user or many, cannot exhaust its memory. Retry in a moment."""

    reason = "KYC_BUSY"
    default_message = "too many documents are being received right now: retry in a moment"

    def __init__(self) -> None:
        super().__init__(1)


class KycSubmissionNotFoundError(NotFoundError):
    """No such submission, or another user's (the two are indistinguishable on purpose)."""

    reason = "KYC_SUBMISSION_NOT_FOUND"
    default_message = "no such KYC submission"


class KycNotPendingError(FailedPreconditionError):
    reason = "KYC_NOT_PENDING"
    default_message = "the submission was already reviewed"


class KycDocumentInUseError(FailedPreconditionError):
    """An approval of a document (same type and number, by its keyed hash) that another user's
    submission already had approved: one identity document verifies one user. The message
    names neither the other user nor the number."""

    reason = "KYC_DOCUMENT_IN_USE"
    default_message = "this document is already verified for another user; reject the submission"


class KycOwnerDeactivatedError(FailedPreconditionError):
    """An approval of the submission of a user auth has deactivated (identity fraud among the
    reasons): approving would verify them, raise their wallet's tier and keep the document's
    real holder from it for good (KYC_DOCUMENT_IN_USE). Nothing is written; the submission
    stays pending and may be rejected."""

    reason = "KYC_OWNER_DEACTIVATED"
    default_message = "the submission's owner is deactivated: reject the submission instead"


class KycSelfReviewError(PermissionDeniedError):
    reason = "KYC_SELF_REVIEW"
    default_message = "staff cannot review their own KYC submission"


class KycReviewerOutrankedError(InsufficientPermissionsError):
    """Staff deciding (or opening, decrypted) the submission of someone they do not outrank:
    a moderator another moderator's (each would approve the other's), a moderator or admin an
    admin's. wallet refuses the same rule for staff changes of a wallet (StaffOutrankedError)
    with this reason, INSUFFICIENT_PERMISSIONS, so clients see one vocabulary."""

    default_message = "staff review only the KYC submissions of users ranked below them"


class WalletRequiredError(NotFoundError):
    """KYC needs a wallet first. The reason and its code (NOT_FOUND, 404 through the gateway)
    are the ones clients already know from wallet and transfer: one reason, one status."""

    reason = "WALLET_NOT_FOUND"
    default_message = "create a wallet before submitting KYC"


class WalletUnavailableError(UnavailableError):
    reason = "WALLET_UNAVAILABLE"
    default_message = "the wallet service is unavailable, retry later"


class DocumentUnreadableError(FailedPreconditionError):
    """A stored ciphertext failed authentication: it was altered, or moved from another
    submission or field. The message names the submission and field, never any content."""

    reason = "KYC_DOCUMENT_UNREADABLE"
    default_message = "the stored document does not decrypt"


class NoActiveKeyError(RuntimeError):
    """The kyc_keys table has no active key: the migrations were not applied. Never a
    client's fault, so not a DomainError (it answers INTERNAL)."""
