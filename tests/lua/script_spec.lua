-- Scripts through the Lua binding: vk.script(source) and
-- client:run_script(script, keys, args), on the plain server and on the
-- Cluster of `vkharness.py run --topologies`. The first run after SCRIPT
-- FLUSH loads the script (EVALSHA answered NOSCRIPT, then EVAL), later runs
-- are EVALSHA alone (INFO commandstats), a script's error reply is
-- nil, err, keys and args are binary safe, a flush between runs is
-- recovered from, keys route the run to their master, keys of two slots
-- fail as CROSSSLOT, and misuse raises.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()

local SET_GET = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"
local FAILS = "return redis.error_reply('MYERR the script says no')"
local ECHO = "return {KEYS[1], ARGV[1], #ARGV[1]}"
local CROSSSLOT = "invalid argument: CROSSSLOT keys in request don't hash to the same slot"

local nodes = {}
local function node(address)
    if not nodes[address] then
        nodes[address] = assert(vk.new{ standalone = address, options = { read_timeout = 2.0 } })
    end
    return nodes[address]
end

-- cmdstat_<command> calls on the node at address (0 when never called).
local function calls(address, command)
    local info = assert(node(address):call("INFO", "commandstats"))
    return tonumber(info:match("cmdstat_" .. command .. ":calls=(%d+)")) or 0
end

local function exists(address, sha)
    return assert(node(address):call("SCRIPT", "EXISTS", sha))[1]
end

describe("scripts", function()
    local addr = support.env.VK_TEST_ADDR
    local client

    before_each(function()
        client = support.client()
    end)

    after_each(function()
        client:close()
    end)

    teardown(function()
        for _, c in pairs(nodes) do
            c:close()
        end
    end)

    it("computes the SHA-1 once", function()
        local script = vk.script("return 1")
        assert.are.equal("e0e1f9fabfc9d4800c877a703b823ac0578ff8db", script:sha())
        assert.are.equal("return 1", script:source())
        assert.are.equal("vkclient.script(e0e1f9fabfc9d4800c877a703b823ac0578ff8db)", tostring(script))
        assert.are.equal(1, client:run_script(script))
        assert.has_error(function() vk.script() end)
        assert.has_error(function() vk.script({}) end)
    end)

    it("loads the script on first use, then runs EVALSHA alone", function()
        local key = support.key("script")
        assert(node(addr):call("SCRIPT", "FLUSH"))
        local script = vk.script(SET_GET)
        assert.are.equal(0, exists(addr, script:sha()))
        local evals = calls(addr, "eval")
        assert.are.equal("one", client:run_script(script, { key }, { "one" }))
        assert.are.equal(1, exists(addr, script:sha()))
        assert.are.equal(evals + 1, calls(addr, "eval"))
        local evalshas = calls(addr, "evalsha")
        for i = 1, 3 do
            assert.are.equal(tostring(i), client:run_script(script, { key }, { i }))
        end
        assert.are.equal(evals + 1, calls(addr, "eval"))
        assert.are.equal(evalshas + 3, calls(addr, "evalsha"))
    end)

    it("returns a script's error reply as nil, err", function()
        local script = vk.script(FAILS)
        for _ = 1, 2 do -- by EVAL, then by EVALSHA
            support.fails("SERVER", "MYERR the script says no", client:run_script(script))
        end
    end)

    it("is binary safe", function()
        local key = support.key("bin") .. "\0\255"
        local arg = "\0\r\n\254 arg"
        assert.are.same({ key, arg, #arg }, client:run_script(vk.script(ECHO), { key }, { arg }))
    end)

    it("recovers from a SCRIPT FLUSH between runs", function()
        local key = support.key("flush")
        local script = vk.script(SET_GET)
        assert.are.equal("1", client:run_script(script, { key }, { "1" }))
        assert(node(addr):call("SCRIPT", "FLUSH"))
        local evals = calls(addr, "eval")
        assert.are.equal("2", client:run_script(script, { key }, { "2" }))
        assert.are.equal(evals + 1, calls(addr, "eval"))
    end)

    it("refuses misuse and fails on a closed client", function()
        local script = vk.script("return 1")
        assert.has_error(function() client:run_script("return 1") end)
        assert.has_error(function() client:run_script(script, "k") end)
        assert.has_error(function() client:run_script(script, { {} }) end)
        assert.has_error(function() client.run_script(nil, script) end)
        client:close()
        support.fails("NIL_CLIENT", "redis client is nil", client:run_script(script))
    end)
end)

describe("scripts in a cluster", function()
    local addresses = support.split(support.env.VK_TEST_CLUSTER_ADDRS)
    local client

    setup(function()
        client = assert(vk.new{ cluster = { addresses = addresses }, options = { read_timeout = 2.0 } })
    end)

    teardown(function()
        client:close()
        for _, c in pairs(nodes) do
            c:close()
        end
    end)

    -- { ["host:port"] = a key that master serves }
    local function key_per_master()
        local owners, count, i = {}, 0, 0
        local prefix = support.key("cscript")
        local map = assert(node(addresses[1]):call("CLUSTER", "SLOTS"))
        while count < #addresses do
            local key = prefix .. ":" .. i
            local slot = assert(node(addresses[1]):call("CLUSTER", "KEYSLOT", key))
            for _, range in ipairs(map) do
                local owner = range[3][1] .. ":" .. range[3][2]
                if range[1] <= slot and slot <= range[2] and not owners[owner] then
                    owners[owner] = key
                    count = count + 1
                end
            end
            i = i + 1
        end
        return owners
    end

    it("routes each run by its keys; each master loads the script once", function()
        local owners = key_per_master()
        local evals = {}
        for master in pairs(owners) do
            assert(node(master):call("SCRIPT", "FLUSH"))
            evals[master] = calls(master, "eval")
        end
        local script = vk.script(SET_GET)
        for round = 1, 2 do
            for master, key in pairs(owners) do
                local value = master .. "-" .. round
                assert.are.equal(value, client:run_script(script, { key }, { value }))
                assert.are.equal(value, node(master):call("GET", key))
            end
        end
        for master in pairs(owners) do
            assert.are.equal(1, exists(master, script:sha()))
            assert.are.equal(evals[master] + 1, calls(master, "eval"))
        end
        support.fails("INVALID_ARGUMENT", CROSSSLOT, client:run_script(script, { "{a}x", "{b}y" }))
        assert.are.equal(7, client:run_script(vk.script("return 7")))
    end)
end)
