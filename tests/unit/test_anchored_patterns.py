"""Shape checks refuse a value with a trailing newline: Python's `$` also matches before a
final "\\n", so every anchored pattern ends in `\\Z` (QA through the gateway: "INR\\n" passed the
currency check and was refused later as CURRENCY_MISMATCH, "2468\\n" passed transfer's PIN
shape and was refused by wallet with another message)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from vaultpay_common.errors import ValidationError
from vaultpay_common.money import Money
from vaultpay_transfer.domain.model import REFERENCE_PATTERN
from vaultpay_transfer.domain.validation import check_currency, check_pin_shape
from vaultpay_wallet.domain.ids import is_wallet_id

SERVICES = Path(__file__).resolve().parents[2] / "services"


@pytest.mark.parametrize(
    "check",
    [
        lambda: check_currency("amount.currency_code", "INR\n"),
        lambda: check_pin_shape("2468\n"),
    ],
    ids=["currency", "pin"],
)
def test_a_trailing_newline_is_refused_naming_the_field(check: Callable[[], object]) -> None:
    with pytest.raises(ValidationError):
        check()


def test_a_trailing_newline_is_no_currency_wallet_id_or_reference() -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(100, "INR\n")
    assert not is_wallet_id("VPY-AB12CD\n")
    assert not REFERENCE_PATTERN.match("VP-TXN-ABCD1234\n")
    assert Money(100, "INR").currency == "INR" and is_wallet_id("VPY-AB12CD")


def test_no_anchored_pattern_in_the_services_ends_in_a_dollar() -> None:
    dollar = re.compile(r're\.compile\(r"\^[^"]*\$"')
    found = [
        f"{path.relative_to(SERVICES)}: {line.strip()}"
        for path in SERVICES.rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if dollar.search(line)
    ]
    assert found == []
