"""The listings' filters are checked before the store is asked: one refusal names every
malformed filter, and a filter no row can match is INVALID_ARGUMENT naming the field to change,
not an empty page found by walking the whole table's index (staff listings have no user to
narrow them)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.transfer import fake_transaction
from vaultpay.transfer.v1 import transfer_pb2
from vaultpay_common.audit.model import AuditEntry, StaffViewer
from vaultpay_common.clock import SystemClock
from vaultpay_common.context import Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_transfer.domain.model import (
    Transaction,
    TransactionCategory,
    TransactionStatus,
    TransactionType,
)
from vaultpay_transfer.entrypoints.convert import transaction_filter
from vaultpay_transfer.service_layer.ports import TransactionCursor, TransactionFilter
from vaultpay_transfer.service_layer.queries import TransactionQueries

_STAFF = StaffViewer("staff-1", Role.MODERATOR, "192.0.2.7")


class _ListingStore:
    """Only the listings, recording the filters asked with and the audit rows made; a staff
    listing finds `rows` (at most the limit asked)."""

    def __init__(self, rows: Sequence[Transaction] = ()) -> None:
        self.asked: list[TransactionFilter] = []
        self.audited: list[AuditEntry] = []
        self.rows = list(rows)

    async def list(
        self, flt: TransactionFilter, after: TransactionCursor | None, limit: int
    ) -> Sequence[Transaction]:
        self.asked.append(flt)
        return []

    async def list_audited(
        self,
        flt: TransactionFilter,
        after: TransactionCursor | None,
        limit: int,
        audit: Callable[[Sequence[Transaction]], AuditEntry],
    ) -> Sequence[Transaction]:
        self.asked.append(flt)
        found = self.rows[:limit]
        self.audited.append(audit(found))
        return found


def _queries(rows: Sequence[Transaction] = ()) -> tuple[TransactionQueries, _ListingStore]:
    store = _ListingStore(rows)
    return TransactionQueries(store, SystemClock()), store  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("category", "never"),
    [
        (TransactionCategory.P2P_SEND, TransactionType.CREDIT),
        (TransactionCategory.P2P_RECEIVE, TransactionType.DEBIT),
        (TransactionCategory.TOP_UP, TransactionType.DEBIT),
    ],
)
async def test_a_type_its_category_never_has_is_refused_naming_type(
    category: TransactionCategory, never: TransactionType
) -> None:
    queries, store = _queries()
    flt = TransactionFilter(type=never, category=category)
    for listing in (
        queries.list_all(flt, None, 10, viewer=_STAFF),
        queries.list_mine("u", flt, None, 10),
    ):
        with pytest.raises(ValidationError) as refused:
            await listing
        [violation] = refused.value.violations
        assert violation.field == "type"
        assert category.value in violation.description
    assert store.asked == []


@pytest.mark.parametrize(
    ("category", "type_"),
    [
        (TransactionCategory.P2P_SEND, TransactionType.DEBIT),
        (TransactionCategory.TOP_UP, TransactionType.CREDIT),
        (TransactionCategory.WITHDRAW, TransactionType.DEBIT),
        (TransactionCategory.WITHDRAW, TransactionType.CREDIT),  # a refused payout's return
        (TransactionCategory.REVERSAL, TransactionType.CREDIT),
        (TransactionCategory.REFUND, TransactionType.DEBIT),
        (TransactionCategory.P2P_RECEIVE, None),
        (None, TransactionType.DEBIT),
    ],
)
async def test_a_type_its_category_can_have_is_listed(
    category: TransactionCategory | None, type_: TransactionType | None
) -> None:
    queries, store = _queries()
    await queries.list_all(
        TransactionFilter(type=type_, category=category), None, 10, viewer=_STAFF
    )
    assert [(f.category, f.type) for f in store.asked] == [(category, type_)]


@pytest.mark.parametrize("status", [TransactionStatus.PENDING, TransactionStatus.FAILED])
@pytest.mark.parametrize(
    ("category", "type_"),
    [
        (TransactionCategory.TOP_UP, None),
        (TransactionCategory.P2P_SEND, None),
        (TransactionCategory.REFUND, None),
        (None, TransactionType.CREDIT),
        (TransactionCategory.WITHDRAW, TransactionType.CREDIT),  # a return is COMPLETED
    ],
)
async def test_a_status_only_a_withdrawals_debit_has_is_refused_with_another_kind(
    status: TransactionStatus,
    category: TransactionCategory | None,
    type_: TransactionType | None,
) -> None:
    """Review of 2026-12-05: `status=FAILED&category=TOP_UP` matches no row, and the staff
    listing walked every FAILED row of the table (every payout the bank ever refused) to
    answer an empty page."""
    queries, store = _queries()
    flt = TransactionFilter(status=status, category=category, type=type_)
    for listing in (
        queries.list_all(flt, None, 10, viewer=_STAFF),
        queries.list_mine("u", flt, None, 10),
    ):
        with pytest.raises(ValidationError) as refused:
            await listing
        [violation] = refused.value.violations
        assert violation.field == "status"
        assert "always a WITHDRAW DEBIT" in violation.description
    assert store.asked == []


@pytest.mark.parametrize("status", [TransactionStatus.PENDING, TransactionStatus.FAILED])
@pytest.mark.parametrize(
    ("category", "type_"),
    [
        (None, None),
        (TransactionCategory.WITHDRAW, None),
        (None, TransactionType.DEBIT),
        (TransactionCategory.WITHDRAW, TransactionType.DEBIT),
    ],
)
async def test_a_status_only_a_withdrawals_debit_has_is_listed_with_that_kind(
    status: TransactionStatus,
    category: TransactionCategory | None,
    type_: TransactionType | None,
) -> None:
    queries, store = _queries()
    await queries.list_all(
        TransactionFilter(status=status, category=category, type=type_), None, 10, viewer=_STAFF
    )
    assert [(f.status, f.category, f.type) for f in store.asked] == [(status, category, type_)]


async def test_an_inverted_window_is_refused_naming_end_time() -> None:
    queries, store = _queries()
    start = datetime(2026, 12, 3, tzinfo=UTC)
    for end in (start, start - timedelta(seconds=1)):
        with pytest.raises(ValidationError) as refused:
            await queries.list_all(TransactionFilter(start=start, end=end), None, 10, viewer=_STAFF)
        assert [v.field for v in refused.value.violations] == ["end_time"]
    assert store.asked == []


def test_one_refusal_names_every_malformed_filter_of_a_staff_listing() -> None:
    request = transfer_pb2.AdminListTransactionsRequest(
        type=transfer_pb2.TransactionType.ValueType(99),  # numbers no enum value has
        category=transfer_pb2.TransactionCategory.ValueType(98),
        status=transfer_pb2.TransactionStatus.ValueType(97),
        wallet_id="not a wallet",
    )
    request.end_time.seconds = 10**12  # past year 9999
    with pytest.raises(ValidationError) as refused:
        transaction_filter(request)
    assert sorted(v.field for v in refused.value.violations) == [
        "category",
        "end_time",
        "status",
        "type",
        "wallet_id",
    ]


def test_a_users_listing_reads_its_filters_and_has_no_staff_ones() -> None:
    request = transfer_pb2.ListTransactionsRequest(
        type=transfer_pb2.TRANSACTION_TYPE_DEBIT,
        category=transfer_pb2.TRANSACTION_CATEGORY_P2P_SEND,
    )
    request.start_time.seconds = 1_764_720_000
    flt = transaction_filter(request, user_id="u")
    assert (flt.user_id, flt.type, flt.category, flt.wallet_id, flt.status, flt.end) == (
        "u",
        TransactionType.DEBIT,
        TransactionCategory.P2P_SEND,
        "",
        None,
        None,
    )
    assert flt.start == datetime.fromtimestamp(1_764_720_000, UTC)


async def test_the_staff_listing_is_of_every_user_and_a_users_of_that_user_only() -> None:
    """user_id None is every user (the staff listing); a user's listing, even with an empty
    id, is that user's only (review of 2026-12-04: "" used to mean every user)."""
    queries, store = _queries()
    staff = transaction_filter(transfer_pb2.AdminListTransactionsRequest(wallet_id="VPY-AB12CD"))
    assert staff.user_id is None
    await queries.list_all(staff, None, 10, viewer=_STAFF)
    await queries.list_mine(
        "", transaction_filter(transfer_pb2.ListTransactionsRequest()), None, 10
    )
    assert [f.user_id for f in store.asked] == [None, ""]


def test_one_refusal_names_the_page_size_and_the_filters_no_row_can_match() -> None:
    """Review of 2026-12-04 (third): a bad page size used to hide an inverted window, and an
    unmatchable type and category were named only once the window was fixed: one round trip
    per problem."""
    users = transfer_pb2.ListTransactionsRequest(
        page_size=-5,
        type=transfer_pb2.TRANSACTION_TYPE_DEBIT,
        category=transfer_pb2.TRANSACTION_CATEGORY_TOP_UP,
    )
    users.start_time.seconds, users.end_time.seconds = 2_000, 1_000
    with pytest.raises(ValidationError) as refused:
        transaction_filter(users, user_id="u")
    assert [v.field for v in refused.value.violations] == ["page_size", "end_time", "type"]

    staff = transfer_pb2.AdminListTransactionsRequest(page_size=-1, wallet_id="not a wallet")
    staff.start_time.seconds, staff.end_time.seconds = 2_000, 2_000
    with pytest.raises(ValidationError) as refused:
        transaction_filter(staff)
    # A malformed filter is named; the window is judged once every filter is well formed.
    assert [v.field for v in refused.value.violations] == ["page_size", "wallet_id"]


def test_a_well_formed_listing_with_an_inverted_window_names_only_end_time() -> None:
    request = transfer_pb2.AdminListTransactionsRequest(page_size=10)
    request.start_time.seconds, request.end_time.seconds = 2_000, 1_000
    with pytest.raises(ValidationError) as refused:
        transaction_filter(request)
    assert [v.field for v in refused.value.violations] == ["end_time"]


async def test_a_staff_page_is_audited_with_its_viewer_filters_and_ids_only() -> None:
    """Review of 2026-12-04: AdminListTransactions showed anyone's amounts, balances and
    counterparties and left no trace; every other staff read of users' data is audited."""
    rows = [
        fake_transaction(
            "VPY-AB12CD",
            "u-1",
            IdempotencyKey("c", "m", str(uuid.uuid4()), "0" * 64),
            100 + i,
            category,
        )
        for i, category in enumerate([TransactionCategory.P2P_SEND] * 3)
    ]
    queries, store = _queries(rows)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    flt = TransactionFilter(wallet_id="VPY-AB12CD", status=TransactionStatus.COMPLETED, start=start)

    first = await queries.list_all(flt, None, 2, viewer=_STAFF)
    later = await queries.list_all(flt, (start, rows[0].transaction_id), 5, viewer=_STAFF)

    assert [t.transaction_id for t in first.items] == [t.transaction_id for t in rows[:2]]
    assert first.has_more and not later.has_more
    page, next_page = store.audited
    assert (page.action, page.actor_id, page.actor_role) == (
        "transactions.listed",
        "staff-1",
        "MODERATOR",
    )
    assert page.details == {
        "wallet_id": "VPY-AB12CD",
        "status": "COMPLETED",
        "start": start.isoformat(),
        "continued": "false",
        "count": "2",
        "transaction_ids": ",".join(t.transaction_id for t in rows[:2]),
        "ip": "192.0.2.7",
    }, "the page shown, not the row read to see whether more follow"
    assert next_page.details["continued"] == "true"
    assert next_page.details["count"] == "3"
    assert not any(str(t.amount_minor) in page.details.values() for t in rows)
