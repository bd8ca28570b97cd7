"""Request hygiene for every RPC: a request must parse as its message (a string field that is
not UTF-8 is named), and its text fields must not carry NUL characters.

PostgreSQL cannot store U+0000 in text, and a NUL in an identifier or name is never
legitimate, so such a request is refused up front with INVALID_ARGUMENT naming the field,
instead of failing deep in the database. Runs innermost, after authentication.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from vaultpay_common.errors import MAX_VIOLATIONS, FieldViolation, ValidationError
from vaultpay_common.grpc.wrapping import CallInterceptor, UndecodableRequest

__all__ = ["RequestHygieneInterceptor", "nul_violations"]


# A map key names its entry in a violation's path: a client's text, so only its start.
_MAX_KEY_CHARS = 40


def _entry(path: str, key: object) -> str:
    shown = repr(key)
    if len(shown) > _MAX_KEY_CHARS:
        shown = shown[:_MAX_KEY_CHARS] + "..."
    return f"{path}[{shown}]"


def nul_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """Every string field (at any depth) that contains a NUL character (a map entry named by
    the start of its key; ValidationError keeps the first MAX_VIOLATIONS)."""
    found: list[FieldViolation] = []
    for field, value in message.ListFields():
        if len(found) > MAX_VIOLATIONS:
            break
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if len(found) > MAX_VIOLATIONS:
                    break
                entry = _entry(path, key)
                if isinstance(key, str) and "\x00" in key:
                    found.append(FieldViolation(path, "must not contain NUL characters"))
                if isinstance(item, Message):
                    found += nul_violations(item, f"{entry}.")
                elif isinstance(item, str) and "\x00" in item:
                    found.append(FieldViolation(entry, "must not contain NUL characters"))
            continue
        items = value if field.is_repeated else [value]
        for index, item in enumerate(items):
            if len(found) > MAX_VIOLATIONS:
                break
            where = f"{path}[{index}]" if field.is_repeated else path
            if isinstance(item, Message):
                found += nul_violations(item, f"{where}.")
            elif isinstance(item, str) and "\x00" in item:
                found.append(FieldViolation(where, "must not contain NUL characters"))
    return found


class RequestHygieneInterceptor(CallInterceptor):
    def check_request(self, method: str, request: Any) -> None:
        if isinstance(request, UndecodableRequest):
            if request.bad_utf8_fields:
                raise ValidationError(
                    [FieldViolation(f, "is not valid UTF-8") for f in request.bad_utf8_fields]
                )
            # The parser's words name the internal message type: not for the client.
            raise ValidationError.single("request", "is not a valid message of this method")
        if isinstance(request, Message):
            violations = nul_violations(request)
            if violations:
                raise ValidationError(violations)
