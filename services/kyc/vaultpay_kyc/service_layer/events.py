"""What a review decision sends to wallet, through the outbox in the decision's transaction.

Topic "wallet.kyc_tier" becomes WalletInternalService.SetKycTier and "notification.create"
becomes WalletInternalService.CreateNotification; the kyc relay passes each event's id as the
request_id (a tier event sent with a higher tier held: a key of its id and that tier,
adapters/deliveries.py), so wallet applies a redelivered event once. Payloads and texts hold
the masked number at most, never the number itself.
"""

from __future__ import annotations

from vaultpay_common.outbox import Outbox, OutboxMessage
from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.model import KycTier, Submission

__all__ = ["NOTIFICATION_TOPIC", "TIER_TOPIC", "announce_approval", "announce_rejection"]

TIER_TOPIC = "wallet.kyc_tier"
NOTIFICATION_TOPIC = "notification.create"

_LABELS = {
    DocumentType.PAN: "PAN card",
    DocumentType.AADHAAR: "Aadhaar",
    DocumentType.PASSPORT: "passport",
    DocumentType.DRIVING_LICENCE: "driving licence",
}


def _document(submission: Submission) -> str:
    return f"{_LABELS[submission.document_type]} {submission.masked_number}"


async def _notify(outbox: Outbox, submission: Submission, title: str, body: str) -> None:
    await outbox.add(
        OutboxMessage(
            NOTIFICATION_TOPIC,
            {
                "user_id": submission.user_id,
                "kind": "KYC",
                "title": title[:120],
                "body": body[:1000],
                "submission_id": submission.id,
            },
            key=submission.user_id,
        )
    )


async def announce_approval(outbox: Outbox, submission: Submission, tier: KycTier) -> None:
    """The tier change for wallet, then the user's notification."""
    await outbox.add(
        OutboxMessage(
            TIER_TOPIC,
            {"user_id": submission.user_id, "kyc_tier": tier.value, "submission_id": submission.id},
            key=submission.user_id,
        )
    )
    await _notify(
        outbox,
        submission,
        "Identity verified",
        f"Your {_document(submission)} was approved. Your wallet now has the "
        f"{tier.value.lower()} KYC tier and its limits.",
    )


async def announce_rejection(outbox: Outbox, submission: Submission) -> None:
    await _notify(
        outbox,
        submission,
        "Identity verification rejected",
        f"Your {_document(submission)} was not approved: {submission.rejection_reason} "
        "You may submit again.",
    )
