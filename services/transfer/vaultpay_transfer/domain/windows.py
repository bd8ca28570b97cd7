"""The limit windows: calendar days and months in Asia/Kolkata, as the ledger's functions
count them (`transfer_send_money` and the rest) and wallet's GetLimits shows them.

    window_end("daily", now)     # the next Asia/Kolkata midnight, in UTC
    seconds_until(window_end("monthly", now), now)   # a refusal's Retry-After
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = ["BUSINESS_TIME_ZONE", "seconds_until", "window_end"]

BUSINESS_TIME_ZONE = ZoneInfo("Asia/Kolkata")


def window_end(window: Literal["daily", "monthly"], now: datetime) -> datetime:
    """When the day or month that holds `now` ends (a wall-clock midnight), in UTC."""
    local = now.astimezone(BUSINESS_TIME_ZONE)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "daily":
        end = (start + timedelta(days=1)).replace(tzinfo=BUSINESS_TIME_ZONE)
    else:
        end = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
    return end.astimezone(UTC)


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds from `now` to `moment`, rounded up, at least 1."""
    return max(1, math.ceil((moment - now).total_seconds()))
