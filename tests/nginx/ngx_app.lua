-- The OpenResty handlers of the vkclient.ngx test (see ngx.conf.in,
-- run_ngx.sh and ngx_driver.py).
--
-- Every handler under /t/ checks what it can itself and answers
--   200 "ok" and key=value lines for the driver,
-- or
--   500 "FAIL" and one line per failed check (what, expected, got).
-- The driver adds what only it can see: concurrency across the two
-- workers, timings, a lock holder outside nginx, the servers' own view.
--
-- One client per worker, made in init_worker_by_lua (no I/O there), on the
-- plain server, and when the harness gives them: the TLS-only server,
-- the Sentinel group and the Cluster. Made on first use in a handler: the
-- client of the IAM server (its /iam/ location trusts that server's CA)
-- and those of the group and cluster the driver starts for the failover
-- and the slot migration. lua-resty-redis (the interop check) connects
-- per request.
local vkn = require "vkclient.ngx"
local vk = require "vkclient"   -- the blocking module, for the parity checks

local app = {}

local shared = ngx.shared.ngx_test

local client, locks
local tls_client, tls_named_client, sentinel_client, cluster_client
-- What the calls made from init_worker answered (check 4).
local init_results = {}

-- Contended locks: up to 150 holders in turn, each for a few ms.
-- (1000 tries is the most the core takes.)
local CONTENDED = { expiry = 10, tries = 1000, retry_delay = 0.02 }

-- ---- checks ------------------------------------------------------------------------------

local function show(v)
    if v == nil then
        return "nil"
    end
    if v == vkn.null then
        return "null"
    end
    if type(v) == "string" then
        if #v > 80 then
            return string.format("%q", v:sub(1, 80)) .. "...(" .. #v .. " bytes)"
        end
        return string.format("%q", v)
    end
    if type(v) == "table" and getmetatable(v) == vkn.error_mt then
        return "err{" .. tostring(v.code) .. ": " .. tostring(v) .. "}"
    end
    return tostring(v)
end

-- A list of checks; finish() answers for them.
local function checks()
    local c = { failures = {}, lines = {} }
    function c.eq(what, got, want)
        if got ~= want then
            c.failures[#c.failures + 1] = what .. ": expected " .. show(want) .. ", got " .. show(got)
            return false
        end
        return true
    end
    function c.ok(what, cond, detail)
        if not cond then
            c.failures[#c.failures + 1] = what .. (detail and (": " .. detail) or "")
            return false
        end
        return true
    end
    -- nil, err with err.code == code (and the text, when given: exact, or
    -- a Lua pattern when it starts with ^).
    function c.fails(what, code, text, value, err, ...)
        if select("#", ...) > 0 then
            c.failures[#c.failures + 1] = what .. ": more than nil, err"
        end
        if value ~= nil then
            c.failures[#c.failures + 1] = what .. ": expected nil, err; got " .. show(value)
            return false
        end
        if type(err) ~= "table" or getmetatable(err) ~= vkn.error_mt then
            c.failures[#c.failures + 1] = what .. ": expected an error object, got " .. show(err)
            return false
        end
        local ok = c.eq(what .. " code", err.code, code)
        if text ~= nil then
            local s = tostring(err)
            if text:sub(1, 1) == "^" then
                ok = c.ok(what .. " text", s:find(text) ~= nil, "got " .. show(s) .. ", want " .. text) and ok
            else
                ok = c.eq(what .. " text", s, text) and ok
            end
        end
        return ok
    end
    function c.put(key, value)
        c.lines[#c.lines + 1] = key .. "=" .. tostring(value)
    end
    function c.finish()
        if #c.failures > 0 then
            ngx.status = 500
            ngx.say("FAIL worker=", ngx.worker.pid())
            for _, f in ipairs(c.failures) do
                ngx.say(f)
            end
            for _, line in ipairs(c.lines) do
                ngx.say(line)
            end
            return
        end
        ngx.say("ok")
        ngx.say("worker=", ngx.worker.pid())
        for _, line in ipairs(c.lines) do
            ngx.say(line)
        end
    end
    return c
end

local function now()
    ngx.update_time()
    return ngx.now()
end

-- A query argument, unescaped (ngx.var.arg_* are not).
local function arg(name)
    local value = ngx.req.get_uri_args()[name]
    if type(value) == "table" then
        value = value[1]
    end
    return value
end

-- A query argument that must be given (one value, where assert(arg(...),
-- "x") would also pass its message on as an argument).
local function need(name)
    local value = arg(name)
    if value == nil then
        error("missing query argument " .. name, 2)
    end
    return value
end

local function prefix()
    return "ngxt:" .. (arg("run") or "0") .. ":"
end

-- ---- init_worker ------------------------------------------------------------------------

-- A call's outcome, kept as text: value, code, message.
local function outcome(value, err)
    return {
        value = value,
        code = type(err) == "table" and err.code or nil,
        text = err ~= nil and tostring(err) or nil,
    }
end

local poll_jobs

function app.init_worker()
    local err
    client, err = vkn.new{
        standalone = os.getenv("VK_TEST_ADDR"),
        options = { dial_timeout = 2, read_timeout = 3, write_timeout = 3 },
    }
    if not client then
        ngx.log(ngx.ERR, "vkclient.ngx: new: ", tostring(err))
        return
    end
    locks = assert(vkn.lock_manager(client))

    -- No waiting in init_worker: nil, err naming the phase.
    init_results.call = outcome(client:call("PING"))
    local pl = client:pipeline()
    pl:call("PING")
    init_results.pipeline = outcome(pl:run())
    init_results.try_lock = outcome(locks:try_lock("ngxt:init"))
    init_results.acquire = outcome(locks:acquire("ngxt:init"))
    init_results.status_connected = tostring((client:status() or {}).connected)

    local tls_addr = os.getenv("VK_TEST_TLS_ADDR")
    if tls_addr and tls_addr ~= "" then
        tls_client, err = vkn.new{
            standalone = tls_addr,
            tls = { use_system_ca = true },
            options = { dial_timeout = 2, read_timeout = 3 },
        }
        if not tls_client then
            ngx.log(ngx.ERR, "vkclient.ngx: new (TLS): ", tostring(err))
        end
        -- The same, verifying the name "localhost" (a DNS name of the
        -- server's certificate) instead of the address.
        tls_named_client, err = vkn.new{
            standalone = tls_addr,
            tls = { use_system_ca = true, server_name = "localhost" },
            options = { dial_timeout = 2, read_timeout = 3 },
        }
        if not tls_named_client then
            ngx.log(ngx.ERR, "vkclient.ngx: new (TLS, server_name): ", tostring(err))
        end
    end

    local sentinels = os.getenv("VK_TEST_SENTINEL_ADDRS")
    if sentinels and sentinels ~= "" then
        local addresses = {}
        for a in sentinels:gmatch("[^,]+") do
            addresses[#addresses + 1] = a
        end
        sentinel_client, err = vkn.new{
            sentinel = { addresses = addresses, master_name = os.getenv("VK_TEST_SENTINEL_MASTER") },
            options = { dial_timeout = 2, read_timeout = 3 },
        }
        if not sentinel_client then
            ngx.log(ngx.ERR, "vkclient.ngx: new (sentinel): ", tostring(err))
        end
    end
    local cluster = os.getenv("VK_TEST_CLUSTER_ADDRS")
    if cluster and cluster ~= "" then
        local addresses = {}
        for a in cluster:gmatch("[^,]+") do
            addresses[#addresses + 1] = a
        end
        cluster_client, err = vkn.new{
            cluster = { addresses = addresses },
            options = { dial_timeout = 2, read_timeout = 3 },
        }
        if not cluster_client then
            ngx.log(ngx.ERR, "vkclient.ngx: new (cluster): ", tostring(err))
        end
    end

    shared:set("worker:" .. ngx.worker.id(), ngx.worker.pid())
    assert(ngx.timer.every(0.02, poll_jobs))
end

-- /t/init_error: what init_worker's calls answered, and what a call from
-- the log phase answered (recorded by app.log_phase).
function app.init_error()
    local c = checks()
    for _, name in ipairs({ "call", "pipeline", "try_lock", "acquire" }) do
        local r = init_results[name]
        c.put(name .. "_value", show(r.value))
        c.put(name .. "_code", r.code)
        c.put(name .. "_text", r.text)
    end
    c.put("status_connected", init_results.status_connected)
    c.put("log_code", shared:get("log_phase_code"))
    c.put("log_text", shared:get("log_phase_text"))
    c.finish()
end

-- log_by_lua: a phase that cannot wait either.
function app.log_phase()
    local value, err = client:call("PING")
    shared:set("log_phase_code", value == nil and err and err.code or ("value " .. show(value)))
    shared:set("log_phase_text", err and tostring(err) or "")
end

-- ---- (1) commands from many concurrent requests ----------------------------------------

local ALL_BYTES
do
    local t = {}
    for i = 0, 255 do
        t[#t + 1] = string.char(i)
    end
    ALL_BYTES = table.concat(t)
end

-- /t/basic?run=R&id=N: this request's own keys and values.
function app.basic()
    local c = checks()
    local id = assert(arg("id"), "id")
    local p = prefix() .. "basic:" .. id .. ":"
    local mine = "value:" .. id .. ":" .. ngx.worker.pid() .. ":" .. math.random(1, 1e9)

    c.eq("SET", client:call("SET", p .. "k", mine), "OK")
    c.eq("GET own value", client:call("GET", p .. "k"), mine)

    -- Binary safe: every byte, and the id so that values differ.
    local binary = ALL_BYTES .. id .. "\0\r\n" .. ALL_BYTES
    c.eq("SET binary", client:call("SET", p .. "bin", binary), "OK")
    c.eq("GET binary (bytes 0..255)", client:call("GET", p .. "bin"), binary)
    c.eq("STRLEN binary", client:call("STRLEN", p .. "bin"), #binary)
    c.eq("binary key", client:call("SET", p .. ALL_BYTES, "k"), "OK")
    c.eq("GET binary key", client:call("GET", p .. ALL_BYTES), "k")

    -- A large value: many reads of READ_CHUNK bytes, one long write.
    if tonumber(id) % 25 == 0 then
        local big = string.rep(ALL_BYTES, 1200) .. id
        c.eq("SET 300 KB", client:call("SET", p .. "big", big), "OK")
        c.eq("GET 300 KB", client:call("GET", p .. "big"), big)
    end

    -- vk.null: a missing key, and nil inside an array.
    c.eq("vk.null is ngx.null", vkn.null, ngx.null)
    c.eq("vk.null is require('vkclient').null", vkn.null, vk.null)
    c.eq("GET missing", client:call("GET", p .. "missing"), vkn.null)
    local mget = client:call("MGET", p .. "k", p .. "missing")
    c.ok("MGET is an array", type(mget) == "table" and #mget == 2, show(mget))
    if type(mget) == "table" then
        c.eq("MGET [1]", mget[1], mine)
        c.eq("MGET [2]", mget[2], vkn.null)
    end
    c.eq("INCRBY number argument", client:call("INCRBY", p .. "n", 40), 40)
    c.eq("INCRBYFLOAT", client:call("INCRBYFLOAT", p .. "n", 2.5), "42.5")

    -- Error replies: nil, err with the server's text.
    local value, err = client:call("INCR", p .. "k")
    c.fails("INCR on a string", "SERVER", "ERR value is not an integer or out of range", value, err)
    c.eq("error object metatable", getmetatable(err), vkn.error_mt)
    c.eq("err.message", type(err) == "table" and err.message or nil, "ERR value is not an integer or out of range")
    c.fails("wrong arity", "SERVER", "^ERR wrong number of arguments for 'get' command", client:call("GET"))
    c.fails("unknown command", "SERVER", "^ERR unknown command 'NOSUCHCMD'", client:call("NOSUCHCMD", "x"))
    -- The connection is fine after error replies.
    c.eq("GET after errors", client:call("GET", p .. "k"), mine)

    -- A pipeline: results in order, the error reply in place.
    local pl = client:pipeline()
    c.eq("pipeline:call returns the pipeline", pl:call("SET", p .. "pl", "1"), pl)
    pl:call("INCR", p .. "pl"):call("LPUSH", p .. "pl", "x"):call("GET", p .. "pl"):call("GET", p .. "missing")
    c.eq("pipeline length", pl:length(), 5)
    local results, perr = pl:run()
    if c.ok("pipeline:run", type(results) == "table", show(perr)) then
        c.eq("pipeline #results", #results, 5)
        c.eq("pipeline [1] SET", results[1], "OK")
        c.eq("pipeline [2] INCR", results[2], 2)
        local e = results[3]
        c.eq("pipeline [3] is an error object", type(e) == "table" and getmetatable(e), vkn.error_mt)
        c.eq("pipeline [3] code", type(e) == "table" and e.code, "SERVER")
        c.ok("pipeline [3] text", tostring(e):find("^WRONGTYPE") ~= nil, show(e))
        c.eq("pipeline [4] GET", results[4], "2")
        c.eq("pipeline [5] GET missing", results[5], vkn.null)
    end
    c.eq("pipeline emptied by run", pl:length(), 0)
    c.eq("pipeline reused", (pl:call("GET", p .. "pl"):run() or {})[1], "2")
    local empty = pl:run()
    c.ok("empty pipeline runs to {}", type(empty) == "table" and #empty == 0, show(empty))

    -- Requests share the connection: five light threads of this request.
    local threads = {}
    for i = 1, 5 do
        threads[i] = ngx.thread.spawn(function()
            return client:call("INCR", p .. "threads")
        end)
    end
    local seen = {}
    for i = 1, 5 do
        local ok, v = ngx.thread.wait(threads[i])
        c.ok("light thread " .. i, ok and type(v) == "number", show(v))
        if type(v) == "number" then
            seen[v] = true
        end
    end
    c.eq("5 INCRs from light threads", client:call("GET", p .. "threads"), "5")
    for i = 1, 5 do
        c.ok("INCR from a light thread saw " .. i, seen[i])
    end

    local status, serr = client:status()
    if c.ok("status", type(status) == "table", show(serr)) then
        c.eq("status.mode", status.mode, "standalone")
        c.eq("status.connected", status.connected, true)
        c.put("status_keys", (function()
            local keys = {}
            for k in pairs(status) do
                keys[#keys + 1] = k
            end
            table.sort(keys)
            return table.concat(keys, ",")
        end)())
    end
    c.eq("is_connected", client:is_connected(), true)
    c.put("value", mine)
    c.finish()
end

-- /t/surface: the names of require "vkclient" are there.
function app.surface()
    local c = checks()
    for _, name in ipairs({ "new", "from_url", "lock_manager", "default_lock_options",
                            "rate_limiter_lock_options", "set_package_logger", "script" }) do
        c.eq("vk." .. name, type(vkn[name]), "function")
    end
    c.eq("vk.null", vkn.null, vk.null)
    c.eq("vk.version", vkn.version, vk.version)
    c.eq("vk.codes", vkn.codes, vk.codes)
    c.eq("vk.error_mt", vkn.error_mt, vk.error_mt)
    for _, name in ipairs({ "call", "pipeline", "status", "is_connected", "close", "run_script",
                            "scan_iter", "hscan_iter", "sscan_iter", "zscan_iter" }) do
        c.eq("client:" .. name, type(client[name]), "function")
    end
    local pl = client:pipeline()
    for _, name in ipairs({ "call", "run", "length", "close" }) do
        c.eq("pipeline:" .. name, type(pl[name]), "function")
    end
    for _, name in ipairs({ "try_lock", "acquire", "with_lock", "with_lock_options", "unlock" }) do
        c.eq("manager:" .. name, type(locks[name]), "function")
    end
    local h = locks:try_lock(prefix() .. "surface")
    if c.ok("try_lock", h ~= nil) then
        for _, name in ipairs({ "unlock", "extend", "validity", "fencing_token", "key" }) do
            c.eq("handle:" .. name, type(h[name]), "function")
        end
        h:unlock()
    end
    for _, name in ipairs({ "default_lock_options", "rate_limiter_lock_options" }) do
        local a, b = vkn[name](), vk[name]()
        for _, k in ipairs({ "expiry", "tries", "retry_delay", "drift_factor", "auto_renew" }) do
            c.eq(name .. "()." .. k, a[k], b[k])
        end
    end
    c.ok("set_package_logger(fn)", pcall(vkn.set_package_logger, function() end))
    c.ok("set_package_logger(nil)", pcall(vkn.set_package_logger, nil))
    c.finish()
end

-- /t/scans_scripts?run=R: scripts (EVALSHA, and EVAL the first time) and
-- scans (several pages; options; a failing page raises) from a request.
function app.scans_scripts()
    local c = checks()
    local p = prefix() .. "scan:"
    -- A source of this run's own: the server has never seen it.
    local script = vkn.script("-- " .. p .. "\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    c.eq("SCRIPT EXISTS before", client:call("SCRIPT", "EXISTS", script:sha())[1], 0)
    c.eq("first run (EVAL)", client:run_script(script, { p .. "n" }, { 5 }), 5)
    c.eq("SCRIPT EXISTS after", client:call("SCRIPT", "EXISTS", script:sha())[1], 1)
    c.eq("second run (EVALSHA)", client:run_script(script, { p .. "n" }, { "2" }), 7)
    local failing = vkn.script("return redis.error_reply('NOPE ' .. ARGV[1])")
    local none, serr = client:run_script(failing, nil, { "x" })
    c.ok("a script's error: nil, err", none == nil and type(serr) == "table" and
         tostring(serr):find("NOPE x", 1, true) ~= nil, show(serr))

    local pl = client:pipeline()
    for i = 1, 300 do
        pl:call("SET", p .. "k" .. i, i)
    end
    for i = 1, 200 do
        pl:call("HSET", p .. "h", "f" .. i, "v" .. i)
        pl:call("ZADD", p .. "z", i / 2, "m" .. i)
        pl:call("SADD", p .. "s", "m" .. i)
    end
    pl:run()
    local keys = 0
    for key in client:scan_iter{ match = p .. "k*", count = 50 } do
        keys = keys + 1
        c.ok("a matching key", key:sub(1, #p + 1) == p .. "k", key)
    end
    c.eq("every key", keys, 300)
    local strings = 0
    for _ in client:scan_iter{ match = p .. "*", type = "string", count = 100 } do
        strings = strings + 1
    end
    c.eq("TYPE string: the keys and the script's counter", strings, 301)
    local fields, right = 0, 0
    for field, value in client:hscan_iter(p .. "h", { count = 20 }) do
        fields = fields + 1
        right = right + ((("v" .. field:sub(2)) == value) and 1 or 0)
    end
    c.eq("HSCAN: every field", fields, 200)
    c.eq("HSCAN: each with its value", right, 200)
    local members, sum = 0, 0
    for member, score in client:zscan_iter(p .. "z") do
        members = members + 1
        sum = sum + score
        c.eq("a score is a number", type(score), "number")
    end
    c.eq("ZSCAN: every member", members, 200)
    c.eq("ZSCAN: the scores", sum, 200 * 201 / 4)
    local set = 0
    for _ in client:sscan_iter(p .. "s", { match = "m1*" }) do
        set = set + 1
    end
    c.eq("SSCAN with MATCH", set, 111)   -- m1, m10-m19, m100-m199
    local it, ierr = client:scan_iter{ count = -1 }
    c.ok("a refused option: nil, err", it == nil and type(ierr) == "table", show(ierr))
    c.ok("an unknown option raises", not pcall(client.scan_iter, client, { size = 1 }))
    local ok, perr = pcall(function()
        for _ in client:hscan_iter(p .. "k1") do end
    end)
    c.ok("a failing page raises the error object", not ok and type(perr) == "table" and
         tostring(perr):find("WRONGTYPE", 1, true) ~= nil, show(perr))
    c.finish()
end

-- ---- (2) BLPOP next to quick requests ----------------------------------------------------

-- /t/blpop?run=R&key=K: BLPOP K 0.2 on an empty list: a timeout (vk.null).
function app.blpop()
    local c = checks()
    local key = prefix() .. "blpop:" .. assert(arg("key"), "key")
    local t0 = now()
    local value, err = client:call("BLPOP", key, "0.2")
    local t1 = now()
    c.eq("BLPOP k 0.2 on an empty list", value, vkn.null)
    c.eq("BLPOP error", err, nil)
    c.put("start", string.format("%.3f", t0))
    c.put("end", string.format("%.3f", t1))
    c.put("elapsed", string.format("%.3f", t1 - t0))
    c.finish()
end

-- /t/get?run=R&key=K&want=V: one GET, timed inside the handler.
function app.get()
    local c = checks()
    local key = prefix() .. assert(arg("key"), "key")
    local t0 = now()
    local value, err = client:call("GET", key)
    local t1 = now()
    c.eq("GET", value, arg("want") or vkn.null)
    c.eq("GET error", err, nil)
    c.put("start", string.format("%.3f", t0))
    c.put("end", string.format("%.3f", t1))
    c.put("elapsed", string.format("%.3f", t1 - t0))
    c.finish()
end

-- /t/set?run=R&key=K&value=V
function app.set()
    local c = checks()
    c.eq("SET", client:call("SET", prefix() .. assert(arg("key")), assert(arg("value"))), "OK")
    c.finish()
end

-- ---- (3) locks ---------------------------------------------------------------------------

-- One increment of counter_key under lock_key, by a read-modify-write that
-- yields between its read and its write: token, seen | nil, err.
local function locked_increment(lock_key, counter_key)
    return locks:with_lock_options(lock_key, CONTENDED, function(handle)
        local current, err = client:call("GET", counter_key)
        if current == nil then
            error("GET: " .. tostring(err), 0)
        end
        local seen = current == vkn.null and 0 or tonumber(current)
        ngx.sleep(0.005)
        local ok, serr = client:call("SET", counter_key, tostring(seen + 1))
        if ok ~= "OK" then
            error("SET: " .. tostring(serr), 0)
        end
        if handle:key() ~= lock_key or not (handle:validity() > 0) then
            error("handle: key " .. tostring(handle:key()) .. " validity " .. tostring(handle:validity()), 0)
        end
        return handle:fencing_token(), seen
    end)
end

-- /t/locked_incr?run=R&lock=L&counter=C
function app.locked_incr()
    local c = checks()
    local p = prefix()
    local token, seen = locked_increment(p .. assert(arg("lock")), p .. assert(arg("counter")))
    if c.ok("with_lock", token ~= nil, show(seen)) then
        c.put("token", token)
        c.put("seen", seen)
    end
    c.finish()
end

-- Lock bursts from timers: /t/burst_arm puts a job in the shared dict;
-- every worker's poll timer runs it once with n light threads at a time
-- and leaves its results in the shared dict for /t/burst_result.
local jobs_done = {}
local burst_running = false

local function run_burst(job, n, lock_key, counter_key)
    local threads = {}
    for i = 1, n do
        threads[i] = ngx.thread.spawn(locked_increment, lock_key, counter_key)
    end
    local pairs_out, failures = {}, {}
    for i = 1, n do
        local ok, token, seen = ngx.thread.wait(threads[i])
        if ok and token ~= nil then
            pairs_out[#pairs_out + 1] = token .. ":" .. seen
        else
            failures[#failures + 1] = show(seen or token)
        end
    end
    shared:set("burst:" .. job .. ":" .. ngx.worker.id(), table.concat({
        "pid=" .. ngx.worker.pid(),
        "pairs=" .. table.concat(pairs_out, ","),
        "failures=" .. table.concat(failures, " | "),
    }, "\n"))
end

poll_jobs = function(premature)
    if premature or burst_running then
        return
    end
    local job = shared:get("burst_job")
    if job == nil or jobs_done[job] then
        return
    end
    jobs_done[job] = true
    local id, n, lock_key, counter_key = job:match("^([^|]+)|(%d+)|([^|]+)|([^|]+)$")
    burst_running = true
    local ok, err = pcall(run_burst, id, tonumber(n), lock_key, counter_key)
    burst_running = false
    if not ok then
        shared:set("burst:" .. id .. ":" .. ngx.worker.id(), "failures=raised: " .. tostring(err))
    end
end

-- /t/burst_arm?run=R&job=J&n=N&lock=L&counter=C
function app.burst_arm()
    local p = prefix()
    shared:set("burst_job", table.concat({ assert(arg("job")), assert(arg("n")),
                                           p .. assert(arg("lock")), p .. assert(arg("counter")) }, "|"))
    ngx.say("ok")
end

-- /t/burst_result?job=J: each worker's results, once both have them.
function app.burst_result()
    local job = assert(arg("job"))
    for w = 0, 1 do
        local r = shared:get("burst:" .. job .. ":" .. w)
        if r == nil then
            ngx.status = 202
            ngx.say("pending worker ", w)
            return
        end
    end
    ngx.say("ok")
    for w = 0, 1 do
        ngx.say("-- worker ", w)
        ngx.say(shared:get("burst:" .. job .. ":" .. w))
    end
end

-- /t/counter?run=R&key=K
function app.counter()
    local c = checks()
    local value, err = client:call("GET", prefix() .. assert(arg("key")))
    c.ok("GET counter", value ~= nil, show(err))
    c.put("counter", value == vkn.null and "nil" or value)
    c.finish()
end

-- /t/lock_api?run=R: the handle and manager methods one by one.
function app.lock_api()
    local c = checks()
    local key = prefix() .. "lock_api"
    local h, err = locks:try_lock(key)
    if not c.ok("try_lock", h ~= nil, show(err)) then
        return c.finish()
    end
    c.eq("handle:key()", h:key(), key)
    c.ok("handle:validity() > 0", type(h:validity()) == "number" and h:validity() > 0, show(h:validity()))
    local token = h:fencing_token()
    c.ok("handle:fencing_token() > 0", type(token) == "number" and token > 0, show(token))
    local again, aerr = locks:try_lock(key)
    c.ok("try_lock on a taken key: nil, no error", again == nil and aerr == nil, show(again) .. " " .. show(aerr))
    c.fails("acquire on a taken key", "LOCK_ACQUIRE", nil, locks:acquire(key, { tries = 2, retry_delay = 0.01 }))
    c.eq("handle:extend(5)", h:extend(5), true)
    c.ok("validity after extend", h:validity() > 4, show(h:validity()))
    c.eq("handle:unlock()", h:unlock(), true)
    local h2 = locks:acquire(key, { tries = 2, retry_delay = 0.01 })
    if c.ok("acquire after unlock", h2 ~= nil) then
        c.ok("fencing tokens increase", h2:fencing_token() > token, show(h2:fencing_token()))
        c.eq("unlock by the deprecated manager:unlock", locks:unlock(h2), true)
    end
    c.fails("manager:unlock(nil)", "NIL_LOCK_HANDLE_ON_UNLOCK", "lock handle is nil", locks:unlock(nil))

    -- with_lock: results returned, the lock released, errors as LOCK_FN.
    local a, b = locks:with_lock(key, function(handle)
        local other = locks:try_lock(key)
        ngx.sleep(0.01)
        return other == nil and "held" or "not held", handle:key()
    end)
    c.eq("with_lock result 1", a, "held")
    c.eq("with_lock result 2", b, key)
    local value, ferr = locks:with_lock(key, function()
        ngx.sleep(0.001)
        error("handler failure", 0)
    end)
    c.fails("with_lock raising", "LOCK_FN", "distributed lock: function execution: handler failure", value, ferr)
    c.eq("err.cause", type(ferr) == "table" and ferr.cause, "handler failure")
    local h3 = locks:try_lock(key)
    c.ok("released after the error", h3 ~= nil)
    if h3 then
        h3:unlock()
    end
    c.fails("with_lock(key, nil)", "NIL_LOCK_FN", "lock function is nil", locks:with_lock(key, nil))
    c.finish()
end

-- /t/renewal?run=R: a lock with a 1 s expiry and auto_renew, held 2.5 s by a
-- function that sleeps: the worker's timers renew it (it stays held: a
-- second try fails, the key lives past its first expiry), and it is not
-- lost.
function app.renewal()
    local c = checks()
    local key = prefix() .. "renewal"
    local lost, tried, ttl
    local res, err = locks:with_lock_options(key, { expiry = 1, auto_renew = true, tries = 1 },
        function(handle)
            ngx.sleep(1.5)
            tried = locks:try_lock(key)
            ttl = client:call("PTTL", key)
            ngx.sleep(1.0)
            lost = handle:is_lost()
            return "done"
        end)
    c.eq("with_lock_options(auto_renew) result", res, "done")
    c.ok("no error", err == nil, show(err))
    c.ok("still held after 1.5 s (a try fails)", tried == nil, show(tried))
    c.ok("the key lives past its first expiry", type(ttl) == "number" and ttl > 0, show(ttl))
    c.eq("not lost", lost, false)
    local after = locks:try_lock(key)
    c.ok("released after the function", after ~= nil)
    if after then
        after:unlock()
    end
    c.finish()
end

-- /t/sinks?run=R: logger and metrics functions in the config run in the
-- worker: the lock's acquisition metric reaches the metrics function.
function app.sinks()
    local c = checks()
    local metrics, logs = {}, {}
    local own, err = vkn.new{
        standalone = os.getenv("VK_TEST_ADDR"),
        logger = function(level, message) logs[#logs + 1] = level .. ":" .. message end,
        metrics = function(name, kind) metrics[#metrics + 1] = name .. ":" .. kind end,
    }
    if not c.ok("a client with logger and metrics functions", own ~= nil, show(err)) then
        return c.finish()
    end
    local own_locks = assert(vkn.lock_manager(own))
    local res, lerr = own_locks:with_lock(prefix() .. "sinks", function()
        return own:call("PING")
    end)
    c.eq("with_lock through the client with sinks", res, "PONG")
    c.ok("no error", lerr == nil, show(lerr))
    local seen = table.concat(metrics, ",")
    c.ok("the metrics function saw redis_lock_acquisitions_total",
         seen:find("redis_lock_acquisitions_total:counter", 1, true) ~= nil, seen)
    own:close()
    c.finish()
end

-- /t/tracing?run=R: a client of this request with a recording tracer and
-- trace_commands: commands and a pipeline, a with_lock whose function
-- yields and calls Redis, a busy try_lock, a with_lock that gives up, and
-- close: names, attributes, errors, parents (none: the driver runs the
-- core's work on its own timer), every span finished, no secret.
function app.tracing()
    local c = checks()
    local spans = {}
    local tracer = {
        start = function(name, parent, attributes, start_time)
            local s = { name = name, parent = parent, attributes = attributes,
                        start_time = start_time }
            spans[#spans + 1] = s
            return s
        end,
        finish = function(s, err, attributes, end_time)
            s.err, s.end_time, s.finished = err, end_time, true
            for k, v in pairs(attributes) do
                s.attributes[k] = v
            end
        end,
    }
    local own, err = vkn.new{
        standalone = os.getenv("VK_TEST_ACL_ADDR"),
        static_password = { username = os.getenv("VK_TEST_ACL_USER"),
                            password = os.getenv("VK_TEST_ACL_PASS") },
        tracer = tracer, trace_commands = true,
    }
    if not c.ok("a client with a tracer", own ~= nil, show(err)) then
        return c.finish()
    end
    local key = prefix() .. "tracing"
    c.eq("SET", own:call("SET", key, "secret-value"), "OK")
    local p = own:pipeline()
    p:call("GET", key)
    p:call("PING")
    p:run()
    local locks = assert(vkn.lock_manager(own))
    local res = locks:with_lock(key .. ":lock", function()
        ngx.sleep(0.01)
        return own:call("INCR", key .. ":n")
    end)
    c.eq("with_lock's function ran", res, 1)
    local holder = assert(locks:try_lock(key .. ":held"))
    local busy, berr = locks:try_lock(key .. ":held")
    c.ok("try_lock on a held key: nil, no error", busy == nil and berr == nil, show(berr))
    local none, gerr = locks:with_lock_options(key .. ":held",
        { tries = 2, retry_delay = 0.01 }, function() return "never" end)
    c.ok("with_lock on a held key gives up", none == nil and gerr ~= nil, show(gerr))
    holder:unlock()
    own:close()

    local by_name = {}
    for _, s in ipairs(spans) do
        by_name[s.name] = by_name[s.name] or {}
        table.insert(by_name[s.name], s)
        c.ok(s.name .. " finished", s.finished == true)
        c.ok(s.name .. " times", type(s.start_time) == "number" and
             s.start_time <= (s.end_time or 0) and s.start_time > 1.6e9, show(s.start_time))
        for k, v in pairs(s.attributes) do
            c.ok(s.name .. " " .. k .. " holds no secret",
                 not tostring(v):find(os.getenv("VK_TEST_ACL_PASS"), 1, true) and
                 not tostring(v):find("secret-value", 1, true), tostring(v))
        end
        c.ok(s.name .. " error holds no secret", s.err == nil or
             not s.err:find(os.getenv("VK_TEST_ACL_PASS"), 1, true), show(s.err))
    end
    local ops = {}
    for _, s in ipairs(by_name["redis.command"] or {}) do
        ops[#ops + 1] = s.attributes["db.operation"]
    end
    local joined = table.concat(ops, ",")
    c.ok("command spans: set, pipeline, incr among them",
         joined:find("set", 1, true) and joined:find("pipeline", 1, true) and
         joined:find("incr", 1, true), joined)
    local withs = by_name["redis.lock.with_lock"] or {}
    c.eq("two with_lock spans", #withs, 2)
    if #withs == 2 then
        c.eq("the first released", withs[1].attributes["redis.lock.outcome"], "released")
        c.ok("the first without error", withs[1].err == nil, show(withs[1].err))
        c.eq("its key", withs[1].attributes["redis.lock.key"], key .. ":lock")
        c.eq("the second contended", withs[2].attributes["redis.lock.outcome"], "contended")
        c.eq("its error is the call's", withs[2].err, tostring(gerr))
    end
    local tries = by_name["redis.lock.try_lock"] or {}
    c.eq("two try_lock spans", #tries, 2)
    if #tries == 2 then
        c.eq("acquired", tries[1].attributes["redis.lock.outcome"], "acquired")
        c.eq("then contended", tries[2].attributes["redis.lock.outcome"], "contended")
        c.ok("a busy try is not a failure", tries[2].err == nil, show(tries[2].err))
    end
    c.eq("one close span", #(by_name["redis.close"] or {}), 1)
    c.finish()
end

-- ---- (5) a closed client ---------------------------------------------------------------------

-- /t/closed?run=R: a client of this request, closed with a BLPOP in flight.
function app.closed()
    local c = checks()
    local p = prefix() .. "closed:"
    local own = assert(vkn.new{ standalone = os.getenv("VK_TEST_ADDR") })
    c.eq("is_connected before the first call", own:is_connected(), false)
    c.eq("PING", own:call("PING"), "PONG")
    local id = own:call("CLIENT", "ID")
    c.ok("CLIENT ID", type(id) == "number", show(id))
    c.put("client_id", id)
    local pl_before = own:pipeline():call("PING")
    local own_locks = assert(vkn.lock_manager(own))
    local h = own_locks:try_lock(p .. "lock")
    c.ok("try_lock", h ~= nil)

    local blocked = ngx.thread.spawn(function()
        local t0 = now()
        local v, e = own:call("BLPOP", p .. "list", "5")
        return v, e, now() - t0
    end)
    ngx.sleep(0.2)
    local t0 = now()
    own:close()
    c.ok("close() returns at once", now() - t0 < 0.05)
    own:close()
    local ok, v, e, waited = ngx.thread.wait(blocked)
    c.ok("the BLPOP thread ended", ok, show(v))
    c.fails("a BLPOP in flight at close", "CANCELLED", "^operation cancelled", v, e)
    c.put("in_flight_text", show(e))
    c.ok("the BLPOP ended at close, not after 5 s", type(waited) == "number" and waited < 1, show(waited))

    c.eq("is_connected after close", own:is_connected(), false)
    c.fails("call after close", "NIL_CLIENT", "redis client is nil", own:call("PING"))
    c.fails("status after close", "NIL_CLIENT", "redis client is nil", own:status())
    c.fails("pipeline after close", "NIL_CLIENT", "redis client is nil", own:pipeline())
    c.fails("pipeline made before close, run after", "NIL_CLIENT", "redis client is nil", pl_before:run())
    if h then
        local uv, ue = h:unlock()
        c.ok("handle:unlock after close: nil, err", uv == nil and type(ue) == "table", show(uv) .. " " .. show(ue))
        c.put("unlock_after_close", show(ue))
    end
    c.fails("try_lock after close", "NIL_CLIENT", "redis client is nil", own_locks:try_lock(p .. "lock2"))
    c.fails("acquire after close", "NIL_CLIENT", "redis client is nil", own_locks:acquire(p .. "lock2"))
    c.fails("with_lock after close", "NIL_CLIENT", "redis client is nil", own_locks:with_lock(p .. "lock2", function() end))
    -- require "vkclient" answers nil, err NIL_CLIENT here (errors_spec.lua).
    local m, merr = vkn.lock_manager(own)
    c.put("lock_manager_of_closed", m == nil and show(merr) or "a manager")
    c.finish()
end

-- ---- (6) TLS ------------------------------------------------------------------------------------

-- Commands over a TLS client: the failures' texts are prefixed by label.
local function tls_round_trip(c, label, tc, p)
    local value = "tls:" .. ALL_BYTES
    local pong, err = tc:call("PING")
    if not c.eq(label .. ": PING over TLS", pong, "PONG") then
        c.failures[#c.failures + 1] = label .. ": the error: " .. show(err)
        return
    end
    c.eq(label .. ": SET over TLS", tc:call("SET", p .. "k", value), "OK")
    c.eq(label .. ": GET over TLS", tc:call("GET", p .. "k"), value)
    c.fails(label .. ": error reply over TLS", "SERVER", "ERR value is not an integer or out of range",
            tc:call("INCR", p .. "k"))
    local results = tc:pipeline():call("DEL", p .. "n"):call("INCR", p .. "n"):call("INCR", p .. "n"):run()
    c.ok(label .. ": pipeline over TLS", type(results) == "table" and results[3] == 2, show(results and results[3]))
    local status = tc:status() or {}
    c.eq(label .. ": status.connected", status.connected, true)
end

-- /t/tls?run=R&which=address|name|url|refused: the TLS-only server,
-- trusted through lua_ssl_trusted_certificate.
function app.tls()
    local c = checks()
    local p = prefix() .. "tls:" .. ngx.worker.pid() .. ":"
    local addr = os.getenv("VK_TEST_TLS_ADDR")
    local which = arg("which")
    if which == "address" then
        -- tls = { use_system_ca = true } and an IP address: nginx checks a
        -- certificate's DNS names only, so the IP cannot be verified; the
        -- connection is refused with a TLS error saying so (not made
        -- without the check).
        -- A client of this request: the worker's may be inside the
        -- reconnect rate limit after an earlier request's failed dial.
        local own = vkn.new{ standalone = addr, tls = { use_system_ca = true } }
        if c.ok("TLS client to an IP address", own ~= nil) then
            local v, e = own:call("PING")
            own:close()
            c.fails("PING over TLS to an IP address without server_name", "TLS",
                    "^TLS error: handshake with " .. addr:gsub("%p", "%%%0") .. " failed: nginx verifies a "
                    .. "certificate by DNS name only, and 127%.0%.0%.1 is an IP address: set "
                    .. "tls%.server_name to a name the server's certificate carries$", v, e)
        end
    elseif which == "name" then
        if c.ok("TLS client (server_name) made in init_worker", tls_named_client ~= nil) then
            tls_round_trip(c, "tls = { use_system_ca = true, server_name = \"localhost\" }", tls_named_client, p)
        end
    elseif which == "url" then
        -- rediss:// from a URL: the same trust.
        local from_url, uerr = vkn.from_url("rediss://" .. addr, { tls = { server_name = "localhost" } })
        if c.ok("from_url rediss://", from_url ~= nil, show(uerr)) then
            local v, e = from_url:call("PING")
            c.eq("PING through from_url rediss:// (server_name localhost)", v, "PONG")
            c.put("from_url_ping", show(v or e))
            from_url:close()
        end
    else
        -- A CA in the config cannot go to a cosocket: refused, not ignored.
        local ca_file = os.getenv("VK_TEST_CA_FILE")
        local text = "^invalid redis config: vkclient.ngx verifies TLS with the CAs of nginx's lua_ssl_trusted_certificate"
        local v, e = vkn.new{ standalone = addr, tls = { ca_file = ca_file } }
        c.fails("tls.ca_file", "INVALID_CONFIG", text, v, e)
        c.put("ca_file_error", show(e))
        c.fails("tls.ca_cert_base64", "INVALID_CONFIG", text,
                vkn.new{ standalone = addr, tls = { ca_cert_base64 = os.getenv("VK_TEST_CA_B64") } })
        c.fails("tls.ca_file with use_system_ca", "INVALID_CONFIG", text,
                vkn.new{ standalone = addr, tls = { ca_file = ca_file, use_system_ca = true } })
        c.fails("from_url rediss:// with tls.ca_file", "INVALID_CONFIG", text,
                vkn.from_url("rediss://" .. addr, { tls = { ca_file = ca_file } }))
    end
    c.finish()
end

-- /t/wrong_ca?run=R: a location whose lua_ssl_trusted_certificate is an
-- unrelated CA: a client first used here cannot verify the server.
function app.wrong_ca()
    local c = checks()
    local own = assert(vkn.new{
        standalone = os.getenv("VK_TEST_TLS_ADDR"),
        tls = { use_system_ca = true, server_name = "localhost" },
        options = { dial_timeout = 1, read_timeout = 1 },
    })
    local t0 = now()
    local v, e = own:call("PING")
    c.put("elapsed", string.format("%.3f", now() - t0))
    c.fails("PING with an unrelated CA", "TLS", nil, v, e)
    c.put("error", show(e))
    own:close()
    c.finish()
end

-- ---- (7) Sentinel and Cluster -------------------------------------------------------------

local function topology_round_trip(c, tc, p, n)
    local keys = {}
    for i = 1, n do
        local key = p .. i
        keys[#keys + 1] = key
        c.eq("SET " .. key, tc:call("SET", key, "v" .. i), "OK")
    end
    for i, key in ipairs(keys) do
        c.eq("GET " .. key, tc:call("GET", key), "v" .. i)
    end
    -- A pipeline across the keys (across the slots, in a Cluster).
    local pl = tc:pipeline()
    for _, key in ipairs(keys) do
        pl:call("GET", key)
    end
    pl:call("INCR", keys[1])
    local results, err = pl:run()
    if c.ok("pipeline across keys", type(results) == "table", show(err)) then
        for i = 1, n do
            c.eq("pipeline GET " .. keys[i], results[i], "v" .. i)
        end
        local last = results[n + 1]
        c.eq("pipeline error in place", type(last) == "table" and last.code, "SERVER")
    end
    c.put("keys", table.concat(keys, ","))
end

-- /t/sentinel?run=R
function app.sentinel()
    local c = checks()
    if not c.ok("Sentinel client made in init_worker", sentinel_client ~= nil) then
        return c.finish()
    end
    topology_round_trip(c, sentinel_client, prefix() .. "sentinel:", 20)
    local status = sentinel_client:status() or {}
    c.eq("status.mode", status.mode, "sentinel")
    c.eq("status.connected", status.connected, true)
    c.put("master_address", status.master_address)
    c.finish()
end

-- /t/cluster?run=R
function app.cluster()
    local c = checks()
    if not c.ok("Cluster client made in init_worker", cluster_client ~= nil) then
        return c.finish()
    end
    local p = prefix() .. "cluster:"
    topology_round_trip(c, cluster_client, p, 30)
    -- Hash tags share a slot; keys of several slots are refused as the
    -- blocking module refuses them.
    c.eq("MSET with a hash tag", cluster_client:call("MSET", "{" .. p .. "t}a", "1", "{" .. p .. "t}b", "2"), "OK")
    local mget = cluster_client:call("MGET", "{" .. p .. "t}a", "{" .. p .. "t}b")
    c.ok("MGET with a hash tag", type(mget) == "table" and mget[1] == "1" and mget[2] == "2", show(mget))
    c.fails("MGET across slots", "INVALID_ARGUMENT",
            "invalid argument: CROSSSLOT keys in request don't hash to the same slot",
            cluster_client:call("MGET", p .. "1", p .. "2", p .. "3", p .. "4"))
    local status = cluster_client:status() or {}
    c.eq("status.mode", status.mode, "cluster")
    c.eq("status.connected", status.connected, true)
    local masters = 0
    for _ in pairs(status.nodes or {}) do
        masters = masters + 1
    end
    c.eq("status.nodes (masters)", masters, 3)

    -- A lock in the Cluster, contended by light threads of this request
    -- (and by the other requests': the counter is this request's own).
    local cluster_locks = assert(vkn.lock_manager(cluster_client))
    local counter = p .. "counter:" .. ngx.var.request_id
    local threads = {}
    for i = 1, 10 do
        threads[i] = ngx.thread.spawn(function()
            return cluster_locks:with_lock_options(p .. "lock", CONTENDED, function()
                local current = cluster_client:call("GET", counter)
                local seen = current == vkn.null and 0 or tonumber(current)
                ngx.sleep(0.002)
                assert(cluster_client:call("SET", counter, tostring(seen + 1)) == "OK")
                return true
            end)
        end)
    end
    for i = 1, 10 do
        local ok, v, e = ngx.thread.wait(threads[i])
        c.ok("Cluster locked increment " .. i, ok and v == true, show(e or v))
    end
    c.eq("Cluster counter under the lock", cluster_client:call("GET", counter), "10")
    c.finish()
end

-- ---- (8) values exchanged with lua-resty-redis ----------------------------------------------

-- The values both modules write and read: every byte, protocol-looking
-- bytes, the empty string, a large value (many reads of READ_CHUNK).
local function interop_values(id)
    return {
        { "empty", "" },
        { "all_bytes", ALL_BYTES .. id },
        { "reversed", ALL_BYTES:reverse() .. id },
        { "protocol", "\r\n$5\r\nhello\r\n*1\r\n:1\r\n-ERR x\r\n+OK\r\n_\r\n" .. id },
        { "nul", "\0\0" .. id .. "\0" },
        { "big", string.rep(ALL_BYTES, 4096) .. id },   -- 1 MiB and the id
    }
end

-- /t/interop?run=R&id=N: vkclient.ngx writes, lua-resty-redis reads the
-- same bytes back; lua-resty-redis writes, vkclient.ngx reads; strings,
-- binary keys, a hash with binary fields, a list, integers and missing
-- keys; then each reads the other's keys in a pipeline.
function app.interop()
    local c = checks()
    local found, redis = pcall(require, "resty.redis")
    if not found then
        c.put("skipped", "lua-resty-redis is not on lua_package_path")
        return c.finish()
    end
    local id = need("id")
    local p = prefix() .. "interop:" .. id .. ":"
    local host, port = os.getenv("VK_TEST_ADDR"):match("^(.+):(%d+)$")
    local red = redis:new()
    red:set_timeouts(5000, 10000, 10000)
    local ok, err = red:connect(host, tonumber(port))
    if not c.ok("lua-resty-redis connect", ok, tostring(err)) then
        return c.finish()
    end
    local values = interop_values(id)

    -- vkclient.ngx -> lua-resty-redis
    for _, v in ipairs(values) do
        local key = p .. "vk:" .. v[1]
        c.eq("vkclient.ngx SET " .. v[1], client:call("SET", key, v[2]), "OK")
        c.eq("lua-resty-redis GET of vkclient.ngx's " .. v[1], red:get(key), v[2])
    end
    c.eq("vkclient.ngx SET (binary key)", client:call("SET", p .. "vk:key:" .. ALL_BYTES, ALL_BYTES), "OK")
    c.eq("lua-resty-redis GET (binary key)", red:get(p .. "vk:key:" .. ALL_BYTES), ALL_BYTES)
    local big = values[#values][2]
    c.eq("vkclient.ngx HSET (binary fields)",
         client:call("HSET", p .. "vk:hash", ALL_BYTES, "1", "", ALL_BYTES, "big", big), 3)
    local h = red:hgetall(p .. "vk:hash")
    if c.ok("lua-resty-redis HGETALL", type(h) == "table" and #h == 6, show(h)) then
        h = red:array_to_hash(h)
        c.eq("HGETALL [binary field]", h[ALL_BYTES], "1")
        c.eq("HGETALL [empty field]", h[""], ALL_BYTES)
        c.eq("HGETALL [big]", h.big, big)
    end
    c.eq("vkclient.ngx INCRBY", client:call("INCRBY", p .. "vk:n", 41), 41)
    c.eq("lua-resty-redis INCR of vkclient.ngx's counter", red:incr(p .. "vk:n"), 42)

    -- lua-resty-redis -> vkclient.ngx
    for _, v in ipairs(values) do
        local key = p .. "resty:" .. v[1]
        c.eq("lua-resty-redis SET " .. v[1], red:set(key, v[2]), "OK")
        c.eq("vkclient.ngx GET of lua-resty-redis's " .. v[1], client:call("GET", key), v[2])
    end
    c.eq("lua-resty-redis RPUSH", red:rpush(p .. "resty:list", ALL_BYTES, "", big, "\r\n"), 4)
    local list = client:call("LRANGE", p .. "resty:list", 0, -1)
    if c.ok("vkclient.ngx LRANGE", type(list) == "table" and #list == 4, show(list)) then
        c.eq("LRANGE [1]", list[1], ALL_BYTES)
        c.eq("LRANGE [2]", list[2], "")
        c.eq("LRANGE [3]", list[3], big)
        c.eq("LRANGE [4]", list[4], "\r\n")
    end
    c.eq("vkclient.ngx INCR of lua-resty-redis's counter", client:call("INCR", p .. "resty:list:n"), 1)
    c.eq("lua-resty-redis GET of it", red:get(p .. "resty:list:n"), "1")
    -- A missing key is ngx.null for both.
    c.eq("lua-resty-redis GET missing", red:get(p .. "missing"), ngx.null)
    c.eq("vkclient.ngx GET missing", client:call("GET", p .. "missing"), ngx.null)

    -- Pipelines: each reads the other's keys.
    red:init_pipeline()
    for _, v in ipairs(values) do
        red:get(p .. "vk:" .. v[1])
    end
    red:hget(p .. "vk:hash", ALL_BYTES)
    local results, perr = red:commit_pipeline()
    if c.ok("lua-resty-redis pipeline of vkclient.ngx's keys", type(results) == "table", tostring(perr)) then
        for i, v in ipairs(values) do
            c.eq("lua-resty-redis pipeline GET " .. v[1], results[i], v[2])
        end
        c.eq("lua-resty-redis pipeline HGET", results[#values + 1], "1")
    end
    local pl = client:pipeline()
    for _, v in ipairs(values) do
        pl:call("GET", p .. "resty:" .. v[1])
    end
    pl:call("LINDEX", p .. "resty:list", 2)
    results, perr = pl:run()
    if c.ok("vkclient.ngx pipeline of lua-resty-redis's keys", type(results) == "table", show(perr)) then
        for i, v in ipairs(values) do
            c.eq("vkclient.ngx pipeline GET " .. v[1], results[i], v[2])
        end
        c.eq("vkclient.ngx pipeline LINDEX", results[#values + 1], big)
    end

    -- For the driver, which reads them on the server: what each wrote.
    c.put("vk_big_key", p .. "vk:big")
    c.put("resty_all_bytes_key", p .. "resty:all_bytes")
    local kept, kerr = red:set_keepalive(10000, 16)
    c.ok("lua-resty-redis set_keepalive", kept, tostring(kerr))
    c.finish()
end

-- ---- (9) GCP IAM tokens rotating under load over TLS ------------------------------------

-- The worker's client of the IAM server (tests/harness/iam_env.py): TLS
-- verified with the /iam/ location's CA, tokens of 3 s refreshed every
-- second by the core's thread. Made on the first /iam/ request.
local iam_client

local function get_iam_client()
    if iam_client == nil then
        local err
        iam_client, err = vkn.new{
            standalone = os.getenv("VK_IAM_ADDR"),
            tls = { use_system_ca = true, server_name = "localhost" },
            gcp_iam = {
                credentials_base64 = os.getenv("VK_IAM_CREDENTIALS_B64"),
                service_account = os.getenv("VK_IAM_SERVICE_ACCOUNT"),
                endpoint = os.getenv("VK_IAM_ENDPOINT"),
                token_lifetime = 3,
                refresh_every = 1,
                refresh_check_interval = 0.2,
            },
            options = { dial_timeout = 5, read_timeout = 5, write_timeout = 5 },
        }
        if not iam_client then
            return nil, err
        end
    end
    return iam_client
end

local function put_iam_status(c, cl)
    local status = cl:status() or {}
    c.put("last_refresh_at", status.last_refresh_at and string.format("%.3f", status.last_refresh_at) or "nil")
    c.put("last_refresh_error", show(status.last_refresh_error))
    c.put("refresh_loop_running", tostring(status.refresh_loop_running))
    c.put("connected", tostring(status.connected))
end

-- /iam/load?run=R&key=K[&blpop=1]: INCR of the request's key and of the
-- run's total, a GET of the key (at least what the INCR gave), with
-- blpop=1 also a BLPOP 0.05 (a connection of its own, which logs in with
-- the token of the moment); the client's refresh time after.
function app.iam_load()
    local c = checks()
    local cl, err = get_iam_client()
    if not c.ok("the IAM client", cl ~= nil, show(err)) then
        return c.finish()
    end
    local key = prefix() .. "iam:" .. need("key")
    local n, ierr = cl:call("INCR", key)
    if c.ok("INCR", type(n) == "number", show(n or ierr)) then
        c.put("n", n)
    end
    local total, terr = cl:call("INCR", prefix() .. "iam:total")
    c.ok("INCR of the total", type(total) == "number", show(total or terr))
    local got, gerr = cl:call("GET", key)
    c.ok("GET", type(got) == "string" and type(n) == "number" and tonumber(got) >= n, show(got or gerr))
    if arg("blpop") then
        local v, berr = cl:call("BLPOP", prefix() .. "iam:empty", "0.05")
        c.eq("BLPOP 0.05 (a connection of its own)", v, vkn.null)
        c.eq("BLPOP error", berr, nil)
    end
    put_iam_status(c, cl)
    c.finish()
end

-- /iam/status?run=R[&key=K]: the client's refresh status, who it is
-- logged in as, and the value of the run's key K.
function app.iam_status()
    local c = checks()
    local cl, err = get_iam_client()
    if not c.ok("the IAM client", cl ~= nil, show(err)) then
        return c.finish()
    end
    local who, werr = cl:call("ACL", "WHOAMI")
    c.eq("ACL WHOAMI", who, "default")
    c.ok("ACL WHOAMI error", werr == nil, show(werr))
    if arg("key") then
        local value, verr = cl:call("GET", prefix() .. "iam:" .. arg("key"))
        c.ok("GET " .. arg("key"), type(value) == "string", show(value or verr))
        c.put("value", value)
    end
    put_iam_status(c, cl)
    c.finish()
end

-- ---- (12) connections kept across the driver's idle periods ----------------------------------

-- The server's id of the connection a call runs on, the db it has
-- selected and the user it is logged in as (CLIENT INFO), and whether the
-- client's driver was running before the call (it ends after a second
-- with nothing to do, putting its connections in nginx's keepalive pool).
local function put_connection(c, cl)
    c.put("driver_was_running", tostring(cl._driver))
    local id, err = cl:call("CLIENT", "ID")
    if c.ok("CLIENT ID", type(id) == "number", show(id or err)) then
        c.put("id", id)
    end
    local info, ierr = cl:call("CLIENT", "INFO")
    if c.ok("CLIENT INFO", type(info) == "string", show(info or ierr)) then
        c.put("db", info:match(" db=(%d+)"))
        c.put("user", info:match(" user=(%S+)"))
    end
end

-- The worker's client of the keepalive checks: db 5, as the ACL user the
-- driver made; a new password (the driver changed it on the server) makes
-- a new client, as an application reconfigured would.
local ka_client, ka_password

-- /t/keepalive?run=R&user=U&password=P: put_connection, and a value the
-- client wrote in its db.
function app.keepalive()
    local c = checks()
    local password = need("password")
    if ka_client == nil or ka_password ~= password then
        if ka_client ~= nil then
            ka_client:close()
        end
        local err
        ka_client, err = vkn.new{
            standalone = os.getenv("VK_TEST_ADDR"),
            static_password = { username = need("user"), password = password },
            options = { db = 5, dial_timeout = 2, read_timeout = 3 },
            keepalive_timeout = 30,
            keepalive_pool_size = 4,
        }
        if not c.ok("a client of db 5 as " .. need("user"), ka_client ~= nil, show(err)) then
            return c.finish()
        end
        ka_password = password
    end
    put_connection(c, ka_client)
    local key = prefix() .. "ka:" .. ngx.worker.pid()
    c.eq("SET in db 5", ka_client:call("SET", key, "five"), "OK")
    c.eq("GET in db 5", ka_client:call("GET", key), "five")
    c.finish()
end

-- /iam/keepalive?run=R: put_connection on the IAM client (whose token is
-- replaced every second).
function app.iam_keepalive()
    local c = checks()
    local cl, err = get_iam_client()
    if not c.ok("the IAM client", cl ~= nil, show(err)) then
        return c.finish()
    end
    put_connection(c, cl)
    put_iam_status(c, cl)
    c.finish()
end

-- /t/keepalive_options: the options are checked as the core's fields.
function app.keepalive_options()
    local c = checks()
    local addr = os.getenv("VK_TEST_ADDR")
    local ok, err = pcall(vkn.new, { standalone = addr, keepalive_timeout = "60" })
    c.ok("keepalive_timeout = \"60\" raises", not ok and tostring(err):find(
        "vkclient: config.keepalive_timeout must be a number, got string", 1, true), show(err))
    ok, err = pcall(vkn.new, { standalone = addr, keepalive_pool_size = 0 })
    c.ok("keepalive_pool_size = 0 raises", not ok and tostring(err):find(
        "vkclient: config.keepalive_pool_size must be a whole number >= 1", 1, true), show(err))
    local off = vkn.new{ standalone = addr, keepalive = false }
    c.ok("keepalive = false is taken", off ~= nil)
    if off then
        c.eq("a call without keepalive", off:call("PING"), "PONG")
        off:close()
    end
    c.finish()
end

-- ---- (10), (11) a Sentinel failover and a slot migration under load -------------------------

-- Clients of the driver's own Sentinel group and Cluster, made in each
-- worker on its first request that names them.
local own_clients = {}

local function split(list)
    local t = {}
    for a in list:gmatch("[^,]+") do
        t[#t + 1] = a
    end
    return t
end

local function own_client(kind)
    local addresses = need(kind == "sentinel" and "sentinels" or "seeds")
    local name = arg("name")
    local key = kind .. "|" .. addresses .. "|" .. tostring(name)
    local cl = own_clients[key]
    if cl == nil then
        local config = { options = { dial_timeout = 1, read_timeout = 2, write_timeout = 2 } }
        if kind == "sentinel" then
            config.sentinel = { addresses = split(addresses), master_name = need("name") }
        else
            config.cluster = { addresses = split(addresses) }
        end
        cl = assert(vkn.new(config))
        own_clients[key] = cl
    end
    return cl
end

local function one_line(s)
    return (tostring(s):gsub("[\r\n]", " "))
end

-- /t/fo_set?sentinels=A,B,C&name=N&key=K&value=V: one SET through the
-- worker's client of the group: outcome=ok, or outcome=error with the
-- error's code and text (a write that failed says so); the client's
-- master after it.
function app.fo_set()
    local c = checks()
    local cl = own_client("sentinel")
    local value, err = cl:call("SET", need("key"), need("value"))
    if value == "OK" and err == nil then
        c.put("outcome", "ok")
    elseif value == nil and type(err) == "table" and getmetatable(err) == vkn.error_mt then
        c.put("outcome", "error")
        c.put("code", err.code)
        c.put("text", one_line(err))
    else
        c.ok("SET answers OK or nil, err", false, show(value) .. " " .. show(err))
    end
    local status = cl:status() or {}
    c.put("master_address", status.master_address)
    c.put("master_switches", status.master_switches)
    c.finish()
end

-- /t/fo_status?sentinels=A,B,C&name=N&key=K: a SET and GET through the
-- worker's client, and its status.
function app.fo_status()
    local c = checks()
    local cl = own_client("sentinel")
    local key = need("key") .. ":" .. ngx.worker.pid()
    c.eq("SET", cl:call("SET", key, "after"), "OK")
    c.eq("GET", cl:call("GET", key), "after")
    local status = cl:status() or {}
    c.eq("status.mode", status.mode, "sentinel")
    c.eq("status.connected", status.connected, true)
    c.put("master_address", status.master_address)
    c.put("master_switches", status.master_switches)
    c.put("key", key)
    c.finish()
end

-- /t/own_close: the worker's clients of the driver's own group and
-- cluster are closed before the driver stops them.
function app.own_close()
    local c = checks()
    local n = 0
    for key, cl in pairs(own_clients) do
        cl:close()
        own_clients[key] = nil
        n = n + 1
    end
    c.put("closed", n)
    c.finish()
end

-- /t/mig?seeds=A,B,C&op=single&key=K             INCR K, GET K
--                  &op=pipeline&keys=K1,K2,K3,K4&other=O
--                                                 INCR K1, INCR K2, GET O, INCR K3, INCR K4
--                  &op=multi&keys=M1,...&n=N       MSET Mi N..., MGET Mi...
-- through the worker's client of the cluster; incremented= the keys whose
-- INCR succeeded (in order), the client's redirect counts after.
function app.mig()
    local c = checks()
    local cl = own_client("cluster")
    local op = arg("op")
    local done = {}
    if op == "single" then
        local key = need("key")
        local n, err = cl:call("INCR", key)
        if c.ok("INCR " .. key, type(n) == "number", show(n or err)) then
            done[#done + 1] = key
            local got, gerr = cl:call("GET", key)
            c.ok("GET " .. key .. " after INCR", type(got) == "string" and tonumber(got) >= n,
                 show(got or gerr) .. " after INCR gave " .. n)
        end
    elseif op == "pipeline" then
        local keys = split(need("keys"))
        local pl = cl:pipeline()
        for i, key in ipairs(keys) do
            pl:call("INCR", key)
            if i == 2 then
                pl:call("GET", need("other"))
            end
        end
        local results, err = pl:run()
        if c.ok("pipeline across the slots", type(results) == "table", show(err)) then
            c.eq("pipeline GET of the other slot", results[3], "steady")
            for i, key in ipairs(keys) do
                local r = results[i <= 2 and i or i + 1]
                if c.ok("pipeline INCR " .. key, type(r) == "number", show(r)) then
                    done[#done + 1] = key
                end
            end
        end
    elseif op == "multi" then
        local keys = split(need("keys"))
        local n = need("n")
        local args = {}
        for _, key in ipairs(keys) do
            args[#args + 1] = key
            args[#args + 1] = n
        end
        local ok, err = cl:call("MSET", unpack(args))
        c.eq("MSET", ok, "OK")
        c.ok("MSET error", err == nil, show(err))
        local got, gerr = cl:call("MGET", unpack(keys))
        if c.ok("MGET", type(got) == "table" and #got == #keys, show(got or gerr)) then
            for i, key in ipairs(keys) do
                c.eq("MGET " .. key, got[i], n)
            end
        end
    else
        c.ok("op", false, show(op))
    end
    c.put("incremented", table.concat(done, ","))
    local status = cl:status() or {}
    c.put("moved_redirects", status.moved_redirects)
    c.put("ask_redirects", status.ask_redirects)
    c.finish()
end

-- /t/mig_status?seeds=A,B,C: the worker's cluster client's status, and
-- GETs of keys=K1,... through it.
function app.mig_status()
    local c = checks()
    local cl = own_client("cluster")
    local status = cl:status() or {}
    c.eq("status.mode", status.mode, "cluster")
    c.eq("status.connected", status.connected, true)
    c.put("moved_redirects", status.moved_redirects)
    c.put("ask_redirects", status.ask_redirects)
    local nodes = {}
    for address in pairs(status.nodes or {}) do
        nodes[#nodes + 1] = address
    end
    table.sort(nodes)
    c.put("nodes", table.concat(nodes, ","))
    local values = {}
    for _, key in ipairs(split(arg("keys") or "")) do
        local v, err = cl:call("GET", key)
        c.ok("GET " .. key, type(v) == "string", show(v or err))
        values[#values + 1] = tostring(v)
    end
    c.put("values", table.concat(values, ","))
    c.finish()
end

-- ---- parity with require "vkclient" -------------------------------------------------------------

-- A value, in words that do not depend on which module made it.
local function describe(v)
    if v == nil then
        return "nil"
    end
    if v == vk.null then
        return "null"
    end
    local t = type(v)
    if t == "string" then
        return string.format("%q", v)
    end
    if t == "number" or t == "boolean" then
        return tostring(v)
    end
    if t == "table" or t == "userdata" then
        local ok, is_handle = pcall(function() return v.fencing_token ~= nil end)
        if ok and is_handle and getmetatable(v) ~= vk.error_mt then
            return "<lock handle>"
        end
        if t == "userdata" then
            return "<userdata>"
        end
        local keys = {}
        for k in pairs(v) do
            keys[#keys + 1] = k
        end
        table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
        local parts = {}
        for _, k in ipairs(keys) do
            parts[#parts + 1] = tostring(k) .. "=" .. describe(v[k])
        end
        local head = getmetatable(v) == vk.error_mt and ("err " .. string.format("%q", tostring(v)) .. " ") or ""
        return head .. "{" .. table.concat(parts, ",") .. "}"
    end
    return "<" .. t .. ">"
end

-- Table addresses and the place of a raise differ by nature.
local function normalise(text)
    return (text:gsub("table: 0x%x+", "table: 0x?"):gsub("^[^%s:]+%.lua:%d+: ", ""))
end

local function describe_all(...)
    local parts = {}
    for i = 1, select("#", ...) do
        parts[i] = describe((select(i, ...)))
    end
    return normalise(select("#", ...) .. ":" .. table.concat(parts, " "))
end

-- The cases: each runs with a module, one of its clients and managers.
local PARITY = {
    { "INCR on a string", function(m, cl, _, p)
        cl:call("SET", p .. "s", "x")
        return cl:call("INCR", p .. "s")
    end },
    { "wrong arity", function(_, cl) return cl:call("GET") end },
    { "unknown command", function(_, cl) return cl:call("NOSUCHCMD") end },
    { "WRONGTYPE", function(_, cl, _, p)
        cl:call("SET", p .. "s", "x")
        return cl:call("LPUSH", p .. "s", "y")
    end },
    { "nested reply with nil inside", function(_, cl)
        return cl:call("EVAL", "return {1, 'a', {2, false, 'b'}, redis.status_reply('FINE')}", "0")
    end },
    { "script error reply", function(_, cl)
        return cl:call("EVAL", "return redis.error_reply('MYERR custom text')", "0")
    end },
    { "numbers as arguments", function(_, cl, _, p)
        cl:call("SET", p .. "f", 12.5)
        cl:call("DEL", p .. "i")
        return cl:call("GET", p .. "f"), cl:call("INCRBY", p .. "i", 7)
    end },
    { "empty string and missing key", function(_, cl, _, p)
        cl:call("SET", p .. "e", "")
        return cl:call("GET", p .. "e"), cl:call("GET", p .. "none"), cl:call("EXISTS", p .. "none")
    end },
    { "pipeline with an error in place", function(_, cl, _, p)
        local pl = cl:pipeline()
        pl:call("SET", p .. "pl", "1"):call("INCR", p .. "pl"):call("LPUSH", p .. "pl", "x")
          :call("GET", p .. "pl"):call("GET", p .. "none")
        local n = pl:length()
        return n, pl:run()
    end },
    { "empty pipeline", function(_, cl) return cl:pipeline():run() end },
    { "try_lock on a taken key", function(_, _, lm, p)
        local h = lm:try_lock(p .. "taken")
        local a, b = lm:try_lock(p .. "taken")
        h:unlock()
        return a, b
    end },
    { "acquire on a taken key", function(_, _, lm, p)
        local h = lm:try_lock(p .. "busy")
        local a, b = lm:acquire(p .. "busy", { tries = 2, retry_delay = 0.01 })
        h:unlock()
        return a, b
    end },
    { "handle methods", function(_, _, lm, p)
        local h = lm:try_lock(p .. "h")
        local v = h:validity()
        return h:key(), type(h:fencing_token()), v > 0 and v <= 10, h:extend(5), h:unlock()
    end },
    { "unlock twice", function(_, _, lm, p)
        local h = lm:try_lock(p .. "twice")
        h:unlock()
        return h:unlock()
    end },
    { "extend after unlock", function(_, _, lm, p)
        local h = lm:try_lock(p .. "ext")
        h:unlock()
        return h:extend(5)
    end },
    { "with_lock results", function(_, _, lm, p)
        return lm:with_lock(p .. "w", function() return "a", 2, nil, false end)
    end },
    { "with_lock raising a string", function(_, _, lm, p)
        return lm:with_lock(p .. "w", function() error("boom", 0) end)
    end },
    { "with_lock raising a table", function(_, _, lm, p)
        return lm:with_lock(p .. "w", function() error({ reason = "t" }) end)
    end },
    { "with_lock, nil function", function(_, _, lm, p) return lm:with_lock(p .. "w", nil) end },
    { "with_lock_options, bad options", function(_, _, lm, p)
        return lm:with_lock_options(p .. "w", { tries = 0 }, function() return 1 end)
    end },
    { "with_lock_options, 1001 tries", function(_, _, lm, p)
        return lm:with_lock_options(p .. "w", { tries = 1001 }, function() return 1 end)
    end },
    { "try_lock('')", function(_, _, lm) return lm:try_lock("") end },
    { "acquire, bad options", function(_, _, lm, p)
        return lm:acquire(p .. "w", { expiry = -1 })
    end },
    { "manager:unlock(nil)", function(_, _, lm) return lm:unlock(nil) end },
    { "new{} (no topology)", function(m) return m.new{} end },
    { "new with an unknown mode", function(m) return m.new{ standalone = "127.0.0.1:1", refresh_mode = "bogus" } end },
    { "from_url of a bad URL", function(m) return m.from_url("http://x") end },
    { "from_url, bad db", function(m) return m.from_url("redis://127.0.0.1:1/notanumber") end },
    { "default_lock_options", function(m) return m.default_lock_options() end },
    { "rate_limiter_lock_options", function(m) return m.rate_limiter_lock_options() end },
    { "closed client", function(m)
        local cl = m.new{ standalone = os.getenv("VK_TEST_ADDR") }
        cl:call("PING")
        cl:close()
        local a, b = cl:call("PING")
        local s1, s2 = cl:status()
        local p1, p2 = cl:pipeline()
        return a, b, s1, s2, p1, p2, cl:is_connected(), cl:close()
    end },
    { "lock_manager of a closed client", function(m)
        local cl = m.new{ standalone = os.getenv("VK_TEST_ADDR") }
        cl:close()
        local lm, err = m.lock_manager(cl)
        return lm ~= nil and "a manager" or nil, err
    end },
}

-- Misuse raises: both modules must raise (the messages are reported).
local RAISES = {
    { "call()", function(_, cl) return cl:call() end },
    { "call with a table argument", function(_, cl) return cl:call("SET", "k", {}) end },
    { "pipeline:call()", function(_, cl) return cl:pipeline():call() end },
    { "with_lock with a number", function(_, _, lm, p) return lm:with_lock(p .. "n", 42) end },
    { "new(nil)", function(m) return m.new() end },
    { "lock_manager(42)", function(m) return m.lock_manager(42) end },
}

-- /t/parity?run=R: the same cases through both modules.
function app.parity()
    local c = checks()
    local blocking = assert(vk.new{ standalone = os.getenv("VK_TEST_ADDR") })
    local sides = {
        { name = "vkclient", m = vk, cl = blocking, lm = assert(vk.lock_manager(blocking)) },
        { name = "vkclient.ngx", m = vkn, cl = client, lm = locks },
    }
    for i, case in ipairs(PARITY) do
        local got = {}
        for s, side in ipairs(sides) do
            local p = prefix() .. "parity:" .. i .. ":"
            local ok, text = pcall(function() return describe_all(case[2](side.m, side.cl, side.lm, p)) end)
            got[s] = ok and text or ("raised " .. normalise(tostring(text)))
        end
        if got[1] ~= got[2] then
            c.failures[#c.failures + 1] = "parity " .. case[1] .. ":\n    vkclient:     " .. got[1]
                .. "\n    vkclient.ngx: " .. got[2]
        end
        c.put("case " .. case[1], got[2])
    end
    for i, case in ipairs(RAISES) do
        local got = {}
        for s, side in ipairs(sides) do
            local p = prefix() .. "raises:" .. i .. ":"
            local ok, err = pcall(case[2], side.m, side.cl, side.lm, p)
            got[s] = ok and "no raise" or ("raised " .. normalise(tostring(err)))
        end
        c.ok("both raise: " .. case[1], got[1]:find("^raised") and got[2]:find("^raised"),
             "vkclient: " .. got[1] .. "; vkclient.ngx: " .. got[2])
        if got[1] ~= got[2] then
            c.put("raise_text_differs " .. case[1], "vkclient: " .. got[1] .. " | vkclient.ngx: " .. got[2])
        end
    end
    blocking:close()
    c.finish()
end

-- ---- dispatch -------------------------------------------------------------------------------------

local HANDLERS = {
    basic = app.basic, surface = app.surface, blpop = app.blpop, get = app.get, set = app.set,
    locked_incr = app.locked_incr, burst_arm = app.burst_arm, burst_result = app.burst_result,
    counter = app.counter, lock_api = app.lock_api, closed = app.closed, tls = app.tls,
    wrong_ca = app.wrong_ca, sentinel = app.sentinel, cluster = app.cluster, parity = app.parity,
    init_error = app.init_error, renewal = app.renewal, sinks = app.sinks,
    tracing = app.tracing, scans_scripts = app.scans_scripts,
    interop = app.interop, iam_load = app.iam_load, iam_status = app.iam_status,
    fo_set = app.fo_set, fo_status = app.fo_status, mig = app.mig, mig_status = app.mig_status,
    own_close = app.own_close, keepalive = app.keepalive, iam_keepalive = app.iam_keepalive,
    keepalive_options = app.keepalive_options,
}

function app.dispatch()
    -- /t/name, and /iam/name (a location of its own: see ngx.conf.in).
    local name = ngx.var.uri:match("^/t/([%w_]+)$")
    local iam = ngx.var.uri:match("^/iam/([%w_]+)$")
    if iam ~= nil then
        name = "iam_" .. iam
    end
    local handler = name and HANDLERS[name]
    if not handler then
        ngx.status = 404
        ngx.say("no handler ", ngx.var.uri)
        return
    end
    if not client then
        ngx.status = 503
        ngx.say("FAIL no client in this worker")
        return
    end
    local ok, err = xpcall(handler, debug.traceback)
    if not ok then
        ngx.status = 500
        ngx.say("FAIL raised: ", tostring(err))
    end
end

return app
