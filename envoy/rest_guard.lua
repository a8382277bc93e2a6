-- The REST guard: checks a REST request before the transcoder sees it, and cleans its answer.
-- Runs only for REST requests (gRPC routes disable it, and a gRPC request on the catch-all
-- route passes untouched), so native gRPC traffic is never buffered or read here.
--
-- 1. A path (with its query) over LIMITS.path bytes is 414, a header block over LIMITS.headers
--    bytes is 431: the transcoder copies the path into x-envoy-original-path, and the service
--    would refuse the doubled metadata with RESOURCE_EXHAUSTED (a 429 that says nothing).
-- 2. A JSON body with a field the method's message does not have is 400 naming each such field.
--    The transcoder drops unknown fields (the proto3 JSON mapping allows it), so a misspelt field
--    would silently do nothing. The body is walked as the proto3 JSON mapping reads it: message
--    fields by JSON name or proto name, maps take any key, Struct/Value/ListValue/Any take
--    anything, other well-known types are scalars in JSON. Bodies that are not valid JSON pass
--    through: the transcoder refuses them with its own 400.
-- 3. A REST answer loses the grpc-status, grpc-message and grpc-accept-encoding headers the
--    transcoder leaves on it; native gRPC answers keep them.
--
-- tools/envoy_config.py prepends LIMITS, ROUTES (the REST bindings that take a body, from the
-- descriptor set) and TYPES (per message: JSON name and proto name -> what its value holds:
-- 0 anything, "pkg.Type" a message, {map = 0 | "pkg.Type"} a map).

local byte, find, sub, concat, char = string.byte, string.find, string.sub, table.concat, string.char
local MAX_DEPTH = 64 -- deeper bodies are left to the transcoder's own limits
local MAX_REPORTED = 20 -- unknown fields named in one answer
local MAX_NAME = 128 -- bytes of one reported field path

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function utf8_char(code)
  if code < 0x80 then
    return char(code)
  elseif code < 0x800 then
    return char(0xC0 + math.floor(code / 0x40), 0x80 + code % 0x40)
  elseif code < 0x10000 then
    return char(0xE0 + math.floor(code / 0x1000), 0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
  end
  return char(0xF0 + math.floor(code / 0x40000), 0x80 + math.floor(code / 0x1000) % 0x40,
    0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
end

local function skip_ws(s, i)
  return find(s, "[^ \t\r\n]", i) or (#s + 1)
end

-- s[i] is '"'. Returns the decoded string (when `decode`) and the index after the closing quote.
local function read_string(s, i, decode)
  local j, parts = i + 1, nil
  while true do
    local k = find(s, '["\\]', j)
    if not k then error("unterminated string") end
    if byte(s, k) == 34 then
      if not decode then return nil, k + 1 end
      if parts then
        parts[#parts + 1] = sub(s, j, k - 1)
        return concat(parts), k + 1
      end
      return sub(s, i + 1, k - 1), k + 1
    end
    local c = sub(s, k + 1, k + 1)
    if decode then
      parts = parts or {}
      parts[#parts + 1] = sub(s, j, k - 1)
    end
    if c == "u" then
      local code = tonumber(sub(s, k + 2, k + 5), 16) or error("bad \\u escape")
      j = k + 6
      if code >= 0xD800 and code <= 0xDBFF and sub(s, j, j + 1) == "\\u" then
        local low = tonumber(sub(s, j + 2, j + 5), 16) or error("bad \\u escape")
        code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
        j = j + 6
      end
      if decode then parts[#parts + 1] = utf8_char(code) end
    else
      local escaped = ESCAPES[c] or error("bad escape")
      if decode then parts[#parts + 1] = escaped end
      j = k + 2
    end
  end
end

local walk

-- An object at s[i] == '{': each member's value is walked with what `member(key)` returns
-- (nil: an unknown field). Returns the index after '}'.
local function walk_object(s, i, path, member, unknown, depth)
  i = skip_ws(s, i + 1)
  if byte(s, i) == 125 then return i + 1 end
  while true do
    if byte(s, i) ~= 34 then error("expected a key") end
    local key
    key, i = read_string(s, i, true)
    i = skip_ws(s, i)
    if byte(s, i) ~= 58 then error("expected ':'") end
    i = skip_ws(s, i + 1)
    local child = path == "" and key or (path .. "." .. key)
    local schema = member(key)
    if schema == nil then
      unknown[#unknown + 1] = child
      schema = 0
    end
    i = skip_ws(s, walk(s, i, schema, child, unknown, depth + 1))
    local c = byte(s, i)
    if c == 125 then return i + 1 end
    if c ~= 44 then error("expected ',' or '}'") end
    i = skip_ws(s, i + 1)
  end
end

-- Walks the value at s[i] (no leading space) as `schema` says; returns the index after it.
walk = function(s, i, schema, path, unknown, depth)
  if depth > MAX_DEPTH then error("too deep") end
  local c = byte(s, i)
  if c == 123 then -- '{'
    if type(schema) == "string" then
      local fields = TYPES[schema]
      return walk_object(s, i, path, function(key) return fields[key] end, unknown, depth)
    elseif type(schema) == "table" then
      local value = schema.map
      return walk_object(s, i, path, function() return value end, unknown, depth)
    end
    return walk_object(s, i, path, function() return 0 end, unknown, depth)
  elseif c == 91 then -- '[': each element is what the field holds
    local index = 0
    i = skip_ws(s, i + 1)
    if byte(s, i) == 93 then return i + 1 end
    while true do
      i = skip_ws(s, walk(s, i, schema, path .. "[" .. index .. "]", unknown, depth + 1))
      local d = byte(s, i)
      if d == 93 then return i + 1 end
      if d ~= 44 then error("expected ',' or ']'") end
      i = skip_ws(s, i + 1)
      index = index + 1
    end
  elseif c == 34 then
    local _, after = read_string(s, i, false)
    return after
  end
  local _, last = find(s, "^[%w%.%+%-]+", i)
  if not last then error("unexpected character") end
  return last + 1
end

local function split_path(path)
  local query = find(path, "?", 1, true)
  if query then path = sub(path, 1, query - 1) end
  local segments = {}
  for segment in string.gmatch(path, "[^/]+") do segments[#segments + 1] = segment end
  local verb = nil
  local last = segments[#segments]
  if last then
    local colon = find(last, ":[^:]*$")
    if colon then
      verb = sub(last, colon + 1)
      segments[#segments] = sub(last, 1, colon - 1)
    end
  end
  return segments, verb
end

local function matches(route, segments, verb)
  if route.verb ~= verb then return false end
  local pattern = route.segments
  for index, expected in ipairs(pattern) do
    if expected == "**" then return #segments >= index end
    local got = segments[index]
    if got == nil or (expected ~= "*" and expected ~= got) then return false end
  end
  return #segments == #pattern
end

local function binding_for(method, path)
  local segments, verb = split_path(path)
  for _, route in ipairs(ROUTES) do
    if route.method == method and matches(route, segments, verb) then return route end
  end
  return nil
end

local JSON_ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t" }

local function json_string(text)
  local escaped = text:gsub('[%c"\\]', function(c) return JSON_ESCAPES[c] or string.format("\\u%04x", byte(c)) end)
  return '"' .. escaped .. '"'
end

local function refusal(unknown, type_name, request_id)
  local names, violations = {}, {}
  for index, name in ipairs(unknown) do
    if index > MAX_REPORTED then break end
    if #name > MAX_NAME then name = sub(name, 1, MAX_NAME) .. "..." end
    names[#names + 1] = name
    violations[#violations + 1] = '{"field":' .. json_string(name) ..
      ',"description":' .. json_string("no such field in " .. type_name) .. '}'
  end
  local listed = concat(names, ", ")
  if #unknown > MAX_REPORTED then listed = listed .. " and " .. (#unknown - MAX_REPORTED) .. " more" end
  local message = "unknown field" .. (#unknown > 1 and "s" or "") .. " in the request body: " .. listed
  return '{"code":3,"message":' .. json_string(message) .. ',"details":[' ..
    '{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"UNKNOWN_FIELD","domain":"edge.devmesh",' ..
    '"metadata":{"fields":' .. json_string(concat(names, ",")) .. '}},' ..
    '{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[' .. concat(violations, ",") .. ']},' ..
    '{"@type":"type.googleapis.com/google.rpc.RequestInfo","requestId":' .. json_string(request_id or "") .. '}]}'
end

local function is_grpc(headers)
  local content_type = headers:get("content-type")
  return content_type ~= nil and find(content_type, "application/grpc", 1, true) == 1
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if is_grpc(headers) then return end
  local path = headers:get(":path") or ""
  if #path > LIMITS.path then
    handle:respond({ [":status"] = "414" }, "path too long")
    return
  end
  local size = 0
  for name, value in pairs(headers) do size = size + #name + #value end
  if size > LIMITS.headers then
    handle:respond({ [":status"] = "431" }, "headers too large")
    return
  end
  local length = tonumber(headers:get("content-length") or "")
  if length ~= nil and length > LIMITS.body then
    handle:respond({ [":status"] = "413" }, "body too large")
    return
  end
  local route = binding_for(headers:get(":method"), path)
  if route == nil then return end
  local request_id = headers:get("x-request-id") -- `headers` is not valid after body()
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  local text = body:getBytes(0, body:length())
  local unknown = {}
  local ok = pcall(function()
    local i = skip_ws(text, 1)
    local after = skip_ws(text, walk(text, i, route.type, route.prefix, unknown, 0))
    if after <= #text then error("trailing characters") end
  end)
  if not ok or #unknown == 0 then return end
  handle:streamInfo():dynamicMetadata():set("devmesh.edge", "verbatim", true)
  handle:respond({ [":status"] = "400", ["content-type"] = "application/json" },
    refusal(unknown, route.type, request_id))
end

function envoy_on_response(handle)
  local headers = handle:headers()
  if is_grpc(headers) then return end
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
end
