"""VAULTPAY_SMTP_*: plain SMTP to the local sink by default; STARTTLS, a CA file and a login
for a relay's submission port. A login that STARTTLS would not protect, or half of one, stops
the service at start-up (as a bad key does), naming the variables and never the password.

The conversations themselves: tests/integration/test_smtp_mailer.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from vaultpay_common.config import SmtpSettings, load_settings

PASSWORD = "relay-password-CANARY"


@pytest.fixture(autouse=True)
def _no_smtp_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VAULTPAY_SMTP_"):
            monkeypatch.delenv(name)


def _set(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"VAULTPAY_SMTP_{name.upper()}", value)


def test_the_defaults_are_the_local_sinks_plain_smtp() -> None:
    settings = SmtpSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 1025)
    assert settings.starttls is False
    assert settings.username is None and settings.password is None and settings.ca_file is None
    assert settings.sender == "VaultPay <no-reply@vaultpay.local>"


def test_a_relay_login_over_starttls_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    _set(
        monkeypatch,
        host="smtp.example.com",
        port="587",
        starttls="true",
        ca_file=str(ca_file),
        username="vaultpay",
        password=PASSWORD,
        sender="VaultPay <no-reply@example.com>",
    )
    settings = SmtpSettings()

    assert (settings.host, settings.port, settings.starttls) == ("smtp.example.com", 587, True)
    assert settings.ca_file == ca_file
    assert settings.username == "vaultpay"
    assert settings.password is not None and settings.password.get_secret_value() == PASSWORD
    assert settings.sender == "VaultPay <no-reply@example.com>"
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            {"starttls": "true", "password": PASSWORD},
            "VAULTPAY_SMTP_PASSWORD is set without VAULTPAY_SMTP_USERNAME",
        ),
        (
            {"starttls": "true", "username": "vaultpay"},
            "VAULTPAY_SMTP_USERNAME is set without VAULTPAY_SMTP_PASSWORD",
        ),
        (
            {"username": "vaultpay", "password": PASSWORD},
            "VAULTPAY_SMTP_USERNAME needs VAULTPAY_SMTP_STARTTLS=true",
        ),
        (
            {"starttls": "false", "username": "vaultpay", "password": PASSWORD},
            "VAULTPAY_SMTP_USERNAME needs VAULTPAY_SMTP_STARTTLS=true",
        ),
        # The Secret was mounted but the password in it is empty: no login, half a one.
        (
            {"starttls": "true", "username": "vaultpay", "password": ""},
            "VAULTPAY_SMTP_USERNAME is set without VAULTPAY_SMTP_PASSWORD",
        ),
    ],
)
def test_a_login_that_starttls_would_not_protect_or_half_a_login_is_refused(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, str], said: str
) -> None:
    _set(monkeypatch, **given)
    with pytest.raises(ValidationError) as refused:
        SmtpSettings()
    assert said in str(refused.value)
    # SmtpSettings are built outside load_settings too (wallet's bootstrap): a traceback
    # must not quote the input either.
    assert PASSWORD not in str(refused.value)


def test_a_ca_file_needs_starttls_and_must_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    _set(monkeypatch, ca_file=str(ca_file))
    with pytest.raises(ValidationError, match="VAULTPAY_SMTP_CA_FILE needs"):
        SmtpSettings()

    _set(monkeypatch, starttls="true", ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError) as refused:
        SmtpSettings()
    assert refused.value.errors()[0]["loc"] == ("ca_file",)


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """compose's `${VAULTPAY_SMTP_USERNAME:-}` gives the services an empty variable."""
    _set(monkeypatch, username="", password="", ca_file="")
    settings = SmtpSettings()
    assert settings.username is None and settings.password is None and settings.ca_file is None


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"port": "submission"}, "  VAULTPAY_SMTP_PORT: Input should be a valid integer"),
        (
            {"password": PASSWORD},
            "  (settings): Value error, VAULTPAY_SMTP_PASSWORD is set without "
            "VAULTPAY_SMTP_USERNAME",
        ),
    ],
)
def test_a_bad_smtp_setting_at_start_up_exits_2_naming_it_never_its_value(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    given: dict[str, str],
    said: str,
) -> None:
    _set(monkeypatch, **given)
    with pytest.raises(SystemExit) as exited:
        load_settings(SmtpSettings, "vaultpay-wallet")
    assert exited.value.code == 2

    err = capsys.readouterr().err
    assert any(line.startswith(said) for line in err.splitlines()), err
    assert PASSWORD not in err and "submission" not in err
