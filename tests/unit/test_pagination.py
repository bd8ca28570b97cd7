import base64
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from vaultpay.transfer.v1 import transfer_pb2
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.pagination import (
    MAX_PAGE_SIZE,
    PageScope,
    PageTokens,
    created_id_cursor,
    created_number_cursor,
    page_size,
    paginate,
    sequence_cursor,
    times_checked,
    uuid_cursor,
)
from vaultpay_transfer.domain.model import (
    Counterparty,
    Transaction,
    TransactionCategory,
    TransactionStatus,
    TransactionType,
)
from vaultpay_transfer.entrypoints.servicers import TransferAdminServicer, TransferServicer

TOKENS = PageTokens(secrets.token_bytes(32))
USER = "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e"
OTHER_USER = "5d2e0c4a-7b1f-4e3d-8a9c-6f0e1d2c3b4a"
SCOPE = PageScope(rpc="/vaultpay.test.v1.TestService/ListThings", caller=USER)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_page_token_round_trips_with_the_same_filters() -> None:
    token = TOKENS.encode({"s": 42}, {"role": "ADMIN"}, scope=SCOPE)
    assert TOKENS.decode(token, {"role": "ADMIN"}, scope=SCOPE) == {"s": 42}


def test_page_token_from_other_filters_is_rejected() -> None:
    token = TOKENS.encode({"s": 42}, {"role": "ADMIN"}, scope=SCOPE)
    with pytest.raises(ValidationError) as caught:
        TOKENS.decode(token, {"role": "USER"}, scope=SCOPE)
    assert caught.value.violations[0].field == "page_token"


@pytest.mark.parametrize(
    "elsewhere",
    [
        PageScope(rpc="/vaultpay.test.v1.TestService/ListOtherThings", caller=USER),
        PageScope(rpc=SCOPE.rpc, caller=OTHER_USER),
        PageScope(rpc=SCOPE.rpc, caller=f"service:{USER}"),
    ],
    ids=["another RPC", "another caller", "a service named like the caller"],
)
async def test_a_page_token_replayed_on_another_rpc_or_by_another_caller_is_refused(
    elsewhere: PageScope,
) -> None:
    async def fetch(before: int | None, limit: int) -> Sequence[int]:
        return [r for r in range(10, 0, -1) if before is None or r < before][:limit]

    def page(token: str, scope: PageScope) -> Any:
        return paginate(
            TOKENS,
            page_size=3,
            page_token=token,
            scope=scope,
            filters={"status": "ACTIVE"},
            fetch=fetch,
            cursor_of=lambda r: {"s": r},
            parse=sequence_cursor,
        )

    token = (await page("", SCOPE)).next_page_token
    assert (await page(token, SCOPE)).items == [7, 6, 5]
    with pytest.raises(ValidationError) as caught:
        await page(token, elsewhere)
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_a_forged_position_is_refused_even_with_a_valid_shape() -> None:
    token = TOKENS.encode({"s": 42}, {}, scope=SCOPE)
    body, signature = token.split(".")
    forged_body = TOKENS.encode({"s": 7}, {}, scope=SCOPE).split(".")[0]
    with pytest.raises(ValidationError):
        TOKENS.decode(f"{forged_body}.{signature}", {}, scope=SCOPE)
    other_service = PageTokens(secrets.token_bytes(32))
    with pytest.raises(ValidationError):
        other_service.decode(f"{body}.{signature}", {}, scope=SCOPE)


@pytest.mark.parametrize(
    "garbage", ["not-a-token!!", "a.b.c", "x" * 2000, ".", "e30.AAAA", "e30.\u00e9", "\u00e9.AAAA"]
)
def test_garbage_page_token_is_invalid_argument(garbage: str) -> None:
    with pytest.raises(ValidationError):
        TOKENS.decode(garbage, {}, scope=SCOPE)


def test_empty_page_token_means_first_page() -> None:
    assert TOKENS.decode("", {"a": 1}, scope=SCOPE) is None


def test_page_size_defaults_caps_and_rejects_negative() -> None:
    assert page_size(0) == 50
    assert page_size(10_000) == MAX_PAGE_SIZE
    with pytest.raises(ValidationError):
        page_size(-1)


async def test_paginate_walks_every_row_once_in_pages() -> None:
    rows = list(range(100, 0, -1))  # newest (largest sequence) first

    async def fetch(before: int | None, limit: int) -> Sequence[int]:
        return [r for r in rows if before is None or r < before][:limit]

    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await paginate(
            TOKENS,
            page_size=30,
            page_token=token,
            scope=SCOPE,
            filters={},
            fetch=fetch,
            cursor_of=lambda r: {"s": r},
            parse=sequence_cursor,
        )
        seen += page.items
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == rows
    assert pages == 4


async def test_paginate_refuses_a_signed_but_unparseable_position() -> None:
    async def fetch(after: object, limit: int) -> Sequence[int]:
        raise AssertionError("must not query with a bad position")

    bad = TOKENS.encode({"c": "not a time", "i": "x"}, {}, scope=SCOPE)
    with pytest.raises(ValidationError):
        await paginate(
            TOKENS,
            page_size=10,
            page_token=bad,
            scope=SCOPE,
            filters={},
            fetch=fetch,
            cursor_of=lambda r: {},
            parse=created_id_cursor,
        )


def test_created_id_cursor_needs_an_aware_time() -> None:
    assert created_id_cursor({"c": "2026-01-01T00:00:00+00:00", "i": "VPY-ABC123"}) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        "VPY-ABC123",
    )
    with pytest.raises(ValueError, match="naive"):
        created_id_cursor({"c": "2026-01-01T00:00:00", "i": "x"})


# ----- validly signed tokens carrying bad values (review finding 4) -----------------------
# A page token's signature proves we issued it, not that what it carries is usable: a leaked
# key, an older release or a bug must still end in INVALID_ARGUMENT on page_token, never in a
# value the database cannot take (which answered INTERNAL with a stack trace in the log).

_GOOD_TIME = "2026-01-01T00:00:00+00:00"
_BAD_TIMES: list[object] = [
    "0001-01-01T00:00:00+14:00",  # before year 1 once in UTC: overflows in the driver
    "9999-12-31T23:59:59-14:00",  # after year 9999 once in UTC
    "0001-01-01T00:00:00+00:00",  # representable, but no row of ours is that old
    "5000-01-01T00:00:00+00:00",
    "2026-01-01T00:00:00",  # naive
    "2026-01-01",
    "",
    "not a time",
    1767225600,  # a number, not a time
    None,
    ["2026-01-01T00:00:00+00:00"],
    {"t": 1},
    "2026-01-01T00:00:00+00:00" + " " * 100,
]


async def _first_page_of(position: dict[str, object], parse: Any) -> None:
    async def fetch(after: object, limit: int) -> Sequence[object]:
        raise AssertionError(f"queried the database with {after!r}")

    await paginate(
        TOKENS,
        page_size=10,
        page_token=TOKENS.encode(position, {}, scope=SCOPE),  # type: ignore[arg-type]
        scope=SCOPE,
        filters={},
        fetch=fetch,
        cursor_of=lambda r: {},
        parse=parse,
    )


async def _refused(position: dict[str, object], parse: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        await _first_page_of(position, parse)
    assert [v.field for v in caught.value.violations] == ["page_token"]


@pytest.mark.parametrize("time", _BAD_TIMES, ids=repr)
@pytest.mark.parametrize("parse", [created_id_cursor, uuid_cursor, created_number_cursor])
async def test_signed_positions_with_unusable_times_are_invalid_argument(
    time: object, parse: Any
) -> None:
    await _refused({"c": time, "i": "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e", "n": 1}, parse)


@pytest.mark.parametrize(
    "identifier",
    [
        "{0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e}",
        "urn:uuid:0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e",
        "0b5f7c1e8a3d4f2b9c6e1d2a3b4c5d6e",
        12,
        None,
        ["0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e"],
    ],
    ids=repr,
)
async def test_signed_positions_with_non_canonical_uuids_are_invalid_argument(
    identifier: object,
) -> None:
    await _refused({"c": _GOOD_TIME, "i": identifier}, uuid_cursor)


@pytest.mark.parametrize(
    "identifier",
    ["", "x" * 65, "VPY-AB\u0000C12", "VPY-\nABC12", 7, True, None, {"a": 1}],
    ids=repr,
)
async def test_signed_positions_with_unusable_text_ids_are_invalid_argument(
    identifier: object,
) -> None:
    await _refused({"c": _GOOD_TIME, "i": identifier}, created_id_cursor)


@pytest.mark.parametrize("number", [-1, 2**63, 2**64, True, 1.5, "3", None], ids=repr)
async def test_signed_positions_with_out_of_range_numbers_are_invalid_argument(
    number: object,
) -> None:
    await _refused({"c": _GOOD_TIME, "n": number}, created_number_cursor)


@pytest.mark.parametrize("sequence", [0, -5, 2**63, True, 2.0, "12", None], ids=repr)
async def test_signed_positions_with_bad_sequences_are_invalid_argument(sequence: object) -> None:
    await _refused({"s": sequence}, sequence_cursor)


async def test_a_signed_position_that_is_not_an_object_is_invalid_argument() -> None:
    body = b'{"f":"' + TOKENS._fingerprint(SCOPE, {}).encode() + b'","p":[1,2]}'
    token = f"{_b64(body)}.{TOKENS._sign(body)}"
    with pytest.raises(ValidationError):
        TOKENS.decode(token, {}, scope=SCOPE)


@pytest.mark.parametrize("time", _BAD_TIMES[:4], ids=repr)
async def test_a_services_own_cursor_gets_its_times_checked_first(time: object) -> None:
    def parse(position: Mapping[str, Any]) -> datetime:
        return datetime.fromisoformat(str(position["t"]))  # a lenient parser of a service

    await _refused({"t": time, "h": "0123456789abcdef"}, times_checked(parse, "t"))


async def test_good_positions_still_parse_and_times_come_back_in_utc() -> None:
    kolkata = "2026-01-01T05:30:00+05:30"
    assert uuid_cursor({"c": kolkata, "i": "0B5F7C1E-8A3D-4F2B-9C6E-1D2A3B4C5D6E"}) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e",
    )
    created, number = created_number_cursor({"c": kolkata, "n": 2**63 - 1})
    assert (created, number) == (datetime(2026, 1, 1, tzinfo=UTC), 2**63 - 1)
    assert created.tzinfo is UTC
    assert sequence_cursor({"s": 2**63 - 1}) == 2**63 - 1


# ----- the servicers bind their tokens to the RPC and the caller ----------------------------

_LIST_MINE = "/vaultpay.transfer.v1.TransferService/ListTransactions"
_LIST_ALL = "/vaultpay.transfer.v1.TransferAdminService/AdminListTransactions"


def _transaction(minute: int) -> Transaction:
    at = datetime(2026, 12, 16, 10, minute, tzinfo=UTC)
    return Transaction(
        transaction_id=str(uuid.UUID(int=minute)),
        reference="VP-TXN-ABCD2345",
        request_id="",
        wallet_id="VPY-AB12CD",
        user_id=USER,
        type=TransactionType.CREDIT,
        category=TransactionCategory.TOP_UP,
        status=TransactionStatus.COMPLETED,
        amount_minor=100,
        currency="INR",
        balance_after_minor=100 * minute,
        counterparty=Counterparty(),
        note="",
        original_transaction_id="",
        reversed_amount_minor=0,
        created_at=at,
        completed_at=at,
    )


class _Transactions:
    """Three transactions, newest first, for whoever asks (the scope of a caller is not what
    these tests are about)."""

    rows = [_transaction(3), _transaction(2), _transaction(1)]

    async def _after(self, after: tuple[datetime, str] | None, limit: int) -> list[Transaction]:
        return [t for t in self.rows if after is None or t.created_at < after[0]][:limit]

    async def list_mine(
        self, user_id: str, flt: object, after: tuple[datetime, str] | None, limit: int
    ) -> list[Transaction]:
        return await self._after(after, limit)

    async def list_all(
        self, flt: object, after: tuple[datetime, str] | None, limit: int
    ) -> list[Transaction]:
        return await self._after(after, limit)


@contextmanager
def _calling(method: str, subject: str, role: Role = Role.USER) -> Iterator[None]:
    principal = PRINCIPAL.set(Principal(subject=subject, role=role))
    rpc = METHOD.set(method)
    try:
        yield
    finally:
        METHOD.reset(rpc)
        PRINCIPAL.reset(principal)


async def test_a_listing_token_is_refused_on_another_list_rpc_and_for_another_caller() -> None:
    queries: Any = _Transactions()
    mine = TransferServicer(queries, queries, TOKENS, fingerprint_key=bytes(32))
    every = TransferAdminServicer(queries, queries, TOKENS)
    first = transfer_pb2.ListTransactionsRequest(page_size=1)
    with _calling(_LIST_MINE, USER, Role.ADMIN):
        token = (await mine.ListTransactions(first, queries)).next_page_token
        again = transfer_pb2.ListTransactionsRequest(page_size=1, page_token=token)
        assert len((await mine.ListTransactions(again, queries)).transactions) == 1

    with _calling(_LIST_MINE, OTHER_USER), pytest.raises(ValidationError) as by_another:
        await mine.ListTransactions(again, queries)
    # The same admin, the same filters, on the staff listing of every wallet's transactions.
    replayed = transfer_pb2.AdminListTransactionsRequest(page_size=1, page_token=token)
    with _calling(_LIST_ALL, USER, Role.ADMIN), pytest.raises(ValidationError) as elsewhere:
        await every.AdminListTransactions(replayed, queries)
    for caught in (by_another, elsewhere):
        assert [v.field for v in caught.value.violations] == ["page_token"]
