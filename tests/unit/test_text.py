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
