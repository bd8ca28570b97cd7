"""The shared check of free text: every Unicode C* category, and only what a field allows."""

from __future__ import annotations

import pytest

from vaultpay_common.text import has_control_characters


@pytest.mark.parametrize(
    "text",
    [
        "\x00",  # Cc
        "\x1b[31m",  # Cc (ESC)
        "\x85",  # Cc (C1)
        "\u202eecilA",  # Cf: right-to-left override
        "Al\u200bice",  # Cf: zero-width space
        "Alice\u2066",  # Cf: left-to-right isolate
        "\ufeffAlice",  # Cf: zero-width no-break space
        "\ud800",  # Cs: a lone surrogate
        "\ue000",  # Co: private use
        "\u0378",  # Cn: unassigned
    ],
)
def test_every_other_category_is_refused(text: str) -> None:
    assert has_control_characters(text)


@pytest.mark.parametrize("text", ["Alice", "Ünïcødé 名前 محمد", "a b", "🙂", ""])
def test_ordinary_text_passes(text: str) -> None:
    assert not has_control_characters(text)


def test_only_what_a_field_allows_passes() -> None:
    assert has_control_characters("one\ntwo")
    assert not has_control_characters("one\n\ttwo", allowed="\n\t")
    assert has_control_characters("one\n\u202etwo", allowed="\n\t")


@pytest.mark.parametrize(
    "text",
    [
        "क्\u200dष",  # Devanagari: virama + ZWJ (the half form of KA before SSA)
        "क्\u200cष",  # Devanagari: virama + ZWNJ (the explicit virama, no conjunct)
        "ന്\u200d",  # Malayalam: virama + ZWJ (a chillu written the older way)
        "ශ්\u200dරී",  # Sinhala: al-lakuna + ZWJ (the rakaaraansaya of "Sri")
    ],
)
def test_a_zero_width_joiner_after_a_virama_passes(text: str) -> None:
    # RFC 5892 Appendix A.1/A.2 (CONTEXTJ): ZWNJ and ZWJ are allowed right after a virama.
    assert not has_control_characters(text)


@pytest.mark.parametrize(
    "text",
    [
        "Al\u200dice",  # ZWJ between letters: "Alice" by another code point sequence
        "\u200cAlice",  # ZWNJ with nothing before it
        "a\u200c",  # ZWNJ after a letter that is not a virama
        "क\u200dष",  # Devanagari, but no virama before the ZWJ
        "क्\u200d\u200dष",  # the second ZWJ follows a ZWJ, not a virama
        "क्\u200bष",  # only ZWNJ and ZWJ are let through after a virama
        "क्\u200d\u202e",  # the exception lets nothing else through
    ],
)
def test_a_zero_width_joiner_anywhere_else_is_refused(text: str) -> None:
    assert has_control_characters(text)
