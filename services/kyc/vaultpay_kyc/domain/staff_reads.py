"""What the audit trail records of staff reading KYC submissions (ASVS 5.0 V16, as auth's staff
reads of users in `vaultpay_auth.domain.security_events` and wallet's of wallets in
`vaultpay_wallet.domain.staff_reads`): who looked, at which submissions, from which client
address, under which filters (only the ones set). The viewer is the `StaffViewer` that
wallet's builders take too (`vaultpay_common.audit.model`).

Never a document number, masked or not, nor the file: the row says that a submission was seen,
not what it showed, so a copy of the log reveals no more than the ids it already names. It does
say whether the number was shown in full (`full_number_shown`).

What the decrypted view shows of the number is decided here too (`number_shown`): an Aadhaar
number in full only to an admin or a super_admin (escalations), masked as the queue masks it
(`mask_document_number`, "XXXXXXXX2346") to anyone below: the Aadhaar Act (s.29) and UIDAI's
rules on masked Aadhaar forbid displaying the whole number beyond need, and a moderator decides
on the last four digits and the scan. Every other type is shown in full, as before.

    viewer = StaffViewer("staff-id", Role.MODERATOR, "192.0.2.1")
    shown = number_shown(viewer.actor_role, DocumentType.AADHAAR, "234123412346")
    shown == ShownNumber("XXXXXXXX2346", full=False)
    entry = submission_viewed(
        viewer,
        submission,
        file_included=True,
        full_number_shown=shown.full,
        possible_duplicates=0,
        hidden_duplicates=0,
    )
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vaultpay_common.audit.model import AuditEntry, StaffViewer, staff_listing
from vaultpay_common.context import Role
from vaultpay_kyc.domain.documents import DocumentType, mask_document_number
from vaultpay_kyc.domain.model import Submission

__all__ = [
    "DOCUMENT_UNREADABLE",
    "FULL_AADHAAR_FROM",
    "QUEUE_LISTED",
    "SUBMISSION_VIEWED",
    "ShownNumber",
    "StaffViewer",
    "document_unreadable",
    "number_shown",
    "queue_listed",
    "submission_viewed",
]

QUEUE_LISTED = "kyc.queue_listed"
SUBMISSION_VIEWED = "kyc.submission_viewed"
DOCUMENT_UNREADABLE = "kyc.document_unreadable"

# The lowest role shown an Aadhaar number in full by the decrypted view.
FULL_AADHAAR_FROM = Role.ADMIN


@dataclass(frozen=True, slots=True)
class ShownNumber:
    """The document number as the decrypted view shows it, and whether that is in full."""

    text: str
    full: bool


def number_shown(viewer_role: Role, document_type: DocumentType, number: str) -> ShownNumber:
    """`number` (decrypted, normalised) as staff with `viewer_role` are shown it: an Aadhaar
    number masked below `FULL_AADHAAR_FROM` (a moderator, their own submission's too), in
    full from it; any other type in full.

        number_shown(Role.MODERATOR, DocumentType.AADHAAR, "234123412346").text  # XXXXXXXX2346
        number_shown(Role.ADMIN, DocumentType.AADHAAR, "234123412346").text  # 234123412346
        number_shown(Role.MODERATOR, DocumentType.PAN, "ABCPE1234F").text  # ABCPE1234F
    """
    if document_type is DocumentType.AADHAAR and viewer_role < FULL_AADHAAR_FROM:
        return ShownNumber(mask_document_number(number), full=False)
    return ShownNumber(number, full=True)


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
    full_number_shown: bool,
    possible_duplicates: int,
    hidden_duplicates: int,
) -> AuditEntry:
    """AdminGetKycSubmission: one submission shown decrypted, with its owner's id to correlate
    with auth's log, whether the number was shown in full (`number_shown`: an Aadhaar number
    masked below an admin), how many possible duplicates were listed with it, and how many
    more were only counted (the viewer could not open them)."""
    details = {
        "user_id": submission.user_id,
        "document_type": submission.document_type.value,
        "file_included": str(file_included).lower(),
        "full_number_shown": str(full_number_shown).lower(),
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
