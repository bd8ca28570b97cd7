"""The one check of what free text people type may hold, shared by every service.

Free text that other people read (a wallet's display name shown to a payer, a rejection reason,
a freeze note) must not carry Unicode's "other" characters, general category C*:

- Cc controls (NUL, ESC, C1 codes), which PostgreSQL or a terminal may choke on;
- Cf format characters: the bidi overrides and isolates (U+202A..U+202E, U+2066..U+2069) make
  "\\u202eecilA" render as "Alice", and zero-width ones (U+200B, U+2060, U+FEFF) make two
  names that look the same compare different: both let a payee pass for someone else;
- Cs lone surrogates, Co private-use and Cn unassigned code points, which render as nothing
  anyone can check.

One exception, because the product's users write Indic names: ZERO WIDTH NON-JOINER (U+200C)
and ZERO WIDTH JOINER (U+200D) pass when the character right before them is a virama (canonical
combining class 9), the simple case of RFC 5892 (IDNA2008) Appendix A.1 and A.2 (CONTEXTJ).
Devanagari, Malayalam, Sinhala and the other Brahmic scripts put a joiner there to choose how a
conjunct renders: a half form with ZWJ ("\\u0915\\u094d\\u200d\\u0937"), a visible virama with
ZWNJ, a Malayalam chillu, Sinhala's "\\u0dc1\\u0dca\\u200d\\u0dbb\\u0dd3". Anywhere else a
joiner stays refused ("Al\\u200dice" would compare different from "Alice" and look the same).
The other half of A.1, a ZWNJ between characters of the right joining types (Persian and other
Arabic-script text), is not implemented: such a ZWNJ is refused.

And one for emoji, because people put them in payment notes: a ZWJ between two emoji, where the
character before it is a symbol (So, e.g. U+1F468), a skin-tone modifier (U+1F3FB..U+1F3FF) or
the emoji presentation selector (U+FE0F), and the one after it a symbol: the emoji ZWJ
sequences of Unicode TR #51 ("\U0001f468\u200d\U0001f469\u200d\U0001f467", a family;
"\U0001f3f3\ufe0f\u200d\U0001f308", a rainbow flag). Such a sequence renders as one glyph,
visibly different from its parts, so it cannot make two texts look the same; between letters
the ZWJ stays refused.

auth's full name refused these first; wallet, kyc and transfer refuse them with this check.

    has_control_characters("Alice")                       # False
    has_control_characters("\\u202eecilA")                 # True
    has_control_characters("\\u0915\\u094d\\u200d\\u0937")    # False: ZWJ after a virama
    has_control_characters("Al\\u200dice")                 # True
    has_control_characters("\\U0001f468\\u200d\\U0001f469")    # False: an emoji ZWJ sequence
    has_control_characters("line one\\nline two", allowed="\\n")  # False
"""

from __future__ import annotations

import unicodedata
from typing import Literal

__all__ = [
    "NORMALIZED_AT_MOST",
    "ascii_upper",
    "has_control_characters",
    "has_line_breaks",
    "normalized",
]

# The longest text `normalized` normalises: far above every field it serves (an email's 254,
# a note's 140), and far below where CPython's Unicode normalisation, quadratic in a run of
# combining marks, costs anything (~1 ms here; 120,000 marks cost 11 s, a 240 KB request).
NORMALIZED_AT_MOST = 1024


_JOINERS = "\u200c\u200d"  # ZERO WIDTH NON-JOINER, ZERO WIDTH JOINER
_ZWJ = "\u200d"
_VIRAMA = 9  # the canonical combining class of a virama
_EMOJI_PRESENTATION = "\ufe0f"  # VARIATION SELECTOR-16
_SKIN_TONES = ("\U0001f3fb", "\U0001f3ff")  # EMOJI MODIFIER FITZPATRICK TYPE-1-2 .. TYPE-6


def ascii_upper(text: str) -> str:
    """`text` trimmed and upper-cased when it is all ASCII; otherwise only trimmed. For ids and
    codes that are ASCII by definition and case-insensitive on input: str.upper() would spell
    some other letters as ASCII ones ("vpy-abcd\ufb00" as "VPY-ABCDFF", "\u0131" as "I"), so an
    id that is not the one shown would be accepted as it; left alone, their pattern refuses it."""
    value = text.strip()
    return value.upper() if value.isascii() else value


def normalized(form: Literal["NFC", "NFKC"], text: str) -> str:
    """`text` trimmed and in Unicode normal form `form`, when it is at most NORMALIZED_AT_MOST
    characters; a longer one trimmed only, for its field's length check to refuse. Normalising
    first let one request of combining marks hold a service's event loop for seconds to
    minutes (review of 2026-12-05: an email at Login froze auth, and with it every strict
    call of the mesh)."""
    value = text.strip()
    if len(value) > NORMALIZED_AT_MOST:
        return value
    return unicodedata.normalize(form, value).strip()


def has_line_breaks(text: str) -> bool:
    """Whether `text` holds a LINE SEPARATOR or PARAGRAPH SEPARATOR (Zl, Zp: not C*, so
    `has_control_characters` lets them by), which phones and browsers break a line at: a name
    or note meant as one line could put a line of its own under ours."""
    return any(unicodedata.category(ch) in ("Zl", "Zp") for ch in text)


def has_control_characters(text: str, *, allowed: str = "") -> bool:
    """Whether `text` holds a character of any C* category other than those in `allowed`
    (e.g. "\\n\\t" where a multi-line text is expected).

    A ZWNJ (U+200C) or ZWJ (U+200D) right after a virama (``unicodedata.combining(ch) == 9``)
    does not count: RFC 5892 Appendix A.1 (ZWNJ) and A.2 (ZWJ), the "Virama" rule of CONTEXTJ,
    which Indic names need; nor does a ZWJ inside an emoji ZWJ sequence (module docstring). A
    joiner anywhere else does ("Al\\u200dice", "\\u200cAlice", "a\\u200c"). A.1's other
    rule, a ZWNJ allowed by the joining types of the letters around it (Persian and other
    Arabic-script text), is not implemented, so such a ZWNJ is refused."""
    previous = ""
    for index, ch in enumerate(text):
        if unicodedata.category(ch)[0] == "C" and ch not in allowed:
            after_virama = previous != "" and unicodedata.combining(previous) == _VIRAMA
            joins = ch in _JOINERS and after_virama
            if not (joins or (ch == _ZWJ and _joins_emoji(previous, text[index + 1 : index + 2]))):
                return True
        previous = ch
    return False


def _is_symbol(ch: str) -> bool:
    return ch != "" and unicodedata.category(ch) == "So"


def _joins_emoji(before: str, after: str) -> bool:
    """A ZWJ inside an emoji ZWJ sequence: an emoji (or its modifier or presentation
    selector) before it, an emoji after it."""
    emoji_before = (
        _is_symbol(before)
        or before == _EMOJI_PRESENTATION
        or (before != "" and _SKIN_TONES[0] <= before <= _SKIN_TONES[1])
    )
    return emoji_before and _is_symbol(after)
