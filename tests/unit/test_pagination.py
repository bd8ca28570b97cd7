import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from vaultpay_common.errors import ValidationError
from vaultpay_common.pagination import (
    MAX_PAGE_SIZE,
    PageTokens,
    created_id_cursor,
    page_size,
    paginate,
    sequence_cursor,
)

TOKENS = PageTokens(secrets.token_bytes(32))


def test_page_token_round_trips_with_the_same_filters() -> None:
    token = TOKENS.encode({"s": 42}, {"role": "ADMIN"})
    assert TOKENS.decode(token, {"role": "ADMIN"}) == {"s": 42}


def test_page_token_from_other_filters_is_rejected() -> None:
    token = TOKENS.encode({"s": 42}, {"role": "ADMIN"})
    with pytest.raises(ValidationError) as caught:
        TOKENS.decode(token, {"role": "USER"})
    assert caught.value.violations[0].field == "page_token"


def test_a_forged_position_is_refused_even_with_a_valid_shape() -> None:
    token = TOKENS.encode({"s": 42}, {})
    body, signature = token.split(".")
    forged_body = TOKENS.encode({"s": 7}, {}).split(".")[0]
    with pytest.raises(ValidationError):
        TOKENS.decode(f"{forged_body}.{signature}", {})
    other_service = PageTokens(secrets.token_bytes(32))
    with pytest.raises(ValidationError):
        other_service.decode(f"{body}.{signature}", {})


@pytest.mark.parametrize("garbage", ["not-a-token!!", "a.b.c", "x" * 2000, ".", "e30.AAAA"])
def test_garbage_page_token_is_invalid_argument(garbage: str) -> None:
    with pytest.raises(ValidationError):
        TOKENS.decode(garbage, {})


def test_empty_page_token_means_first_page() -> None:
    assert TOKENS.decode("", {"a": 1}) is None


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

    bad = TOKENS.encode({"c": "not a time", "i": "x"}, {})
    with pytest.raises(ValidationError):
        await paginate(
            TOKENS,
            page_size=10,
            page_token=bad,
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
