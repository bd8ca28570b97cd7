"""`make run` stops the mesh on any error once it is built (review of 2026-12-05: only
StartupError and MissingToolError were caught, so a full disk writing the state file, or the
banner reading the gateway's URL when Envoy had not started, left PostgreSQL, Redis and the
services running while the state file was removed, and `make stop` said "no mesh runs")."""

from __future__ import annotations

import errno
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vaultpay_devstack import cli
from vaultpay_devstack.mesh import MeshConfig
from vaultpay_devstack.procs import StartupError


class _FakeMesh:
    """A mesh that 'starts' at once; `exited` reports auth dead, which ends `run`."""

    def __init__(self, config: MeshConfig, *, envoy: object | None = None) -> None:
        self.config = config
        self.envoy = envoy
        self.services: dict[str, object] = {"auth": object()}
        self.maildir = config.var_dir / "mail"
        self.log_dir = config.var_dir / "log"
        self.infra = None
        self.started = False
        self.stopped = 0

    @property
    def gateway_url(self) -> str:
        if self.envoy is None:
            raise RuntimeError("the gateway is not running (see the warnings printed at start)")
        return "http://127.0.0.1:8080"

    def grpc_address(self, name: str) -> str:
        return "127.0.0.1:50051"

    def env_for(self, name: str, *, operator: bool = False) -> dict[str, str]:
        return {}

    def processes(self) -> dict[str, Any]:
        return {"auth": SimpleNamespace(pid=4242)} if self.started else {}

    def start(self) -> _FakeMesh:
        self.started = True
        return self

    def exited(self) -> dict[str, int]:
        return {"auth": 1}

    def stop(self) -> None:
        self.started = False
        self.stopped += 1


@pytest.fixture
def meshes(monkeypatch: pytest.MonkeyPatch) -> list[_FakeMesh]:
    """The meshes `cli.run` builds (fakes); the test process's signal handlers stay its own."""
    built: list[_FakeMesh] = []

    def build(config: MeshConfig) -> _FakeMesh:
        built.append(_FakeMesh(config))
        return built[-1]

    monkeypatch.setattr(cli, "Mesh", build)
    monkeypatch.setattr(cli, "_trap_signals", lambda: None)
    monkeypatch.setattr(cli, "_ignore_signals", lambda: None)
    return built


def test_a_full_disk_writing_the_state_file_stops_the_mesh_with_a_short_error(
    meshes: list[_FakeMesh],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def disk_full(path: Path, mesh: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "_write_state", disk_full)

    assert cli.run(tmp_path) == 1

    (mesh,) = meshes
    assert mesh.stopped and not mesh.started
    assert not (tmp_path / cli.STATE_FILE).exists()
    err = capsys.readouterr().err
    log = tmp_path / "log" / cli.SUPERVISOR_LOG
    assert err == (
        "error: the mesh stopped on an unexpected error, OSError: [Errno 28] No space left on "
        f"device (traceback in {log})\n"
    )
    assert "Traceback" in log.read_text()


def test_an_unexpected_error_printing_the_banner_stops_the_mesh(
    meshes: list[_FakeMesh],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken_banner(mesh: object) -> str:
        raise KeyError("auth")

    monkeypatch.setattr(cli, "_banner", broken_banner)

    assert cli.run(tmp_path) == 1

    assert meshes[0].stopped and not meshes[0].started
    assert "Traceback" not in capsys.readouterr().err


def test_a_mesh_without_envoy_prints_its_banner_and_runs(
    meshes: list[_FakeMesh], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(tmp_path) == 1  # its fake auth "dies" at once

    out = capsys.readouterr().out
    assert "VaultPay mesh is up" in out
    assert "auth exited with code 1" in out
    assert meshes[0].stopped


def test_a_startup_error_is_printed_without_a_traceback(
    meshes: list[_FakeMesh],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def refuse(self: _FakeMesh) -> _FakeMesh:
        raise StartupError("ports in use: wallet gRPC 127.0.0.1:50052")

    monkeypatch.setattr(_FakeMesh, "start", refuse)

    assert cli.run(tmp_path) == 1

    assert capsys.readouterr().err == "error: ports in use: wallet gRPC 127.0.0.1:50052\n"
    assert not (tmp_path / "log" / cli.SUPERVISOR_LOG).exists()
