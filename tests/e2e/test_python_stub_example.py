"""The README's Python stub example (docs/examples/get_me.py) runs as shown, against the mesh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Gateway
from vaultpay_devstack.mesh import Mesh

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "get_me.py"


def _run(*args: str, env_token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"} | ({"TOKEN": env_token} if env_token else {})
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def test_the_stub_example_calls_get_me_through_the_gateway(mesh: Mesh, gateway: Gateway) -> None:
    token = gateway.user_token()
    target = mesh.gateway_url.removeprefix("http://")

    result = _run("--target", target, env_token=token)

    assert result.returncode == 0, result.stderr
    user = json.loads(result.stdout)
    assert user["role"] == "ROLE_USER"
    assert user["email"].endswith("@example.com")


def test_the_stub_example_reports_a_refused_token(mesh: Mesh) -> None:
    result = _run("--target", mesh.gateway_url.removeprefix("http://"), "--token", "not.a.jwt")

    assert result.returncode == 1
    assert result.stderr.startswith("UNAUTHENTICATED")
