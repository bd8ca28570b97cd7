"""What the audit trail records of staff reading KYC submissions (ASVS 5.0 V16, as auth's staff
reads of users in `vaultpay_auth.domain.security_events` and wallet's of wallets in
`vaultpay_wallet.domain.staff_reads`): who looked, at which submissions, from which client
address, under which filters (only the ones set). The viewer is the `StaffViewer` that
wallet's builders take too (`vaultpay_common.audit.model`).

Never a document number, masked or not, nor the file: the row says that a submission was seen,
not what it showed, so a copy of the log reveals no more than the ids it already names.

    viewer = StaffViewer("staff-id", Role.MODERATOR, "192.0.2.1")
    entry = submission_viewed(
        viewer, submission, file_included=True, possible_duplicates=0, hidden_duplicates=0
    )
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vaultpay_common.audit.model import AuditEntry, StaffViewer, staff_listing
from vaultpay_kyc.domain.model import Submission

__all__ = [
    "DOCUMENT_UNREADABLE",
    "QUEUE_LISTED",
    "SUBMISSION_VIEWED",
    "StaffViewer",
    "document_unreadable",
    "queue_listed",
    "submission_viewed",
]

QUEUE_LISTED = "kyc.queue_listed"
SUBMISSION_VIEWED = "kyc.submission_viewed"
DOCUMENT_UNREADABLE = "kyc.document_unreadable"


def _entry(
    viewer: StaffViewer, action: str, target_type: str, target_id: str, details: dict[str, str]
) -> AuditEntry:
    return AuditEntry(
        action,
        target_type,
        target_id,
        details,
        actor_id=viewer.actor_id,
        actor_role=viewer.actor_role.name,
    )


def queue_listed(
    viewer: StaffViewer,
    shown: Sequence[Submission],
    filters: Mapping[str, str],
    *,
    continued: bool,
) -> AuditEntry:
    """AdminListKycSubmissions: one page shown, which submissions (each row shown carries its
    owner and masked number, so the ids say whose data was seen), under which filters (none:
    empty), and whether it continued an earlier page."""
    ids = [s.id for s in shown]
    return staff_listing(
        viewer,
        QUEUE_LISTED,
        "kyc_submissions",
        filters,
        "submission_ids",
        ids,
        continued=continued,
    )


def submission_viewed(
    viewer: StaffViewer,
    submission: Submission,
    *,
    file_included: bool,
    possible_duplicates: int,
    hidden_duplicates: int,
) -> AuditEntry:
    """AdminGetKycSubmission: one submission shown decrypted, with its owner's id to correlate
    with auth's log, how many possible duplicates were listed with it, and how many more were
    only counted (the viewer could not open them)."""
    details = {
        "user_id": submission.user_id,
        "document_type": submission.document_type.value,
        "file_included": str(file_included).lower(),
        "possible_duplicates": str(possible_duplicates),
        "hidden_duplicates": str(hidden_duplicates),
        "ip": viewer.client_ip,
    }
    return _entry(viewer, SUBMISSION_VIEWED, "kyc_submission", submission.id, details)


def document_unreadable(viewer: StaffViewer, submission: Submission, key_id: str) -> AuditEntry:
    """AdminGetKycSubmission found a document that does not decrypt (tampering or a misplaced
    ciphertext): a security event, with the key it was sealed under and who asked."""
    details = {"user_id": submission.user_id, "key_id": key_id, "ip": viewer.client_ip}
    return _entry(viewer, DOCUMENT_UNREADABLE, "kyc_submission", submission.id, details)
