"""Redis for the local mesh: a private, non-persistent redis-server, or an existing one.

    server = start_redis(Path("var/redis"), log=Path("var/log/redis.log"), password=secret)
    server.url(db=1)   # 'redis://:<secret>@127.0.0.1:63xx/1'
    server.stop()

Nothing is saved to disk (`--save "" --appendonly no`): Redis only holds throttles and caches
here, and PostgreSQL stays the truth. A private server asks for a password (`requirepass`, read
from a 0600 config file rather than the command line, which every local user can read).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vaultpay_devstack.procs import (
    LOOPBACK,
    ManagedProcess,
    StartupError,
    free_port,
    require_tool,
    wait_until,
)

__all__ = ["RedisServer", "connect_redis", "launch_redis", "ping", "start_redis"]

REDIS_PACKAGE = "redis-server"


@dataclass(frozen=True)
class RedisServer:
    """A reachable Redis; `process` is set only when we started it."""

    host: str
    port: int
    password: str | None = None
    process: ManagedProcess | None = None
    root: Path | None = None  # a private server's directory (its config file)

    def url(self, db: int = 0) -> str:
        """`redis://` URL of logical database `db`."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    @property
    def private(self) -> bool:
        return self.process is not None

    def ping(self) -> bool:
        return ping(self.host, self.port, self.password)

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_until(
            self.ping, what=f"Redis on {self.host}:{self.port}", proc=self.process, timeout=timeout
        )

    def stop(self) -> None:
        """Stops a server we started (SIGTERM, then SIGKILL); no-op otherwise."""
        if self.process is not None:
            self.process.stop()

    def restarted(self) -> RedisServer:
        """Stops a server we started and starts it again on the same port with the same
        password, empty (nothing is persisted); returns the new one once it answers PING.
        For fault-injection tests (`Mesh.restart_redis`)."""
        if self.process is None or self.root is None or self.password is None:
            raise RuntimeError(f"Redis on {self.host}:{self.port} was not started by us")
        self.process.stop()
        return start_redis(self.root, log=self.process.log, password=self.password, port=self.port)


def launch_redis(root: Path, *, log: Path, password: str, port: int | None = None) -> RedisServer:
    """Starts a private redis-server without waiting for it (see `RedisServer.wait_ready`)."""
    binary = require_tool("redis-server", package=REDIS_PACKAGE)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    port = port or free_port()
    config = root / "redis.conf"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"requirepass {_quoted(password)}\n")
    argv: list[str | Path] = [
        binary,
        config,
        "--port", str(port),
        "--bind", LOOPBACK,
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--dir", root,
        "--logfile", "",
    ]  # fmt: skip
    proc = ManagedProcess.start("redis", argv, log=log, cwd=root, stop_timeout=10.0)
    return RedisServer(LOOPBACK, port, password=password, process=proc, root=root)


def _quoted(value: str) -> str:
    """A redis.conf string argument (double-quoted, escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_redis(root: Path, *, log: Path, password: str, port: int | None = None) -> RedisServer:
    """Starts a private redis-server and waits until it answers PING."""
    server = launch_redis(root, log=log, password=password, port=port)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def connect_redis(url: str) -> RedisServer:
    """An existing Redis from its URL (the database number is ignored), checked with PING."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        # Never the URL itself: it may carry the password.
        raise StartupError(
            "VAULTPAY_REDIS_URL must be redis://[:password@]host:port[/db] "
            f"(scheme {parts.scheme or 'missing'!r}{'' if parts.hostname else ', no host'})"
        )
    server = RedisServer(parts.hostname, parts.port or 6379, parts.password)
    if not server.ping():
        raise StartupError(f"Redis at {server.host}:{server.port} does not answer PING")
    return server


def ping(host: str, port: int, password: str | None = None) -> bool:
    """True when Redis at host:port answers PING (raw RESP: no client library needed)."""
    command = b"*1\r\n$4\r\nPING\r\n"
    if password:
        secret = password.encode()
        command = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret) + command
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(command)
            reply = b""
            while b"PONG" not in reply and b"-" not in reply[:1]:
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return b"+PONG" in reply
