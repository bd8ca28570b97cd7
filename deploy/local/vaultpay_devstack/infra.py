"""PostgreSQL + Redis together: private instances by default, existing ones when given URLs.

infra = start_infra(Path("/tmp/vp"), fast=True)
infra.postgres.admin_dsn, infra.redis.url(0)
infra.stop()
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vaultpay_devstack.postgres import PostgresServer, connect_postgres, start_postgres
from vaultpay_devstack.procs import LOOPBACK, free_port
from vaultpay_devstack.redis import RedisServer, connect_redis, launch_redis

__all__ = ["Infra", "private_dir", "scratch_dir", "start_infra"]


@dataclass(frozen=True)
class Infra:
    """The data stores of one mesh or test session."""

    postgres: PostgresServer
    redis: RedisServer

    @property
    def pids(self) -> list[int]:
        """PIDs of the servers we started (none for existing ones)."""
        return [s.process.pid for s in (self.postgres, self.redis) if s.process is not None]

    def stop(self) -> None:
        """Stops what we started, Redis first; existing servers are left alone."""
        try:
            self.redis.stop()
        finally:
            self.postgres.stop()


def start_infra(
    var_dir: Path,
    *,
    fast: bool = False,
    postgres_admin_url: str | None = None,
    redis_url: str | None = None,
    postgres_password: str | None = None,
    redis_password: str | None = None,
    postgres_settings: Sequence[str] = (),
    report: Callable[[str], None] = lambda _: None,
) -> Infra:
    """Starts (or connects to) PostgreSQL and Redis; state in `<var>/postgres`, logs in `<var>/log`.

    Private servers ask for passwords: the given ones (a mesh keeps them in MeshSecrets), or
    fresh random ones for a throwaway test session. Redis is launched first and awaited last,
    so the two start side by side. `postgres_settings` (`name=value`) go to a private
    PostgreSQL only.
    """
    log_dir = private_dir(var_dir / "log")
    redis: RedisServer | None = None
    postgres: PostgresServer | None = None
    try:
        if redis_url:
            redis = connect_redis(redis_url)
            report(f"using existing Redis at {redis.host}:{redis.port}")
        else:
            password = redis_password or secrets.token_urlsafe(32)
            redis = launch_redis(var_dir / "redis", log=log_dir / "redis.log", password=password)
            report(f"starting Redis on {redis.host}:{redis.port}")
        if postgres_admin_url:
            postgres = connect_postgres(postgres_admin_url)
            report(f"using existing PostgreSQL at {postgres.host}:{postgres.port}")
        else:
            port, root = free_port(), var_dir / "postgres"
            report(f"starting PostgreSQL on {LOOPBACK}:{port} (data in {root / 'data'})")
            postgres = start_postgres(
                root,
                log=log_dir / "postgres.log",
                port=port,
                fast=fast,
                superuser_password=postgres_password or secrets.token_urlsafe(32),
                extra_settings=postgres_settings,
            )
        redis.wait_ready()
    except BaseException:
        # Both, whichever step failed: a Redis that never became ready left the private
        # PostgreSQL started before it running, held by nothing (review of 2026-12-05).
        try:
            if postgres is not None:
                postgres.stop()  # a server we only connected to is left alone
        finally:  # Redis too, whatever interrupts PostgreSQL's stop
            if redis is not None:
                redis.stop()
        raise
    return Infra(postgres, redis)


def scratch_dir(prefix: str) -> Path:
    """A fresh directory in the system temp dir that the `postgres` OS user can enter.

    pytest's tmp dirs are 0700 under /tmp/pytest-of-root, which PostgreSQL (running as its own
    OS user when we are root) cannot reach. The caller removes the directory.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def private_dir(path: Path) -> Path:
    """`path`, created if needed, that only its owner can list or enter (logs, mail)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path
