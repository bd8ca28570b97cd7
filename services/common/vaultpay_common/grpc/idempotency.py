"""The idempotency key of the current call (AIP-155), built from its request message.

    key = idempotency_key(request)            # None when the client sent no request_id
    key = idempotency_key(request, required=True)   # money movement: request_id required

The key's scope is (caller, method, request_id); its fingerprint is the SHA-256 of the request
serialised deterministically without its request_id, so a retry with the same id but another
request is told IDEMPOTENCY_KEY_REUSED. Public RPCs have no principal: their caller is
"anonymous", and since the fingerprint covers the credential in the request (a reset token),
only a client holding the same credential can see a replayed reply.

Fingerprints are stored (idempotency_records) next to replies that show most of the request,
so a field with few values would be read back from a bare hash by trying each value:

    key = idempotency_key(request, secret=("pin",), secret_key=fingerprint_key)

`secret` fields (a PIN: 10,000 values; an account or document number: its mask gives half of
it away) enter the fingerprint as an HMAC under a service key kept outside the database
(`Settings.derived_key("request-fingerprint")`). A field that must not be compared at all
before it is checked is `unkeyed` instead: SendMoney's PIN (a replay that compared it would
tell a PIN guess right or wrong without asking wallet, whose lockout counts the attempts).

An id the service reads in one spelling (wallet ids are case-insensitive on input, UUIDs
accept upper-case hex) enters the fingerprint in that spelling, so a retry that spells it
otherwise is the same request, not IDEMPOTENCY_KEY_REUSED:

    key = idempotency_key(request, canonical={"recipient_wallet_id": canonical_wallet_id})

A `canonical` function gets every non-empty value, valid or not (an invalid id is refused by
the use case as before), so it only respells: upper-cases, lowers, strips.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

from google.protobuf.message import Message

from vaultpay_common.context import METHOD, PRINCIPAL
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import IdempotencyKey, canonical_request_id, request_fingerprint

__all__ = ["idempotency_caller", "idempotency_key"]


def idempotency_caller() -> str:
    """Whose keys the current call's are: the user's subject, or `service:<name>`."""
    principal = PRINCIPAL.get()
    if principal is None:
        return "anonymous"
    return f"service:{principal.service}" if principal.is_service else principal.subject


def idempotency_key(
    request: Message,
    *,
    required: bool = False,
    unkeyed: tuple[str, ...] = (),
    secret: tuple[str, ...] = (),
    secret_key: bytes | None = None,
    canonical: Mapping[str, Callable[[str], str]] | None = None,
) -> IdempotencyKey | None:
    """The key of this call, or None when the request has no request_id and none is required.
    The fields named in `unkeyed` are left out of the fingerprint with the request_id: a
    retry that differs only in them is the same request. The string fields named in `secret`
    (dotted paths into sub-messages) enter it as HMAC-SHA256 under `secret_key`; those named
    in `canonical` enter it as their function respells them."""
    raw = str(getattr(request, "request_id", ""))
    if not raw:
        if required:
            raise ValidationError.single("request_id", "is required")
        return None
    request_id = canonical_request_id(raw)
    bare = type(request)()
    bare.CopyFrom(request)
    for name in ("request_id", *unkeyed):
        bare.ClearField(name)
    for path, respell in (canonical or {}).items():
        _rewrite(bare, path, respell)
    if secret:
        if secret_key is None or len(secret_key) < 32:
            raise ValueError("secret fields need a fingerprint key of at least 32 bytes")
        key = secret_key
        for path in secret:
            _rewrite(bare, path, lambda value: _keyed(value, key))
    return IdempotencyKey(
        caller=idempotency_caller(),
        method=METHOD.get(),
        request_id=request_id,
        fingerprint=request_fingerprint(bare.SerializeToString(deterministic=True)),
    )


def _keyed(value: str, key: bytes) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _rewrite(message: Message, path: str, rewrite: Callable[[str], str]) -> None:
    """Replaces the non-empty string field at `path` (dotted into sub-messages) by its rewrite."""
    *parents, name = path.split(".")
    for parent in parents:
        if not message.HasField(parent):
            return
        message = getattr(message, parent)
    value = getattr(message, name)
    if not isinstance(value, str):
        raise TypeError(f"field {path} is not a string field")
    if value:
        setattr(message, name, rewrite(value))
