"""InputChecks (domain/validation.py): one refusal naming every bad field, raised when the
`with` block ends; a checked value cannot be read before that, so a movement that forgot to
let its checks raise fails loudly instead of using a fallback (review of 2026-12-03)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vaultpay_common.errors import ValidationError
from vaultpay_transfer.domain.errors import InvalidAmountError
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.validation import (
    Checked,
    InputChecks,
    check_amount,
    check_note,
    check_payment_method,
    check_pin_shape,
)


def test_values_are_read_after_the_block_once_every_check_passed() -> None:
    with InputChecks() as checks:
        note = checks.run(lambda: check_note(" lunch "))
        method = checks.take(PaymentMethod.UPI)
    assert (note.value, method.value) == ("lunch", PaymentMethod.UPI)


def test_a_value_read_inside_the_block_is_a_loud_error_even_when_it_passed() -> None:
    with InputChecks() as checks:
        pin = checks.run(lambda: check_pin_shape("1234"))
        with pytest.raises(RuntimeError, match="before its InputChecks passed"):
            _ = pin.value


def test_a_value_of_checks_never_closed_by_a_block_cannot_be_read() -> None:
    checks = InputChecks()  # no `with`: nothing would ever raise their refusals
    pin = checks.run(lambda: check_pin_shape(""))
    with pytest.raises(RuntimeError):
        _ = pin.value


def _checked(*checks: Callable[[InputChecks], object]) -> InputChecks:
    """Runs `checks` in one block of InputChecks (which raise at its end)."""
    with InputChecks() as input_checks:
        for check in checks:
            check(input_checks)
    return input_checks


def test_the_block_raises_one_refusal_as_it_is_and_several_as_one_in_their_order() -> None:
    with pytest.raises(InvalidAmountError) as alone:
        _checked(
            lambda c: c.run(lambda: check_amount("amount.amount_minor", 0, maximum=10)),
            lambda c: c.run(lambda: check_note("fine")),
        )
    assert alone.value.reason == "INVALID_AMOUNT"

    refused = ValidationError.single("request_id", "is required")
    with pytest.raises(ValidationError) as several:
        _checked(
            lambda c: c.take(refused),
            lambda c: c.run(lambda: check_amount("amount.amount_minor", 0, maximum=10)),
            lambda c: c.run(lambda: check_payment_method(None)),
        )
    assert [v.field for v in several.value.violations] == [
        "request_id",
        "amount.amount_minor",
        "payment_method",
    ]
    assert several.value.reason == "INVALID_ARGUMENT"


def test_a_value_kept_from_checks_that_refused_cannot_be_read_after_the_refusal() -> None:
    kept: list[Checked[str]] = []
    with pytest.raises(ValidationError):
        _checked(
            lambda c: kept.append(c.run(lambda: check_note("fine"))),
            lambda c: c.run(lambda: check_pin_shape("12a4")),
        )
    with pytest.raises(RuntimeError):
        _ = kept[0].value


def test_another_error_in_the_block_goes_out_as_it_is() -> None:
    def bug(checks: InputChecks) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        _checked(lambda c: c.run(lambda: check_pin_shape("")), bug)


def test_no_check_is_taken_after_the_block() -> None:
    with InputChecks() as checks:
        pass
    with pytest.raises(RuntimeError, match="inside their with block"):
        checks.run(lambda: check_pin_shape(""))  # its refusal would never be raised
