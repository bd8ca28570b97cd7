"""Times in error metadata read like every other time of the API: PIN_LOCKED's `until` was
`2026-12-05T10:11:08.247530+00:00` (`isoformat`) where every Timestamp in JSON ends in `Z`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.support import json_time
from vaultpay_common.errors import metadata_time

IST = timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 5, 10, 11, 8, 247530, tzinfo=UTC),
        datetime(2026, 12, 5, 10, 11, 8, 247000, tzinfo=UTC),
        datetime(2026, 12, 5, 10, 11, 8, tzinfo=UTC),
        datetime(2026, 12, 5, 15, 41, 8, 5, tzinfo=IST),
        datetime(9, 1, 2, 3, 4, 5, tzinfo=UTC),
    ],
)
def test_an_error_time_is_written_as_proto3_json_writes_a_timestamp(moment: datetime) -> None:
    assert metadata_time(moment) == json_time(moment)


def test_an_error_time_is_utc_with_z() -> None:
    moment = datetime(2026, 12, 5, 15, 41, 8, 247530, tzinfo=IST)
    assert metadata_time(moment) == "2026-12-05T10:11:08.247530Z"
