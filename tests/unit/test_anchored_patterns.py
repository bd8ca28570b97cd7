"""Shape checks refuse a value with a trailing newline: Python's `$` also matches before a
final "\\n", so every anchored pattern ends in `\\Z` (QA through the gateway: "INR\\n" passed the
currency check and was refused later as CURRENCY_MISMATCH, "2468\\n" passed transfer's PIN
shape and was refused by wallet with another message)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from vaultpay_common.errors import ValidationError
from vaultpay_common.money import Money
from vaultpay_transfer.domain.model import REFERENCE_PATTERN
from vaultpay_transfer.domain.validation import check_currency, check_pin_shape
from vaultpay_wallet.domain.ids import is_wallet_id

ROOT = Path(__file__).resolve().parents[2]


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


def _dollar_anchored(root: Path) -> list[str]:
    """Every `re.compile` of a literal pattern that ends in an unescaped `$`, under `root`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "compile"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "re"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                continue
            pattern = node.args[0].value
            if pattern.endswith("$") and not pattern.endswith("\\$"):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


@pytest.mark.parametrize("top", ["services", "gateway", "deploy"])
def test_no_pattern_ends_in_a_dollar(top: str) -> None:
    assert _dollar_anchored(ROOT / top) == []


def test_the_search_finds_a_pattern_split_over_lines(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text('import re\nP = re.compile(\n    r"^[a-z]+$"\n)\n')
    assert _dollar_anchored(tmp_path) == ["m.py:2"]
