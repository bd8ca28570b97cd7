"""Request-id interceptor: reads `x-request-id` (or makes one), sends it back, and fills the
per-call context (request id, client IP from the gateway's trusted header, deadline).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from vaultpay_common.context import CLIENT_IP, DEADLINE, METHOD, REQUEST_ID
from vaultpay_common.grpc.wrapping import CallInterceptor, OpenStream, UnaryCall

__all__ = ["RequestContextInterceptor", "metadata_value"]

REQUEST_ID_HEADER = "x-request-id"
# Set by Envoy (use_remote_address: true) to the address of the client it saw; the services
# are only reachable through the gateway or from inside the mesh, so it is trusted.
CLIENT_IP_HEADER = "x-envoy-external-address"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PEER = re.compile(r"^ipv[46]:\[?(?P<ip>[^\]]+?)\]?:\d+$")


def metadata_value(context: Any, key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return str(item.value)
    return ""


def _client_ip(context: Any) -> str:
    forwarded = metadata_value(context, CLIENT_IP_HEADER)
    if forwarded:
        return forwarded
    match = _PEER.match(context.peer() or "")
    return match.group("ip") if match else ""


class RequestContextInterceptor(CallInterceptor):
    """Outermost interceptor: everything after it logs with the request id."""

    async def _enter(self, method: str, context: Any) -> None:
        METHOD.set(method)
        incoming = metadata_value(context, REQUEST_ID_HEADER)
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else str(uuid.uuid4())
        REQUEST_ID.set(request_id)
        CLIENT_IP.set(_client_ip(context))
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
