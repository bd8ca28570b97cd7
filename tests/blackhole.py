"""A TCP proxy that can go silent: what a peer (a gRPC service, PostgreSQL) looks like to a
client once its host died or its route dropped without a reset: no FIN, no RST, every byte
acknowledged by the proxy's kernel and none answered."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["BlackholeProxy"]


class BlackholeProxy:
    """Forwards TCP to `upstream` until `blackhole()`; then reads and drops every byte, both
    ways, and closes nothing."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._silent = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0
        self.chunks_up = 0  # reads forwarded from the client to the peer (pings among them)
        self.connections = 0  # connections accepted from the client

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def blackhole(self) -> None:
        self._silent = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        self._writers += [writer, up_writer]
        for source, sink, up in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pump(source, sink, up))
            self._tasks.add(task)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, up: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                if not self._silent:
                    self.chunks_up += up
                    sink.write(chunk)
                    await sink.drain()
