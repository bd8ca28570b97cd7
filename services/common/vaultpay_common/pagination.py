"""Opaque page tokens (AIP-158) for keyset pagination.

A token encodes the position after the last row returned and a fingerprint of the filters,
so a token reused with different filters is rejected instead of silently skipping rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from vaultpay_common.errors import ValidationError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "decode_page_token",
    "encode_page_token",
    "page_size",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


def page_size(requested: int) -> int:
    """0 means the default; negative is invalid; more than the maximum is capped."""
    if requested < 0:
        raise ValidationError.single("page_size", "must not be negative")
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


def _fingerprint(filters: dict[str, Any]) -> str:
    raw = json.dumps(filters, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def encode_page_token(position: dict[str, Any], filters: dict[str, Any]) -> str:
    body = json.dumps({"p": position, "f": _fingerprint(filters)}, default=str).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_page_token(token: str, filters: dict[str, Any]) -> dict[str, Any] | None:
    """The position a token points at, or None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded))
        position, fingerprint = body["p"], body["f"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError.single("page_token", "is not a valid page token") from exc
    if fingerprint != _fingerprint(filters) or not isinstance(position, dict):
        raise ValidationError.single("page_token", "was issued for different filters")
    return position
