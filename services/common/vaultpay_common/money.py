"""Money as integer minor units plus an ISO 4217 code. There is no float anywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CurrencyMismatchError", "Money"]

_CURRENCY = re.compile(r"^[A-Z]{3}\Z")


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
        sign = "-" if self.amount_minor < 0 else ""
        units, minor = divmod(abs(self.amount_minor), 100)
        return f"{sign}{units}.{minor:02d} {self.currency}"
