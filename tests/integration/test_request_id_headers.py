"""When a service's response headers (which carry `x-request-id`) leave it, seen by a real
grpc.aio client: a unary call's headers go out with its reply, never while its handler runs,
and a refusal carries the id in the trailers of its status.

Why it matters: response headers that reach Envoy before the handler has answered leave Envoy,
if the service then dies, only a stream reset to forward (the client reads INTERNAL); with
nothing sent, Envoy answers UNAVAILABLE, an unknown outcome the client retries (the bank test
counts INTERNAL as a violation).

"No headers yet" is observed after a full round trip of another call on the same connection:
HTTP/2 keeps a connection's frames in order, so headers the server had sent before answering
that call have reached the client by then. The `context.write` stream, whose headers do go out
when it starts, shows that the probe sees headers that were sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from tests.support import rpc_failure
from vaultpay_common.errors import NotFoundError
from vaultpay_common.grpc.errors import ErrorInterceptor
from vaultpay_common.grpc.request_context import RequestContextInterceptor

SERVICE = "test.v1.Held"
PATIENCE_S = 5.0


class NoSuchThingError(NotFoundError):
    reason = "NO_SUCH_THING"


@dataclass
class Gate:
    """Holds a handler until the test lets it go: `entered` once it runs, then it waits for
    `released`."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def hold(self) -> None:
        self.entered.set()
        await self.released.wait()

    async def until_entered(self) -> None:
        await asyncio.wait_for(self.entered.wait(), PATIENCE_S)


def _outcome(request: bytes) -> bytes:
    if request == b"refuse":
        raise NoSuchThingError("no such thing")
    if request == b"bug":
        raise RuntimeError("a bug")
    return b"reply to " + request


def _handlers(gate: Gate) -> grpc.GenericRpcHandler:
    async def unary(request: bytes, context: Any) -> bytes:
        await gate.hold()
        return _outcome(request)

    async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
        parts = [part async for part in requests]
        await gate.hold()
        return _outcome(b"".join(parts))

    async def yielding(request: bytes, context: Any) -> AsyncIterator[bytes]:
        await gate.hold()
        if request == b"refuse":
            raise NoSuchThingError("no such thing")
        for _ in range(int(request)):
            yield b"item"

    async def writing(request: bytes, context: Any) -> None:
        await gate.hold()
        await context.write(b"written")

    async def ping(request: bytes, context: Any) -> bytes:
        return b"pong"

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Yielding": grpc.unary_stream_rpc_method_handler(yielding),
            "Writing": grpc.unary_stream_rpc_method_handler(writing),
            "Ping": grpc.unary_unary_rpc_method_handler(ping),
        },
    )


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def channel(gate: Gate) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[RequestContextInterceptor(), ErrorInterceptor("kit")])
    server.add_generic_rpc_handlers((_handlers(gate),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        gate.released.set()
        await server.stop(None)


def _method(name: str) -> str:
    return f"/{SERVICE}/{name}"


def _ids(metadata: Any) -> list[str]:
    return [str(value) for key, value in metadata or () if key == "x-request-id"]


async def _headers_arrived(channel: grpc.aio.Channel, headers: asyncio.Future[Any]) -> bool:
    """Whether `headers` (a call's initial metadata, awaited) has arrived, after a round trip
    of another call on the same connection."""
    assert await channel.unary_unary(_method("Ping"))(b"", timeout=PATIENCE_S) == b"pong"
    for _ in range(20):  # let the completions already delivered run
        if headers.done():
            return True
        await asyncio.sleep(0)
    return headers.done()


async def _held_without_headers(
    channel: grpc.aio.Channel, gate: Gate, call: Any
) -> asyncio.Future[Any]:
    """Waits for the handler to be held, checks no headers reached the client, lets it go."""
    headers: asyncio.Future[Any] = asyncio.ensure_future(call.initial_metadata())
    await gate.until_entered()
    assert not await _headers_arrived(channel, headers), "headers were sent before the answer"
    gate.released.set()
    return headers


def _request_id(name: str) -> tuple[tuple[str, str]]:
    return (("x-request-id", f"req-{name}"),)


Start = Callable[[grpc.aio.Channel, bytes, str], Any]


async def _answer(call: Any) -> bytes:
    if isinstance(call, grpc.aio.UnaryStreamCall):
        reply: bytes = await call.read()
        assert await call.read() is grpc.aio.EOF
        return reply
    answered: bytes = await call
    return answered


def _unary(channel: grpc.aio.Channel, request: bytes, name: str) -> Any:
    # Called as a server stream (the same frames on the wire): grpc.aio's unary-unary client
    # hands out the headers only with the whole answer, a stream client as they arrive.
    return channel.unary_stream(_method("Unary"))(
        request, metadata=_request_id(name), timeout=PATIENCE_S
    )


def _client_stream(channel: grpc.aio.Channel, request: bytes, name: str) -> Any:
    async def parts() -> AsyncIterator[bytes]:
        yield request

    return channel.stream_unary(_method("ClientStream"))(
        parts(), metadata=_request_id(name), timeout=PATIENCE_S
    )


@pytest.mark.parametrize("start", [_unary, _client_stream], ids=["unary", "client-stream"])
async def test_a_reply_brings_the_request_id_in_its_trailers_sent_only_with_it(
    channel: grpc.aio.Channel, gate: Gate, start: Start
) -> None:
    call = start(channel, b"hello", "ok")
    headers = await _held_without_headers(channel, gate, call)

    assert await _answer(call) == b"reply to hello"
    assert _ids(await headers) == []  # the headers went out with the reply, in one batch
    assert _ids(await call.trailing_metadata()) == ["req-ok"]


@pytest.mark.parametrize("start", [_unary, _client_stream], ids=["unary", "client-stream"])
@pytest.mark.parametrize(
    ("request_body", "code", "reason"),
    [
        (b"refuse", grpc.StatusCode.NOT_FOUND, "NO_SUCH_THING"),
        (b"bug", grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
async def test_a_refusal_brings_the_request_id_in_the_trailers_of_its_status(
    channel: grpc.aio.Channel,
    gate: Gate,
    start: Start,
    request_body: bytes,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    name = request_body.decode()
    call = start(channel, request_body, name)
    headers = await _held_without_headers(channel, gate, call)

    failure = await rpc_failure(_answer(call))
    assert (failure.code, failure.reason, failure.domain) == (code, reason, "vaultpay.kit")
    assert _ids(await headers) == []  # trailers-only: no headers before the status
    assert _ids(await call.trailing_metadata()) == [f"req-{name}"]


async def test_a_yielding_stream_sends_its_headers_with_its_first_message(
    channel: grpc.aio.Channel, gate: Gate
) -> None:
    call = channel.unary_stream(_method("Yielding"))(
        b"2", metadata=_request_id("stream"), timeout=PATIENCE_S
    )
    headers = await _held_without_headers(channel, gate, call)

    assert [item async for item in call] == [b"item", b"item"]
    assert _ids(await headers) == ["req-stream"]
    assert await call.code() == grpc.StatusCode.OK


async def test_a_yielding_stream_without_messages_still_sends_the_request_id(
    channel: grpc.aio.Channel, gate: Gate
) -> None:
    gate.released.set()
    call = channel.unary_stream(_method("Yielding"))(
        b"0", metadata=_request_id("empty"), timeout=PATIENCE_S
    )

    assert [item async for item in call] == []
    assert await call.code() == grpc.StatusCode.OK
    # In the headers; and in the trailers too, which is where a client finds it when the
    # transport folded an empty stream's headers into a trailers-only answer (seen once, in a
    # full suite on a loaded machine: no headers at all).
    headers, trailers = _ids(await call.initial_metadata()), _ids(await call.trailing_metadata())
    assert trailers == ["req-empty"]
    assert headers in (["req-empty"], [])


async def test_a_stream_refused_before_its_first_message_is_a_status_with_the_request_id(
    channel: grpc.aio.Channel, gate: Gate
) -> None:
    call = channel.unary_stream(_method("Yielding"))(
        b"refuse", metadata=_request_id("refused"), timeout=PATIENCE_S
    )
    headers = await _held_without_headers(channel, gate, call)

    failure = await rpc_failure(call.read())
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "NO_SUCH_THING")
    assert _ids(await headers) == []
    assert _ids(await call.trailing_metadata()) == ["req-refused"]


async def test_a_writing_stream_sends_the_request_id_when_it_starts(
    channel: grpc.aio.Channel, gate: Gate
) -> None:
    """Its first write would send headers without the id; also shows the probe sees headers."""
    call = channel.unary_stream(_method("Writing"))(
        b"", metadata=_request_id("writer"), timeout=PATIENCE_S
    )
    headers = asyncio.ensure_future(call.initial_metadata())
    await gate.until_entered()

    assert await _headers_arrived(channel, headers)
    assert _ids(await headers) == ["req-writer"]
    gate.released.set()
    assert [item async for item in call] == [b"written"]
    assert await call.code() == grpc.StatusCode.OK
