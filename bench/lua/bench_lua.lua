-- bench_lua: the Lua binding against redis-lua (Debian's lua-redis) and
-- raw hiredis in C, on one server and one connection each (DESIGN §7).
--
--   VK_LUA_CPATH=<build>/bindings/lua/luajit/?.so BENCH_CORE=<build>/bench/c/bench_core \
--     luajit bench/lua/bench_lua.lua HOST PORT [ops per case] [runs]
--
-- Cases, each measured for every client back to back within a run:
--   SET, GET                 request/response
--   pipeline x100            100 SETs per round trip (commands/s)
--   lock pair                acquire+release: vkclient try_lock+unlock,
--                            redis-lua SET NX PX + EVALSHA compare-and-delete
-- Raw hiredis numbers come from the C benchmark bench_core (one run of it per
-- run here). The report gives medians and the median of the per-run ratios:
--   GET/SET vs raw hiredis, pipelines and lock pairs vs redis-lua.
-- bench/lua/run.sh builds in Release mode and pins server and clients to
-- one core, without which loopback latency hides every client's own cost.
local host = arg[1] or "127.0.0.1"
local port = tonumber(arg[2] or "6379")
local ops = tonumber(arg[3] or "20000")
local runs = tonumber(arg[4] or "5")
local bench_core = os.getenv("BENCH_CORE")

if os.getenv("VK_LUA_CPATH") then
    package.cpath = os.getenv("VK_LUA_CPATH") .. ";" .. package.cpath
end

local vk = require "vkclient"
local system = require "system"
local clock = system.monotime or system.gettime
-- Debian ships redis-lua for Lua 5.1 (and LuaJIT) to 5.3: on 5.4 the
-- report has no peer column.
local has_redis_lua, redis = pcall(require, "redis")

local DEPTH = 100
local RELEASE_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"

local function interpreter()
    if type(jit) == "table" then
        return jit.version
    end
    return _VERSION
end

-- Runs fn(n) for n operations; returns operations per second.
local function measure(fn, n)
    local started = clock()
    fn(n)
    return n / (clock() - started)
end

-- ---- vkclient ---------------------------------------------------------------

local client = assert(vk.new{ standalone = host .. ":" .. port, options = { pool_size = 1 } })
local locks = assert(vk.lock_manager(client))

local vk_cases = {}

function vk_cases.set(n)
    local call = client.call
    for i = 1, n do
        call(client, "SET", "bench:lua:vk", "value")
    end
end

function vk_cases.get(n)
    local call = client.call
    for _ = 1, n do
        call(client, "GET", "bench:lua:vk")
    end
end

function vk_cases.pipeline(n)
    local pl = client:pipeline()
    for _ = 1, n / DEPTH do
        for _ = 1, DEPTH do
            pl:call("SET", "bench:lua:vk:pl", "value")
        end
        assert(pl:run())
    end
end

function vk_cases.lock(n)
    for _ = 1, n do
        local h = assert(locks:try_lock("bench:lua:vk:lock"))
        assert(h:unlock())
        h:close()
    end
end

-- ---- redis-lua ----------------------------------------------------------------

local peer_cases
if has_redis_lua then
    local peer = redis.connect(host, port)
    local sha = peer:script("load", RELEASE_SCRIPT)
    local random = math.random
    peer_cases = {}

    function peer_cases.set(n)
        for _ = 1, n do
            peer:set("bench:lua:peer", "value")
        end
    end

    function peer_cases.get(n)
        for _ = 1, n do
            peer:get("bench:lua:peer")
        end
    end

    function peer_cases.pipeline(n)
        for _ = 1, n / DEPTH do
            peer:pipeline(function(p)
                for _ = 1, DEPTH do
                    p:set("bench:lua:peer:pl", "value")
                end
            end)
        end
    end

    -- The pair every hand-rolled Redis lock makes: SET NX PX with a random
    -- value, then a compare-and-delete script by its SHA.
    function peer_cases.lock(n)
        for i = 1, n do
            local value = string.format("%08x%08x%08x", random(0, 0x7fffffff), random(0, 0x7fffffff), i)
            assert(peer:set("bench:lua:peer:lock", value, "NX", "PX", 10000))
            assert(peer:evalsha(sha, 1, "bench:lua:peer:lock", value) == 1)
        end
    end
end

-- ---- raw hiredis (bench_core) ----------------------------------------------------

-- One run of bench_core; returns the hiredis column by case name.
local function hiredis_rates()
    if not bench_core then
        return nil
    end
    local pipe = assert(io.popen(string.format("%q %s %d %d 1", bench_core, host, port, ops)))
    local rates = {}
    for line in pipe:lines() do
        local name, _, raw = line:match("^(.-)%s+(%d+)%s+(%d+)%s+[%d%.]+$")
        if name then
            rates[name] = tonumber(raw)
        end
    end
    pipe:close()
    return { set = rates["SET"], get = rates["GET"], pipeline = rates["SET pipeline x100"],
             lock = rates["lock pair"] }
end

-- ---- report ---------------------------------------------------------------------------

local function median(values)
    local sorted = {}
    for i, v in ipairs(values) do
        sorted[i] = v
    end
    table.sort(sorted)
    return sorted[math.floor((#sorted + 1) / 2)]
end

local case_names = { "set", "get", "pipeline", "lock" }
local labels = { set = "SET", get = "GET", pipeline = "pipeline x100 (cmd/s)", lock = "lock pair" }
local results = {}
for _, name in ipairs(case_names) do
    results[name] = { vk = {}, peer = {}, raw = {}, vs_raw = {}, vs_peer = {} }
end

-- Warm up every client (connections, JIT traces, script caches).
for _, name in ipairs(case_names) do
    measure(vk_cases[name], math.max(DEPTH, math.floor(ops / 10)))
    if peer_cases then
        measure(peer_cases[name], math.max(DEPTH, math.floor(ops / 10)))
    end
end

for run = 1, runs do
    local raw = hiredis_rates()
    for _, name in ipairs(case_names) do
        local r = results[name]
        -- Alternate the order so that neither client always goes first.
        local vk_rate, peer_rate
        if run % 2 == 1 or not peer_cases then
            vk_rate = measure(vk_cases[name], ops)
            peer_rate = peer_cases and measure(peer_cases[name], ops)
        else
            peer_rate = measure(peer_cases[name], ops)
            vk_rate = measure(vk_cases[name], ops)
        end
        r.vk[run] = vk_rate
        if peer_rate then
            r.peer[run] = peer_rate
            r.vs_peer[run] = vk_rate / peer_rate
        end
        if raw and raw[name] then
            r.raw[run] = raw[name]
            r.vs_raw[run] = vk_rate / raw[name]
        end
    end
end

print(string.format("vkclient %s (Lua binding, %s) vs redis-lua and raw hiredis %s", vk.version, interpreter(),
    vk.hiredis_version))
print(string.format("%d ops per case, median of %d runs, one connection per client", ops, runs))
print(string.format("%-22s %12s %12s %12s %9s %9s", "case", "vkclient/s", "redis-lua/s", "hiredis/s",
    "vs lua", "vs C"))
local function fmt(values, pattern)
    local m = median(values)
    return m and string.format(pattern, m) or "-"
end
for _, name in ipairs(case_names) do
    local r = results[name]
    print(string.format("%-22s %12s %12s %12s %9s %9s", labels[name], fmt(r.vk, "%.0f"), fmt(r.peer, "%.0f"),
        fmt(r.raw, "%.0f"), fmt(r.vs_peer, "%.2f"), fmt(r.vs_raw, "%.2f")))
end
print("(lock pair: vkclient try_lock+unlock; redis-lua and hiredis SET NX PX + EVALSHA)")

-- The targets of the Lua binding (issue: GET/SET >= 0.9x raw hiredis,
-- pipelines >= 1.5x redis-lua, lock pairs >= 1.3x redis-lua).
local function verdict(label, values, target)
    local m = median(values)
    if not m then
        print(string.format("target %-32s n/a (peer not available)", label))
        return
    end
    print(string.format("target %-32s %.2f (>= %.2f) %s", label, m, target, m >= target and "met" or "NOT met"))
end
verdict("SET vs raw hiredis", results.set.vs_raw, 0.9)
verdict("GET vs raw hiredis", results.get.vs_raw, 0.9)
verdict("pipeline x100 vs redis-lua", results.pipeline.vs_peer, 1.5)
verdict("lock pair vs redis-lua", results.lock.vs_peer, 1.3)

locks:close()
client:close()
