"""`make run` and friends: run the mesh in the foreground, ask whether it runs, stop it.

    python -m vaultpay_devstack.cli run      # start everything, print how to use it, wait
    python -m vaultpay_devstack.cli status   # which processes of a running mesh are alive
                                             # (exit 0 healthy, 3 none, 4 starting, 5 degraded)
    python -m vaultpay_devstack.cli stop     # stop a `run` started in another terminal
    eval "$(python -m vaultpay_devstack.cli env auth)"   # a service's settings, for its CLI

`run` keeps its state (PostgreSQL data, secrets, mail, logs) in `<repo>/var` across runs. It
stops everything cleanly on Ctrl-C or SIGTERM, and exits non-zero if a child dies under it.

The supervisor's state file (`<var>/run/mesh.json`) names it by pid *and* start time (field 22
of /proc/<pid>/stat, with the boot's id): after a crash (SIGKILL) or a reboot the pid may be
another process's, which `status`/`stop` must never take for the mesh (nor signal), and which
must not make `run` refuse. A state file without the start time (an older version's) is
matched on the supervisor's command line instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import NotRequired, TypedDict, cast
from urllib.parse import urlsplit, urlunsplit

from vaultpay_devstack.mesh import Mesh, MeshConfig, print_progress
from vaultpay_devstack.paths import REPO_ROOT, VAR_DIR
from vaultpay_devstack.probes import GrpcHealthProbe, http_ok
from vaultpay_devstack.procs import (
    MissingToolError,
    StartupError,
    boot_id,
    pid_alive,
    process_start_time,
)

__all__ = ["main"]

STATE_FILE = Path("run") / "mesh.json"

# `status` exit codes. 3 ("not running", as in LSB init scripts) is what it always answered
# without a mesh, and what `make status` answers without an installed virtualenv.
STATUS_HEALTHY = 0
STATUS_NOT_RUNNING = 3
STATUS_STARTING = 4
STATUS_DEGRADED = 5

_EXIT_CODES = f"""\
exit codes of `status`:
  {STATUS_HEALTHY}  the mesh runs and every process is alive, every service SERVING, the
     gateway ready
  {STATUS_NOT_RUNNING}  no mesh runs from the var dir
  {STATUS_STARTING}  the mesh is still starting
  {STATUS_DEGRADED}  the mesh runs degraded: a process DEAD, a service NOT SERVING or the
     gateway NOT READY
`run`: 0 after Ctrl-C/SIGTERM/`stop`, 1 when it could not start or a child died, 2 for
     a bad setting (the error names its variable)
`stop`: 0 once stopped (or when no mesh runs), 1 if it still runs after the timeout.
`env`: 0, or 1 when no mesh runs, it is still starting or the service does not run."""


class _State(TypedDict):
    supervisor_pid: int
    # The supervisor's start time (clock ticks since boot) and the boot's id: with the pid they
    # name the supervisor exactly. Missing in an older version's state file.
    supervisor_start_time: NotRequired[int]
    boot_id: NotRequired[str]
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
    if (state := _read_state(state_path)) and _supervisor_running(state):
        print(
            f"a mesh already runs from {var_dir} (pid {state['supervisor_pid']})", file=sys.stderr
        )
        return 1
    try:
        config = MeshConfig.from_env(var_dir=var_dir)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _trap_signals()
    mesh = Mesh(config)
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
    except Exception as exc:
        # Whatever failed once the mesh was built (a full disk writing the state file, a bug
        # in the banner) stops what runs: the state file goes in `finally`, after which
        # `make stop` no longer finds the mesh. A failed `start` stopped itself (a no-op).
        _ignore_signals()
        mesh.stop()
        print(f"error: {_failure(exc, mesh.log_dir)}", file=sys.stderr)
        return 1
    finally:
        state_path.unlink(missing_ok=True)


# Where `run` writes the traceback of an error it did not expect (in the mesh's log folder).
SUPERVISOR_LOG = "supervisor.log"


def _failure(exc: Exception, log_dir: Path) -> str:
    """What `run` says of `exc`: the message of an expected error (StartupError,
    MissingToolError), otherwise a short one with the traceback written to SUPERVISOR_LOG
    (printed here only when that cannot be written, e.g. on a full disk)."""
    if isinstance(exc, StartupError | MissingToolError):
        return str(exc)
    summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    trace = "".join(traceback.format_exception(exc))
    log = log_dir / SUPERVISOR_LOG
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as out:
            out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} the mesh stopped on\n{trace}")
    except OSError:
        return f"the mesh stopped on an unexpected error:\n{trace.rstrip()}"
    return f"the mesh stopped on an unexpected error, {summary} (traceback in {log})"


def status(var_dir: Path) -> int:
    """Prints what runs; exits STATUS_HEALTHY, _NOT_RUNNING, _STARTING or _DEGRADED."""
    state = _read_state(var_dir / STATE_FILE)
    if not state or not _supervisor_running(state):
        print(f"no mesh runs from {var_dir}")
        return STATUS_NOT_RUNNING
    if state.get("starting"):
        print(f"mesh supervisor pid {state['supervisor_pid']} ({var_dir}) is starting")
        return STATUS_STARTING
    print(f"mesh supervisor pid {state['supervisor_pid']} ({var_dir})")
    healthy = True
    for name, pid in state["pids"].items():
        alive = pid_alive(pid)
        healthy = healthy and alive
        print(f"  {name:<10} pid {pid:<8} {'alive' if alive else 'DEAD'}")
    for name, address in state["grpc"].items():
        with GrpcHealthProbe(address) as health:
            serving = health.probe()
        healthy = healthy and serving
        print(f"  {name:<10} {address:<21} {'SERVING' if serving else 'NOT SERVING'}")
    if admin := state.get("envoy_admin"):
        ready = http_ok(f"{admin}/ready")
        healthy = healthy and ready
        print(f"  gateway    {state['gateway_url']:<21} {'ready' if ready else 'NOT READY'}")
    if not healthy:
        print("degraded")
        return STATUS_DEGRADED
    return STATUS_HEALTHY


def env(var_dir: Path, service: str) -> int:
    """Prints `export` lines with the settings `service` runs with in the running mesh."""
    state = _read_state(var_dir / STATE_FILE)
    if not state or not _supervisor_running(state):
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
    masked = _stdout_is_terminal()
    for line in _export_lines(state["env"][service], masked=masked):
        print(line)
    if masked:
        print(
            "(secrets masked on a terminal; "
            f'`eval "$(.venv/bin/python -m vaultpay_devstack.cli env {service})"` exports them)',
            file=sys.stderr,
        )
    return 0


# Settings whose whole value is a secret: keys, secrets, passwords, tokens, client credentials.
_SECRET_SETTING = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CLIENTS")


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _export_lines(settings: dict[str, str], *, masked: bool) -> list[str]:
    """`export NAME=value` lines of a service's settings. `masked` (stdout is a terminal, where
    the output stays on screen and in scrollback: review of 2026-12-05, the bare command printed
    the key-encryption key and every password in clear) hides every secret's value and the
    password of every URL; `eval "$(... env auth)"` reads a pipe and gets them whole."""
    lines = []
    for name, value in settings.items():
        if masked:
            value = "***" if _SECRET_SETTING.search(name) else _without_password(value)
        lines.append(f"export {name}={shlex.quote(value)}")
    return lines


def stop(var_dir: Path, timeout: float = 120.0) -> int:
    state = _read_state(var_dir / STATE_FILE)
    if not state or not _supervisor_running(state):
        print(f"no mesh runs from {var_dir}")
        return 0
    pid = state["supervisor_pid"]
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
    # Read only with Envoy: `mesh.gateway_url` raises when it does not run (no gateway yet).
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
        gateway = urlsplit(gw).netloc
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
                "  .venv/bin/python docs/examples/money_journey.py --staff-email root@example.com \\",
                # This mesh's gateway and mail, not the script's defaults: with the gateway
                # moved off 8080 (what the ports-in-use error advises), the defaults sent the
                # staff password to whichever mesh holds 8080 (review of 2026-12-05).
                f"       --gateway {urlsplit(mesh.gateway_url).netloc}"
                f" --maildir {shlex.quote(str(mesh.maildir))}",
            ]
    return "\n".join(lines) + "\n"


def _supervisor_running(state: _State) -> bool:
    """True only while the supervisor that wrote `state` runs (see `_supervisor_alive`)."""
    return _supervisor_alive(
        state["supervisor_pid"], state.get("supervisor_start_time"), state.get("boot_id")
    )


def _supervisor_alive(pid: int, start_time: int | None = None, boot: str | None = None) -> bool:
    """True only if `pid` is alive *and* is the mesh supervisor: after a crash (SIGKILL) or a
    reboot the state file's pid may belong to an unrelated process, which must never be
    signalled (nor make `run` refuse).

    With the `start_time` (and `boot`) the supervisor recorded, the process must be that one:
    a process that reuses the pid started later. Without them (a state file of an older
    version) its command line must be a supervisor's (`_runs_the_supervisor`)."""
    if not pid_alive(pid):
        return False
    if start_time is not None:
        if boot is not None and boot != boot_id():
            return False  # written before a reboot: its pid and start time mean nothing now
        return process_start_time(pid) == start_time
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return _runs_the_supervisor(cmdline.rstrip(b"\0").split(b"\0"))


# Options of the Python interpreter that take a separate value (`-X dev`, `-W error`).
_PYTHON_OPTIONS_WITH_VALUE = {b"-X", b"-W", b"--check-hash-based-pycs"}


def _runs_the_supervisor(argv: list[bytes]) -> bool:
    """True for the command lines that start a supervisor: `python -m vaultpay_devstack.cli
    run` (`make run`, the README) and the `vaultpay-local` script run by its interpreter
    (`python …/bin/vaultpay-local run`, which is what a `vaultpay-local run` runs), each with
    interpreter options before and `--var DIR` around `run`. A process that merely mentions
    the name (`tail -f …/vaultpay_devstack/mesh.py`, `less var/log/vaultpay-local.log`) is not."""
    if not argv or not Path(os.fsdecode(argv[0])).name.startswith("python"):
        return False
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == b"-m" or (arg.startswith(b"-m") and not arg.startswith(b"--")):
            module = arg[2:] or (argv[index + 1] if index + 1 < len(argv) else b"")
            rest = argv[index + (1 if arg[2:] else 2) :]
            return module == b"vaultpay_devstack.cli" and _command_is_run(rest)
        if arg in _PYTHON_OPTIONS_WITH_VALUE:
            index += 2
        elif arg.startswith(b"-") and arg not in (b"-", b"-c") and not arg.startswith(b"-c"):
            index += 1  # a flag such as -u, -B, -I, -Xdev
        elif arg.startswith(b"-"):
            return False  # `python -c …` or a program on stdin
        else:  # the script run
            script = Path(os.fsdecode(arg)).name
            return script == "vaultpay-local" and _command_is_run(argv[index + 1 :])
    return False


def _command_is_run(args: list[bytes]) -> bool:
    """True when the CLI's command (its first positional argument) is `run`."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == b"--var":
            index += 2
        elif arg.startswith(b"-"):
            index += 1
        else:
            return arg == b"run"
    return False


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
            **_supervisor_identity(),
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
        **_supervisor_identity(),
        "starting": False,
        "pids": {name: proc.pid for name, proc in mesh.processes().items()},
        "grpc": {name: mesh.grpc_address(name) for name in mesh.services},
        "gateway_url": mesh.gateway_url if mesh.envoy else None,
        "envoy_admin": f"http://127.0.0.1:{mesh.config.admin_port}" if mesh.envoy else None,
        "env": {name: mesh.env_for(name, operator=True) for name in mesh.services},
    }
    _write_state_file(path, state)


class _Identity(TypedDict):
    supervisor_pid: int
    supervisor_start_time: NotRequired[int]
    boot_id: NotRequired[str]


def _supervisor_identity() -> _Identity:
    """This process as the state file names it: pid, start time and boot (where readable)."""
    identity: _Identity = {"supervisor_pid": os.getpid()}
    if (started := process_start_time(os.getpid())) is not None:
        identity["supervisor_start_time"] = started
        if (boot := boot_id()) is not None:
            identity["boot_id"] = boot
    return identity


def _write_state_file(path: Path, state: _State) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds secrets
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(state, out, indent=2)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk leaves no half-written copy behind
        raise


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
    parser = argparse.ArgumentParser(
        prog="vaultpay-local",
        description=__doc__.splitlines()[0],
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        choices=["run", "status", "stop", "env"],
        help="run: start the mesh and wait; status: what runs (exit codes below); "
        "stop: stop a `run` of another terminal; env: a service's settings as export lines",
    )
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
