-- What the edge does to REST traffic that no built-in filter does.
--
-- Requests: (0) a URL over MAX_URL_BYTES is 414 and headers over MAX_HEADER_BYTES
-- are 431 (gRPC clients: INVALID_ARGUMENT); a REST path under the API's prefixes
-- that no google.api.http rule has is 404, a rule's path with another method 405
-- with Allow (HTTP_ROUTES). (1) A REST client's deadline, x-envoy-upstream-rq-timeout-ms (which the
-- connection manager strips from external clients, hence saved under another name
-- by the early header mutation in bootstrap.yaml), becomes grpc-timeout: the header
-- the route's deadline honours (up to its cap) and the services read. (2) A JSON
-- body with a key its message does not have is refused with 400 and a
-- google.rpc.BadRequest naming each one: the transcoder would drop it silently;
-- so is a body naming a field twice (`display_name` and `displayName`), of which
-- the transcoder would keep the later, and for the same reason a query naming a
-- parameter twice (`page_size` and `pageSize`; checked before the body);
-- a body that is not JSON is refused without quoting it back.
-- Responses: a service says which HTTP status a success really is in its response
-- metadata (`x-http-status: 201` with `location`, or `x-http-status: 204`); the
-- transcoder answers 200 for every success, so this turns the hint into the status.
-- A 429's Retry-After becomes the time until the rate limit's bucket refills.
-- Every REST response loses the gRPC-only headers; a REST 429 or 503 gets a
-- Retry-After and a 401 a WWW-Authenticate when it has none; the transcoder's
-- message for a mistyped JSON value is rewritten without the value.
--
-- envoy_bootstrap/render.py inlines this file into the bootstrap after the generated ENUMS,
-- HTTP_ROUTES, API_PREFIXES, BODY_ROUTES, MESSAGES and ALIASES tables (envoy_bootstrap/body_schema.py).

local SAVED_TIMEOUT = "x-airline-upstream-rq-timeout-ms"
-- Size limits on what a client sends, so that nothing the edge forwards can pass
-- the services' gRPC metadata limit (grpc core: 8 KiB soft, where it starts
-- refusing at random, 16 KiB hard; counted as name + value + 32 per header).
-- The URL travels upstream again as x-envoy-original-path; Envoy adds about
-- 1 KiB of its own (x-forwarded-*, x-request-id, grpc-timeout, ...).
local MAX_URL_BYTES = 4096 -- longer: 414
local MAX_HEADER_BYTES = 6144 -- every header, the URL included: longer is 431
local HEADER_OVERHEAD = 32 -- per header, as HTTP/2 and gRPC count them
-- A 429 or 503 without the service's own Retry-After gets this one (seconds).
local DEFAULT_RETRY_AFTER = "1"
-- What only gRPC clients need: a REST response does not carry it.
local GRPC_ONLY_HEADERS = {
  "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-accept-encoding",
  "grpc-encoding", "x-envoy-upstream-service-time",
}
local STATUS_HINT = "x-http-status"
-- grpc-timeout allows at most 8 digits.
local MAX_GRPC_TIMEOUT_MS = 99999999

local function grpc_timeout_ms(value)
  local amount, unit = string.match(value, "^(%d+)([HMSmun])$")
  if amount == nil then
    return nil
  end
  local per_unit = {H = 3600000, M = 60000, S = 1000, m = 1, u = 0.001, n = 0.000001}
  return tonumber(amount) * per_unit[unit]
end

local body_routes = BODY_ROUTES or {}
local http_routes = HTTP_ROUTES or {}
local api_prefixes = API_PREFIXES or {}
local messages = MESSAGES or {}
-- A nested message is named in MESSAGES; point at its table instead.
for _, fields in pairs(messages) do
  for key, value in pairs(fields) do
    if type(value) == "string" then
      fields[key] = messages[value] or true
    end
  end
end
-- A field's lowerCamelCase key -> its proto name, by the message's table (ALIASES):
-- a body names a field once, in either spelling.
local aliases_of = {}
for name, renamed in pairs(ALIASES or {}) do
  if messages[name] ~= nil then
    aliases_of[messages[name]] = renamed
  end
end
-- The same by request message name, for query parameters: each name a field of
-- the message may go by (either spelling) -> its proto name.
local query_names = {}
for name, renamed in pairs(ALIASES or {}) do
  local names = {}
  for alias, field in pairs(renamed) do
    names[alias] = field
    names[field] = field
  end
  query_names[name] = names
end
-- Keys we know nothing about below this depth are not checked (the transcoder
-- has its own limits); it only bounds our recursion.
local MAX_DEPTH = 32
local NOT_JSON = {}

local function json_string(text)
  local escaped = string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

local ESCAPES = {
  ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t",
}

-- A JSON literal: true, false, null or a number. Anything else is not JSON, and
-- must not reach the transcoder, whose parse errors quote the body back.
local function is_literal(token)
  return token == "true" or token == "false" or token == "null"
    or string.match(token, "^%-?%d+$") ~= nil
    or string.match(token, "^%-?%d+%.%d+$") ~= nil
    or string.match(token, "^%-?%d+[eE][%+%-]?%d+$") ~= nil
    or string.match(token, "^%-?%d+%.%d+[eE][%+%-]?%d+$") ~= nil
end

-- The keys of `text` (a JSON document) that `schema` does not accept, with their
-- paths (`flight.bogus`, `items[2].x`); nil and true when `text` is not JSON. A schema is a table of key -> true (any value) or the
-- table of a nested message; true means any value at all. Third: the keys that name
-- a field the same object already named (`displayName` after `display_name`).
local function unknown_keys(text, schema)
  local pos = 1
  local found = {}
  local twice = {}

  local function fail()
    error(NOT_JSON, 0)
  end

  local function skip_space()
    pos = string.find(text, "[^ \t\r\n]", pos) or #text + 1
  end

  local function read_string()
    local parts = {}
    pos = pos + 1
    while true do
      local at = string.find(text, '["\\]', pos)
      if at == nil then
        fail()
      end
      parts[#parts + 1] = string.sub(text, pos, at - 1)
      if string.sub(text, at, at) == '"' then
        pos = at + 1
        return table.concat(parts)
      end
      local escape = string.sub(text, at + 1, at + 1)
      if escape == "u" then
        local code = tonumber(string.sub(text, at + 2, at + 5), 16)
        if code == nil then
          fail()
        end
        -- Accepted keys are ASCII; any other character makes the key unknown.
        parts[#parts + 1] = code < 128 and string.char(code) or "?"
        pos = at + 6
      elseif ESCAPES[escape] ~= nil then
        parts[#parts + 1] = ESCAPES[escape]
        pos = at + 2
      else
        fail()
      end
    end
  end

  local read_value

  local function read_object(fields, path, depth)
    local named = {}
    local renamed = aliases_of[fields] or {}
    pos = pos + 1
    skip_space()
    if string.sub(text, pos, pos) == "}" then
      pos = pos + 1
      return
    end
    while true do
      skip_space()
      if string.sub(text, pos, pos) ~= '"' then
        fail()
      end
      local key = read_string()
      skip_space()
      if string.sub(text, pos, pos) ~= ":" then
        fail()
      end
      pos = pos + 1
      local child = true
      if type(fields) == "table" then
        child = fields[key]
        local field = renamed[key] or key
        if child == nil then
          found[#found + 1] = path .. key
          child = true
        elseif named[field] then
          twice[#twice + 1] = path .. key
        end
        named[field] = true
      end
      read_value(child, path .. key, depth + 1)
      skip_space()
      local next_char = string.sub(text, pos, pos)
      pos = pos + 1
      if next_char == "}" then
        return
      elseif next_char ~= "," then
        fail()
      end
    end
  end

  local function read_array(fields, path, depth)
    pos = pos + 1
    skip_space()
    if string.sub(text, pos, pos) == "]" then
      pos = pos + 1
      return
    end
    local index = 0
    while true do
      read_value(fields, path .. "[" .. index .. "]", depth + 1)
      index = index + 1
      skip_space()
      local next_char = string.sub(text, pos, pos)
      pos = pos + 1
      if next_char == "]" then
        return
      elseif next_char ~= "," then
        fail()
      end
    end
  end

  read_value = function(fields, path, depth)
    if depth > MAX_DEPTH then
      fields = true
    end
    skip_space()
    local first = string.sub(text, pos, pos)
    if first == "{" then
      read_object(fields, path == "" and "" or path .. ".", depth)
    elseif first == "[" then
      read_array(fields, path, depth)
    elseif first == '"' then
      read_string()
    else
      local _, last = string.find(text, "^[%w%.%+%-]+", pos)
      if last == nil or not is_literal(string.sub(text, pos, last)) then
        fail()
      end
      pos = last + 1
    end
  end

  -- An error of ours (or LuaJIT running out of stack) must not block requests:
  -- that is nil and false, and the transcoder decides.
  local ok, err = pcall(function()
    read_value(schema, "", 0)
    skip_space()
    if pos <= #text then
      fail()
    end
  end)
  if not ok then
    return nil, err == NOT_JSON
  end
  return found, false, twice
end

-- The message a REST request's body must be, or nil for a route without a body.
local function body_message(method, path)
  path = string.match(path, "^[^?]*")
  for _, route in ipairs(body_routes) do
    if route[1] == method and string.match(path, route[2]) then
      return messages[route[3]]
    end
  end
  return nil
end

-- A query string's part before `=`, percent-decoded as the transcoder decodes it.
local function query_key(pair)
  local key = string.gsub(string.match(pair, "^[^=]*"), "%+", " ")
  return (string.gsub(key, "%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

-- The query parameters of a REST request that name a field the query already
-- named in its other spelling (`pageSize` after `page_size`), each once, in order:
-- the transcoder would keep the later. The same name repeated is the transcoder's
-- to judge.
local function query_named_twice(method, path)
  local query = string.match(path, "%?(.*)$")
  if query == nil then
    return {}
  end
  local names = nil
  path = string.match(path, "^[^?]*")
  for _, route in ipairs(http_routes) do
    if route[1] == method and route[3] ~= nil and string.match(path, route[2]) then
      names = query_names[route[3]]
      break
    end
  end
  local twice, first, reported = {}, {}, {}
  if names == nil then
    return twice
  end
  for pair in string.gmatch(query, "[^&]+") do
    local key = query_key(pair)
    local field = names[key]
    if field ~= nil then
      first[field] = first[field] or key
      if first[field] ~= key and not reported[key] then
        reported[key] = true
        twice[#twice + 1] = key
      end
    end
  end
  return twice
end

local function refuse(request_handle, body, status, extra_headers)
  -- Tells local_reply_config that this body is already the google.rpc.Status.
  request_handle:streamInfo():dynamicMetadata():set("envoy.filters.http.lua", "status_body", true)
  local headers = {[":status"] = status or "400", ["content-type"] = "application/json"}
  for name, value in pairs(extra_headers or {}) do
    headers[name] = value
  end
  request_handle:respond(headers, body)
end

local function status_json(code, message)
  return '{"code":' .. code .. ',"message":' .. json_string(message) .. "}"
end

local function is_grpc(headers)
  return string.sub(headers:get("content-type") or "", 1, 16) == "application/grpc"
end

-- A gRPC client gets its answer as a grpc-status (INVALID_ARGUMENT), not HTTP.
local function refuse_too_large(request_handle, grpc, status, message)
  if grpc then
    request_handle:respond({[":status"] = "200", ["content-type"] = "application/grpc",
      ["grpc-status"] = "3", ["grpc-message"] = message}, "")
  else
    refuse(request_handle, status_json(3, message), status)
  end
end

-- 414 for a URL over MAX_URL_BYTES, 431 for headers over MAX_HEADER_BYTES; true
-- when refused. Checked before anything reads the request.
local function refuse_oversized(request_handle, headers)
  local path = headers:get(":path") or ""
  if #path > MAX_URL_BYTES then
    refuse_too_large(request_handle, is_grpc(headers), "414",
      "the request URL is longer than " .. MAX_URL_BYTES .. " bytes")
    return true
  end
  local total = 0
  for name, value in pairs(headers) do
    total = total + #name + #value + HEADER_OVERHEAD
  end
  if total > MAX_HEADER_BYTES then
    refuse_too_large(request_handle, is_grpc(headers), "431",
      "the request headers are larger than " .. MAX_HEADER_BYTES .. " bytes")
    return true
  end
  return false
end

-- A REST path under the API's prefixes must be one of the descriptor's templates
-- (404 otherwise: the transcoder is lenient, e.g. about a trailing slash), with
-- one of the template's methods (405 with Allow otherwise). True when refused.
local function refuse_unknown_route(request_handle, method, path)
  path = string.match(path, "^[^?]*")
  local ours = false
  for _, prefix in ipairs(api_prefixes) do
    if string.sub(path, 1, #prefix) == prefix then
      ours = true
    end
  end
  if not ours then
    return false
  end
  local allowed, seen = {}, {}
  for _, route in ipairs(http_routes) do
    if string.match(path, route[2]) then
      if route[1] == method then
        return false
      end
      if not seen[route[1]] then
        seen[route[1]] = true
        allowed[#allowed + 1] = route[1]
      end
    end
  end
  if #allowed == 0 then
    refuse(request_handle, status_json(5, "no such path"), "404")
  else
    table.sort(allowed)
    refuse(request_handle, status_json(12, "this method is not allowed here; see Allow"),
      "405", {allow = table.concat(allowed, ", ")})
  end
  return true
end

local function refuse_unknown_keys(request_handle, keys)
  local violations = {}
  for i, key in ipairs(keys) do
    violations[i] = '{"field":' .. json_string(key) .. ',"description":"unknown field"}'
  end
  refuse(request_handle, '{"code":3,"message":'
    .. json_string("unknown field: " .. table.concat(keys, ", "))
    .. ',"details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","field_violations":['
    .. table.concat(violations, ",") .. "]}]}")
end

-- `place`: "body" or "query", where the field was named before.
local function refuse_named_twice(request_handle, keys, place)
  local violations = {}
  for i, key in ipairs(keys) do
    violations[i] = '{"field":' .. json_string(key)
      .. ',"description":"this field is already in the ' .. place .. ' under its other name"}'
  end
  refuse(request_handle, '{"code":3,"message":'
    .. json_string("field given twice: " .. table.concat(keys, ", "))
    .. ',"details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","field_violations":['
    .. table.concat(violations, ",") .. "]}]}")
end

-- The transcoder's own parse error quotes the body (a password, say); ours does not.
local function refuse_not_json(request_handle)
  refuse(request_handle, '{"code":3,"message":"the request body is not valid JSON"}')
end

-- x-envoy-upstream-rq-timeout-ms (saved by the early header mutation) as grpc-timeout.
local function apply_deadline(headers)
  local wanted = headers:get(SAVED_TIMEOUT)
  headers:remove(SAVED_TIMEOUT)
  -- An internal client's header survives sanitizing; one mechanism is enough.
  headers:remove("x-envoy-upstream-rq-timeout-ms")
  -- Only plain milliseconds, above zero; anything else is ignored.
  if wanted == nil or string.match(wanted, "^%d+$") == nil then
    return
  end
  local ms = math.min(tonumber(wanted), MAX_GRPC_TIMEOUT_MS)
  if ms <= 0 then
    return
  end
  -- A client that sent both gets the shorter.
  local current = headers:get("grpc-timeout")
  local current_ms = current and grpc_timeout_ms(current)
  if current_ms == nil or ms < current_ms then
    headers:replace("grpc-timeout", string.format("%dm", ms))
  end
end

-- gRPC metadata keys are lowercase letters, digits, '_', '.' and '-'; HTTP allows
-- more ("x^y", "a|b"), and a service's gRPC server refuses a call carrying such a
-- key with INTERNAL. No header of the API has such a name: dropped, not refused,
-- as a browser or proxy may add one the client never chose.
local function drop_non_grpc_headers(headers)
  local drop = {}
  for key, _ in pairs(headers) do
    if string.sub(key, 1, 1) ~= ":" and string.find(key, "[^0-9a-z_%.%-]") then
      drop[#drop + 1] = key
    end
  end
  for _, key in ipairs(drop) do
    headers:remove(key)
  end
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  if refuse_oversized(request_handle, headers) then
    return
  end
  drop_non_grpc_headers(headers)
  local method, path = headers:get(":method"), headers:get(":path") or ""
  if not is_grpc(headers) then
    if refuse_unknown_route(request_handle, method, path) then
      return
    end
    local twice = query_named_twice(method, path)
    if #twice > 0 then
      refuse_named_twice(request_handle, twice, "query")
      return
    end
  end
  local message = body_message(method, path)
  apply_deadline(headers)
  if message == nil then
    return
  end
  -- body() waits for the whole body (the buffer filter already holds it); the
  -- headers object is not usable after it.
  local body = request_handle:body()
  if body ~= nil and body:length() > 0 then
    local keys, not_json, twice = unknown_keys(body:getBytes(0, body:length()), message)
    if not_json then
      refuse_not_json(request_handle)
    elseif keys ~= nil and #keys > 0 then
      refuse_unknown_keys(request_handle, keys)
    elseif twice ~= nil and #twice > 0 then
      refuse_named_twice(request_handle, twice, "body")
    end
  end
end

-- The transcoder's message for a JSON value of the wrong type quotes the value
-- ("password: invalid value 73519468 for type TYPE_STRING"); this one names the
-- field and what it takes only. The type is a proto scalar (TYPE_*) or a type URL
-- (an enum, a well-known type, a message).
local EXPECTED = {
  TYPE_STRING = "a string", TYPE_BYTES = "a base64 string", TYPE_BOOL = "true or false",
  TYPE_DOUBLE = "a number", TYPE_FLOAT = "a number",
  ["google.protobuf.Timestamp"] = "an RFC 3339 timestamp",
  ["google.protobuf.Duration"] = "a duration such as \"1.5s\"",
  ["google.protobuf.FieldMask"] = "comma-separated field names",
  ["google.protobuf.Struct"] = "an object",
  ["google.protobuf.ListValue"] = "an array",
}
local enums = ENUMS or {}

local function expected_json(kind)
  if kind == nil then
    return nil
  end
  local name = string.match(kind, "^type%.googleapis%.com/(.+)$") or kind
  if EXPECTED[name] ~= nil then
    return EXPECTED[name]
  elseif string.match(name, "^TYPE_S?U?INT") or string.match(name, "^TYPE_S?FIXED") then
    return "an integer"
  elseif enums[name] then
    return "one of the enum's names"
  elseif string.sub(name, 1, 5) ~= "TYPE_" then
    return "an object"
  end
  return nil
end

local function without_quoted_value(response_handle)
  local body = response_handle:body()
  if body == nil or body:length() == 0 then
    return
  end
  local text = body:getBytes(0, body:length())
  local field = string.match(text, '"message":"([%w_%.%[%]]+): invalid value ')
  if field == nil then
    return
  end
  local expected = expected_json(string.match(text, '.*for type ([^"\\]+)"'))
  local description = "wrong JSON type or value"
  if expected ~= nil then
    description = description .. " (expected " .. expected .. ")"
  end
  body:setBytes('{"code":3,"message":' .. json_string(field .. ": " .. description)
    .. ',"details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","field_violations":'
    .. '[{"field":' .. json_string(field) .. ',"description":' .. json_string(description)
    .. "}]}]}")
end

-- What a REST response must carry and must not: no gRPC internals, a
-- Retry-After on every 429 and 503, WWW-Authenticate on every 401.
local function clean_rest_response(headers, status)
  for _, name in ipairs(GRPC_ONLY_HEADERS) do
    headers:remove(name)
  end
  if (status == "429" or status == "503") and headers:get("retry-after") == nil then
    headers:add("retry-after", DEFAULT_RETRY_AFTER)
  end
  if status == "401" and headers:get("www-authenticate") == nil then
    headers:add("www-authenticate", "Bearer")
  end
end

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  local status = headers:get(":status")
  -- The rate limiter's Retry-After is its whole window; when the bucket refills
  -- sooner, say so.
  local reset = tonumber(headers:get("x-ratelimit-reset") or "")
  if status == "429" and reset ~= nil and reset >= 1 then
    headers:replace("retry-after", string.format("%d", reset))
  end
  -- gRPC clients keep their trailers and the status hint: their HTTP status is
  -- always 200.
  if is_grpc(headers) then
    return
  end
  clean_rest_response(headers, status)
  local hint = headers:get(STATUS_HINT)
  headers:remove(STATUS_HINT)
  if status == "400" then
    without_quoted_value(response_handle)
    return
  end
  -- Only a success may be upgraded; an error keeps the transcoder's status.
  if hint == nil or status ~= "200" then
    return
  end
  if hint == "201" then
    headers:replace(":status", "201")
  elseif hint == "204" then
    headers:replace(":status", "204")
    headers:remove("content-type")
    -- The transcoder wrote `{}` for google.protobuf.Empty; a 204 has no body,
    -- and no content-length either (setBytes writes one; the headers object
    -- from before body() is no longer valid, hence a fresh one).
    local body = response_handle:body()
    if body ~= nil then
      body:setBytes("")
    end
    response_handle:headers():remove("content-length")
  end
end
