"""Checks of free-text input shared by the use cases. Each returns the cleaned value or
raises ValidationError naming the request field."""

from __future__ import annotations

from vaultpay_common.errors import ValidationError
from vaultpay_common.text import has_control_characters, has_line_breaks
from vaultpay_wallet.domain.currency import DEFAULT_CURRENCY, is_currency_code

__all__ = ["clean_currency", "clean_text", "require_supported_currency"]


def clean_text(value: str, *, field: str, min_length: int, max_length: int) -> str:
    """Trimmed text of `min_length`..`max_length` characters with no character of Unicode's
    C* categories: controls, and the bidi and zero-width format characters that would let a
    display name shown to a payer ("\u202eecilA") read as someone else's ("Alice"). A ZWJ or
    ZWNJ right after a virama (Indic names) passes: see `vaultpay_common.text`. One line: no
    LINE or PARAGRAPH SEPARATOR either (a display name with one put "VaultPay Security: …"
    on a line of its own in its payee's notification, outside the quotes; review of
    2026-12-05)."""
    text = value.strip()
    if len(text) < min_length:
        raise ValidationError.single(field, "is required" if min_length == 1 else "is too short")
    if len(text) > max_length:
        raise ValidationError.single(field, f"must be at most {max_length} characters")
    if has_control_characters(text):
        raise ValidationError.single(
            field, "must not contain control or invisible formatting characters"
        )
    if has_line_breaks(text):  # a payer's notification quotes the display name on one line
        raise ValidationError.single(field, "must be one line")
    return text


def clean_currency(value: str, *, field: str = "currency_code") -> str:
    """An ISO 4217 code; empty means the default (INR)."""
    code = value.strip()
    if not code:
        return DEFAULT_CURRENCY
    if code != code.upper() or not is_currency_code(code):
        raise ValidationError.single(field, "must be an upper-case ISO 4217 currency code")
    return code


def require_supported_currency(
    code: str, supported: frozenset[str], *, field: str = "currency_code"
) -> str:
    """`code` (already clean) if the deployment supports it. The tier limits are minor units
    of every supported currency alike, so a code outside the set is refused rather than given
    limits meant for another currency."""
    if code not in supported:
        listed = ", ".join(sorted(supported))
        raise ValidationError.single(field, f"{code} is not supported here (supported: {listed})")
    return code
