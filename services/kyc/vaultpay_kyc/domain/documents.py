"""Identity document numbers: normalisation, the Indian formats, Verhoeff, masking.

A number is normalised before anything else looks at it (upper case, no whitespace or
hyphens), so "abcpe 1234-f" and "ABCPE1234F" are the same document, for the format check, the
duplicate hash and the stored value alike:

    number = check_document_number(DocumentType.PAN, " abcpe-1234f ", current_year=2026)
    number == "ABCPE1234F"
    mask_document_number(number) == "XXXXXX234F"

Formats (the contract's DocumentType comments):
- PAN: 5 letters, 4 digits, 1 letter; the 4th letter is the holder type (P person, C company,
  H HUF, F firm, A AOP, T trust, B BOI, L local authority, J juridical person, G government).
- Aadhaar: 12 digits, the first not 0 or 1, the last a Verhoeff check digit.
- Passport: 1 letter and 7 digits.
- Driving licence: a state/UT code, a 2-digit RTO code, the 4-digit year of issue (not in the
  future) and a 7-digit serial: 15 characters.

Free text staff write about a submission (a rejection reason the user reads, an approval note)
must not carry a number: `quotes_a_document_number` finds one of any format, written as a
number may be written, and `numbers_in` the candidates to compare with one known number.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from vaultpay_common.errors import ValidationError
from vaultpay_common.text import ascii_upper

__all__ = [
    "DL_STATE_CODES",
    "MAX_RAW_NUMBER_LENGTH",
    "DocumentType",
    "check_document_number",
    "mask_document_number",
    "normalise_document_number",
    "numbers_in",
    "quotes_a_document_number",
    "verhoeff_check_digit",
    "verhoeff_is_valid",
]

MAX_RAW_NUMBER_LENGTH = 64
_SEPARATORS = re.compile(r"[\s\-]+")
# Any character but a letter or digit: how a number quoted in free text may be split.
_NOT_ALPHANUMERIC = re.compile(r"[^\w]|_")


class DocumentType(Enum):
    PAN = "PAN"
    AADHAAR = "AADHAAR"
    PASSPORT = "PASSPORT"
    DRIVING_LICENCE = "DRIVING_LICENCE"


# State and union-territory codes of Indian licences, current and historical (OR/OD, UA/UK,
# TS/TG, DD/DN before the 2020 merger) so that old licences still validate.
_STATES = "AN AP AR AS BR CG CH DD DL DN GA GJ HP HR JH JK KA KL LA LD MH ML MN MP MZ NL OD OR PB"
_STATES += " PY RJ SK TG TN TR TS UA UK UP WB"
DL_STATE_CODES = frozenset(_STATES.split(" "))
_PAN = re.compile(r"[A-Z]{3}[ABCFGHJLPT][A-Z][0-9]{4}[A-Z]")
_AADHAAR = re.compile(r"[2-9][0-9]{11}")
_PASSPORT = re.compile(r"[A-Z][0-9]{7}")
_DRIVING_LICENCE = re.compile(r"(?P<state>[A-Z]{2})(?P<rto>[0-9]{2})(?P<year>[0-9]{4})[0-9]{7}")
_FIRST_DL_YEAR = 1900

# Verhoeff: multiplication in the dihedral group D5, a position-dependent permutation, and the
# inverse table. It catches every single-digit error and every swap of adjacent digits.
_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 7, 6, 0, 8),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def _verhoeff_checksum(digits: str, *, offset: int) -> int:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[(i + offset) % 8][int(ch)]]
    return c


def verhoeff_is_valid(digits: str) -> bool:
    """True when the last digit of `digits` is the Verhoeff check digit of the others."""
    if not digits.isascii() or not digits.isdigit():
        return False
    return _verhoeff_checksum(digits, offset=0) == 0


def verhoeff_check_digit(digits: str) -> str:
    """The check digit to append to `digits` (tests use it to build valid Aadhaar numbers)."""
    if not digits.isascii() or not digits.isdigit():
        raise ValueError("digits only")
    return str(_INV[_verhoeff_checksum(digits, offset=1)])


def normalise_document_number(raw: str) -> str:
    """Upper case (ASCII only: "\ufb00".upper() is "FF"), without whitespace or hyphens."""
    return ascii_upper(_SEPARATORS.sub("", raw))


def check_document_number(
    document_type: DocumentType, raw: str, *, current_year: int, field: str = "document_number"
) -> str:
    """The normalised number, or ValidationError on `field` saying which format it misses."""
    if not raw.strip():
        raise ValidationError.single(field, "is required")
    if len(raw) > MAX_RAW_NUMBER_LENGTH:
        raise ValidationError.single(field, f"must be at most {MAX_RAW_NUMBER_LENGTH} characters")
    number = normalise_document_number(raw)
    if not number.isascii() or not number.isalnum():
        raise ValidationError.single(field, "may contain only letters, digits, spaces and hyphens")
    problem = _format_problem(document_type, number, current_year=current_year)
    if problem is not None:
        raise ValidationError.single(field, problem)
    return number


def _format_problem(document_type: DocumentType, number: str, *, current_year: int) -> str | None:
    """Which part of `document_type`'s format the normalised `number` misses; None if none."""
    if document_type is DocumentType.PAN:
        if not _PAN.fullmatch(number):
            return "a PAN is 5 letters, 4 digits and a letter (e.g. ABCPE1234F)"
    elif document_type is DocumentType.AADHAAR:
        if not _AADHAAR.fullmatch(number):
            return "an Aadhaar number is 12 digits and does not start with 0 or 1"
        if not verhoeff_is_valid(number):
            return "the Aadhaar check digit (Verhoeff) is wrong"
    elif document_type is DocumentType.PASSPORT:
        if not _PASSPORT.fullmatch(number):
            return "a passport number is a letter and 7 digits (e.g. K1234567)"
    else:
        return _driving_licence_problem(number, current_year=current_year)
    return None


def _driving_licence_problem(number: str, *, current_year: int) -> str | None:
    match = _DRIVING_LICENCE.fullmatch(number)
    if match is None:
        return (
            "a driving licence is a state code, 2-digit RTO code, 4-digit year of issue and "
            "7 digits (e.g. MH1420110062821)"
        )
    if match["state"] not in DL_STATE_CODES:
        return "the driving licence's state code is not Indian"
    if not _FIRST_DL_YEAR <= int(match["year"]) <= current_year:
        return "the driving licence's year of issue is not plausible"
    return None


# ----- numbers in free text ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Respelled:
    """Free text spelled as a number is normalised (NFKC, ASCII letters in upper case, the
    separators dropped), with, for each character kept, whether a word of the text starts or
    ends there (the text's character before or after it is not a letter or digit), which word
    it is in, and whether it was typed as a number's letters are (not a lower-case letter)."""

    chars: str
    starts: tuple[bool, ...]
    ends: tuple[bool, ...]
    words: tuple[int, ...]
    typed_upper: tuple[bool, ...]

    @classmethod
    def of(cls, text: str, separators: re.Pattern[str] = _SEPARATORS) -> _Respelled:
        text = unicodedata.normalize("NFKC", text)
        chars: list[str] = []
        starts: list[bool] = []
        ends: list[bool] = []
        words: list[int] = []
        typed_upper: list[bool] = []
        word = 0
        last = len(text) - 1
        for i, char in enumerate(text):
            if separators.fullmatch(char):
                continue
            if i > 0 and not text[i - 1].isalnum():
                word += 1
            # Character by character: `ascii_upper` leaves a text that is not all ASCII as it
            # is, and a rupee sign elsewhere must not hide a number written in lower case.
            chars.append(char.upper() if char.isascii() else char)
            starts.append(i == 0 or not text[i - 1].isalnum())
            ends.append(i == last or not text[i + 1].isalnum())
            words.append(word)
            typed_upper.append(not char.islower())
        return cls("".join(chars), tuple(starts), tuple(ends), tuple(words), tuple(typed_upper))

    def spans(self, length: int, *, words_only: bool) -> Iterator[str]:
        """Every run of `length` characters; with `words_only`, those that start where a word
        of the text starts and end where one ends, and, when they join several words, whose
        letters were all typed upper case (a number written "ABCPE 1234 F"; words of a
        sentence run together, "March 2023 a", would spell one otherwise)."""
        for i in range(len(self.chars) - length + 1):
            end = i + length - 1
            if words_only and not (self.starts[i] and self.ends[end]):
                continue
            joined = self.words[i] != self.words[end]
            if words_only and joined and not all(self.typed_upper[i : end + 1]):
                continue
            yield self.chars[i : i + length]


# The length of every format's numbers, normalised.
_LENGTHS = {
    DocumentType.PAN: 10,
    DocumentType.AADHAAR: 12,
    DocumentType.PASSPORT: 8,
    DocumentType.DRIVING_LICENCE: 15,
}


def quotes_a_document_number(text: str, *, current_year: int) -> bool:
    """True when `text` holds a number of one of the formats above (the Aadhaar check digit
    and the licence's state and year included), spelled as a submission may spell it (any
    case, spaces or hyphens anywhere) and standing as words do: it starts where a word of the
    text starts and ends where one ends. Without that, words run together once the spaces go:
    "year of birth 1990 does not match" holds "BIRTH1990D", a PAN's shape, and "uploaded on
    2024-05-01" holds "N2024050", a passport's.

        quotes_a_document_number("PAN ABCPE 1234-F is not readable", current_year=2026)  # True
        quotes_a_document_number("pan abcpe1234f is not readable", current_year=2026)  # True
        quotes_a_document_number("photo 2024 is blurred", current_year=2026)  # False
        quotes_a_document_number("bill of March 2023 a bit old", current_year=2026)  # False

    A 12-digit reference whose last digit happens to be its Verhoeff digit (one in ten) reads
    as an Aadhaar number: the moderator is asked to describe it without quoting it.
    """
    respelled = _Respelled.of(text)
    return any(
        _format_problem(document_type, span, current_year=current_year) is None
        for document_type, length in _LENGTHS.items()
        for span in respelled.spans(length, words_only=True)
    )


def numbers_in(text: str, document_type: DocumentType, *, current_year: int) -> set[str]:
    """Every number of `document_type`'s format that `text` spells, normalised, wherever it
    starts and ends (also run into the words around it, and written with any separator:
    "2341.2341.2346", "MH14/2011/0062821"): the candidates to compare with one known number,
    where a false match costs nothing."""
    respelled = _Respelled.of(text, _NOT_ALPHANUMERIC)
    return {
        span
        for span in respelled.spans(_LENGTHS[document_type], words_only=False)
        if _format_problem(document_type, span, current_year=current_year) is None
    }


def mask_document_number(number: str) -> str:
    """All but the last 4 characters replaced by "X"; short values are masked entirely."""
    if len(number) <= 4:
        return "X" * len(number)
    return "X" * (len(number) - 4) + number[-4:]
