import pytest

from vaultpay_common.errors import ValidationError
from vaultpay_common.pagination import (
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    page_size,
)


def test_page_token_round_trips_with_the_same_filters() -> None:
    token = encode_page_token({"s": 42}, {"role": "ADMIN"})
    assert decode_page_token(token, {"role": "ADMIN"}) == {"s": 42}


def test_page_token_from_other_filters_is_rejected() -> None:
    token = encode_page_token({"s": 42}, {"role": "ADMIN"})
    with pytest.raises(ValidationError) as caught:
        decode_page_token(token, {"role": "USER"})
    assert caught.value.violations[0].field == "page_token"


def test_garbage_page_token_is_invalid_argument() -> None:
    with pytest.raises(ValidationError):
        decode_page_token("not-a-token!!", {})


def test_empty_page_token_means_first_page() -> None:
    assert decode_page_token("", {"a": 1}) is None


def test_page_size_defaults_caps_and_rejects_negative() -> None:
    assert page_size(0) == 50
    assert page_size(10_000) == MAX_PAGE_SIZE
    with pytest.raises(ValidationError):
        page_size(-1)
