"""AIP-158 pagination: signed, opaque page tokens and one `paginate()` for every List RPC.

A token carries the keyset position after the last row returned and a fingerprint of the
call it was issued to (its `PageScope`: the RPC and the caller) and of the filters, signed with
HMAC-SHA256 under a key kept outside the database. A client can neither forge a position nor
reuse a token on another List RPC, as another caller or with other filters: each answers
INVALID_ARGUMENT on `page_token`. The position is still parsed like any input: a signature
proves we issued a token, not that a leaked key, an older release or a bug put usable values
in it. The cursor parsers here check type and range of every value (`position_time`,
`position_text`, `position_int`), and a service's own parser can have its times checked by
`times_checked`, so a bad position answers INVALID_ARGUMENT on `page_token`, never a value the
database refuses.

    page = await paginate(
        tokens, page_size=request.page_size, page_token=request.page_token,
        scope=page_scope(),  # vaultpay_common.grpc.convert: this RPC and its caller
        filters={"status": status},
        fetch=lambda after, limit: admin.list_wallets(flt, after, limit, viewer=viewer),
        cursor_of=lambda w: {"c": w.created_at.isoformat(), "i": w.wallet_id},
        parse=created_id_cursor,
    )
    return ListWalletsResponse(wallets=[...page.items], next_page_token=page.next_page_token)

`fetch(after, limit)` returns at most `limit` rows after the position (None: from the start);
paginate asks for one more than the page size to know whether another page exists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from vaultpay_common.errors import ValidationError
from vaultpay_common.ids import parse_uuid

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_POSITION_TIME",
    "MIN_POSITION_TIME",
    "Cursor",
    "Page",
    "PageScope",
    "PageTokens",
    "Slice",
    "SliceOf",
    "created_id_cursor",
    "created_number_cursor",
    "page_size",
    "paginate",
    "position_int",
    "position_text",
    "position_time",
    "sequence_cursor",
    "times_checked",
    "uuid_cursor",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_MAX_TOKEN_CHARS = 1024
# Every row time a position can carry lies in here; outside it a time is forged or broken, and
# near the ends of Python's range it overflows when the driver converts it to UTC.
MIN_POSITION_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_POSITION_TIME = datetime(3000, 1, 1, tzinfo=UTC)
_MAX_TIME_CHARS = 40  # "2026-01-01T00:00:00.000000+05:30" is 32
_INT64_MAX = 2**63 - 1

T = TypeVar("T")
C = TypeVar("C")
T_co = TypeVar("T_co", covariant=True)
Cursor = Mapping[str, str | int]


def page_size(requested: int) -> int:
    """0 means the default; negative is invalid; more than the maximum is capped."""
    if requested < 0:
        raise ValidationError.single("page_size", "must not be negative")
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


_page_size = page_size  # `paginate` takes a keyword of the same name


def _invalid_token(reason: str = "is not a valid page token") -> ValidationError:
    return ValidationError.single("page_token", reason)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class PageScope:
    """The call a token is bound to: the List RPC (its full gRPC method) and the caller (a user
    id, or "service:<client id>"). A token replayed on another List RPC with filters of the same
    shape, or by another caller, is refused even though each fetch re-applies its caller's scope.
    """

    rpc: str
    caller: str


class PageTokens:
    """Issues and checks page tokens under one service's key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the page-token key must be at least 32 bytes")
        self._key = key

    def _fingerprint(self, scope: PageScope, filters: Mapping[str, object]) -> str:
        bound = {"rpc": scope.rpc, "caller": scope.caller, "filters": filters}
        raw = json.dumps(bound, sort_keys=True, default=str).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    def _sign(self, body: bytes) -> str:
        return _b64(hmac.new(self._key, body, hashlib.sha256).digest())

    def encode(self, position: Cursor, filters: Mapping[str, object], *, scope: PageScope) -> str:
        body = json.dumps(
            {"p": dict(position), "f": self._fingerprint(scope, filters)},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        return f"{_b64(body)}.{self._sign(body)}"

    def decode(
        self, token: str, filters: Mapping[str, object], *, scope: PageScope
    ) -> dict[str, Any] | None:
        """The position a token points at, or None for the first page."""
        if not token:
            return None
        # Only ASCII is ours (base64url and a dot); compare_digest raises TypeError on other
        # text, which would answer INTERNAL.
        if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1 or not token.isascii():
            raise _invalid_token()
        encoded, signature = token.split(".")
        try:
            body = _unb64(encoded)
        except (binascii.Error, ValueError) as exc:
            raise _invalid_token() from exc
        if not hmac.compare_digest(signature, self._sign(body)):
            raise _invalid_token()
        try:
            decoded = json.loads(body)
            position, fingerprint = decoded["p"], decoded["f"]
        except (ValueError, KeyError, TypeError) as exc:
            raise _invalid_token() from exc
        if not isinstance(position, dict):
            raise _invalid_token()
        if fingerprint != self._fingerprint(scope, filters):
            raise _invalid_token("was issued for another list, caller or filters")
        return position


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


class Slice(Protocol[T_co]):
    """A page as a use case returns it when it decides "has more" itself."""

    @property
    def items(self) -> Sequence[T_co]: ...
    @property
    def has_more(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class SliceOf(Generic[T]):
    """A ready-made Slice, for adapting a use case's own page type."""

    items: Sequence[T]
    has_more: bool


async def paginate(
    tokens: PageTokens,
    *,
    page_size: int,
    page_token: str,
    scope: PageScope,
    filters: Mapping[str, object],
    cursor_of: Callable[[T], Cursor],
    parse: Callable[[Mapping[str, Any]], C],
    fetch: Callable[[C | None, int], Awaitable[Sequence[T]]] | None = None,
    fetch_slice: Callable[[C | None, int], Awaitable[Slice[T]]] | None = None,
) -> Page[T]:
    """One page of a keyset-paginated list (AIP-158); see the module docstring.

    Give `fetch` (rows after a position, at most `limit`; paginate asks for one more than the
    page to see whether another exists) or `fetch_slice` (a use case that returns its page
    and whether more follow).
    """
    if (fetch is None) == (fetch_slice is None):
        raise TypeError("give exactly one of fetch and fetch_slice")
    limit = _page_size(page_size)
    position = tokens.decode(page_token, filters, scope=scope)
    after: C | None = None
    if position is not None:
        try:
            after = parse(position)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise _invalid_token() from exc
    if fetch is not None:
        rows = list(await fetch(after, limit + 1))
        items, more = rows[:limit], len(rows) > limit
    else:
        assert fetch_slice is not None
        got = await fetch_slice(after, limit)
        items, more = list(got.items), got.has_more
    if not (more and items):
        return Page(items, "")
    return Page(items, tokens.encode(cursor_of(items[-1]), filters, scope=scope))


def position_time(position: Mapping[str, Any], key: str) -> datetime:
    """An ISO 8601 time with a zone, in UTC, within [MIN_POSITION_TIME, MAX_POSITION_TIME)."""
    value = position[key]
    if not isinstance(value, str) or len(value) > _MAX_TIME_CHARS:
        raise TypeError("a position time is ISO 8601 text")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("naive time")
    at = parsed.astimezone(UTC)  # OverflowError near year 1 or 9999
    if not MIN_POSITION_TIME <= at < MAX_POSITION_TIME:
        raise ValueError("time out of range")
    return at


def position_text(position: Mapping[str, Any], key: str, *, max_length: int = 64) -> str:
    """Non-empty printable text (no control characters, which PostgreSQL may refuse)."""
    value = position[key]
    if not isinstance(value, str):
        raise TypeError("position text is a string")
    if not 0 < len(value) <= max_length or not value.isprintable():
        raise ValueError("bad position text")
    return value


def position_int(
    position: Mapping[str, Any], key: str, *, minimum: int = 0, maximum: int = _INT64_MAX
) -> int:
    """An integer (not a bool, float or digit string) within [minimum, maximum] (a BIGINT)."""
    value = position[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("a position number is an integer")
    if not minimum <= value <= maximum:
        raise ValueError("position number out of range")
    return value


def times_checked(
    parse: Callable[[Mapping[str, Any]], C], *keys: str
) -> Callable[[Mapping[str, Any]], C]:
    """`parse` (a service's own cursor parser) run only once the times at `keys` pass
    `position_time`, so whatever it does with them, the database gets a usable time.

        parse=times_checked(NotificationCursor.from_position, "t")
    """

    def checked(position: Mapping[str, Any]) -> C:
        for key in keys:
            position_time(position, key)
        return parse(position)

    return checked


def created_id_cursor(position: Mapping[str, Any]) -> tuple[datetime, str]:
    """A (created_at, id) position: {"c": ISO time with zone, "i": id text}."""
    return position_time(position, "c"), position_text(position, "i")


def uuid_cursor(position: Mapping[str, Any]) -> tuple[datetime, str]:
    """Like created_id_cursor, for UUID ids (in their canonical form)."""
    created_at = position_time(position, "c")
    try:
        return created_at, parse_uuid(position["i"], "page_token")
    except ValidationError as exc:
        raise ValueError("bad id") from exc


def created_number_cursor(position: Mapping[str, Any]) -> tuple[datetime, int]:
    """A (time, number) position: {"c": ISO time with zone, "n": non-negative BIGINT}."""
    return position_time(position, "c"), position_int(position, "n")


def sequence_cursor(position: Mapping[str, Any]) -> int:
    """A positive 63-bit sequence number: {"s": n}."""
    return position_int(position, "s", minimum=1)
