"""The one check of what free text people type may hold, shared by every service.

Free text that other people read (a wallet's display name shown to a payer, a rejection reason,
a freeze note) must not carry Unicode's "other" characters, general category C*:

- Cc controls (NUL, ESC, C1 codes), which PostgreSQL or a terminal may choke on;
- Cf format characters: the bidi overrides and isolates (U+202A..U+202E, U+2066..U+2069) make
  "\\u202eecilA" render as "Alice", and zero-width ones (U+200B, U+2060, U+FEFF) make two
  names that look the same compare different: both let a payee pass for someone else;
- Cs lone surrogates, Co private-use and Cn unassigned code points, which render as nothing
  anyone can check.

auth's full name refused these first; wallet, kyc and transfer refuse them with this check.

    has_control_characters("Alice")                       # False
    has_control_characters("\\u202eecilA")                 # True
    has_control_characters("line one\\nline two", allowed="\\n")  # False
"""

from __future__ import annotations

import unicodedata

__all__ = ["has_control_characters"]


def has_control_characters(text: str, *, allowed: str = "") -> bool:
    """Whether `text` holds a character of any C* category other than those in `allowed`
    (e.g. "\\n\\t" where a multi-line text is expected)."""
    return any(unicodedata.category(ch)[0] == "C" and ch not in allowed for ch in text)
