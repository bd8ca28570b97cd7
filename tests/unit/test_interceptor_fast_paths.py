"""The interceptor chain's per-call shortcuts change nothing it decides: wrapped handlers are
reused only for the very handler they wrap, metadata read once per call belongs to that call,
a peer's parsed address belongs to that peer, and timestamps convert as protobuf does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from vaultpay_common.context import CLIENT_IP, REQUEST_ID
from vaultpay_common.grpc.convert import timestamp
from vaultpay_common.grpc.request_context import (
    CLIENT_IP_HEADER,
    GATEWAY_IDENTITY_HEADER,
    RequestContextInterceptor,
    call_metadata,
    metadata_value,
)
from vaultpay_common.grpc.wrapping import CallInterceptor

SECRET = "s3cret-shared-by-the-gateway-and-the-services-0123"


@dataclass
class _Item:
    key: str
    value: str


@dataclass
class _Context:
    metadata: Sequence[tuple[str, str]] = ()
    peer_address: str = "ipv4:10.0.0.7:51234"
    reads: int = 0
    sent: list[Any] = field(default_factory=list)
    trailers: list[Any] = field(default_factory=list)

    def invocation_metadata(self) -> tuple[_Item, ...]:
        self.reads += 1
        return tuple(_Item(k, v) for k, v in self.metadata)

    def peer(self) -> str:
        return self.peer_address

    def time_remaining(self) -> float | None:
        return None

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.sent.append(metadata)

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailers.append(metadata)


@dataclass
class _Details:
    method: str
    invocation_metadata: tuple[Any, ...] = ()


def _handler(reply: str) -> grpc.RpcMethodHandler:
    async def behaviour(request: Any, context: Any) -> str:
        return reply

    return grpc.unary_unary_rpc_method_handler(behaviour)


async def _answer(handler: grpc.RpcMethodHandler) -> Any:
    behaviour = handler.unary_unary
    assert behaviour is not None
    return await behaviour(None, _Context())


async def test_a_wrapped_handler_is_reused_only_for_the_same_method_and_inner_handler() -> None:
    interceptor = CallInterceptor()
    first, second = _handler("first"), _handler("second")
    answers = {"/s.v1.S/A": first, "/s.v1.S/B": second}

    async def continuation(details: Any) -> grpc.RpcMethodHandler | None:
        return answers.get(details.method)

    a1 = await interceptor.intercept_service(continuation, _Details("/s.v1.S/A"))
    a2 = await interceptor.intercept_service(continuation, _Details("/s.v1.S/A"))
    b = await interceptor.intercept_service(continuation, _Details("/s.v1.S/B"))
    assert a1 is not None
    assert b is not None
    assert a1 is a2
    assert b is not a1
    assert await _answer(a1) == "first"
    assert await _answer(b) == "second"

    answers["/s.v1.S/A"] = _handler("replaced")  # the next stage answers another handler
    a3 = await interceptor.intercept_service(continuation, _Details("/s.v1.S/A"))
    assert a3 is not None and a3 is not a1
    assert await _answer(a3) == "replaced"

    assert await interceptor.intercept_service(continuation, _Details("/s.v1.S/Nope")) is None
    assert "/s.v1.S/Nope" not in interceptor._wrapped_handlers()


async def test_metadata_read_once_per_call_is_never_another_calls() -> None:
    alice = _Context((("authorization", "Bearer alice"),))
    mallory = _Context((("authorization", "Bearer mallory"),))

    assert metadata_value(alice, "authorization") == "Bearer alice"
    assert metadata_value(alice, "authorization") == "Bearer alice"
    assert alice.reads == 1
    # Same task, another call's context: its own metadata, never the kept copy.
    assert metadata_value(mallory, "authorization") == "Bearer mallory"
    assert metadata_value(alice, "authorization") == "Bearer alice"
    assert [item.key for item in call_metadata(mallory)] == ["authorization"]


async def test_the_request_context_stage_reads_metadata_once_and_later_stages_share_it() -> None:
    context = _Context(
        (
            ("x-request-id", "req-1"),
            ("x-request-id", "req-2"),
            (GATEWAY_IDENTITY_HEADER, SECRET),
            (CLIENT_IP_HEADER, "203.0.113.9"),
            (CLIENT_IP_HEADER, "198.51.100.1"),
            ("authorization", "Bearer t"),
        )
    )
    interceptor = RequestContextInterceptor(gateway_secret=SECRET)

    async def call() -> tuple[str, str, str, int]:
        seen = REQUEST_ID.get(), CLIENT_IP.get(), metadata_value(context, "authorization")
        return (*seen, len(context.sent))

    seen = await interceptor.around_unary("/x.v1.S/M", context, call)

    # The first value of a key counts; no headers are sent while the handler runs.
    assert seen == ("req-1", "203.0.113.9", "Bearer t", 0)
    assert context.reads == 1
    assert context.sent == []  # grpc sends the headers with the reply, in one batch
    assert context.trailers == [(("x-request-id", "req-1"),)]


async def test_a_remembered_peer_address_belongs_to_its_peer() -> None:
    interceptor = RequestContextInterceptor()

    async def call() -> str:
        return CLIENT_IP.get()

    for peer, address in (
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv4:10.0.0.8:51234", "10.0.0.8"),
        ("ipv6:%5B::ffff:10.0.0.9%5D:1", "10.0.0.9"),
        ("unix:/tmp/socket", ""),
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
    ):
        assert await interceptor.around_unary("/x.v1.S/M", _Context(peer_address=peer), call) == (
            address
        )


def test_timestamps_convert_exactly_as_protobuf_does() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    for value in (
        datetime(2026, 12, 2, 7, 33, 1, 123456, tzinfo=UTC),
        datetime(2026, 12, 2, 13, 3, 1, 999999, tzinfo=india),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 2, 7, 33, 1),  # naive: local time, as astimezone reads it
    ):
        expected = Timestamp()
        expected.FromDatetime(value.astimezone(UTC))
        assert timestamp(value) == expected, value
