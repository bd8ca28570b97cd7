"""Small proto <-> Python conversions every servicer needs."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from vaultpay.type.v1 import audit_pb2
from vaultpay_common.audit import AuditQuery, AuditRecord
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import (
    InsufficientPermissionsError,
    UnauthenticatedError,
    ValidationError,
)
from vaultpay_common.pagination import PageScope

__all__ = [
    "audit_event_to_proto",
    "audit_filters",
    "current_principal",
    "current_staff",
    "datetime_or_none",
    "duration",
    "page_scope",
    "role_from_proto",
    "timestamp",
]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def duration(value: timedelta) -> Duration:
    message = Duration()
    message.FromTimedelta(value)
    return message


def timestamp(value: datetime) -> Timestamp:
    """`value` as a Timestamp (a naive datetime is local time, as `astimezone` reads it).

    Plain arithmetic: `Timestamp.FromDatetime` costs ~4x more, and a read such as GetMyWallet
    converts about ten datetimes.
    """
    if value.tzinfo is None:
        value = value.astimezone(UTC)
    since = value - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


class _WithOptionalFields(Protocol):
    """A request message (or a protocol describing one) with optional fields."""

    def HasField(self, field_name: Any, /) -> bool: ...  # noqa: N802 (protobuf's name)


def datetime_or_none(request: _WithOptionalFields, field: str) -> datetime | None:
    """The request's optional Timestamp `field`, None when unset; one outside what a
    Timestamp may hold (years 1 to 9999, nanos 0 to 999,999,999: JSON's `startTime.seconds`
    reaches past Envoy's own check) is INVALID_ARGUMENT on `field`.

    PostgreSQL keeps microseconds: a time between two is rounded up to the next (protobuf
    truncates), which keeps every [start, end) window exact at the database's precision (a
    row at T+1 µs is before an end of T+1.5 µs; one at T is not at or after a start of
    T+0.5 µs), and delays a freeze's end by less than a microsecond. A window inside one
    microsecond is then empty, refused as an end not after its start."""
    if not request.HasField(field):
        return None
    value: Timestamp = getattr(request, field)
    try:
        moment = value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise ValidationError.single(
            field, "is not a valid time (years 1 to 9999, nanos 0 to 999999999)"
        ) from exc
    if value.nanos % 1000:
        with contextlib.suppress(OverflowError):  # the last microsecond of year 9999 stays
            moment += timedelta(microseconds=1)
    return moment


def role_from_proto(value: int, field: str = "role") -> Role | None:
    """ROLE_UNSPECIFIED (0) -> None; unknown numbers are invalid input."""
    if value == 0:
        return None
    try:
        return Role(value)
    except ValueError as exc:
        raise ValidationError.single(field, "is not a known role") from exc


def current_principal() -> Principal:
    """The authenticated caller; the auth interceptor guarantees one on non-public RPCs."""
    principal = PRINCIPAL.get()
    if principal is None:
        raise UnauthenticatedError()
    return principal


def current_staff() -> tuple[str, Role]:
    """The calling staff member's user id and role (the staff RPCs' access rules admit user
    tokens only, each with a role; anything else is refused as auth's interceptor would)."""
    principal = current_principal()
    if principal.role is None:
        raise InsufficientPermissionsError("a staff member's access token is required")
    return principal.user_id, principal.role


def page_scope() -> PageScope:
    """The current List call, as its page tokens are bound to it: the RPC and the caller."""
    principal = current_principal()
    caller = f"service:{principal.service}" if principal.is_service else principal.subject
    return PageScope(rpc=METHOD.get(), caller=caller)


def audit_event_to_proto(record: AuditRecord) -> audit_pb2.AuditEvent:
    event = audit_pb2.AuditEvent(
        sequence=record.sequence,
        create_time=timestamp(record.created_at),
        actor_id=record.actor_id,
        actor_role=record.actor_role,
        action=record.action,
        target_type=record.target_type,
        target_id=record.target_id,
        request_id=record.request_id,
        row_hash=record.row_hash,
    )
    event.details.update(record.details)
    return event


def audit_filters(query: AuditQuery) -> dict[str, object]:
    """The filters of an audit listing, as its page tokens fingerprint them."""
    return {
        "actor": query.actor_id,
        "action": query.action,
        "target": query.target_id,
        "start": query.start,
        "end": query.end,
    }
