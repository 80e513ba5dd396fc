-- lock_demo: the vkclient tour in Lua, the same scenario as
-- examples/c/lock_demo.c (and the Python and Ruby demos).
--
--   lua5.4 examples/lua/lock_demo.lua [host:port] [rounds]
--   LUA_CPATH="build/gcc/bindings/lua/5.4/?.so;;" lua5.4 examples/lua/lock_demo.lua
--
-- Connects (address from the argument, else $VK_DEMO_ADDR, else
-- 127.0.0.1:6379), runs SET and GET, prints the client's status, then takes
-- the shared demo lock a few times. Each round increments a counter under
-- the lock, so demo programs in several languages contending on the same
-- key never lose an increment.
local vk = require "vkclient"

local LOCK_KEY = "vkclient:demo:lock"
local COUNTER_KEY = "vkclient:demo:counter"

local address = arg[1] or os.getenv("VK_DEMO_ADDR")
if not address or address == "" then
    address = "127.0.0.1:6379"
end
local rounds = tonumber(arg[2] or "3")

local function fail(what, err)
    io.stderr:write(string.format("lock_demo: %s: %s\n", what, tostring(err)))
    os.exit(1)
end

print(string.format("vkclient %s (hiredis %s)", vk.version, vk.hiredis_version))

-- 1. Config: a plain table; tostring never shows a secret.
local config = vk.config{ standalone = address, options = { read_timeout = 2.0 } }
print("config: " .. tostring(config))

-- 2. Client: validates, connects and pings. Runtime failures are nil, err.
local client, err = vk.new(config)
if not client then
    fail("connect", err)
end

-- 3. Commands: any command, binary-safe strings, vk.null for a nil reply.
print("  SET vkclient:demo:greeting -> " .. tostring(client:call("SET", "vkclient:demo:greeting", "hello from Lua")))
print("  GET vkclient:demo:greeting -> " .. tostring(client:call("GET", "vkclient:demo:greeting")))

-- 4. Status: a snapshot, not a probe.
local status = client:status()
print(string.format("status: connected=%s refresh_loop_running=%s", tostring(status.connected),
    tostring(status.refresh_loop_running)))

-- 5. The lock: with_lock_options acquires (retrying while another holder
-- has it), runs the function, and releases, also when the function raises.
local locks = assert(vk.lock_manager(client))
local options = { expiry = 5, tries = 100, retry_delay = 0.05 }
for _ = 1, rounds do
    local ok, lock_err = locks:with_lock_options(LOCK_KEY, options, function(lock)
        local value = client:call("GET", COUNTER_KEY)
        local current = value == vk.null and 0 or tonumber(value)
        local next_value = tostring(current + 1)
        assert(client:call("SET", COUNTER_KEY, next_value) == "OK")
        print(string.format("  [Lua] holds %s (fencing token %d, %d ms left): counter %d -> %s", LOCK_KEY,
            lock:fencing_token(), math.floor(lock:validity() * 1000), current, next_value))
        return true
    end)
    if not ok then
        fail("with_lock", lock_err)
    end
end

-- try_lock: one attempt; contention is not an error, just no lock.
local handle, try_err = locks:try_lock(LOCK_KEY)
if try_err then
    fail("try_lock", try_err)
end
print("try_lock: " .. (handle and "acquired" or "held by someone else"))
if handle then
    local ok, unlock_err = handle:unlock()
    if not ok then
        fail("unlock", unlock_err)
    end
end

locks:close()
client:close()
