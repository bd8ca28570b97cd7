"""proto <-> domain conversion of the kyc service: what each view of a submission shows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.model import KycStatus, Submission
from vaultpay_kyc.entrypoints.convert import submission_to_proto

SUBMISSION = Submission(
    id="5b0c3f8e-2f57-4a8e-9a51-0d4f1c1f2b6e",
    user_id="alice",
    document_type=DocumentType.PAN,
    masked_number="XXXXXX234F",
    status=KycStatus.PENDING,
    created_at=datetime(2026, 1, 2, tzinfo=UTC),
    reviewer_id="mod",
)


@pytest.mark.parametrize("duplicate", [True, False])
def test_staff_see_whether_a_submission_is_a_possible_duplicate(duplicate: bool) -> None:
    message = submission_to_proto(SUBMISSION, staff_view=True, possible_duplicate=duplicate)

    assert message.possible_duplicate is duplicate
    assert message.reviewer_id == "mod"


def test_the_submitters_own_view_never_says_possible_duplicate() -> None:
    message = submission_to_proto(SUBMISSION, staff_view=False, possible_duplicate=True)

    assert message.possible_duplicate is False
    assert message.reviewer_id == ""
