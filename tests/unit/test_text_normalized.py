"""Unicode normalisation only of text short enough to be what its field may hold (review of
2026-12-05: CPython's NFC/NFKC is quadratic in a run of combining marks, and an email of
120,000 marks held auth's event loop 11 s at Login; a note at SendMoney transfer's)."""

from __future__ import annotations

import pytest

from vaultpay_auth.domain.policies import email_violations, normalize_email, password_violations
from vaultpay_common.errors import ValidationError
from vaultpay_common.text import NORMALIZED_AT_MOST, normalized
from vaultpay_transfer.domain.validation import canonical_text, check_note

# A base letter and 20,000 pairs of combining marks: NFC would reorder and compose them.
MARKS = "a" + "\u0301\u0316" * 20_000


def test_text_of_a_fields_size_is_normalised_trimmed() -> None:
    assert normalized("NFC", "  e\u0301 ") == "\u00e9"
    assert normalized("NFKC", "\uff21\uff22") == "AB"
    at_most = "e\u0301" * (NORMALIZED_AT_MOST // 2)
    assert normalized("NFC", at_most) == "\u00e9" * (NORMALIZED_AT_MOST // 2)


def test_text_far_longer_than_any_field_is_trimmed_only() -> None:
    assert normalized("NFKC", f"  {MARKS}  ") == MARKS
    assert normalized("NFC", MARKS) == MARKS


def test_an_email_of_combining_marks_is_refused_for_its_length_not_normalised() -> None:
    email = normalize_email(f"{MARKS}@Example.com")
    assert email == f"{MARKS}@example.com"
    assert [v.description for v in email_violations(email)] == ["must be at most 254 characters"]


def test_a_note_of_combining_marks_is_refused_for_its_length() -> None:
    assert canonical_text(MARKS) == MARKS
    with pytest.raises(ValidationError) as refused:
        check_note(MARKS)
    assert [v.field for v in refused.value.violations] == ["note"]


@pytest.mark.parametrize(
    "password", ["पासवर्ड-घोड़ा-बैटरी-42", "корова-батарея-скрепка-7", "correct-horse-42"]
)
def test_a_letter_of_any_script_counts_as_a_letter(password: str) -> None:
    """Review of 2026-12-05: only A-Z counted, so a Hindi or Cyrillic password with letters
    and a digit was refused as having none."""
    assert password_violations(password, "asha@example.com") == []


def test_a_password_without_a_letter_or_a_digit_is_still_refused() -> None:
    for password in ("1234567890123", "correct-horse-battery"):
        [violation] = password_violations(password, "asha@example.com")
        assert violation.description == "must contain at least one letter and one digit"
