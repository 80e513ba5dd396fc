-- The OpenResty handlers of the nginx benchmark (bench/nginx/run_nginx.sh,
-- nginx.conf.in): require "vkclient.ngx" against lua-resty-redis, the same
-- work per request for both.
--
--   /vk/get, /resty/get            GET of one key
--   /vk/pipeline, /resty/pipeline  100 GETs of it in one pipeline
--   /vk/lock, /resty/lock          a lock pair: vkclient.ngx try_lock +
--                                  unlock; lua-resty-redis SET key token NX
--                                  PX 10000 + EVAL compare-and-delete
--   /vk/blpop                      BLPOP on an empty list, 0.2 s (the slow
--                                  requests next to /vk/get)
--
-- Each answers 200 "ok", or 500 and the error (logged once per kind), so
-- that wrk counts every failure. One vkclient.ngx client per worker, made
-- in init_worker (no I/O there); lua-resty-redis connects per request and
-- gives its connection back to the worker's keepalive pool, its usual use.
local vkn = require "vkclient.ngx"
local redis = require "resty.redis"

local ngx = ngx
local say = ngx.say
local exit = ngx.exit
local log = ngx.log
local WARN = ngx.WARN
local random = math.random
local format = string.format

local M = {}

local KEY = "bench:ngx:key"
local LOCK_PREFIX = "bench:ngx:lock:"
local BLPOP_KEY = "bench:ngx:empty"
local DEPTH = 100
local RELEASE_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then "
  .. "return redis.call('del', KEYS[1]) else return 0 end"

local host, port
-- lua-resty-redis: the keepalive pool's size (the script gives wrk's
-- connection count: one Redis connection per request in flight, each back
-- in the pool after its request) and how long an idle one is kept.
local pool_size
local IDLE_MS = 60000
local TIMEOUT_MS = 5000

local client, locks
-- Lock keys: one per request (a worker-local counter), so that no request
-- finds the lock of another taken.
local lock_seq = 0

local logged = {}
local function fail(what, err)
  local text = what .. ": " .. tostring(err)
  if not logged[what] then
    logged[what] = true
    log(WARN, "bench failure (logged once): ", text)
  end
  ngx.status = 500
  say(text)
  return exit(500)
end

function M.init_worker()
  local addr = assert(os.getenv("VK_BENCH_ADDR"), "VK_BENCH_ADDR")
  host, port = addr:match("^(.+):(%d+)$")
  port = tonumber(port)
  pool_size = tonumber(os.getenv("VK_BENCH_POOL") or "64")
  math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
  client = assert(vkn.new{ standalone = addr })
  locks = assert(vkn.lock_manager(client))
end

-- ---- vkclient.ngx -------------------------------------------------------------------

function M.vk_get()
  local v, err = client:call("GET", KEY)
  if not v then
    return fail("vk GET", err)
  end
  say("ok")
end

function M.vk_pipeline()
  local pl, err = client:pipeline()
  if not pl then
    return fail("vk pipeline", err)
  end
  for _ = 1, DEPTH do
    pl:call("GET", KEY)
  end
  local replies
  replies, err = pl:run()
  pl:close()
  if not replies or #replies ~= DEPTH then
    return fail("vk pipeline run", err or ("replies: " .. tostring(replies and #replies)))
  end
  say("ok")
end

function M.vk_lock()
  lock_seq = lock_seq + 1
  local h, err = locks:try_lock(LOCK_PREFIX .. "vk:" .. lock_seq)
  if not h then
    return fail("vk try_lock", err or "taken")
  end
  local ok
  ok, err = h:unlock()
  h:close()
  if not ok then
    return fail("vk unlock", err)
  end
  say("ok")
end

function M.vk_blpop()
  local v, err = client:call("BLPOP", BLPOP_KEY, "0.2")
  if v ~= vkn.null then
    return fail("vk BLPOP", err or ("got " .. tostring(v)))
  end
  say("ok")
end

-- ---- lua-resty-redis -------------------------------------------------------------------

local function resty_connect()
  local red = redis:new()
  red:set_timeouts(TIMEOUT_MS, TIMEOUT_MS, TIMEOUT_MS)
  local ok, err = red:connect(host, port)
  if not ok then
    return nil, err
  end
  return red
end

local function resty_release(red)
  local ok, err = red:set_keepalive(IDLE_MS, pool_size)
  if not ok then
    return fail("resty set_keepalive", err)
  end
  say("ok")
end

function M.resty_get()
  local red, err = resty_connect()
  if not red then
    return fail("resty connect", err)
  end
  local v
  v, err = red:get(KEY)
  if not v then
    return fail("resty GET", err)
  end
  return resty_release(red)
end

function M.resty_pipeline()
  local red, err = resty_connect()
  if not red then
    return fail("resty connect", err)
  end
  red:init_pipeline(DEPTH)
  for _ = 1, DEPTH do
    red:get(KEY)
  end
  local replies
  replies, err = red:commit_pipeline()
  if not replies or #replies ~= DEPTH then
    return fail("resty pipeline", err or ("replies: " .. tostring(replies and #replies)))
  end
  return resty_release(red)
end

function M.resty_lock()
  local red, err = resty_connect()
  if not red then
    return fail("resty connect", err)
  end
  lock_seq = lock_seq + 1
  local key = LOCK_PREFIX .. "resty:" .. lock_seq
  local token = format("%08x%08x%08x", random(0, 0x7fffffff), random(0, 0x7fffffff), lock_seq)
  local ok
  ok, err = red:set(key, token, "NX", "PX", 10000)
  if ok ~= "OK" then
    return fail("resty SET NX PX", err or ("got " .. tostring(ok)))
  end
  local n
  n, err = red:eval(RELEASE_SCRIPT, 1, key, token)
  if n ~= 1 then
    return fail("resty EVAL release", err or ("got " .. tostring(n)))
  end
  return resty_release(red)
end

return M
