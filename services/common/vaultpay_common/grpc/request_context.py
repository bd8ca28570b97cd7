"""Request-id interceptor: reads `x-request-id` (or makes one), sends it back, and fills the
per-call context (request id, client IP, deadline).

The id goes back with the answer, never ahead of it: a unary call carries it in the trailers
of its reply (set once the handler has returned; grpc then sends the headers, the reply and
the status in one batch) and a refusal in the trailers of its status (`request_id_metadata`,
which the error stage adds: `context.abort` replaces any trailing metadata set before it).
Response headers sent when a call starts would reach Envoy before the handler runs, and if the
service then died, Envoy, having forwarded them, could only reset the stream (the client reads
INTERNAL); with nothing sent it answers UNAVAILABLE, which a client retries as an unknown
outcome. Headers sent on their own after the handler returned would leave the same window
open while the event loop runs other calls before the reply goes out (the bank test hit it).
Through the gateway, JSON clients read the id in Envoy's `x-request-id` response header: Envoy
forwards its id and the service adopts it. A yielding stream sends the id with its first message (or at its end if it has none),
so a stream refused before it starts is a status like any other; a stream written with
`context.write` sends it when it starts (its first write would otherwise send empty headers).

The client IP is the address of whoever opened the connection (`context.peer()`), except for
calls that come from the gateway: Envoy puts the address of *its* client in
`x-envoy-external-address`, and proves that the call is its own with `x-vaultpay-gateway-identity`,
a secret the gateway shares with this one service (`ServiceSettings.gateway_secret`; Envoy
reads each service's own from its environment, `VAULTPAY_GATEWAY_SECRET_<SERVICE>`, and
overwrites whatever a client sent in that header). A caller of a service port without the
secret cannot choose the address its calls are throttled and audited under; since every
service holds a different one, neither can a peer service (a compromised kyc pod knows only
kyc's). The header is parsed as one IP address and recorded in canonical form; text that is
not an address falls back to the peer.

    RequestContextInterceptor(gateway_secret=settings.gateway_secret.get_secret_value())

Per call, the invocation metadata is read from grpc once (`call_metadata`: grpc.aio builds a
new tuple of items on every `invocation_metadata()`) and scanned once for the headers this
stage needs; later stages (the auth interceptor's `authorization`) read the same copy. The
peer string of a connection is parsed into an address once and remembered.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from typing import Any

from vaultpay_common.context import CLIENT_IP, DEADLINE, METHOD, REQUEST_ID
from vaultpay_common.grpc.wrapping import CallInterceptor, OpenStream, UnaryCall

__all__ = [
    "CLIENT_IP_HEADER",
    "GATEWAY_IDENTITY_HEADER",
    "MIN_GATEWAY_SECRET_LENGTH",
    "RequestContextInterceptor",
    "call_metadata",
    "metadata_value",
    "request_id_metadata",
]

REQUEST_ID_HEADER = "x-request-id"
# Set by Envoy (use_remote_address: true) to the address of the client it saw.
CLIENT_IP_HEADER = "x-envoy-external-address"
# Set by Envoy on every call it forwards: the gateway secret of the service it calls.
GATEWAY_IDENTITY_HEADER = "x-vaultpay-gateway-identity"
log = logging.getLogger(__name__)

MIN_GATEWAY_SECRET_LENGTH = 32
_MISMATCH_WARNING_INTERVAL = 60.0
# What the WARNING says when a presented gateway identity is not believed (never the value).
_SAID_ON_MISMATCH = (
    "a call presented a gateway identity that matches neither gateway secret: its client's"
    " address is not believed (the gateway's own is used). Is Envoy's"
    " VAULTPAY_GATEWAY_SECRET_<SERVICE> for this service the same as <SERVICE>_GATEWAY_SECRET"
    " here (a rotation half done, a trailing newline, another service's secret; an Envoy"
    " without the variable sends '-')?"
)
_SAID_WHEN_UNCONFIGURED = (
    "a call presented a gateway identity, but this service has no gateway secret configured:"
    " its client's address is not believed (the gateway's own is used), so per-address"
    " throttles and IP trust see every client behind the gateway as one. Set"
    " <SERVICE>_GATEWAY_SECRET to Envoy's VAULTPAY_GATEWAY_SECRET_<SERVICE>."
)
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
# grpc peer strings: "ipv4:10.0.0.1:50000", "ipv6:[::1]:50000" (the brackets may come
# %-encoded), "unix:/path".
_PEER = re.compile(r"^ipv[46]:\[?(?P<ip>[^\]]+?)\]?:\d+\Z")


# The current call's context and its metadata, read once per call (see call_metadata).
_CALL_METADATA: ContextVar[tuple[object, Sequence[Any]] | None] = ContextVar(
    "call_metadata", default=None
)
# Peer string -> canonical address; peers are connections, so this is bounded by the
# connections seen, and cleared past _MAX_PEERS.
_MAX_PEERS = 4096
_PEER_IPS: dict[str, str] = {}


def call_metadata(context: Any) -> Sequence[Any]:
    """The invocation metadata of the call `context` belongs to, read from grpc once per call.

    The copy is kept in a context variable (each RPC runs in its own task) together with the
    context it came from, and used only for that very context object: a different call (or
    a test reusing a task) reads its own.
    """
    kept = _CALL_METADATA.get()
    if kept is not None and kept[0] is context:
        return kept[1]
    metadata: Sequence[Any] = context.invocation_metadata() or ()
    _CALL_METADATA.set((context, metadata))
    return metadata


def metadata_value(context: Any, key: str) -> str:
    """The first value of `key` in the call's metadata, or ""."""
    for item in call_metadata(context):
        if item.key == key:
            return str(item.value)
    return ""


def request_id_metadata() -> tuple[tuple[str, str], ...]:
    """`x-request-id` as metadata for the current call's answer, or () outside a call the
    request-context stage entered."""
    request_id = REQUEST_ID.get()
    return ((REQUEST_ID_HEADER, request_id),) if request_id else ()


def _canonical_ip(text: str) -> str | None:
    """`text` as one IP address in canonical form (IPv4-mapped IPv6 as IPv4), else None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _peer_ip(context: Any) -> str:
    peer: str = context.peer() or ""
    known = _PEER_IPS.get(peer)
    if known is not None:
        return known
    match = _PEER.match(urllib.parse.unquote(peer))
    address = "" if match is None else _canonical_ip(match.group("ip")) or ""
    if len(_PEER_IPS) >= _MAX_PEERS:
        _PEER_IPS.clear()
    _PEER_IPS[peer] = address
    return address


class RequestContextInterceptor(CallInterceptor):
    """Outermost interceptor: everything after it logs with the request id.

    `gateway_secret` None: no caller is the gateway, every call is recorded under its peer
    address. `previous_gateway_secret`: also accepted, while a rotation is under way (the
    services take the new secret with the old one as previous, then Envoy the new one, then
    the previous one goes). A call that presents a gateway identity matching neither is said
    at WARNING (at most once a minute): its client's address is not believed, and every
    client behind that gateway then shares the gateway's address (review of 2026-12-05:
    a rotation or a typo silently did that, login throttles and IP trust included). So is a
    call that presents one to a service with no gateway secret: a deployment that forgot
    this service's secret records every client under the gateway's address.
    """

    def __init__(
        self, gateway_secret: str | None = None, previous_gateway_secret: str | None = None
    ) -> None:
        for secret in (gateway_secret, previous_gateway_secret):
            if secret is not None and len(secret) < MIN_GATEWAY_SECRET_LENGTH:
                raise ValueError(
                    f"the gateway secret must have at least {MIN_GATEWAY_SECRET_LENGTH} characters"
                )
        if gateway_secret is None and previous_gateway_secret is not None:
            raise ValueError("a previous gateway secret needs a current one")
        self._gateway_secrets = tuple(
            s.encode() for s in (gateway_secret, previous_gateway_secret) if s is not None
        )
        self._next_mismatch_warning = 0.0

    def _from_gateway(self, presented: str | None) -> bool:
        if not self._gateway_secrets:
            if presented is not None:
                self._say_not_believed(_SAID_WHEN_UNCONFIGURED)
            return False
        given = (presented or "").encode()
        # Each compared, whichever matches: the time taken tells nothing of which.
        matches = [hmac.compare_digest(given, secret) for secret in self._gateway_secrets]
        if any(matches):
            return True
        if presented is not None:
            self._say_not_believed(_SAID_ON_MISMATCH)
        return False

    def _say_not_believed(self, message: str) -> None:
        """`message` at WARNING, at most once every `_MISMATCH_WARNING_INTERVAL`."""
        now = time.monotonic()
        if now >= self._next_mismatch_warning:
            self._next_mismatch_warning = now + _MISMATCH_WARNING_INTERVAL
            log.warning(message)

    def _client_ip(self, context: Any, identity: str | None, forwarded: str | None) -> str:
        if forwarded is not None and self._from_gateway(identity):
            address = _canonical_ip(forwarded)
            if address is not None:
                return address
        return _peer_ip(context)

    def _enter(self, method: str, context: Any) -> tuple[tuple[str, str]]:
        """Fills the call's context; returns the metadata that carries its request id back."""
        METHOD.set(method)
        # One pass over the metadata; the first value of a repeated key counts, as in
        # metadata_value.
        incoming = identity = forwarded = None
        for item in call_metadata(context):
            key = item.key
            if key == REQUEST_ID_HEADER:
                if incoming is None:
                    incoming = str(item.value)
            elif key == GATEWAY_IDENTITY_HEADER:
                if identity is None:
                    identity = str(item.value)
            elif key == CLIENT_IP_HEADER and forwarded is None:
                forwarded = str(item.value)
        if incoming is not None and _SAFE_REQUEST_ID.match(incoming):
            request_id = incoming
        else:
            request_id = str(uuid.uuid4())
        REQUEST_ID.set(request_id)
        CLIENT_IP.set(self._client_ip(context, identity, forwarded))
        remaining = context.time_remaining()
        DEADLINE.set(None if remaining is None else time.monotonic() + remaining)
        return ((REQUEST_ID_HEADER, request_id),)

    async def around_unary(self, method: str, context: Any, call: UnaryCall) -> Any:
        # Nothing is sent before the handler has answered, and then all in one batch (see the
        # module docstring); a refusal raises through here with the id already in its
        # status's trailers.
        trailers = self._enter(method, context)
        reply = await call()
        context.set_trailing_metadata(trailers)
        return reply

    async def around_writer(self, method: str, context: Any, call: UnaryCall) -> Any:
        # `context.write` sends the response headers with the first message, without the id
        # unless they are out already; a stream is long-lived, its headers go out as it starts.
        await context.send_initial_metadata(self._enter(method, context))
        return await call()

    async def around_stream(
        self, method: str, context: Any, stream: OpenStream
    ) -> AsyncIterator[Any]:
        headers = self._enter(method, context)
        sent = False
        async for item in stream():
            if not sent:
                await context.send_initial_metadata(headers)
                sent = True
            yield item
        if not sent:
            # Also in the trailers: an empty stream's headers and status may reach the client
            # as one trailers-only answer, where a client reads metadata from the trailers.
            await context.send_initial_metadata(headers)
            context.set_trailing_metadata(headers)
