"""The wallet settings checked when the service starts: WALLET_CURRENCIES (the currencies a
wallet may be opened in) and WALLET_NOTIFICATION_RETENTION_DAYS."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as SettingsError

from tests.support import peer_service_fields
from vaultpay_wallet.settings import WalletSettings


def _settings() -> WalletSettings:
    """What the server's start-up builds (`WalletSettings()` reading the environment)."""
    return WalletSettings(**peer_service_fields())


def test_inr_alone_is_supported_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WALLET_CURRENCIES", raising=False)
    assert _settings().currencies == frozenset({"INR"})


def test_a_deployment_may_add_currencies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_CURRENCIES", "INR, USD")
    assert _settings().currencies == frozenset({"INR", "USD"})


@pytest.mark.parametrize("value", ["", "INR,", "INR,usd", "INR,XYZ", "INR USD", "USD"])
def test_a_malformed_list_stops_the_service_at_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WALLET_CURRENCIES", value)
    with pytest.raises(SettingsError) as err:
        _settings()
    assert err.value.errors()[0]["loc"] == ("currencies",)


# WALLET_NOTIFICATION_RETENTION_DAYS: how long a notification is kept, read or not.


def test_notifications_are_kept_180_days_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WALLET_NOTIFICATION_RETENTION_DAYS", raising=False)
    assert _settings().notification_retention_days == 180


@pytest.mark.parametrize("value", ["1", "3650"])
def test_a_notification_retention_from_a_day_to_ten_years_is_accepted(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WALLET_NOTIFICATION_RETENTION_DAYS", value)
    assert _settings().notification_retention_days == int(value)


@pytest.mark.parametrize("value", ["0", "-1", "3651", "180.5"])
def test_a_notification_retention_out_of_bounds_stops_the_service_at_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WALLET_NOTIFICATION_RETENTION_DAYS", value)
    with pytest.raises(SettingsError) as err:
        _settings()
    assert err.value.errors()[0]["loc"] == ("notification_retention_days",)
