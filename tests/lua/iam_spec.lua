-- GCP IAM auth from Lua: tokens from the harness's stand-in for Google
-- (iam_env.py starts it with a TLS server that takes its tokens), refreshed
-- by client:tick() in driven mode or by the core's thread, with the
-- thread's events delivered on the calling coroutine.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()

-- Successful token issues logged by the stand-in.
local function issued(env)
    local log = support.read_file(env.REQUEST_LOG) or ""
    local count = 0
    for line in log:gmatch("[^\n]+") do
        if line:find('"endpoint": "iam"', 1, true) and line:find('"status": 200', 1, true) then
            count = count + 1
        end
    end
    return count
end

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

describe("GCP IAM auth", function()
    local dir, pid, env

    setup(function()
        dir = os.tmpname()
        os.remove(dir)
        assert(support.shell_ok("mkdir -p " .. support.shell_quote(dir)))
        -- Without the interpreter's preloads (a sanitizer run): they are not
        -- meant for the servers the helper starts.
        pid = support.spawn("env -u LD_PRELOAD /usr/bin/python3 " .. support.shell_quote(here .. "/../harness/iam_env.py") .. " " ..
            support.shell_quote(dir), dir .. "/iam_env.log")
        assert(wait_for(function() return support.read_file(dir .. "/ready") ~= nil end, 60),
            support.read_file(dir .. "/iam_env.log"))
        env = {}
        for key, value in support.read_file(dir .. "/ready"):gmatch("([%w_]+)=([^\n]*)") do
            env[key] = value
        end
    end)

    teardown(function()
        local f = io.open(dir .. "/stop", "w")
        f:close()
        assert(support.wait_pid(pid, 30))
        support.shell_ok("rm -rf " .. support.shell_quote(dir))
    end)

    local function iam_config(extra)
        local config = {
            standalone = env.ADDR,
            tls = { ca_cert_base64 = env.CA_B64 },
            gcp_iam = {
                credentials_base64 = env.CREDENTIALS_B64,
                service_account = env.SERVICE_ACCOUNT,
                endpoint = env.ENDPOINT,
                token_lifetime = 3,
                refresh_every = 1,
                refresh_check_interval = 0.2,
            },
        }
        for k, v in pairs(extra or {}) do
            config[k] = v
        end
        return config
    end

    it("connects with a token and refreshes it when client:tick() finds it due (driven mode)", function()
        local before = issued(env)
        local started = os.time()
        local client = assert(vk.new(iam_config{ refresh_mode = "driven" }))
        assert.are.equal("default", client:call("ACL", "WHOAMI"))
        assert.are.equal(before + 1, issued(env))
        local status = client:status()
        assert.is_true(status.connected)
        -- The loop is running: it is driven by tick() instead of a thread.
        assert.is_true(status.refresh_loop_running)
        assert.is_nil(status.last_refresh_error)
        assert.is_number(status.last_refresh_at)
        assert.is_true(status.last_refresh_at >= started - 1 and status.last_refresh_at <= os.time() + 1)
        -- Not due yet: nothing happens.
        assert.is_true(client:tick())
        assert.are.equal(before + 1, issued(env))
        -- Without ticks there is no refresh at all in driven mode.
        support.sleep(1.3)
        assert.are.equal(before + 1, issued(env))
        local first_at = status.last_refresh_at
        assert.is_true(client:tick())
        assert.are.equal(before + 2, issued(env))
        assert.is_true(client:status().last_refresh_at > first_at)
        -- The first token expires (3 s) and leaves the server's ACL; the
        -- client keeps working on the refreshed one.
        for _ = 1, 4 do
            support.sleep(1.1)
            assert.is_true(client:tick())
        end
        assert.are.equal("PONG", client:call("PING"))
        assert.is_true(client:connect())
        assert.are.equal("PONG", client:call("PING"))
        client:close()
    end)

    it("delivers the refresh thread's events on the calling coroutine (thread mode)", function()
        local messages, threads = {}, {}
        local co = coroutine.create(function()
            local client = assert(vk.new(iam_config{
                logger = function(level, message, fields)
                    messages[#messages + 1] = message
                    threads[#threads + 1] = coroutine.running()
                end,
            }))
            assert.is_true(client:status().refresh_loop_running)
            local before = #messages
            assert.is_true(wait_for(function()
                client:poll()
                return #messages > before
            end, 10))
            assert.are.equal("PONG", client:call("PING"))
            client:close()
            assert.is_false(client:is_connected())
            return coroutine.running()
        end)
        local ok, caller = coroutine.resume(co)
        assert.is_true(ok, tostring(caller))
        assert.is_true(#threads > 0)
        for _, thread in ipairs(threads) do
            assert.are.equal(caller, thread)
        end
        for _, message in ipairs(messages) do
            assert.is_nil(message:find(env.CREDENTIALS_B64, 1, true))
        end
    end)

    it("keeps the old token in service and reports a failed refresh", function()
        local client = assert(vk.new(iam_config{ refresh_mode = "driven" }))
        local control = assert(io.open(env.CONTROL_FILE, "w"))
        control:write('{"status": 500, "message": "backend down", "endpoints": ["iam"]}')
        control:close()
        support.sleep(1.2)
        local err = support.fails("IAM", nil, client:tick())
        assert.matches("^GCP IAM token request failed", tostring(err))
        local status = client:status()
        assert.is_string(status.last_refresh_error)
        assert.are.equal(status.last_refresh_error, client:last_refresh_error())
        assert.is_nil(status.last_refresh_error:find(env.CREDENTIALS_B64, 1, true))
        assert.are.equal("PONG", client:call("PING"))
        os.remove(env.CONTROL_FILE)
        -- Back to normal: the next due refresh clears the error.
        assert.is_true(wait_for(function()
            client:tick()
            return client:status().last_refresh_error == nil
        end, 15))
        client:close()
    end)
end)
