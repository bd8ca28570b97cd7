"""Money as integer minor units plus an ISO 4217 code. There is no float anywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CurrencyMismatchError", "Money", "format_major", "minor_unit_digits"]

_CURRENCY = re.compile(r"^[A-Z]{3}\Z")

# ISO 4217's minor units of the active codes that do not have two (amounts are stored in the
# currency's own minor unit: 5000 JPY is five thousand yen, 1500 KWD is 1.500 dinars).
_MINOR_UNIT_DIGITS: dict[str, int] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}


def minor_unit_digits(currency: str) -> int:
    """How many digits of `currency`'s amounts are after the decimal point (ISO 4217)."""
    return _MINOR_UNIT_DIGITS.get(currency, 2)


def format_major(amount_minor: int, currency: str, *, grouped: bool = True) -> str:
    """An amount in minor units as people read it: (125050, "INR") -> "1,250.50 INR",
    (5000, "JPY") -> "5,000 JPY", (1500, "KWD") -> "1.500 KWD"."""
    digits = minor_unit_digits(currency)
    sign = "-" if amount_minor < 0 else ""
    units, minor = divmod(abs(amount_minor), 10**digits)
    whole = f"{units:,}" if grouped else str(units)
    fraction = f".{minor:0{digits}d}" if digits else ""
    return f"{sign}{whole}{fraction} {currency}"


class CurrencyMismatchError(ValueError):
    """Arithmetic between two different currencies."""


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An amount in minor units (paise for INR).

    >>> Money.of(125050, "INR") + Money.of(50, "INR")
    Money(amount_minor=125100, currency='INR')
    """

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise TypeError("amount_minor must be an int (minor units), never a float")
        if not _CURRENCY.match(self.currency):
            raise ValueError(f"not an ISO 4217 currency code: {self.currency!r}")

    @classmethod
    def of(cls, amount_minor: int, currency: str) -> Money:
        return cls(amount_minor, currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"{self.currency} vs {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor <= other.amount_minor

    @property
    def is_positive(self) -> bool:
        return self.amount_minor > 0

    def __str__(self) -> str:
        return format_major(self.amount_minor, self.currency, grouped=False)
