"""The suite does not inherit the shell's service settings (review of 2026-12-05: after the
README's `eval "$(… cli env auth)"`, `make test` in that shell pointed the tests' settings at
the running mesh's audit checkpoints, peers and mail sink)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import shell_service_settings

ROOT = Path(__file__).resolve().parents[2]


def test_service_settings_are_picked_and_the_suites_own_kept() -> None:
    shell = {
        "AUTH_AUDIT_CHECKPOINT_DIR": "/srv/var/audit-checkpoints/auth",
        "KYC_TRANSFER_ADDRESS": "127.0.0.1:50053",
        "VAULTPAY_SMTP_PORT": "1025",
        "WALLET_REDIS_URL": "redis://127.0.0.1:6379/1",
        "TRANSFER_DATABASE_URL": "postgresql+asyncpg://x@127.0.0.1/vaultpay",
        "VAULTPAY_POSTGRES_ADMIN_URL": "postgresql://postgres@127.0.0.1/postgres",
        "VAULTPAY_REDIS_URL": "redis://127.0.0.1:6379/0",
        "VAULTPAY_TEST_TIME_LIMIT": "600",
        "VAULTPAY_BANK_TEST_SECONDS": "600",
        "PATH": "/usr/bin",
        "CI": "true",
    }
    assert shell_service_settings(shell) == [
        "AUTH_AUDIT_CHECKPOINT_DIR",
        "KYC_TRANSFER_ADDRESS",
        "TRANSFER_DATABASE_URL",
        "VAULTPAY_SMTP_PORT",
        "WALLET_REDIS_URL",
    ]


def test_no_service_setting_of_the_shell_reaches_a_test() -> None:
    """Run by the next test in a pytest of its own, with such settings in its shell."""
    assert shell_service_settings(os.environ) == []


def test_a_pytest_started_with_service_settings_drops_them() -> None:
    env = {
        **os.environ,
        "AUTH_AUDIT_CHECKPOINT_DIR": "/nonexistent/audit-checkpoints/auth",
        "KYC_TRANSFER_ADDRESS": "127.0.0.1:50053",
        "VAULTPAY_TEST_TIME_LIMIT": "120",
    }
    inner = (
        f"{Path(__file__).relative_to(ROOT)}::test_no_service_setting_of_the_shell_reaches_a_test"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", inner],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AUTH_AUDIT_CHECKPOINT_DIR, KYC_TRANSFER_ADDRESS" in done.stdout
    assert "VAULTPAY_TEST_TIME_LIMIT" not in done.stdout.split("shell:", 1)[1].splitlines()[0]
