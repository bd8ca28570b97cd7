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


@pytest.mark.parametrize(
    "text",
    [
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467",  # man ZWJ woman ZWJ girl
        "\U0001f3f3\ufe0f\u200d\U0001f308",  # white flag, VS16, ZWJ, rainbow
        "\U0001f469\U0001f3fd\u200d\U0001f4bb",  # woman, skin tone, ZWJ, laptop
        "\U0001f3c3\u200d\u2640\ufe0f",  # runner ZWJ female sign, VS16
    ],
)
def test_a_zero_width_joiner_inside_an_emoji_sequence_passes(text: str) -> None:
    assert not has_control_characters(text)


@pytest.mark.parametrize(
    "text",
    [
        "\U0001f468\u200d",  # nothing after it
        "\u200d\U0001f468",  # nothing before it
        "\U0001f468\u200da",  # a letter after the emoji
        "a\u200d\U0001f468",  # a letter before it
        "\U0001f468\u200d\u200d\U0001f469",  # the second ZWJ follows a ZWJ
        "\U0001f468\u200c\U0001f469",  # only the ZWJ joins emoji, not the ZWNJ
    ],
)
def test_a_zero_width_joiner_next_to_anything_but_emoji_is_refused(text: str) -> None:
    assert has_control_characters(text)
