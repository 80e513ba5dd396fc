-- Shared by the Lua specs: loads the vkclient module built for the running
-- interpreter and reads the servers the harness started.
--
-- The specs run under tests/harness/vkharness.py, which exports the
-- VK_TEST_* variables. The module is taken from $VK_BUILD_DIR/bindings/lua/
-- <5.1|luajit|5.4>/ (VK_BUILD_DIR defaults to build/gcc in the repository).
local system = require "system"

local support = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
support.root = here .. "/../.."

local function flavour()
    if type(jit) == "table" then
        return "luajit"
    end
    return _VERSION:match("%d+%.%d+")
end

support.flavour = flavour()
support.build_dir = os.getenv("VK_BUILD_DIR") or (support.root .. "/build/gcc")
support.module_dir = support.build_dir .. "/bindings/lua/" .. support.flavour
package.cpath = support.module_dir .. "/?.so;" .. package.cpath

local function required_env(name)
    local value = os.getenv(name)
    assert(value and value ~= "", name .. " is not set: run the specs under tests/harness/vkharness.py")
    return value
end

support.env = setmetatable({}, {
    __index = function(_, name)
        return required_env(name)
    end,
})

function support.vk()
    return require "vkclient"
end

-- A key no other test uses, so specs never see each other's data.
local counter = 0
function support.key(prefix)
    counter = counter + 1
    return string.format("lua:%s:%s:%d:%d", support.flavour, prefix or "k", os.time(), counter)
end

function support.sleep(seconds)
    system.sleep(seconds)
end

function support.now()
    return system.gettime()
end

-- A client on the plain server; extra fields are merged into the config.
function support.client(extra)
    local vk = support.vk()
    local config = { standalone = support.env.VK_TEST_ADDR, options = { read_timeout = 2.0 } }
    for k, v in pairs(extra or {}) do
        config[k] = v
    end
    local client, err = vk.new(config)
    assert(client, err and tostring(err))
    return client
end

-- Asserts that `ok, err` is a runtime failure with this code and exact text.
function support.fails(code, text, ok, err)
    assert(ok == nil, "expected a failure, got " .. tostring(ok))
    assert(type(err) == "table", "expected an error object, got " .. type(err))
    assert(err.code == code, string.format("expected code %s, got %s (%s)", code, tostring(err.code), tostring(err)))
    if text then
        assert(tostring(err) == text, string.format("expected %q, got %q", text, tostring(err)))
    end
    return err
end

-- Runs a shell command and returns its exit status and output.
function support.run(command)
    local pipe = assert(io.popen(command .. " 2>&1; echo \"exit:$?\""))
    local output = pipe:read("*a")
    pipe:close()
    local status = tonumber(output:match("exit:(%d+)%s*$"))
    return status, output:gsub("exit:%d+%s*$", "")
end

-- Starts a command in the background; returns its PID.
function support.spawn(command, log)
    local pipe = assert(io.popen(string.format("(%s) >%s 2>&1 & echo $!", command, log)))
    local pid = tonumber(pipe:read("*l"))
    pipe:close()
    return pid
end

-- os.execute's result differs: 5.1 gives the status, 5.2+ true/nil.
function support.shell_ok(command)
    local result = os.execute(command)
    return result == true or result == 0
end

-- Waits until process pid has exited; false after the timeout.
function support.wait_pid(pid, timeout)
    local deadline = support.now() + (timeout or 30)
    while support.now() < deadline do
        if not support.shell_ok("kill -0 " .. pid .. " 2>/dev/null") then
            return true
        end
        support.sleep(0.05)
    end
    return false
end

function support.read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local text = f:read("*a")
    f:close()
    return text
end

function support.shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- "a,b,c" -> { "a", "b", "c" } (the harness's address lists).
function support.split(list)
    local items = {}
    for item in list:gmatch("[^,]+") do
        items[#items + 1] = item
    end
    return items
end

return support
