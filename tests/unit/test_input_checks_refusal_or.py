"""`refusal_or`: an entrypoint's parse whose refusal the use case names with the request's
other bad fields."""

from __future__ import annotations

from vaultpay_common.errors import ValidationError
from vaultpay_common.input_checks import refusal_or


def _parse(value: str, field: str) -> int:
    if not value.isdigit():
        raise ValidationError.single(field, "must be digits")
    return int(value)


def test_the_value_or_the_refusal_returned_not_raised() -> None:
    assert refusal_or(_parse, "42", "n") == 42
    refused = refusal_or(_parse, "x", field="n")
    assert isinstance(refused, ValidationError)
    assert [v.field for v in refused.violations] == ["n"]
