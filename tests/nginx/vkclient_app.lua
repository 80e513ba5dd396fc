-- The OpenResty handlers of the nginx test (see nginx.conf.in and run.sh).
--
-- Every vkclient call blocks the worker for its duration (a plain socket
-- call, not a cosocket), so the app keeps timeouts short, the pool small,
-- and lock waits bounded. Each worker creates its own client after the
-- fork, in init_worker_by_lua, and ticks it from ngx.timer.every because
-- the client uses the driven refresh mode (no background thread).
local vk = require "vkclient"

local app = {}

local client, locks
local iam_client, iam_first_refresh_at
local ticks = 0

local COUNTER_KEY = "nginx:vkclient:counter"
local DEFAULT_LOCK_KEY = "nginx:vkclient:lock"
local LOCK_OPTIONS = { expiry = 5, tries = 400, retry_delay = 0.01 }

local function log_sink(level, message, fields)
    local parts = {}
    for k, v in pairs(fields) do
        parts[#parts + 1] = k .. "=" .. v
    end
    ngx.log(level == "error" and ngx.ERR or level == "warn" and ngx.WARN or ngx.INFO,
        "vkclient: ", message, " ", table.concat(parts, " "))
end

local function tick(premature)
    if premature then
        return
    end
    ticks = ticks + 1
    for _, c in ipairs({ client, iam_client }) do
        local ok, err = c:tick()
        if not ok then
            ngx.log(ngx.ERR, "vkclient tick: ", tostring(err))
        end
    end
end

function app.init_worker()
    local err
    client, err = vk.new{
        standalone = os.getenv("VK_TEST_ADDR"),
        refresh_mode = "driven",
        logger = log_sink,
        options = { pool_size = 2, dial_timeout = 0.5, read_timeout = 0.5, write_timeout = 0.5, pool_timeout = 0.2 },
    }
    if not client then
        ngx.log(ngx.ERR, "vkclient: cannot connect: ", tostring(err))
        return
    end
    locks = assert(vk.lock_manager(client))

    -- GCP IAM tokens (3 s lifetime, refreshed every second) refreshed only
    -- by the timer's client:tick(): there is no thread in driven mode.
    iam_client, err = vk.new{
        standalone = os.getenv("VK_IAM_ADDR"),
        tls = { ca_cert_base64 = os.getenv("VK_IAM_CA_B64") },
        gcp_iam = {
            credentials_base64 = os.getenv("VK_IAM_CREDENTIALS_B64"),
            service_account = os.getenv("VK_IAM_SERVICE_ACCOUNT"),
            endpoint = os.getenv("VK_IAM_ENDPOINT"),
            token_lifetime = 3,
            refresh_every = 1,
            refresh_check_interval = 0.2,
        },
        refresh_mode = "driven",
        logger = log_sink,
        options = { pool_size = 1, dial_timeout = 0.5, read_timeout = 0.5, write_timeout = 0.5 },
    }
    if not iam_client then
        ngx.log(ngx.ERR, "vkclient: cannot connect with IAM: ", tostring(err))
        return
    end
    iam_first_refresh_at = iam_client:status().last_refresh_at
    assert(ngx.timer.every(0.1, tick))
end

local function fail(status, err)
    ngx.status = status
    ngx.say("error ", err and err.code or "?", ": ", tostring(err))
end

-- /lock?key=K[&fail=1]: takes the lock, increments the counter with a
-- read-modify-write that would lose updates without mutual exclusion, and
-- releases. fail=1 raises inside the locked function instead.
function app.lock()
    if not locks then
        return fail(503, "no client")
    end
    local key = ngx.var.arg_key or DEFAULT_LOCK_KEY
    local raise = ngx.var.arg_fail == "1"
    local token, value = locks:with_lock_options(key, LOCK_OPTIONS, function(handle)
        if raise then
            error("handler failure", 0)
        end
        local current = client:call("GET", COUNTER_KEY)
        local next_value = (current == ngx.null and 0 or tonumber(current)) + 1
        assert(client:call("SET", COUNTER_KEY, tostring(next_value)) == "OK")
        return handle:fencing_token(), next_value
    end)
    if not token then
        return fail(500, value)
    end
    ngx.say("locked token=", token, " counter=", value, " worker=", ngx.worker.pid())
end

function app.counter()
    local value, err = client:call("GET", COUNTER_KEY)
    if value == nil then
        return fail(500, err)
    end
    ngx.say("counter=", value == ngx.null and "nil" or value)
end

-- /iam: who the IAM client is on the server, and whether the timer's ticks
-- refreshed its token since the worker started.
function app.iam()
    if not iam_client then
        return fail(503, "no IAM client")
    end
    local whoami, err = iam_client:call("ACL", "WHOAMI")
    if not whoami then
        return fail(500, err)
    end
    local status = iam_client:status()
    ngx.say("whoami=", whoami,
        " refreshed=", tostring(status.last_refresh_at > iam_first_refresh_at),
        " loop=", tostring(status.refresh_loop_running),
        " error=", tostring(status.last_refresh_error))
end

function app.status()
    local status, err = client:status()
    if not status then
        return fail(500, err)
    end
    ngx.say("connected=", tostring(status.connected),
        " refresh_loop_running=", tostring(status.refresh_loop_running),
        " ticks=", ticks,
        " null_is_ngx_null=", tostring(vk.null == ngx.null))
end

return app
