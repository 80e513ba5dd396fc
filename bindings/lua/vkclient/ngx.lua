--[[
require "vkclient.ngx": the vkclient client and lock for OpenResty, on
cosockets. It never blocks a worker: every wait yields to nginx.

The same surface as require "vkclient" (new, from_url, null, lock_manager,
default_lock_options, rate_limiter_lock_options, set_package_logger;
client:call, :pipeline, :status, :is_connected, :close; lock handles
:unlock, :extend, :validity, :fencing_token, :key), the same nil, err
results, error objects and texts. The C core (its bytes mode) makes every
decision: handshake, routing (standalone, Sentinel, Cluster), retries,
timeouts, the lock's rules. This file only moves bytes.

How it works. A client is made once per worker (init_worker_by_lua* is
fine: new() validates at once and does no I/O) and used from any phase
that can wait: rewrite, access, content, ngx.timer. Its sockets belong to
a driver, an ngx.timer that starts with the first call: cosockets are bound
to the context that made them, so no request owns one. A request queues its
operation in the core and waits on a semaphore; the driver writes what the
core wants written, reads what arrives (one light thread per connection),
and posts each waiting request its result. Many requests share the
connection (commands are multiplexed); no request waits on another's I/O,
and a blocking command (BLPOP k 0.2) runs on a connection of its own.

TLS: the server name is verified against the CAs of nginx's
lua_ssl_trusted_certificate directive (with lua_ssl_verify_depth), which
the config names with tls = { use_system_ca = true }. A CA given in the
config (ca_cert_base64, ca_file) cannot be handed to a cosocket: it is
refused with INVALID_CONFIG rather than ignored.

Connection reuse: the driver ends once the client has had nothing to do
for a second, and puts its connections in nginx's keepalive pool
(setkeepalive); the next call starts a driver that takes them back
(connect with the pool's name, getreusedtimes() > 0) without the
handshake (HELLO/AUTH, SELECT) or TLS again. The core decides which
connection may go to the pool (a clean one: nothing in flight, not
subscribed, not failed, current credentials) and names the pool (node,
TLS server name, db, protocol, user, and the client's credentials
generation, never a secret), so a connection logged in with a token or
password since replaced is never taken again; any other connection is
closed. Options in the config table: keepalive (default true),
keepalive_timeout (seconds a connection may wait in the pool, default 60,
0: no limit) and keepalive_pool_size (connections kept per pool, default
30), as lua-resty-redis's set_keepalive(timeout, size) takes them. A
client whose driver keeps a connection that may not be pooled (the
Sentinel subscription) keeps its driver.

GCP IAM tokens are refreshed by the core's background thread, which never
blocks a worker. The config's logger and metrics functions, and its tracer,
are called in the worker: during the calls that raise their events, and
for the refresh thread's events by the driver, within a second while it
runs (a driver that ended for lack of work delivers them when the next one
starts). with_lock, written here, opens its redis.lock.with_lock span
itself.
]]

local vk = require "vkclient"
local semaphore = require "ngx.semaphore"

local ngx = ngx
local tcp = ngx.socket.tcp
local spawn = ngx.thread.spawn
local kill = ngx.thread.kill
local get_phase = ngx.get_phase
local timer_at = ngx.timer.at
local now = ngx.now
local exiting = ngx.worker.exiting
local log = ngx.log
local ERR = ngx.ERR
local error_mt = vk.error_mt
local codes = vk.codes
local make_error = vk._error
local take_done = vk._take_done

local setmetatable = setmetatable
local getmetatable = getmetatable
local pcall = pcall
local pairs = pairs
local next = next
local error = error
local floor = math.floor
local type = type
local tostring = tostring
local tonumber = tonumber
local select = select

local M = {
  null = vk.null,
  version = vk.version,
  codes = codes,
  error_mt = error_mt,
  default_lock_options = vk.default_lock_options,
  rate_limiter_lock_options = vk.rate_limiter_lock_options,
  set_package_logger = vk.set_package_logger,
  static_password = vk.static_password,
  gcp_iam = vk.gcp_iam,
  config = vk.config,
  describe = vk.describe,
  script = vk.script,
}

-- The most bytes one read hands to the core.
local READ_CHUNK = 65536
-- A request re-checks its wait this often (its operation ends by the
-- core's own timeouts; a BLPOP k 0 may wait as long as the server does).
local WAIT_SLICE = 60
-- The driver looks at the core (and whether the worker is exiting) at
-- least this often (seconds).
local IDLE_SLICE = 1
-- Socket timeouts: the core keeps its own (dial, read, write) and drops the
-- connection when one runs out, and the driver then stops the connection's
-- thread; these only bound a cosocket call (ms). A read waits as long as
-- the connection is idle (a timed-out read would be logged as an error).
local CONNECT_TIMEOUT_MS = 60000
local SEND_TIMEOUT_MS = 60000
local READ_TIMEOUT_MS = 86400000
-- Connection reuse: how long a connection may wait in nginx's keepalive
-- pool (s) and how many each pool keeps, unless the config says.
local KEEPALIVE_TIMEOUT = 60
local KEEPALIVE_POOL_SIZE = 30

-- The phases whose handlers may wait (a semaphore, a socket).
local WAITING_PHASES = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

local function phase_error()
  local phase = get_phase()
  return make_error(codes.INVALID_ARGUMENT, "invalid argument: vkclient.ngx cannot wait in the "
    .. phase .. " phase: call it from rewrite, access, content or ngx.timer handlers")
end

local function closed_error()
  return make_error(codes.NIL_CLIENT, "redis client is nil")
end

local function is_error(v)
  return type(v) == "table" and getmetatable(v) == error_mt
end

-- ---- the driver: sockets, writes, reads, wake-ups ---------------------------------

local Client = {}
Client.__index = Client

-- The requests waiting, by ticket. Every client of the worker completes
-- into one table (a lock operation may complete inside any of its
-- clients' calls), so any driver that collects it serves them all.
local WAITING = {}

-- Hands the core's completions to the requests waiting for them.
local function deliver()
  local done = take_done()
  for i = 1, #done, 3 do
    local ticket = done[i]
    local w = WAITING[ticket]
    if w ~= nil then
      WAITING[ticket] = nil
      w.value, w.err, w.done = done[i + 1], done[i + 2], true
      w.sema:post(1)
    end
  end
end

local function kick(self)
  if self._kick:count() < 1 then
    self._kick:post(1)
  end
end

-- Ends a connection the core no longer wants (or all of them, when the
-- driver stops): its light thread, which may be inside a read, is killed
-- first (a cosocket cannot be closed while another thread reads it). Only
-- the driver, which spawned the thread, may do this.
local function drop(s)
  s.closed = true
  if s.thread ~= nil then
    kill(s.thread)
    s.thread = nil
  end
  if s.sock ~= nil then
    s.sock:close()
  end
end

-- An IP address, which nginx cannot verify a certificate against (it
-- checks DNS names only).
local function is_ip_literal(host)
  return host:find("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

-- One connection's life: connect (and TLS), then read until it fails or is
-- no longer wanted. Runs in a light thread of the driver.
local function connection(self, s, host, port, path, tls, server_name, pool)
  local h = self._h
  if tls and (server_name == nil or is_ip_literal(server_name)) then
    h:connect_failed(s.conn, "nginx verifies a certificate by DNS name only, and "
      .. tostring(server_name) .. " is an IP address: set tls.server_name to a name the "
      .. "server's certificate carries", true)
    deliver()
    kick(self)
    return
  end
  local sock = tcp()
  s.sock = sock
  sock:settimeouts(CONNECT_TIMEOUT_MS, SEND_TIMEOUT_MS, READ_TIMEOUT_MS)
  local ok, err
  -- The core names the pool a fit connection may be taken from.
  local options = nil
  if pool ~= nil and self._keepalive then
    options = { pool = pool, pool_size = self._pool_size }
  end
  if path ~= nil and options ~= nil then
    ok, err = sock:connect("unix:" .. path, options)
  elseif path ~= nil then
    ok, err = sock:connect("unix:" .. path)
  elseif options ~= nil then
    ok, err = sock:connect(host, port, options)
  else
    ok, err = sock:connect(host, port)
  end
  -- Taken from the pool: logged in and through TLS already.
  local reused = ok and options ~= nil and (sock:getreusedtimes() or 0) > 0
  if ok and tls and not reused and not s.closed then
    -- lua-resty-core may raise from a failed handshake instead of
    -- returning nil, err.
    local called, session, herr = pcall(sock.sslhandshake, sock, nil, server_name, true)
    if not called or not session then
      if not s.closed and not self._closed then
        h:connect_failed(s.conn, called and herr or ("the handshake raised: " .. tostring(session)), true)
        deliver()
        kick(self)
      end
      sock:close()
      return
    end
  end
  if s.closed or self._closed then
    sock:close()
    return
  end
  if not ok then
    h:connect_failed(s.conn, err)
    deliver()
    kick(self)
    sock:close()
    return
  end
  s.open = true
  h:connected(s.conn, reused)
  deliver()
  kick(self)
  while true do
    local data, rerr = sock:receiveany(READ_CHUNK)
    if s.closed or self._closed then
      break
    end
    if data then
      h:received(s.conn, data)
      -- Given up clean with this reply (a release's PING): to the pool,
      -- and this thread stops reading (a read cannot be interrupted).
      local name = self._keepalive and h:pool_name(s.conn)
      if name then
        s.open = false
        s.thread = nil
        s.sock = nil
        local kept = sock:setkeepalive(self._keepalive_ms, self._pool_size)
        if not kept then
          sock:close()
        end
        deliver()
        kick(self)
        return
      end
      deliver()
      kick(self)
    elseif rerr ~= "timeout" then
      h:lost(s.conn, rerr)
      deliver()
      kick(self)
      break
    end
  end
  s.open = false
  s.thread = nil
  sock:close()
end

-- Does what the core wants of each connection: open new ones, write what
-- is due, close those it no longer wants. True when it did something
-- (which may have changed the wants).
local function serve_once(self)
  local h = self._h
  local socks = self._socks
  local wanted = {}
  local progress = false
  for i = 1, h:connection_count() do
    local conn, connect, _, output, host, port, path, tls, server_name = h:wants(i)
    if conn == nil then
      break
    end
    wanted[conn] = true
    local s = socks[conn]
    if connect and s == nil then
      s = { conn = conn }
      socks[conn] = s
      local thread, err = spawn(connection, self, s, host, port, path, tls, server_name,
        h:pool_name(conn))
      if not thread then
        socks[conn] = nil
        h:connect_failed(conn, "cannot start a light thread: " .. tostring(err))
      else
        s.thread = thread   -- killed by drop(); a finished one is harmless there
      end
      progress = true
    elseif s ~= nil and s.open and output ~= nil then
      -- The whole output goes; send yields while the socket is full.
      local sent, err = s.sock:send(output)
      if socks[conn] == s then
        if sent then
          h:wrote(conn, #output)
        else
          h:lost(conn, err)
        end
      end
      progress = true
    end
    if progress then
      deliver()
      return true
    end
  end
  for conn, s in pairs(socks) do
    if not wanted[conn] then
      socks[conn] = nil
      drop(s)
      progress = true
    end
  end
  return progress
end

-- Nothing to do for IDLE_SLICE: each open connection is offered back to
-- the core (its reader puts it in the keepalive pool once the core gave it
-- up); true once none is left, and the driver may end.
local function put_away(self, idle_since)
  local h = self._h
  if not self._keepalive or h:pending() > 0 then
    return false, nil
  end
  idle_since = idle_since or now()
  if now() - idle_since < IDLE_SLICE then
    return false, idle_since
  end
  if next(self._socks) == nil then
    return true, idle_since
  end
  for conn, s in pairs(self._socks) do
    if s.open then
      h:release(conn)   -- refused for a connection that is not clean: it stays
    end
  end
  return false, idle_since
end

local function drive(self)
  local h = self._h
  local idle_since = nil
  while not self._closed and not exiting() do
    while serve_once(self) do
      if self._closed then
        return
      end
    end
    local done
    done, idle_since = put_away(self, idle_since)
    if done then
      return "idle"
    end
    while serve_once(self) do
      if self._closed then
        return
      end
    end
    -- At most IDLE_SLICE: the idle check and the refresh thread's events
    -- come at least that often.
    local ms = h:tick_in_ms()
    if ms ~= 0 then
      self._kick:wait((ms < 0 or ms > IDLE_SLICE * 1000) and IDLE_SLICE or ms / 1000)
    end
    if self._closed then
      return
    end
    if h:tick_in_ms() == 0 then
      h:tick()
      deliver()
    end
    -- Events of the core's background threads (the IAM refresh) for the
    -- config's logger and metrics functions.
    h:poll_events()
  end
end

local function run_driver(premature, self)
  local idle = false
  if not premature then
    local ok, err = pcall(drive, self)
    if not ok then
      log(ERR, "vkclient.ngx: the driver stopped: ", tostring(err))
    end
    idle = ok and err == "idle"
  end
  self._driver = false
  for _, s in pairs(self._socks) do
    drop(s)
  end
  self._socks = {}
  if not self._closed and not premature and not exiting() and
      (not idle or self._h:pending() > 0) then
    -- Whatever is still pending gets a driver again.
    self:_start()
  end
end

function Client:_start()
  if self._driver then
    return true
  end
  self._driver = true
  local ok, err = timer_at(0, run_driver, self)
  if not ok then
    self._driver = false
    return nil, make_error(codes.IO, "vkclient.ngx: cannot start the driver: " .. tostring(err))
  end
  return true
end

-- ---- requests: queue, then wait ------------------------------------------------------

-- Checks that the caller may wait and starts the driver.
local function usable(self)
  if self._closed then
    return nil, closed_error()
  end
  if not WAITING_PHASES[get_phase()] then
    return nil, phase_error()
  end
  return self:_start()
end

-- Waits for the operation's completion: value, err (err false: none).
-- clients: those whose drivers move its bytes; target: the core's object
-- that can cancel it.
local function await(clients, target, ticket)
  local w = { sema = semaphore.new(), done = false }
  WAITING[ticket] = w
  for i = 1, #clients do
    kick(clients[i])
  end
  while not w.done do
    local ok, err = w.sema:wait(WAIT_SLICE)
    if not ok and err ~= "timeout" then
      WAITING[ticket] = nil
      pcall(target.cancel, target, ticket)
      return false, make_error(codes.CANCELLED, "operation cancelled: " .. tostring(err))
    end
  end
  return w.value, w.err
end

-- Queues an operation (the method `start` of target, the core's client or
-- lock manager, with its arguments) and waits for it: value | nil, err.
local function run(clients, target, start, ...)
  for i = 1, #clients do
    local ok, err = usable(clients[i])
    if not ok then
      return nil, err
    end
  end
  local ticket, err = target[start](target, ...)
  if not ticket then
    return nil, err
  end
  local value
  value, err = await(clients, target, ticket)
  if err then
    return nil, err
  end
  return value
end

-- ---- clients ----------------------------------------------------------------------------

local function wrap(h, err, keepalive, tracer)
  if not h then
    return nil, err
  end
  local client = setmetatable({
    _h = h,
    _tracer = tracer,   -- the config's (checked by the core's config), or nil
    _socks = {},
    _kick = semaphore.new(),
    _driver = false,
    _closed = false,
    _keepalive = keepalive.keepalive ~= false,
    _keepalive_ms = floor((keepalive.keepalive_timeout or KEEPALIVE_TIMEOUT) * 1000),
    _pool_size = keepalive.keepalive_pool_size or KEEPALIVE_POOL_SIZE,
  }, Client)
  client._alone = { client }   -- the clients of its own operations
  return client
end

-- A CA given in the config cannot be handed to a cosocket: only nginx's
-- (lua_ssl_trusted_certificate) is used, which use_system_ca = true names.
local function check_trust(config)
  local tls = type(config) == "table" and config.tls or nil
  if type(tls) == "table" and (tls.ca_cert_base64 ~= nil or tls.ca_file ~= nil) then
    return nil, make_error(codes.INVALID_CONFIG, "invalid redis config: vkclient.ngx verifies "
      .. "TLS with the CAs of nginx's lua_ssl_trusted_certificate: give tls = { "
      .. "use_system_ca = true } instead of ca_cert_base64 or ca_file")
  end
  return true
end

-- The connection reuse options (this module's, not the core's): the
-- config without them, and them (checked as the core checks its fields).
local KEEPALIVE_OPTIONS = {
  keepalive = "boolean", keepalive_timeout = "number", keepalive_pool_size = "number",
}

local function split_keepalive(config)
  if type(config) ~= "table" or getmetatable(config) ~= nil then
    return config, {}
  end
  local core, keepalive = {}, {}
  for k, v in pairs(config) do
    local want = KEEPALIVE_OPTIONS[k]
    if want == nil then
      core[k] = v
    elseif type(v) ~= want then
      error("vkclient: config." .. k .. " must be a " .. want .. ", got " .. type(v), 3)
    elseif want == "number" and (v < 0 or v ~= v or v == math.huge or
        (k == "keepalive_pool_size" and (v < 1 or v ~= floor(v)))) then
      error("vkclient: config." .. k .. " must be " .. (k == "keepalive_pool_size"
        and "a whole number >= 1" or "a number of seconds >= 0"), 3)
    else
      keepalive[k] = v
    end
  end
  return core, keepalive
end

--- vk.new(config) -> client | nil, err: validated now; connects on first use.
function M.new(config)
  local ok, err = check_trust(config)
  if not ok then
    return nil, err
  end
  local core, keepalive = split_keepalive(config)
  local h
  h, err = vk._hosted_new(core)
  return wrap(h, err, keepalive, type(config) == "table" and config.tracer or nil)
end

--- vk.from_url(url [, extra]) -> client | nil, err
function M.from_url(url, extra)
  local ok, err = check_trust(extra)
  if not ok then
    return nil, err
  end
  local core, keepalive = split_keepalive(extra)
  local h
  h, err = vk._hosted_from_url(url, core)
  return wrap(h, err, keepalive, type(extra) == "table" and extra.tracer or nil)
end

--- client:call(name, ...) -> reply | nil, err
function Client:call(...)
  local value, err = run(self._alone, self._h, "command", ...)
  if err ~= nil then
    return nil, err
  end
  if is_error(value) then
    return nil, value
  end
  return value
end

--- client:run_script(script, keys, args) -> reply | nil, err: EVALSHA, and
--- EVAL when the server lacks it, as require "vkclient"'s (vk.script).
function Client:run_script(script, keys, args)
  local value, err = run(self._alone, self._h, "run_script", script, keys, args)
  if err ~= nil then
    return nil, err
  end
  if is_error(value) then
    return nil, value   -- the script's error reply, as from client:call
  end
  return value
end

-- A scan as a generic-for iterator, as require "vkclient"'s: making it
-- returns nil, err when the core refuses an option (and raises for
-- misuse); a page that fails while the loop runs raises the error object.
local function scan_iterator(self, command, key, opts)
  local ok, err = usable(self)
  if not ok then
    return nil, err
  end
  local scan
  scan, err = self._h:scan_new(command, key, opts)
  if not scan then
    return nil, err
  end
  local stride = (command == "HSCAN" or command == "ZSCAN") and 2 or 1
  local scores = command == "ZSCAN"
  local page, pos = nil, 1
  return function()
    while true do
      if page ~= nil and pos + stride - 1 <= #page then
        local item, value = page[pos], page[pos + 1]
        pos = pos + stride
        if stride == 1 then
          return item
        end
        return item, scores and tonumber(value) or value
      end
      if scan:done() then
        return nil
      end
      local next_page, perr = run(self._alone, self._h, "scan_next", scan)
      if perr ~= nil then
        error(perr)
      end
      page, pos = next_page, 1
    end
  end
end

--- for key in client:scan_iter{ match =, count =, type = } do ... end
function Client:scan_iter(opts)
  return scan_iterator(self, "SCAN", nil, opts)
end

--- for field, value in client:hscan_iter(key [, { match =, count = }]) do ... end
function Client:hscan_iter(key, opts)
  return scan_iterator(self, "HSCAN", key, opts)
end

--- for member in client:sscan_iter(key [, opts]) do ... end
function Client:sscan_iter(key, opts)
  return scan_iterator(self, "SSCAN", key, opts)
end

--- for member, score in client:zscan_iter(key [, opts]) do ... end (score: a number)
function Client:zscan_iter(key, opts)
  return scan_iterator(self, "ZSCAN", key, opts)
end

function Client:status()
  if self._closed then
    return nil, closed_error()
  end
  return self._h:status()
end

function Client:is_connected()
  return not self._closed and self._h:is_connected()
end

--- client:close(): what is in flight ends with "operation cancelled: client closed".
function Client:close()
  if self._closed then
    return
  end
  self._closed = true
  self._h:close()
  deliver()
  kick(self)
end

-- ---- pipelines ---------------------------------------------------------------------------

local Pipeline = {}
Pipeline.__index = Pipeline

--- client:pipeline() -> pipeline | nil, err
function Client:pipeline()
  if self._closed then
    return nil, closed_error()
  end
  local p, err = self._h:pipeline_new()
  if not p then
    return nil, err
  end
  return setmetatable({ _client = self, _p = p }, Pipeline)
end

--- pipeline:call(name, ...) -> pipeline | nil, err (the blocking pipeline's
--- refusals, at once)
function Pipeline:call(...)
  local ok, err = self._p:append(...)
  if not ok then
    return nil, err
  end
  return self
end

function Pipeline:length()
  return self._p:length()
end

--- pipeline:run() -> { reply, ... } | nil, err (error replies in place); empties it.
function Pipeline:run()
  if self._p:length() == 0 then
    local ok, err = usable(self._client)
    if not ok then
      return nil, err
    end
    return {}
  end
  local client = self._client
  return run(client._alone, client._h, "pipeline_exec", self._p)
end

function Pipeline:close()
  self._p:close()
end

-- ---- locks -------------------------------------------------------------------------------

local Handle = {}
Handle.__index = Handle

local function new_handle(manager, lock)
  return setmetatable({ _manager = manager, _lock = lock }, Handle)
end

--- handle:unlock() -> true | nil, err
function Handle:unlock()
  local m = self._manager
  return run(m._clients, m._m, "unlock", self._lock)
end

--- handle:extend(seconds) -> true | nil, err
function Handle:extend(seconds)
  local m = self._manager
  return run(m._clients, m._m, "extend", self._lock, seconds)
end

function Handle:validity() return self._lock:validity() end
function Handle:fencing_token() return self._lock:fencing_token() end
function Handle:key() return self._lock:key() end
function Handle:is_lost() return self._lock:is_lost() end
function Handle:close() return self._lock:close() end

local Manager = {}
Manager.__index = Manager

--- vk.lock_manager(client) or vk.lock_manager({ c1, c2, c3 }) (a Redlock
--- quorum over independent servers) -> manager | nil, err
function M.lock_manager(clients)
  if getmetatable(clients) == Client then
    clients = { clients }
  elseif type(clients) ~= "table" or getmetatable(clients) ~= nil or #clients == 0 then
    error("vkclient.ngx: lock_manager expects a client of vkclient.ngx or a list of them", 2)
  end
  local list, cores = {}, {}
  for i = 1, #clients do
    local client = clients[i]
    if getmetatable(client) ~= Client then
      error("vkclient.ngx: lock_manager expects clients of vkclient.ngx", 2)
    end
    if client._closed then
      return nil, closed_error()
    end
    list[i], cores[i] = client, client._h
  end
  local m, err = vk._hosted_lock_manager(cores)
  if not m then
    return nil, err
  end
  return setmetatable({ _clients = list, _m = m }, Manager)
end

--- manager:try_lock(key) -> handle | nil (taken) | nil, err
function Manager:try_lock(key)
  local lock, err = run(self._clients, self._m, "try", key)
  if err ~= nil then
    return nil, err
  end
  if not lock then
    return nil   -- taken
  end
  return new_handle(self, lock)
end

--- manager:acquire(key [, options]) -> handle | nil, err (LOCK_ACQUIRE when busy)
function Manager:acquire(key, options)
  local lock, err = run(self._clients, self._m, "acquire", key, options)
  if not lock then
    return nil, err
  end
  return new_handle(self, lock)
end

-- The function's results, or its error as LOCK_FN with err.cause.
local function after_function(handle, ok, ...)
  handle:unlock()
  if not ok then
    local cause = ...
    local err = make_error(codes.LOCK_FN, vk._strerror(codes.LOCK_FN) .. ": " .. tostring(cause))
    err.cause = cause
    return nil, err
  end
  if handle:is_lost() then
    return nil, make_error(codes.LOCK_LOST, "lock was lost while held")
  end
  return ...
end

-- The "redis.lock.with_lock" span of a with_lock, which runs here rather
-- than in the core: the name and attributes of the blocking client's, less
-- redis.lock.attempts, which the core does not report for an acquisition
-- on the loop. The tracer of the manager's first client; a tracer that
-- raises is ignored, as the core's trampolines ignore it.
local function wall_time()
  ngx.update_time()
  return ngx.now()
end

local function start_lock_span(manager, key)
  local tracer = manager._clients[1]._tracer
  if tracer == nil then
    return nil
  end
  local ok, span = pcall(tracer.start, "redis.lock.with_lock", nil,
    { ["db.system"] = "redis", ["redis.lock.key"] = tostring(key) }, wall_time())
  return { tracer = tracer, span = ok and span or nil }
end

local function finish_lock_span(s, err, outcome)
  pcall(s.tracer.finish, s.span, err ~= nil and tostring(err) or nil,
    { ["redis.lock.outcome"] = outcome }, wall_time())
end

-- "lock already taken" through every try (LOCK_ACQUIRE's own cause).
local function contended(err)
  return is_error(err) and err.status == codes.LOCK_ACQUIRE and
    tostring(err):sub(-#": lock already taken") == ": lock already taken"
end

-- after_function's results, once the span has ended with what they say.
local function traced_after(s, handle, ok, ...)
  local function finish(...)
    local lost = handle:is_lost()
    finish_lock_span(s, (not ok or lost) and select(2, ...) or nil,
      lost and "lost" or "released")
    return ...
  end
  return finish(after_function(handle, ok, ...))
end

--- manager:with_lock_options(key, options, fn) -> fn's results | nil, err.
--- fn(handle) may yield (call Redis, ngx.sleep); the lock is released after it.
function Manager:with_lock_options(key, options, fn)
  if type(fn) ~= "function" then
    if fn == nil then
      return nil, make_error(codes.NIL_LOCK_FN, "lock function is nil")
    end
    error("vkclient: with_lock expects a function", 2)
  end
  local span = start_lock_span(self, key)
  local handle, err = self:acquire(key, options)
  if not handle then
    if span then
      finish_lock_span(span, err, contended(err) and "contended" or "error")
    end
    return nil, err
  end
  if span then
    return traced_after(span, handle, pcall(fn, handle))
  end
  return after_function(handle, pcall(fn, handle))
end

function Manager:with_lock(key, fn)
  return self:with_lock_options(key, nil, fn)
end

--- Deprecated, as in require "vkclient": handle:unlock().
function Manager:unlock(handle)
  if handle == nil then
    return nil, make_error(codes.NIL_LOCK_HANDLE_ON_UNLOCK, "lock handle is nil")
  end
  return handle:unlock()
end

function Manager:close()
  self._m:close()
end

return M
