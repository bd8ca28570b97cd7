"""One audit listing for every service's staff `List...AuditEvents` RPC.

The request messages of auth and wallet differ in name only; both carry the same filter and
page fields, which `AuditListRequest` describes. Both services audit the page they show
(`audit_events.listed`), so their use cases are given as `fetch_slice`: asked for the page
itself, the row they write counts the events shown, not the one more that tells whether
another page follows:

    events, token = await list_audit_events(
        self._tokens, request, fetch_slice=lambda q, before, n: self._audit.list(q, before, n, viewer=v)
    )

`fetch` (a plain read of `limit` + 1 rows) serves a listing that audits nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from vaultpay.type.v1 import audit_pb2
from vaultpay_common.audit import AuditQuery, AuditRecord
from vaultpay_common.errors import ValidationError
from vaultpay_common.grpc.convert import (
    audit_event_to_proto,
    audit_filters,
    datetime_or_none,
    page_scope,
)
from vaultpay_common.ids import parse_uuid
from vaultpay_common.input_checks import InputChecks
from vaultpay_common.pagination import PageTokens, Slice, page_size, paginate, sequence_cursor

__all__ = [
    "AuditListRequest",
    "FetchAuditEvents",
    "FetchAuditSlice",
    "audit_query",
    "list_audit_events",
]

FetchAuditEvents = Callable[[AuditQuery, int | None, int], Awaitable[Sequence[AuditRecord]]]
# A page of at most `limit` events and whether more follow (`paginate`'s `fetch_slice`).
FetchAuditSlice = Callable[[AuditQuery, int | None, int], Awaitable[Slice[AuditRecord]]]


class AuditListRequest(Protocol):
    """The fields every List...AuditEvents request message has."""

    @property
    def page_size(self) -> int: ...
    @property
    def page_token(self) -> str: ...
    @property
    def actor_id(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def target_id(self) -> str: ...
    @property
    def start_time(self) -> Timestamp: ...
    @property
    def end_time(self) -> Timestamp: ...
    def HasField(self, field_name: Literal["start_time", "end_time"]) -> bool: ...  # noqa: N802


def audit_query(request: AuditListRequest) -> AuditQuery:
    """The filters of a listing. The range is [start_time, end_time): an end at or before the
    start is INVALID_ARGUMENT naming end_time (as transfer's listings answer), not an empty
    page that reads as "nothing happened". One refusal names the page size, every bad filter
    and every bad time with it; the window is judged once both times are well formed.

    The filters are kept in the listing's own audit row (`audit_events.listed`), which nothing
    deletes: each is held to the shapes the log's columns hold (`_actor_filter`,
    `_action_filter`, `_target_filter`), so a filter can neither grow the log by a megabyte a
    call nor put bidi or line-break characters in front of whoever reads it."""
    with InputChecks() as checks:  # in the request's field order
        checks.run(lambda: page_size(request.page_size))
        actor_id = checks.run(lambda: _actor_filter(request.actor_id))
        action = checks.run(lambda: _action_filter(request.action))
        target_id = checks.run(lambda: _target_filter(request.target_id))
        start = checks.run(lambda: datetime_or_none(request, "start_time"))
        end = checks.run(lambda: datetime_or_none(request, "end_time"))
        checks.run(lambda: _window(request))
    return AuditQuery(
        actor_id=actor_id.value,
        action=action.value,
        target_id=target_id.value,
        start=start.value,
        end=end.value,
    )


# The actors an audit row names (AuditLog.append, the entries that name their own): a user
# (their id), "service:<client id>", the CLIs' "operator:<login>", "system" (no principal:
# sweeps, wallet's own upkeep) and auth's "anonymous" (a refused sign-in).
_ACTOR_WORDS = frozenset({"system", "anonymous"})
_ACTOR_PREFIXES = ("service:", "operator:")
MAX_FILTER_LENGTH = 64  # a name after its prefix, an action, a target id
_ACTOR_SHAPES = "must be a user id (a UUID), service:<name>, operator:<login>, system or anonymous"
# Actions are dotted lower-case names: "user.role_changed", "audit_events.listed".
_ACTION = re.compile(rf"[a-z0-9_.]{{1,{MAX_FILTER_LENGTH}}}")


def _actor_filter(raw: str) -> str:
    """ "" (any actor), or an actor id of a shape audit rows hold; a user id in its canonical
    (lower-case) spelling, as rows hold it."""
    if not raw or raw in _ACTOR_WORDS:
        return raw
    prefix = next((p for p in _ACTOR_PREFIXES if raw.startswith(p)), None)
    if prefix is not None:
        name = raw.removeprefix(prefix)
        if _is_name(name):
            return raw
        raise ValidationError.single("actor_id", _ACTOR_SHAPES)
    try:
        return parse_uuid(raw, "actor_id")
    except ValidationError:
        raise ValidationError.single("actor_id", _ACTOR_SHAPES) from None


def _is_name(name: str) -> bool:
    """A service's client id or an operator's login: 1 to 64 visible characters."""
    return (
        0 < len(name) <= MAX_FILTER_LENGTH
        and name.isprintable()
        and not any(ch.isspace() for ch in name)
    )


def _action_filter(raw: str) -> str:
    if raw and not _ACTION.fullmatch(raw):
        raise ValidationError.single(
            "action",
            f"must be at most {MAX_FILTER_LENGTH} characters of a-z, 0-9, _ and . "
            '(as "user.role_changed")',
        )
    return raw


def _target_filter(raw: str) -> str:
    """ "" (any target), or at most 64 printable characters: every target id the log holds
    (user, wallet and submission ids, setting and key ids, 64-hex email fingerprints) fits,
    and no control, bidi or line-separator character (`str.isprintable`) gets through."""
    if len(raw) > MAX_FILTER_LENGTH:
        raise ValidationError.single("target_id", f"must be at most {MAX_FILTER_LENGTH} characters")
    if not raw.isprintable():
        raise ValidationError.single(
            "target_id", "must not contain control, formatting or line-break characters"
        )
    return raw


def _window(request: AuditListRequest) -> None:
    """end_time after start_time, when both are given and well formed (a malformed one is
    named by its own check)."""
    try:
        start = datetime_or_none(request, "start_time")
        end = datetime_or_none(request, "end_time")
    except ValidationError:
        return
    if start is not None and end is not None and end <= start:
        raise ValidationError.single("end_time", "must be after the start time")


async def list_audit_events(
    tokens: PageTokens,
    request: AuditListRequest,
    fetch: FetchAuditEvents | None = None,
    *,
    fetch_slice: FetchAuditSlice | None = None,
) -> tuple[list[audit_pb2.AuditEvent], str]:
    """One page of audit events, newest first, and the token of the next page ("" at the end).
    Give `fetch` or `fetch_slice`, as to `paginate`."""
    query = audit_query(request)
    page = await paginate(
        tokens,
        page_size=request.page_size,
        page_token=request.page_token,
        scope=page_scope(),
        filters=audit_filters(query),
        fetch=None if fetch is None else (lambda before, limit: fetch(query, before, limit)),
        fetch_slice=(
            None
            if fetch_slice is None
            else (lambda before, limit: fetch_slice(query, before, limit))
        ),
        cursor_of=lambda e: {"s": e.sequence},
        parse=sequence_cursor,
    )
    return [audit_event_to_proto(e) for e in page.items], page.next_page_token
