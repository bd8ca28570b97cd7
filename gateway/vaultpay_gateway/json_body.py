"""Unknown JSON body fields are rejected inside Envoy, by two generated Lua filters.

Envoy's transcoder silently drops JSON keys that are not in the request message, and has no
option to refuse them (envoyproxy/envoy#46623). The gateway refuses them with 400 and a
`google.rpc.Status` (INVALID_ARGUMENT, ErrorInfo reason `UNKNOWN_FIELD`, a BadRequest field
violation per key) before anything is routed:

1. `capture` (before the transcoder): keeps a copy of the body of every request that is not
   native gRPC in the request's dynamic metadata (`vaultpay.json_body`). Clients cannot set
   dynamic metadata, so only this filter decides what gets checked. A body not sent as
   `application/json` is refused here (415, see below).
2. `check` (after the transcoder and jwt_authn): by now `:path` is the exact gRPC path the
   transcoder chose, so the RPC, and with it the body schema (`body_schema`), is known
   without a second path-template matcher that could disagree with the transcoder's. It
   parses the copy as strict JSON (RFC 8259), walks it against the schema and answers 400 on
   an unknown key. Running after jwt_authn keeps 401 ahead of 400: callers without a valid
   token learn nothing about the schema.

The capture also refuses a non-empty body that is not declared as JSON (415, reason
`UNSUPPORTED_MEDIA_TYPE`): the transcoder reads any body as JSON whatever its content-type,
so `text/plain` (which a browser sends cross-origin without a CORS preflight), no content-type
at all or curl's `application/x-www-form-urlencoded` were served as if they were JSON. Only one
content-type whose media type is `application/json` (any case; parameters allowed, a charset
only if UTF-8) passes. `+json` types (`application/merge-patch+json`, `application/problem+json`)
are refused: each names semantics of its own (a merge patch is not the proto3 JSON mapping the
transcoder applies), and a client that sends one expects them. Bodies that are empty (a GET, a
POST without body) pass whatever they say: there is nothing to misread. This refusal runs
before the transcoder, whose JSON parser would otherwise answer first (400 for `a=b`), and so
before jwt_authn and before the transcoder's 404: the 401-before-400 rule above protects the
schema, and a media-type refusal says nothing about the schema, the route or the caller (it
depends on the request's own headers alone; the same body to a path that does not exist gets
415 too). The reply is a plain local reply that the mapper turns into the usual Status
(INVALID_ARGUMENT), for a request that only looks like gRPC (`application/grpc; x`,
`application/grpc-web`) too: Envoy answers it as HTTP, and so does the mapper (`native_grpc`).

It fails closed: the capture marks every request it inspects, and the check refuses (500) a
transcoded request that carries no mark. Native gRPC is recognised exactly as Envoy does
(`native_grpc`: `application/grpc`, or `application/grpc+` and anything after it), so
`application/grpc; x` is transcoded *and* checked, and `application/grpc+proto; x` passes as
the native call Envoy takes it for. A body holding a NUL byte is refused (400). Query
parameters that name a field the URL path sets are refused too (the transcoder would let `?walletId=` override
`/wallets/{wallet_id}`), and so is every query parameter of a `body: "*"` binding (400
`QUERY_PARAMETER_NOT_ALLOWED`): the transcoder would take `POST /v1/auth/login?password=…` from
the URL, where proxies and browser histories keep it. A key that appears twice in one object,
or one field under both its spellings (`fullName` and `full_name`), is refused (400
`DUPLICATE_FIELD`): parsers disagree about which one wins. A list where the field takes a
single value is refused naming the field (400 `INVALID_REQUEST`, "amount.amountMinor: a list
where a single value is expected"): the transcoder's own refusal names at most the parent.
A path that leaves its last variable empty, which the transcoder routed to another RPC
(`GET /v1/transactions/reference/` to GetTransaction), is refused naming that variable's field
(400 `INVALID_REQUEST`, "referenceId: must not be empty"; `path_shapes`). A query parameter
given twice (`?pageSize=1&pageSize=50`, or under both spellings) is refused naming the field
(400 `DUPLICATE_FIELD`, "given more than once in the query string"): the transcoder keeps the
last value silently. Fields the proto declares `repeated` (a repeated scalar is the only
repeated kind a query can set) keep taking several values.

Field violations name a field of the contract by its JSON path (`fullName`, also when the
client sent `full_name`), as google.rpc.BadRequest spells paths for JSON and as JSON clients
read the services' own violations (`replies` renames those); a key the contract does not know
is named as sent.

The checker accepts less than the transcoder on purpose: the transcoder also takes unquoted
keys, single-quoted strings and trailing commas, which a lenient or skipping checker would
let through unchecked (`{isAdmin: true}`). Such bodies get 400 INVALID_REQUEST. The walk is
bounded: the body cap runs first, nesting deeper than 100 and more than 20,000 values are
refused, at most 10 fields are reported. A failure inside the script answers 500 (closed), never lets the request pass.

Strings are checked, not decoded, except keys. A string value's escapes are each looked at
once (a bad escape, bad hex digits or an unpaired surrogate are invalid JSON, as before) and
nothing is built from them. The check used to decode every string into a table entry per
escape: 14 MB of escaped slashes in a KYC file's JSON cost one worker ~1 s of CPU and ~160 MiB
of Lua memory (a plain string of that size: 0.01 s), a public GetJwks with 1 MiB of them
~40 ms. An escape-heavy body now costs about twice a plain one of its size, and no memory of
its own. Keys are decoded, to be looked up, compared and named, up to `MAX_KEY_BYTES` (256): a
longer key, as sent or once decoded, is refused wherever it is (400 INVALID_REQUEST, a field
violation "a key longer than 256 bytes" naming it by its first 256 bytes) and not decoded
further. No field of the contract comes near (`checker_lua` refuses a contract whose field
does); such a key was an unknown field before, or passed in a map or a free-form value.

The checker's replies are Lua local replies, which Envoy passes through the local reply
mapper; `errors.local_reply_config` keeps them verbatim (matched on the `reply` flag in the
dynamic metadata).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vaultpay_gateway._types import Json, typed
from vaultpay_gateway.body_schema import LIST_NOT_EXPECTED, BodySchemas, ValueRule
from vaultpay_gateway.errors import (
    DUPLICATE_FIELD_REASON,
    ERROR_DOMAIN,
    INVALID_REQUEST_REASON,
    JSON_BODY_METADATA,
    QUERY_PARAMETER_REASON,
    UNKNOWN_FIELD_REASON,
    UNSUPPORTED_MEDIA_TYPE_TEXT,
)
from vaultpay_gateway.lua import lua_string
from vaultpay_gateway.native_grpc import NATIVE_GRPC_LUA

__all__ = [
    "CAPTURE_FILTER",
    "CHECK_FILTER",
    "MAX_KEY_BYTES",
    "capture_filter",
    "check_filter",
    "checker_lua",
]

CAPTURE_FILTER = "vaultpay.json_body.capture"
CHECK_FILTER = "vaultpay.json_body.check"
_SAFE_COMMENT = re.compile(r"[\w.\-]+")
# The longest JSON key the check decodes: longer ones are refused (no field name comes near).
MAX_KEY_BYTES = 256

_CAPTURE_LUA = r"""-- vaultpay gateway: copies JSON request bodies for the unknown-field check that runs
-- after the transcoder (vaultpay_gateway/json_body.py). Native gRPC (is_native_grpc, above,
-- Envoy's own test) is left alone; anything else (`application/grpc; x`, `application/grpc-web`)
-- is transcoded by Envoy, so it is captured and checked like JSON.

-- A body the transcoder may read: one content-type whose media type is `application/json`
-- (any case), parameters allowed, but a charset only if it is UTF-8 (RFC 8259 §8.1: the
-- transcoder reads every body as UTF-8). Two content-types arrive joined by a comma.
local function is_json(content_type)
  if content_type == nil or string.find(content_type, ",", 1, true) ~= nil then return false end
  local media, parameters = string.match(content_type, "^[ \t]*([^; \t]+)[ \t]*(.*)$")
  if media == nil or string.lower(media) ~= "application/json" then return false end
  if parameters ~= "" and string.sub(parameters, 1, 1) ~= ";" then return false end
  for parameter in string.gmatch(parameters, "[^;]+") do
    local name, value = string.match(parameter, "^[ \t]*([^= \t]+)[ \t]*=[ \t]*(.-)[ \t]*$")
    if name ~= nil and string.lower(name) == "charset" then
      value = string.lower((string.gsub(value, '^"(.*)"$', "%1")))
      if value ~= "utf-8" then return false end
    end
  end
  return true
end

function envoy_on_request(handle)
  -- Only the transcoder may say what the original method was (access logs, binding choice).
  handle:headers():remove("x-envoy-original-method")
  if is_native_grpc(handle:headers():get("content-type")) then return end
  -- handle:body() yields until the body is in; Envoy objects taken before it are stale
  -- after it, so the metadata is fetched afterwards.
  local body = handle:body()
  local metadata = handle:streamInfo():dynamicMetadata()
  -- The check refuses a transcoded request that this filter did not see (fail closed).
  metadata:set(NS, "seen", true)
  if body == nil or body:length() == 0 then return end
  -- The transcoder would read any body as JSON (`text/plain`, none, a form): refused before
  -- it does (415, made a google.rpc.Status by the local reply mapper).
  if not is_json(handle:headers():get("content-type")) then
    handle:respond({ [":status"] = "415" }, UNSUPPORTED_MEDIA_TYPE)
    return
  end
  local bytes = body:getBytes(0, body:length())
  if string.find(bytes, "\0", 1, true) ~= nil then
    -- Never valid JSON, and metadata strings would be cut at it.
    metadata:set(NS, "nul", true)
    return
  end
  metadata:set(NS, "body", bytes)
end
"""

# M: message rules, A: aliases, Q: bindings without query, E: empty path variables
# (E[method][path] = the field's JSON name, `path_shapes`), R: RPCs (generated above this
# code). A rule is `true` (any value), a message number (objects checked against M[n], arrays
# element by element) or `{n}` (a map: any key, values checked against M[n]). In M[n], `false`
# marks a field the URL path sets. A[n] maps a field's proto name to its JSON name (one field,
# two spellings). Q[path][method] is true when that binding is `body: "*"`.
_CHECK_LUA = r"""
local MAX_DEPTH = 100
-- A budget of JSON values per body: the walk costs Lua CPU on Envoy's worker, and no request
-- of the contract comes near this (a 1 MiB array of zeros would be ~500,000 values).
local MAX_VALUES = 20000
local MAX_REPORTED = 10
-- Keys are decoded (to be looked up, compared and named) up to MAX_KEY bytes (generated above
-- this code); a longer key is refused, named by its first MAX_KEY bytes.
local LONG_KEY = "a key longer than " .. MAX_KEY .. " bytes"
local byte, char, find, format, sub = string.byte, string.char, string.find, string.format, string.sub
local concat, floor, huge, unpack = table.concat, math.floor, math.huge, unpack

local src, pos, depth, found, count, path, values_left, next_quote, next_backslash

local function bad(what)
  error({ what = what, at = pos }, 0)
end

local function skip_space()
  pos = find(src, "[^ \t\r\n]", pos) or #src + 1
end

-- Hex digits by byte, and the escapes other than \u by the byte after the backslash (what
-- each stands for).
local HEX = {}
for i = 0, 9 do HEX[48 + i] = i end
for i = 0, 5 do HEX[65 + i], HEX[97 + i] = 10 + i, 10 + i end
local ESCAPES = { [34] = 34, [92] = 92, [47] = 47, [98] = 8, [102] = 12, [110] = 10, [114] = 13, [116] = 9 }

-- The code unit of the \u escape whose backslash is at `at`.
local function code_unit(at)
  local a, b, c, d = byte(src, at + 2, at + 5)
  a, b, c, d = HEX[a], HEX[b], HEX[c], HEX[d]
  if a == nil or b == nil or c == nil or d == nil then bad("bad \\u escape") end
  return a * 0x1000 + b * 0x100 + c * 0x10 + d
end

-- The escape whose backslash is at `at`, checked: where it ends (exclusive) and the code
-- point it stands for.
local function escape(at)
  local c = byte(src, at + 1)
  if c ~= 117 then
    local cp = ESCAPES[c]
    if cp == nil then bad("bad escape") end
    return at + 2, cp
  end
  local cp = code_unit(at)
  if cp < 0xD800 or cp >= 0xE000 then return at + 6, cp end
  if cp < 0xDC00 and byte(src, at + 6) == 92 and byte(src, at + 7) == 117 then
    local low = code_unit(at + 6)
    if low >= 0xDC00 and low < 0xE000 then
      return at + 12, 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
    end
  end
  -- A surrogate left unpaired is no character (the transcoder's own error would quote the
  -- body around it).
  bad("a \\u escape of an unpaired surrogate")
end

-- A key's bytes while it is decoded, the first n of them (at most MAX_KEY + 4: past MAX_KEY
-- nothing more is kept).
local key_bytes = {}

-- Adds src[from..to] to the key's n bytes, no further than MAX_KEY + 1 in all.
local function add_run(n, from, to)
  if to > from + MAX_KEY - n then to = from + MAX_KEY - n end
  for i = from, to do
    n = n + 1
    key_bytes[n] = byte(src, i)
  end
  return n
end

-- Adds code point cp's UTF-8 bytes to the key's n bytes, unless it is past MAX_KEY already.
local function add_code_point(n, cp)
  if n > MAX_KEY then return n end
  if cp < 0x80 then
    key_bytes[n + 1] = cp
    return n + 1
  end
  if cp < 0x800 then
    key_bytes[n + 1], key_bytes[n + 2] = 0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40
    return n + 2
  end
  if cp < 0x10000 then
    key_bytes[n + 1], key_bytes[n + 2], key_bytes[n + 3] =
      0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40
    return n + 3
  end
  key_bytes[n + 1], key_bytes[n + 2], key_bytes[n + 3], key_bytes[n + 4] = 0xF0 + floor(cp / 0x40000),
    0x80 + floor(cp / 0x1000) % 0x40, 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40
  return n + 4
end

-- The string that starts at pos (a double quote): its escapes are checked, and pos moves past
-- it. A value is not decoded: nothing is built, whatever its escapes (each is looked at once,
-- in a loop LuaJIT compiles, and runs between them are skipped by plain searches). A key
-- (`as_key`) is returned decoded, or, when it is longer than MAX_KEY bytes, its first MAX_KEY
-- bytes and true. Raw control characters are left to the transcoder: they cannot change the
-- structure.
local function read_string(as_key)
  local from = pos + 1
  -- The next quote and backslash, each searched again only once passed: the searches cover
  -- the body once between them, however many strings there are.
  if next_quote < from then next_quote = find(src, '"', from, true) or huge end
  if next_quote == huge then bad("unterminated string") end
  if next_backslash < from then next_backslash = find(src, "\\", from, true) or huge end
  if next_quote < next_backslash then
    -- No escape: the common case.
    pos = next_quote + 1
    if not as_key then return end
    if next_quote - from > MAX_KEY then return sub(src, from, from + MAX_KEY - 1), true end
    return sub(src, from, next_quote - 1)
  end
  local at, n = next_backslash, 0
  if as_key then n = add_run(n, from, at - 1) end
  while true do
    local cp
    at, cp = escape(at)
    if as_key then n = add_code_point(n, cp) end
    -- Escapes one after another are read on without a search.
    if byte(src, at) ~= 92 then
      if next_backslash < at then next_backslash = find(src, "\\", at, true) or huge end
      if next_quote < at then next_quote = find(src, '"', at, true) or huge end
      if next_quote < next_backslash then
        pos = next_quote + 1
        if not as_key then return end
        n = add_run(n, at, next_quote - 1)
        if n > MAX_KEY then return char(unpack(key_bytes, 1, MAX_KEY)), true end
        return char(unpack(key_bytes, 1, n))
      end
      if next_backslash == huge then bad("unterminated string") end
      if as_key then n = add_run(n, at, next_backslash - 1) end
      at = next_backslash
    end
  end
end

local function report(description, reason)
  count = count + 1
  if count <= MAX_REPORTED then found[count] = { concat(path), description, reason or REASON } end
end

local read_value

local function enter()
  depth = depth + 1
  if depth > MAX_DEPTH then bad("nested too deeply") end
  pos = pos + 1
  skip_space()
end

local function read_object(rule)
  enter()
  if byte(src, pos) == 125 then pos = pos + 1; depth = depth - 1; return end
  if type(rule) == "number" and rule < 0 then rule = -rule end
  local fields, values, aliases = M[rule], nil, A[rule]
  if type(rule) == "table" then values = rule[1] end
  local n, seen = #path, {}
  while true do
    if byte(src, pos) ~= 34 then bad("expected a double-quoted key") end
    local key, long = read_string(true)
    skip_space()
    if byte(src, pos) ~= 58 then bad("expected ':'") end
    pos = pos + 1
    skip_space()
    -- A field of the contract is named by its JSON name whichever spelling came (one field,
    -- one name, as google.rpc.BadRequest spells paths for JSON); anything else as sent.
    local name = not long and aliases and aliases[key] or key
    path[n + 1] = n == 0 and name or ("." .. name)
    local inner = true
    if long then
      -- Decoded no further than its first MAX_KEY bytes, which name it; no field is as long.
      report(LONG_KEY, INVALID)
    else
      if seen[name] then report("duplicate key", DUPLICATE) else seen[name] = true end
      if fields ~= nil then
        inner = fields[key]
        if inner == nil then
          report("unknown field"); inner = true
        elseif inner == false then
          report("set by the URL path, not by the body"); inner = true
        end
      elseif values ~= nil then
        inner = values
      end
    end
    read_value(inner)
    path[n + 1] = nil
    skip_space()
    local c = byte(src, pos)
    if c == 125 then pos = pos + 1; depth = depth - 1; return end
    if c ~= 44 then bad("expected ',' or '}'") end
    pos = pos + 1
    skip_space()
  end
end

local function read_array(rule)
  enter()
  if byte(src, pos) == 93 then pos = pos + 1; depth = depth - 1; return end
  local n, index = #path, 0
  while true do
    path[n + 1] = "[" .. index .. "]"
    read_value(rule)
    path[n + 1] = nil
    skip_space()
    local c = byte(src, pos)
    if c == 93 then pos = pos + 1; depth = depth - 1; return end
    if c ~= 44 then bad("expected ',' or ']'") end
    pos = pos + 1
    skip_space()
    index = index + 1
  end
end

local WORDS = { "true", "false", "null" }

read_value = function(rule)
  values_left = values_left - 1
  if values_left < 0 then bad("too many values") end
  local c = byte(src, pos)
  if c == 123 then return read_object(rule) end
  if c == 91 then
    if rule == "s" or type(rule) == "table" or (type(rule) == "number" and rule < 0) then
      report(LIST_NOT_EXPECTED, INVALID)
      return read_array(true)
    end
    return read_array(rule)
  end
  if c == 34 then read_string(); return end
  local _, last = find(src, "^-?%d+", pos)
  if last ~= nil then
    pos = last + 1
    _, last = find(src, "^%.%d+", pos)
    if last ~= nil then pos = last + 1 end
    _, last = find(src, "^[eE][-+]?%d+", pos)
    if last ~= nil then pos = last + 1 end
    return
  end
  for _, word in ipairs(WORDS) do
    if sub(src, pos, pos + #word - 1) == word then pos = pos + #word; return end
  end
  bad(c == nil and "unexpected end" or "unexpected character")
end

local function check(body, rule)
  src, pos, depth, found, count, path, values_left = body, 1, 0, {}, 0, {}, MAX_VALUES
  next_quote, next_backslash = 0, 0
  skip_space()
  if pos <= #src then
    read_value(rule)
    skip_space()
    if pos <= #src then bad("data after the JSON value") end
  end
  return found, count
end

-- Bindings that disagree about the body: those of the request's method; a body passes if
-- one of them accepts it.
local function check_rpc(body, entry, method)
  if type(entry) ~= "table" or entry.b == nil then return check(body, entry) end
  local candidates = {}
  for _, binding in ipairs(entry.b) do
    if binding[1] == method then candidates[#candidates + 1] = binding[2] end
  end
  if #candidates == 0 then
    for _, binding in ipairs(entry.b) do candidates[#candidates + 1] = binding[2] end
  end
  local first_found, first_count
  for _, rule in ipairs(candidates) do
    local f, c = check(body, rule)
    if c == 0 then return f, c end
    if first_found == nil then first_found, first_count = f, c end
  end
  return first_found, first_count
end

-- Keys are echoed in replies: anything that is not well-formed UTF-8 becomes U+FFFD.
local function valid_utf8(text)
  local out, i, n = {}, 1, #text
  while i <= n do
    local c = byte(text, i)
    local size = c < 0x80 and 1 or c < 0xC2 and 0 or c < 0xE0 and 2 or c < 0xF0 and 3 or c < 0xF5 and 4 or 0
    local ok = size > 0 and i + size - 1 <= n
    for j = i + 1, i + size - 1 do
      local d = byte(text, j)
      ok = ok and d >= 0x80 and d < 0xC0
    end
    local second = byte(text, i + 1) or 0
    if ok and ((c == 0xE0 and second < 0xA0) or (c == 0xED and second >= 0xA0)
        or (c == 0xF0 and second < 0x90) or (c == 0xF4 and second >= 0x90)) then
      ok = false
    end
    if ok then
      out[#out + 1] = sub(text, i, i + size - 1)
      i = i + size
    else
      out[#out + 1] = "\239\191\189"
      i = i + 1
    end
  end
  return concat(out)
end

local function quote(text, limit)
  if #text > limit then
    text = sub(text, 1, limit) .. "..."
  end
  text = valid_utf8(text)
  local escaped = string.gsub(text, '[%z\1-\31"\\\127]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    return format("\\u%04x", byte(c))
  end)
  return '"' .. escaped .. '"'
end

local function status(code, reason, message, violations)
  local details = {
    format('{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"%s","domain":"%s"}', reason, DOMAIN),
  }
  if violations ~= nil then
    local items = {}
    for i, v in ipairs(violations) do
      items[i] = format('{"field":%s,"description":%s}', quote(v[1], 200), quote(v[2], 200))
    end
    details[2] = '{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":['
      .. concat(items, ",") .. "]}"
  end
  return format('{"code":%d,"message":%s,"details":[%s]}', code, quote(message, 1000), concat(details, ","))
end

local function reply(handle, http_status, body)
  -- Tells the local reply mapper to keep this body as it is.
  handle:streamInfo():dynamicMetadata():set(NS, "reply", true)
  handle:respond({ [":status"] = http_status, ["content-type"] = "application/json" }, body)
end

-- The query string's keys, %-decoded, in order.
local function query_keys(original_path)
  local query = original_path and string.match(original_path, "%?(.*)$")
  local keys = {}
  if query == nil then return keys end
  for key in string.gmatch(query, "([^&=]+)=?[^&]*") do
    keys[#keys + 1] = (string.gsub(key, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
  end
  return keys
end

-- The request message's rule number for the query string (the first binding's).
local function query_rule(entry)
  local rule = entry
  if type(rule) == "table" then rule = rule.b and rule.b[1][2] or rule[1] end
  if type(rule) == "number" and rule < 0 then rule = -rule end
  return rule
end

-- What a query key (`amount.currency_code`) names: the field path in JSON names
-- (`amount.currencyCode`; a part the contract does not know stays as sent), and the field's
-- rule: `true` for a repeated one (a repeated scalar, or a Value / ListValue), `false` for
-- one the URL path sets, nil where the tables cannot follow the key.
local function query_field(key, entry)
  local rule, parts = query_rule(entry), {}
  for part in string.gmatch(key, "[^.]+") do
    if type(rule) == "number" and rule < 0 then rule = -rule end
    local fields = type(rule) == "number" and M[rule] or nil
    if fields == nil then
      parts[#parts + 1] = part
      rule = nil
    else
      local aliases = A[rule]
      parts[#parts + 1] = aliases and aliases[part] or part
      rule = fields[part]
    end
  end
  return concat(parts, "."), rule
end

-- Query parameters must not set what the URL path sets (the transcoder lets `?walletId=`
-- override `/wallets/{wallet_id}`). Keys are compared after %-decoding, first segment only.
local function path_bound_in_query(keys, entry)
  local fields = M[query_rule(entry)]
  if fields == nil then return {} end
  local out = {}
  for _, key in ipairs(keys) do
    local head = string.match(key, "^[^.]+") or key
    if fields[head] == false then
      out[#out + 1] = { (query_field(key, entry)), "set by the URL path, not by the query" }
    end
  end
  return out
end

-- Every query parameter of a `body: "*"` binding: its fields belong in the JSON body.
local function query_not_allowed(keys, entry)
  local out = {}
  for i, key in ipairs(keys) do
    if i > MAX_REPORTED then break end
    out[i] = { (query_field(key, entry)), "not accepted in the query string: send it in the JSON body" }
  end
  return out
end

-- A field that is not repeated, given more than once (`?pageSize=1&pageSize=50`, or under
-- both spellings): the transcoder keeps the last value silently. One violation per field.
local function repeated_in_query(keys, entry)
  local count, out = {}, {}
  for _, key in ipairs(keys) do
    local name, rule = query_field(key, entry)
    count[name] = (count[name] or 0) + 1
    if count[name] == 2 and rule ~= true and #out < MAX_REPORTED then
      out[#out + 1] = { name, "given more than once in the query string" }
    end
  end
  return out
end

-- The original path as the transcoder matches it: no query string, no trailing empty
-- segments, the `:verb` kept, each segment %-decoded on its own (`%2F` splits nothing).
local function route_shape(original_path)
  local path = string.match(original_path, "^[^?]*")
  local verb = ""
  local last_slash = string.match(path, "^.*()/") or 1
  local colon = string.match(path, "^.*():")
  if colon ~= nil and colon > last_slash then
    path, verb = sub(path, 1, colon - 1), sub(path, colon)
  end
  local segments = {}
  for segment in string.gmatch(path .. "/", "([^/]*)/") do segments[#segments + 1] = segment end
  while #segments > 1 and segments[#segments] == "" do segments[#segments] = nil end
  for i, segment in ipairs(segments) do
    segments[i] = (string.gsub(segment, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
  end
  return concat(segments, "/") .. verb
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local entry = R[headers:get(":path")]
  local original_path = headers:get("x-envoy-original-path")
  if entry == nil or original_path == nil then return end  -- not a transcoded routed RPC
  local metadata = handle:streamInfo():dynamicMetadata()
  local stash = metadata:get(NS)
  if stash == nil or stash.seen ~= true then
    handle:logErr("json body check: transcoded request the capture filter did not see")
    reply(handle, "500", status(13, "INTERNAL", "internal gateway error"))
    return
  end
  if stash.nul == true then
    reply(handle, "400", status(3, "INVALID_REQUEST", "the request body is not valid JSON: NUL byte"))
    return
  end
  local method = headers:get("x-envoy-original-method")
  -- `/v1/transactions/reference/` reached GetTransaction (transaction_id "reference"): the
  -- transcoder dropped the empty segment of the binding the client meant (path_shapes.py).
  local shapes = E[method]
  local empty = shapes and shapes[route_shape(original_path)]
  if empty ~= nil then
    reply(handle, "400", status(3, INVALID, empty .. ": must not be empty", { { empty, "must not be empty" } }))
    return
  end
  local keys = query_keys(original_path)
  if #keys > 0 then
    local closed = Q[headers:get(":path")]
    if closed ~= nil and closed[method] then
      local refused = query_not_allowed(keys, entry)
      local names = {}
      for i, v in ipairs(refused) do names[i] = v[1] end
      local message = "this method takes nothing from the query string (send it in the JSON body): "
        .. concat(names, ", ") .. (#keys > #refused and ", ..." or "")
      reply(handle, "400", status(3, QUERY_REASON, message, refused))
      return
    end
    local from_query = path_bound_in_query(keys, entry)
    if #from_query > 0 then
      reply(handle, "400", status(3, REASON, "the query sets a field of the URL path", from_query))
      return
    end
    local repeated = repeated_in_query(keys, entry)
    if #repeated > 0 then
      local names = {}
      for i, v in ipairs(repeated) do names[i] = v[1] end
      local message = (#repeated == 1 and "duplicate query parameter: " or "duplicate query parameters: ")
        .. concat(names, ", ")
      reply(handle, "400", status(3, DUPLICATE, message, repeated))
      return
    end
  end
  local body = stash.body
  if body == nil or body == "" then return end
  metadata:set(NS, "body", "")
  local ok, violations, total = pcall(check_rpc, body, entry, method)
  if not ok then
    if type(violations) == "table" and violations.what ~= nil then
      local message = format("the request body is not valid JSON: %s at byte %d", violations.what, violations.at)
      reply(handle, "400", status(3, "INVALID_REQUEST", message))
    else
      handle:logErr("json body check failed: " .. tostring(violations))
      reply(handle, "500", status(13, "INTERNAL", "internal gateway error"))
    end
    return
  end
  if total == 0 then return end
  local names = {}
  for i, v in ipairs(violations) do names[i] = v[1] end
  -- One reason per reply: the first problem's (each violation says what it is).
  local reason = violations[1][3]
  local mixed = false
  for _, v in ipairs(violations) do if v[3] ~= reason then mixed = true end end
  local message
  if reason == INVALID or mixed then
    -- As the transcoder's type errors read: "field: what is wrong", each its own.
    local parts = {}
    for i, v in ipairs(violations) do parts[i] = v[1] .. ": " .. v[2] end
    message = concat(parts, "; ") .. (total > #violations and "; ..." or "")
  else
    local what = reason == DUPLICATE and "duplicate field" or "unknown field"
    message = what .. (total == 1 and " in the request body: " or "s in the request body: ")
      .. concat(names, ", ") .. (total > #violations and ", ..." or "")
  end
  reply(handle, "400", status(3, reason, message, violations))
end
"""


def _lua_rule(rule: ValueRule, ids: Mapping[str, int]) -> str:
    """`true` anything, `"s"` anything but an array, `n` / `-n` message rule n (`-`: no array),
    `{n}` a map (never an array) whose values follow rule n."""
    if rule.message is None:
        return '"s"' if rule.single else "true"
    number = ids[rule.message]
    if rule.is_map:
        return "{" + str(number) + "}"
    return str(-number if rule.single else number)


def _comment(text: str) -> str:
    return f"  -- {text}" if _SAFE_COMMENT.fullmatch(text) else ""


def _prelude() -> str:
    return (
        f"local NS = {lua_string(JSON_BODY_METADATA)}\n"
        f"local DOMAIN = {lua_string(ERROR_DOMAIN)}\n"
        f"local REASON = {lua_string(UNKNOWN_FIELD_REASON)}\n"
        f"local DUPLICATE = {lua_string(DUPLICATE_FIELD_REASON)}\n"
        f"local INVALID = {lua_string(INVALID_REQUEST_REASON)}\n"
        f"local LIST_NOT_EXPECTED = {lua_string(LIST_NOT_EXPECTED)}\n"
        f"local QUERY_REASON = {lua_string(QUERY_PARAMETER_REASON)}\n"
    )


def checker_lua(schemas: BodySchemas) -> str:
    """The check filter's script: the schema tables, then the checker."""
    ids = {key: number for number, key in enumerate(sorted(schemas.messages), start=1)}
    too_long = sorted(
        f"{message}.{k}"
        for message, rule in schemas.messages.items()
        for k in (*rule.fields, *rule.path_bound)
        if len(k.encode()) > MAX_KEY_BYTES
    )
    if too_long:
        raise ValueError(f"JSON keys longer than {MAX_KEY_BYTES} bytes: {', '.join(too_long)}")
    lines = [
        "-- Generated by vaultpay_gateway from the descriptor set; do not edit.",
        _prelude(),
        f"local MAX_KEY = {MAX_KEY_BYTES}",
        "local M = {",
    ]
    for key, number in ids.items():
        rule = schemas.messages[key]
        entries = [
            *(f"[{lua_string(k)}] = {_lua_rule(v, ids)}" for k, v in sorted(rule.fields.items())),
            *(f"[{lua_string(k)}] = false" for k in sorted(rule.path_bound)),
        ]
        lines.append(f"  [{number}] = {{ {', '.join(entries)} }},{_comment(key)}")
    lines += ["}", "local A = {"]
    for key, number in ids.items():
        aliases = schemas.messages[key].aliases
        if aliases:
            spellings = ", ".join(
                f"[{lua_string(k)}] = {lua_string(v)}" for k, v in sorted(aliases.items())
            )
            lines.append(f"  [{number}] = {{ {spellings} }},")
    lines += ["}", "local Q = {"]
    for grpc_path, bindings in sorted(schemas.rpcs.items()):
        closed = sorted(
            {b.method for b in bindings} - {b.method for b in bindings if b.accepts_query}
        )
        if closed:
            flags = ", ".join(f"[{lua_string(m)}] = true" for m in closed)
            lines.append(f"  [{lua_string(grpc_path)}] = {{ {flags} }},")
    lines += ["}", "local E = {"]
    for method in sorted({shape.method for shape in schemas.empty_paths}):
        shapes = ", ".join(
            f"[{lua_string(shape.path)}] = {lua_string(shape.field)}"
            for shape in schemas.empty_paths
            if shape.method == method
        )
        lines.append(f"  [{lua_string(method)}] = {{ {shapes} }},")
    lines += ["}", "local R = {"]
    for grpc_path, bindings in sorted(schemas.rpcs.items()):
        rules = {b.body for b in bindings}
        if len(rules) == 1:
            value = _lua_rule(bindings[0].body, ids)
        else:
            choices = ", ".join(
                f"{{ {lua_string(b.method)}, {_lua_rule(b.body, ids)} }}" for b in bindings
            )
            value = f"{{ b = {{ {choices} }} }}"
        lines.append(f"  [{lua_string(grpc_path)}] = {value},")
    lines.append("}")
    return "\n".join(lines) + _CHECK_LUA


def _lua_filter(name: str, source: str) -> Json:
    return {
        "name": name,
        "typed_config": typed(
            "envoy.extensions.filters.http.lua.v3.Lua",
            default_source_code={"inline_string": source},
        ),
    }


def capture_filter() -> Json:
    """Before the transcoder: refuses non-gRPC request bodies not sent as JSON (415), copies
    the others into the dynamic metadata."""
    media_type = f"local UNSUPPORTED_MEDIA_TYPE = {lua_string(UNSUPPORTED_MEDIA_TYPE_TEXT)}\n"
    return _lua_filter(CAPTURE_FILTER, _prelude() + media_type + NATIVE_GRPC_LUA + _CAPTURE_LUA)


def check_filter(schemas: BodySchemas) -> Json:
    """After jwt_authn: refuses bodies with keys outside the contract."""
    return _lua_filter(CHECK_FILTER, checker_lua(schemas))
