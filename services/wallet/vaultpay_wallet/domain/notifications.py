"""Notifications: a user's inbox, its validation rules and its errors. Pure Python.

A notification is created once per event: the producer's event id is its *dedupe key*
(unique per user), so an at-least-once relay that delivers an event twice creates one row.

    note = new_notification(
        notification_id=str(uuid.uuid4()), user_id=user_id, kind="MONEY_RECEIVED",
        title="You received ₹250.00", body="From VPY-7K3M9Q", now=clock.now(),
    )

Titles are one line (no control characters); bodies may hold newlines and tabs. Both are
bounded so a whole notification fits a PostgreSQL NOTIFY payload (8000 bytes) for fan-out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from vaultpay_common.errors import (
    AbortedError,
    DomainError,
    ErrorKind,
    FieldViolation,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from vaultpay_common.text import has_control_characters

__all__ = [
    "BODY_MAX_LENGTH",
    "DEDUPE_KEY_MAX_LENGTH",
    "TITLE_MAX_LENGTH",
    "Notification",
    "NotificationCursor",
    "NotificationKind",
    "NotificationNotFoundError",
    "NotificationStreamInterruptedError",
    "NotificationStreamOverflowError",
    "TooManyStreamsError",
    "TooManyStreamsInProcessError",
    "canonical_uuid",
    "check_dedupe_key",
    "new_notification",
    "parse_notification_kind",
]

TITLE_MAX_LENGTH = 120
BODY_MAX_LENGTH = 1000
DEDUPE_KEY_MAX_LENGTH = 200
_BODY_CONTROLS_ALLOWED = "\n\t"


class NotificationKind(Enum):
    """What a notification is about (the proto's NotificationKind without its prefix)."""

    MONEY_RECEIVED = "MONEY_RECEIVED"
    MONEY_SENT = "MONEY_SENT"
    TOP_UP = "TOP_UP"
    WITHDRAWAL = "WITHDRAWAL"
    REFUND = "REFUND"
    DISPUTE = "DISPUTE"
    KYC = "KYC"
    WALLET_STATUS = "WALLET_STATUS"
    SECURITY = "SECURITY"


class NotificationNotFoundError(NotFoundError):
    """A missing notification, or another user's (indistinguishable on purpose)."""

    reason = "NOTIFICATION_NOT_FOUND"
    default_message = "no such notification"


class TooManyStreamsError(DomainError):
    """The user already has the maximum number of open WatchNotifications streams."""

    kind = ErrorKind.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_STREAMS"
    default_message = "too many open notification streams for this user; close one first"


class TooManyStreamsInProcessError(DomainError):
    """The wallet process serving this call holds its maximum of WatchNotifications streams,
    whoever opened them. Not the caller's doing: retrying after a pause may land on another
    replica or find a stream closed here (RetryInfo says when)."""

    kind = ErrorKind.RESOURCE_EXHAUSTED
    reason = "WATCH_CAPACITY_REACHED"
    default_message = (
        "this server holds as many notification streams as it can; retry later (another"
        " replica may take the stream)"
    )
    retry_after_seconds = 5


class NotificationStreamOverflowError(AbortedError):
    """The watcher read too slowly and its buffer filled; re-open the stream (the first
    message carries the unread count) and re-list to catch up. Nothing is lost: every
    notification is in the inbox."""

    reason = "NOTIFICATION_STREAM_OVERFLOW"
    default_message = "the notification stream fell behind; re-open it and list to catch up"


class NotificationStreamInterruptedError(UnavailableError):
    """The server lost its feed of new notifications (e.g. a database reconnect), so the
    stream could have missed some; re-open it."""

    reason = "NOTIFICATION_STREAM_INTERRUPTED"
    default_message = "the notification stream was interrupted; re-open it"


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: str
    user_id: str
    kind: NotificationKind
    title: str
    body: str
    read: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NotificationCursor:
    """Keyset position of ListNotifications: the last item returned (newest first).

    The entrypoint turns it into an opaque page token with `position()` and back with
    `from_position()`; a malformed position answers INVALID_ARGUMENT on `page_token`.
    """

    created_at: datetime
    notification_id: str

    @classmethod
    def after(cls, note: Notification) -> NotificationCursor:
        return cls(note.created_at, note.notification_id)

    def position(self) -> dict[str, str]:
        return {"t": self.created_at.isoformat(), "id": self.notification_id}

    @classmethod
    def from_position(cls, position: Mapping[str, Any]) -> NotificationCursor:
        try:
            created_at = datetime.fromisoformat(str(position["t"]))
            notification_id = str(uuid.UUID(str(position["id"])))
        except (KeyError, ValueError) as exc:
            raise ValidationError.single("page_token", "is not a valid page token") from exc
        if created_at.tzinfo is None:
            raise ValidationError.single("page_token", "is not a valid page token")
        return cls(created_at, notification_id)


def canonical_uuid(value: str, field: str) -> str:
    """The lower-case hyphenated form of a UUID, or INVALID_ARGUMENT on `field`."""
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        raise ValidationError.single(field, "must be a UUID") from None


def parse_notification_kind(value: NotificationKind | str) -> NotificationKind:
    """Accepts a member, its name, or the proto enum name (`NOTIFICATION_KIND_…`)."""
    if isinstance(value, NotificationKind):
        return value
    name = value.strip().upper().removeprefix("NOTIFICATION_KIND_")
    try:
        return NotificationKind[name]
    except KeyError:
        raise ValidationError.single("kind", "must be a known notification kind") from None


def _text_violations(title: str, body: str) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not title:
        violations.append(FieldViolation("title", "is required"))
    elif len(title) > TITLE_MAX_LENGTH:
        violations.append(FieldViolation("title", f"must be at most {TITLE_MAX_LENGTH} characters"))
    elif has_control_characters(title):
        violations.append(FieldViolation("title", "must be one line without control characters"))
    if len(body) > BODY_MAX_LENGTH:
        violations.append(FieldViolation("body", f"must be at most {BODY_MAX_LENGTH} characters"))
    elif has_control_characters(body, allowed=_BODY_CONTROLS_ALLOWED):
        violations.append(FieldViolation("body", "must not contain control characters"))
    return violations


def check_dedupe_key(value: str, field: str = "request_id") -> str:
    """An event id (any printable text up to 200 characters) that makes creation idempotent."""
    key = value.strip()
    if not key:
        raise ValidationError.single(field, "is required")
    if len(key) > DEDUPE_KEY_MAX_LENGTH or has_control_characters(key):
        raise ValidationError.single(
            field, f"must be printable text of at most {DEDUPE_KEY_MAX_LENGTH} characters"
        )
    return key


def new_notification(
    *,
    notification_id: str,
    user_id: str,
    kind: NotificationKind | str,
    title: str,
    body: str,
    now: datetime,
) -> Notification:
    """A validated, unread notification; every bad field is reported at once."""
    violations: list[FieldViolation] = []
    try:
        user_id = canonical_uuid(user_id, "user_id")
    except ValidationError as exc:
        violations += exc.violations
    try:
        kind = parse_notification_kind(kind)
    except ValidationError as exc:
        violations += exc.violations
    title = title.strip()
    violations += _text_violations(title, body)
    if violations:
        raise ValidationError(violations)
    assert isinstance(kind, NotificationKind)
    return Notification(notification_id, user_id, kind, title, body, False, now)
