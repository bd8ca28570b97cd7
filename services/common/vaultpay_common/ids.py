"""The one parser of UUID ids (user, session, notification, ...) for every service.

An id reaches use cases, caches and the database in one spelling: lower-case hex in the
8-4-4-4-12 hyphenated form. Upper-case hex is accepted (RFC 9562 asks parsers to ignore case)
and lowered; every other spelling Python's `uuid.UUID` would accept (braces, a `urn:uuid:`
prefix, no hyphens, surrounding spaces) is invalid input naming the field, so it is answered
INVALID_ARGUMENT instead of reaching PostgreSQL as an unparseable value.

    >>> parse_uuid("0B5F7C1E-8A3D-4F2B-9C6E-1D2A3B4C5D6E", "user_id")
    '0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e'
    >>> parse_uuid("{0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e}", "user_id")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    vaultpay_common.errors.ValidationError: invalid request: user_id: must be a UUID in its ...
"""

from __future__ import annotations

import re

from vaultpay_common.errors import ValidationError

__all__ = ["parse_optional_uuid", "parse_uuid"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MALFORMED = "must be a UUID in its canonical form (8-4-4-4-12 hex digits, no braces or prefix)"


def parse_uuid(value: object, field: str) -> str:
    """The canonical form of a required UUID id, or ValidationError on `field`."""
    if not isinstance(value, str):
        raise ValidationError.single(field, _MALFORMED)
    if not value:
        raise ValidationError.single(field, "is required")
    lowered = value.lower() if value.isascii() else value
    if not _UUID.fullmatch(lowered):
        raise ValidationError.single(field, _MALFORMED)
    return lowered


def parse_optional_uuid(value: object, field: str) -> str:
    """Like `parse_uuid`, but "" (not given, e.g. an unset filter) stays ""."""
    return "" if value == "" else parse_uuid(value, field)
