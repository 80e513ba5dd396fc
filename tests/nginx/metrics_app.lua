-- The OpenResty handlers of the vkclient.prometheus test (see
-- metrics.conf.in, run_metrics.sh and metrics_driver.py).
--
-- Each worker records its clients' metrics into ngx.shared.vk_metrics
-- through require("vkclient.prometheus"): a vkclient.ngx client (the
-- workload) and a blocking require "vkclient" client (its pool gauges).
-- /metrics shows what both workers recorded. The handlers under /t/ answer
--   200 "ok" and key=value lines for the driver,
-- or
--   500 "FAIL" and the reason.
local vkn = require "vkclient.ngx"
local vk = require "vkclient"
local prometheus = require "vkclient.prometheus"

local app = {}

local prom, client, locks, blocking
-- A second registry on a dict too small for what it is given (/t/full).
local small

function app.init_worker()
    prom = prometheus.new(ngx.shared.vk_metrics, { namespace = "" })
    small = prometheus.new(ngx.shared.vk_small, { namespace = "small" })
    client = assert(vkn.new{
        standalone = os.getenv("VK_TEST_ADDR"),
        metrics = prom.metrics,
    })
    locks = assert(vkn.lock_manager(client))
    -- The blocking client connects here, at once (a worker may block in
    -- init_worker): its pool reports its gauges through the same sink.
    blocking = assert(vk.new{
        standalone = os.getenv("VK_TEST_ADDR"),
        options = { pool_size = 2, read_timeout = 2 },
        metrics = prom:sink(),
    })
end

-- A query argument, unescaped.
local function arg(name)
    local value = ngx.req.get_uri_args()[name]
    if type(value) == "table" then
        value = value[1]
    end
    return value
end

local function answer(failures, lines)
    if #failures > 0 then
        ngx.status = 500
        ngx.say("FAIL worker=", ngx.worker.pid())
        for _, f in ipairs(failures) do
            ngx.say(f)
        end
        return
    end
    ngx.say("ok")
    ngx.say("worker=", ngx.worker.pid())
    for _, line in ipairs(lines) do
        ngx.say(line)
    end
end

-- /t/work?run=R&i=I&n=N: N rounds of SET, GET, GET of a missing key, an
-- INCR that the server refuses and a with_lock (its own key: never
-- contended) whose function INCRs a counter. Answers what it did.
function app.work()
    local p = "vkprom:" .. arg("run") .. ":" .. arg("i") .. ":"
    local n = tonumber(arg("n")) or 1
    local failures, gets, sets, errors, locked = {}, 0, 0, 0, 0
    for r = 1, n do
        local ok, err = client:call("SET", p .. r, "v" .. r)
        sets = sets + 1
        if ok ~= "OK" then
            failures[#failures + 1] = "SET: " .. tostring(err)
        end
        local v
        v, err = client:call("GET", p .. r)
        gets = gets + 1
        if v ~= "v" .. r then
            failures[#failures + 1] = "GET: " .. tostring(v) .. " " .. tostring(err)
        end
        v, err = client:call("GET", p .. "missing")
        gets = gets + 1
        if v ~= vkn.null then
            failures[#failures + 1] = "GET missing: " .. tostring(v) .. " " .. tostring(err)
        end
        v, err = client:call("INCR", p .. r)
        if v ~= nil or type(err) ~= "table" or err.code ~= "SERVER" then
            failures[#failures + 1] = "INCR of a string: " .. tostring(v) .. " " .. tostring(err)
        else
            errors = errors + 1
        end
        v, err = locks:with_lock(p .. "lock:" .. r, function()
            return client:call("INCR", p .. "counter")
        end)
        if v ~= r then
            failures[#failures + 1] = "with_lock: " .. tostring(v) .. " " .. tostring(err)
        else
            locked = locked + 1
        end
    end
    answer(failures, { "gets=" .. gets, "sets=" .. sets, "errors=" .. errors,
                       "with_lock=" .. locked })
end

-- /t/blocking?n=N: N GETs and N ECHOs through the blocking client.
function app.blocking()
    local n = tonumber(arg("n")) or 1
    local failures = {}
    for i = 1, n do
        local v, err = blocking:call("ECHO", "e" .. i)
        if v ~= "e" .. i then
            failures[#failures + 1] = "ECHO: " .. tostring(v) .. " " .. tostring(err)
        end
        v, err = blocking:call("GET", "vkprom:" .. arg("run") .. ":blocking")
        if v ~= vk.null then
            failures[#failures + 1] = "GET: " .. tostring(v) .. " " .. tostring(err)
        end
    end
    answer(failures, { "gets=" .. n, "echoes=" .. n })
end

-- /t/probe?run=R: the metrics a vkclient.ngx client reports for one GET,
-- through a metrics function of its own: its latency among them.
function app.probe()
    local seen = {}
    local own = assert(vkn.new{
        standalone = os.getenv("VK_TEST_ADDR"),
        metrics = function(name, kind, _, labels)
            seen[#seen + 1] = name .. ":" .. kind .. ":" .. tostring(labels.command)
        end,
    })
    local v, err = own:call("GET", "vkprom:" .. arg("run") .. ":probe")
    own:close()
    local failures = {}
    if v ~= vkn.null then
        failures[1] = "GET: " .. tostring(v) .. " " .. tostring(err)
    end
    local durations = false
    for _, s in ipairs(seen) do
        if s == "redis_command_duration_seconds:histogram:get" then
            durations = true
        end
    end
    answer(failures, { "command_durations=" .. tostring(durations),
                       "seen=" .. table.concat(seen, ",") })
end

-- /t/report?name=N&kind=K&value=V&l.<label>=<value>...: one report
-- straight to the metrics function, as the core would make it.
function app.report()
    local labels = {}
    for k, v in pairs(ngx.req.get_uri_args()) do
        if type(k) == "string" and k:sub(1, 2) == "l." then
            labels[k:sub(3)] = type(v) == "table" and v[1] or v
        end
    end
    local value = tonumber(arg("value"))
    if arg("worker_value") then
        -- A value of this worker's own: its id, scaled.
        value = (ngx.worker.id() + 1) * tonumber(arg("worker_value"))
    end
    prom.metrics(arg("name"), arg("kind"), value, labels)
    answer({}, { "worker_id=" .. ngx.worker.id(), "value=" .. tostring(value) })
end

-- /t/full?run=R: the small dict fills up. A series made before it did
-- keeps counting (nothing is evicted); the updates that need room are
-- dropped and counted.
function app.full()
    local failures = {}
    small.metrics("redis_lock_acquisitions_total", "counter", 1, { result = "acquired" })
    local i = 0
    while small.dropped == 0 and i < 100000 do
        i = i + 1
        small.metrics("redis_command_duration_seconds", "histogram", 0.001,
                      { command = arg("run") .. "_" .. i })
    end
    if small.dropped == 0 then
        failures[#failures + 1] = "the small dict never filled"
    end
    for _ = 1, 10 do
        small.metrics("redis_command_duration_seconds", "histogram", 0.001,
                      { command = arg("run") .. "_x" .. i })
    end
    small.metrics("redis_lock_acquisitions_total", "counter", 1, { result = "acquired" })
    answer(failures, { "series=" .. i, "dropped=" .. small.dropped })
end

-- /metrics/small: the small dict's text.
function app.small_metrics()
    ngx.header.content_type = "text/plain; version=0.0.4"
    ngx.print(small:collect())
end

-- /metrics: everything the workers recorded.
function app.metrics()
    ngx.header.content_type = "text/plain; version=0.0.4"
    ngx.print(prom:collect())
end

-- /t/misuse: what new() refuses.
function app.misuse()
    local failures = {}
    local function refuses(what, pattern, ...)
        local ok, err = pcall(prometheus.new, ...)
        if ok then
            failures[#failures + 1] = what .. ": accepted"
        elseif not tostring(err):find(pattern, 1, true) then
            failures[#failures + 1] = what .. ": " .. tostring(err)
        end
    end
    local dict = ngx.shared.vk_small
    refuses("no dict", "needs a lua_shared_dict", nil)
    refuses("a bad namespace", "namespace must match", dict, { namespace = "1x" })
    refuses("an unknown option", "unknown option namespaec", dict, { namespaec = "x" })
    refuses("buckets of a counter", "redis_reconnections_total is a counter", dict,
            { buckets = { redis_reconnections_total = { 1 } } })
    refuses("decreasing buckets", "must be increasing", dict,
            { buckets = { redis_lock_hold_seconds = { 2, 1 } } })
    answer(failures, {})
end

local ROUTES = {
    ["/t/work"] = app.work,
    ["/t/blocking"] = app.blocking,
    ["/t/probe"] = app.probe,
    ["/t/report"] = app.report,
    ["/t/full"] = app.full,
    ["/t/misuse"] = app.misuse,
    ["/metrics"] = app.metrics,
    ["/metrics/small"] = app.small_metrics,
}

function app.dispatch()
    local handler = ROUTES[ngx.var.uri]
    if handler == nil then
        return ngx.exit(404)
    end
    handler()
end

return app
