"""What `make run` prints must work as printed: the devstack lives in `.venv`, so a command
that names its modules with the system `python` fails with "No module named vaultpay_devstack"."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from vaultpay_devstack import cli


def _banner(**overrides: Any) -> str:
    mesh = SimpleNamespace(
        gateway_url="http://127.0.0.1:8080",
        envoy=object(),
        config=SimpleNamespace(cors_origins=()),
        services={name: object() for name in ("auth", "wallet", "transfer", "kyc")},
        grpc_address=lambda name: f"127.0.0.1:5005{len(name)}",
        maildir=Path("var/mail"),
        log_dir=Path("var/log"),
        infra=None,
    )
    for key, value in overrides.items():
        setattr(mesh, key, value)
    return cli._banner(cast(Any, mesh))


def test_the_banner_says_how_to_stop_the_mesh_from_another_terminal() -> None:
    banner = _banner()

    assert "make stop" in banner


def test_every_devstack_command_in_the_banner_runs_the_venv_python() -> None:
    for banner in (_banner(), _banner(envoy=None), _banner(services={})):
        bare = re.findall(r"(?<![/\w.])python3? -m vaultpay_", banner)
        assert not bare, banner
