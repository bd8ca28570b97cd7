"""Touches on replies made inside Envoy, in one Lua filter that only acts on the way back.

It sits before the cors filter and the transcoder in the chain, so it sees their replies:

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
   (`daily.amountMinor`, `limits[1].daily`) and rewrites the message to start with it.
   Errors the text names no field for (`Root element must be a message`, a list for a
   field that is not repeated) keep the mapper's reply unchanged. Lua cannot read response
   code details, so the local reply mapper marks transcoder failures with
   `errors.TRANSCODE_FAILURE_HEADER`; only marked 400 replies are read (and buffered), and the
   mark is removed, so other replies pass untouched and unbuffered.

A failure inside the script leaves the reply as the mapper made it.
"""

from __future__ import annotations

from vaultpay_gateway._types import Json, typed
from vaultpay_gateway.errors import ERROR_DOMAIN, TRANSCODE_FAILURE_HEADER

__all__ = ["REPLIES_FILTER", "replies_filter"]

REPLIES_FILTER = "vaultpay.replies"

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

-- `limits[1].daily.amount_minor` -> `limits[1].daily.amountMinor` (proto3 JSON names).
local function json_path(path)
  return (gsub(path, "_(%l)", function(c) return string.upper(c) end))
end

-- The field and what is wrong with it, from the transcoder's text; nil if it names none.
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
  return json_path(path), format("invalid value %s for type %s", value, kind)
end

local function field_error(field, description)
  local message = field .. ": " .. description
  return format(
    '{"code":3,"message":%s,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"INVALID_REQUEST","domain":%s},'
      .. '{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":%s,"description":%s}]}]}',
    quote(message), quote(DOMAIN), quote(field), quote(description))
end

-- The new body for the mapper's reply `text`, or nil to keep it.
local function type_error_body(text)
  local message = json_message(text)
  if message == nil then return nil end
  local field, description = violation(message)
  if field == nil then return nil end
  return field_error(field, description)
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local status = headers:get(":status")
  if status ~= "200" and status ~= "400" then return end
  if status == "200" then
    -- Only the cors filter's preflight replies carry access-control-allow-methods.
    if headers:get("access-control-allow-methods") ~= nil then headers:replace(":status", "204") end
    return
  end
  if headers:get(MARK) == nil then return end
  headers:remove(MARK)
  -- handle:body() yields until the whole reply is in; objects taken before it are stale.
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  local ok, new_body = pcall(type_error_body, body:getBytes(0, body:length()))
  if not ok then
    handle:logErr("type error reply left as it was: " .. tostring(new_body))
    return
  end
  if new_body == nil then return end
  local length = body:setBytes(new_body)
  handle:headers():replace("content-length", tostring(length))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def replies_filter() -> Json:
    """The Lua filter; it defines only `envoy_on_response`."""
    source = (
        f"local DOMAIN = {_lua_string(ERROR_DOMAIN)}\n"
        f"local MARK = {_lua_string(TRANSCODE_FAILURE_HEADER)}\n{_REPLIES_LUA}"
    )
    return {
        "name": REPLIES_FILTER,
        "typed_config": typed(
            "envoy.extensions.filters.http.lua.v3.Lua",
            default_source_code={"inline_string": source},
        ),
    }
