/*
 * The bytes-mode client (vk_hosted) for require "vkclient.ngx"
 * (vkclient/ngx.lua), which owns the sockets: the core decides everything,
 * this file only converts. Hidden from users: vk._hosted_new and
 * vk._hosted_from_url. Commands, pipelines, scan pages and scripts (the
 * last two in vklua_scan.c and vklua_script.c) return tickets and complete
 * into the shared completions table (vklua_ops.c); the host reads each
 * connection's wants and reports what its sockets did.
 */
#include "vklua.h"

#include <vkclient_async.h>

#include <stdlib.h>
#include <string.h>

struct vklua_hosted {
    vk_hosted *client;          /* NULL once closed */
    vklua_op_list ops;          /* its commands and pipelines in flight */
    int has_sinks;              /* a logger or metrics function: events to poll */
};

typedef struct vklua_hosted hosted_ud;

static hosted_ud *check_hosted(lua_State *L)
{
    hosted_ud *h = vklua_check_self(L, VKLUA_HOSTED_MT);
    if (h->client == NULL)
        luaL_error(L, "vkclient.ngx: the client is closed");
    return h;
}

vk_hosted *vklua_check_hosted(lua_State *L, int index)
{
    vklua_op_list *ops;
    return vklua_check_hosted_ops(L, index, &ops);
}

vk_hosted *vklua_check_hosted_ops(lua_State *L, int index, vklua_op_list **ops)
{
    hosted_ud *h = luaL_checkudata(L, index, VKLUA_HOSTED_MT);
    if (h->client == NULL)
        luaL_error(L, "vkclient.ngx: the client is closed");
    *ops = &h->ops;
    return h->client;
}

/* ---- the client ------------------------------------------------------------ */

/* h:close(): what is in flight completes, cancelled, into the table. */
static int hosted_close(lua_State *L)
{
    hosted_ud *h = vklua_check_self(L, VKLUA_HOSTED_MT);
    lua_State *previous = vklua_enter(L);
    if (h->client != NULL) {
        vk_hosted_free(h->client);
        h->client = NULL;
    }
    vklua_leave(previous);
    return 0;
}

static int make_hosted(lua_State *L, vklua_config_box *box, int has_sinks)
{
    hosted_ud *h = lua_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    h->has_sinks = has_sinks;
    luaL_getmetatable(L, VKLUA_HOSTED_MT);
    lua_setmetatable(L, -2);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_new(&h->client, box->cfg);
    vk_config_free(box->cfg);
    box->cfg = NULL;
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return 1;
}

/* vk._hosted_new(config) -> client | nil, err: validated now, no I/O.
 * vk._hosted_from_url(url [, extra]) -> client | nil, err */
static int hosted_new_from(lua_State *L, int from_url)
{
    vklua_config_box *box;
    int has_sinks = 0;
    vk_status st = vklua_config_from_args(L, from_url, &box, &has_sinks);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return make_hosted(L, box, has_sinks);
}

static int l_hosted_new(lua_State *L)
{
    return hosted_new_from(L, 0);
}

static int l_hosted_from_url(lua_State *L)
{
    return hosted_new_from(L, 1);
}

/* h:command(...) -> ticket | nil, err */
static int hosted_command(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    const char *small_argv[VKLUA_SMALL_ARGC];
    size_t small_lens[VKLUA_SMALL_ARGC];
    const char **argv;
    size_t *lens;
    int argc = vklua_collect_args(L, 2, small_argv, small_lens, &argv, &lens);
    vklua_op *op = vklua_op_new(L, &h->ops, VKLUA_OP_REPLY, 0);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_command(h->client, argc, argv, lens, vklua_op_on_reply, op,
                                     &op->id);
    vklua_leave(previous);
    return vklua_op_queued(L, op, st);
}

/* ---- pipelines ---------------------------------------------------------------- */

typedef struct hosted_pipeline_ud {
    vk_pipeline *p;             /* NULL once closed */
} hosted_pipeline_ud;

static hosted_pipeline_ud *check_pipeline(lua_State *L, int index)
{
    hosted_pipeline_ud *p = luaL_checkudata(L, index, VKLUA_HOSTED_PIPELINE_MT);
    if (p->p == NULL)
        luaL_error(L, "vkclient.ngx: the pipeline is closed");
    return p;
}

/* h:pipeline_new() -> pipeline | nil, err; the pipeline keeps h alive. */
static int hosted_pipeline_new(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    hosted_pipeline_ud *p = lua_newuserdata(L, sizeof *p);
    p->p = NULL;
    luaL_getmetatable(L, VKLUA_HOSTED_PIPELINE_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 1);
    vklua_set_uservalue(L, -2);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_pipeline_new(&p->p, h->client);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return 1;
}

/* p:append(...) -> true | nil, err: the blocking pipeline's refusals. */
static int pipeline_append(lua_State *L)
{
    hosted_pipeline_ud *p = check_pipeline(L, 1);
    const char *small_argv[VKLUA_SMALL_ARGC];
    size_t small_lens[VKLUA_SMALL_ARGC];
    const char **argv;
    size_t *lens;
    int argc = vklua_collect_args(L, 2, small_argv, small_lens, &argv, &lens);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_pipeline_append(p->p, argc, argv, lens);
    vklua_leave(previous);
    return vklua_return_status(L, st);
}

static int pipeline_length(lua_State *L)
{
    hosted_pipeline_ud *p = luaL_checkudata(L, 1, VKLUA_HOSTED_PIPELINE_MT);
    lua_pushinteger(L, p->p != NULL ? (lua_Integer)vk_pipeline_length(p->p) : 0);
    return 1;
}

static int pipeline_close(lua_State *L)
{
    hosted_pipeline_ud *p = luaL_checkudata(L, 1, VKLUA_HOSTED_PIPELINE_MT);
    vk_pipeline_free(p->p);
    p->p = NULL;
    return 0;
}

/* h:pipeline_exec(p) -> ticket | nil, err; p is empty again at once. */
static int hosted_pipeline_exec(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    hosted_pipeline_ud *p = check_pipeline(L, 2);
    vklua_op *op = vklua_op_new(L, &h->ops, VKLUA_OP_REPLY, 0);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_pipeline_exec(p->p, vklua_op_on_reply, op, &op->id);
    vklua_leave(previous);
    return vklua_op_queued(L, op, st);
}

const luaL_Reg vklua_hosted_pipeline_methods[] = {
    {"append", pipeline_append},
    {"length", pipeline_length},
    {"close", pipeline_close},
    {NULL, NULL},
};

const luaL_Reg vklua_hosted_pipeline_meta[] = {
    {"__gc", pipeline_close},
    {NULL, NULL},
};

/* h:cancel(ticket) -> true | nil, err: the operation completes, cancelled,
 * into the table. */
static int hosted_cancel(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    vklua_op *op = vklua_op_find(&h->ops, luaL_checkinteger(L, 2));
    if (op == NULL)
        return vklua_no_such_operation(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_cancel(h->client, op->id);
    vklua_leave(previous);
    return vklua_return_status(L, st);
}

/* ---- the connections' wants -------------------------------------------------- */

/* h:connection_count() -> n */
static int hosted_connection_count(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    lua_pushinteger(L, (lua_Integer)vk_hosted_connection_count(h->client));
    return 1;
}

/* h:wants(i) (1-based) -> conn, connect, read, output, host, port, path,
 * tls, server_name */
static int hosted_wants(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    vk_hosted_wants w;
    if (i < 1 || vk_hosted_get_wants(h->client, (size_t)(i - 1), &w) != VK_OK)
        return 0;
    lua_pushinteger(L, (lua_Integer)w.conn);
    lua_pushboolean(L, w.connect);
    lua_pushboolean(L, w.read);
    if (w.output_len > 0)
        lua_pushlstring(L, w.output, w.output_len);
    else
        lua_pushnil(L);
    if (w.host != NULL)
        lua_pushstring(L, w.host);
    else
        lua_pushnil(L);
    lua_pushinteger(L, w.port);
    if (w.path != NULL)
        lua_pushstring(L, w.path);
    else
        lua_pushnil(L);
    lua_pushboolean(L, w.tls);
    if (w.server_name != NULL)
        lua_pushstring(L, w.server_name);
    else
        lua_pushnil(L);
    return 9;
}

static uint64_t check_conn(lua_State *L)
{
    return (uint64_t)luaL_checkinteger(L, 2);
}

/* The status a socket's failure text stands for. */
static vk_status failure_status(lua_State *L, int index)
{
    const char *why = luaL_optstring(L, index, "");
    if (strstr(why, "timeout") != NULL || strstr(why, "timed out") != NULL)
        return VK_ERR_TIMEOUT;
    return VK_ERR_IO;
}

/* h:connected(conn [, reused]): reused: taken from the keepalive pool
 * h:pool_name(conn) named, so no handshake is sent again. */
static int hosted_connected(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    uint64_t conn = check_conn(L);
    int reused = lua_toboolean(L, 3);
    lua_State *previous = vklua_enter(L);
    if (reused)
        vk_hosted_connected_reused(h->client, conn);
    else
        vk_hosted_connected(h->client, conn);
    vklua_leave(previous);
    return 0;
}

/* h:pool_name(conn) -> name | nil: the keepalive pool of a connection to
 * be opened, or of one the core gave up clean (to put it there). */
static int hosted_pool_name(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    const char *name = vk_hosted_pool_name(h->client, check_conn(L));
    if (name == NULL)
        return 0;
    lua_pushstring(L, name);
    return 1;
}

/* h:release(conn) -> true | nil, err: the core gives conn up for the pool
 * once a PING's reply is in, if it is clean. */
static int hosted_release(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    uint64_t conn = check_conn(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_release(h->client, conn);
    vklua_leave(previous);
    return vklua_return_status(L, st);
}

/* h:connect_failed(conn, why [, tls]) */
static int hosted_connect_failed(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    uint64_t conn = check_conn(L);
    const char *why = luaL_optstring(L, 3, "connection failed");
    vk_status st = lua_toboolean(L, 4) ? VK_ERR_TLS : failure_status(L, 3);
    lua_State *previous = vklua_enter(L);
    vk_hosted_connect_failed(h->client, conn, st, why);
    vklua_leave(previous);
    return 0;
}

static int hosted_wrote(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    uint64_t conn = check_conn(L);
    lua_Integer n = luaL_checkinteger(L, 3);
    lua_State *previous = vklua_enter(L);
    vk_hosted_wrote(h->client, conn, n > 0 ? (size_t)n : 0);
    vklua_leave(previous);
    return 0;
}

static int hosted_received(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    uint64_t conn = check_conn(L);
    size_t len;
    const char *bytes = luaL_checklstring(L, 3, &len);
    lua_State *previous = vklua_enter(L);
    vk_hosted_received(h->client, conn, bytes, len);
    vklua_leave(previous);
    return 0;
}

/* h:lost(conn, why) */
static int hosted_lost(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    uint64_t conn = check_conn(L);
    const char *why = luaL_optstring(L, 3, "connection closed");
    vk_status st = failure_status(L, 3);
    lua_State *previous = vklua_enter(L);
    vk_hosted_lost(h->client, conn, st, why);
    vklua_leave(previous);
    return 0;
}

static int hosted_tick(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    lua_State *previous = vklua_enter(L);
    vk_hosted_tick(h->client);
    vklua_leave(previous);
    return 0;
}

/* h:tick_in_ms() -> ms (-1: no need) */
static int hosted_tick_in_ms(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    lua_pushnumber(L, (lua_Number)vk_hosted_tick_in_ms(h->client));
    return 1;
}

/* h:poll_events(): the logger and metrics events queued by the core's
 * background threads (the IAM refresh) reach their functions now; those of
 * the client's own calls already did. */
static int hosted_poll_events(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    if (h->has_sinks) {
        lua_State *previous = vklua_enter(L);
        (void)vk_hosted_poll_events(h->client, 0);
        vklua_leave(previous);
    }
    return 0;
}

static int hosted_pending(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    lua_pushinteger(L, (lua_Integer)vk_hosted_pending(h->client));
    return 1;
}

static int hosted_is_connected(lua_State *L)
{
    hosted_ud *h = vklua_check_self(L, VKLUA_HOSTED_MT);
    lua_pushboolean(L, h->client != NULL && vk_hosted_is_connected(h->client));
    return 1;
}

static int hosted_status(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    vk_snapshot *snap = NULL;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_snapshot(&snap, h->client);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return vklua_return_snapshot(L, snap);
}

const luaL_Reg vklua_hosted_methods[] = {
    {"command", hosted_command},
    {"pipeline_new", hosted_pipeline_new},
    {"pipeline_exec", hosted_pipeline_exec},
    {"scan_new", vklua_hosted_scan_new},
    {"scan_next", vklua_hosted_scan_next},
    {"run_script", vklua_hosted_run_script},
    {"cancel", hosted_cancel},
    {"connection_count", hosted_connection_count},
    {"wants", hosted_wants},
    {"connected", hosted_connected},
    {"pool_name", hosted_pool_name},
    {"release", hosted_release},
    {"connect_failed", hosted_connect_failed},
    {"wrote", hosted_wrote},
    {"received", hosted_received},
    {"lost", hosted_lost},
    {"tick", hosted_tick},
    {"tick_in_ms", hosted_tick_in_ms},
    {"pending", hosted_pending},
    {"poll_events", hosted_poll_events},
    {"is_connected", hosted_is_connected},
    {"status", hosted_status},
    {"close", hosted_close},
    {NULL, NULL},
};

const luaL_Reg vklua_hosted_meta[] = {
    {"__gc", hosted_close},
    {NULL, NULL},
};

/* vk._error(status, message) -> an error object, as the core's. */
static int l_error(lua_State *L)
{
    lua_Integer status = luaL_checkinteger(L, 1);
    size_t len;
    const char *message = luaL_checklstring(L, 2, &len);
    vklua_push_error_object(L, (vk_status)status, message, len);
    return 1;
}

/* vk._strerror(status) -> the status's text */
static int l_strerror(lua_State *L)
{
    lua_pushstring(L, vk_strerror((vk_status)luaL_checkinteger(L, 1)));
    return 1;
}

const luaL_Reg vklua_hosted_functions[] = {
    {"_hosted_new", l_hosted_new},
    {"_hosted_from_url", l_hosted_from_url},
    {"_error", l_error},
    {"_strerror", l_strerror},
    {NULL, NULL},
};
