--[[
require "vkclient.prometheus": the client's metrics in Prometheus text
format, for OpenResty. Every worker records into one lua_shared_dict; a
/metrics location shows what all the workers recorded.

    lua_shared_dict vk_metrics 1m;
    init_worker_by_lua_block {
        prom = require("vkclient.prometheus").new(ngx.shared.vk_metrics)
        client = require("vkclient.ngx").new{ standalone = "...", metrics = prom.metrics }
    }
    location = /metrics {
        content_by_lua_block {
            ngx.header.content_type = "text/plain; version=0.0.4"
            ngx.print(prom:collect())
        }
    }

The metrics are those of the Python adapter (vkclient/prometheus.py): the
same names (after namespace .. "_" when a namespace is given), types, label
names, help texts and histogram buckets; a label the core leaves out (node
outside Cluster mode) is exported as the empty string and a label the
table does not name is dropped. A metric the table does not know (from a
newer core) is exported by its kind (counter, gauge, histogram with the
command buckets) with the labels it came with, sorted by name.

The metrics function works for require "vkclient.ngx" and for the
blocking require "vkclient" in nginx alike, in any phase, and costs one
shared dict operation per counter or gauge and two per histogram
observation (its bucket and its sum; counts are added up when scraped).
Counters and histograms add up over the workers. Gauges are kept per
worker (by ngx.worker.id(), so a worker that replaces a dead one takes over
its slot) and combined when scraped: the pool gauges are summed,
redis_iam_token_expiry_seconds is the soonest expiry.

Nothing is evicted: when the dict is full, an update that needs a new
entry is dropped, counted in vkclient_metrics_dropped_total and logged once
per worker. Size the dict for the series you expect: a series takes about
200 bytes, a histogram series one entry per bucket it has seen plus one
(1m holds a few thousand).
]]

local ngx = ngx

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local concat = table.concat
local sort = table.sort
local format = string.format
local find = string.find
local sub = string.sub
local gsub = string.gsub
local huge = math.huge
local floor = math.floor

local M = { version = "1.0" }

-- Commands: from a loopback round trip (~50 µs) up to the 10 s of a slow
-- server or a blocking command.
M.COMMAND_DURATION_BUCKETS = { 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                               0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0 }
-- Lock holds: from an acquire+release pair (~1 ms) up to long-held,
-- auto-renewed locks (minutes).
M.LOCK_HOLD_BUCKETS = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0 }

-- The metrics the core reports, in the order they are exported:
-- { name, kind, label names, help }.
M.METRICS = {
  { "redis_command_duration_seconds", "histogram", { "command" },
    "Duration of a client command (retries and redirects included), by command name." },
  { "redis_connection_failures_total", "counter", { "operation" },
    "Failed attempts to connect (operation=connect) or reconnect (operation=reconnect)." },
  { "redis_reconnections_total", "counter", { "result" },
    "Reconnections, by result (success, failure)." },
  { "redis_pool_connections", "gauge", { "state", "node" },
    "Pooled connections by state (in_use, idle); node is set in Cluster mode." },
  { "redis_pool_waiters", "gauge", { "node" },
    "Callers waiting for a pooled connection; node is set in Cluster mode." },
  { "redis_cluster_redirects_total", "counter", { "type" },
    "Cluster redirects followed, by type (moved, ask)." },
  { "redis_cluster_refusals_total", "counter", { "type" },
    "Cluster refusals retried, by type (tryagain, clusterdown, loading, ...)." },
  { "redis_cluster_slot_refreshes_total", "counter", {},
    "Cluster slot map reloads." },
  { "redis_sentinel_failovers_total", "counter", { "master" },
    "Master switches seen through Sentinel, by master name." },
  { "redis_iam_token_refresh_total", "counter", { "result" },
    "GCP IAM token refreshes, by result (success, failure)." },
  { "redis_iam_token_expiry_seconds", "gauge", {},
    "Seconds until the GCP IAM token in service expires (the soonest of the "
    .. "clients sharing the registry)." },
  { "redis_lock_acquisitions_total", "counter", { "result" },
    "Lock acquisitions, by result (acquired, contended, error)." },
  { "redis_lock_release_total", "counter", { "result" },
    "Lock releases, by result (released, not_held, error)." },
  { "redis_lock_hold_seconds", "histogram", {},
    "Time a lock was held, from acquisition to release." },
}

local DEFAULT_BUCKETS = {
  redis_command_duration_seconds = M.COMMAND_DURATION_BUCKETS,
  redis_lock_hold_seconds = M.LOCK_HOLD_BUCKETS,
}
-- Gauges combined by their minimum over the workers (the others: sum).
local MIN_GAUGES = { redis_iam_token_expiry_seconds = true }

local DROPPED = "vkclient_metrics_dropped_total"
local DROPPED_HELP = "Metric updates lost because the shared dict was full."
local DROPPED_KEY = "d"

local KNOWN = {}
for i, m in ipairs(M.METRICS) do
  KNOWN[m[1]] = { order = i, kind = m[2], labels = m[3], help = m[4] }
end

-- Dict keys. A series is its metric's name and its label text (the
-- escaped a="x",b="y" inside the braces), tab-separated:
--   "c" .. name \t labels              a counter
--   "g" .. slot \t name \t labels      a gauge, one per worker slot
--   "b" .. le \t name \t labels        a histogram bucket (not cumulative)
--   "s" .. name \t labels              a histogram's sum
--   "u" .. slot \t name \t labels      a metric of another kind (untyped)
-- Names never hold a tab (see clean_name); label text may (after the
-- name, nothing more is split).

-- ---- formatting ---------------------------------------------------------------------------

-- The text of a number as Python's prometheus_client writes it (Go's
-- style): +Inf, -Inf, NaN, integers with ".0", others as the shortest
-- text that reads back the same.
local function number(v)
  if v ~= v then
    return "NaN"
  elseif v == huge then
    return "+Inf"
  elseif v == -huge then
    return "-Inf"
  elseif v == floor(v) and v > -1e15 and v < 1e15 then
    return format("%d.0", v)
  end
  for digits = 15, 17 do
    local s = format("%." .. digits .. "g", v)
    if tonumber(s) == v then
      return s
    end
  end
  return format("%.17g", v)
end
M._number = number

local function escape_value(s)
  s = gsub(s, "\\", "\\\\")
  s = gsub(s, "\n", "\\n")
  return (gsub(s, '"', '\\"'))
end

local function escape_help(s)
  s = gsub(s, "\\", "\\\\")
  return (gsub(s, "\n", "\\n"))
end

-- Metric and label names: anything outside [a-zA-Z0-9_:] becomes "_"
-- (labels: also ":"), and a leading digit gets a "_" before it.
local function clean_name(s, label)
  s = gsub(tostring(s), label and "[^%w_]" or "[^%w_:]", "_")
  if s == "" or find(s, "^%d") then
    s = "_" .. s
  end
  return s
end

-- The label text of a report: the given names (a known metric's), or the
-- report's own sorted by name; a value that is not a string is shown by
-- tostring, a missing one is "".
local function label_text(names, labels)
  local parts = {}
  if names ~= nil then
    for i = 1, #names do
      local v = labels[names[i]]
      if v == nil then
        v = ""
      elseif type(v) ~= "string" then
        v = tostring(v)
      end
      parts[i] = names[i] .. '="' .. escape_value(v) .. '"'
    end
  else
    local keys = {}
    for k in pairs(labels) do
      keys[#keys + 1] = tostring(k)
    end
    sort(keys)
    for i = 1, #keys do
      local v = labels[keys[i]]
      if type(v) ~= "string" then
        v = tostring(v)
      end
      parts[i] = clean_name(keys[i], true) .. '="' .. escape_value(v) .. '"'
    end
  end
  return concat(parts, ",")
end

-- ---- recording ---------------------------------------------------------------------------

local P = {}
P.__index = P

-- The worker slot gauges are kept under.
local function worker_slot()
  local id = ngx.worker and ngx.worker.id and ngx.worker.id()
  if id ~= nil then
    return "w" .. id
  end
  return "p" .. ngx.worker.pid()
end

local function dropped(self, err)
  self.dropped = self.dropped + 1
  self.dict:incr(DROPPED_KEY, 1)
  if not self._warned then
    self._warned = true
    ngx.log(ngx.WARN, "vkclient.prometheus: metric updates are being lost (",
            tostring(err), "): make the lua_shared_dict larger")
  end
end

-- Adds v to the number at key: one incr when the key exists; otherwise an
-- add that never evicts other entries (safe_add).
local function add(self, key, v)
  local dict = self.dict
  local _, err = dict:incr(key, v)
  if err == nil then
    return
  end
  if err == "not found" then
    local ok
    ok, err = dict:safe_add(key, v)
    if ok then
      return
    end
    if err == "exists" then          -- another worker added it meanwhile
      _, err = dict:incr(key, v)
      if err == nil then
        return
      end
    end
  end
  dropped(self, err)
end

local function set(self, key, v)
  local ok, err = self.dict:safe_set(key, v)
  if not ok then
    dropped(self, err)
  end
end

-- A gauge's slot is taken over by this process: the entries a previous
-- process of the same slot left are removed (once per process, when it
-- first reports a gauge).
local function claim_slot(self)
  local pid = ngx.worker.pid()
  if self._slot_pid == pid then
    return self._slot
  end
  local slot = worker_slot()
  local dict = self.dict
  local claim = "W" .. slot
  if dict:get(claim) ~= pid then
    for _, key in ipairs(dict:get_keys(0)) do
      local kind = sub(key, 1, 1)
      if (kind == "g" or kind == "u") and sub(key, 2, #slot + 2) == slot .. "\t" then
        dict:delete(key)
      end
    end
    local ok, err = dict:safe_set(claim, pid)
    if not ok then
      dropped(self, err)
    end
  end
  self._slot, self._slot_pid = slot, pid
  self._cache = {}   -- gauge keys hold the slot
  return slot
end

-- The most series a worker remembers the keys of; beyond, it starts over.
local CACHE_MAX = 4096

-- The keys of one series, made on its first report.
local function series(self, name, kind, labels)
  local known = KNOWN[name]
  local text
  if known ~= nil then
    kind = known.kind
    text = label_text(known.labels, labels)
  else
    text = label_text(nil, labels)
    if kind ~= "counter" and kind ~= "gauge" and kind ~= "histogram" then
      kind = "untyped"
    end
  end
  local clean = clean_name(name)
  local tail = clean .. "\t" .. text
  local s = { kind = kind }
  if kind == "counter" then
    s.key = "c" .. tail
  elseif kind == "gauge" then
    s.key = "g" .. claim_slot(self) .. "\t" .. tail
  elseif kind == "untyped" then
    s.key = "u" .. claim_slot(self) .. "\t" .. tail
  else
    local bounds = self.buckets[name] or M.COMMAND_DURATION_BUCKETS
    local keys = {}
    for i = 1, #bounds do
      keys[i] = "b" .. number(bounds[i]) .. "\t" .. tail
    end
    keys[#bounds + 1] = "b+Inf\t" .. tail
    s.bounds, s.keys, s.sum = bounds, keys, "s" .. tail
  end
  return s
end

-- The cache key of a report: its name and the values of the labels that
-- make the series (a known metric's) or all of them.
local function cache_key(name, labels)
  local known = KNOWN[name]
  local key = name
  if known ~= nil then
    local names = known.labels
    for i = 1, #names do
      local v = labels[names[i]]
      key = key .. "\0" .. (v == nil and "" or tostring(v))
    end
  else
    local keys = {}
    for k in pairs(labels) do
      keys[#keys + 1] = tostring(k)
    end
    sort(keys)
    for i = 1, #keys do
      key = key .. "\0" .. keys[i] .. "\0" .. tostring(labels[keys[i]])
    end
  end
  return key
end

-- Records one report: fn(name, kind, value, labels), the signature of the
-- config's metrics function.
function P:record(name, kind, value, labels)
  if type(value) ~= "number" or type(name) ~= "string" then
    return
  end
  if type(labels) ~= "table" then
    labels = {}
  end
  local ck = cache_key(name, labels)
  local s = self._cache[ck]
  if s == nil then
    if self._cached >= CACHE_MAX then
      self._cache, self._cached = {}, 0
    end
    s = series(self, name, kind, labels)
    self._cache[ck] = s
    self._cached = self._cached + 1
  end
  local k = s.kind
  if k == "counter" then
    add(self, s.key, value)
  elseif k == "histogram" then
    local bounds = s.bounds
    local i = 1
    while i <= #bounds and value > bounds[i] do
      i = i + 1
    end
    add(self, s.keys[i], 1)
    add(self, s.sum, value)
  else
    if self._slot_pid ~= ngx.worker.pid() then
      -- a process forked from the one that cached the key
      self._cache, self._cached = {}, 0
      return self:record(name, kind, value, labels)
    end
    set(self, s.key, value)
  end
end

-- ---- collecting --------------------------------------------------------------------------

local function family(fams, name, kind)
  local f = fams[name]
  if f == nil then
    f = { kind = kind, series = {} }
    fams[name] = f
  end
  return f
end

-- The Prometheus text (format 0.0.4) of everything the workers recorded.
function P:collect()
  local dict = self.dict
  local fams = {}
  for _, key in ipairs(dict:get_keys(0)) do
    local tag = sub(key, 1, 1)
    local value = dict:get(key)
    if type(value) == "number" then
      if tag == "c" or tag == "s" then
        local tab = find(key, "\t", 2, true)
        if tab then
          local name, text = sub(key, 2, tab - 1), sub(key, tab + 1)
          local f = family(fams, name, tag == "c" and "counter" or "histogram")
          if tag == "c" then
            f.series[text] = (f.series[text] or 0) + value
          else
            local h = f.series[text] or { buckets = {} }
            h.sum = (h.sum or 0) + value
            f.series[text] = h
          end
        end
      elseif tag == "b" or tag == "g" or tag == "u" then
        local t1 = find(key, "\t", 2, true)
        local t2 = t1 and find(key, "\t", t1 + 1, true)
        if t2 then
          local first, name, text = sub(key, 2, t1 - 1), sub(key, t1 + 1, t2 - 1), sub(key, t2 + 1)
          if tag == "b" then
            local f = family(fams, name, "histogram")
            local h = f.series[text] or { buckets = {} }
            h.buckets[first] = (h.buckets[first] or 0) + value
            f.series[text] = h
          else
            local f = family(fams, name, tag == "g" and "gauge" or "untyped")
            local old = f.series[text]
            if old == nil then
              f.series[text] = value
            elseif MIN_GAUGES[name] then
              f.series[text] = value < old and value or old
            else
              f.series[text] = old + value
            end
          end
        end
      end
    end
  end

  local prefix = self.namespace ~= "" and self.namespace .. "_" or ""
  local out = {}
  local n = 0
  local function put(s)
    n = n + 1
    out[n] = s
  end

  local function emit(name, kind, help, f)
    local full = prefix .. name
    put("# HELP " .. full .. " " .. escape_help(help) .. "\n")
    put("# TYPE " .. full .. " " .. kind .. "\n")
    if f == nil then
      return
    end
    local texts = {}
    for text in pairs(f.series) do
      texts[#texts + 1] = text
    end
    sort(texts)
    for _, text in ipairs(texts) do
      local v = f.series[text]
      if kind == "histogram" then
        -- The configured bounds and any other the dict holds (from an
        -- earlier configuration), in order; cumulative.
        local les, seen = {}, {}
        for _, b in ipairs(self.buckets[name] or M.COMMAND_DURATION_BUCKETS) do
          local le = number(b)
          les[#les + 1], seen[le] = le, true
        end
        for le in pairs(v.buckets) do
          if not seen[le] and le ~= "+Inf" and tonumber(le) then
            les[#les + 1], seen[le] = le, true
          end
        end
        sort(les, function(a, b) return tonumber(a) < tonumber(b) end)
        les[#les + 1] = "+Inf"
        local sep = text ~= "" and "," or ""
        local total = 0
        for _, le in ipairs(les) do
          total = total + (v.buckets[le] or 0)
          put(full .. "_bucket{" .. text .. sep .. 'le="' .. le .. '"} ' .. number(total) .. "\n")
        end
        local braces = text ~= "" and "{" .. text .. "}" or ""
        put(full .. "_count" .. braces .. " " .. number(total) .. "\n")
        put(full .. "_sum" .. braces .. " " .. number(v.sum or 0) .. "\n")
      else
        put(full .. (text ~= "" and "{" .. text .. "}" or "") .. " " .. number(v) .. "\n")
      end
    end
  end

  for _, m in ipairs(M.METRICS) do
    local name, kind = m[1], m[2]
    local f = fams[name]
    if f == nil and #m[3] == 0 and kind ~= "gauge" then
      -- Like prometheus_client: a metric without labels reads 0 at first.
      f = { series = { [""] = kind == "histogram" and { buckets = {}, sum = 0 } or 0 } }
    end
    emit(name, kind, m[4], f)
    fams[name] = nil
  end
  local others = {}
  for name in pairs(fams) do
    others[#others + 1] = name
  end
  sort(others)
  for _, name in ipairs(others) do
    local f = fams[name]
    emit(name, f.kind, "vkclient metric " .. name .. " (reported by the core).", f)
  end
  emit(DROPPED, "counter", DROPPED_HELP, { series = { [""] = dict:get(DROPPED_KEY) or 0 } })
  return concat(out)
end

-- Forgets every recorded value (all workers').
function P:reset()
  local dict = self.dict
  for _, key in ipairs(dict:get_keys(0)) do
    if key ~= DROPPED_KEY then
      dict:delete(key)
    end
  end
  dict:set(DROPPED_KEY, 0)
  self._cache, self._cached, self._slot_pid = {}, 0, nil
end

-- The metrics function to give a client config (metrics = prom:sink()).
function P:sink()
  return self.metrics
end

-- new(dict, opts): dict is a lua_shared_dict (ngx.shared.NAME); opts:
--   namespace  a prefix, namespace .. "_" before every name ("" for none)
--   buckets    histogram upper bounds by core metric name, e.g.
--              { redis_command_duration_seconds = { 0.001, 0.01, 0.1 } }
--              (defaults: COMMAND_DURATION_BUCKETS, LOCK_HOLD_BUCKETS)
-- Misuse (a wrong type, a bad namespace, bounds that do not increase)
-- raises.
function M.new(dict, opts)
  if type(dict) ~= "table" or dict.incr == nil or dict.get_keys == nil then
    error("vkclient.prometheus: new() needs a lua_shared_dict (ngx.shared.NAME), got "
          .. type(dict), 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    error("vkclient.prometheus: options must be a table, got " .. type(opts), 2)
  end
  for k in pairs(opts) do
    if k ~= "namespace" and k ~= "buckets" then
      error("vkclient.prometheus: unknown option " .. tostring(k), 2)
    end
  end
  local namespace = opts.namespace or ""
  if type(namespace) ~= "string" then
    error("vkclient.prometheus: namespace must be a string, got " .. type(namespace), 2)
  end
  if namespace ~= "" and not find(namespace, "^[%a_:][%w_:]*$") then
    error("vkclient.prometheus: namespace must match [a-zA-Z_:][a-zA-Z0-9_:]*, got "
          .. format("%q", namespace), 2)
  end
  local buckets = {}
  for name, b in pairs(DEFAULT_BUCKETS) do
    buckets[name] = b
  end
  if opts.buckets ~= nil then
    if type(opts.buckets) ~= "table" then
      error("vkclient.prometheus: buckets must be a table of metric name to bounds, got "
            .. type(opts.buckets), 2)
    end
    for name, bounds in pairs(opts.buckets) do
      local known = KNOWN[name]
      if type(name) ~= "string" then
        error("vkclient.prometheus: buckets keys must be metric names", 2)
      end
      if known ~= nil and known.kind ~= "histogram" then
        error("vkclient.prometheus: buckets: " .. name .. " is a " .. known.kind
              .. ", not a histogram", 2)
      end
      local ok = type(bounds) == "table" and #bounds > 0
      local copy = {}
      for i = 1, ok and #bounds or 0 do
        local v = bounds[i]
        if type(v) ~= "number" or v ~= v or v == huge or (i > 1 and v <= copy[i - 1]) then
          ok = false
          break
        end
        copy[i] = v
      end
      if not ok then
        error("vkclient.prometheus: buckets for " .. name
              .. " must be increasing finite upper bounds", 2)
      end
      buckets[name] = copy
    end
  end
  local self = setmetatable({
    dict = dict,
    namespace = namespace,
    buckets = buckets,
    dropped = 0,         -- updates this process lost (the dict was full)
    _cache = {},
    _cached = 0,
  }, P)
  -- Made now, while there is room: an incr of it never needs memory.
  dict:safe_add(DROPPED_KEY, 0)
  self.metrics = function(name, kind, value, labels)
    return self:record(name, kind, value, labels)
  end
  return self
end

return M
