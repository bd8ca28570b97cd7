"""A service serves only once its database has this code's migrations
(vaultpay_common.schema_gate): a server process started against a database behind its code
binds no port and says why, and serves once `migrate` has run; a chain ahead of the code (a
newer release migrated first) is served; each service's role reads the version tables of the
chains it waits for (transfer reads wallet's through the platform's group role)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.blackhole import BlackholeProxy
from tests.integration.databases import fresh_databases
from tests.ports import ListenerPort
from vaultpay_auth.entrypoints.cli import AUTH_CHAIN
from vaultpay_common.db import asyncpg_dsn
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain, upgrade_all
from vaultpay_common.schema_gate import code_revisions, wait_for_schema
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_devstack.procs import setpriv_prefix
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN, WALLET_CHAIN

pytestmark = pytest.mark.integration

DEADLINE_SECONDS = 60.0


def test_an_auth_server_behind_its_schema_binds_nothing_until_migrated(
    infra: Infra, tmp_path: Path
) -> None:
    with fresh_databases(infra, "sg") as dbs, ListenerPort() as held:
        # One revision short of the code's head: the grant is in place, so the process can
        # tell where the database stands.
        migrate_chain(AUTH_CHAIN, dbs.auth_owner_dsn, dbs.auth_app_role, revision="0011")
        address = f"127.0.0.1:{held.port}"
        held.release()
        log_path = tmp_path / "auth.log"
        env = _auth_env(dbs, infra, address)
        with log_path.open("w") as log_file:
            server = _start_auth(env, log_file)
        try:
            waiting = _poll(
                lambda: _logged(log_path, "waiting for migrations before serving"), server
            )
            head = code_revisions(AUTH_CHAIN).head
            assert f"auth at 0011, this code needs {head}" in waiting["behind"]
            assert not _accepts(address), "a server behind its schema took connections"

            migrate_chain(AUTH_CHAIN, dbs.auth_owner_dsn, dbs.auth_app_role)
            _poll(lambda: _serving(address), server)
        finally:
            code = _stop(server)
        assert code == 0, log_path.read_text()


def test_a_server_stopped_while_it_waits_exits_cleanly(infra: Infra, tmp_path: Path) -> None:
    with fresh_databases(infra, "sg") as dbs, ListenerPort() as held:
        log_path = tmp_path / "auth.log"
        env = _auth_env(dbs, infra, f"127.0.0.1:{held.port}")
        with log_path.open("w") as log_file:
            server = _start_auth(env, log_file)
        try:
            # Never migrated: no version table at all.
            waiting = _poll(
                lambda: _logged(log_path, "waiting for migrations before serving"), server
            )
            assert "auth at none" in waiting["behind"]
        finally:
            code = _stop(server)
        assert code == 0, log_path.read_text()
        assert _logged(log_path, "stopped before serving") is not None


async def test_transfer_waits_for_wallets_chain_and_serves_a_schema_ahead(
    infra: Infra, caplog: pytest.LogCaptureFixture
) -> None:
    chains = [PLATFORM_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN]
    with fresh_databases(infra, "sg") as dbs:
        await asyncio.to_thread(
            upgrade_all,
            chains,
            dbs.vaultpay_owner_dsn,
            dbs.vaultpay_app_role,
            chain_roles=dbs.chain_roles(),
        )
        dsn = asyncpg_dsn(dbs.app_dsn("transfer"))
        stop = asyncio.Event()
        assert await _within(wait_for_schema(dsn, chains, stop=stop, poll_seconds=0.05))

        wallet = code_revisions(WALLET_CHAIN)
        owner = dbs.vaultpay_owner_dsn

        async def set_wallet_version(revision: str) -> None:
            await asyncio.to_thread(
                run_sql,
                owner,
                lambda conn: conn.execute(
                    "UPDATE alembic_version_wallet SET version_num = $1", revision
                ),
            )

        # A newer release's revision: served (its migrations keep this code working).
        await set_wallet_version("w9999")
        with caplog.at_level(logging.INFO, logger="vaultpay_common.schema_gate"):
            assert await _within(wait_for_schema(dsn, chains, stop=stop, poll_seconds=0.05))
        assert any("ahead" in r.getMessage() for r in caplog.records)

        # An older one: transfer waits, reading wallet's table as its own role, and says why.
        await set_wallet_version("w0012")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vaultpay_common.schema_gate"):
            waiting = asyncio.create_task(
                wait_for_schema(dsn, chains, stop=stop, poll_seconds=0.05, report_every=0)
            )
            deadline = time.monotonic() + DEADLINE_SECONDS
            while sum("waiting" in r.getMessage() for r in caplog.records) < 3:
                assert time.monotonic() < deadline, "transfer did not report its wait"
                assert not waiting.done(), "transfer served a schema behind its code"
                await asyncio.sleep(0.02)
            behind = [getattr(r, "behind", "") for r in caplog.records]
            assert all(f"wallet at w0012, this code needs {wallet.head}" in b for b in behind)

            await set_wallet_version(wallet.head)
            assert await _within(waiting)

            stop.set()
            assert not await _within(wait_for_schema(dsn, chains, stop=stop))


async def test_a_database_that_stops_answering_is_waited_for_and_a_stop_still_ends_the_wait(
    infra: Infra, caplog: pytest.LogCaptureFixture
) -> None:
    """Review of this change: the read had no bound past the connect, so a failover or a
    paused VM after the connect stopped the polling (and its warnings) for good, and SIGTERM
    set an event nobody read until the read returned."""
    with fresh_databases(infra, "sg") as dbs:
        await asyncio.to_thread(migrate_chain, AUTH_CHAIN, dbs.auth_owner_dsn, dbs.auth_app_role)
        proxy = BlackholeProxy(infra.postgres.port)
        await proxy.start()
        try:
            parts = urlsplit(asyncpg_dsn(dbs.auth_app_dsn))
            host = parts.netloc.rsplit("@", 1)
            dsn = urlunsplit(parts._replace(netloc=f"{host[0]}@127.0.0.1:{proxy.port}"))
            stop = asyncio.Event()
            assert await _within(wait_for_schema(dsn, [AUTH_CHAIN], stop=stop))

            proxy.blackhole()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="vaultpay_common.schema_gate"):
                waiting = asyncio.create_task(
                    wait_for_schema(
                        dsn,
                        [AUTH_CHAIN],
                        stop=stop,
                        poll_seconds=0.05,
                        report_every=0,
                        read_timeout=0.3,
                    )
                )
                deadline = time.monotonic() + DEADLINE_SECONDS
                while sum("waiting" in r.getMessage() for r in caplog.records) < 2:
                    assert time.monotonic() < deadline, "the wait stopped polling"
                    assert not waiting.done(), "a silent database counted as migrated"
                    await asyncio.sleep(0.02)
                behind = {getattr(r, "behind", "") for r in caplog.records}
                assert behind == {"database not reachable (TimeoutError)"}
                stop.set()
                assert await _within(waiting) is False
        finally:
            await proxy.close()


def _auth_env(dbs: Provisioned, infra: Infra, address: str) -> dict[str, str]:
    """An auth server's environment: the shell's, its AUTH_* settings replaced by these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env.update(
        AUTH_DATABASE_URL=dbs.auth_app_dsn,
        AUTH_REDIS_URL=infra.redis.url(0),
        AUTH_KEY_ENCRYPTION_KEY=base64.b64encode(os.urandom(32)).decode(),
        AUTH_GRPC_ADDRESS=address,
        AUTH_BCRYPT_ROUNDS="4",
    )
    return env


def _start_auth(env: dict[str, str], log_file: IO[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *setpriv_prefix(["--pdeathsig", "SIGTERM"]),  # dies with the session, whatever ends it
            sys.executable,
            "-m",
            "vaultpay_auth.entrypoints.server",
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )


def _stop(server: subprocess.Popen[bytes]) -> int:
    """SIGTERM, and its exit code; killed (and the test failed) if it does not exit."""
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        raise


async def _within(waiting: Awaitable[bool]) -> bool:
    return await asyncio.wait_for(waiting, DEADLINE_SECONDS)


def _poll(check: object, server: subprocess.Popen[bytes]) -> dict[str, str]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        found = check()  # type: ignore[operator]
        if found:
            return found if isinstance(found, dict) else {}
        assert server.poll() is None, f"the server exited with {server.returncode}"
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


def _logged(path: Path, message: str) -> dict[str, str] | None:
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") == message:
            return {k: str(v) for k, v in record.items()}
    return None


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


def _serving(address: str) -> bool:
    async def check() -> bool:
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
            except grpc.aio.AioRpcError:
                return False
            serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
            return serving

    return asyncio.run(check())
