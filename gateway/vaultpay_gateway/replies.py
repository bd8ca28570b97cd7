"""Touches on replies, in one Lua filter that only acts on the way back.

It sits before the cors filter, the transcoder and the RPC rate limit in the chain, so it
sees their replies and every upstream reply once transcoded:

1. **CORS preflights answer 204.** Envoy's cors filter answers an allowed preflight with
   `200` and no body (it has no option for the status). The filter turns exactly those replies
   (200 with `access-control-allow-methods`, which only preflight replies carry) into
   `204 No Content`. Preflights from other
   origins are not answered by the cors filter, carry no CORS headers and keep their status.
2. **JSON type errors name the field.** When the transcoder cannot convert a JSON body
   (`{"pageSize": "abc"}`, a string where an object belongs), its text names the field in
   proto spelling (`daily.amount_minor: invalid value "abc" for type TYPE_INT64`, or
   `daily: invalid value Starting an object on a scalar field for type amount_minor`). The
   local reply mapper has already made that a `google.rpc.Status` (400, INVALID_ARGUMENT,
   reason `INVALID_REQUEST`) with the text as message; this filter adds a
   `google.rpc.BadRequest` whose field violation names the field by its JSON path
   (`daily.amountMinor`, `limits[1].daily`) and says in words what the field must be, which
   is also the message (`daily.amountMinor: must be a whole number from … to …`): never the
   transcoder's type name (`TYPE_INT64`, `vaultpay.type.v1.Money`), never the value (quoted
   whole, control characters included; for a time, the parser's text with the proto field
   name). The words come from tables generated with the config: `TYPE_WORDS` (scalars,
   well-known types), `enum_words` (the contract's enums, "is not one of this field's values
   (A, B, C)") and the message types of the contract's fields ("must be an object"); any
   other type is "has a value of the wrong type".
   A body that is not a JSON object (`[]`, `null`; the transcoder: ": Root element must be
   a message.") is "the request body must be a JSON object"; a body that is not UTF-8 is
   "the request body is not valid UTF-8" (the transcoder's text quoted the body around the
   bad bytes, raw). An unknown query parameter (the transcoder: `Could not find field "foo" in
   the type "vaultpay...Request".`) is a violation of `foo`, "is not a parameter of this
   request", without the type's name (a name over 64 characters is not repeated: "the request
   has a parameter it does not take").
   Other texts that name no field keep the mapper's reply unchanged. Lua cannot read response
   code details, so the local reply mapper marks transcoder failures with
   `errors.TRANSCODE_FAILURE_HEADER`; only marked 400 replies are read (and buffered), and the
   mark is removed, so other replies pass untouched and unbuffered.
3. **Upstream errors without an `ErrorInfo` say nothing internal.** Every error the services
   make carries a `google.rpc.ErrorInfo`; errors without one come from gRPC itself (a
   metadata limit, a method the server lacks) and their text names internal headers and
   sizes. JSON replies of status 400 or more whose body has no ErrorInfo get a generic
   `google.rpc.Status` (same code, `errors.GENERIC_MESSAGES`, ErrorInfo with the code's
   name as reason, domain `vaultpay.gateway`). Native gRPC errors (`grpc-status` in the
   headers of a trailers-only reply, or in the trailers) get the generic `grpc-message` and
   lose a `grpc-status-details-bin` that has no ErrorInfo. Envoy's own replies are left as
   they are: JSON ones always carry an ErrorInfo, gRPC ones `errors.LOCAL_REPLY_MARK`.
4. **Field paths in JSON spelling.** The services name BadRequest fields by proto path
   (`recipient_wallet_id`), which gRPC clients read as they are; google.rpc.BadRequest spells
   the same path `recipientWalletId` in JSON, and the gateway's own checks name fields that
   way. In JSON error replies that are not the gateway's own (domain `vaultpay.gateway`), the
   `field` strings inside the BadRequest detail are renamed by protoc's default JSON-name rule
   (every field of the contract has its default name; a test checks), brackets untouched.
5. **`Retry-After`.** A 429 JSON reply whose body has a `google.rpc.RetryInfo` (a service's
   throttle) gets `Retry-After` in whole seconds, rounded up. The RPC rate limit's own 429s
   (`ratelimits`) carry a fallback `Retry-After` and `x-ratelimit-reset`, the seconds until the
   bucket that refused has a token again; the header is set from it.

6. **The access log's `grpc_status`.** A JSON error reply's `google.rpc.Status` code goes
   into the dynamic metadata (`REPLIES_METADATA`, key `grpc_status`); the access log prefers
   it to Envoy's `%GRPC_STATUS%`, which finds no `grpc-status` in a transcoded reply and
   guesses from the HTTP status (400 → 13, 429 → 14).

Only error replies are read (and buffered); a failure inside the script leaves the reply as
it was. The filter sits right after `header_mutation`, so it also sees the replies of the
client rate limit and the body caps. It removes `errors.LOCAL_REPLY_MARK` from every reply it
sees (`header_mutation` does too, after it). A reply is gRPC when its content-type passes
Envoy's own test (`native_grpc`, as for requests); `application/grpc; x` or
`application/grpc-web` are not, and Envoy never answers a request in gRPC form unless the
request passed that test.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from vaultpay_gateway._types import Json, typed
from vaultpay_gateway.contract import API_PACKAGE_PREFIX, EnumValue
from vaultpay_gateway.errors import (
    ERROR_DOMAIN,
    GENERIC_MESSAGES,
    LOCAL_REPLY_MARK,
    RATE_LIMITED_MESSAGE,
    RATE_LIMITED_REASON,
    TRANSCODE_FAILURE_HEADER,
    grpc_status_details,
)
from vaultpay_gateway.lua import lua_bytes, lua_string
from vaultpay_gateway.native_grpc import NATIVE_GRPC_LUA

__all__ = [
    "ENUM_LIST_MAX_CHARS",
    "ENUM_LIST_MAX_NAMES",
    "REPLIES_FILTER",
    "REPLIES_METADATA",
    "TYPE_WORDS",
    "enum_words",
    "replies_filter",
]

REPLIES_FILTER = "vaultpay.replies"
# Dynamic metadata namespace: `grpc_status`, the code of a JSON error reply's body, for the
# access log (bootstrap.ACCESS_LOG_FORMAT).
REPLIES_METADATA = "vaultpay.replies"
_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"

_REPLIES_LUA = r"""-- vaultpay gateway: replies made inside Envoy (vaultpay_gateway/replies.py).
local byte, char, find, format, gsub, sub = string.byte, string.char, string.find, string.format, string.gsub, string.sub
local concat, floor = table.concat, math.floor

local function utf8(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40) end
  return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

-- The value of the first "message" string of a JSON object Envoy serialised, decoded.
local function json_message(text)
  local _, last = find(text, '"message":"', 1, true)
  if last == nil then return nil end
  local parts, at = {}, last + 1
  while true do
    local stop = find(text, '["\\]', at)
    if stop == nil then return nil end
    parts[#parts + 1] = sub(text, at, stop - 1)
    if byte(text, stop) == 34 then return concat(parts) end
    local escape = sub(text, stop + 1, stop + 1)
    if escape == "u" then
      local cp = tonumber(sub(text, stop + 2, stop + 5), 16)
      if cp == nil then return nil end
      parts[#parts + 1] = (cp >= 0xD800 and cp < 0xE000) and "\239\191\189" or utf8(cp)
      at = stop + 6
    else
      local replacement = ESCAPES[escape]
      if replacement == nil then return nil end
      parts[#parts + 1] = replacement
      at = stop + 2
    end
  end
end

local function quote(text)
  if #text > 500 then text = sub(text, 1, 500) .. "..." end
  local escaped = gsub(text, '[%z\1-\31"\\\127]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    return format("\\u%04x", byte(c))
  end)
  return '"' .. escaped .. '"'
end

-- `limits[1].daily.amount_minor` -> `limits[1].daily.amountMinor`: protoc's default JSON
-- names (every field of the contract has its default; tests/gateway/test_gateway_field_paths.py
-- checks). What is inside brackets (an index, a map key) stays as it is.
local function json_path(path)
  local out, at = {}, 1
  while at <= #path do
    local open = find(path, "[", at, true)
    local plain = sub(path, at, open and open - 1 or #path)
    out[#out + 1] = (gsub(plain, "_(%w)", string.upper))
    if open == nil then break end
    local close = find(path, "]", open, true) or #path
    out[#out + 1] = sub(path, open, close)
    at = close + 1
  end
  return concat(out)
end

local BAD_REQUEST = '"@type":"type.googleapis.com/google.rpc.BadRequest"'

-- `text` with every plain occurrence of `old` replaced by `new` (no patterns).
local function replace_plain(text, old, new)
  local out, at = {}, 1
  while true do
    local first, last = find(text, old, at, true)
    if first == nil then break end
    out[#out + 1] = sub(text, at, first - 1)
    out[#out + 1] = new
    at = last + 1
  end
  out[#out + 1] = sub(text, at)
  return concat(out)
end

-- Where the first "message" string's content lies in a JSON object Envoy serialised (the
-- indexes of its first and last character), or nil.
local function message_bounds(text)
  local _, last = find(text, '"message":"', 1, true)
  if last == nil then return nil end
  local at = last + 1
  while true do
    local stop = find(text, '["\\]', at)
    if stop == nil then return nil end
    if byte(text, stop) == 34 then return last + 1, stop - 1 end
    at = stop + 2
  end
end

-- A service's BadRequest names fields by proto path (`recipient_wallet_id`), as gRPC
-- clients read them; a JSON client gets the JSON path (`recipientWalletId`), as the
-- gateway's own violations and google.rpc.BadRequest's documentation spell them. The
-- `field` strings inside the BadRequest detail change (up to the next detail), and so does
-- each `<field>: ` the message names ("invalid request: recipient_wallet_id: ..."); the
-- gateway's own replies (domain vaultpay.gateway) already use JSON names and keep the keys
-- a client sent that the contract does not know. nil: nothing to change.
local function json_field_paths(text)
  if find(text, '"domain":"' .. DOMAIN .. '"', 1, true) ~= nil then return nil end
  local start = find(text, BAD_REQUEST, 1, true)
  if start == nil then return nil end
  local stop = find(text, '{"@type":"', start + #BAD_REQUEST, true) or #text + 1
  local region = sub(text, start, stop - 1)
  local renames = {}
  local renamed = gsub(region, '{"field":"([^"\\]*)"', function(field)
    local path = json_path(field)
    if path ~= field then renames[#renames + 1] = { field, path } end
    return '{"field":"' .. path .. '"'
  end)
  if renamed == region then return nil end
  text = sub(text, 1, start - 1) .. renamed .. sub(text, stop)
  local first, last = message_bounds(text)
  if first == nil or first > start then return text end
  local message = sub(text, first, last)
  -- A service writes "invalid request: f1: d1; f2: d2": a space before each field and ": "
  -- after it, so `account_number` is never matched inside `bank_account.account_number`.
  for _, pair in ipairs(renames) do
    message = replace_plain(message, " " .. pair[1] .. ": ", " " .. pair[2] .. ": ")
  end
  return sub(text, 1, first - 1) .. message .. sub(text, last + 1)
end

-- What a value of the transcoder's type `kind` must be, in words: KINDS (scalars and
-- well-known types), ENUMS (every enum of the descriptor set, with its names where the list
-- is short), MESSAGES (every message of the descriptor set); anything else is generic.
local function must_be(kind)
  local words = KINDS[kind] or ENUMS[kind]
  if words ~= nil then return words end
  if MESSAGES[kind] then return "must be an object" end
  return "has a value of the wrong type"
end

-- The field and what is wrong with it, from the transcoder's text; nil if it names none.
-- Neither the value (the transcoder quotes it whole, control characters and all, and for a
-- time its parser's text naming the proto field) nor the type's internal name is repeated.
local function violation(message)
  local path, value, kind = string.match(message, "^([%w_.%[%]]*): invalid value (.-) for type ([%w_.%/]+)$")
  if path == nil then return nil end
  if value == "Starting an object on a scalar field" then
    -- Here `kind` is the field's own name and `path` its parent.
    path = path == "" and kind or (path .. "." .. kind)
    return json_path(path), "an object where a single value is expected"
  end
  if path == "" then return nil end
  kind = gsub(kind, "^type%.googleapis%.com/", "")
  return json_path(path), must_be(kind)
end

local function field_error(field, description)
  local message = field .. ": " .. description
  return format(
    '{"code":3,"message":%s,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"INVALID_REQUEST","domain":%s},'
      .. '{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":%s,"description":%s}]}]}',
    quote(message), quote(DOMAIN), quote(field), quote(description))
end

local function request_error(message)
  return format(
    '{"code":3,"message":%s,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"INVALID_REQUEST","domain":%s}]}',
    quote(message), quote(DOMAIN))
end

-- The new body for the mapper's reply `text`, or nil to keep it. The transcoder's texts that
-- name no field become plain words; its UTF-8 error quotes the body around the bad bytes,
-- which must not come back.
local function type_error_body(text)
  local message = json_message(text)
  if message == nil then return nil end
  if find(message, "non UTF-8", 1, true) ~= nil then
    return request_error("the request body is not valid UTF-8")
  end
  if find(message, "Root element must be a message", 1, true) ~= nil then
    return request_error("the request body must be a JSON object")
  end
  if find(message, "Could not find field ", 1, true) == 1 then
    -- An unknown query parameter (`?foo=1`): named as the client sent it (a short name only),
    -- never with the request message's internal type name.
    local unknown = string.match(message, '^Could not find field "(.-)" in the type "[%w_.]+"%.?$')
    if unknown ~= nil and unknown ~= "" and #unknown <= 64 then
      return field_error(unknown, "is not a parameter of this request")
    end
    return request_error("the request has a parameter it does not take")
  end
  local field, description = violation(message)
  if field == nil then return nil end
  return field_error(field, description)
end

-- google.rpc.Status JSON from the gateway, in place of an upstream error's (nil: keep it).
local function generic_body(text)
  if find(text, '"@type":"type.googleapis.com/google.rpc.ErrorInfo"', 1, true) ~= nil then return nil end
  local code = tonumber(string.match(text, '^%s*{%s*"code"%s*:%s*(%d+)')) or 13
  local entry = GENERIC[code] or GENERIC[13]
  return format(
    '{"code":%d,"message":%s,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":%s,"domain":%s}]}',
    code, quote(entry[2]), quote(entry[1]), quote(DOMAIN))
end

-- Whole seconds of a RetryInfo's retryDelay (proto3 JSON: "2.500s"), rounded up; nil if none.
local function retry_delay(text)
  local _, last = find(text, '"@type":"type.googleapis.com/google.rpc.RetryInfo"', 1, true)
  if last == nil then return nil end
  local seconds = tonumber(string.match(text, '"retryDelay":"(%d+%.?%d*)s"', last))
  if seconds == nil then return nil end
  return math.max(1, math.ceil(seconds))
end

local B64 = {}
do
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, #alphabet do B64[byte(alphabet, i)] = i - 1 end
end

-- Base64 (padded or not, as gRPC sends binary headers) to bytes.
local function unbase64(text)
  local out, bits, count = {}, 0, 0
  for i = 1, #text do
    local value = B64[byte(text, i)]
    if value ~= nil then
      bits, count = bits * 64 + value, count + 6
      if count >= 8 then
        count = count - 8
        local scale = 2 ^ count
        local b = floor(bits / scale)
        out[#out + 1] = char(b)
        bits = bits - b * scale
      end
    end
  end
  return concat(out)
end

-- A native gRPC status (in headers or trailers) without ErrorInfo gets the generic message.
local function scrub_grpc_status(map)
  local code = map:get("grpc-status")
  if code == nil or code == "0" then return end
  local details = map:get("grpc-status-details-bin")
  if details ~= nil and find(unbase64(details), "type.googleapis.com/google.rpc.ErrorInfo", 1, true) ~= nil then
    return
  end
  local entry = GENERIC[tonumber(code)] or GENERIC[13]
  map:replace("grpc-message", entry[2])
  if details ~= nil then map:remove("grpc-status-details-bin") end
end

local B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Bytes to padded base64.
local function base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = byte(data, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local quad = {}
    for k = 1, 4 do
      local index = floor(n / 64 ^ (4 - k)) % 64
      quad[k] = sub(B64_ALPHABET, index + 1, index + 1)
    end
    if c == nil then quad[4] = "=" end
    if b == nil then quad[3] = "=" end
    out[#out + 1] = concat(quad)
  end
  return concat(out)
end

-- A protobuf varint.
local function varint(n)
  local out = {}
  repeat
    local low = n % 128
    n = floor(n / 128)
    out[#out + 1] = char(n > 0 and low + 128 or low)
  until n == 0
  return concat(out)
end

local function field(tag, bytes)
  return char(tag) .. varint(#bytes) .. bytes
end

-- The RPC rate limit's gRPC 429: the mapper's Status names the client filter's wait; put the
-- bucket's own (x-ratelimit-reset) into its RetryInfo, as Retry-After already says.
local function exact_retry_info(headers)
  local reset = tonumber(headers:get("x-ratelimit-reset") or "")
  -- x-ratelimit-* come on every reply of a budgeted RPC (a 413 too): only a 429's message says.
  if reset == nil or headers:get("grpc-message") ~= RATE_LIMITED_MESSAGE then return end
  local seconds = math.max(1, math.ceil(reset))
  local retry_info = field(0x0a, "\8" .. varint(seconds))  -- RetryInfo{retry_delay{seconds}}
  local any = field(0x0a, RETRY_INFO_TYPE) .. field(0x12, retry_info)
  headers:replace("grpc-status-details-bin", base64(RATE_LIMITED_STATUS .. field(0x1a, any)))
end

local function on_grpc_response(handle, headers, local_reply)
  if local_reply then
    exact_retry_info(headers)
    return
  end
  if headers:get("grpc-status") ~= nil then
    scrub_grpc_status(headers)  -- trailers-only
    return
  end
  -- Chunks pass on as they come (streams included); only the trailers are looked at.
  for _ in handle:bodyChunks() do end
  local trailers = handle:trailers()
  if trailers ~= nil then scrub_grpc_status(trailers) end
end

-- The new body of an error reply `text` (nil: keep it) and its Retry-After (nil: none).
local function error_reply(text, status, type_error)
  local body = nil
  if type_error then body = type_error_body(text) end
  if body == nil then body = generic_body(text) end
  if body == nil then body = json_field_paths(text) end
  local wait = nil
  if status == "429" then wait = retry_delay(text) end
  return body, wait
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local status = headers:get(":status")
  -- The RPC rate limit refused: its bucket knows how long until the next token.
  local reset = tonumber(headers:get("x-ratelimit-reset") or "")
  if reset ~= nil and headers:get("retry-after") ~= nil then
    headers:replace("retry-after", tostring(math.max(1, math.ceil(reset))))
  end
  -- The local reply mapper's mark (a gRPC reply of Envoy's own) never leaves the gateway.
  local local_reply = headers:get(LOCAL) ~= nil
  if local_reply then headers:remove(LOCAL) end
  local content_type = headers:get("content-type")
  -- A gRPC reply by Envoy's own test, the one every filter of the gateway uses.
  if is_native_grpc(content_type) then
    on_grpc_response(handle, headers, local_reply)
    return
  end
  content_type = content_type or ""
  if status == "200" then
    -- Only the cors filter's preflight replies carry access-control-allow-methods.
    if headers:get("access-control-allow-methods") ~= nil then headers:replace(":status", "204") end
    return
  end
  local code = tonumber(status)
  if code == nil or code < 400 or sub(content_type, 1, 16) ~= "application/json" then return end
  local type_error = status == "400" and headers:get(MARK) ~= nil
  headers:remove(MARK)
  -- handle:body() yields until the whole reply is in; objects taken before it are stale.
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  local text = body:getBytes(0, body:length())
  local ok, new_body, wait = pcall(error_reply, text, status, type_error)
  if not ok then
    handle:logErr("error reply left as it was: " .. tostring(new_body))
    new_body = nil
  end
  -- The access log's grpc_status: the code the client reads, not Envoy's guess from :status.
  local logged = tonumber(string.match(new_body or text, '^%s*{%s*"code"%s*:%s*(%d+)'))
  if logged ~= nil then handle:streamInfo():dynamicMetadata():set(LOG_NAMESPACE, "grpc_status", logged) end
  if not ok then return end
  headers = handle:headers()
  if wait ~= nil and headers:get("retry-after") == nil then headers:replace("retry-after", tostring(wait)) end
  if new_body == nil then return end
  local length = body:setBytes(new_body)
  headers:replace("content-length", tostring(length))
end
"""


def _rate_limited_status() -> bytes:
    """The RPC rate limit's gRPC Status without its RetryInfo, which the script appends (a
    repeated field's entries may follow each other in any number of pieces)."""
    encoded = grpc_status_details(8, RATE_LIMITED_MESSAGE, RATE_LIMITED_REASON)
    return base64.b64decode(encoded)


def _generic_table() -> str:
    rows = ", ".join(
        f"[{code}] = {{ {lua_string(reason)}, {lua_string(message)} }}"
        for code, (reason, message) in sorted(GENERIC_MESSAGES.items())
    )
    return f"local GENERIC = {{ {rows} }}\n"


def _lua_table(name: str, entries: Mapping[str, str | bool]) -> str:
    rows = ", ".join(
        f"[{lua_string(key)}] = {lua_string(value) if isinstance(value, str) else 'true'}"
        for key, value in entries.items()
    )
    return f"local {name} = {{ {rows} }}\n"


_WHOLE = "must be a whole number from {} to {}"
# proto3 JSON writes 64-bit integers as strings (a JavaScript number cannot hold them all).
_WHOLE_64 = _WHOLE + ' (a JSON number, or a string of a whole number such as "100")'
_INT32 = _WHOLE.format(-(2**31), 2**31 - 1)
_UINT32 = _WHOLE.format(0, 2**32 - 1)
_INT64 = _WHOLE_64.format(-(2**63), 2**63 - 1)
_UINT64 = _WHOLE_64.format(0, 2**64 - 1)
_NUMBER = "must be a number"
_BOOL = "must be true or false"
_STRING = "must be a string"
_BYTES = "must be a string of base64-encoded bytes"
_NOT_A_VALUE = "is not one of this field's values"
_OBJECT = "must be an object"

# What a value must be, by the type the transcoder's text names: a scalar's `TYPE_…` or a
# well-known type's full name (google.protobuf.Value takes any JSON: not listed, generic).
TYPE_WORDS: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(("TYPE_INT32", "TYPE_SINT32", "TYPE_SFIXED32"), _INT32),
        **dict.fromkeys(("TYPE_UINT32", "TYPE_FIXED32"), _UINT32),
        **dict.fromkeys(("TYPE_INT64", "TYPE_SINT64", "TYPE_SFIXED64"), _INT64),
        **dict.fromkeys(("TYPE_UINT64", "TYPE_FIXED64"), _UINT64),
        **dict.fromkeys(("TYPE_DOUBLE", "TYPE_FLOAT"), _NUMBER),
        "TYPE_BOOL": _BOOL,
        "TYPE_STRING": _STRING,
        "TYPE_BYTES": _BYTES,
        "TYPE_ENUM": _NOT_A_VALUE,
        **dict.fromkeys(("TYPE_MESSAGE", "TYPE_GROUP"), _OBJECT),
        "google.protobuf.Timestamp": "must be an RFC 3339 time such as 2026-12-03T10:00:00Z",
        "google.protobuf.Duration": "must be a number of seconds ending in s, such as 1.5s",
        "google.protobuf.FieldMask": "must be a string of field names separated by commas",
        "google.protobuf.Struct": _OBJECT,
        "google.protobuf.ListValue": "must be a list",
        "google.protobuf.NullValue": "must be null",
        "google.protobuf.Int32Value": _INT32,
        "google.protobuf.UInt32Value": _UINT32,
        "google.protobuf.Int64Value": _INT64,
        "google.protobuf.UInt64Value": _UINT64,
        **dict.fromkeys(("google.protobuf.DoubleValue", "google.protobuf.FloatValue"), _NUMBER),
        "google.protobuf.BoolValue": _BOOL,
        "google.protobuf.StringValue": _STRING,
        "google.protobuf.BytesValue": _BYTES,
    }
)

# An enum's names are listed when there are this many at most and they fit in this many
# characters; longer lists would drown the message.
ENUM_LIST_MAX_NAMES = 12
ENUM_LIST_MAX_CHARS = 300


def enum_words(enums: Mapping[str, Sequence[EnumValue]]) -> dict[str, str]:
    """What a value of each enum must be: "is not one of this field's values (A, B, C)".

    The list leaves out the zero value named `…_UNSPECIFIED` (sending it is sending nothing;
    it is accepted, so it is never why a value was refused). Enums outside the API's
    packages, and those whose list is too long, get the sentence without the list.
    """
    words: dict[str, str] = {}
    for full_name, values in sorted(enums.items()):
        names = [v.name for v in values if not (v.number == 0 and v.name.endswith("_UNSPECIFIED"))]
        listed = ", ".join(names)
        if (
            full_name.startswith(API_PACKAGE_PREFIX)
            and 0 < len(names) <= ENUM_LIST_MAX_NAMES
            and len(listed) <= ENUM_LIST_MAX_CHARS
        ):
            words[full_name] = f"{_NOT_A_VALUE} ({listed})"
        else:
            words[full_name] = _NOT_A_VALUE
    return words


def replies_filter(
    enums: Mapping[str, Sequence[EnumValue]] | None = None,
    messages: Sequence[str] = (),
) -> Json:
    """The Lua filter; it defines only `envoy_on_response`. `enums` and `messages` (full
    names, from the contract) let a type error say "is not one of this field's values" or
    "must be an object" where the transcoder names an enum or a message type."""
    source = (
        f"local DOMAIN = {lua_string(ERROR_DOMAIN)}\n"
        f"local MARK = {lua_string(TRANSCODE_FAILURE_HEADER)}\n"
        f"local LOCAL = {lua_string(LOCAL_REPLY_MARK)}\n"
        f"local LOG_NAMESPACE = {lua_string(REPLIES_METADATA)}\n"
        f"local RATE_LIMITED_STATUS = {lua_bytes(_rate_limited_status())}\n"
        f"local RATE_LIMITED_MESSAGE = {lua_string(RATE_LIMITED_MESSAGE)}\n"
        f"local RETRY_INFO_TYPE = {lua_string(_RETRY_INFO_TYPE)}\n"
        f"{_generic_table()}"
        f"{_lua_table('KINDS', TYPE_WORDS)}"
        f"{_lua_table('ENUMS', enum_words(enums or {}))}"
        f"{_lua_table('MESSAGES', dict.fromkeys(sorted(messages), True))}"
        f"{NATIVE_GRPC_LUA}"
        f"{_REPLIES_LUA}"
    )
    return {
        "name": REPLIES_FILTER,
        "typed_config": typed(
            "envoy.extensions.filters.http.lua.v3.Lua",
            default_source_code={"inline_string": source},
        ),
    }
