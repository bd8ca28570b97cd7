"""Idempotency keys, their errors and the ports the service layer is written against.

A state-changing RPC carries a client-generated `request_id`. The scope of that id is
(caller, method, request_id); the fingerprint is a hash of the rest of the request, so the
same key sent with a different request is told apart from a genuine retry:

    key = IdempotencyKey.for_request(
        caller=principal.subject,
        method="/vaultpay.wallet.v1.WalletService/SetPin",
        request_id=request.request_id,
        payload=request_without_id.SerializeToString(deterministic=True),
    )

Pure Python: no database, no gRPC.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol, TypeVar

from vaultpay_common.errors import AbortedError, FailedPreconditionError, ValidationError
from vaultpay_common.ids import parse_uuid

__all__ = [
    "IdempotencyKey",
    "IdempotencyKeyInUseError",
    "IdempotencyKeyReusedError",
    "IdempotencyRecords",
    "ReplyCodec",
    "canonical_request_id",
    "request_fingerprint",
]

T = TypeVar("T")

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_NIL_UUID = "00000000-0000-0000-0000-000000000000"


class IdempotencyKeyReusedError(FailedPreconditionError):
    """The request id was already used by this caller for a different request."""

    reason = "IDEMPOTENCY_KEY_REUSED"
    default_message = "this request_id was already used for a different request"


class IdempotencyKeyInUseError(AbortedError):
    """A call with the same request id is still running; retrying later gets its answer."""

    reason = "IDEMPOTENCY_KEY_IN_USE"
    default_message = "a request with this request_id is still in progress, retry later"


def request_fingerprint(payload: bytes) -> str:
    """Hex SHA-256 of a request serialised without its request_id.

    For protobuf requests: copy the message, clear `request_id`, and serialise with
    `SerializeToString(deterministic=True)` (stable for one build, which is all the 24 h
    retention needs).
    """
    return hashlib.sha256(payload).hexdigest()


def canonical_request_id(request_id: str) -> str:
    """`request_id` in lower case, or INVALID_ARGUMENT: the strict parser of every id
    (`ids.parse_uuid`), so the id a client sent is the one GetTransactionByRequestId and the
    replies show; `{...}`, `urn:uuid:` and unhyphenated spellings are refused. So is the nil
    UUID: it is no client's fresh id but a placeholder a buggy client sends every time, whose
    second request would be IDEMPOTENCY_KEY_REUSED (or, the same again, a silent replay)."""
    value = parse_uuid(request_id, "request_id")
    if value == _NIL_UUID:
        raise ValidationError.single("request_id", "must be a new random UUID, not the nil UUID")
    return value


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """Who asked (caller), for what (method), under which id, with which request.

    `request_id` is lowered; anything but the canonical hyphenated UUID text raises
    `ValidationError` on the field `request_id`.
    """

    caller: str  # principal: a user id or "service:<name>"
    method: str  # full gRPC method, e.g. "/vaultpay.wallet.v1.WalletService/SetPin"
    request_id: str  # canonical lower-case UUID text
    fingerprint: str  # hex SHA-256 of the request without its request_id

    def __post_init__(self) -> None:
        if not self.caller:
            raise ValueError("an idempotency key needs a caller")
        if not self.method:
            raise ValueError("an idempotency key needs a method")
        if not _FINGERPRINT.fullmatch(self.fingerprint):
            raise ValueError("the fingerprint must be a lower-case hex SHA-256")
        canonical = canonical_request_id(self.request_id)
        if canonical != self.request_id:
            object.__setattr__(self, "request_id", canonical)

    @classmethod
    def for_request(
        cls, *, caller: str, method: str, request_id: str, payload: bytes
    ) -> IdempotencyKey:
        """The key of one request; `payload` is the request serialised without request_id."""
        return cls(caller, method, request_id, request_fingerprint(payload))


class IdempotencyRecords(Protocol):
    """The idempotency table, seen from inside one unit of work's transaction."""

    async def claim(self, key: IdempotencyKey) -> bytes | None:
        """None: new, and this transaction now holds the key until it ends. bytes: the stored
        reply of an earlier completed call with the same fingerprint. Raises
        IdempotencyKeyReusedError / IdempotencyKeyInUseError."""
        ...

    async def save(self, key: IdempotencyKey, reply: bytes) -> None:
        """Stores the reply of a claimed key; kept only if the transaction commits."""
        ...


class ReplyCodec(Protocol[T]):
    """Turns a handler's result into the bytes stored with the key, and back."""

    def dumps(self, value: T) -> bytes: ...

    def loads(self, data: bytes) -> T: ...
