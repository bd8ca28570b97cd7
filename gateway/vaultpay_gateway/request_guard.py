"""Checks on the request line and headers, in one Lua filter that only acts on the way in.

It runs before anything reads the request for the API (the transcoder, jwt_authn, the body
check) and after the cors filter, so its refusals carry CORS headers:

1. **Size caps.** A path and query longer than `max_path_bytes` answers 414, request headers
   larger than `max_header_bytes` in all (names and values, the request line included)
   answer 431. Both are well below what the services' gRPC servers take as metadata (24 KiB
   soft, 32 KiB hard, `vaultpay_common.grpc.server.MAX_METADATA_BYTES`: a request within the
   default caps reaches them at about 15 KiB with Envoy's headers, the original path again
   among them, and gRPC's 32 bytes per entry; 19 KiB under the highest header cap the settings
   allow, `MAX_HEADER_BYTES`), whose own refusal named internal headers and sizes. Envoy's
   parser stops anything beyond `max_request_headers_kb` before this filter runs (431 too).
   The local reply mapper turns both into `google.rpc.Status` JSON (INVALID_ARGUMENT,
   reasons `URI_TOO_LONG` / `HEADERS_TOO_LARGE`) or a gRPC status.
2. **The bearer scheme is case-insensitive** (RFC 6750 §2.1 via RFC 7235 §2.1):
   `authorization: bearer <token>` becomes `Bearer <token>` before jwt_authn, whose
   `value_prefix` is case-sensitive; the services get the canonical spelling too.
"""

from __future__ import annotations

from vaultpay_gateway._types import Json, typed

__all__ = ["REQUEST_GUARD_FILTER", "request_guard_filter"]

REQUEST_GUARD_FILTER = "vaultpay.request_guard"

_GUARD_LUA = r"""-- vaultpay gateway: request line and header checks (vaultpay_gateway/request_guard.py).
function envoy_on_request(handle)
  local headers = handle:headers()
  local path = headers:get(":path") or ""
  if #path > MAX_PATH then
    handle:respond({ [":status"] = "414" },
      string.format("the request line is too long: at most %d bytes of path and query", MAX_PATH))
    return
  end
  local total = 0
  for key, value in pairs(headers) do
    total = total + #key + #value
  end
  if total > MAX_HEADERS then
    handle:respond({ [":status"] = "431" },
      string.format("the request headers are too large: at most %d bytes in all", MAX_HEADERS))
    return
  end
  local authorization = headers:get("authorization")
  if authorization ~= nil then
    local scheme, credentials = string.match(authorization, "^(%a+) +(.*)$")
    if scheme ~= nil and scheme ~= "Bearer" and string.lower(scheme) == "bearer" then
      headers:replace("authorization", "Bearer " .. credentials)
    end
  end
end
"""


def request_guard_filter(max_path_bytes: int, max_header_bytes: int) -> Json:
    """The Lua filter; it defines only `envoy_on_request`."""
    source = f"local MAX_PATH = {max_path_bytes}\nlocal MAX_HEADERS = {max_header_bytes}\n"
    return {
        "name": REQUEST_GUARD_FILTER,
        "typed_config": typed(
            "envoy.extensions.filters.http.lua.v3.Lua",
            default_source_code={"inline_string": source + _GUARD_LUA},
        ),
    }
