"""Loopback ports for tests, held so that no other process takes them between the pick and
their use (what a port that was merely free a moment ago cannot promise).

    port = closed_port()                 # nothing will ever listen there: refused at once
    with ListenerPort() as held:         # a port for a server that binds it itself
        start_server(f"127.0.0.1:{held.port}")
        ...wait until it serves...
        held.release()                   # or at the end of the block

Linux rules, as the devstack's `PortHold` (deploy/local/vaultpay_devstack/procs.py) relies on:
the kernel never makes a port a socket has bound the local port of an outgoing connection; a
bound socket that never listens answers connections with a reset (ECONNREFUSED); and it keeps
out every other bind unless both sockets set SO_REUSEADDR (gRPC and Envoy listeners do).
"""

from __future__ import annotations

import functools
import socket

from vaultpay_devstack.procs import LOOPBACK

__all__ = ["ListenerPort", "closed_port"]


@functools.cache
def _closed_socket() -> socket.socket:
    # No SO_REUSEADDR: no listener can bind this port while the socket lives.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    return sock


def closed_port() -> int:
    """A port on 127.0.0.1 that stays closed for the rest of the test session: bound, never
    listening, so a connection to it is refused at once and nothing else can take it."""
    port: int = _closed_socket().getsockname()[1]
    return port


class ListenerPort:
    """A free port on 127.0.0.1 (picked by the kernel) held for a server that will bind it:
    a bound socket with SO_REUSEADDR that never listens keeps outgoing connections and
    non-reusing binds off it, while the server's own bind succeeds. Release it once the
    server listens (its listener then holds the port)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((LOOPBACK, 0))
        except BaseException:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]

    def release(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()

    def __enter__(self) -> ListenerPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
