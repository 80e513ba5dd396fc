-- Cross-language mutual exclusion: a Lua holder excludes C and Python
-- contenders on the same key and the other way round, because every
-- binding speaks the core's one lock protocol.
--
-- The C side is the example program examples/c/lock_demo and the Python
-- side the Python binding, both from $VK_BUILD_DIR.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()
local env = support.env

local DEMO_LOCK = "vkclient:demo:lock"
local DEMO_COUNTER = "vkclient:demo:counter"

local lock_demo = support.build_dir .. "/examples/c/lock_demo"
local python_path = support.build_dir .. "/bindings/python"

-- A fresh temporary file name (os.tmpname creates the file: reuse its name).
local function temp_path(name)
    local base = os.tmpname()
    os.remove(base)
    return base .. "-" .. name
end

-- Waits until the file at path contains `text`.
local function wait_for_text(path, text, timeout)
    local deadline = support.now() + (timeout or 20)
    while support.now() < deadline do
        local content = support.read_file(path)
        if content and content:find(text, 1, true) then
            return true
        end
        support.sleep(0.02)
    end
    return false
end

-- A Python process that takes `key` with try_lock, says "held" or "busy",
-- keeps a held lock for `hold` seconds, then releases it.
local PYTHON_HOLDER = [[
import os, sys, time
import vkclient
client = vkclient.Client.from_url("redis://" + os.environ["VK_TEST_ADDR"])
locks = vkclient.LockManager(client)
handle = locks.try_lock(sys.argv[1])
if handle is None:
    print("busy", flush=True)
    sys.exit(0)
print("held %d" % handle.fencing_token, flush=True)
time.sleep(float(sys.argv[2]))
handle.unlock()
print("released", flush=True)
]]

local function python_command(key, hold)
    local script = temp_path("holder.py")
    local f = assert(io.open(script, "w"))
    f:write(PYTHON_HOLDER)
    f:close()
    return string.format("PYTHONPATH=%s /usr/bin/python3 %s %s %s", support.shell_quote(python_path),
        support.shell_quote(script), support.shell_quote(key), tostring(hold)), script
end

describe("interop with C", function()
    local client, locks

    before_each(function()
        client = support.client()
        locks = assert(vk.lock_manager(client))
    end)

    after_each(function()
        locks:close()
        client:close()
    end)

    it("the C example sees the lock a Lua holder has, and takes it once released", function()
        local status, output = support.run(string.format("%s %s 0", support.shell_quote(lock_demo), env.VK_TEST_ADDR))
        assert.are.equal(0, status, output)
        assert.matches("try_lock: acquired", output, 1, true)

        local held = locks:with_lock(DEMO_LOCK, function()
            local s, out = support.run(string.format("%s %s 0", support.shell_quote(lock_demo), env.VK_TEST_ADDR))
            assert.are.equal(0, s, out)
            return out
        end)
        assert.matches("try_lock: held by someone else", held, 1, true)
    end)

    it("Lua and C increment one counter under the shared lock without losing an update", function()
        client:call("SET", DEMO_COUNTER, "0")
        local rounds = 40
        local log = temp_path("lock_demo.log")
        local pid = support.spawn(string.format("%s %s %d", support.shell_quote(lock_demo), env.VK_TEST_ADDR, rounds), log)
        local options = { expiry = 5, tries = 200, retry_delay = 0.005 }
        for _ = 1, rounds do
            local ok, err = locks:with_lock_options(DEMO_LOCK, options, function()
                local value = client:call("GET", DEMO_COUNTER)
                local next_value = tostring(tonumber(value) + 1)
                -- Widen the read-modify-write window so a broken exclusion shows.
                support.sleep(0.001)
                assert(client:call("SET", DEMO_COUNTER, next_value) == "OK")
                return true
            end)
            assert.is_true(ok, err and tostring(err))
        end
        assert.is_true(support.wait_pid(pid, 60))
        local output = support.read_file(log)
        local _, c_rounds = output:gsub("%[C%] holds", "")
        assert.are.equal(rounds, c_rounds, output)
        assert.are.equal(tostring(2 * rounds), client:call("GET", DEMO_COUNTER))
        os.remove(log)
    end)
end)

describe("interop with Python", function()
    local client, locks

    before_each(function()
        client = support.client()
        locks = assert(vk.lock_manager(client))
    end)

    after_each(function()
        locks:close()
        client:close()
    end)

    it("a Python holder excludes Lua until it releases", function()
        local key = support.key("py-holder")
        local command, script = python_command(key, 1.0)
        local log = temp_path("python.log")
        local pid = support.spawn(command, log)
        assert.is_true(wait_for_text(log, "held", 30), support.read_file(log))
        local python_token = tonumber(support.read_file(log):match("held (%d+)"))
        assert.is_nil(locks:try_lock(key))
        assert.is_true(support.wait_pid(pid, 30))
        assert.matches("released", support.read_file(log), 1, true)
        local h = assert(locks:try_lock(key))
        assert.is_true(h:fencing_token() > python_token)
        assert.is_true(h:unlock())
        os.remove(log)
        os.remove(script)
    end)

    it("a Lua holder excludes Python", function()
        local key = support.key("lua-holder")
        local command, script = python_command(key, 0)
        local during = locks:with_lock(key, function()
            local status, output = support.run(command)
            assert.are.equal(0, status, output)
            return output
        end)
        assert.matches("^busy", during)
        local status, after = support.run(command)
        assert.are.equal(0, status, after)
        assert.matches("^held", after)
        os.remove(script)
    end)
end)
