-- Tracing from Lua: the config's tracer = { start, finish } sees connect,
-- close, lock and (with trace_commands) command spans, with their
-- attributes, errors, times and parents; client:with_trace_parent; the span
-- values are released once finished; a tracer that raises is ignored; the
-- IAM refresh thread's spans arrive through the queue on the calling
-- coroutine.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()
local env = support.env

-- A tracer that records every span as a table (the table is the span value
-- start returns, so a parent is the parent's record).
local function recorder()
    local rec = { spans = {} }
    rec.tracer = {
        start = function(name, parent, attributes, start_time)
            local span = {
                name = name,
                parent = parent,
                attributes = attributes,
                start_time = start_time,
                thread = coroutine.running(),
            }
            rec.spans[#rec.spans + 1] = span
            return span
        end,
        finish = function(span, err, attributes, end_time)
            span.finished = true
            span.err = err
            span.end_attributes = attributes
            span.end_time = end_time
        end,
    }
    -- The recorded spans of this name, in start order.
    function rec.named(name)
        local found = {}
        for _, span in ipairs(rec.spans) do
            if span.name == name then
                found[#found + 1] = span
            end
        end
        return found
    end
    -- The one span of this name (asserted).
    function rec.one(name)
        local found = rec.named(name)
        assert(#found == 1, string.format("expected one %s span, got %d", name, #found))
        return found[1]
    end
    return rec
end

-- A loopback port no server listens on.
local function free_port()
    local status, output = support.run("/usr/bin/python3 -c 'import socket; s = socket.socket(); " ..
        "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
    assert(status == 0, output)
    return assert(tonumber(output:match("(%d+)")))
end

local function count_entries(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

-- The registry references that hold a value (a released reference holds
-- the number of the next free one).
local function held_references()
    local n = 0
    for key, value in pairs(debug.getregistry()) do
        if type(key) == "number" and type(value) ~= "number" then
            n = n + 1
        end
    end
    return n
end

local function full_gc()
    collectgarbage("collect")
    collectgarbage("collect")
end

-- Every string of a span's attributes and error, for secret checks.
local function span_texts(span)
    local texts = { span.name, span.err }
    for _, attrs in ipairs({ span.attributes or {}, span.end_attributes or {} }) do
        for key, value in pairs(attrs) do
            texts[#texts + 1] = key
            texts[#texts + 1] = value
        end
    end
    return texts
end

describe("tracer", function()
    it("sees a failed connect with the error text and the standard attributes", function()
        local rec = recorder()
        local address = "127.0.0.1:" .. free_port()
        local before = os.time()
        local client, err = vk.new{ standalone = address, tracer = rec.tracer }
        assert.is_nil(client)
        assert.are.equal("IO", err.code)
        local span = rec.one("redis.connect")
        assert.is_true(span.finished)
        assert.is_nil(span.parent)
        assert.are.equal(tostring(err), span.err)
        assert.matches("Connection refused", span.err, 1, true)
        assert.are.equal("redis", span.attributes["db.system"])
        assert.are.equal("standalone", span.attributes["redis.mode"])
        assert.are.equal(address, span.attributes["server.address"])
        -- Unix seconds, microsecond precision.
        assert.is_number(span.start_time)
        assert.is_true(span.start_time >= before - 1 and span.start_time <= os.time() + 1)
        assert.is_true(span.end_time >= span.start_time)
    end)

    it("sees connect and close", function()
        local rec = recorder()
        local client = support.client{ tracer = rec.tracer }
        local connect = rec.one("redis.connect")
        assert.is_true(connect.finished)
        assert.is_nil(connect.err)
        assert.are.equal(env.VK_TEST_ADDR, connect.attributes["server.address"])
        assert.are.equal("standalone", connect.attributes["redis.mode"])
        assert.are.equal(0, #rec.named("redis.close"))
        assert.are.equal("PONG", client:call("PING"))
        client:close()
        local close = rec.one("redis.close")
        assert.is_true(close.finished)
        assert.is_nil(close.err)
        assert.are.equal("redis", close.attributes["db.system"])
        assert.is_true(close.start_time >= connect.end_time)
        assert.is_true(close.end_time >= close.start_time)
        assert.are.same({ "redis.connect", "redis.close" }, { rec.spans[1].name, rec.spans[#rec.spans].name })
        -- client:connect() is a connect span of its own.
        local again = support.client{ tracer = rec.tracer }
        assert.is_true(again:connect())
        assert.are.equal(3, #rec.named("redis.connect"))
        again:close()
    end)

    it("sees a with_lock that succeeds", function()
        local rec = recorder()
        local client = support.client{ tracer = rec.tracer }
        local locks = assert(vk.lock_manager(client))
        local key = support.key("traced")
        assert.are.equal("done", locks:with_lock(key, function() return "done" end))
        local span = rec.one("redis.lock.with_lock")
        assert.is_true(span.finished)
        assert.is_nil(span.err)
        assert.are.equal(key, span.attributes["redis.lock.key"])
        assert.are.equal("redis", span.attributes["db.system"])
        assert.are.equal("1", span.end_attributes["redis.lock.attempts"])
        assert.are.equal("released", span.end_attributes["redis.lock.outcome"])
        locks:close()
        client:close()
    end)

    it("sees a contended with_lock: its attempts, its outcome and the error", function()
        local rec = recorder()
        local holder = support.client()
        local held = assert(vk.lock_manager(holder))
        local key = support.key("contended")
        local h = assert(held:try_lock(key))
        local client = support.client{ tracer = rec.tracer }
        local locks = assert(vk.lock_manager(client))
        local ran = false
        local ok, err = locks:with_lock_options(key, { tries = 2, retry_delay = 0.05 },
            function() ran = true end)
        assert.is_nil(ok)
        assert.is_false(ran)
        assert.are.equal("LOCK_ACQUIRE", err.code)
        local span = rec.one("redis.lock.with_lock")
        assert.is_true(span.finished)
        assert.are.equal(tostring(err), span.err)
        assert.are.equal(key, span.attributes["redis.lock.key"])
        assert.are.equal("2", span.end_attributes["redis.lock.attempts"])
        assert.are.equal("contended", span.end_attributes["redis.lock.outcome"])
        assert.is_true(h:unlock())
        locks:close()
        held:close()
        holder:close()
        client:close()
    end)

    it("sees a try_lock on a busy key as contended, without an error", function()
        local rec = recorder()
        local holder = support.client()
        local held = assert(vk.lock_manager(holder))
        local key = support.key("busy")
        local h = assert(held:try_lock(key))
        local client = support.client{ tracer = rec.tracer }
        local locks = assert(vk.lock_manager(client))
        local none, err = locks:try_lock(key)
        assert.is_nil(none)
        assert.is_nil(err)
        local span = rec.one("redis.lock.try_lock")
        assert.is_true(span.finished)
        assert.is_nil(span.err)
        assert.are.equal(key, span.attributes["redis.lock.key"])
        assert.are.equal("1", span.end_attributes["redis.lock.attempts"])
        assert.are.equal("contended", span.end_attributes["redis.lock.outcome"])
        -- Free: acquired.
        assert.is_true(h:unlock())
        local mine = assert(locks:try_lock(key))
        assert.are.equal("acquired", rec.named("redis.lock.try_lock")[2].end_attributes["redis.lock.outcome"])
        assert.is_true(mine:unlock())
        locks:close()
        held:close()
        holder:close()
        client:close()
    end)

    it("names the caller's parent given with client:with_trace_parent", function()
        local rec = recorder()
        local client = support.client{ tracer = rec.tracer }
        local locks = assert(vk.lock_manager(client))
        local request = { name = "http.request" }
        local a, b = client:with_trace_parent(request, function(x, y)
            assert.is_true(client:connect())
            local h = assert(locks:try_lock(support.key("parented")))
            assert.is_true(h:unlock())
            return x + 1, y
        end, 41, "two")
        assert.are.same({ 42, "two" }, { a, b })
        assert.are.equal(request, rec.named("redis.connect")[2].parent)
        assert.are.equal(request, rec.one("redis.lock.try_lock").parent)
        -- Outside the function: no parent; nested calls restore the outer one.
        assert.is_true(client:connect())
        assert.is_nil(rec.named("redis.connect")[3].parent)
        local inner = { name = "inner" }
        client:with_trace_parent(request, function()
            client:with_trace_parent(inner, function() assert.is_true(client:connect()) end)
            assert.is_true(client:connect())
        end)
        assert.are.equal(inner, rec.named("redis.connect")[4].parent)
        assert.are.equal(request, rec.named("redis.connect")[5].parent)
        -- A nil parent is no parent; an error in fn is raised again.
        client:with_trace_parent(nil, function() assert.is_true(client:connect()) end)
        assert.is_nil(rec.named("redis.connect")[6].parent)
        local ok, raised = pcall(client.with_trace_parent, client, request, function()
            error("boom", 0)
        end)
        assert.is_false(ok)
        assert.are.equal("boom", raised)
        assert.is_true(client:connect())
        assert.is_nil(rec.named("redis.connect")[7].parent)
        assert.has_error(function() client:with_trace_parent(request, "not a function") end)
        locks:close()
        client:close()
    end)

    it("names the with_lock span as the parent of a command inside it (trace_commands)", function()
        local rec = recorder()
        local client = support.client{ tracer = rec.tracer, trace_commands = true }
        local locks = assert(vk.lock_manager(client))
        local key = support.key("nested")
        local request = { name = "http.request" }
        client:with_trace_parent(request, function()
            assert.is_true(locks:with_lock(key, function()
                return client:call("SET", key .. ":v", "1") == "OK"
            end))
        end)
        local with_lock = rec.one("redis.lock.with_lock")
        assert.are.equal(request, with_lock.parent)
        local inside
        for _, span in ipairs(rec.named("redis.command")) do
            if span.attributes["db.operation"]:upper() == "SET" then
                inside = span
            end
        end
        assert(inside, "no redis.command span for SET")
        assert.are.equal(with_lock, inside.parent)
        assert.is_true(inside.finished)
        assert.is_nil(inside.err)
        assert.is_true(inside.start_time >= with_lock.start_time and inside.end_time <= with_lock.end_time)
        -- A command's span carries its name, never its arguments.
        for _, text in ipairs(span_texts(inside)) do
            assert.is_nil(text:find(key .. ":v", 1, true))
        end
        -- Without trace_commands there are none.
        local quiet_rec = recorder()
        local quiet = support.client{ tracer = quiet_rec.tracer }
        assert.are.equal("PONG", quiet:call("PING"))
        assert.are.equal(0, #quiet_rec.named("redis.command"))
        quiet:close()
        locks:close()
        client:close()
    end)

    it("never shows the password in an attribute or an error", function()
        local rec = recorder()
        local password = env.VK_TEST_DEFAULT_PASS
        local client = assert(vk.new{
            standalone = env.VK_TEST_ACL_ADDR,
            static_password = { password = password },
            tracer = rec.tracer,
            trace_commands = true,
        })
        assert.are.equal("default", client:call("ACL", "WHOAMI"))
        local locks = assert(vk.lock_manager(client))
        assert.is_true(locks:with_lock(support.key("secret"), function() return true end))
        locks:close()
        client:close()
        local url = vk.from_url("redis://:" .. password .. "@" .. env.VK_TEST_ACL_ADDR, { tracer = rec.tracer })
        assert(url, "from_url with the password failed")
        url:close()
        -- A wrong password fails, and its error does not show it either.
        local wrong = "wrong-" .. password .. "-secret"
        support.fails("AUTH", nil, vk.new{
            standalone = env.VK_TEST_ACL_ADDR,
            static_password = { password = wrong },
            tracer = rec.tracer,
        })
        assert.is_true(#rec.named("redis.connect") >= 3)
        assert.is_string(rec.named("redis.connect")[3].err)
        for _, span in ipairs(rec.spans) do
            for _, text in ipairs(span_texts(span)) do
                assert.is_nil(text:find(password, 1, true), span.name .. " shows the password: " .. text)
            end
        end
    end)

    it("releases every span value once finished", function()
        local live = setmetatable({}, { __mode = "k" })
        local started, finished = 0, 0
        local tracer = {
            start = function(name)
                started = started + 1
                local span = { name = name }
                live[span] = true
                return span
            end,
            finish = function(span)
                assert(live[span], "finish got a span start did not return")
                finished = finished + 1
            end,
        }
        local function run()
            local client = support.client{ tracer = tracer, trace_commands = true }
            local locks = assert(vk.lock_manager(client))
            client:call("PING")
            locks:with_lock(support.key("gc"), function() return true end)
            local h = assert(locks:try_lock(support.key("gc")))
            h:unlock()
            client:with_trace_parent({}, function() client:connect() end)
            locks:close()
            client:close()
        end
        run()
        full_gc()
        local held = held_references()
        for _ = 1, 50 do
            run()
        end
        full_gc()
        assert.is_true(started > 0)
        assert.are.equal(started, finished)
        assert.are.equal(0, count_entries(live))
        -- No reference is left behind in the registry either (the tracer's
        -- functions included, once its clients and lock handles are gone).
        assert.are.equal(held, held_references())
    end)

    it("takes nil and any other value as a span", function()
        local values = { false, 42, "span-id", function() end }
        local seen = {}
        local i = 0
        local client = support.client{
            tracer = {
                start = function()
                    i = i + 1
                    if i == 1 then
                        return nil
                    end
                    return values[(i - 2) % #values + 1]
                end,
                finish = function(span)
                    seen[#seen + 1] = { span }
                end,
            },
        }
        for _ = 1, #values do
            assert.is_true(client:connect())
        end
        client:close()
        assert.are.equal(#values + 2, #seen)
        assert.is_nil(seen[1][1])
        for k, v in ipairs(values) do
            assert.are.equal(v, seen[k + 1][1])
        end
    end)

    it("survives a tracer that raises", function()
        local finished = 0
        local client = support.client{
            tracer = {
                start = function() error("start failure") end,
                finish = function(span, err)
                    finished = finished + 1
                    assert(span == nil)
                    error({ "finish failure" })
                end,
            },
            trace_commands = true,
        }
        assert.are.equal("PONG", client:call("PING"))
        local locks = assert(vk.lock_manager(client))
        assert.are.equal(7, locks:with_lock(support.key("raise"), function() return 7 end))
        local text = support.key("raise-text")
        assert.are.equal("OK", client:call("SET", text, "not a number"))
        support.fails("SERVER", nil, client:call("INCR", text))
        locks:close()
        client:close()
        assert.is_true(finished >= 3)
    end)

    it("reaches the bytes-mode client of vkclient.ngx through the same config", function()
        -- vk._hosted_new is what require "vkclient.ngx" builds its clients
        -- on: the tracer reaches the core, a command's span starts when the
        -- command is queued and finishes when it completes (here: cancelled
        -- by close, as nothing drives its connection outside nginx).
        local rec = recorder()
        local h = assert(vk._hosted_new{ standalone = env.VK_TEST_ADDR, tracer = rec.tracer,
                                         trace_commands = true })
        assert.is_number(h:command("GET", "k"))
        local span = rec.one("redis.command")
        assert.are.equal("get", span.attributes["db.operation"]:lower())
        assert.is_nil(span.finished)
        h:poll_events()
        h:close()
        assert.is_true(span.finished)
        assert.is_string(span.err)
        assert.are.equal(0, #rec.named("redis.connect"))
        assert.has_error(function() vk._hosted_new{ standalone = env.VK_TEST_ADDR, tracer = {} } end,
            "vkclient: tracer.start must be a function, got nil")
    end)

    it("is refused when it is not a table of two functions", function()
        local function refused(tracer, text)
            local ok, err = pcall(vk.new, { standalone = env.VK_TEST_ADDR, tracer = tracer })
            assert.is_false(ok)
            assert.are.equal(text, err)
        end
        local f = function() end
        refused(f, "vkclient: config.tracer must be a table, got function")
        refused({ start = f }, "vkclient: tracer.finish must be a function, got nil")
        refused({ finish = f }, "vkclient: tracer.start must be a function, got nil")
        refused({ start = "x", finish = f }, "vkclient: tracer.start must be a function, got string")
        refused({ start = f, finish = f, stop = f }, "vkclient: tracer: unknown field 'stop'")
        local ok, err = pcall(vk.new, { standalone = env.VK_TEST_ADDR, trace_commands = "yes" })
        assert.is_false(ok)
        assert.are.equal("vkclient: config.trace_commands must be a boolean, got string", err)
        ok, err = pcall(vk.from_url, "redis://" .. env.VK_TEST_ADDR, { tracer = { start = f } })
        assert.is_false(ok)
        assert.are.equal("vkclient: tracer.finish must be a function, got nil", err)
        -- vk.describe reads the tracer too, and forgets it.
        assert.is_string(vk.describe{ standalone = env.VK_TEST_ADDR, tracer = { start = f, finish = f },
                                     trace_commands = true })
    end)
end)

describe("tracer with GCP IAM", function()
    local dir, pid, iam

    local function wait_for(condition, timeout)
        local deadline = support.now() + (timeout or 10)
        while not condition() do
            if support.now() > deadline then
                return false
            end
            support.sleep(0.05)
        end
        return true
    end

    setup(function()
        dir = os.tmpname()
        os.remove(dir)
        assert(support.shell_ok("mkdir -p " .. support.shell_quote(dir)))
        pid = support.spawn("env -u LD_PRELOAD /usr/bin/python3 " .. support.shell_quote(here .. "/../harness/iam_env.py") .. " " ..
            support.shell_quote(dir), dir .. "/iam_env.log")
        assert(wait_for(function() return support.read_file(dir .. "/ready") ~= nil end, 60),
            support.read_file(dir .. "/iam_env.log"))
        iam = {}
        for key, value in support.read_file(dir .. "/ready"):gmatch("([%w_]+)=([^\n]*)") do
            iam[key] = value
        end
    end)

    teardown(function()
        local f = io.open(dir .. "/stop", "w")
        f:close()
        assert(support.wait_pid(pid, 30))
        support.shell_ok("rm -rf " .. support.shell_quote(dir))
    end)

    it("delivers the refresh thread's spans through poll, on the calling coroutine", function()
        local rec = recorder()
        local co = coroutine.create(function()
            local client = assert(vk.new{
                standalone = iam.ADDR,
                tls = { ca_cert_base64 = iam.CA_B64 },
                gcp_iam = {
                    credentials_base64 = iam.CREDENTIALS_B64,
                    service_account = iam.SERVICE_ACCOUNT,
                    endpoint = iam.ENDPOINT,
                    token_lifetime = 3,
                    refresh_every = 1,
                    refresh_check_interval = 0.2,
                },
                tracer = rec.tracer,
            })
            local before = #rec.named("redis.iam_refresh")
            assert.is_true(wait_for(function()
                client:poll()
                return #rec.named("redis.iam_refresh") > before
            end, 10))
            assert.are.equal("PONG", client:call("PING"))
            client:close()
            return coroutine.running()
        end)
        local ok, caller = coroutine.resume(co)
        assert.is_true(ok, tostring(caller))
        local refreshes = rec.named("redis.iam_refresh")
        assert.is_true(#refreshes > 0)
        local queued = refreshes[#refreshes]
        assert.is_true(queued.finished)
        assert.is_nil(queued.parent)
        assert.is_nil(queued.err)
        assert.are.equal(caller, queued.thread)
        assert.is_true(queued.end_time >= queued.start_time)
        for _, span in ipairs(rec.spans) do
            assert.are.equal(caller, span.thread)
            for _, text in ipairs(span_texts(span)) do
                assert.is_nil(text:find(iam.CREDENTIALS_B64, 1, true))
            end
        end
    end)
end)
