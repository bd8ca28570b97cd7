"""What `make run` prints must work as printed: the devstack lives in `.venv`, so a command
that names its modules with the system `python` fails with "No module named vaultpay_devstack".
And it must print at all: without Envoy, `Mesh.gateway_url` raises, and the banner read it
(review of 2026-12-05; the fake here had a plain `gateway_url`, which hid that)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from vaultpay_devstack import cli
from vaultpay_devstack.procs import LOOPBACK, PortHold, StartupError


class _FakeMesh:
    """The part of `Mesh` the banner reads, `gateway_url` raising without Envoy as it does."""

    def __init__(self, **overrides: Any) -> None:
        self.envoy: object | None = object()
        self.config = SimpleNamespace(cors_origins=(), gateway_port=8080)
        self.services = {name: object() for name in ("auth", "wallet", "transfer", "kyc")}
        self.maildir = Path("var/mail")
        self.log_dir = Path("var/log")
        self.infra = None
        for key, value in overrides.items():
            setattr(self, key, value)

    @property
    def gateway_url(self) -> str:
        if self.envoy is None:
            raise RuntimeError("the gateway is not running (see the warnings printed at start)")
        return f"http://127.0.0.1:{self.config.gateway_port}"

    def grpc_address(self, name: str) -> str:
        return f"127.0.0.1:5005{len(name)}"


def _banner(**overrides: Any) -> str:
    return cli._banner(cast(Any, _FakeMesh(**overrides)))


def _ports_in_use_message() -> str:
    """What `make run` says when a port of the mesh is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        with pytest.raises(StartupError) as refused:
            PortHold({"wallet gRPC": taken.getsockname()[1]})
    return str(refused.value)


def test_the_banner_says_how_to_stop_the_mesh_from_another_terminal() -> None:
    banner = _banner()

    assert "make stop" in banner


def test_a_mesh_without_envoy_gets_its_banner_without_a_gateway() -> None:
    banner = _banner(envoy=None)

    assert "auth gRPC" in banner
    assert "gateway" not in banner
    assert "curl" not in banner


def test_the_ports_in_use_error_says_how_to_find_and_stop_the_other_mesh() -> None:
    message = _ports_in_use_message()

    assert "ports in use: wallet gRPC 127.0.0.1:" in message
    assert "`make status` / `make stop` in the checkout that runs it" in message
    assert "`.venv/bin/python -m vaultpay_devstack.cli status`" in message


def test_every_devstack_command_the_runner_prints_runs_the_venv_python() -> None:
    for printed in (
        _banner(),
        _banner(envoy=None),
        _banner(services={}),
        _ports_in_use_message(),
    ):
        bare = re.findall(r"(?<![/\w.])python3? -m vaultpay_", printed)
        assert not bare, printed


def test_the_money_journey_it_prints_goes_to_this_meshs_gateway_and_mail() -> None:
    """Review of 2026-12-05: the printed command had neither, so with the gateway moved off 8080
    (what the ports-in-use error advises) it sent the staff password to whichever mesh held
    8080 and waited for a code in this mesh's mail."""
    banner = _banner(
        config=SimpleNamespace(cors_origins=(), gateway_port=18080),
        maildir=Path("/srv/vault pay/var/mail"),
    )

    journey = banner[banner.index("money_journey.py") :].split("\n\n")[0]
    assert "--gateway 127.0.0.1:18080" in journey
    assert "--maildir '/srv/vault pay/var/mail'" in journey
