"""`vaultpay_devstack.cli env <service>` prints the running mesh's settings for an operator's
shell. Run bare on a terminal (the README invites it, "what a service runs with") it printed
the key-encryption key, the gateway and client secrets and every database password in clear,
into the screen and its scrollback, while the banner masks passwords for that reason (review
of 2026-12-05). On a terminal the secrets are masked; through a pipe, as
`eval "$(... env auth)"` reads it, they are exported whole."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vaultpay_devstack import cli

SETTINGS = {
    "AUTH_DATABASE_URL": "postgresql+asyncpg://vaultpay_auth_app:s3cret-db@127.0.0.1:25432/auth",
    "AUTH_KEY_ENCRYPTION_KEY": "a2V5LWVuY3J5cHRpb24ta2V5",
    "AUTH_SERVICE_CLIENTS": '{"wallet": "wallet-client-secret"}',
    "AUTH_GATEWAY_SECRET": "gateway-secret",
    "AUTH_AUDIT_CHAIN_KEY": "chain-key",
    "AUTH_REDIS_URL": "redis://:redis-pass@127.0.0.1:26379/0",
    "AUTH_GRPC_ADDRESS": "127.0.0.1:50051",
}
SECRETS = (
    "s3cret-db",
    "a2V5LWVu",
    "wallet-client-secret",
    "gateway-secret",
    "chain-key",
    "redis-pass",
)


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state file as a running mesh writes it, its supervisor taken as alive."""
    cli._write_state_file(
        tmp_path / cli.STATE_FILE,
        {
            **cli._supervisor_identity(),
            "starting": False,
            "pids": {},
            "grpc": {},
            "gateway_url": None,
            "envoy_admin": None,
            "env": {"auth": SETTINGS},
        },
    )
    monkeypatch.setattr(cli, "_supervisor_running", lambda state: True)
    return tmp_path


def test_on_a_terminal_no_secret_is_printed(
    running: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)

    assert cli.env(running, "auth") == 0

    printed = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in printed.out, secret
    assert "export AUTH_GRPC_ADDRESS=127.0.0.1:50051" in printed.out
    assert "vaultpay_auth_app:***@127.0.0.1:25432" in printed.out
    assert "export AUTH_KEY_ENCRYPTION_KEY='***'" in printed.out
    assert "secrets masked" in printed.err


def test_through_a_pipe_the_settings_export_whole(
    running: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: False)

    assert cli.env(running, "auth") == 0

    exported = subprocess.run(
        ["bash", "-c", capsys.readouterr().out + "\nenv"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name, value in SETTINGS.items():
        assert f"{name}={value}" in exported.splitlines(), name
