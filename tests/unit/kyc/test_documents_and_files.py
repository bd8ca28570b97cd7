"""Document numbers (normalisation, each type's Indian format, Verhoeff, masking) and document
files (magic bytes decide, not the claim; the size cap)."""

from __future__ import annotations

import pytest

from tests.unit.kyc.kyc_world import JPEG, PDF, PNG, aadhaar
from vaultpay_common.errors import ValidationError
from vaultpay_kyc.domain.documents import (
    DocumentType,
    check_document_number,
    mask_document_number,
    normalise_document_number,
    verhoeff_check_digit,
    verhoeff_is_valid,
)
from vaultpay_kyc.domain.files import DocumentContentType, check_document_file, sniff_content_type

YEAR = 2026


def _check(document_type: DocumentType, raw: str) -> str:
    return check_document_number(document_type, raw, current_year=YEAR)


def _refusal(document_type: DocumentType, raw: str) -> str:
    with pytest.raises(ValidationError) as caught:
        _check(document_type, raw)
    (violation,) = caught.value.violations
    assert violation.field == "document_number"
    return violation.description


def test_numbers_are_normalised_to_upper_case_without_spaces_or_hyphens() -> None:
    assert normalise_document_number(" abcpe-1234 f\t") == "ABCPE1234F"
    assert _check(DocumentType.PAN, "abcpe 1234-f") == "ABCPE1234F"
    assert _check(DocumentType.DRIVING_LICENCE, "MH-14-2011-0062821") == "MH1420110062821"


@pytest.mark.parametrize("number", ["ABCPE1234F", "AAACB1234Z", "zzzhz9999z"])
def test_valid_pans_pass(number: str) -> None:
    assert _check(DocumentType.PAN, number) == number.upper()


@pytest.mark.parametrize(
    "number",
    ["ABCPE1234", "ABCPE12345", "1BCPE1234F", "ABCPE1234FF", "ABCXE1234F", "ABCP11234F", "ABC"],
)
def test_malformed_pans_are_refused(number: str) -> None:
    assert "PAN" in _refusal(DocumentType.PAN, number)


def test_verhoeff_matches_its_known_values() -> None:
    assert verhoeff_check_digit("236") == "3"
    assert verhoeff_is_valid("2363")
    assert not verhoeff_is_valid("2364")
    assert verhoeff_is_valid("234123412346")


def test_verhoeff_catches_every_single_digit_error_and_adjacent_swap() -> None:
    number = aadhaar("98765432101")
    assert verhoeff_is_valid(number)
    for i in range(len(number)):
        for digit in "0123456789":
            if digit != number[i]:
                assert not verhoeff_is_valid(number[:i] + digit + number[i + 1 :])
    for i in range(len(number) - 1):
        if number[i] != number[i + 1]:
            swapped = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
            assert not verhoeff_is_valid(swapped)


def test_a_valid_aadhaar_passes_even_with_spaces() -> None:
    number = aadhaar()
    spaced = f"{number[:4]} {number[4:8]} {number[8:]}"
    assert _check(DocumentType.AADHAAR, spaced) == number


def test_an_aadhaar_with_a_wrong_check_digit_is_refused_as_such() -> None:
    number = aadhaar()
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert "Verhoeff" in _refusal(DocumentType.AADHAAR, wrong)


@pytest.mark.parametrize("first", ["0", "1"])
def test_an_aadhaar_starting_with_0_or_1_is_refused(first: str) -> None:
    number = aadhaar(first + "3412341234")
    assert "does not start with 0 or 1" in _refusal(DocumentType.AADHAAR, number)


@pytest.mark.parametrize("number", ["23412341234", "2341234123467", "23412341234A"])
def test_an_aadhaar_of_the_wrong_shape_is_refused(number: str) -> None:
    assert "12 digits" in _refusal(DocumentType.AADHAAR, number)


def test_passports_are_a_letter_and_seven_digits() -> None:
    assert _check(DocumentType.PASSPORT, "k1234567") == "K1234567"
    for bad in ("K123456", "K12345678", "KK234567", "12345678"):
        assert "passport" in _refusal(DocumentType.PASSPORT, bad)


def test_driving_licences_follow_the_state_rto_year_serial_format() -> None:
    assert _check(DocumentType.DRIVING_LICENCE, "MH1420110062821") == "MH1420110062821"
    assert _check(DocumentType.DRIVING_LICENCE, "ka0119990000001") == "KA0119990000001"
    assert "driving licence" in _refusal(DocumentType.DRIVING_LICENCE, "MH142011006282")
    assert "driving licence" in _refusal(DocumentType.DRIVING_LICENCE, "M11420110062821")
    assert "state code" in _refusal(DocumentType.DRIVING_LICENCE, "ZZ1420110062821")
    assert "year of issue" in _refusal(DocumentType.DRIVING_LICENCE, "MH1420990062821")
    assert "year of issue" in _refusal(DocumentType.DRIVING_LICENCE, "MH1418000062821")


def test_empty_long_and_non_alphanumeric_numbers_are_refused() -> None:
    assert _refusal(DocumentType.PAN, "  ") == "is required"
    assert "at most 64" in _refusal(DocumentType.PAN, "A" * 65)
    assert "letters, digits" in _refusal(DocumentType.PAN, "ABCPE1234F!")
    assert "letters, digits" in _refusal(DocumentType.PASSPORT, "K१२३४५६७")


def test_the_field_name_can_be_chosen_for_a_streamed_metadata_message() -> None:
    with pytest.raises(ValidationError) as caught:
        check_document_number(
            DocumentType.PAN, "nope", current_year=YEAR, field="metadata.document_number"
        )
    assert [v.field for v in caught.value.violations] == ["metadata.document_number"]


def test_masking_keeps_only_the_last_four_characters() -> None:
    assert mask_document_number("ABCPE1234F") == "XXXXXX234F"
    assert mask_document_number("234123412346") == "XXXXXXXX2346"
    assert mask_document_number("K12") == "XXX"


# ----- files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PDF, DocumentContentType.PDF),
        (PNG, DocumentContentType.PNG),
        (JPEG, DocumentContentType.JPEG),
    ],
)
def test_each_accepted_kind_is_recognised_by_its_magic_bytes(
    data: bytes, kind: DocumentContentType
) -> None:
    assert sniff_content_type(data[:8]) is kind
    assert check_document_file(data, kind.value.upper(), max_bytes=1 << 20) is kind


def _file_refusal(data: bytes, content_type: str, max_bytes: int = 1 << 20) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        check_document_file(data, content_type, max_bytes=max_bytes)
    (violation,) = caught.value.violations
    return violation.field, violation.description


def test_a_text_file_claimed_to_be_a_pdf_is_refused_by_its_content() -> None:
    field, description = _file_refusal(b"just some text, named scan.pdf", "application/pdf")
    assert field == "document_file"
    assert "not a PDF, JPEG or PNG" in description


def test_a_png_claimed_to_be_a_jpeg_is_refused() -> None:
    assert _file_refusal(PNG, "image/jpeg") == (
        "document_file",
        "the content is image/png, not the declared image/jpeg",
    )


def test_a_file_over_the_cap_is_refused_before_it_is_looked_at() -> None:
    field, description = _file_refusal(PDF, "application/pdf", max_bytes=len(PDF) - 1)
    assert field == "document_file"
    assert "at most" in description


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/pdf; charset=x", "pdf"])
def test_content_types_other_than_the_three_are_refused(content_type: str) -> None:
    field, _ = _file_refusal(PDF, content_type)
    assert field == "document_content_type"


def test_a_letter_that_upper_cases_into_ascii_is_not_an_ascii_letter() -> None:
    """ "\ufb00".upper() is "FF": "ABC\ufb001234F" is refused, not read as the PAN
    ABCFF1234F (review of 2026-12-04)."""
    with pytest.raises(ValidationError):
        _check(DocumentType.PAN, "ABC\ufb001234F")
    assert _check(DocumentType.PAN, "abcpe1234f") == "ABCPE1234F"
