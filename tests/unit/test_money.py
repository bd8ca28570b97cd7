import pytest

from vaultpay_common.money import CurrencyMismatchError, Money, format_major, minor_unit_digits
from vaultpay_transfer.domain.notifications import format_amount
from vaultpay_wallet.domain.currency import ISO_4217_CODES


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


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (125050, "INR", "1,250.50 INR"),
        (5, "INR", "0.05 INR"),
        (5000, "JPY", "5,000 JPY"),  # yen have no minor unit: it read "50.00 JPY"
        (1500, "KWD", "1.500 KWD"),  # dinars have three digits: it read "15.00 KWD"
        (-1, "BHD", "-0.001 BHD"),
        (12345, "CLF", "1.2345 CLF"),
    ],
)
def test_amounts_are_shown_in_each_currencys_own_minor_unit(
    minor: int, currency: str, shown: str
) -> None:
    """Review of 2026-12-05: every amount was divided by 100, whatever its currency."""
    assert format_major(minor, currency) == shown
    assert format_amount(str(minor), currency) == shown  # the notifications' texts


def test_every_currency_a_wallet_may_hold_has_a_known_minor_unit() -> None:
    assert {minor_unit_digits(code) for code in ISO_4217_CODES} <= {0, 2, 3, 4}
    assert str(Money.of(5000, "JPY")) == "5000 JPY"
