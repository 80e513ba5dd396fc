/*
 * The bytes-mode client (vk_hosted) for require "vkclient.ngx"
 * (vkclient/ngx.lua), which owns the sockets: the core decides everything,
 * this file only converts. Hidden from users: vk._hosted_new and
 * vk._hosted_from_url.
 *
 * An operation (command, pipeline, lock acquisition, unlock, extend)
 * returns a ticket at once; its completion runs later inside a call into
 * this client (received, wrote, tick, ...) and appends
 *   ticket, value, err
 * to the client's completions table, which h:take_done() hands over: value
 * is the reply in Lua form (a lock handle; true for unlock/extend), or
 * false; err is an error object, or false. A try that finds the lock taken
 * gives false, false.
 */
#include "vklua.h"

#include <vkclient_async.h>

#include <stdlib.h>
#include <string.h>

typedef enum op_kind {
    OP_COMMAND,
    OP_PIPELINE,
    OP_LOCK,          /* an acquisition: its id is the manager's */
    OP_DONE           /* unlock, extend: no id */
} op_kind;

typedef struct hosted_op hosted_op;
typedef struct hosted_ud hosted_ud;

struct hosted_op {
    hosted_op *prev, *next;     /* in the client's list, until it completes */
    hosted_ud *h;
    lua_Integer ticket;
    op_kind kind;
    uint64_t id;                /* for cancel */
};

struct hosted_ud {
    vk_hosted *client;          /* NULL once closed */
    vk_async_lock_manager *locks;   /* made on first use */
    hosted_op *ops;
    lua_Integer next_ticket;
    int done_ref;               /* registry: the completions table */
    int has_sinks;              /* a logger or metrics function: events to poll */
};

static hosted_ud *check_hosted(lua_State *L)
{
    hosted_ud *h = vklua_check_self(L, VKLUA_HOSTED_MT);
    if (h->client == NULL)
        luaL_error(L, "vkclient.ngx: the client is closed");
    return h;
}

/* ---- completions --------------------------------------------------------- */

typedef struct completion {
    hosted_op *op;
    vk_status status;
    const vk_reply *reply;
    vk_lock *lock;
    int lock_contended;         /* a try found the lock taken */
} completion;

/* Appends ticket, value, err to the completions table (under protection:
 * a memory error cannot unwind through the core). */
static int append_completion(lua_State *L)
{
    completion *c = lua_touserdata(L, 1);
    hosted_ud *h = c->op->h;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->done_ref);
    int t = lua_gettop(L);
    int n = (int)vklua_rawlen(L, t);
    lua_pushinteger(L, c->op->ticket);
    lua_rawseti(L, t, n + 1);
    if (c->status != VK_OK) {
        lua_pushboolean(L, 0);
        const char *message = vk_last_error();
        if (vk_last_status() != c->status || message[0] == '\0')
            message = vk_strerror(c->status);
        vklua_push_error_object(L, c->status, message, strlen(message));
    } else if (c->op->kind == OP_LOCK) {
        if (c->lock != NULL) {
            lua_pushvalue(L, 2);   /* the client keeps the lock's node alive */
            vklua_push_owned_lock(L, c->lock, lua_gettop(L));
            c->lock = NULL;        /* owned by the handle now */
            lua_remove(L, -2);
        } else {
            lua_pushboolean(L, 0);
        }
        lua_pushboolean(L, 0);
    } else if (c->op->kind == OP_DONE) {
        lua_pushboolean(L, 1);
        lua_pushboolean(L, 0);
    } else {
        vklua_push_reply(L, c->reply);
        lua_pushboolean(L, 0);
    }
    lua_rawseti(L, t, n + 3);
    lua_rawseti(L, t, n + 2);
    return 0;
}

static void unlink_op(hosted_op *op)
{
    hosted_ud *h = op->h;
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        h->ops = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
}

/* Every completion: the Lua state inside the call that runs it takes the
 * result. Outside any call (the client is being freed by the collector)
 * there is nobody to tell. */
static void complete(hosted_op *op, vk_status status, const vk_reply *reply, vk_lock *lock)
{
    unlink_op(op);
    lua_State *L = vklua_active_state;
    completion c = {op, status, reply, lock, 0};
    if (L != NULL && op->h->done_ref != LUA_NOREF && lua_checkstack(L, 8)) {
        int keeper = lua_gettop(L) >= 1 ? 1 : 0;   /* the client userdata */
        lua_pushcfunction(L, append_completion);
        lua_pushlightuserdata(L, &c);
        if (keeper)
            lua_pushvalue(L, keeper);
        else
            lua_pushnil(L);
        if (lua_pcall(L, 2, 0, 0) != 0)
            lua_pop(L, 1);
    }
    if (c.lock != NULL)
        vk_lock_free(c.lock);
    free(op);
}

static void on_reply(void *userdata, vk_status status, vk_reply *reply)
{
    complete(userdata, status, reply, NULL);
    vk_reply_free(reply);
}

static void on_lock(void *userdata, vk_status status, vk_lock *lock)
{
    complete(userdata, status, NULL, lock);
}

static void on_done(void *userdata, vk_status status)
{
    complete(userdata, status, NULL, NULL);
}

/* A new operation record (its ticket next), or NULL (out of memory). */
static hosted_op *new_op(hosted_ud *h, op_kind kind)
{
    hosted_op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return NULL;
    op->h = h;
    op->kind = kind;
    op->ticket = ++h->next_ticket;
    op->next = h->ops;
    if (h->ops != NULL)
        h->ops->prev = op;
    h->ops = op;
    return op;
}

/* The operation was queued (its ticket returned), or refused (undone). */
static int queued(lua_State *L, hosted_op *op, vk_status st)
{
    if (st != VK_OK) {
        unlink_op(op);
        free(op);
        return vklua_return_failure(L, st);
    }
    lua_pushinteger(L, op->ticket);
    return 1;
}

/* ---- the client ------------------------------------------------------------ */

static int hosted_close(lua_State *L)
{
    hosted_ud *h = vklua_check_self(L, VKLUA_HOSTED_MT);
    lua_State *previous = vklua_enter(L);
    if (h->client != NULL) {
        /* What is in flight completes, cancelled, into the table. */
        vk_async_lock_manager_free(h->locks);
        h->locks = NULL;
        vk_hosted_free(h->client);
        h->client = NULL;
    }
    vklua_leave(previous);
    return 0;
}

/* The collector: nobody can take completions any more. */
static int hosted_gc(lua_State *L)
{
    hosted_ud *h = vklua_check_self(L, VKLUA_HOSTED_MT);
    luaL_unref(L, LUA_REGISTRYINDEX, h->done_ref);
    h->done_ref = LUA_NOREF;
    return hosted_close(L);
}

static int make_hosted(lua_State *L, vklua_config_box *box, int has_sinks)
{
    hosted_ud *h = lua_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    h->has_sinks = has_sinks;
    h->done_ref = LUA_NOREF;
    luaL_getmetatable(L, VKLUA_HOSTED_MT);
    lua_setmetatable(L, -2);
    lua_newtable(L);
    h->done_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_new(&h->client, box->cfg);
    vk_config_free(box->cfg);
    box->cfg = NULL;
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return 1;
}

/* vk._hosted_new(config) -> client | nil, err: validated now, no I/O. */
static int l_hosted_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    vklua_config_box *box = vklua_push_config_box(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_config_new(&box->cfg);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    int has_sinks = 0;
    st = vklua_apply_config(L, 1, box->cfg, 1, &has_sinks);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return make_hosted(L, box, has_sinks);
}

/* vk._hosted_from_url(url [, extra]) -> client | nil, err */
static int l_hosted_from_url(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    vklua_config_box *box = vklua_push_config_box(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_config_from_url(&box->cfg, url);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    int has_sinks = 0;
    if (lua_istable(L, 2) && (st = vklua_apply_config(L, 2, box->cfg, 0, &has_sinks)) != VK_OK)
        return vklua_return_failure(L, st);
    return make_hosted(L, box, has_sinks);
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
    hosted_op *op = new_op(h, OP_COMMAND);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_command(h->client, argc, argv, lens, on_reply, op, &op->id);
    vklua_leave(previous);
    return queued(L, op, st);
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
    hosted_op *op = new_op(h, OP_PIPELINE);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_pipeline_exec(p->p, on_reply, op, &op->id);
    vklua_leave(previous);
    return queued(L, op, st);
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
    lua_Integer ticket = luaL_checkinteger(L, 2);
    hosted_op *op = h->ops;
    while (op != NULL && op->ticket != ticket)
        op = op->next;
    if (op == NULL || op->kind == OP_DONE) {
        lua_pushnil(L);
        const char *text = "invalid argument: no such operation in flight";
        vklua_push_error_object(L, VK_ERR_INVALID_ARGUMENT, text, strlen(text));
        return 2;
    }
    lua_State *previous = vklua_enter(L);
    vk_status st = op->kind == OP_LOCK ? vk_async_lock_cancel(h->locks, op->id)
                                       : vk_hosted_cancel(h->client, op->id);
    vklua_leave(previous);
    return vklua_return_status(L, st);
}

/* h:take_done() -> the completions table (ticket, value, err, ...), and a
 * new empty one takes its place. */
static int hosted_take_done(lua_State *L)
{
    hosted_ud *h = vklua_check_self(L, VKLUA_HOSTED_MT);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->done_ref);
    if (vklua_rawlen(L, -1) == 0)
        return 1;
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, h->done_ref);
    return 1;
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

static int hosted_connected(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    uint64_t conn = check_conn(L);
    lua_State *previous = vklua_enter(L);
    vk_hosted_connected(h->client, conn);
    vklua_leave(previous);
    return 0;
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

/* ---- locks ------------------------------------------------------------------------ */

static vk_status ensure_locks(hosted_ud *h)
{
    if (h->locks != NULL)
        return VK_OK;
    return vk_hosted_lock_manager_new(&h->locks, &h->client, 1);
}


/* h:lock_try(key) / h:lock_acquire(key [, options]) -> ticket | nil, err */
static int lock_start(lua_State *L, int acquire)
{
    hosted_ud *h = check_hosted(L);
    size_t len;
    const char *key = luaL_checklstring(L, 2, &len);   /* empty: the core's refusal */
    vk_lock_options opts;
    int has_opts = acquire && !lua_isnoneornil(L, 3);
    if (has_opts)
        vklua_read_lock_options(L, 3, &opts);
    lua_State *previous = vklua_enter(L);
    vk_status st = ensure_locks(h);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    hosted_op *op = new_op(h, OP_LOCK);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    previous = vklua_enter(L);
    st = acquire ? vk_async_lock_acquire(h->locks, key, len, has_opts ? &opts : NULL, on_lock,
                                         op, &op->id)
                 : vk_async_lock_try(h->locks, key, len, on_lock, op, &op->id);
    vklua_leave(previous);
    return queued(L, op, st);
}

static int hosted_lock_try(lua_State *L)
{
    return lock_start(L, 0);
}

static int hosted_lock_acquire(lua_State *L)
{
    return lock_start(L, 1);
}

/* h:lock_unlock(handle) / h:lock_extend(handle, seconds) -> ticket | nil, err */
static int hosted_lock_unlock(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    vk_lock *lock = vklua_check_lock(L, 2);
    hosted_op *op = new_op(h, OP_DONE);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_async_lock_unlock(lock, on_done, op);
    vklua_leave(previous);
    return queued(L, op, st);
}

static int hosted_lock_extend(lua_State *L)
{
    hosted_ud *h = check_hosted(L);
    vk_lock *lock = vklua_check_lock(L, 2);
    luaL_checktype(L, 3, LUA_TNUMBER);
    int64_t ms = vklua_seconds_to_ms(L, 3, "expiry");
    hosted_op *op = new_op(h, OP_DONE);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_async_lock_extend(lock, ms, on_done, op);
    vklua_leave(previous);
    return queued(L, op, st);
}

const luaL_Reg vklua_hosted_methods[] = {
    {"command", hosted_command},
    {"pipeline_new", hosted_pipeline_new},
    {"pipeline_exec", hosted_pipeline_exec},
    {"cancel", hosted_cancel},
    {"take_done", hosted_take_done},
    {"connection_count", hosted_connection_count},
    {"wants", hosted_wants},
    {"connected", hosted_connected},
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
    {"lock_try", hosted_lock_try},
    {"lock_acquire", hosted_lock_acquire},
    {"lock_unlock", hosted_lock_unlock},
    {"lock_extend", hosted_lock_extend},
    {"close", hosted_close},
    {NULL, NULL},
};

const luaL_Reg vklua_hosted_meta[] = {
    {"__gc", hosted_gc},
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
