"""auth's settings refuse at start-up what would break the mesh later (review of 2026-12-05).

- A token lifetime above DEFAULT_MAX_TOKEN_LIFETIME: auth verified its own tokens with its
  own TTLs, but wallet, transfer and kyc refuse a token living longer than 900 s, so
  AUTH_ACCESS_TOKEN_TTL_SECONDS=1800 made every call to them UNAUTHENTICATED; 0 and negative
  lifetimes were accepted too.
- A malformed AUTH_SERVICE_CLIENTS was parsed only when the server was built: exit 1 and a
  traceback, not exit 2 naming the variable (and never its value, which holds secrets).
"""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from pydantic import ValidationError

from vaultpay_auth.settings import AuthSettings, parse_service_clients
from vaultpay_common.config import load_settings
from vaultpay_common.grpc.tokens import DEFAULT_MAX_TOKEN_LIFETIME

SECRET = "canary-secret-0123456789"
TTL_VARIABLES = ("AUTH_ACCESS_TOKEN_TTL_SECONDS", "AUTH_SERVICE_TOKEN_TTL_SECONDS")


def _auth_env() -> dict[str, str]:
    """auth's required settings; nothing is ever reached (a closed port)."""
    return {
        "AUTH_DATABASE_URL": "postgresql+asyncpg://app:canary-db@127.0.0.1:1/vaultpay_auth",
        "AUTH_REDIS_URL": "redis://127.0.0.1:1/0",
        "AUTH_KEY_ENCRYPTION_KEY": base64.b64encode(bytes(32)).decode(),
    }


@pytest.fixture
def auth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AUTH_"):
            monkeypatch.delenv(name)
    for name, value in _auth_env().items():
        monkeypatch.setenv(name, value)


def _refused(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        load_settings(AuthSettings, "vaultpay-auth")
    assert exited.value.code == 2
    return capsys.readouterr().err


# ----- token lifetimes ----------------------------------------------------------------------


@pytest.mark.parametrize("variable", TTL_VARIABLES)
@pytest.mark.parametrize("value", ["0", "-60", str(DEFAULT_MAX_TOKEN_LIFETIME + 1), "1800"])
def test_a_token_lifetime_the_other_services_would_refuse_stops_auth(
    auth_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    err = _refused(capsys)
    assert f"{variable}: Value error, must be above 0 and at most 900 (seconds)" in err, err


@pytest.mark.parametrize("variable", TTL_VARIABLES)
@pytest.mark.parametrize("value", [1, DEFAULT_MAX_TOKEN_LIFETIME])
def test_a_lifetime_up_to_the_shared_maximum_is_accepted(
    auth_env: None, monkeypatch: pytest.MonkeyPatch, variable: str, value: int
) -> None:
    monkeypatch.setenv(variable, str(value))
    settings = load_settings(AuthSettings, "vaultpay-auth")
    field = variable.removeprefix("AUTH_").lower()
    assert getattr(settings, field) == value


def test_the_default_lifetimes_are_unchanged(auth_env: None) -> None:
    settings = load_settings(AuthSettings, "vaultpay-auth")
    assert settings.access_token_ttl_seconds == 15 * 60
    assert settings.service_token_ttl_seconds == 10 * 60


# ----- AUTH_SERVICE_CLIENTS ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"wallet{SECRET}", "entry 1 of 1 is not id:secret"),  # no colon: all of it a secret
        ("wallet:canary-short", "entry 1 of 1 is not id:secret"),  # a secret under 16
        (f":{SECRET}", "entry 1 of 1 is not id:secret"),
        (f"wallet:{SECRET},kyc", "entry 2 of 2 is not id:secret"),
        (f"wallet:{SECRET}, kyc:{SECRET}x ,wallet:{SECRET}y", "entries 1 and 3 name the same"),
    ],
)
def test_malformed_service_clients_stop_auth_naming_the_variable_not_a_secret(
    auth_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
    problem: str,
) -> None:
    monkeypatch.setenv("AUTH_SERVICE_CLIENTS", value)
    err = _refused(capsys)
    assert f"AUTH_SERVICE_CLIENTS: Value error, {problem}" in err, err
    assert "canary" not in err


def test_a_malformed_value_is_refused_by_the_settings_not_later() -> None:
    """Refused when the settings are built (every caller, not only `load_settings`), with no
    secret in pydantic's own message either."""
    with pytest.raises(ValidationError) as refused:
        AuthSettings(**_auth_fields(), service_clients=f"wallet:{SECRET},kyc:short")
    [error] = refused.value.errors()
    assert error["loc"] == ("service_clients",)
    assert "canary" not in str(refused.value) and "short" not in str(refused.value)


def test_well_formed_service_clients_parse_as_before() -> None:
    settings = AuthSettings(
        **_auth_fields(), service_clients=f" wallet:{SECRET}, ,kyc:{SECRET}:with-colon ,"
    )
    assert settings.service_client_secrets == {
        "wallet": SECRET,
        "kyc": f"{SECRET}:with-colon",
    }
    assert AuthSettings(**_auth_fields()).service_client_secrets == {}
    assert parse_service_clients("") == {}


def _auth_fields() -> dict[str, Any]:
    return {k.removeprefix("AUTH_").lower(): v for k, v in _auth_env().items()}
