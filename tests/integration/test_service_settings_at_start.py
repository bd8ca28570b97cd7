"""A service process started with bad settings exits 2 naming each bad variable, and never
prints a value: pydantic's own message quotes the input, and a key that is slightly wrong (a
rotation with 31 bytes, bad base64) is still the real key, which would land in the container's
logs. The CLI already printed only names; the four servers now share its message."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SECRET = "kek-almost-right-0123456789-SECRET"
PASSWORD = "db-password-SECRET"


@pytest.mark.parametrize(
    ("service", "prefix"),
    [("auth", "AUTH_"), ("wallet", "WALLET_"), ("transfer", "TRANSFER_"), ("kyc", "KYC_")],
)
def test_a_server_with_a_bad_key_exits_2_naming_it_without_its_value(
    service: str, prefix: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    env[f"{prefix}KEY_ENCRYPTION_KEY"] = SECRET
    env[f"{prefix}DATABASE_URL"] = f"postgresql+asyncpg://app:{PASSWORD}@127.0.0.1:1/x"
    started = _start(service, env)
    output = started.stdout + started.stderr
    assert started.returncode == 2, output
    assert f"{prefix}KEY_ENCRYPTION_KEY: Value error" in started.stderr, output
    assert SECRET not in output and PASSWORD not in output, output
    assert "Traceback" not in output, output


def test_a_server_with_a_setting_it_cannot_parse_exits_2_naming_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFER_")}
    env["TRANSFER_DATABASE_CHAIN_ROLES"] = '{"' + SECRET
    started = _start("transfer", env)
    assert started.returncode == 2, started.stderr
    assert "TRANSFER_DATABASE_CHAIN_ROLES: cannot be parsed" in started.stderr
    assert SECRET not in started.stderr and "Traceback" not in started.stderr


def test_wallet_with_half_a_mail_login_exits_2_naming_it_without_its_value() -> None:
    """The relay's settings are wallet's too: a password without a username (a Secret mounted
    without its ConfigMap line) stops the process at start, not at every mail it sends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALLET_", "VAULTPAY_SMTP"))}
    env["VAULTPAY_SMTP_PASSWORD"] = PASSWORD
    started = _start("wallet", env)
    output = started.stdout + started.stderr
    assert started.returncode == 2, output
    assert "VAULTPAY_SMTP" in started.stderr, output
    assert PASSWORD not in output and "Traceback" not in output, output


def test_the_auth_server_exits_2_on_malformed_service_clients_without_a_traceback() -> None:
    """AUTH_SERVICE_CLIENTS is read with the settings (it was parsed in build_host: exit 1
    with a ValueError traceback); an entry is named by its position, never its text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env.update(
        AUTH_DATABASE_URL=f"postgresql+asyncpg://app:{PASSWORD}@127.0.0.1:1/vaultpay_auth",
        AUTH_REDIS_URL="redis://127.0.0.1:1/0",
        AUTH_KEY_ENCRYPTION_KEY=base64.b64encode(bytes(32)).decode(),
        AUTH_SERVICE_CLIENTS=f"wallet{SECRET}",
    )
    started = _start("auth", env)
    output = started.stdout + started.stderr
    assert started.returncode == 2, output
    assert "AUTH_SERVICE_CLIENTS: Value error, entry 1 of 1 is not id:secret" in started.stderr
    assert SECRET not in output and "Traceback" not in output, output


def _start(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`service`'s server process started with `env`, run until it exits (at start-up here)."""
    return subprocess.run(
        [sys.executable, "-m", f"vaultpay_{service}.entrypoints.server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
