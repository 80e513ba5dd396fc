-- Transactions and sessions through the Lua binding: transaction
-- pipelines, sessions in lua-resty-redis's shape (watch, multi, exec giving
-- vk.null when a watched key changed, discard), client:transaction retries,
-- what a session leaves behind (SELECT, WATCH, CLIENT SETNAME), a broken
-- session, then a session over Sentinel and the slot rules of a Cluster
-- (the harness's --topologies group and cluster).
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()

describe("transactions and sessions", function()
    local client

    before_each(function()
        client = support.client()
    end)

    after_each(function()
        client:close()
    end)

    -- One pooled connection: a session's is then the next caller's.
    local function small_client(db)
        return support.client{ options = { db = db or 0, pool_size = 1, read_timeout = 2.0 } }
    end

    it("runs a transaction pipeline and returns EXEC's results", function()
        local key = support.key("txpipe")
        local p = assert(client:pipeline{ transaction = true })
        p:call("SET", key, "1"):call("INCR", key):call("GET", key)
        local results = assert(p:run())
        assert.are.same({ "OK", 2, "2" }, results)
        assert.are.same({}, assert(p:run()))
        support.fails("COMMAND_NOT_ALLOWED", "command not allowed on a shared connection: MULTI, "
            .. "EXEC and DISCARD in a transaction pipeline: exec sends MULTI and EXEC itself",
            p:call("MULTI"))
        p:run()
        -- A command refused when queued discards all of it.
        p:call("SET", key, "lost"):call("SET", key)
        local err = support.fails("SERVER", nil, p:run())
        assert.truthy(tostring(err):find("transaction discarded: command 2 was refused", 1, true))
        assert.are.equal("2", client:call("GET", key))
        assert.has_error(function() client:pipeline{ transactions = true } end)
        p:close()
    end)

    it("keeps queued commands invisible to a second client until EXEC", function()
        local key = support.key("visible")
        local other = support.client()
        local s = assert(client:session())
        assert.are.equal("OK", s:multi())
        assert.are.equal("QUEUED", s:call("SET", key, "1"))
        assert.are.equal("QUEUED", s:call("SET", key .. ":b", "1"))
        assert.are.equal(vk.null, other:call("GET", key))
        assert.are.equal(vk.null, other:call("GET", key .. ":b"))
        assert.are.same({ "OK", "OK" }, s:exec())
        assert.are.equal("1", other:call("GET", key))
        assert.are.equal("1", other:call("GET", key .. ":b"))
        s:close()
        other:close()
    end)

    it("gives vk.null for an EXEC that a watched key aborted", function()
        local key = support.key("watch")
        client:call("SET", key, "0")
        local s = assert(client:session())
        assert.are.equal("OK", s:watch(key))
        client:call("SET", key, "theirs")
        s:multi()
        s:call("SET", key, "mine")
        assert.are.equal(vk.null, s:exec())
        assert.are.equal("theirs", client:call("GET", key))
        -- A transaction pipeline on the session: the same.
        s:watch(key)
        client:call("SET", key, "again")
        local p = client:pipeline{ transaction = true }
        p:call("SET", key, "mine")
        assert.are.equal(vk.null, s:run(p))
        s:watch(key)
        p:call("SET", key, "mine")
        assert.are.same({ "OK" }, s:run(p))
        assert.are.equal("mine", client:call("GET", key))
        s:close()
        assert.is_true(s:is_closed())
        assert.has_error(function() s:call("PING") end, "vkclient: the session is closed")
    end)

    it("retries client:transaction until it wins, then gives up after the retries", function()
        local key = support.key("tx")
        client:call("SET", key, "10")
        local calls = 0
        local results = client:transaction(function(s)
            calls = calls + 1
            local value = tonumber(s:call("GET", key))
            if calls < 3 then
                client:call("SET", key, tostring(value + 1))   -- a concurrent writer, twice
            end
            s:multi()
            s:call("SET", key, value * 2)
        end, key)
        assert.are.same({ "OK" }, results)
        assert.are.equal(3, calls)
        assert.are.equal("24", client:call("GET", key))

        calls = 0
        local err = support.fails("WATCH_CONFLICT", "transaction aborted: a watched key changed",
            client:transaction(function(s)
                calls = calls + 1
                client:call("INCR", key)
                s:multi()
                s:call("SET", key, "never")
            end, { key }, { retries = 2 }))
        assert.are.equal(31, err.status)
        assert.are.equal(3, calls)
        -- fn's error is raised again; no multi: an empty table.
        assert.has_error(function()
            client:transaction(function() error("boom") end, key)
        end)
        assert.are.same({}, client:transaction(function() end, key))
        assert.has_error(function() client:transaction(function() end, key, { retries = -1 }) end)
    end)

    it("discards", function()
        local key = support.key("discard")
        local s = assert(client:session())
        s:multi()
        assert.are.equal("QUEUED", s:call("SET", key, "x"))
        assert.are.equal("OK", s:discard())
        assert.are.equal(vk.null, s:call("GET", key))
        s:close()
        assert.are.equal(vk.null, client:call("GET", key))
    end)

    it("does not leak a session's SELECT, WATCH or name into the pool", function()
        local key = support.key("leak")
        local c = small_client(2)
        c:call("SET", key, "two")
        local s = assert(c:session())
        local id = s:call("CLIENT", "ID")
        assert.are.equal("OK", s:call("SELECT", 5))
        s:call("SET", key, "five")
        s:watch(key)
        s:close()
        assert.are.equal(id, c:call("CLIENT", "ID"))
        assert.are.equal("two", c:call("GET", key))
        -- The WATCH was undone: a transaction on the same connection wins.
        client:call("SET", key, "changed")
        s = assert(c:session())
        assert.are.equal(id, s:call("CLIENT", "ID"))
        s:multi()
        s:call("SET", key, "mine")
        assert.are.same({ "OK" }, s:exec())
        s:call("CLIENT", "SETNAME", "pinned")
        s:close()
        assert.are_not.equal(id, c:call("CLIENT", "ID"))
        assert.are.equal(vk.null, c:call("CLIENT", "GETNAME"))
        s = assert(c:session())
        s:call("SELECT", 5)
        s:call("DEL", key)
        s:close()
        c:close()
    end)

    it("never reuses a broken session's connection", function()
        local c = small_client()
        local s = assert(c:session())
        local id = s:call("CLIENT", "ID")
        client:call("CLIENT", "KILL", "ID", id)
        support.fails("IO", nil, s:call("PING"))
        local err = support.fails("IO", nil, s:call("PING"))
        assert.truthy(tostring(err):find("the session's connection failed", 1, true))
        s:close()
        s:close()
        assert.are_not.equal(id, c:call("CLIENT", "ID"))
        support.fails("COMMAND_NOT_ALLOWED", nil, assert(c:session()):call("SUBSCRIBE", "ch"))
        c:close()
    end)
end)

describe("transactions over Sentinel and Cluster", function()
    it("opens a Sentinel session on the master", function()
        local c = assert(vk.new{ sentinel = {
            addresses = support.split(support.env.VK_TEST_SENTINEL_ADDRS),
            master_name = support.env.VK_TEST_SENTINEL_MASTER } })
        local key = support.key("sentinel")
        local s = assert(c:session())
        assert.are.equal("master", s:call("ROLE")[1])
        s:watch(key)
        s:multi()
        s:call("SET", key, "1")
        s:call("INCR", key)
        assert.are.same({ "OK", 2 }, s:exec())
        s:close()
        c:close()
    end)

    it("keeps a Cluster session and transaction in one slot", function()
        local c = assert(vk.new{ cluster = {
            addresses = support.split(support.env.VK_TEST_CLUSTER_ADDRS) } })
        support.fails("INVALID_ARGUMENT", "invalid argument: a session in cluster mode needs a "
            .. "key: it runs on the master of that key's hash slot", c:session())
        local a, b = "{lua:tx}a", "{lua:tx}b"
        local s = assert(c:session(a))
        s:watch(a, b)
        s:multi()
        s:call("SET", a, "1")
        s:call("SET", b, "2")
        assert.are.same({ "OK", "OK" }, s:exec())
        local err = support.fails("INVALID_ARGUMENT", nil, s:call("GET", "elsewhere"))
        assert.truthy(tostring(err):find("the session is pinned to the master of hash slot", 1, true))
        s:close()
        local p = c:pipeline{ transaction = true }
        p:call("INCR", a):call("GET", "elsewhere")
        err = support.fails("INVALID_ARGUMENT", nil, p:run())
        assert.truthy(tostring(err):find("CROSSSLOT keys in request don't hash to the same slot", 1, true))
        assert.are.equal("1", c:call("GET", a))
        assert.are.same({ 2 }, c:transaction(function(tx)
            tx:multi()
            tx:call("INCR", a)
        end, { a, b }))
        c:close()
    end)
end)
