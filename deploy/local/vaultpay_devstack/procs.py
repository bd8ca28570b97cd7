"""Child processes for the local mesh: started in their own session, stopped by PID.

Every process the mesh starts is a `ManagedProcess`: its own session (so Ctrl-C in the terminal
reaches only the supervisor, which then stops children in order), stdout and stderr appended to
one log file, and a parent-death signal (through `setpriv`, which execs, so the PID stays the
child's) so that nothing outlives a supervisor that was killed outright.

A child that runs as another OS user (PostgreSQL refuses root) is switched by `setpriv` too, not
by Popen's `user=`/`group=`: those make CPython fork instead of vfork, and a forked child runs
the parent's fork handlers, which in a process with gRPC threads (the tests) can crash the
child before it execs.

    proc = ManagedProcess.start("redis", ["redis-server", "--port", "6380"], log=Path("redis.log"))
    wait_until(lambda: port_accepts(6380), what="redis", proc=proc)
    proc.stop()
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "ManagedProcess",
    "MissingToolError",
    "PortHold",
    "StartupError",
    "boot_id",
    "free_port",
    "free_ports",
    "log_tail",
    "os_user_ids",
    "pid_alive",
    "port_accepts",
    "port_is_free",
    "process_start_time",
    "require_tool",
    "run_as_user",
    "setpriv_prefix",
    "wait_until",
]

LOOPBACK = "127.0.0.1"


# What a child inherits from the supervisor's environment: the basics of a process, never the
# supervisor's own settings (VAULTPAY_POSTGRES_ADMIN_URL holds a superuser password).
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


def base_env() -> dict[str, str]:
    """The environment every child starts from: an allowlist, not a copy."""
    return {key: os.environ[key] for key in _INHERITED if key in os.environ}


class MissingToolError(RuntimeError):
    """A binary the local mesh needs is not installed; the message names the package."""


class StartupError(RuntimeError):
    """A component did not become ready; the message carries the tail of its log."""


def require_tool(name: str, *, package: str, candidates: Sequence[Path] = ()) -> Path:
    """The path of executable `name` (first of `candidates`, then PATH) or a `MissingToolError`."""
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise MissingToolError(
        f"`{name}` not found. Install it with `apt-get install -y {package}` "
        f"(Debian/Ubuntu package {package!r}), or point the mesh at an existing server."
    )


# Ports are picked below the kernel's ephemeral range (32768-60999 by default), so an outgoing
# connection cannot grab one between choosing it and the child process binding it.
_PORT_RANGE = (20000, 32000)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that nothing listens on right now."""
    rng = random.SystemRandom()
    chosen: list[int] = []
    for _ in range(2000):
        port = rng.randrange(*_PORT_RANGE)
        if port not in chosen and port_is_free(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise StartupError(f"no {count} free ports in {_PORT_RANGE[0]}-{_PORT_RANGE[1]}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing has `host:port` bound now. Probed without SO_REUSEADDR: with it, a
    port another run holds for its listener (`PortHold`: bound, not listening, reusable)
    read as free, and both runs took it (review of 2026-12-05); a port in TIME_WAIT reads as
    busy too, which only skips it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class PortHold:
    """Fixed ports kept from outgoing connections until their listeners have bound them.

    A fixed port inside the kernel's ephemeral range (`make run`'s 50051-50054 lie in
    32768-60999) can become the local port of any outgoing connection, such as auth's
    connection to PostgreSQL made while wallet is still starting; the listener's bind then
    fails with "address in use" until that connection closes. Linux never picks a port that
    a socket has bound for an outgoing connection, and a bound socket that does not listen
    does not stop a listener with SO_REUSEADDR (gRPC, Envoy and PostgreSQL set it) from
    binding the same port. So each port is held by such a socket from the busy-port check
    until its listener is up (the mesh holds them all until the whole mesh is up). These are
    Linux's rules, as the rest of the devstack assumes: on BSD and macOS the listener would need
    SO_REUSEPORT as well.

        with PortHold({"wallet gRPC": 50052}) as held:   # StartupError naming busy ports
            ...start wallet, wait until it serves...
            held.release(50052)                        # or at the end of the block
    """

    def __init__(self, ports: Mapping[str, int], host: str = LOOPBACK) -> None:
        self._sockets: dict[int, socket.socket] = {}
        busy: list[str] = []
        named: dict[int, str] = {}
        for what, port in ports.items():
            if port in named:  # two binds with SO_REUSEADDR would both succeed
                raise StartupError(f"{named[port]} and {what} are both set to port {port}")
            named[port] = what
        try:
            for what, port in ports.items():
                if not self._hold(host, port):
                    busy.append(f"{what} {host}:{port}")
        except BaseException:
            self.close()
            raise
        if busy:
            self.close()
            # `make status`/`make stop`: a fresh machine may have no `python`, and the
            # devstack is installed in the checkout's virtualenv only.
            raise StartupError(
                f"ports in use: {', '.join(busy)}. Is another mesh running? (`make status` /"
                " `make stop` in the checkout that runs it, or `.venv/bin/python -m"
                " vaultpay_devstack.cli status` there) Otherwise move ours:"
                " VAULTPAY_GATEWAY_PORT, VAULTPAY_ADMIN_PORT, VAULTPAY_<SERVICE>_PORT"
            )

    def _hold(self, host: str, port: int) -> bool:
        """Binds `port`; False when something else has it (any other failure is raised)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                return False
            raise StartupError(f"cannot hold {host}:{port}: {exc.strerror}") from exc
        self._sockets[port] = sock
        return True

    def release(self, port: int) -> None:
        """Lets go of `port` (its listener has bound it); a port not held is ignored."""
        sock = self._sockets.pop(port, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for port in list(self._sockets):
            self.release(port)

    def __enter__(self) -> PortHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while a process with this PID exists (and is not a zombie we could reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat); None when
    there is no such process. With the pid (and the boot) it names one process: a process that
    reuses the pid later started later."""
    try:
        line = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return _start_time_in_stat(line)


def _start_time_in_stat(line: bytes) -> int | None:
    # `pid (comm) state ppid ...`: comm is the program's name, which may hold spaces and
    # parentheses, so the fields are counted after its last ')'. The first of them is field 3
    # (state); field 22 (starttime) is the 20th.
    end_of_comm = line.rfind(b")")
    if end_of_comm < 0:
        return None
    fields = line[end_of_comm + 1 :].split()
    try:
        return int(fields[22 - 3])
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """This boot's random id (a start time counts from the boot), or None where unreadable."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def log_tail(log: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, indented for an error message."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "    (no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (empty log)"


@dataclass
class ManagedProcess:
    """One child process: its PID, its log, and how it likes to be stopped."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 10.0
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str | Path],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 10.0,
    ) -> ManagedProcess:
        """Starts `argv` in a new session, output appended to `log`, as `user` if given."""
        log.parent.mkdir(parents=True, exist_ok=True)
        switch, popen_user = run_as_user(user)
        setpriv = setpriv_prefix([*switch, "--pdeathsig", stop_signal.name])
        command = [*setpriv, *[str(a) for a in argv]]
        with log.open("ab") as out:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"\n=== {stamp} starting {name}: {' '.join(command)}\n".encode())
            out.flush()
            popen = subprocess.Popen(  # noqa: S603 (our own argv, no shell)
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else base_env(),
                cwd=cwd,
                start_new_session=True,
                **popen_user,
            )
        return cls(name, popen, log, stop_signal, stop_timeout)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return self.popen.poll()

    def stop(self) -> None:
        """Stop signal, wait up to `stop_timeout`, then SIGKILL; idempotent once it has
        returned. A stop interrupted while it waits (a second Ctrl-C raising in the wait) is
        not counted as done: the next `stop()` signals and waits again, and escalates (it
        marked the process stopped before waiting, so the cleanup after the interruption
        skipped a child that might never exit: review of 2026-12-05)."""
        if self._stopped:
            return
        if self.popen.poll() is not None:
            self._stopped = True
            return
        try:
            os.kill(self.pid, self.stop_signal)
            self.popen.wait(timeout=self.stop_timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        self._stopped = True

    def kill(self) -> None:
        """SIGKILL at once, then reap: a crash, for fault-injection tests; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    proc: ManagedProcess | None = None,
    timeout: float = 30.0,
    interval: float = 0.05,
) -> None:
    """Polls `ready` until it is true while `proc` runs; fails fast with the log tail if
    `proc` exits (before or as it reads ready)."""
    deadline = time.monotonic() + timeout
    while True:
        # Ready, and still running: a port or socket that answers may be someone else's
        # (another run's listener on a port ours failed to bind) once our child has died.
        if ready() and (proc is None or proc.exited() is None):
            return
        if proc is not None and (code := proc.exited()) is not None:
            raise StartupError(
                f"{what} exited with code {code} before it was ready; "
                f"last lines of {proc.log}:\n{log_tail(proc.log)}"
            )
        if time.monotonic() > deadline:
            tail = f"; last lines of {proc.log}:\n{log_tail(proc.log)}" if proc else ""
            raise StartupError(f"{what} was not ready after {timeout:.0f} s{tail}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def setpriv_prefix(options: Sequence[str]) -> list[str]:
    """`setpriv <options> --`, which execs the command after it; empty without setpriv."""
    setpriv = shutil.which("setpriv")
    return [setpriv, *options, "--"] if setpriv else []


def run_as_user(user: str | None) -> tuple[list[str], dict[str, Any]]:
    """How to start a child as `user`: `setpriv` options (see `setpriv_prefix`), or, where
    setpriv is missing, Popen keyword arguments. Both are empty when no switch is needed."""
    uid, gid = os_user_ids(user)
    if uid is None or gid is None:
        return [], {}
    if shutil.which("setpriv"):
        return [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"], {}
    return [], {"user": uid, "group": gid, "extra_groups": []}


def os_user_ids(user: str | None) -> tuple[int | None, int | None]:
    """(uid, gid) to switch a child to: only when asked and only when we are root."""
    if user is None or os.geteuid() != 0:
        return None, None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise MissingToolError(f"no {user!r} OS user to run the child process as") from None
    return entry.pw_uid, entry.pw_gid
