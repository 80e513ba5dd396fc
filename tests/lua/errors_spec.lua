-- Every error the Lua API can return: its code and its exact text
-- (SEMANTICS.md). Lock errors are in lock_spec.lua.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()
local env = support.env

local function invalid(reason)
    return "invalid redis config: " .. reason
end

describe("config validation", function()
    local addr, ca = env.VK_TEST_ADDR, env.VK_TEST_CA_B64
    local creds = "eyJub3QiOiAia2V5In0=" -- {"not": "key"}
    local cases = {
        { {}, "exactly one topology must be configured" },
        { { standalone = addr, cluster = { addresses = { addr } } }, "exactly one topology must be configured" },
        { { standalone = "" }, "standalone address is required" },
        { { standalone = "   " }, "standalone address is required" },
        { { sentinel = { master_name = "m" } }, "sentinel addresses are required" },
        { { sentinel = { addresses = { addr } } }, "sentinel master name is required" },
        { { sentinel = { addresses = { "" }, master_name = "m" } }, "sentinel addresses cannot be empty" },
        { { cluster = {} }, "cluster addresses are required" },
        { { cluster = { addresses = { addr, " " } } }, "cluster addresses cannot be empty" },
        { { standalone = addr, static_password = { password = "x" },
            gcp_iam = { credentials_base64 = creds, service_account = "sa" } },
          "only one auth strategy can be configured" },
        { { standalone = addr, tls = { ca_cert_base64 = "  " } }, "TLS CA cert is required when TLS is configured" },
        { { standalone = addr, gcp_iam = { credentials_base64 = creds, service_account = "sa" } },
          "TLS must be configured when GCP IAM auth is enabled" },
        { { standalone = addr, tls = { ca_cert_base64 = ca }, gcp_iam = { credentials_base64 = creds, service_account = "" } },
          "service account is required for GCP IAM auth" },
        { { standalone = addr, tls = { ca_cert_base64 = ca },
            gcp_iam = { credentials_base64 = creds, service_account = "projects/x" } },
          "service account cannot contain '/' characters" },
        { { standalone = addr, tls = { ca_cert_base64 = ca }, gcp_iam = { credentials_base64 = "", service_account = "sa" } },
          "credentials are required for GCP IAM auth" },
        { { standalone = addr, tls = { ca_cert_base64 = ca },
            gcp_iam = { credentials_base64 = creds, service_account = "sa", token_lifetime = 600, refresh_every = 600 } },
          "RefreshEvery must be less than TokenLifetime to prevent token expiry before refresh" },
        { { standalone = addr, tls = { ca_cert_base64 = ca },
            gcp_iam = { credentials_base64 = creds, service_account = "sa", token_lifetime = 600, refresh_every = 900 } },
          "RefreshEvery must be less than TokenLifetime to prevent token expiry before refresh" },
    }
    for i, case in ipairs(cases) do
        it(string.format("rejects case %d: %s", i, case[2]), function()
            local err = support.fails("INVALID_CONFIG", invalid(case[2]), vk.new(case[1]))
            assert.are.equal(vk.codes.INVALID_CONFIG, err.status)
            assert.are.equal(vk.error_mt, getmetatable(err))
        end)
    end

    it("describes a config without validating it", function()
        local text = assert(vk.describe{ standalone = "   " })
        assert.matches("Standalone", text, 1, true)
    end)
end)

describe("misuse raises an error naming the field and the type", function()
    local addr = env.VK_TEST_ADDR
    -- The message after Lua's "file:line: " position prefix.
    local function raises(message, fn)
        local ok, err = pcall(fn)
        assert.is_false(ok)
        assert.are.equal(message, (tostring(err):gsub("^[^:]*:%d+: ", "")))
    end

    it("in config tables", function()
        raises("vkclient: config.standalone must be a string, got number", function() vk.new{ standalone = 6379 } end)
        raises("vkclient: config.cluster must be a table or a string, got number", function() vk.new{ cluster = 7000 } end)
        raises("vkclient: config.cluster[2] must be a string, got number", function() vk.new{ cluster = { addr, 7000 } } end)
        raises("vkclient: cluster.addresses[1] must be a string, got number", function() vk.new{ cluster = { addresses = { 1 } } } end)
        raises("vkclient: sentinel.addresses must be a string or a list of strings, got number",
            function() vk.new{ sentinel = { addresses = 5, master_name = "m" } } end)
        raises("vkclient: sentinel.master_name must be a string, got boolean",
            function() vk.new{ sentinel = { addresses = { addr }, master_name = true } } end)
        raises("vkclient: config.static_password must be a table, got string",
            function() vk.new{ standalone = addr, static_password = "pw" } end)
        raises("vkclient: static_password.password must be a string, got number",
            function() vk.new{ standalone = addr, static_password = { password = 1234 } } end)
        raises("vkclient: gcp_iam.token_lifetime must be a number, got string",
            function() vk.new{ standalone = addr, gcp_iam = { service_account = "sa", token_lifetime = "3600" } } end)
        raises("vkclient: config.tls must be a table, got string", function() vk.new{ standalone = addr, tls = "ca" } end)
        raises("vkclient: options.read_timeout must be a number, got string",
            function() vk.new{ standalone = addr, options = { read_timeout = "1" } } end)
        raises("vkclient: options.db must be an integer", function() vk.new{ standalone = addr, options = { db = 1.5 } } end)
    end)

    it("cluster takes its addresses alone too, and one address may be a plain string", function()
        assert.are.equal(vk.describe{ cluster = { addresses = { "a:1", "b:2" } } }, vk.describe{ cluster = { "a:1", "b:2" } })
        assert.are.equal(vk.describe{ cluster = { addresses = { "a:1" } } }, vk.describe{ cluster = "a:1" })
        assert.are.equal(vk.describe{ cluster = { addresses = { "a:1" } } }, vk.describe{ cluster = { addresses = "a:1" } })
        assert.are.equal(vk.describe{ sentinel = { addresses = { "a:1" }, master_name = "m" } },
            vk.describe{ sentinel = { addresses = "a:1", master_name = "m" } })
        support.fails("INVALID_CONFIG", invalid("cluster addresses cannot be empty"), vk.new{ cluster = { addr, " " } })
        support.fails("INVALID_CONFIG", invalid("exactly one topology must be configured"),
            vk.new{ standalone = addr, cluster = { addr } })
        -- A list with a named field is not a list: its fields are checked.
        raises("vkclient: cluster: field names must be strings", function() vk.new{ cluster = { addr, x = 1 } } end)
    end)

    it("in lock calls", function()
        local client = support.client()
        local locks = assert(vk.lock_manager(client))
        raises("vkclient: bad argument #1 (lock key must be a string, got number)", function() locks:try_lock(42) end)
        raises("vkclient: lock options.expiry must be a number, got string",
            function() locks:acquire(support.key("opts"), { expiry = "1" }) end)
        raises("vkclient: lock options.drift_factor must be a number, got string",
            function() locks:with_lock_options(support.key("opts"), { drift_factor = "0.1" }, function() end) end)
        raises("vkclient: lock_manager: element 2 is not a vkclient client", function() vk.lock_manager({ client, {} }) end)
        assert.has_error(function() vk.lock_manager("127.0.0.1:6379") end)
        assert.has_error(function() locks:acquire(support.key("opts"), 5) end)
        local h = assert(locks:try_lock(support.key("extend")))
        assert.has_error(function() h:extend("5") end)
        assert.is_true(h:unlock())
        locks:close()
        client:close()
    end)
end)

describe("runtime errors", function()
    it("IO: nothing listens on the port", function()
        support.fails("IO", "connection error: dial 127.0.0.1:1: Connection refused", vk.new{ standalone = "127.0.0.1:1" })
    end)

    it("TIMEOUT: the reply does not come within the read timeout", function()
        local client = support.client{ options = { read_timeout = 0.2, max_retries = -1 } }
        -- Writes wait out a 0.5 s pause of the server.
        assert.are.equal("OK", client:call("CLIENT", "PAUSE", "500", "WRITE"))
        local err = support.fails("TIMEOUT", nil, client:call("SET", support.key("paused"), "v"))
        assert.matches("^i/o timeout", tostring(err))
        support.sleep(0.5)   -- the pause is over
        -- A command that waits on the server has its own timeout instead.
        assert.are.equal(vk.null, client:call("BLPOP", support.key("never"), "0.4"))
        client:close()
    end)

    it("AUTH: a wrong password", function()
        local err = support.fails("AUTH", nil, vk.new{
            standalone = env.VK_TEST_ACL_ADDR, static_password = { password = "not-the-password" },
        })
        assert.matches("^authentication failed", tostring(err))
    end)

    it("TLS: the server certificate is signed by another CA", function()
        local err = support.fails("TLS", nil, vk.new{
            standalone = env.VK_TEST_TLS_ADDR, tls = { ca_cert_base64 = env.VK_TEST_OTHER_CA_B64 },
        })
        assert.matches("^TLS error", tostring(err))
    end)

    it("IAM: credentials that are not a service-account key, redacted", function()
        local err = support.fails("IAM", "GCP IAM token request failed: parsing credentials JSON failed (content redacted)",
            vk.new{
                standalone = env.VK_TEST_TLS_ADDR,
                tls = { ca_cert_base64 = env.VK_TEST_CA_B64 },
                gcp_iam = { credentials_base64 = "bm90IGpzb24=", service_account = "sa@p.iam.gserviceaccount.com" },
            })
        assert.is_nil(tostring(err):find("not json", 1, true))
    end)

    it("SERVER: an error reply", function()
        local client = support.client()
        local err = support.fails("SERVER", nil, client:call("NOSUCHCOMMAND"))
        assert.matches("^ERR unknown command", tostring(err))
        client:close()
    end)

    it("RECONNECT_RATE_LIMITED: reconnects that keep failing are rate limited", function()
        local admin = support.client()
        local user, pass = "lua-rl-" .. support.flavour:gsub("%.", ""), "pw-" .. math.random(1e6)
        assert.are.equal("OK", admin:call("ACL", "SETUSER", user, "on", ">" .. pass, "~*", "&*", "+@all"))
        local client = assert(vk.new{
            standalone = env.VK_TEST_ADDR,
            static_password = { username = user, password = pass },
            options = { max_retries = -1 },
        })
        assert.are.equal("PONG", client:call("PING"))
        -- The user's password changes and its connections are dropped: every
        -- reconnect now fails with AUTH, and the next ones are rate limited.
        admin:call("ACL", "SETUSER", user, "resetpass", ">another-" .. pass)
        admin:call("CLIENT", "KILL", "USER", user)
        local saw_limit
        for _ = 1, 5 do
            local ok, err = client:call("PING")
            assert.is_nil(ok)
            if err.code == "RECONNECT_RATE_LIMITED" then
                saw_limit = err
                break
            end
        end
        assert.is_table(saw_limit)
        assert.matches("^redis reconnect: rate%-limited %(next attempt in [%d%.]+[mµn]?s%)$", tostring(saw_limit))
        client:close()
        admin:call("ACL", "DELUSER", user)
        admin:close()
    end)

    it("NIL_CLIENT: every call on a closed client", function()
        local client = support.client()
        client:close()
        local text = "redis client is nil"
        support.fails("NIL_CLIENT", text, client:call("GET", "x"))
        support.fails("NIL_CLIENT", text, client:status())
        support.fails("NIL_CLIENT", text, client:last_refresh_error())
        support.fails("NIL_CLIENT", text, client:connect())
        support.fails("NIL_CLIENT", text, client:tick())
        support.fails("NIL_CLIENT", text, client:pipeline())
        support.fails("NIL_CLIENT", text, vk.lock_manager(client))
    end)
end)
