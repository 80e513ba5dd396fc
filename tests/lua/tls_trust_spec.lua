-- TLS trust from a CA file and from the system store. OpenSSL reads
-- SSL_CERT_FILE when a client is created and Lua cannot set an environment
-- variable, so the system-store cases run in a child interpreter with
-- SSL_CERT_FILE pointing at the harness CA (or unset: the machine's own
-- store, which does not hold it).
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()
local env = support.env

local UNTRUSTED = "certificate verify failed: self-signed certificate in certificate chain"

local interpreters = { luajit = "luajit", ["5.1"] = "lua5.1", ["5.4"] = "lua5.4" }

-- Runs `body` (Lua code that may use `vk` and print) in a child of the
-- same interpreter, with the system store given by ca_file (nil: unset).
local function in_child(ca_file, body)
    local code = string.format("package.cpath = %q .. '/?.so;' .. package.cpath\n" ..
                               "local vk = require 'vkclient'\n%s", support.module_dir, body)
    local store = ca_file and ("SSL_CERT_FILE=" .. support.shell_quote(ca_file)) or "-u SSL_CERT_FILE"
    return support.run(string.format("env -u SSL_CERT_DIR %s %s -e %s", store,
                                     interpreters[support.flavour], support.shell_quote(code)))
end

-- Child code: connects with `config` (Lua source of the vk.new argument or
-- a from_url call) and prints PONG, or the error.
local function ping_with(open)
    return "local c, err = " .. open .. "\n" ..
           "if not c then print('error: ' .. tostring(err)) os.exit(1) end\n" ..
           "print(c:call('PING'))\nc:close()\n"
end

describe("TLS trust", function()
    it("trusts a CA file", function()
        local client = assert(vk.new{ standalone = env.VK_TEST_TLS_ADDR, tls = { ca_file = env.VK_TEST_CA_FILE } })
        assert.are.equal("PONG", client:call("PING"))
        client:close()
        local described = vk.describe{ standalone = env.VK_TEST_TLS_ADDR, tls = { ca_file = env.VK_TEST_CA_FILE } }
        assert.truthy(described:find("CAFile:" .. env.VK_TEST_CA_FILE, 1, true), described)
    end)

    it("names a CA file that cannot be read", function()
        support.fails("INVALID_CONFIG",
                      'invalid redis config: TLS CA file "/nonexistent/ca.pem" cannot be read: No such file or directory',
                      vk.new{ standalone = env.VK_TEST_TLS_ADDR, tls = { ca_file = "/nonexistent/ca.pem" } })
        assert.has_error(function()
            vk.new{ standalone = env.VK_TEST_TLS_ADDR, tls = { ca_file = 42 } }
        end)
    end)

    it("trusts the system store when asked, which SSL_CERT_FILE changes", function()
        local open = string.format("vk.new{ standalone = %q, tls = { use_system_ca = true } }", env.VK_TEST_TLS_ADDR)
        local status, output = in_child(env.VK_TEST_CA_FILE, ping_with(open))
        assert.are.equal(0, status, output)
        assert.are.equal("PONG\n", output)
        status, output = in_child(nil, ping_with(open))
        assert.are.equal(1, status, output)
        assert.truthy(output:find(UNTRUSTED, 1, true), output)
    end)

    it("uses the system store for a rediss:// URL without a CA", function()
        local url = "rediss://" .. env.VK_TEST_TLS_ADDR
        local open = string.format("vk.from_url(%q)", url)
        local status, output = in_child(env.VK_TEST_CA_FILE, ping_with(open))
        assert.are.equal(0, status, output)
        assert.are.equal("PONG\n", output)
        -- A CA given with the URL replaces the system store.
        open = string.format("vk.from_url(%q, { tls = { ca_cert_base64 = %q } })", url, env.VK_TEST_OTHER_CA_B64)
        status, output = in_child(env.VK_TEST_CA_FILE, ping_with(open))
        assert.are.equal(1, status, output)
        assert.truthy(output:find(UNTRUSTED, 1, true), output)
        support.fails("INVALID_CONFIG", "invalid redis config: TLS CA cert is required when TLS is configured",
                      vk.from_url(url, { tls = { use_system_ca = false } }))
    end)
end)
