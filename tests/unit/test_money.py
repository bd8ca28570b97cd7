import pytest

from vaultpay_common.money import CurrencyMismatchError, Money


def test_money_adds_in_minor_units() -> None:
    assert Money.of(125050, "INR") + Money.of(50, "INR") == Money.of(125100, "INR")


def test_money_refuses_floats() -> None:
    with pytest.raises(TypeError):
        Money(10.5, "INR")  # type: ignore[arg-type]


def test_money_refuses_mixing_currencies() -> None:
    with pytest.raises(CurrencyMismatchError):
        _ = Money.of(1, "INR") + Money.of(1, "USD")


def test_money_refuses_bad_currency_codes() -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Money.of(1, "inr")


def test_money_prints_major_units() -> None:
    assert str(Money.of(-125005, "INR")) == "-1250.05 INR"
