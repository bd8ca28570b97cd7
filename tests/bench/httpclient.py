"""A tiny asyncio HTTP/1.1 keep-alive client: one connection, one request at a time.

Enough for the gateway's JSON API: Content-Length or chunked responses, `Connection: close`
honoured (the next request reconnects). Requests are pre-encoded bytes so the load generator
spends as little CPU as possible per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

__all__ = ["HttpConnection", "HttpResponse", "HttpStatusError", "encode_request"]

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes


class HttpStatusError(Exception):
    """A response arrived, but not with a 2xx status."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


def encode_request(
    method: str,
    path: str,
    *,
    host: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """One HTTP/1.1 request as bytes (keep-alive is the HTTP/1.1 default)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in {"POST", "PUT", "PATCH"}:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HttpConnection:
    """One keep-alive connection to host:port; reconnects after an error or `close`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> HttpResponse:
        """Sends one pre-encoded request and reads the whole response.

        Raises HttpStatusError on a non-2xx status, OSError/IncompleteReadError on transport
        failures (the connection is dropped so the next call starts clean).
        """
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=_MAX_HEAD
            )
        reader, writer = self._reader, self._writer
        assert reader is not None
        try:
            writer.write(raw)
            response, keep_alive = await _read_response(reader)
        except BaseException:
            self._drop()
            raise
        if not keep_alive:
            self._drop()
        if not 200 <= response.status < 300:
            raise HttpStatusError(response.status, response.body)
        return response

    async def close(self) -> None:
        writer = self._writer
        self._drop()
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[HttpResponse, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ConnectionError(f"not an HTTP/1.x response: {status_line[:80]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    keep_alive = parts[0] == b"HTTP/1.1"
    for line in header_lines:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            keep_alive = value == b"keep-alive" or (keep_alive and value != b"close")
    if chunked:
        body = await _read_chunked(reader)
    elif length is not None:
        body = await reader.readexactly(length)
    elif status in {204, 304} or 100 <= status < 200:
        body = b""
    else:  # delimited by the end of the connection
        body, keep_alive = await reader.read(), False
    return HttpResponse(status, body), keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
