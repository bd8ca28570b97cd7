"""The kyc relay's attempt budget: its SetKycTier events unlock an approved user's money, so a
wallet outage of days, not an hour, dead-letters one (review of 2026-12-04, third)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.support import peer_service_fields
from vaultpay_common.outbox.backoff import backoff_delay
from vaultpay_kyc.settings import KycSettings


def test_a_tier_event_outlasts_a_wallet_outage_of_more_than_a_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KYC_OUTBOX_MAX_ATTEMPTS", raising=False)
    attempts = KycSettings(**peer_service_fields()).outbox_max_attempts
    # The shortest it can retry for: every wait at its smallest (half of each is random).
    shortest = sum(
        backoff_delay(n, base_delay=1.0, max_delay=300.0, rand=lambda: 0.0)
        for n in range(1, attempts)
    )
    assert shortest > 36 * 3600


@pytest.mark.parametrize("attempts", ["19", "100001"])
def test_an_attempt_budget_out_of_range_stops_the_service(
    monkeypatch: pytest.MonkeyPatch, attempts: str
) -> None:
    monkeypatch.setenv("KYC_OUTBOX_MAX_ATTEMPTS", attempts)
    with pytest.raises(ValidationError, match="outbox_max_attempts"):
        KycSettings(**peer_service_fields())
