-- client:scan_iter, hscan_iter, sscan_iter and zscan_iter (generic-for
-- iterators) against the plain server and the Cluster the harness starts
-- with --topologies, where scan_iter walks every master.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()

local KEYS, MEMBERS = 1000, 1000

local function cluster_nodes()
    local value = os.getenv("VK_TEST_CLUSTER_ADDRS")
    if value == nil or value == "" then
        error("VK_TEST_CLUSTER_ADDRS is not set: run the Lua specs under "
            .. "`vkharness.py run --topologies`", 0)
    end
    return support.split(value)
end

-- KEYS strings, 20 hashes and three big collections under prefix.
local function fill(client, prefix)
    local big = { hash = prefix .. "{big}hash", set = prefix .. "{big}set", zset = prefix .. "{big}zset" }
    local p = assert(client:pipeline())
    for i = 0, KEYS - 1 do
        p:call("SET", prefix .. i, i)
    end
    for i = 0, 19 do
        p:call("HSET", prefix .. "h" .. i, "f", i)
    end
    for i = 0, MEMBERS - 1 do
        p:call("HSET", big.hash, "m" .. i, "v" .. i)
        p:call("SADD", big.set, "m" .. i)
        p:call("ZADD", big.zset, i .. ".5", "m" .. i)
    end
    local replies = assert(p:run())
    assert.are.equal(KEYS + 20 + 3 * MEMBERS, #replies)
    return big
end

local function collect(iterator)
    local seen, n = {}, 0
    for item in assert(iterator) do
        if not seen[item] then
            n = n + 1
        end
        seen[item] = true
    end
    return seen, n
end

local function check_scans(client, prefix, big)
    local seen, n = collect(client:scan_iter{ match = prefix .. "*", count = 100 })
    for i = 0, KEYS - 1 do
        assert(seen[prefix .. i], prefix .. i)
    end
    assert.are.equal(KEYS + 20 + 3, n)

    seen, n = collect(client:scan_iter{ match = prefix .. "1?" })
    assert.are.equal(10, n)
    for i = 0, 9 do
        assert(seen[prefix .. "1" .. i])
    end
    seen, n = collect(client:scan_iter{ match = prefix .. "*", type = "hash" })
    assert.are.equal(21, n)
    assert(seen[big.hash] and seen[prefix .. "h0"] and seen[prefix .. "h19"])

    local fields, count = {}, 0
    for field, value in assert(client:hscan_iter(big.hash, { count = 50 })) do
        if not fields[field] then
            count = count + 1
        end
        fields[field] = value
    end
    assert.are.equal(MEMBERS, count)
    for i = 0, MEMBERS - 1 do
        assert.are.equal("v" .. i, fields["m" .. i])
    end

    seen, n = collect(client:sscan_iter(big.set))
    assert.are.equal(MEMBERS, n)
    assert(seen["m0"] and seen["m999"])

    local scores = {}
    count = 0
    for member, score in assert(client:zscan_iter(big.zset)) do
        assert.are.equal("number", type(score))
        if not scores[member] then
            count = count + 1
        end
        scores[member] = score
    end
    assert.are.equal(MEMBERS, count)
    assert.are.equal(7.5, scores["m7"])
    assert.are.equal(999.5, scores["m999"])

    local matched = {}
    for field, value in assert(client:hscan_iter(big.hash, { match = "m99*" })) do
        matched[#matched + 1] = field .. "=" .. value
    end
    assert.are.equal(11, #matched)

    seen, n = collect(client:sscan_iter(prefix .. "missing"))
    assert.are.equal(0, n)
end

describe("scan iterators (standalone)", function()
    local client

    before_each(function()
        client = support.client()
    end)

    after_each(function()
        client:close()
    end)

    it("returns every key, filters with match and type, and walks big collections", function()
        local prefix = support.key("scan") .. ":"
        check_scans(client, prefix, fill(client, prefix))
    end)

    it("fetches a page only when the previous one is used up", function()
        local prefix = support.key("lazy") .. ":"
        for i = 1, 30 do
            assert(client:call("SET", prefix .. i, i))
        end
        local iterator = assert(client:scan_iter{ match = prefix .. "*", count = 5 })
        local first = iterator()
        assert.are.equal(prefix, first:sub(1, #prefix))
        local seen, n = { [first] = true }, 1
        for key in iterator do
            if not seen[key] then
                n = n + 1
            end
            seen[key] = true
        end
        assert.are.equal(30, n)
        assert.is_nil(iterator())   -- done: stays done
    end)

    it("refuses bad options: nil, err for values, an error for types", function()
        support.fails("INVALID_ARGUMENT", "invalid argument: scan count cannot be negative",
            client:scan_iter{ count = -1 })
        support.fails("INVALID_ARGUMENT", "invalid argument: scan type cannot be empty",
            client:scan_iter{ type = "" })
        assert.has_error(function() client:scan_iter{ count = 0 } end)
        assert.has_error(function() client:scan_iter{ count = "10" } end)
        assert.has_error(function() client:scan_iter{ pattern = "x" } end)
        assert.has_error(function() client:hscan_iter() end)
    end)

    it("raises the error object when a page fails", function()
        local key = support.key("string")
        assert(client:call("SET", key, "x"))
        local ok, err = pcall(function()
            for _ in assert(client:hscan_iter(key)) do end
        end)
        assert.is_false(ok)
        assert.are.equal(vk.error_mt, getmetatable(err))
        assert.are.equal("SERVER", err.code)
        assert.are.equal("server error reply: HSCAN: WRONGTYPE", tostring(err):sub(1, 36))
    end)

    it("fails nil, err on a closed client", function()
        local c = support.client()
        c:close()
        support.fails("NIL_CLIENT", "redis client is nil", c:scan_iter())
    end)
end)

describe("scan iterators (cluster)", function()
    it("walks every master", function()
        local nodes = cluster_nodes()
        local client = assert(vk.new{ cluster = { addresses = nodes } })
        local prefix = support.key("scan-cluster") .. ":"
        local big = fill(client, prefix)
        -- The keys are on every master ...
        for _, address in ipairs(nodes) do
            local node = assert(vk.new{ standalone = address })
            local page = assert(node:call("SCAN", "0", "MATCH", prefix .. "*", "COUNT", "5000"))
            assert(#page[2] > 0, address)
            node:close()
        end
        -- ... and the walk finds each of them.
        check_scans(client, prefix, big)
        client:close()
    end)
end)
