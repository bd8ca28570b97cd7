"""The listings' filters are checked before the store is asked: a filter no row can match is
INVALID_ARGUMENT naming the field to change, not an empty page found by walking the whole
table's index (staff listings have no user to narrow them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from vaultpay_common.clock import SystemClock
from vaultpay_common.errors import ValidationError
from vaultpay_transfer.domain.model import (
    Transaction,
    TransactionCategory,
    TransactionType,
)
from vaultpay_transfer.service_layer.ports import TransactionCursor, TransactionFilter
from vaultpay_transfer.service_layer.queries import TransactionQueries


class _ListingStore:
    """Only `list`, recording the filters it was asked with."""

    def __init__(self) -> None:
        self.asked: list[TransactionFilter] = []

    async def list(
        self, flt: TransactionFilter, after: TransactionCursor | None, limit: int
    ) -> Sequence[Transaction]:
        self.asked.append(flt)
        return []


def _queries() -> tuple[TransactionQueries, _ListingStore]:
    store = _ListingStore()
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
    for listing in (queries.list_all(flt, None, 10), queries.list_mine("u", flt, None, 10)):
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
    await queries.list_all(TransactionFilter(type=type_, category=category), None, 10)
    assert [(f.category, f.type) for f in store.asked] == [(category, type_)]


async def test_an_inverted_window_is_refused_naming_end_time() -> None:
    queries, store = _queries()
    start = datetime(2026, 12, 3, tzinfo=UTC)
    for end in (start, start - timedelta(seconds=1)):
        with pytest.raises(ValidationError) as refused:
            await queries.list_all(TransactionFilter(start=start, end=end), None, 10)
        assert [v.field for v in refused.value.violations] == ["end_time"]
    assert store.asked == []
