"""A TCP proxy in front of PostgreSQL that loses one connection's reply on purpose: the
statement reaches the server (which runs and commits it), its answer never reaches the client,
then the link is cut. The client's view of a COMMIT whose reply was lost.

    link = PgLink(dbs.host, dbs.port)
    await link.open()                      # connect through replace(dbs, port=link.port)
    pipe = await link.pipe_of(admin, pid)  # the proxied connection of backend `pid`
    pipe.swallow_replies_after_next_execute()
    ... the client sends its statement; PostgreSQL commits it; no reply arrives ...
    await pipe.executed.wait()
    pipe.cut()                             # the client sees its connection end mid-call
    await link.close()

Which connection is which: PostgreSQL knows each backend's client port
(pg_stat_activity.client_port), which is the local port of the proxy's upstream socket.

The client->server stream is parsed into frontend messages (the untyped startup packets, then
type byte + length), so "after the next Execute" is exact: the server's answer to a Parse/
Describe round trip (asyncpg prepares a statement before it binds and executes it) still
passes; everything the server sends once the Execute has gone through is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["PgLink", "Pipe"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


class Pipe:
    """One proxied connection."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self._client_reader, self._client_writer = client
        self._server_reader, self._server_writer = server
        self.upstream_port: int = self._server_writer.get_extra_info("sockname")[1]
        self._buffer = bytearray()
        self._startup = True  # untyped packets until the StartupMessage
        self._armed = False
        self.executed = asyncio.Event()  # an Execute went through once armed
        self.swallowed = 0  # server bytes dropped since
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._client_to_server()),
            asyncio.create_task(self._server_to_client()),
        ]

    def swallow_replies_after_next_execute(self) -> None:
        """From the next Execute message the client sends (that one included), nothing the
        server sends reaches the client. Arm it while the connection is idle."""
        self._armed = True

    def cut(self) -> None:
        """Both sockets closed: the client reads the end of its connection."""
        for writer in (self._client_writer, self._server_writer):
            writer.transport.abort()

    async def wait_closed(self) -> None:
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _frontend_messages(self, data: bytes) -> list[bytes]:
        """The type bytes of the frontend messages `data` completes (b"" for startup ones)."""
        self._buffer += data
        kinds: list[bytes] = []
        while True:
            if self._startup:
                if len(self._buffer) < 8:
                    return kinds
                length = int.from_bytes(self._buffer[:4], "big")
                if len(self._buffer) < length:
                    return kinds
                code = int.from_bytes(self._buffer[4:8], "big")
                self._startup = code in (_SSL_REQUEST, _GSSENC_REQUEST)
                del self._buffer[:length]
                kinds.append(b"")
                continue
            if len(self._buffer) < 5:
                return kinds
            length = int.from_bytes(self._buffer[1:5], "big")
            if len(self._buffer) < 1 + length:
                return kinds
            kinds.append(bytes(self._buffer[:1]))
            del self._buffer[: 1 + length]

    async def _client_to_server(self) -> None:
        try:
            while data := await self._client_reader.read(65536):
                if b"E" in self._frontend_messages(data) and self._armed:
                    # Set before the Execute is forwarded: no answer to it can slip through.
                    self._armed = False
                    self.executed.set()
                self._server_writer.write(data)
                await self._server_writer.drain()
        except OSError:
            pass
        finally:
            self._server_writer.transport.abort()

    async def _server_to_client(self) -> None:
        try:
            while data := await self._server_reader.read(65536):
                if self.executed.is_set():
                    self.swallowed += len(data)
                    continue
                self._client_writer.write(data)
                await self._client_writer.drain()
        except OSError:
            pass
        finally:
            self._client_writer.transport.abort()


class PgLink:
    """The proxy: listens on 127.0.0.1:`port`, one `Pipe` per accepted connection."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._server: asyncio.Server | None = None
        self.pipes: list[Pipe] = []
        self.port = 0

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for pipe in self.pipes:
            pipe.cut()
        for pipe in self.pipes:
            await pipe.wait_closed()
        if server is not None:
            await server.wait_closed()

    async def pipe_of(self, admin: Any, pid: int) -> Pipe:
        """The proxied connection of backend `pid` (`admin`: an asyncpg connection that sees
        every session's client port, a superuser's)."""
        port = await admin.fetchval("SELECT client_port FROM pg_stat_activity WHERE pid = $1", pid)
        [pipe] = [p for p in self.pipes if p.upstream_port == port]
        return pipe

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        pipe = Pipe((reader, writer), upstream)
        self.pipes.append(pipe)
        pipe.start()
