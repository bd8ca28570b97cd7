"""Graceful shutdown of a real service process: health goes NOT_SERVING, then it exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.auth.conftest import AuthStack
from tests.ports import ListenerPort
from vaultpay_devstack.procs import setpriv_prefix


async def test_sigterm_turns_health_not_serving_and_exits_cleanly(auth: AuthStack) -> None:
    held = ListenerPort()  # kept from other processes until the server has bound it
    port = held.port
    env = {**os.environ, **auth.env, "AUTH_GRPC_ADDRESS": f"127.0.0.1:{port}"}
    process = subprocess.Popen(
        [
            *setpriv_prefix(["--pdeathsig", "SIGTERM"]),  # dies with the session, whatever ends it
            sys.executable,
            "-m",
            "vaultpay_auth.entrypoints.server",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(
                health_pb2.HealthCheckRequest(service="vaultpay.auth.v1.AuthService"),
                wait_for_ready=True,
                timeout=60,
            )
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            held.release()  # the server listens on it now
            process.send_signal(signal.SIGTERM)
            second = await watch.read()
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        code = await asyncio.to_thread(process.wait, 30)
        _, log = process.communicate(timeout=5)
        assert code == 0, log
        assert '"msg": "shutting down"' in log
        assert '"msg": "stopped"' in log
    finally:
        held.release()
        if process.poll() is None:
            process.kill()
            process.wait(10)
