"""A bad setting of `make run` is an error naming its variable, exit 2, as a bad port was
(review of 2026-12-05: `AUTH_DB_POOL_SIZE=ten` gave a ValueError traceback from `int()`, and
`VAULTPAY_SERVICES=auth,walet` a KeyError traceback once the mesh began to start, exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultpay_devstack import cli
from vaultpay_devstack.mesh import MeshConfig
from vaultpay_devstack.procs import StartupError


@pytest.mark.parametrize("value", ["ten", "0", "-1", "2.5", "16 connections"])
def test_a_bad_pool_size_is_refused_naming_its_variable(value: str) -> None:
    with pytest.raises(StartupError, match="WALLET_DB_POOL_SIZE must be a whole number"):
        MeshConfig.from_env({"AUTH_DB_POOL_SIZE": "8", "WALLET_DB_POOL_SIZE": value})


def test_an_unknown_service_is_refused_naming_the_variable_and_the_known_ones() -> None:
    with pytest.raises(StartupError) as refused:
        MeshConfig.from_env({"VAULTPAY_SERVICES": "auth,walet"})

    message = str(refused.value)
    assert "VAULTPAY_SERVICES" in message
    assert "'walet'" in message
    assert "known: auth, wallet, transfer, kyc" in message


def test_a_services_setting_that_names_none_is_refused() -> None:
    with pytest.raises(StartupError, match="VAULTPAY_SERVICES names no service"):
        MeshConfig.from_env({"VAULTPAY_SERVICES": " , "})


def test_the_services_start_auth_first_and_each_once() -> None:
    config = MeshConfig.from_env({"VAULTPAY_SERVICES": " wallet, auth ,wallet"})

    assert config.services == ("auth", "wallet")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTH_DB_POOL_SIZE", "ten"),
        ("VAULTPAY_SERVICES", "auth,walet"),
        ("VAULTPAY_KYC_PORT", "x"),
    ],
)
def test_make_run_says_which_setting_is_bad_and_exits_2_without_a_traceback(
    variable: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)

    assert cli.run(tmp_path) == 2

    err = capsys.readouterr().err
    assert err.startswith(f"error: {variable} "), err
    assert "Traceback" not in err
