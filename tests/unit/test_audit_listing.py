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


# --- the filters, which the listing's own audit row keeps --------------------------------------
# Review of 2026-12-05: actor_id, action and target_id went unchecked into the permanent
# `audit_events.listed` row: a 1,000,000-character actor_id with U+202E and U+2028 answered
# 200 and left a ~1 MB row nothing deletes, once per call.

USER_ID = "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e"
EMAIL_FINGERPRINT = "ab" * 32  # auth's target of a sign-in refused for an unknown email


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (USER_ID, USER_ID),
        (USER_ID.upper(), USER_ID),  # rows hold the canonical spelling
        ("service:wallet", "service:wallet"),
        ("service:transfer", "service:transfer"),
        ("operator:jane.doe", "operator:jane.doe"),  # the CLIs' operator:<login>
        ("system", "system"),  # no principal: sweeps, wallet's own upkeep
        ("anonymous", "anonymous"),  # auth: a sign-in refused
        ("", ""),
    ],
)
def test_every_actor_the_log_holds_is_a_filter(given: str, kept: str) -> None:
    assert audit_query(wallet_pb2.ListAuditEventsRequest(actor_id=given)).actor_id == kept


@pytest.mark.parametrize(
    "actor_id",
    [
        "\u202e" + "a" * 1_000_000 + "\u2028",
        USER_ID + "\u202e",
        USER_ID[:-1],
        "staff-1",
        "service:",
        "service:wal let",
        "service:wallet\u2028",
        "operator:" + "x" * 65,
        "System",
        "anonymous\n",
    ],
)
def test_an_actor_of_no_shape_the_log_holds_is_refused(actor_id: str) -> None:
    with pytest.raises(ValidationError) as err:
        audit_query(auth_pb2.ListAuthAuditEventsRequest(actor_id=actor_id))
    assert [(v.field, v.description) for v in err.value.violations] == [
        (
            "actor_id",
            "must be a user id (a UUID), service:<name>, operator:<login>, system or anonymous",
        )
    ]


@pytest.mark.parametrize(
    "action",
    [
        "user.role_changed",
        "audit_events.listed",
        "user.password_change_failed",
        "wallet.limits_overridden",
        "kyc.key_rotation_started",
        "a" * 64,
    ],
)
def test_every_action_the_services_write_is_a_filter(action: str) -> None:
    assert audit_query(wallet_pb2.ListAuditEventsRequest(action=action)).action == action


@pytest.mark.parametrize(
    "action", ["a" * 65, "User.Login", "user.login\u2028", "user login", "user.login\u202e"]
)
def test_an_action_of_another_shape_is_refused(action: str) -> None:
    with pytest.raises(ValidationError) as err:
        audit_query(wallet_pb2.ListAuditEventsRequest(action=action))
    assert [v.field for v in err.value.violations] == ["action"]


@pytest.mark.parametrize(
    "target_id",
    [
        USER_ID,
        "VPY-7K3M9Q",  # a wallet
        "limits.tier_basic.withdraw.per_transaction",  # the longest setting key
        "20261205-0a1b2c3d",  # a signing key's kid
        EMAIL_FINGERPRINT,  # 64 characters, the longest target written
    ],
)
def test_every_target_the_log_holds_is_a_filter(target_id: str) -> None:
    assert audit_query(auth_pb2.ListAuthAuditEventsRequest(target_id=target_id)).target_id == (
        target_id
    )


@pytest.mark.parametrize(
    ("target_id", "problem"),
    [
        ("x" * 65, "must be at most 64 characters"),
        ("x" * 1_000_000, "must be at most 64 characters"),
        ("VPY-7K3M9Q\u202e", "must not contain control, formatting or line-break characters"),
        ("VPY-7K3M9Q\u2028", "must not contain control, formatting or line-break characters"),
        ("VPY-7K3M9Q\n", "must not contain control, formatting or line-break characters"),
        ("VPY\u200b-7K3M9Q", "must not contain control, formatting or line-break characters"),
    ],
)
def test_a_target_too_long_or_with_invisible_characters_is_refused(
    target_id: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as err:
        audit_query(wallet_pb2.ListAuditEventsRequest(target_id=target_id))
    assert [(v.field, v.description) for v in err.value.violations] == [("target_id", problem)]


def test_one_refusal_names_every_bad_filter_with_the_page_size_and_window() -> None:
    request = auth_pb2.ListAuthAuditEventsRequest(
        page_size=-1,
        actor_id="x" * 1000,
        action="X",
        target_id="\u2028",
        start_time=_ts(LATE),
        end_time=_ts(EARLY),
    )
    with pytest.raises(ValidationError) as err:
        audit_query(request)
    assert [v.field for v in err.value.violations] == [
        "page_size",
        "actor_id",
        "action",
        "target_id",
        "end_time",
    ]
