-- Commands that would change a pooled connection for its next caller are
-- refused before anything is sent; a transaction inside one pipeline runs.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local support = require "support"
local vk = support.vk()

local PREFIX = "command not allowed on a shared connection: "
local SELECT_TEXT = PREFIX .. "SELECT changes the database of the connection; "
    .. "choose the database with the db connection option"
local MULTI_TEXT = PREFIX .. "MULTI leaves the connection in a transaction; "
    .. "send MULTI ... EXEC in one pipeline (or use a transaction pipeline or a session)"
local WATCH_TEXT = PREFIX .. "WATCH leaves keys watched on the connection; "
    .. "use a session"

describe("commands a shared connection refuses", function()
    local client

    before_each(function()
        client = support.client{ options = { pool_size = 1 } }   -- one connection, shared
    end)

    after_each(function()
        client:close()
    end)

    it("refuses SELECT; the database stays", function()
        local key = support.key("refused")
        local connection = client:call("CLIENT", "ID")
        assert.are.equal("OK", client:call("SET", key, "zero"))
        local err = support.fails("COMMAND_NOT_ALLOWED", SELECT_TEXT, client:call("SELECT", "1"))
        assert.are.equal(30, err.status)
        assert.are.equal(vk.codes.COMMAND_NOT_ALLOWED, err.status)
        support.fails("COMMAND_NOT_ALLOWED", SELECT_TEXT, client:call("select", 1))
        assert.are.equal("zero", client:call("GET", key))
        assert.are.equal(connection, client:call("CLIENT", "ID"))
    end)

    it("refuses MULTI; nothing is queued afterwards", function()
        local connection = client:call("CLIENT", "ID")
        support.fails("COMMAND_NOT_ALLOWED", MULTI_TEXT, client:call("MULTI"))
        support.fails("COMMAND_NOT_ALLOWED", MULTI_TEXT, client:call("Multi"))
        assert.are.equal("OK", client:call("SET", support.key("refused"), "v"))
        local err = support.fails("COMMAND_NOT_ALLOWED", nil, client:call("CLIENT", "REPLY", "OFF"))
        assert.are.equal(PREFIX .. "CLIENT REPLY", tostring(err):sub(1, #PREFIX + 12))
        assert.are.equal(connection, client:call("CLIENT", "ID"))
    end)

    it("runs MULTI ... EXEC inside one pipeline", function()
        local key, counter = support.key("tx"), support.key("n")
        local pl = client:pipeline()
        pl:call("MULTI"):call("SET", key, "v"):call("INCR", counter):call("EXEC")
        assert.are.same({ "OK", "QUEUED", "QUEUED", { "OK", 1 } }, assert(pl:run()))
        pl:call("multi"):call("INCR", counter):call("discard")
        assert.are.same({ "OK", "QUEUED", "OK" }, assert(pl:run()))
        assert.are.equal(2, client:call("INCR", counter))
    end)

    it("refuses WATCH and an unbalanced MULTI in a pipeline, sending nothing", function()
        local key = support.key("pipe")
        local pl = client:pipeline()
        assert(pl:call("SET", key, "sent"))
        support.fails("COMMAND_NOT_ALLOWED", WATCH_TEXT, pl:call("WATCH", key))
        support.fails("COMMAND_NOT_ALLOWED", WATCH_TEXT, pl:run())
        assert.are.equal(0, pl:length())
        pl:call("MULTI"):call("SET", key, "sent")
        support.fails("COMMAND_NOT_ALLOWED",
            PREFIX .. "MULTI without EXEC or DISCARD; end the transaction in the same pipeline",
            pl:run())
        assert.are.equal(vk.null, client:call("GET", key))
        assert.are.same({ "PONG" }, assert(pl:call("PING"):run()))
    end)
end)
