"""Document numbers in the free text of reviews (review of kyc, item 2): a rejection reason
goes to the audit row, the outbox and the user's notification, an approval note to the audit
row, and a number never goes there. A number of any format kyc knows is refused however it is
written (case, spaces, hyphens, full-width forms), when it stands as words do; ordinary
sentences, dates and years pass, also where their words would run into a number's shape once
the spaces are gone."""

from __future__ import annotations

import pytest

from tests.unit.kyc.kyc_world import aadhaar
from vaultpay_common.errors import ValidationError
from vaultpay_kyc.domain.documents import DocumentType, numbers_in, quotes_a_document_number
from vaultpay_kyc.domain.model import QUOTES_A_NUMBER, clean_review_text

YEAR = 2026
AADHAAR = aadhaar()  # 234123412346
WRONG_CHECK_DIGIT = AADHAAR[:-1] + str((int(AADHAAR[-1]) + 1) % 10)


@pytest.mark.parametrize(
    "text",
    [
        "PAN ABCPE1234F does not match the photo",
        "pan abcpe1234f is someone else's",
        "number ABCPE 1234-F is not readable",
        "the card reads ABCPE-1234-F.",
        "(ABCPE1234F)",
        f"Aadhaar {AADHAAR} is cut off",
        f"aadhaar {AADHAAR[:4]} {AADHAAR[4:8]} {AADHAAR[8:]} is cut off",
        f"aadhaar {AADHAAR[:4]}-{AADHAAR[4:8]}-{AADHAAR[8:]}",
        "passport K1234567 has expired",
        "passport K 123 4567 has expired",
        "licence MH1420110062821 is from another state",
        "licence MH-14-2011-0062821 is from another state",
        "licence no: MH14 20110062821",
        "licence no: mh1420110062821",
        "\uff21\uff22\uff23\uff30\uff25\uff11\uff12\uff13\uff14\uff26 (full-width)",
        "₹ and a lower-case abcpe1234f beside non-ASCII text",
        "line one\npassport K1234567",
    ],
)
def test_a_number_of_any_format_however_written_is_found(text: str) -> None:
    assert quotes_a_document_number(text, current_year=YEAR)


@pytest.mark.parametrize(
    "text",
    [
        "photo is blurred",
        "name mismatch",
        "The photo is blurred and the name does not match.",
        "year of birth 1990 does not match",
        "Photo 2024 is blurred",
        "birth 1990 and name differ",
        "uploaded on 2024-05-01, please upload again",
        "Annexure A 2024-05-01 missing",
        "expired in 2019; address proof missing, page 2 of 3",
        "call 98765 43210 for help",
        f"a 12-digit number with a wrong check digit: {WRONG_CHECK_DIGIT}",
        "licence XX1420110062821 (no such state) and MH1420990062821 (year 2099)",
        "PAN ABCDE1234F has no holder type E",
        "K123456 is one digit short",
        "ids like aBCPE1234Fx run into other words",
        # Review of 8d546b9: words of a sentence joined once the spaces went spelled a PAN
        # ("MARCH2023A"); a number split into words counts only when typed upper case.
        "Bill dated March 2023 a bit old, upload a recent one",
        "photo 2023 a bit blurry",
        "Address proof from March 2024 I cannot accept",
        "since 2021 a new address",
        "number abcpe 1234-f in lower-case words",
        "",
        "ok",
    ],
)
def test_ordinary_sentences_dates_and_near_misses_pass(text: str) -> None:
    assert not quotes_a_document_number(text, current_year=YEAR)


def test_a_reason_or_note_with_a_number_is_refused_naming_the_field_without_the_number() -> None:
    for field, required in (("reason", True), ("note", False)):
        with pytest.raises(ValidationError) as caught:
            clean_review_text(
                "PAN ABCPE 1234 F is not yours",
                field=field,
                required=required,
                max_length=500,
                current_year=YEAR,
            )
        (violation,) = caught.value.violations
        assert (violation.field, violation.description) == (field, QUOTES_A_NUMBER)
        assert "1234" not in str(caught.value)
    assert (
        clean_review_text(
            " photo is blurred ", field="reason", required=True, max_length=500, current_year=YEAR
        )
        == "photo is blurred"
    )


def test_the_length_is_checked_before_any_number_is_looked_for() -> None:
    with pytest.raises(ValidationError, match="at most 500"):
        clean_review_text(
            "ABCPE1234F " * 100, field="reason", required=True, max_length=500, current_year=YEAR
        )


def test_numbers_in_finds_one_type_anywhere_also_run_into_other_words() -> None:
    text = "wrongABCPE1234Fnumber; also zzzpz-9999-z and ABCDE1234F"
    assert numbers_in(text, DocumentType.PAN, current_year=YEAR) >= {"ABCPE1234F", "ZZZPZ9999Z"}
    assert "ABCDE1234F" not in numbers_in(text, DocumentType.PAN, current_year=YEAR)
    assert numbers_in("photo is blurred", DocumentType.PAN, current_year=YEAR) == set()
    assert numbers_in(f"x{AADHAAR}x", DocumentType.AADHAAR, current_year=YEAR) == {AADHAAR}
    # The own number is looked for whatever separates its parts (review of 8d546b9: dots
    # and slashes let it through) and in any case.
    dotted = f"Aadhaar {AADHAAR[:4]}.{AADHAAR[4:8]}.{AADHAAR[8:]} is cut off"
    assert AADHAAR in numbers_in(dotted, DocumentType.AADHAAR, current_year=YEAR)
    licence = "DL mh14/2011/0062821 is from another state"
    assert "MH1420110062821" in numbers_in(licence, DocumentType.DRIVING_LICENCE, current_year=YEAR)
    lower = "number abcpe 1234-f in lower-case words"
    assert "ABCPE1234F" in numbers_in(lower, DocumentType.PAN, current_year=YEAR)
