"""`--help` keeps each CLI's usage lines as written: argparse's default formatter reflowed the
description into one paragraph (`vaultpay-auth migrate # alembic upgrade head (owner DSN)
vaultpay-auth create-superadmin --email a@b.c …`), which a newcomer could not read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from vaultpay_auth.entrypoints import cli as auth_cli
from vaultpay_kyc.entrypoints import cli as kyc_cli
from vaultpay_transfer.entrypoints import cli as transfer_cli
from vaultpay_wallet.entrypoints import cli as wallet_cli

MONEY_JOURNEY = Path(__file__).resolve().parents[2] / "docs" / "examples" / "money_journey.py"


@pytest.mark.parametrize("module", [auth_cli, wallet_cli, transfer_cli, kyc_cli])
def test_a_service_cli_help_keeps_its_usage_lines(
    module: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out.splitlines()
    prog = module.cli.prog
    described = module.__doc__ or ""
    usage = [line.rstrip() for line in described.splitlines() if f"{prog} " in line]
    assert len(usage) >= 3, usage  # migrate, verify-audit and the service's own commands
    for line in usage:
        assert line in shown


def test_the_money_journey_help_says_what_each_option_is() -> None:
    shown = subprocess.run(
        [sys.executable, str(MONEY_JOURNEY), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    ).stdout
    assert "the SMTP sink's mail directory" in shown
    assert "$STAFF_PASSWORD" in shown
