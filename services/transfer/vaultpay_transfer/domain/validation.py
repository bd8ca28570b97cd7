"""Input rules of money movements, as pure functions raising `ValidationError` on a field.

amount_minor("amount", 125050, "INR", maximum=10**12)   # -> 125050
bank_account(BankAccountInput("123456789012", "hdfc0001234", "A. Person"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vaultpay_common.errors import FieldViolation, ValidationError
from vaultpay_common.input_checks import Checked, InputChecks
from vaultpay_common.text import ascii_upper, has_control_characters, has_line_breaks, normalized
from vaultpay_transfer.domain.errors import InvalidAmountError
from vaultpay_transfer.domain.model import PaymentMethod

__all__ = [
    "MAX_NOTE_CHARS",
    "REFUSING_TEST_ACCOUNT",
    "BankAccount",
    "BankAccountInput",
    "Checked",
    "InputChecks",
    "bank_account",
    "canonical_wallet_id",
    "check_amount",
    "check_currency",
    "check_note",
    "check_payment_method",
    "check_payment_reference",
    "check_pin_shape",
    "check_recipient",
    "check_wallet_id",
    "mask_account_number",
]


MAX_NOTE_CHARS = 140
# The simulated bank refuses every payout to this account number (README, "Transfer").
REFUSING_TEST_ACCOUNT = "000000000000"
_CURRENCY = re.compile(r"^[A-Z]{3}\Z")
_WALLET_ID = re.compile(r"^VPY-[A-Z0-9]{6}\Z")
_IFSC = re.compile(r"^[A-Z]{4}0[A-Z0-9]{6}\Z")
_ACCOUNT_NUMBER = re.compile(r"^[0-9]{9,18}\Z")
_PIN = re.compile(r"^[0-9]{4}\Z")
_PAYMENT_REFERENCE = re.compile(r"^[A-Za-z0-9._:/-]{1,64}\Z")


def check_payment_method(given: PaymentMethod | ValidationError | None) -> PaymentMethod:
    """The top-up's payment method as the entrypoint read it: its refusal (a number that is no
    known method) as it is, "is required" when it was not given."""
    if isinstance(given, ValidationError):
        raise given
    if given is None:
        raise ValidationError.single("payment_method", "is required")
    return given


def check_amount(field: str, amount_minor: int, *, maximum: int) -> int:
    """A positive amount no larger than `maximum` minor units."""
    if amount_minor <= 0:
        raise InvalidAmountError(field, "must be positive")
    if amount_minor > maximum:
        raise InvalidAmountError(field, f"must be at most {maximum} minor units")
    return amount_minor


def check_currency(field: str, currency: str) -> str:
    if not _CURRENCY.match(currency):
        raise ValidationError.single(field, "must be an ISO 4217 code such as INR")
    return currency


def check_recipient(wallet_id: str) -> str:
    """A `VPY-` wallet id, upper-cased (ids are case-insensitive for people typing them)."""
    return check_wallet_id(wallet_id, "recipient_wallet_id")


def canonical_wallet_id(wallet_id: str) -> str:
    """The one spelling of a wallet id (upper case, no surrounding spaces), valid or not: what
    check_wallet_id checks, and what an idempotency fingerprint compares."""
    return ascii_upper(wallet_id)


def check_wallet_id(wallet_id: str, field: str, *, required: bool = True) -> str:
    """A `VPY-` wallet id in `field`, upper-cased; "" when not `required` and not given."""
    value = canonical_wallet_id(wallet_id)
    if not value:
        if required:
            raise ValidationError.single(field, "is required")
        return ""
    if not _WALLET_ID.match(value):
        raise ValidationError.single(field, "must look like VPY-XXXXXX")
    return value


def canonical_text(text: str) -> str:
    """Free text as it is kept: trimmed, NFC (a note, an account holder's name); a text far
    longer than either may be is only trimmed (`text.normalized`), and refused by its check."""
    return normalized("NFC", text)


def canonical_payment_reference(reference: str) -> str:
    """A payment reference as it is kept: trimmed (its case is the payer's, and kept)."""
    return reference.strip()


def canonical_ifsc(ifsc: str) -> str:
    return ascii_upper(ifsc)


def canonical_account_number(number: str) -> str:
    """An account number as it is kept: no spaces (people group the digits)."""
    return number.strip().replace(" ", "")


def check_note(note: str) -> str:
    """At most 140 characters on one line, trimmed. Refused: Unicode's C* characters (controls,
    bidi overrides, zero-width characters; the shared rule of vaultpay_common.text, which lets
    Indic conjuncts and emoji ZWJ sequences through) and the line and paragraph separators.
    Other spaces (a no-break space) are text."""
    value = canonical_text(note)
    if len(value) > MAX_NOTE_CHARS:
        raise ValidationError.single("note", f"must be at most {MAX_NOTE_CHARS} characters")
    problem = _one_line_text_problem(value)
    if problem is not None:
        raise ValidationError.single("note", problem)
    return value


def _one_line_text_problem(value: str) -> str | None:
    """What is wrong with one line of free text people read, or None."""
    if has_control_characters(value):
        return "must not contain control, bidi or zero-width characters"
    if has_line_breaks(value):
        return "must be one line"
    return None


def check_pin_shape(pin: str) -> str:
    if not pin:
        raise ValidationError.single("pin", "is required")
    if not _PIN.match(pin):
        raise ValidationError.single("pin", "must be 4 digits")
    return pin


def check_payment_reference(reference: str) -> str:
    value = canonical_payment_reference(reference)
    if not value:
        raise ValidationError.single("payment_reference", "is required")
    if not _PAYMENT_REFERENCE.match(value):
        raise ValidationError.single(
            "payment_reference", "must be 1 to 64 letters, digits or . _ : / -"
        )
    return value


def mask_account_number(number: str) -> str:
    """Only the last four digits survive: "123456789012" -> "····9012"."""
    return "····" + number[-4:]


@dataclass(frozen=True, slots=True)
class BankAccountInput:
    account_number: str
    ifsc: str
    account_holder_name: str


@dataclass(frozen=True, slots=True)
class BankAccount:
    """A validated destination. The full number is kept only in memory, long enough to hash
    it; the ledger stores the mask and the keyed hash."""

    account_number: str
    ifsc: str
    holder_name: str

    @property
    def mask(self) -> str:
        return mask_account_number(self.account_number)

    @property
    def description(self) -> str:
        return f"{self.ifsc} {self.mask}"


def bank_account(given: BankAccountInput | None) -> BankAccount:
    if given is None:
        raise ValidationError.single("bank_account", "is required")
    violations = []
    number = canonical_account_number(given.account_number)
    if not _ACCOUNT_NUMBER.match(number):
        violations.append(("bank_account.account_number", "must be 9 to 18 digits"))
    ifsc = canonical_ifsc(given.ifsc)
    if not _IFSC.match(ifsc):
        violations.append(
            ("bank_account.ifsc", "must be 4 letters, a zero, then 6 letters or digits")
        )
    holder = canonical_text(given.account_holder_name)
    if not 1 <= len(holder) <= 100:
        violations.append(("bank_account.account_holder_name", "must be 1 to 100 characters"))
    elif (problem := _one_line_text_problem(holder)) is not None:
        violations.append(("bank_account.account_holder_name", problem))
    if violations:
        raise ValidationError([FieldViolation(f, d) for f, d in violations])
    return BankAccount(number, ifsc, holder)
