"""A base for grpc.aio server interceptors that act around each call.

grpc.aio server interceptors receive no ServicerContext; to run code around a call they
must return a new RpcMethodHandler whose behaviour wraps the original. `CallInterceptor`
does that once for all four RPC shapes; subclasses implement two hooks (a streaming behaviour that writes with
`await context.write(...)` instead of yielding is a coroutine, and goes through `around_writer`,
which is `around_unary` unless a stage must tell the two apart):

    async def around_unary(self, method, context, call):   # call() -> response
    def around_stream(self, method, context, stream):      # stream() -> response iterator

A request that does not parse as its message (bad UTF-8 in a string field, a truncated
varint) would make grpc answer UNKNOWN and log a traceback per call, before any stage runs. The
wrapped handlers' deserializer hands the stages an `UndecodableRequest` instead, which the
request-hygiene stage refuses with INVALID_ARGUMENT once the caller is authenticated.

The wrapped handler of a method is built once and reused: grpc.aio asks every interceptor for
a handler on every call, and building one (closures plus an RpcMethodHandler) per call per
interceptor was a measurable part of a cheap RPC's cost. The wrapper closes over nothing that
belongs to one call (the request and context are its arguments), and it is reused only while
the next stage answers the very same handler object, so the chain stays exactly the chain.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from vaultpay_common.errors import MAX_VIOLATIONS
from vaultpay_common.grpc.undecodable import bad_utf8_fields

__all__ = ["CallInterceptor", "OpenStream", "UnaryCall", "UndecodableRequest"]

UnaryCall = Callable[[], Awaitable[Any]]
OpenStream = Callable[[], AsyncIterator[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
# Wrapped handlers kept per interceptor. Only methods some handler answers are kept (a made-up
# method name resolves to None and is not cached), so the bound is a safety net.
_MAX_CACHED_HANDLERS = 4096


class UndecodableRequest:
    """A request message that did not parse: the parser's words (no request bytes) and the
    string fields whose bytes are not UTF-8, when that is why."""

    __slots__ = ("bad_utf8_fields", "error")

    def __init__(self, error: str, bad_utf8_fields: Sequence[str] = ()) -> None:
        self.error = error
        self.bad_utf8_fields = tuple(bad_utf8_fields)


class _TolerantDeserializer:
    """A message deserializer that answers `UndecodableRequest` where the parser raises."""

    __slots__ = ("_parse",)

    def __init__(self, parse: Callable[[bytes], Any]) -> None:
        self._parse = parse

    def __call__(self, data: bytes) -> Any:
        try:
            return self._parse(data)
        except DecodeError as exc:
            message_class = getattr(self._parse, "__self__", None)
            descriptor = getattr(message_class, "DESCRIPTOR", None)
            # Only the parser's "bad UTF-8" has fields to name: a corrupt wire format is
            # refused as it is, without walking the client's bytes.
            bad = (
                bad_utf8_fields(descriptor, data, limit=MAX_VIOLATIONS + 1)
                if descriptor is not None and "UTF-8" in str(exc)
                else []
            )
            return UndecodableRequest(str(exc), bad)


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None or isinstance(deserialize, _TolerantDeserializer):
        return deserialize
    return _TolerantDeserializer(deserialize)


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs `around_unary` / `around_stream` around every call of every method."""

    async def around_unary(self, method: str, context: Any, call: UnaryCall) -> Any:
        return await call()

    def around_stream(self, method: str, context: Any, stream: OpenStream) -> AsyncIterator[Any]:
        return stream()

    async def around_writer(self, method: str, context: Any, call: UnaryCall) -> Any:
        """Around a streaming behaviour that writes with `context.write` (a coroutine)."""
        return await self.around_unary(method, context, call)

    def check_request(self, method: str, request: Any) -> None:
        """Inspects each request message before the rest of the chain sees it."""

    async def _checked(self, method: str, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A client stream whose every message passes `check_request` as it is read."""
        async for request in requests:
            self.check_request(method, request)
            yield request

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        cache = self._wrapped_handlers()
        cached = cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        if len(cache) >= _MAX_CACHED_HANDLERS:
            cache.clear()
        cache[method] = (handler, wrapped)
        return wrapped

    def _wrapped_handlers(self) -> dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]]:
        """method -> (the next stage's handler, our wrapper of it); made on first use, so a
        subclass need not call `super().__init__()`."""
        found: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] | None
        found = self.__dict__.get("_handler_cache")
        if found is None:
            found = self.__dict__["_handler_cache"] = {}
        return found

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        deserialize = _tolerant(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary:
            uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                self.check_request(method, request)
                return await self.around_unary(method, context, lambda: uu(request, context))

            return grpc.unary_unary_rpc_method_handler(unary_unary, deserialize, serialize)
        if handler.stream_unary:
            su = handler.stream_unary

            async def stream_unary(requests: Any, context: Any) -> Any:
                checked = self._checked(method, requests)
                return await self.around_unary(method, context, lambda: su(checked, context))

            return grpc.stream_unary_rpc_method_handler(stream_unary, deserialize, serialize)
        if handler.unary_stream and not inspect.isasyncgenfunction(handler.unary_stream):
            # A streaming behaviour written with `await context.write(...)` is a coroutine.
            usc = handler.unary_stream

            async def unary_stream_writer(request: Any, context: Any) -> Any:
                self.check_request(method, request)
                return await self.around_writer(method, context, lambda: usc(request, context))

            return grpc.unary_stream_rpc_method_handler(unary_stream_writer, deserialize, serialize)
        if handler.stream_stream and not inspect.isasyncgenfunction(handler.stream_stream):
            ssc = handler.stream_stream

            async def stream_stream_writer(requests: Any, context: Any) -> Any:
                checked = self._checked(method, requests)
                return await self.around_writer(method, context, lambda: ssc(checked, context))

            return grpc.stream_stream_rpc_method_handler(
                stream_stream_writer, deserialize, serialize
            )
        if handler.unary_stream:
            us = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                self.check_request(method, request)
                async for item in self.around_stream(method, context, lambda: us(request, context)):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, deserialize, serialize)
        if handler.stream_stream:
            ss = handler.stream_stream

            async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
                checked = self._checked(method, requests)
                async for item in self.around_stream(method, context, lambda: ss(checked, context)):
                    yield item

            return grpc.stream_stream_rpc_method_handler(stream_stream, deserialize, serialize)
        return handler
