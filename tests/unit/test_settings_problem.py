"""A bad setting is reported by the environment variable an operator sets. pydantic-settings
reads a field under a validation alias by that alias, unprefixed; the message put the service's
prefix before it (review: a bad VAULTPAY_PROFILE was reported as `AUTH_VAULTPAY_PROFILE`).

And VAULTPAY_PROFILE itself: no code read it (deploy files presented it as a setting), so it
is no setting any more; a value left in an old environment stops nothing."""

from __future__ import annotations

import os

import pytest
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tests.support import use_transfer_settings
from vaultpay_common.cli import ServiceCli
from vaultpay_common.config import ServiceSettings, load_settings, settings_problem
from vaultpay_transfer.settings import TransferSettings


class AliasedDemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore", frozen=True)

    region: str = Field(default="eu", pattern="^[a-z]{2}$", validation_alias="VAULTPAY_REGION")
    zone: int = Field(default=0, validation_alias=AliasChoices("VAULTPAY_ZONE", "DEMO_OLD_ZONE"))
    count: int = 1


class AliasedTransferSettings(TransferSettings):
    """A service's settings with a field read under an alias, as ServiceSettings had one."""

    region: str = Field(default="eu", pattern="^[a-z]{2}$", validation_alias="VAULTPAY_REGION")


@pytest.fixture
def bad_demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DEMO_", "VAULTPAY_REGION", "VAULTPAY_ZONE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VAULTPAY_REGION", "Europe-CANARY")
    monkeypatch.setenv("DEMO_OLD_ZONE", "north")
    monkeypatch.setenv("DEMO_COUNT", "many")


EXPECTED = [
    "  VAULTPAY_REGION: String should match pattern '^[a-z]{2}$'",
    "  VAULTPAY_ZONE or DEMO_OLD_ZONE: Input should be a valid integer",
    "  DEMO_COUNT: Input should be a valid integer",
]


def _problems(text: str) -> list[str]:
    """The message's problem lines (between its first line and the hint), each up to its
    first comma."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("In a checkout"))
    return [line.split(",")[0] for line in lines[1:end]]


def test_start_up_names_an_aliased_field_by_its_alias_unprefixed(
    bad_demo_environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        load_settings(AliasedDemoSettings, "vaultpay-demo")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert _problems(err) == EXPECTED
    assert "DEMO_VAULTPAY" not in err and "CANARY" not in err


def test_without_the_settings_type_the_error_names_it(bad_demo_environment: None) -> None:
    """What the service CLIs call: the settings class is the one the error is about."""
    with pytest.raises(ValidationError) as refused:
        AliasedDemoSettings()
    assert _problems(settings_problem(refused.value, "vaultpay-demo", "DEMO_")) == EXPECTED


def test_a_service_cli_names_an_aliased_field_by_its_alias(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_transfer_settings(monkeypatch, "postgresql+asyncpg://u:p@127.0.0.1:1/db")
    monkeypatch.setenv("VAULTPAY_REGION", "Europe")
    cli = ServiceCli("vaultpay-transfer", AliasedTransferSettings, chains=[])

    assert cli.main(["verify-audit"]) == 2

    err = capsys.readouterr().err
    assert "  VAULTPAY_REGION: String should match pattern" in err
    assert "TRANSFER_VAULTPAY_REGION" not in err


def test_vaultpay_profile_is_no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    use_transfer_settings(monkeypatch, "postgresql+asyncpg://u:p@127.0.0.1:1/db")
    monkeypatch.setenv("VAULTPAY_PROFILE", "staging")

    assert "profile" not in ServiceSettings.model_fields
    TransferSettings()  # an old environment's value stops nothing
