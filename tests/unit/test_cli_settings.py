"""A service CLI started without its settings says which are missing, never a value, and
exits 2 (a usage error), not 1 (what `verify-ledger` and `verify-audit` answer for a broken
ledger or chain), with no traceback (QA: `vaultpay-transfer verify-ledger` without them)."""

from __future__ import annotations

import os

import pytest

from vaultpay_transfer.entrypoints.cli import cli


def test_missing_settings_are_named_with_the_way_to_load_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("TRANSFER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRANSFER_SERVICE_CLIENT_SECRET", "canary-secret-value")
    monkeypatch.setenv("TRANSFER_DATABASE_URL", "postgresql+asyncpg://u:canary-password@h/db")

    assert cli.main(["verify-ledger"]) == 2

    said = capsys.readouterr()
    assert said.out == ""
    assert "TRANSFER_SERVICE_CLIENT_ID: Field required" in said.err
    assert "TRANSFER_KEY_ENCRYPTION_KEY: Field required" in said.err
    assert "TRANSFER_SERVICE_CLIENT_SECRET" not in said.err  # it was given
    assert "canary" not in said.err
    assert 'cli env transfer)"' in said.err
