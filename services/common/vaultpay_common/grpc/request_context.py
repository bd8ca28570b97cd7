"""Request-id interceptor: reads `x-request-id` (or makes one), sends it back, and fills the
per-call context (request id, client IP, deadline).

The client IP is the address of whoever opened the connection (`context.peer()`), except for
calls that come from the gateway: Envoy puts the address of *its* client in
`x-envoy-external-address`, and proves that the call is its own with `x-vaultpay-gateway-identity`,
a secret shared by the gateway and the services (`ServiceSettings.gateway_secret`; Envoy reads
it from its environment and overwrites whatever a client sent in that header). A caller of a
service port without the secret cannot choose the address its calls are throttled and
audited under. The header is parsed as one IP address and recorded in canonical form; text
that is not an address falls back to the peer.

    RequestContextInterceptor(gateway_secret=settings.gateway_secret.get_secret_value())
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

from vaultpay_common.context import CLIENT_IP, DEADLINE, METHOD, REQUEST_ID
from vaultpay_common.grpc.wrapping import CallInterceptor, OpenStream, UnaryCall

__all__ = [
    "CLIENT_IP_HEADER",
    "GATEWAY_IDENTITY_HEADER",
    "MIN_GATEWAY_SECRET_LENGTH",
    "RequestContextInterceptor",
    "metadata_value",
]

REQUEST_ID_HEADER = "x-request-id"
# Set by Envoy (use_remote_address: true) to the address of the client it saw.
CLIENT_IP_HEADER = "x-envoy-external-address"
# Set by Envoy on every call it forwards: the shared gateway secret.
GATEWAY_IDENTITY_HEADER = "x-vaultpay-gateway-identity"
MIN_GATEWAY_SECRET_LENGTH = 32
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# grpc peer strings: "ipv4:10.0.0.1:50000", "ipv6:[::1]:50000" (the brackets may come
# %-encoded), "unix:/path".
_PEER = re.compile(r"^ipv[46]:\[?(?P<ip>[^\]]+?)\]?:\d+$")


def metadata_value(context: Any, key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return str(item.value)
    return ""


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
    match = _PEER.match(urllib.parse.unquote(context.peer() or ""))
    if match is None:
        return ""
    return _canonical_ip(match.group("ip")) or ""


class RequestContextInterceptor(CallInterceptor):
    """Outermost interceptor: everything after it logs with the request id.

    `gateway_secret` None: no caller is the gateway, every call is recorded under its peer
    address.
    """

    def __init__(self, gateway_secret: str | None = None) -> None:
        if gateway_secret is not None and len(gateway_secret) < MIN_GATEWAY_SECRET_LENGTH:
            raise ValueError(
                f"the gateway secret must have at least {MIN_GATEWAY_SECRET_LENGTH} characters"
            )
        self._gateway_secret = None if gateway_secret is None else gateway_secret.encode()

    def _from_gateway(self, context: Any) -> bool:
        if self._gateway_secret is None:
            return False
        presented = metadata_value(context, GATEWAY_IDENTITY_HEADER).encode()
        return hmac.compare_digest(presented, self._gateway_secret)

    def _client_ip(self, context: Any) -> str:
        if self._from_gateway(context):
            forwarded = _canonical_ip(metadata_value(context, CLIENT_IP_HEADER))
            if forwarded is not None:
                return forwarded
        return _peer_ip(context)

    async def _enter(self, method: str, context: Any) -> None:
        METHOD.set(method)
        incoming = metadata_value(context, REQUEST_ID_HEADER)
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else str(uuid.uuid4())
        REQUEST_ID.set(request_id)
        CLIENT_IP.set(self._client_ip(context))
        remaining = context.time_remaining()
        DEADLINE.set(None if remaining is None else time.monotonic() + remaining)
        await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))

    async def around_unary(self, method: str, context: Any, call: UnaryCall) -> Any:
        await self._enter(method, context)
        return await call()

    async def around_stream(
        self, method: str, context: Any, stream: OpenStream
    ) -> AsyncIterator[Any]:
        await self._enter(method, context)
        async for item in stream():
            yield item
