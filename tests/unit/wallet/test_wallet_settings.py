"""WALLET_CURRENCIES: the currencies a wallet may be opened in, checked when the service starts."""

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
