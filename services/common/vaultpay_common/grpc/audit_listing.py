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
    page that reads as "nothing happened". One refusal names the page size and every bad
    time with it; the window is judged once both times are well formed."""
    with InputChecks() as checks:  # in the request's field order
        checks.run(lambda: page_size(request.page_size))
        start = checks.run(lambda: datetime_or_none(request, "start_time"))
        end = checks.run(lambda: datetime_or_none(request, "end_time"))
        checks.run(lambda: _window(request))
    return AuditQuery(
        actor_id=request.actor_id,
        action=request.action,
        target_id=request.target_id,
        start=start.value,
        end=end.value,
    )


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
