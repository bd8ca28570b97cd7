"""The devstack's `PortHold`: fixed ports kept from outgoing connections until their
listeners bind them (the cause of a `make run` whose wallet could not bind 127.0.0.1:50052)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from vaultpay_devstack.procs import LOOPBACK, PortHold, StartupError, free_ports


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen()
    return sock


def test_a_port_something_listens_on_is_refused_by_name() -> None:
    busy, free = free_ports(2)
    with _listener(busy), pytest.raises(StartupError) as refused:
        PortHold({"wallet gRPC": busy, "auth gRPC": free})
    assert f"wallet gRPC {LOOPBACK}:{busy}" in str(refused.value)
    assert "auth gRPC" not in str(refused.value)
    with PortHold({"auth gRPC": free}):  # the free one was let go after the refusal
        pass


def test_one_port_wanted_twice_is_refused_by_both_names() -> None:
    (port,) = free_ports(1)
    with pytest.raises(StartupError, match="gateway and Envoy admin are both set to port"):
        PortHold({"gateway": port, "Envoy admin": port})
    with PortHold({"gateway": port}):  # nothing was left bound
        pass


def test_a_listener_binds_a_held_port_and_the_port_is_let_go() -> None:
    (port,) = free_ports(1)
    with PortHold({"wallet gRPC": port}) as held:
        with _listener(port):
            pass
        held.release(port)
        held.release(port)  # twice is harmless
    with _listener(port):
        pass


_IN_NAMESPACE = textwrap.dedent(
    """
    import json, socket, subprocess, sys
    from vaultpay_devstack.procs import PortHold

    held, other, server_port = 50098, 50099, 20001
    hold = PortHold({"wallet gRPC": held}) if sys.argv[1] == "hold" else None
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
        f.write(f"{held} {other}")
    server = socket.create_server(("127.0.0.1", server_port))

    ports, conns = [], []
    for _ in range(2):
        try:
            conns.append(socket.create_connection(("127.0.0.1", server_port)))
        except OSError as exc:
            ports.append(exc.errno)
        else:
            ports.append(conns[-1].getsockname()[1])
    print(json.dumps(sorted(ports)))
    """
)


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")),
    reason="needs root, unshare and ip for a private network namespace",
)
def test_an_outgoing_connection_never_takes_a_held_port() -> None:
    """In a private network namespace whose ephemeral range is just two ports, the first of
    them held: connections take only the second, where without the hold they take both."""

    def local_ports(mode: str) -> list[int]:
        done = subprocess.run(
            ["unshare", "--net", sys.executable, "-c", _IN_NAMESPACE, mode],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0 and "unshare failed" in done.stderr:
            pytest.skip(f"no network namespace here: {done.stderr.strip()}")
        assert done.returncode == 0, done.stderr
        ports: list[int] = json.loads(done.stdout)
        return ports

    assert local_ports("free") == [50098, 50099]
    assert local_ports("hold") == sorted([50099, errno.EADDRNOTAVAIL])
