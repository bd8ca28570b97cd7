"""The password's normal form (`normalize_password`, `password_spellings`): NFC, not NFKC, not
trimmed, and no normalisation work at all for a password too long to be one (CPython's is
quadratic in a run of combining marks: `vaultpay_common.text`)."""

from __future__ import annotations

import unicodedata

import pytest

from vaultpay_auth.domain.policies import (
    check_registration,
    normalize_password,
    password_spellings,
    password_violations,
)
from vaultpay_common.errors import ValidationError
from vaultpay_common.text import NORMALIZED_AT_MOST

PRECOMPOSED = "cr\u00e8me br\u00fbl\u00e9e 42 fa\u00e7ade"
DECOMPOSED = "cre\u0300me bru\u0302le\u0301e 42 fac\u0327ade"
# A base letter and 20,000 pairs of combining marks: NFC would reorder and compose them.
MARKS = "a1" + "\u0301\u0316" * 20_000


def test_a_password_is_put_in_nfc() -> None:
    assert normalize_password(DECOMPOSED) == normalize_password(PRECOMPOSED) == PRECOMPOSED


@pytest.mark.parametrize(
    "typed", ["\ufb01ne print 42 horse", "square\u00b2 battery 42", "\uff21wide 42 battery"]
)
def test_nfkc_foldings_are_left_alone(typed: str) -> None:
    """NFKC would fold "\ufb01" into "fi", "\u00b2" into "2", a fullwidth "\uff21" into "A":
    distinct characters made one, a smaller space of passwords."""
    assert normalize_password(typed) == typed
    assert unicodedata.normalize("NFKC", typed) != typed


def test_a_password_is_not_trimmed() -> None:
    assert normalize_password("  e\u0301 spaced 42  ") == "  \u00e9 spaced 42  "


def test_the_form_as_typed_is_tried_only_when_it_is_not_nfc() -> None:
    assert password_spellings(PRECOMPOSED) == (PRECOMPOSED,)
    assert password_spellings("correct horse 42 battery") == ("correct horse 42 battery",)
    assert password_spellings(DECOMPOSED) == (PRECOMPOSED, DECOMPOSED)


def test_an_over_long_password_is_refused_for_its_length_before_any_normalisation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    normalised: list[int] = []
    real = unicodedata.normalize

    def counting(form: str, text: str) -> str:
        normalised.append(len(text))
        return real(form, text)  # type: ignore[arg-type]

    monkeypatch.setattr(unicodedata, "normalize", counting)  # the module policies calls
    assert normalize_password(MARKS) is MARKS
    assert password_spellings(MARKS) == (MARKS,)
    with pytest.raises(ValidationError) as refused:
        check_registration("zoe@example.com", normalize_password(MARKS), "Zoe")
    assert [(v.field, v.description) for v in refused.value.violations] == [
        ("password", "must be 12 to 128 characters")
    ]
    assert normalised == []
    at_most = "e\u0301" * (NORMALIZED_AT_MOST // 2)
    assert normalize_password(at_most) == "\u00e9" * (NORMALIZED_AT_MOST // 2)
    assert normalised == [NORMALIZED_AT_MOST]  # at the bound, it is normalised


def test_the_rules_judge_the_nfc_form() -> None:
    longest = (PRECOMPOSED + " d\u00e9j\u00e0 vu ") * 5
    longest = longest[:128]
    assert password_violations(normalize_password(unicodedata.normalize("NFD", longest)), "") == []
    short = normalize_password(unicodedata.normalize("NFD", "Zo\u00eb d\u00e9j\u00e0 4!"))
    assert [v.description for v in password_violations(short, "")] == [
        "must be 12 to 128 characters"
    ]
