"""GetTransferStats' windows split at whole UTC hours (t0027's rollup holds whole hours)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from vaultpay_transfer.adapters.stats_sql import _add, hour_ceiling


def test_the_first_whole_utc_hour_at_or_after_a_time() -> None:
    on_the_hour = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    assert hour_ceiling(on_the_hour) == on_the_hour
    assert hour_ceiling(on_the_hour + timedelta(microseconds=1)) == on_the_hour + timedelta(hours=1)
    assert hour_ceiling(on_the_hour - timedelta(minutes=59)) == on_the_hour


def test_an_hour_of_another_zone_is_the_utc_hour() -> None:
    """Asia/Kolkata is UTC+05:30: its 10:00 is 04:30 UTC, whose next whole UTC hour is 05:00."""
    kolkata = timezone(timedelta(hours=5, minutes=30))
    at = datetime(2026, 12, 5, 10, 0, tzinfo=kolkata)
    assert hour_ceiling(at) == datetime(2026, 12, 5, 5, 0, tzinfo=UTC)


def test_sums_add_up_whatever_form_postgresql_gives_them() -> None:
    """PostgreSQL's sums are numeric: asyncpg gives 50,000 as Decimal('5E+4') (review of
    2026-12-05: int(str(...)) of it raised, and GetTransferStats answered INTERNAL)."""
    figures: dict[str, tuple[int, int]] = {}
    _add(figures, [("INR", 2, Decimal("5E+4")), ("XTS", Decimal("1E+1"), 7)])
    _add(figures, [("INR", 1, Decimal("10000"))])
    assert figures == {"INR": (3, 60_000), "XTS": (10, 7)}
