-- Sentinel and Cluster through require "vkclient", against the Sentinel group
-- and the Cluster the harness starts with --topologies: routing to the master
-- the sentinels name and to each key's slot owner (checked on the nodes
-- themselves with plain standalone clients), the status table, hash tags and
-- the cross-slot refusal, pipelines across masters, locks, and a Sentinel
-- failover under a steady stream of writes with one client that is never
-- re-created.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()

local CROSSSLOT_TEXT = "invalid argument: CROSSSLOT keys in request don't hash to the same slot"
local TOTAL_SLOTS = 16384

-- The suite is always run with --topologies: a missing variable is a broken
-- setup, so it fails loudly instead of skipping the tests.
local function topology_env(name)
    local value = os.getenv(name)
    if value == nil or value == "" then
        error(name .. " is not set: run the Lua specs under "
            .. "`vkharness.py run --topologies`, which starts the Sentinel group and the Cluster", 0)
    end
    return value
end

local split = support.split

local SENTINELS = split(topology_env("VK_TEST_SENTINEL_ADDRS"))
local MASTER_NAME = topology_env("VK_TEST_SENTINEL_MASTER")
local CLUSTER_NODES = split(topology_env("VK_TEST_CLUSTER_ADDRS"))

-- Polls predicate until it holds; the time it first held, or nil.
local function wait_until(predicate, timeout, step)
    local deadline = support.now() + timeout
    repeat
        if predicate() then
            return support.now()
        end
        support.sleep(step or 0.02)
    until support.now() > deadline
    return nil
end

local function is_error_object(err)
    return type(err) == "table" and getmetatable(err) == vk.error_mt
        and type(err.code) == "string" and vk.codes[err.code] ~= nil
end

-- Plain standalone clients on single nodes (sentinels, data nodes, cluster
-- masters): they look at what is really stored where, without any of the
-- routing under test. One per address, closed by close_nodes().
local nodes = {}

local function node(address)
    if not nodes[address] then
        nodes[address] = assert(vk.new{ standalone = address, options = { read_timeout = 2.0 } })
    end
    return nodes[address]
end

local function close_nodes()
    for address, client in pairs(nodes) do
        client:close()
        nodes[address] = nil
    end
end

-- ---------------------------------------------------------------------------
-- Sentinel helpers
-- ---------------------------------------------------------------------------

-- The master one sentinel names, as "host:port" (nil, err if it cannot say).
local function named_by(sentinel)
    local reply, err = node(sentinel):call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
    if type(reply) ~= "table" then
        return nil, err
    end
    return reply[1] .. ":" .. reply[2]
end

-- The master every sentinel names; nil while they disagree (mid failover).
local function named_master()
    local agreed
    for _, sentinel in ipairs(SENTINELS) do
        local address = named_by(sentinel)
        if address == nil or (agreed ~= nil and address ~= agreed) then
            return nil
        end
        agreed = address
    end
    return agreed
end

-- The replicas the first sentinel knows, as "host:port".
local function replica_addresses()
    local replicas = assert(node(SENTINELS[1]):call("SENTINEL", "REPLICAS", MASTER_NAME))
    local addresses = {}
    for _, flat in ipairs(replicas) do
        local fields = {}
        for i = 1, #flat, 2 do
            fields[flat[i]] = flat[i + 1]
        end
        addresses[#addresses + 1] = fields.ip .. ":" .. fields.port
    end
    table.sort(addresses)
    return addresses
end

local function sentinel_client(extra)
    local config = { sentinel = { addresses = SENTINELS, master_name = MASTER_NAME },
                     options = { read_timeout = 2.0 } }
    for k, v in pairs(extra or {}) do
        config[k] = v
    end
    return vk.new(config)
end

-- ---------------------------------------------------------------------------
-- Cluster helpers
-- ---------------------------------------------------------------------------

-- The slot map as a seed node reports it: { { first, last, "host:port" }, ... }.
local function slot_map()
    local map = {}
    for _, range in ipairs(assert(node(CLUSTER_NODES[1]):call("CLUSTER", "SLOTS"))) do
        map[#map + 1] = { range[1], range[2], range[3][1] .. ":" .. range[3][2] }
    end
    return map
end

-- The master that owns key's slot, from the server's own hash function.
local function key_owner(key)
    local slot = assert(node(CLUSTER_NODES[1]):call("CLUSTER", "KEYSLOT", key))
    for _, range in ipairs(slot_map()) do
        if range[1] <= slot and slot <= range[2] then
            return range[3], slot
        end
    end
    error("no master owns slot " .. tostring(slot))
end

local function set_of(list)
    local set = {}
    for _, item in ipairs(list) do
        set[item] = true
    end
    return set
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    return keys
end

-- ===========================================================================

describe("sentinel", function()
    local client

    before_each(function()
        client = assert(sentinel_client())
    end)

    after_each(function()
        client:close()
        close_nodes()
    end)

    it("connects to the master the sentinels name and writes there", function()
        local master = named_master()
        assert.is_string(master, "the sentinels disagree about the master")

        local status = client:status()
        assert.is_true(status.connected)
        assert.are.equal("sentinel", status.mode)
        assert.are.equal(master, status.master_address)
        assert.are.equal(0, status.master_switches)
        assert.are.same({}, status.nodes) -- cluster only

        local key, value = support.key("sentinel"), support.key("value")
        assert.are.equal("OK", client:call("SET", key, value))
        assert.are.equal(value, client:call("GET", key))
        -- The node the sentinels name is a master and holds the value itself.
        assert.are.equal("master", node(master):call("ROLE")[1])
        assert.are.equal(value, node(master):call("GET", key))

        -- Both replicas acknowledge the write, hold it, and refuse writes of
        -- their own: the client wrote to the one writable node.
        assert.are.equal(2, client:call("WAIT", 2, 2000))
        local replicas = replica_addresses()
        assert.are.equal(2, #replicas)
        for _, replica in ipairs(replicas) do
            assert.are_not.equal(master, replica)
            assert.are.equal(value, node(replica):call("GET", key))
            local ok, err = node(replica):call("SET", key, "from-a-replica")
            support.fails("SERVER", nil, ok, err)
            assert.matches("^READONLY ", tostring(err))
        end
    end)

    it("finds the master through a single sentinel address", function()
        local one = assert(vk.new{ sentinel = { addresses = { SENTINELS[#SENTINELS] }, master_name = MASTER_NAME } })
        local key = support.key("one-sentinel")
        assert.are.equal(2, one:call("RPUSH", key, "a", "b"))
        assert.are.same({ "a", "b" }, one:call("LRANGE", key, 0, -1))
        local master = named_master()
        assert.are.equal(master, one:status().master_address)
        assert.are.equal(2, node(master):call("LLEN", key))
        one:close()
    end)

    it("refuses an unknown master name at construction, with the core's text", function()
        local missing, err = sentinel_client({ sentinel = { addresses = SENTINELS, master_name = "no-such-master" } })
        support.fails("SERVER", 'redis sentinel: master "no-such-master" is unknown to every reachable sentinel',
            missing, err)
    end)

    it("takes locks on the master: try_lock, unlock, with_lock", function()
        local master = named_master()
        local locks = assert(vk.lock_manager(client))
        local key = support.key("sentinel-lock")

        local h = assert(locks:try_lock(key))
        assert.is_true(h:fencing_token() > 0)
        -- The lock is a key on the master, and nobody else gets it meanwhile.
        assert.are.equal(1, node(master):call("EXISTS", key))
        local other, err = locks:try_lock(key)
        assert.is_nil(other)
        assert.is_nil(err)
        assert.is_true(h:unlock())
        assert.are.equal(0, node(master):call("EXISTS", key))
        support.fails("LOCK_NOT_HELD", "lock was not held or already expired", h:unlock())

        local a, b = locks:with_lock(key, function(handle)
            assert.are.equal(key, handle:key())
            assert.is_true(handle:fencing_token() > h:fencing_token())
            assert.are.equal(1, node(master):call("EXISTS", key))
            return "ran", 7
        end)
        assert.are.same({ "ran", 7 }, { a, b })
        assert.are.equal(0, node(master):call("EXISTS", key))
        h:close()
        locks:close()
    end)

    -- Last in this block: the shared group is failed over once per run. A
    -- second failover soon after may be refused until the sentinels have
    -- re-checked the demoted master (their INFO period is 10 s), and until
    -- then the old master may still act as one, which the replica checks
    -- above would trip over.
    it("follows a failover while writing, with the same client object", function()
        local writer = assert(sentinel_client({ options = { dial_timeout = 0.5, read_timeout = 1.0 } }))
        local old = named_master()
        assert.is_string(old, "the sentinels disagree about the master")
        assert.are.equal(old, writer:status().master_address)

        -- Writes 1, 2, 3... to one key, as an application would: a failure
        -- is nil, err (no raise), and it waits a moment before going on.
        local key = support.key("failover")
        local n, last_ok, last_ok_at, last_ok_on = 0, 0, nil, nil
        local failures = {}
        local function write()
            local before = writer:status().master_address
            n = n + 1
            local ok, err = writer:call("SET", key, n)
            if ok == "OK" then
                last_ok, last_ok_at, last_ok_on = n, support.now(), before
                return true
            end
            failures[#failures + 1] = { at = support.now(), ok = ok, err = err }
            support.sleep(0.02)
            return false
        end

        for _ = 1, 20 do
            assert.is_true(write())
        end

        local admin = node(SENTINELS[1])
        local started = support.now()
        local deadline = started + 20
        local requested, visible_at, new, resumed_at
        local next_probe = started
        while support.now() < deadline do
            write()
            local now = support.now()
            if not requested and now >= next_probe then
                -- A sentinel still busy with its last look at the group says
                -- INPROG or NOGOODSLAVE for a moment: ask again.
                local ok, err = admin:call("SENTINEL", "FAILOVER", MASTER_NAME)
                if ok == "OK" then
                    requested = now
                else
                    local text = tostring(err)
                    assert(text:find("INPROG", 1, true) or text:find("NOGOODSLAVE", 1, true),
                        "SENTINEL FAILOVER refused: " .. text)
                    assert(now - started < 10, "SENTINEL FAILOVER still refused after 10 s: " .. text)
                    next_probe = now + 0.2
                end
            elseif requested and not visible_at and now >= next_probe then
                -- Visible: one sentinel names another master.
                for _, sentinel in ipairs(SENTINELS) do
                    local named = named_by(sentinel)
                    if named and named ~= old then
                        visible_at, new = now, named
                        break
                    end
                end
                next_probe = now + 0.05
            end
            if visible_at and not resumed_at and last_ok_at and last_ok_at >= visible_at and last_ok_on == new then
                resumed_at = last_ok_at
            end
            -- Keep writing on the new master for a while after resuming.
            if resumed_at and now - resumed_at > 0.3 then
                break
            end
        end
        assert.is_number(requested, "SENTINEL FAILOVER was never accepted")
        assert.is_string(new, "no sentinel named a new master within 20 s")
        assert.is_number(resumed_at, "writes did not resume on " .. new)
        assert(resumed_at - visible_at <= 5,
            string.format("writes resumed %.2f s after the failover was visible", resumed_at - visible_at))

        -- End on an acknowledged write, so the last value the writer saw
        -- succeed is the last one sent.
        local stop = support.now() + 10
        while not write() and support.now() < stop do
        end
        assert.are.equal(n, last_ok, "the last write failed")

        -- Every sentinel names the new master, and so does the client.
        assert.is_number(wait_until(function() return named_master() == new end, 10, 0.05),
            "the sentinels do not agree on " .. new)
        local status = writer:status()
        assert.are.equal(new, status.master_address)
        assert.are_not.equal(old, status.master_address)
        assert.are.equal(1, status.master_switches)
        assert.is_true(status.connected)
        assert.are.equal("master", node(new):call("ROLE")[1])
        -- What the writer saw acknowledged last is what the new master holds.
        assert.are.equal(tostring(last_ok), node(new):call("GET", key))

        -- Failures only while switching, few, and each one an error object
        -- with a code (never a raise, never a bare string).
        assert(#failures < 500, #failures .. " failed writes")
        for _, failure in ipairs(failures) do
            assert.is_nil(failure.ok)
            assert(is_error_object(failure.err), "not an error object: " .. tostring(failure.err))
            assert(failure.at >= requested, "a write failed before the failover: " .. tostring(failure.err))
        end

        -- The same client object goes on working, on the new master.
        local after = support.key("after-failover")
        assert.are.equal("OK", writer:call("SET", after, "1"))
        assert.are.equal("1", node(new):call("GET", after))
        assert.are.equal("1", writer:call("GET", after))
        writer:close()
    end)
end)

-- ===========================================================================

describe("cluster", function()
    local client

    before_each(function()
        client = assert(vk.new{ cluster = { addresses = CLUSTER_NODES }, options = { read_timeout = 2.0 } })
    end)

    after_each(function()
        client:close()
        close_nodes()
    end)

    it("reports the masters and their slots in status()", function()
        local status = client:status()
        assert.is_true(status.connected)
        assert.are.equal("cluster", status.mode)
        assert.is_nil(status.master_address)
        assert.are.equal(0, status.master_switches)
        assert.is_true(status.slot_map_refreshes >= 1)

        -- The three seeds are the three masters, each with its share of
        -- the slots as the cluster itself counts them.
        assert.are.same(sorted_keys(set_of(CLUSTER_NODES)), sorted_keys(status.nodes))
        local counted = {}
        for _, range in ipairs(slot_map()) do
            counted[range[3]] = (counted[range[3]] or 0) + range[2] - range[1] + 1
        end
        local total = 0
        for address, slots in pairs(status.nodes) do
            assert.are.equal(counted[address], slots)
            assert.is_true(slots >= math.floor(TOTAL_SLOTS / 3))
            total = total + slots
        end
        assert.are.equal(TOTAL_SLOTS, total)
    end)

    it("stores each key on its slot's master only, and uses every master", function()
        local prefix = support.key("spread")
        local written = {}
        for i = 1, 30 do
            local key = prefix .. ":" .. i
            written[key] = support.key("value")
            assert.are.equal("OK", client:call("SET", key, written[key]))
        end
        local used = {}
        for key, value in pairs(written) do
            local owner, slot = key_owner(key)
            assert.are.equal(value, client:call("GET", key))
            -- The owner holds it; the other masters redirect to the owner.
            for _, address in ipairs(CLUSTER_NODES) do
                local got, err = node(address):call("GET", key)
                if address == owner then
                    assert.are.equal(value, got)
                    used[address] = true
                else
                    support.fails("SERVER", "MOVED " .. slot .. " " .. owner, got, err)
                end
            end
        end
        assert.are.same(sorted_keys(set_of(CLUSTER_NODES)), sorted_keys(used))
        -- Every key went straight to its owner: the map was right.
        assert.are.equal(0, client:status().moved_redirects)
    end)

    it("runs multi-key commands on hash-tagged keys, and refuses cross-slot ones", function()
        local tag = "{" .. support.key("user1") .. "}"
        local a, b = tag .. ":a", tag .. ":b"
        assert.are.equal("OK", client:call("MSET", a, "1", b, "2"))
        assert.are.same({ "1", "2", vk.null }, client:call("MGET", a, b, tag .. ":missing"))
        local owner, slot = key_owner(a)
        local owner_b, slot_b = key_owner(b)
        assert.are.equal(slot, slot_b)
        assert.are.equal(owner, owner_b)
        assert.are.same({ "1", "2" }, node(owner):call("MGET", a, b))

        -- Two keys of different slots: refused by the client before anything
        -- is sent, so neither key is written.
        local x, y = support.key("cross-x"), support.key("cross-y")
        local i = 0
        while select(2, key_owner(x)) == select(2, key_owner(y)) do
            i = i + 1
            y = support.key("cross-y" .. i)
        end
        support.fails("INVALID_ARGUMENT", CROSSSLOT_TEXT, client:call("MSET", x, "1", y, "2"))
        support.fails("INVALID_ARGUMENT", CROSSSLOT_TEXT, client:call("MGET", x, y))
        assert.are.equal(vk.null, node(key_owner(x)):call("GET", x))
        assert.are.equal(vk.null, node(key_owner(y)):call("GET", y))
        -- The same client goes on working.
        assert.are.equal(2, client:call("DEL", a, b))
    end)

    it("runs a pipeline across every master and returns the results in order", function()
        local prefix = support.key("pipe")
        local pl = client:pipeline()
        local owners = {}
        for i = 1, 50 do
            local key = prefix .. ":" .. i
            pl:call("SET", key, "v" .. i):call("GET", key)
            owners[key_owner(key)] = true
        end
        -- The 50 keys span every master, so the pipeline is split and merged.
        assert.are.same(sorted_keys(set_of(CLUSTER_NODES)), sorted_keys(owners))
        local results = assert(pl:run())
        assert.are.equal(100, #results)
        for i = 1, 50 do
            assert.are.equal("OK", results[2 * i - 1])
            assert.are.equal("v" .. i, results[2 * i])
        end
        for i = 1, 50 do
            local key = prefix .. ":" .. i
            assert.are.equal("v" .. i, node(key_owner(key)):call("GET", key))
        end
    end)

    it("takes locks on every master, with fencing tokens that only grow", function()
        local locks = assert(vk.lock_manager(client))
        -- One lock key per master, so every shard serves the lock protocol.
        local per_owner = {}
        local i = 0
        while #sorted_keys(per_owner) < #CLUSTER_NODES do
            i = i + 1
            local key = support.key("cluster-lock" .. i)
            local owner = key_owner(key)
            per_owner[owner] = per_owner[owner] or key
        end
        for owner, key in pairs(per_owner) do
            local last = 0
            for _ = 1, 20 do
                local h = assert(locks:try_lock(key))
                assert(h:fencing_token() > last, string.format("token %s after %s", h:fencing_token(), last))
                last = h:fencing_token()
                -- Held: a key on its slot's master, and nobody else gets it.
                assert.are.equal(1, node(owner):call("EXISTS", key))
                local other, err = locks:try_lock(key)
                assert.is_nil(other)
                assert.is_nil(err)
                assert.is_true(h:unlock())
                assert.are.equal(0, node(owner):call("EXISTS", key))
                h:close()
            end
            local token = locks:with_lock(key, function(handle)
                assert.are.equal(1, node(owner):call("EXISTS", key))
                return handle:fencing_token()
            end)
            assert.is_true(token > last)
        end
        locks:close()
    end)
end)
