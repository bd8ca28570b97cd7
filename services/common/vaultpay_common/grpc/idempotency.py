"""The idempotency key of the current call (AIP-155), built from its request message.

    key = idempotency_key(request)            # None when the client sent no request_id
    key = idempotency_key(request, required=True)   # money movement: request_id required

The key's scope is (caller, method, request_id); its fingerprint is the SHA-256 of the request
serialised deterministically without its request_id, so a retry with the same id but another
request is told IDEMPOTENCY_KEY_REUSED. Public RPCs have no principal: their caller is
"anonymous", and since the fingerprint covers the credential in the request (a reset token),
only a client holding the same credential can see a replayed reply.
"""

from __future__ import annotations

from google.protobuf.message import Message

from vaultpay_common.context import METHOD, PRINCIPAL
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import IdempotencyKey, canonical_request_id, request_fingerprint

__all__ = ["idempotency_key"]


def _caller() -> str:
    principal = PRINCIPAL.get()
    if principal is None:
        return "anonymous"
    return f"service:{principal.service}" if principal.is_service else principal.subject


def idempotency_key(
    request: Message, *, required: bool = False, unkeyed: tuple[str, ...] = ()
) -> IdempotencyKey | None:
    """The key of this call, or None when the request has no request_id and none is required.
    The fields named in `unkeyed` are left out of the fingerprint with the request_id: a
    retry that differs only in them is the same request."""
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
    return IdempotencyKey(
        caller=_caller(),
        method=METHOD.get(),
        request_id=request_id,
        fingerprint=request_fingerprint(bare.SerializeToString(deterministic=True)),
    )
