-- The distributed lock from Lua against real servers: with_lock, try_lock,
-- handles, options, a Redlock quorum, and every lock error code and text.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()
local env = support.env

local split = support.split

describe("lock manager", function()
    local client, observer, locks

    before_each(function()
        client = support.client()
        observer = support.client()
        locks = assert(vk.lock_manager(client))
    end)

    after_each(function()
        locks:close()
        client:close()
        observer:close()
    end)

    it("runs the function under the lock and returns its results", function()
        local key = support.key("with")
        local a, b, c = locks:with_lock(key, function(handle)
            assert.is_string(observer:call("GET", key))
            assert.are.equal(key, handle:key())
            assert.is_true(handle:validity() > 9 and handle:validity() <= 10)
            assert.is_true(handle:fencing_token() > 0)
            return 1, "two", vk.null
        end)
        assert.are.same({ 1, "two", vk.null }, { a, b, c })
        assert.are.equal(vk.null, observer:call("GET", key))
    end)

    it("returns what the function returns, also nil, err in the OpenResty style", function()
        local ok, msg = locks:with_lock(support.key("nilerr"), function() return nil, "not found" end)
        assert.is_nil(ok)
        assert.are.equal("not found", msg)
        assert.are.equal(0, select("#", locks:with_lock(support.key("none"), function() end)))
    end)

    it("releases the lock when the function raises, and keeps the error as cause", function()
        local key = support.key("raise")
        local ok, err = locks:with_lock(key, function()
            assert.is_string(observer:call("GET", key))
            error("boom", 0)
        end)
        support.fails("LOCK_FN", "distributed lock: function execution: boom", ok, err)
        assert.are.equal("boom", err.cause)
        assert.are.equal(vk.null, observer:call("GET", key))

        local cause = setmetatable({ reason = "custom" }, { __tostring = function() return "custom failure" end })
        ok, err = locks:with_lock(key, function() error(cause) end)
        support.fails("LOCK_FN", "distributed lock: function execution: custom failure", ok, err)
        assert.are.equal(cause, err.cause)
        assert.are.equal(vk.null, observer:call("GET", key))

        ok, err = locks:with_lock(key, function() error({ code = 42 }) end)
        assert.are.equal(42, err.cause.code)
        assert.matches("^distributed lock: function execution: table: ", tostring(err))
    end)

    it("invalidates the handle lent to the function once it returns", function()
        local kept
        locks:with_lock(support.key("lent"), function(handle) kept = handle end)
        support.fails("NIL_LOCK_HANDLE", "lock handle is nil or not initialized", kept:unlock())
        assert.are.equal(0, kept:validity())
        assert.are.equal(0, kept:fencing_token())
        assert.is_nil(kept:key())
    end)

    it("manager:unlock (deprecated) releases a handle; a nil handle is NIL_LOCK_HANDLE_ON_UNLOCK", function()
        local key = support.key("mgrunlock")
        local h = assert(locks:try_lock(key))
        assert.is_true(locks:unlock(h))
        assert.are.equal(vk.null, observer:call("GET", key))
        support.fails("LOCK_NOT_HELD", "lock was not held or already expired", locks:unlock(h))
        local err = support.fails("NIL_LOCK_HANDLE_ON_UNLOCK", "lock handle is nil", locks:unlock(nil))
        assert.are.equal(vk.codes.NIL_LOCK_HANDLE_ON_UNLOCK, err.status)
        support.fails("NIL_LOCK_HANDLE_ON_UNLOCK", "lock handle is nil", locks:unlock())
        h:close()
        support.fails("NIL_LOCK_HANDLE", "lock handle is nil or not initialized", locks:unlock(h))
        assert.has_error(function() locks:unlock("not a handle") end)
    end)

    it("names try_lock and unlock faults as the original does, with the cause's code", function()
        local key = "job:fault:" .. support.flavour
        local slow = support.client{ options = { read_timeout = 0.2, max_retries = -1 } }
        local slow_locks = assert(vk.lock_manager(slow))
        local h = assert(slow_locks:try_lock(key))
        -- Writes (SET and the release script) wait out a pause of the server.
        assert.are.equal("OK", observer:call("CLIENT", "PAUSE", "600", "WRITE"))
        local err = support.fails("TIMEOUT", nil, h:unlock())
        assert.matches("^distributed lock: unlock: i/o timeout", tostring(err))
        err = support.fails("TIMEOUT", nil, slow_locks:try_lock(key .. ":2"))
        local prefix = string.format("failed to attempt lock acquisition for %q: i/o timeout", key .. ":2")
        assert.are.equal(prefix, tostring(err):sub(1, #prefix))
        support.sleep(0.6)
        assert.is_true(h:unlock())
        slow_locks:close()
        slow:close()
    end)

    it("try_lock: a handle, or nil without an error when taken", function()
        local key = support.key("try")
        local h = assert(locks:try_lock(key))
        local other, err = locks:try_lock(key)
        assert.is_nil(other)
        assert.is_nil(err)
        assert.are.equal(key, h:key())
        assert.is_false(h:is_lost())
        assert.is_true(h:unlock())
        support.fails("LOCK_NOT_HELD", "lock was not held or already expired", h:unlock())
        local again = assert(locks:try_lock(key))
        assert.is_true(again:fencing_token() > h:fencing_token())
        assert.is_true(again:unlock())
        h:close()
        again:close()
    end)

    it("fencing tokens increase with every acquisition of a key", function()
        local key = support.key("fence")
        local last = 0
        for _ = 1, 5 do
            local h = assert(locks:try_lock(key))
            assert.is_true(h:fencing_token() > last)
            last = h:fencing_token()
            assert.is_true(h:unlock())
        end
    end)

    it("extends a held lock, and not one that expired", function()
        local key = support.key("extend")
        local h = assert(locks:acquire(key, { expiry = 0.3, tries = 1 }))
        assert.is_true(h:extend(5))
        assert.is_true(observer:call("PTTL", key) > 3000)
        assert.is_true(h:unlock())
        local short = assert(locks:acquire(key, { expiry = 0.05, tries = 1 }))
        support.sleep(0.15)
        support.fails("LOCK_NOT_HELD", "lock was not held or already expired", short:extend(1))
        assert.are.equal(0, short:validity())
        assert.has_error(function() h:extend("5") end)
    end)

    it("LOCK_NOT_HELD when the lock was taken over after it expired", function()
        local key = support.key("takeover")
        local h = assert(locks:acquire(key, { expiry = 0.05, tries = 1 }))
        support.sleep(0.1)
        local other = assert(locks:try_lock(key))
        support.fails("LOCK_NOT_HELD", "lock was not held or already expired", h:unlock())
        assert.is_string(observer:call("GET", key))
        assert.is_true(other:unlock())
    end)

    it("LOCK_ACQUIRE after the last try, with the key quoted", function()
        local key = "job:1:" .. support.flavour
        local h = assert(locks:try_lock(key))
        local started = support.now()
        local ok, err = locks:with_lock_options(key, { tries = 3, retry_delay = 0.02 }, function() error("not run") end)
        support.fails("LOCK_ACQUIRE", string.format("failed to acquire lock %q: lock already taken", key), ok, err)
        assert.is_true(support.now() - started < 2)
        support.fails("LOCK_ACQUIRE", nil, locks:acquire(key, { tries = 2, retry_delay = 0 }))
        assert.is_true(h:unlock())
        local quoted = support.fails("LOCK_ACQUIRE", nil, (function()
            local tab = "a\tb:" .. support.flavour
            local held = assert(locks:try_lock(tab))
            local r1, r2 = locks:acquire(tab, { tries = 1 })
            held:unlock()
            return r1, r2
        end)())
        assert.matches('"a\\tb:', tostring(quoted), 1, true)
    end)

    it("waits for a holder that releases while it retries", function()
        local key = support.key("wait")
        local h = assert(locks:acquire(key, { expiry = 0.2, tries = 1 }))
        -- Not released: the lock expires after 0.2 s and the retries get it.
        local ran = locks:with_lock_options(key, { tries = 50, retry_delay = 0.02 }, function() return "ran" end)
        assert.are.equal("ran", ran)
        h:close()
    end)

    it("keeps renewing while the function runs with auto_renew", function()
        local key = support.key("renew")
        local result = locks:with_lock_options(key, { expiry = 0.6, auto_renew = true }, function(handle)
            support.sleep(1.2)
            assert.is_false(handle:is_lost())
            return observer:call("GET", key)
        end)
        assert.is_string(result)
        assert.are_not.equal(vk.null, result)
        assert.are.equal(vk.null, observer:call("GET", key))
    end)

    it("reports a lock lost when auto_renew finds it taken away", function()
        local key = support.key("lost")
        local ran = false
        local result, err = locks:with_lock_options(key, { expiry = 0.3, auto_renew = true }, function(handle)
            observer:call("DEL", key)
            support.sleep(0.5)
            assert.is_true(handle:is_lost())
            assert.are.equal(0, handle:validity())
            support.fails("LOCK_NOT_HELD", "lock was not held or already expired", handle:extend(1))
            ran = true
            return "finished"
        end)
        -- The function finished, but the caller must hear that it ran unprotected.
        assert.is_true(ran)
        support.fails("LOCK_LOST", "lock was lost while held", result, err)
    end)

    it("exposes the default and rate-limiter options in seconds", function()
        assert.are.same({ expiry = 10, tries = 3, retry_delay = 0.5, drift_factor = 0.01, auto_renew = false },
            vk.default_lock_options())
        assert.are.same({ expiry = 2, tries = 2, retry_delay = 0.1, drift_factor = 0.01, auto_renew = false },
            vk.rate_limiter_lock_options())
        local ran = locks:with_lock_options(support.key("preset"), vk.rate_limiter_lock_options(), function() return 7 end)
        assert.are.equal(7, ran)
    end)

    it("rejects invalid options with their codes and texts", function()
        local key = support.key("opts")
        local fn = function() end
        local cases = {
            { { expiry = 0 }, "LOCK_EXPIRY_INVALID", "lock expiry must be greater than 0" },
            { { expiry = -1 }, "LOCK_EXPIRY_INVALID", "lock expiry must be greater than 0" },
            { { tries = 0 }, "LOCK_TRIES_INVALID", "lock tries must be at least 1" },
            { { tries = 1001 }, "LOCK_TRIES_EXCEEDED", "lock tries exceeds maximum" },
            { { retry_delay = -0.001 }, "LOCK_RETRY_DELAY_NEGATIVE", "lock retry delay cannot be negative" },
            { { drift_factor = 1 }, "LOCK_DRIFT_FACTOR_INVALID",
              "lock drift factor must be between 0 (inclusive) and 1 (exclusive)" },
            { { drift_factor = -0.1 }, "LOCK_DRIFT_FACTOR_INVALID",
              "lock drift factor must be between 0 (inclusive) and 1 (exclusive)" },
        }
        for _, case in ipairs(cases) do
            support.fails(case[2], case[3], locks:with_lock_options(key, case[1], fn))
            support.fails(case[2], case[3], locks:acquire(key, case[1]))
        end
        assert.has_error(function() locks:with_lock_options(key, { expiry = "10" }, fn) end)
        assert.has_error(function() locks:with_lock_options(key, { expirey = 10 }, fn) end)
        assert.has_error(function() locks:with_lock_options(key, nil, fn) end)
    end)

    it("EMPTY_LOCK_KEY, NIL_LOCK_FN, and misuse that raises", function()
        support.fails("EMPTY_LOCK_KEY", "lock key cannot be empty", locks:with_lock("", function() end))
        support.fails("EMPTY_LOCK_KEY", "lock key cannot be empty", locks:with_lock(" \t ", function() end))
        support.fails("EMPTY_LOCK_KEY", "lock key cannot be empty", locks:try_lock(""))
        support.fails("NIL_LOCK_FN", "lock function is nil", locks:with_lock(support.key("nofn"), nil))
        support.fails("NIL_LOCK_FN", "lock function is nil", locks:with_lock_options(support.key("nofn"), {}, nil))
        assert.has_error(function() locks:with_lock(support.key("x"), "not a function") end)
        assert.has_error(function() locks:with_lock(42, function() end) end)
        assert.has_error(function() locks:try_lock() end)
        assert.has_error(function() vk.lock_manager("client") end)
        assert.has_error(function() vk.lock_manager({ client, "x" }) end)
    end)

    it("NIL_LOCK_HANDLE, NIL_LOCK_MANAGER, LOCK_NOT_INITIALIZED", function()
        local h = assert(locks:try_lock(support.key("closed")))
        h:close()
        h:close()
        support.fails("NIL_LOCK_HANDLE", "lock handle is nil or not initialized", h:unlock())
        support.fails("NIL_LOCK_HANDLE", "lock handle is nil or not initialized", h:extend(1))
        local m = assert(vk.lock_manager(client))
        m:close()
        m:close()
        support.fails("NIL_LOCK_MANAGER", "lock manager is nil", m:with_lock("k", function() end))
        support.fails("NIL_LOCK_MANAGER", "lock manager is nil", m:try_lock("k"))
        support.fails("LOCK_NOT_INITIALIZED", "distributed lock is not initialized", vk.lock_manager({}))
    end)

    it("keeps a handle working after its manager object was collected", function()
        local key = support.key("orphan")
        local h
        do
            local m = assert(vk.lock_manager(client))
            h = assert(m:try_lock(key))
        end
        collectgarbage()
        collectgarbage()
        assert.is_string(observer:call("GET", key))
        assert.is_true(h:extend(5))
        assert.is_true(h:unlock())
        assert.are.equal(vk.null, observer:call("GET", key))
    end)

    it("keeps working for handles and managers whose client was closed: NIL_CLIENT", function()
        local key = support.key("afterclose")
        local h = assert(locks:try_lock(key))
        client:close()
        local ok, err = h:unlock()
        assert.is_nil(ok)
        assert.is_table(err)
        local _, err2 = locks:try_lock(key)
        assert.is_table(err2)
        assert.are.equal("NIL_CLIENT", err2.code)
    end)

    it("does not let a with_lock function yield across the C call", function()
        local co = coroutine.create(function()
            return locks:with_lock(support.key("yield"), function() coroutine.yield() end)
        end)
        local resumed, ok, err = coroutine.resume(co)
        assert.is_true(resumed)
        assert.is_nil(ok)
        assert.are.equal("LOCK_FN", err.code)
    end)

    if _VERSION == "Lua 5.4" then
        it("releases a to-be-closed handle at the end of its scope (Lua 5.4)", function()
            local key = support.key("tbc")
            local chunk = assert(load([[
                local locks, key = ...
                local h <close> = assert(locks:try_lock(key))
                return h
            ]]))
            local h = chunk(locks, key)
            assert.are.equal(vk.null, observer:call("GET", key))
            assert.matches("closed", tostring(h))
        end)
    end
end)

describe("quorum lock", function()
    it("locks over three independent servers (Redlock majority)", function()
        local clients = {}
        for i, addr in ipairs(split(env.VK_TEST_QUORUM_ADDRS)) do
            clients[i] = assert(vk.new{ standalone = addr })
        end
        assert.are.equal(3, #clients)
        local locks = assert(vk.lock_manager(clients))
        local key = support.key("quorum")
        local seen = locks:with_lock(key, function()
            local holders = 0
            for _, c in ipairs(clients) do
                if c:call("GET", key) ~= vk.null then
                    holders = holders + 1
                end
            end
            return holders
        end)
        assert.is_true(seen >= 2)
        -- A minority holder elsewhere does not block the majority.
        assert.are.equal("OK", clients[1]:call("SET", key, "someone-else", "PX", 5000))
        local h = assert(locks:try_lock(key))
        assert.is_true(h:unlock())
        -- A majority held elsewhere does.
        clients[2]:call("SET", key, "someone-else", "PX", 5000)
        assert.is_nil(locks:try_lock(key))
        for _, c in ipairs(clients) do
            c:call("DEL", key)
            c:close()
        end
        locks:close()
    end)
end)
