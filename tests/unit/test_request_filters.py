"""Listing filters in requests: a Timestamp outside what one may hold is INVALID_ARGUMENT on
its field, never INTERNAL (QA of 2026-12-03: `startTime.seconds=-99999999999` through the
gateway answered 500 on ListTransactions, AdminListTransactions and the audit listings), and so
is a wallet filter that is not a wallet id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from vaultpay.transfer.v1 import transfer_pb2
from vaultpay_common.errors import ValidationError
from vaultpay_common.grpc.convert import datetime_or_none
from vaultpay_transfer.entrypoints.convert import transaction_filter


def test_a_time_in_range_is_read_and_an_absent_one_is_none() -> None:
    request = transfer_pb2.ListTransactionsRequest(start_time=Timestamp(seconds=86_400))
    assert datetime_or_none(request, "start_time") == datetime(1970, 1, 2, tzinfo=UTC)
    assert datetime_or_none(request, "end_time") is None


def test_a_time_between_two_microseconds_is_rounded_up_so_windows_stay_exact() -> None:
    """[start, end) at PostgreSQL's precision: a row at T+1 µs is before an end of T+1.5 µs,
    and a row at T is not at or after a start of T+0.5 µs (protobuf alone truncates both)."""
    base = datetime(1970, 1, 2, tzinfo=UTC)

    def read(nanos: int) -> datetime | None:
        request = transfer_pb2.ListTransactionsRequest(
            start_time=Timestamp(seconds=86_400, nanos=nanos)
        )
        return datetime_or_none(request, "start_time")

    assert read(1_500) == base + timedelta(microseconds=2)
    assert read(500) == base + timedelta(microseconds=1)
    assert read(2_000) == base + timedelta(microseconds=2)  # whole microseconds stay
    assert read(0) == base
    # Both bounds inside one microsecond: no instant PostgreSQL can hold is in the window.
    request = transfer_pb2.ListTransactionsRequest(
        start_time=Timestamp(seconds=86_400, nanos=100),
        end_time=Timestamp(seconds=86_400, nanos=900),
    )
    with pytest.raises(ValidationError) as empty:
        transaction_filter(request)
    assert [v.field for v in empty.value.violations] == ["end_time"]
    last = Timestamp(seconds=253_402_300_799, nanos=999_999_999)  # 9999-12-31T23:59:59.999999999
    assert datetime_or_none(transfer_pb2.ListTransactionsRequest(end_time=last), "end_time")


@pytest.mark.parametrize(
    "value",
    [
        Timestamp(seconds=-99_999_999_999),
        Timestamp(seconds=253_402_300_800),  # 10000-01-01
        Timestamp(seconds=-62_135_596_801),  # a second before 0001-01-01
        Timestamp(seconds=0, nanos=-5),
        Timestamp(seconds=0, nanos=2_000_000_000),
    ],
)
def test_a_time_no_timestamp_may_hold_is_invalid_argument_on_its_field(value: Timestamp) -> None:
    with pytest.raises(ValidationError) as caught:
        datetime_or_none(transfer_pb2.ListTransactionsRequest(end_time=value), "end_time")
    assert [v.field for v in caught.value.violations] == ["end_time"]

    request = transfer_pb2.AdminListTransactionsRequest(start_time=value)
    with pytest.raises(ValidationError) as listed:
        transaction_filter(request)
    assert [v.field for v in listed.value.violations] == ["start_time"]


def test_the_staff_listings_wallet_filter_is_a_wallet_id_or_invalid_argument() -> None:
    # QA of 2026-12-03: `walletId=junk` answered an empty page instead of naming the field.
    request = transfer_pb2.AdminListTransactionsRequest(wallet_id="junk")
    with pytest.raises(ValidationError) as caught:
        transaction_filter(request)
    assert [v.field for v in caught.value.violations] == ["wallet_id"]
    assert transaction_filter(
        transfer_pb2.AdminListTransactionsRequest(wallet_id=" vpy-ab12cd ")
    ).wallet_id == ("VPY-AB12CD")
    assert transaction_filter(transfer_pb2.AdminListTransactionsRequest()).wallet_id == ""
