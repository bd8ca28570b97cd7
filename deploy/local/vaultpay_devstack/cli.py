"""`make run` and friends: run the mesh in the foreground, ask whether it runs, stop it.

    python -m vaultpay_devstack.cli run      # start everything, print how to use it, wait
    python -m vaultpay_devstack.cli status   # which processes of a running mesh are alive
    python -m vaultpay_devstack.cli stop     # stop a `run` started in another terminal
    eval "$(python -m vaultpay_devstack.cli env auth)"   # a service's settings, for its CLI

`run` keeps its state (PostgreSQL data, secrets, mail, logs) in `<repo>/var` across runs. It
stops everything cleanly on Ctrl-C or SIGTERM, and exits non-zero if a child dies under it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TypedDict, cast
from urllib.parse import urlsplit, urlunsplit

from vaultpay_devstack.mesh import Mesh, MeshConfig, print_progress
from vaultpay_devstack.paths import REPO_ROOT, VAR_DIR
from vaultpay_devstack.probes import GrpcHealthProbe, http_ok
from vaultpay_devstack.procs import MissingToolError, StartupError, pid_alive

__all__ = ["main"]

STATE_FILE = Path("run") / "mesh.json"


class _State(TypedDict):
    supervisor_pid: int
    starting: bool  # written as the supervisor begins, so `make stop` finds a mesh starting
    pids: dict[str, int]
    grpc: dict[str, str]
    gateway_url: str | None
    envoy_admin: str | None
    env: dict[str, dict[str, str]]


class _ShutdownRequested(BaseException):
    """Raised from a signal handler so that start-up unwinds and stops what it started."""


def run(var_dir: Path) -> int:
    state_path = var_dir / STATE_FILE
    if (state := _read_state(state_path)) and _supervisor_alive(state["supervisor_pid"]):
        print(
            f"a mesh already runs from {var_dir} (pid {state['supervisor_pid']})", file=sys.stderr
        )
        return 1
    _trap_signals()
    mesh = Mesh(MeshConfig.from_env(var_dir=var_dir))
    try:
        _write_starting_state(state_path)  # `make stop` stops a mesh still starting too
        mesh.start()
        _write_state(state_path, mesh)
        print(_banner(mesh), flush=True)
        while not (dead := mesh.exited()):
            time.sleep(0.5)
        for name, code in dead.items():
            print_progress(f"{name} exited with code {code}; see {mesh.log_dir / name}.log")
        _ignore_signals()
        mesh.stop()
        return 1
    except _ShutdownRequested:
        _ignore_signals()
        print_progress("shutting down")
        mesh.stop()
        return 0
    except (StartupError, MissingToolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        state_path.unlink(missing_ok=True)


def status(var_dir: Path) -> int:
    state = _read_state(var_dir / STATE_FILE)
    if not state or not _supervisor_alive(state["supervisor_pid"]):
        print(f"no mesh runs from {var_dir}")
        return 3
    if state.get("starting"):
        print(f"mesh supervisor pid {state['supervisor_pid']} ({var_dir}) is starting")
        return 0
    print(f"mesh supervisor pid {state['supervisor_pid']} ({var_dir})")
    for name, pid in state["pids"].items():
        print(f"  {name:<10} pid {pid:<8} {'alive' if pid_alive(pid) else 'DEAD'}")
    for name, address in state["grpc"].items():
        with GrpcHealthProbe(address) as health:
            print(f"  {name:<10} {address:<21} {'SERVING' if health.probe() else 'NOT SERVING'}")
    if admin := state.get("envoy_admin"):
        ready = http_ok(f"{admin}/ready")
        print(f"  gateway    {state['gateway_url']:<21} {'ready' if ready else 'NOT READY'}")
    return 0


def env(var_dir: Path, service: str) -> int:
    """Prints `export` lines with the settings `service` runs with in the running mesh."""
    state = _read_state(var_dir / STATE_FILE)
    if not state or not _supervisor_alive(state["supervisor_pid"]):
        print(f"no mesh runs from {var_dir}", file=sys.stderr)
        return 1
    if state.get("starting"):
        print(
            "the mesh is still starting: ask again once it prints where to reach it",
            file=sys.stderr,
        )
        return 1
    if service not in state["env"]:
        print(f"{service!r} does not run; running: {', '.join(state['env'])}", file=sys.stderr)
        return 1
    for name, value in state["env"][service].items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def stop(var_dir: Path, timeout: float = 120.0) -> int:
    state = _read_state(var_dir / STATE_FILE)
    if not state or not _supervisor_alive(pid := state["supervisor_pid"]):
        print(f"no mesh runs from {var_dir}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            print(f"mesh (pid {pid}) still running after {timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"mesh (pid {pid}) stopped")
    return 0


def _banner(mesh: Mesh) -> str:
    grpcurl = shutil.which("grpcurl") or "grpcurl"
    if Path(grpcurl).is_relative_to(REPO_ROOT):
        grpcurl = str(Path(grpcurl).relative_to(REPO_ROOT))
    lines = [
        "",
        # `make stop` (or the venv's python): the system python has no vaultpay_devstack.
        "VaultPay mesh is up. Ctrl-C here (or `make stop` in another terminal) stops it.",
    ]
    gateway = urlsplit(mesh.gateway_url).netloc
    if mesh.envoy is not None:
        lines.append(f"  gateway (JSON + gRPC)  {mesh.gateway_url}")
        lines.append(f"  API docs (Swagger UI)  {mesh.gateway_url}/docs")
        origins = ", ".join(mesh.config.cors_origins) or "none"
        lines.append(f"  CORS origins           {origins} (VAULTPAY_CORS_ORIGINS)")
    for name in mesh.services:
        lines.append(f"  {name + ' gRPC':<22} {mesh.grpc_address(name)} (direct, for debugging)")
    lines += [
        f"  mail                   {mesh.maildir}/ (one .eml per message)",
        f"  logs                   {mesh.log_dir}/",
    ]
    if mesh.infra is not None:
        lines.append(f"  PostgreSQL (admin)     {_without_password(mesh.infra.postgres.admin_dsn)}")
        lines.append(f"  Redis                  {_without_password(mesh.infra.redis.url(0))}")
    if "auth" in mesh.services and mesh.envoy is not None:
        gw, js = mesh.gateway_url, "-H 'content-type: application/json'"
        user = '"email":"asha@example.com","password":"correct-horse-42"'
        bearer = '-H "authorization: Bearer $TOKEN"'
        lines += [
            "",
            "Try it (JSON through the gateway):",
            f"  curl -s -X POST {gw}/v1/auth/register {js} \\",
            f'       -d \'{{{user},"fullName":"Asha Rao"}}\'',
            f"  TOKEN=$(curl -s -X POST {gw}/v1/auth/login {js} -d '{{{user}}}' \\",
            "       | python3 -c 'import json,sys; print(json.load(sys.stdin)"
            '["tokens"]["accessToken"])\')',
            f"  curl -s {gw}/v1/auth/me {bearer}",
        ]
        if "wallet" in mesh.services:
            lines += [
                f'  curl -s -X POST {gw}/v1/wallets {bearer} {js} -d \'{{"displayName":"Asha"}}\'',
                f"  curl -s {gw}/v1/wallets/me {bearer}",
            ]
        lines += [
            "",
            "gRPC through the same port (server reflection lists the public services):",
            f"  {grpcurl} -plaintext {gateway} list",
            f"  {grpcurl} -plaintext {bearer} {gateway} vaultpay.auth.v1.AuthService/GetMe",
        ]
    if "auth" in mesh.services:
        lines += [
            "",
            "Operator CLI (same settings as the running service):",
            '  eval "$(.venv/bin/python -m vaultpay_devstack.cli env auth)"',
            "  .venv/bin/vaultpay-auth create-superadmin --email root@example.com",
        ]
        if {"wallet", "transfer", "kyc"} <= set(mesh.services) and mesh.envoy is not None:
            lines += [
                "",
                "The whole money journey through the gateway (KYC approved by that super_admin):",
                "  .venv/bin/python docs/examples/money_journey.py --staff-email root@example.com",
            ]
    return "\n".join(lines) + "\n"


def _supervisor_alive(pid: int) -> bool:
    """True only if `pid` is alive *and* is a mesh supervisor: after a crash or reboot the
    state file's pid may belong to an unrelated process, which must never be signalled."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # `python -m vaultpay_devstack.cli run` (make run), or the `vaultpay-local` script run by
    # its interpreter (`python …/vaultpay-local run`): the script as the program run, not any
    # mention of the name (`less var/log/vaultpay-local.log` must never be signalled).
    args = cmdline.split(b"\0")
    if b"vaultpay_devstack" in cmdline:
        return True
    return (
        len(args) > 2 and Path(os.fsdecode(args[1])).name == "vaultpay-local" and args[2] == b"run"
    )


def _without_password(url: str) -> str:
    """The URL with any password masked: the banner ends up in terminals and CI logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _write_starting_state(path: Path) -> None:
    _write_state_file(
        path,
        {
            "supervisor_pid": os.getpid(),
            "starting": True,
            "pids": {},
            "grpc": {},
            "gateway_url": None,
            "envoy_admin": None,
            "env": {},
        },
    )


def _write_state(path: Path, mesh: Mesh) -> None:
    state: _State = {
        "supervisor_pid": os.getpid(),
        "starting": False,
        "pids": {name: proc.pid for name, proc in mesh.processes().items()},
        "grpc": {name: mesh.grpc_address(name) for name in mesh.services},
        "gateway_url": mesh.gateway_url if mesh.envoy else None,
        "envoy_admin": f"http://127.0.0.1:{mesh.config.admin_port}" if mesh.envoy else None,
        "env": {name: mesh.env_for(name, operator=True) for name in mesh.services},
    }
    _write_state_file(path, state)


def _write_state_file(path: Path, state: _State) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds secrets
    with os.fdopen(fd, "w") as out:
        json.dump(state, out, indent=2)
    partial.replace(path)


def _read_state(path: Path) -> _State | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return cast(_State, loaded) if isinstance(loaded, dict) else None


def _trap_signals() -> None:
    def request_shutdown(signum: int, frame: FrameType | None) -> None:
        raise _ShutdownRequested(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_shutdown)


def _ignore_signals() -> None:
    """While stopping, a second Ctrl-C must not leave children half-stopped."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vaultpay-local", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "status", "stop", "env"])
    parser.add_argument("service", nargs="?", default="auth", help="for `env` (default: auth)")
    parser.add_argument("--var", type=Path, default=VAR_DIR, help="state directory (default: var/)")
    args = parser.parse_args(argv)
    var_dir: Path = args.var.resolve()
    if args.command == "env":
        return env(var_dir, args.service)
    commands = {"run": run, "status": status, "stop": stop}
    return commands[args.command](var_dir)


if __name__ == "__main__":
    raise SystemExit(main())
