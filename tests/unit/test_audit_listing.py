"""The audit listings' filters, shared by wallet's ListAuditEvents and auth's
ListAuthAuditEvents."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from vaultpay.auth.v1 import auth_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.errors import ValidationError
from vaultpay_common.grpc.audit_listing import audit_query

EARLY = datetime(2026, 12, 1, tzinfo=UTC)
LATE = datetime(2026, 12, 2, tzinfo=UTC)


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@pytest.mark.parametrize(
    "message", [wallet_pb2.ListAuditEventsRequest, auth_pb2.ListAuthAuditEventsRequest]
)
@pytest.mark.parametrize(("start", "end"), [(LATE, EARLY), (EARLY, EARLY)])
def test_an_end_at_or_before_the_start_names_end_time(
    message: type[wallet_pb2.ListAuditEventsRequest | auth_pb2.ListAuthAuditEventsRequest],
    start: datetime,
    end: datetime,
) -> None:
    # QA of 2026-12-03: this answered 200 and an empty list.
    with pytest.raises(ValidationError) as err:
        audit_query(message(start_time=_ts(start), end_time=_ts(end)))
    assert [(v.field, v.description) for v in err.value.violations] == [
        ("end_time", "must be after the start time")
    ]


def test_a_range_or_one_bound_is_a_filter() -> None:
    both = audit_query(wallet_pb2.ListAuditEventsRequest(start_time=_ts(EARLY), end_time=_ts(LATE)))
    assert (both.start, both.end) == (EARLY, LATE)
    only_end = audit_query(auth_pb2.ListAuthAuditEventsRequest(end_time=_ts(EARLY)))
    assert (only_end.start, only_end.end) == (None, EARLY)


def test_one_refusal_names_the_page_size_and_an_inverted_window() -> None:
    """Review of 2026-12-04 (third): a bad page size was named alone, and the window only on
    the next round trip."""
    request = wallet_pb2.ListAuditEventsRequest(
        page_size=-1, start_time=_ts(LATE), end_time=_ts(EARLY)
    )
    with pytest.raises(ValidationError) as err:
        audit_query(request)
    assert [v.field for v in err.value.violations] == ["page_size", "end_time"]
