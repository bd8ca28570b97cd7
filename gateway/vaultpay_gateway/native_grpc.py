"""What counts as native gRPC: one rule, Envoy's, for every part of the config that asks.

Envoy decides with `Grpc::Common::hasGrpcContentType`: the content-type is exactly
`application/grpc` or starts with `application/grpc+` (any codec, and anything after it).
The transcoder passes such requests through untouched and transcodes every other one; the
`grpc: {}` route match and Envoy's local replies (gRPC-shaped or plain HTTP) use the same
test, and `isGrpcResponseHeaders` applies it to replies. It is case-sensitive, and two
content-type headers reach it joined by a comma, so:

    is_native_grpc("application/grpc")                   # True
    is_native_grpc("application/grpc+proto")             # True
    is_native_grpc("application/grpc+proto; x=y")        # True (Envoy: "+" then anything)
    is_native_grpc("application/grpc; charset=utf-8")    # False: transcoded as JSON
    is_native_grpc("application/grpc-web+proto")         # False (no grpc_web filter here)
    is_native_grpc("Application/GRPC")                   # False
    is_native_grpc("application/grpc,application/grpc")  # False (two headers)

Whoever else asks must agree with Envoy, or a request would be handled as one kind by a
gateway filter and as the other by Envoy: the JSON body capture (`json_body`) would skip the
check of a body the transcoder then reads as JSON, or refuse a native call; the local reply
mapper (`errors`) would give a request Envoy answers as HTTP the gRPC form (a plain-text body
and the `errors.LOCAL_REPLY_MARK` the `replies` filter only removes from gRPC replies); the
`replies` filter would read a reply as the wrong kind. So all of them take their test from
here: `NATIVE_GRPC_LUA` (the Lua filters), `native_grpc_content_type()` (an access-log filter
for the mapper) and `is_native_grpc` (Python, for the tests).
"""

from __future__ import annotations

from vaultpay_gateway._types import Json
from vaultpay_gateway.lua import lua_string

__all__ = [
    "GRPC_CONTENT_TYPE",
    "NATIVE_GRPC_LUA",
    "is_native_grpc",
    "native_grpc_content_type",
]

GRPC_CONTENT_TYPE = "application/grpc"
_CODEC_PREFIX = GRPC_CONTENT_TYPE + "+"


def is_native_grpc(content_type: str | None) -> bool:
    """Envoy's test on one (possibly comma-joined) content-type value."""
    return content_type is not None and (
        content_type == GRPC_CONTENT_TYPE or content_type.startswith(_CODEC_PREFIX)
    )


NATIVE_GRPC_LUA = f"""
-- Native gRPC exactly as Envoy tells it (Grpc::Common::hasGrpcContentType, vaultpay_gateway/
-- native_grpc.py): `application/grpc`, or `application/grpc+` and anything after it. Case
-- matters; two content-types arrive joined by a comma. `content_type` may be nil.
local function is_native_grpc(content_type)
  return content_type == {lua_string(GRPC_CONTENT_TYPE)}
    or string.sub(content_type or "", 1, {len(_CODEC_PREFIX)}) == {lua_string(_CODEC_PREFIX)}
end
"""


def _content_type(match: Json) -> Json:
    return {"header_filter": {"header": {"name": "content-type", "string_match": match}}}


def native_grpc_content_type() -> Json:
    """An access-log filter (the local reply mapper's `filter`): the request's content-type
    passes Envoy's test. Header matchers are case-sensitive unless told otherwise."""
    return {
        "or_filter": {
            "filters": [
                _content_type({"exact": GRPC_CONTENT_TYPE}),
                _content_type({"prefix": _CODEC_PREFIX}),
            ]
        }
    }
