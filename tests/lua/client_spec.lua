-- The client API of require "vkclient" against real servers.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()
local env = support.env
local unpack = table.unpack or unpack

-- Reads CLIENT LIST from another connection.
local function client_list(observer)
    local list = assert(observer:call("CLIENT", "LIST"))
    return list
end

-- Whether CLIENT LIST shows the connection with this CLIENT ID.
local function listed(observer, id)
    return ("\n" .. client_list(observer)):find("\nid=" .. id .. " ", 1, true) ~= nil
end

-- Waits until CLIENT LIST no longer shows the connection with this CLIENT ID.
local function wait_until_gone(observer, id)
    local deadline = support.now() + 5
    while support.now() < deadline do
        if not listed(observer, id) then
            return true
        end
        support.sleep(0.02)
    end
    return false
end

describe("module", function()
    it("exposes the version, the null sentinel and one code per status", function()
        assert.matches("^%d+%.%d+%.%d+$", vk.version)
        assert.matches("^%d+%.%d+", vk.hiredis_version)
        assert.is_boolean(vk.resp3_supported)
        assert.are.equal("userdata", type(vk.null))
        assert.are.equal(0, vk.codes.OK)
        assert.are.equal(1, vk.codes.NIL_CLIENT)
        assert.are.equal(2, vk.codes.INVALID_CONFIG)
        assert.are.equal(4, vk.codes.LOCK_NOT_HELD)
        assert.are.equal(14, vk.codes.NIL_LOCK_HANDLE_ON_UNLOCK)
        assert.are.equal(28, vk.codes.SERVER)
        assert.are.equal(29, vk.codes.LOCK_LOST)
        assert.are.equal(30, vk.codes.COMMAND_NOT_ALLOWED)
        local seen = {}
        for name, number in pairs(vk.codes) do
            assert.is_nil(seen[number], "two names for code " .. number)
            seen[number] = name
        end
        for number = 0, 30 do
            assert.is_string(seen[number], "no name for code " .. number)
        end
    end)
end)

describe("client", function()
    local client, observer

    before_each(function()
        client = support.client()
        observer = support.client()
    end)

    after_each(function()
        client:close()
        observer:close()
    end)

    it("runs commands and returns native values", function()
        local key = support.key("basic")
        assert.are.equal("OK", client:call("SET", key, "value"))
        assert.are.equal("value", client:call("GET", key))
        assert.are.equal(1, client:call("DEL", key))
        assert.are.equal("PONG", client:call("PING"))
        assert.are.equal(7, client:call("INCRBY", key, 7))
        assert.are.equal("OK", client:call("SET", key, 1.5))
        assert.are.equal("1.5", client:call("GET", key))
    end)

    it("is binary safe both ways", function()
        local key = support.key("bin\0key\255")
        local value = "a\0b\255\r\n" .. string.rep("\0", 10)
        assert.are.equal("OK", client:call("SET", key, value))
        assert.are.equal(value, client:call("GET", key))
        assert.are.equal(#value, client:call("STRLEN", key))
        local big = string.rep("x\0y", 400000)
        assert.are.equal("OK", client:call("SET", key, big))
        assert.are.equal(big, client:call("GET", key))
    end)

    it("returns vk.null for a nil reply and inside arrays", function()
        local key = support.key("null")
        assert.are.equal(vk.null, client:call("GET", key))
        client:call("SET", key, "v")
        local values = client:call("MGET", key, support.key("missing"), key)
        assert.are.same({ "v", vk.null, "v" }, values)
        assert.are.equal(3, #values)
    end)

    it("converts nested arrays, integers and status replies", function()
        local reply = client:call("EVAL", "return {1, {2, 'x', {}}, redis.status_reply('FINE'), false}", 0)
        assert.are.same({ 1, { 2, "x", {} }, "FINE", vk.null }, reply)
    end)

    it("returns a server error reply as nil, err with the server's text", function()
        local key = support.key("wrongtype")
        client:call("RPUSH", key, "a")
        local err = support.fails("SERVER", nil, client:call("INCR", key))
        assert.matches("^WRONGTYPE ", tostring(err))
        assert.are.equal(vk.codes.SERVER, err.status)
        assert.are.equal(tostring(err), err.message)
        assert.are.equal(vk.error_mt, getmetatable(err))
        support.fails("SERVER", nil, client:call("NOSUCHCOMMAND", "x"))
    end)

    it("takes commands with many arguments", function()
        local key = support.key("many")
        local args = {}
        for i = 1, 300 do
            args[i] = "item" .. i
        end
        assert.are.equal(300, client:call("RPUSH", key, unpack(args)))
        local items = client:call("LRANGE", key, 0, -1)
        assert.are.same(args, items)
    end)

    it("raises on misuse: wrong argument types", function()
        assert.has_error(function() client:call() end)
        assert.has_error(function() client:call("SET", "k", {}) end)
        assert.has_error(function() client:call("SET", "k", true) end)
        assert.has_error(function() client:call("SET", "k", nil) end)
        assert.has_error(function() client.call(nil, "PING") end)
        assert.has_error(function() client.call({}, "PING") end)
        assert.has_error(function() vk.new("127.0.0.1:1") end)
        assert.has_error(function() vk.new{ standalone = 6379 } end)
        assert.has_error(function() vk.new{ standalon = "127.0.0.1:1" } end)
        assert.has_error(function() vk.new{ standalone = env.VK_TEST_ADDR, options = { db = 1.5 } } end)
        assert.has_error(function() vk.new{ standalone = env.VK_TEST_ADDR, options = { read_timeout = "1" } } end)
        assert.has_error(function() vk.new{ standalone = env.VK_TEST_ADDR, options = { timeout = 1 } } end)
        assert.has_error(function() vk.new{ standalone = env.VK_TEST_ADDR, logger = "print" } end)
        assert.has_error(function() vk.new{ standalone = env.VK_TEST_ADDR, refresh_mode = "sometimes" } end)
        assert.has_error(function() vk.new{ cluster = { addresses = { 1 } } } end)
        assert.has_error(function() vk.from_url(nil) end)
    end)

    it("reports the status snapshot", function()
        local status = client:status()
        assert.is_true(status.connected)
        assert.is_false(status.refresh_loop_running)
        assert.is_nil(status.last_refresh_error)
        assert.is_nil(status.last_refresh_at)
        assert.are.equal("standalone", status.mode)
        assert.are.equal(env.VK_TEST_ADDR, status.master_address)
        assert.are.equal(0, status.master_switches)
        assert.are.equal(0, status.slot_map_refreshes)
        assert.are.equal(0, status.moved_redirects)
        assert.are.equal(0, status.ask_redirects)
        assert.are.same({}, status.nodes)
        assert.is_true(client:is_connected())
        assert.is_nil(client:last_refresh_error())
    end)

    it("reconnects with connect() (create, ping, swap)", function()
        assert.is_true(client:connect())
        assert.are.equal("PONG", client:call("PING"))
    end)

    it("reconnects on demand after the server dropped the connection", function()
        assert.is_number(client:call("CLIENT", "ID"))
        observer:call("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        -- A read-only command may be retried by the core; PING is.
        assert.are.equal("PONG", client:call("PING"))
    end)

    it("closes idempotently; a closed client fails with NIL_CLIENT", function()
        client:close()
        client:close()
        assert.is_false(client:is_connected())
        support.fails("NIL_CLIENT", "redis client is nil", client:call("PING"))
        support.fails("NIL_CLIENT", "redis client is nil", client:status())
        support.fails("NIL_CLIENT", "redis client is nil", client:connect())
        support.fails("NIL_CLIENT", "redis client is nil", client:tick())
        support.fails("NIL_CLIENT", "redis client is nil", client:pipeline())
        assert.are.equal(0, client:poll())
        assert.matches("closed", tostring(client))
    end)

    it("closes a forgotten client when it is garbage collected", function()
        local id
        do
            local forgotten = support.client()
            id = forgotten:call("CLIENT", "ID")
            assert.is_true(listed(observer, id))
        end
        collectgarbage("collect")
        collectgarbage("collect")
        assert.is_true(wait_until_gone(observer, id))
    end)

    if _VERSION == "Lua 5.4" then
        it("closes a to-be-closed client at the end of its scope (Lua 5.4)", function()
            local chunk = assert(load([[
                local vk, addr = ...
                local c <close> = assert(vk.new{ standalone = addr })
                return c, c:call("CLIENT", "ID")
            ]]))
            local closed, id = chunk(vk, env.VK_TEST_ADDR)
            assert.matches("closed", tostring(closed))
            assert.is_true(wait_until_gone(observer, id))
        end)
    end

    it("runs pipelines: results in order, error replies kept in place", function()
        local key = support.key("pipe")
        local pl = client:pipeline()
        assert.are.equal(pl, pl:call("SET", key, "1"))
        pl:call("INCR", key):call("LPUSH", key, "x"):call("GET", key):call("GET", support.key("none"))
        assert.are.equal(5, pl:length())
        local results = assert(pl:run())
        assert.are.equal(5, #results)
        assert.are.equal("OK", results[1])
        assert.are.equal(2, results[2])
        assert.are.equal(vk.error_mt, getmetatable(results[3]))
        assert.are.equal("SERVER", results[3].code)
        assert.matches("^WRONGTYPE", tostring(results[3]))
        assert.are.equal("2", results[4])
        assert.are.equal(vk.null, results[5])
        -- Emptied for reuse.
        assert.are.equal(0, pl:length())
        pl:call("GET", key)
        assert.are.same({ "2" }, pl:run())
    end)

    it("runs a pipeline of 1000 commands", function()
        local key = support.key("pipe1000")
        local pl = client:pipeline()
        for _ = 1, 1000 do
            pl:call("INCR", key)
        end
        local results = assert(pl:run())
        assert.are.equal(1000, #results)
        assert.are.equal(1000, results[1000])
    end)

    it("fails a pipeline whose client was closed with NIL_CLIENT", function()
        local pl = client:pipeline()
        pl:call("PING")
        client:close()
        support.fails("NIL_CLIENT", "redis client is nil", pl:run())
        pl:close()
        pl:close()
    end)
end)

describe("configuration", function()
    it("connects from a URL, with the db it names", function()
        local addr = env.VK_TEST_ADDR
        local client = assert(vk.from_url("redis://" .. addr .. "/2"))
        assert.matches("db=2", client:call("CLIENT", "INFO"))
        client:close()
        local with_options = assert(vk.from_url("redis://" .. addr .. "/3", { options = { read_timeout = 1.5 } }))
        assert.matches("db=3", with_options:call("CLIENT", "INFO"))
        with_options:close()
        assert.has_error(function() vk.from_url("redis://" .. addr, { standalone = addr }) end)
    end)

    it("rejects a bad URL with INVALID_CONFIG", function()
        local err = support.fails("INVALID_CONFIG", nil, vk.from_url("http://nope"))
        assert.matches("^invalid redis config: ", tostring(err))
    end)

    it("selects the db and applies options", function()
        local client = assert(vk.new{
            standalone = env.VK_TEST_ADDR,
            options = { db = 4, pool_size = 2, read_timeout = 1.0, write_timeout = 1.0, dial_timeout = 1.0,
                        pool_timeout = 0.5, max_retries = -1, min_retry_backoff = 0.01, max_retry_backoff = 0.1,
                        min_idle_conns = 0, protocol = 2 },
        })
        assert.matches("db=4", client:call("CLIENT", "INFO"))
        client:close()
    end)

    it("authenticates with a static password (default user and ACL user)", function()
        local default = assert(vk.new{
            standalone = env.VK_TEST_ACL_ADDR,
            static_password = { password = env.VK_TEST_DEFAULT_PASS },
        })
        assert.are.equal("default", default:call("ACL", "WHOAMI"))
        default:close()
        local user = assert(vk.new{
            standalone = env.VK_TEST_ACL_ADDR,
            static_password = vk.static_password{ username = env.VK_TEST_ACL_USER, password = env.VK_TEST_ACL_PASS },
        })
        assert.are.equal(env.VK_TEST_ACL_USER, user:call("ACL", "WHOAMI"))
        user:close()
    end)

    it("fails with AUTH on a wrong password, without showing it", function()
        local secret = "wrong-secret-" .. math.random(1e6)
        local err = support.fails("AUTH", nil, vk.new{
            standalone = env.VK_TEST_ACL_ADDR,
            static_password = { username = env.VK_TEST_ACL_USER, password = secret },
        })
        assert.is_nil(tostring(err):find(secret, 1, true))
    end)

    it("connects over TLS with the CA, and refuses a server signed by another CA", function()
        local client = assert(vk.new{
            standalone = env.VK_TEST_TLS_ADDR,
            tls = { ca_cert_base64 = env.VK_TEST_CA_B64, min_version = "1.2" },
        })
        assert.are.equal("PONG", client:call("PING"))
        client:close()
        local tls13 = assert(vk.new{
            standalone = env.VK_TEST_TLS_ADDR,
            tls = { ca_cert_base64 = env.VK_TEST_CA_B64, min_version = 1.3 },
        })
        assert.are.equal("PONG", tls13:call("PING"))
        tls13:close()
        support.fails("TLS", nil, vk.new{
            standalone = env.VK_TEST_TLS_ADDR,
            tls = { ca_cert_base64 = env.VK_TEST_OTHER_CA_B64 },
        })
        assert.has_error(function()
            vk.new{ standalone = env.VK_TEST_TLS_ADDR, tls = { ca_cert_base64 = env.VK_TEST_CA_B64, min_version = "9" } }
        end)
    end)

    it("speaks RESP3 when hiredis can, else names the hiredis version", function()
        local client, err = vk.new{ standalone = env.VK_TEST_ADDR, options = { protocol = 3 } }
        if vk.resp3_supported then
            assert.truthy(client, tostring(err))
            local info = tostring(client:call("CLIENT", "INFO"))
            assert.truthy(info:find(" resp=3 ", 1, true), info)
            client:close()
        else
            support.fails("INVALID_CONFIG", nil, client, err)
            assert.truthy(tostring(err):find(vk.hiredis_version, 1, true), tostring(err))
        end
    end)

    it("prints auth tables and configs without secrets", function()
        local secret, creds = "pw-" .. math.random(1e6), "Y3JlZHMtc2VjcmV0"
        local sp = { password = secret }
        support.fails("AUTH", nil, vk.new{ standalone = env.VK_TEST_ACL_ADDR, static_password = sp })
        assert.are.equal("StaticPasswordAuth{Password:REDACTED}", tostring(sp))
        assert.are.equal("StaticPasswordAuth{Password:REDACTED}", tostring(vk.static_password{ password = secret }))
        local iam = vk.gcp_iam{ credentials_base64 = creds, service_account = "sa@project.iam.gserviceaccount.com" }
        assert.are.equal("GCPIAMAuth{ServiceAccount:sa@project.iam.gserviceaccount.com, CredentialsBase64:REDACTED}",
            tostring(iam))
        local config = vk.config{ standalone = env.VK_TEST_ADDR, static_password = { password = secret } }
        local text = tostring(config)
        assert.matches("StaticPasswordAuth{Password:REDACTED}", text, 1, true)
        assert.is_nil(text:find(secret, 1, true))
        local described = vk.describe{ standalone = env.VK_TEST_ADDR, tls = { ca_cert_base64 = env.VK_TEST_CA_B64 },
                                       gcp_iam = iam }
        assert.is_nil(described:find(creds, 1, true))
        assert.matches("CredentialsBase64:REDACTED", described, 1, true)
        -- An auth table that already has a metatable keeps it.
        local own = setmetatable({ password = secret }, { __tostring = function() return "mine" end })
        vk.describe{ standalone = env.VK_TEST_ADDR, static_password = own }
        assert.are.equal("mine", tostring(own))
    end)
end)

describe("callbacks", function()
    it("delivers logs and metrics on the calling coroutine", function()
        local logs, metrics = {}, {}
        local caller
        local function logger(level, message, fields)
            logs[#logs + 1] = { level = level, message = message, fields = fields, thread = coroutine.running() }
        end
        local function sink(name, kind, value, labels)
            metrics[#metrics + 1] = { name = name, kind = kind, value = value, labels = labels }
        end
        local co = coroutine.create(function()
            caller = coroutine.running()
            local client = assert(vk.new{ standalone = env.VK_TEST_ADDR, logger = logger, metrics = sink })
            client:call("PING")
            client:close()
        end)
        assert(coroutine.resume(co))
        local messages = {}
        for _, entry in ipairs(logs) do
            messages[entry.message] = entry
            assert.are.equal(caller, entry.thread)
            assert.is_table(entry.fields)
        end
        assert.is_table(messages["connecting to Redis/Valkey"])
        assert.is_table(messages["connected to Redis/Valkey in standalone mode"])
        local warning = messages["redis connection established without TLS; consider configuring TLS for production use"]
        assert.are.equal("warn", warning.level)
        assert.are.equal("info", messages["connecting to Redis/Valkey"].level)
        for _, m in ipairs(metrics) do
            assert.is_string(m.name)
            assert.is_number(m.value)
            assert.is_table(m.labels)
        end
    end)

    it("counts reconnections and connect failures through the metrics sink", function()
        local metrics = {}
        local function sink(name, kind, value, labels)
            metrics[#metrics + 1] = { name = name, kind = kind, value = value, labels = labels }
        end
        local function find(name, label, value)
            for _, m in ipairs(metrics) do
                if m.name == name and m.labels[label] == value then
                    return m
                end
            end
        end
        local observer = support.client()
        local client = assert(vk.new{ standalone = env.VK_TEST_ADDR, metrics = sink })
        observer:call("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        assert.are.equal("PONG", client:call("PING"))
        local reconnected = find("redis_reconnections_total", "result", "success")
        assert.is_table(reconnected)
        assert.are.equal("counter", reconnected.kind)
        assert.are.equal(1, reconnected.value)
        client:close()
        observer:close()

        support.fails("IO", nil, vk.new{ standalone = "127.0.0.1:1", metrics = sink })
        local failed = find("redis_connection_failures_total", "operation", "connect")
        assert.is_table(failed)
        assert.are.equal("counter", failed.kind)
    end)

    it("survives a logger that raises", function()
        local calls = 0
        local client = assert(vk.new{
            standalone = env.VK_TEST_ADDR,
            logger = function()
                calls = calls + 1
                error("logger failure")
            end,
        })
        assert.are.equal("PONG", client:call("PING"))
        assert.is_true(calls > 0)
        client:close()
    end)

    it("polls queued events and ticks in driven mode", function()
        local client = assert(vk.new{ standalone = env.VK_TEST_ADDR, refresh_mode = "driven", logger = function() end })
        assert.is_number(client:poll())
        assert.is_number(client:poll(10))
        assert.is_true(client:tick())
        assert.is_false(client:status().refresh_loop_running)
        client:close()
    end)

    it("sends misuse diagnostics to the package logger, and stops when unset", function()
        local seen = {}
        vk.set_package_logger(function(level, message, fields)
            seen[#seen + 1] = { level = level, message = message, fields = fields }
        end)
        local client = support.client()
        client:close()
        client:is_connected()
        assert.is_true(#seen > 0)
        local found = false
        for _, entry in ipairs(seen) do
            found = found or tostring(entry.message):find("redis client is nil", 1, true) ~= nil
                or (entry.fields and tostring(entry.fields.error or ""):find("redis client is nil", 1, true) ~= nil)
        end
        assert.is_true(found)
        vk.set_package_logger(nil)
        local before = #seen
        client:is_connected()
        assert.are.equal(before, #seen)
        assert.has_error(function() vk.set_package_logger("print") end)
    end)
end)
