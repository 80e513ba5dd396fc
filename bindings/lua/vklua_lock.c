/*
 * Locks: lock options tables (seconds), lock handles and the lock manager
 * (vk.lock_manager over one client or a quorum of clients), with_lock
 * running a Lua function under the lock.
 */
#include "vklua.h"

#include <string.h>

/* ---- lock options -------------------------------------------------------- */

static void push_lock_options(lua_State *L, const vk_lock_options *opts)
{
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, (lua_Number)opts->expiry_ms / 1000.0);
    lua_setfield(L, -2, "expiry");
    lua_pushinteger(L, opts->tries);
    lua_setfield(L, -2, "tries");
    lua_pushnumber(L, (lua_Number)opts->retry_delay_ms / 1000.0);
    lua_setfield(L, -2, "retry_delay");
    lua_pushnumber(L, opts->drift_factor);
    lua_setfield(L, -2, "drift_factor");
    lua_pushboolean(L, opts->auto_renew);
    lua_setfield(L, -2, "auto_renew");
}

/* vk.default_lock_options() -> table (seconds) */
static int l_default_lock_options(lua_State *L)
{
    vk_lock_options opts;
    vk_lock_options_init(&opts, VK_LOCK_OPTIONS_VERSION);
    push_lock_options(L, &opts);
    return 1;
}

/* vk.rate_limiter_lock_options() -> table (seconds) */
static int l_rate_limiter_lock_options(lua_State *L)
{
    vk_lock_options opts;
    vk_lock_options_rate_limiter(&opts, VK_LOCK_OPTIONS_VERSION);
    push_lock_options(L, &opts);
    return 1;
}

/* Reads a lock options table (missing fields keep the defaults). */
void vklua_read_lock_options(lua_State *L, int index, vk_lock_options *opts)
{
    static const char *const fields[] = { "expiry", "tries", "retry_delay", "drift_factor",
                                          "auto_renew", NULL };
    vk_lock_options_init(opts, VK_LOCK_OPTIONS_VERSION);
    luaL_checktype(L, index, LUA_TTABLE);
    vklua_check_fields(L, index, "lock options", fields);
    vklua_opt_seconds(L, index, "lock options", "expiry", &opts->expiry_ms);
    vklua_opt_integer(L, index, "lock options", "tries", &opts->tries);
    vklua_opt_seconds(L, index, "lock options", "retry_delay", &opts->retry_delay_ms);
    if (vklua_get_field(L, index, "lock options", "drift_factor", LUA_TNUMBER) != LUA_TNIL)
        opts->drift_factor = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
    vklua_opt_boolean(L, index, "lock options", "auto_renew", &opts->auto_renew);
}

/* ---- lock handles -------------------------------------------------------- */

typedef struct lock_ud {
    vk_lock *lock;  /* NULL once closed (or, when borrowed, after the function) */
    int borrowed;   /* lent by with_lock: the core owns it */
} lock_ud;

static lock_ud *check_lock(lua_State *L)
{
    return vklua_check_self(L, VKLUA_LOCK_MT);
}

/* Pushes an empty handle. It shares the user value of the manager at
 * index `manager` (the list of its clients), so the clients outlive every
 * handle without an allocation per handle; the C handle holds its own
 * reference on the C manager. */
static lock_ud *push_lock_ud(lua_State *L, int manager, int borrowed)
{
    lock_ud *h = lua_newuserdata(L, sizeof *h);
    h->lock = NULL;
    h->borrowed = borrowed;
    luaL_getmetatable(L, VKLUA_LOCK_MT);
    lua_setmetatable(L, -2);
    vklua_get_uservalue(L, manager);
    vklua_set_uservalue(L, -2);
    return h;
}

void vklua_push_owned_lock(lua_State *L, vk_lock *lock, int keeper)
{
    lock_ud *h = lua_newuserdata(L, sizeof *h);
    h->lock = lock;
    h->borrowed = 0;
    luaL_getmetatable(L, VKLUA_LOCK_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, keeper);
    vklua_set_uservalue(L, -2);
}

vk_lock *vklua_check_lock(lua_State *L, int index)
{
    lock_ud *h = luaL_checkudata(L, index, VKLUA_LOCK_MT);
    return h->lock;
}

/* h:unlock() -> true | nil, err */
static int lock_unlock(lua_State *L)
{
    lock_ud *h = check_lock(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_lock_unlock(h->lock, NULL);
    vklua_leave(previous);
    return vklua_return_status(L, st);
}

/* h:extend(seconds) -> true | nil, err */
static int lock_extend(lua_State *L)
{
    lock_ud *h = check_lock(L);
    luaL_checktype(L, 2, LUA_TNUMBER);
    int64_t ms = vklua_seconds_to_ms(L, 2, "expiry");
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_lock_extend(h->lock, NULL, ms);
    vklua_leave(previous);
    return vklua_return_status(L, st);
}

/* h:validity() -> seconds left (0 once expired or released) */
static int lock_validity(lua_State *L)
{
    lock_ud *h = check_lock(L);
    lua_pushnumber(L, (lua_Number)vk_lock_validity_ms(h->lock) / 1000.0);
    return 1;
}

/* h:fencing_token() -> integer, increasing per key across every holder */
static int lock_fencing_token(lua_State *L)
{
    lock_ud *h = check_lock(L);
    vklua_push_int64(L, vk_lock_fencing_token(h->lock));
    return 1;
}

/* h:key() -> string | nil */
static int lock_key(lua_State *L)
{
    lock_ud *h = check_lock(L);
    size_t len = 0;
    const char *key = vk_lock_key(h->lock, &len);
    if (key == NULL)
        lua_pushnil(L);
    else
        lua_pushlstring(L, key, len);
    return 1;
}

/* h:is_lost() -> true when automatic renewal failed */
static int lock_is_lost(lua_State *L)
{
    lock_ud *h = check_lock(L);
    lua_pushboolean(L, vk_lock_is_lost(h->lock));
    return 1;
}

/* __gc and h:close(): frees the handle (a forgotten lock just expires). */
static int lock_close(lua_State *L)
{
    lock_ud *h = check_lock(L);
    if (!h->borrowed) {
        lua_State *previous = vklua_enter(L);
        vk_lock_free(h->lock);
        vklua_leave(previous);
    }
    h->lock = NULL;
    return 0;
}

#if LUA_VERSION_NUM >= 504
/* __close (Lua 5.4 `local h <close>`): releases, then frees. */
static int lock_close_scope(lua_State *L)
{
    lock_ud *h = check_lock(L);
    if (h->lock != NULL && !h->borrowed) {
        lua_State *previous = vklua_enter(L);
        (void)vk_lock_unlock(h->lock, NULL);
        vklua_leave(previous);
    }
    return lock_close(L);
}
#endif

static int lock_tostring(lua_State *L)
{
    lock_ud *h = check_lock(L);
    lua_pushfstring(L, "vkclient.lock (%s): %p", h->lock != NULL ? "open" : "closed",
                    (void *)h);
    return 1;
}

/* ---- lock manager -------------------------------------------------------- */

typedef struct manager_ud {
    vk_lock_manager *manager; /* NULL once closed */
    int nclients;
    vklua_client_ud *clients[1];    /* kept alive by the manager's user value */
} manager_ud;

static manager_ud *check_manager(lua_State *L)
{
    return vklua_check_self(L, VKLUA_MANAGER_MT);
}

/* 1 when the value at index is a client userdata. */
static int is_client(lua_State *L, int index)
{
    if (lua_type(L, index) != LUA_TUSERDATA || !lua_getmetatable(L, index))
        return 0;
    luaL_getmetatable(L, VKLUA_CLIENT_MT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

/* The caller-given trace parent of the manager's calls: the one set on the
 * first of its clients inside client:with_trace_parent (NULL: none). */
static vk_context *manager_trace_ctx(const manager_ud *m)
{
    for (int i = 0; i < m->nclients; i++)
        if (m->clients[i]->trace_ctx != NULL)
            return m->clients[i]->trace_ctx;
    return NULL;
}

static void manager_deliver_events(manager_ud *m)
{
    for (int i = 0; i < m->nclients; i++)
        vklua_deliver_events(m->clients[i]);
}

/* vk.lock_manager(client) or vk.lock_manager({c1, c2, c3}) -> manager | nil, err */
static int l_lock_manager(lua_State *L)
{
    int n;
    if (lua_istable(L, 1)) {
        n = (int)vklua_rawlen(L, 1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, 1, i);
            if (!is_client(L, -1))
                luaL_error(L, "vkclient: lock_manager: element %d is not a vkclient client", i);
            lua_pop(L, 1);
        }
    } else {
        luaL_checkudata(L, 1, VKLUA_CLIENT_MT);
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, 1);
        lua_replace(L, 1);
        n = 1;
    }
    lua_settop(L, 1);
    size_t size = sizeof(manager_ud) + (size_t)(n > 1 ? n - 1 : 0) * sizeof(vklua_client_ud *);
    manager_ud *m = lua_newuserdata(L, size);
    memset(m, 0, size);
    luaL_getmetatable(L, VKLUA_MANAGER_MT);
    lua_setmetatable(L, -2);
    /* The user value is a private copy of the list, so later changes to the
     * caller's table change nothing. */
    lua_createtable(L, n, 0);
    int kept = lua_gettop(L);
    vk_client *small[8];
    vk_client **raw = small;
    if (n > 8) /* stays on the stack until the manager exists */
        raw = lua_newuserdata(L, (size_t)n * sizeof *raw);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        m->clients[i] = lua_touserdata(L, -1);
        raw[i] = m->clients[i]->client;
        lua_rawseti(L, kept, i + 1);
    }
    lua_pushvalue(L, kept);
    vklua_set_uservalue(L, 2);
    m->nclients = n;

    lua_State *previous = vklua_enter(L);
    vk_status st = n == 1 ? vk_lock_manager_new(&m->manager, raw[0])
                          : vk_lock_manager_new_quorum(&m->manager, raw, (size_t)n);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    lua_pushvalue(L, 2);
    return 1;
}

/* The key argument: a string (binary safe); anything else is misuse. */
static const char *check_key(lua_State *L, int index, size_t *len)
{
    if (lua_type(L, index) != LUA_TSTRING)
        luaL_error(L, "vkclient: bad argument #%d (lock key must be a string, got %s)",
                   index - 1, luaL_typename(L, index));
    return lua_tolstring(L, index, len);
}

/* locks:try_lock(key) -> handle | nil (taken by someone else) | nil, err */
static int manager_try_lock(lua_State *L)
{
    manager_ud *m = check_manager(L);
    size_t keylen;
    const char *key = check_key(L, 2, &keylen);
    lock_ud *h = push_lock_ud(L, 1, 0);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_lock_manager_try_lock(&h->lock, m->manager, manager_trace_ctx(m), key,
                                            keylen);
    int nresults = 1;
    if (st != VK_OK)
        nresults = vklua_return_failure(L, st);
    else if (h->lock == NULL)
        lua_pushnil(L); /* taken by someone else: not an error */
    manager_deliver_events(m);
    vklua_leave(previous);
    return nresults;
}

/* locks:acquire(key [, options]) -> handle | nil, err  (retries per options) */
static int manager_acquire(lua_State *L)
{
    manager_ud *m = check_manager(L);
    size_t keylen;
    const char *key = check_key(L, 2, &keylen);
    vk_lock_options opts;
    int has_opts = !lua_isnoneornil(L, 3);
    if (has_opts)
        vklua_read_lock_options(L, 3, &opts);
    lock_ud *h = push_lock_ud(L, 1, 0);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_lock_manager_acquire(&h->lock, m->manager, manager_trace_ctx(m), key,
                                           keylen, has_opts ? &opts : NULL);
    int nresults = st != VK_OK ? vklua_return_failure(L, st) : 1;
    manager_deliver_events(m);
    vklua_leave(previous);
    return nresults;
}

/* What the with_lock trampoline needs from the calling Lua function. */
typedef struct locked_call {
    lua_State *L;
    int fn;            /* stack index of the function */
    int handle;        /* stack index of the borrowed handle */
    lock_ud *borrowed;
    int status;        /* lua_pcall's result */
} locked_call;

/* Runs the Lua function under the lock. lua_pcall keeps any error from
 * unwinding through the core, which then releases the lock; the function's
 * results (or its error value) stay on the stack for with_lock. */
static vk_status run_locked_function(void *userdata, vk_lock *lock)
{
    locked_call *call = userdata;
    lua_State *L = call->L;
    if (!lua_checkstack(L, 3)) {
        call->status = -1;
        return VK_ERR_LOCK_FN;
    }
    call->borrowed->lock = lock;
    lua_pushvalue(L, call->fn);
    lua_pushvalue(L, call->handle);
    call->status = lua_pcall(L, 1, LUA_MULTRET, 0);
    call->borrowed->lock = NULL;
    return call->status == 0 ? VK_OK : VK_ERR_LOCK_FN;
}

/* Pushes a printable form of the value at index (a raise-free tostring for
 * strings and numbers; __tostring otherwise). */
static void push_printable(lua_State *L, int index)
{
    if (lua_type(L, index) == LUA_TSTRING || lua_type(L, index) == LUA_TNUMBER) {
        lua_pushvalue(L, index);
        lua_tostring(L, -1);
    } else if (!luaL_callmeta(L, index, "__tostring") || !lua_isstring(L, -1)) {
        lua_pushfstring(L, "%s: %p", luaL_typename(L, index), lua_topointer(L, index));
    }
}

/* The function given to with_lock raised (its error value is on top, or
 * status < 0 when there was no room to call it): returns nil, err with
 * err.cause the raised value. */
static int return_function_error(lua_State *L, int status)
{
    luaL_checkstack(L, 6, "vkclient: with_lock");
    if (status < 0)
        lua_pushliteral(L, "stack overflow");
    int cause = lua_gettop(L);
    lua_pushnil(L);
    push_printable(L, cause);
    lua_pushfstring(L, "%s: %s", vk_strerror(VK_ERR_LOCK_FN), lua_tostring(L, -1));
    size_t len;
    const char *message = lua_tolstring(L, -1, &len);
    vklua_push_error_object(L, VK_ERR_LOCK_FN, message, len);
    lua_pushvalue(L, cause);
    lua_setfield(L, -2, "cause");
    lua_replace(L, -3); /* stack: cause, nil, err, message */
    lua_pop(L, 1);
    return 2;
}

/* The shared body of with_lock and with_lock_options. Stack: manager, key,
 * [options,] fn. Returns fn's results, or nil, err. */
static int with_lock_common(lua_State *L, int fn_index, const vk_lock_options *opts)
{
    manager_ud *m = check_manager(L);
    size_t keylen;
    const char *key = check_key(L, 2, &keylen);
    int has_fn = !lua_isnoneornil(L, fn_index);
    if (has_fn)
        luaL_checktype(L, fn_index, LUA_TFUNCTION);
    lua_settop(L, fn_index);

    locked_call call;
    call.L = L;
    call.fn = fn_index;
    call.borrowed = push_lock_ud(L, 1, 1);
    call.handle = lua_gettop(L);
    call.status = 0;
    int base = call.handle;

    lua_State *previous = vklua_enter(L);
    vk_status st = vk_lock_manager_with_lock_options(m->manager, manager_trace_ctx(m), key,
                                                     keylen, opts,
                                                     has_fn ? run_locked_function : NULL,
                                                     &call);
    call.borrowed->lock = NULL;
    int nresults;
    if (st == VK_OK)
        nresults = lua_gettop(L) - base;
    else if (st != VK_ERR_LOCK_FN || call.status == 0)
        nresults = vklua_return_failure(L, st);
    else
        nresults = return_function_error(L, call.status);
    manager_deliver_events(m);
    vklua_leave(previous);
    return nresults;
}

/* locks:with_lock(key, fn) -> fn's results | nil, err */
static int manager_with_lock(lua_State *L)
{
    return with_lock_common(L, 3, NULL);
}

/* locks:with_lock_options(key, options, fn) -> fn's results | nil, err */
static int manager_with_lock_options(lua_State *L)
{
    vk_lock_options opts;
    vklua_read_lock_options(L, 3, &opts);
    return with_lock_common(L, 4, &opts);
}

/* locks:unlock(handle) -> true | nil, err. Deprecated: use handle:unlock().
 * Kept for callers of the original manager-level unlock (as the C library
 * keeps vk_lock_manager_unlock): a nil handle is the
 * NIL_LOCK_HANDLE_ON_UNLOCK error "lock handle is nil"; any handle, even a
 * closed one, answers as handle:unlock() would. */
static int manager_unlock(lua_State *L)
{
    manager_ud *m = check_manager(L);
    if (lua_isnoneornil(L, 2)) {
        const char *text = vk_strerror(VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK);
        lua_pushnil(L);
        vklua_push_error_object(L, VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK, text, strlen(text));
        return 2;
    }
    lock_ud *h = luaL_checkudata(L, 2, VKLUA_LOCK_MT);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_lock_unlock(h->lock, NULL);
    int nresults = vklua_return_status(L, st);
    manager_deliver_events(m);
    vklua_leave(previous);
    return nresults;
}

static int manager_close(lua_State *L)
{
    manager_ud *m = check_manager(L);
    lua_State *previous = vklua_enter(L);
    vk_lock_manager_free(m->manager);
    m->manager = NULL;
    vklua_leave(previous);
    return 0;
}

const luaL_Reg vklua_manager_methods[] = {
    { "with_lock", manager_with_lock },
    { "with_lock_options", manager_with_lock_options },
    { "try_lock", manager_try_lock },
    { "acquire", manager_acquire },
    { "unlock", manager_unlock },
    { "close", manager_close },
    { NULL, NULL },
};

const luaL_Reg vklua_manager_meta[] = {
    { "__gc", manager_close },
#if LUA_VERSION_NUM >= 504
    { "__close", manager_close },
#endif
    { NULL, NULL },
};

const luaL_Reg vklua_lock_methods[] = {
    { "unlock", lock_unlock },
    { "extend", lock_extend },
    { "validity", lock_validity },
    { "fencing_token", lock_fencing_token },
    { "key", lock_key },
    { "is_lost", lock_is_lost },
    { "close", lock_close },
    { NULL, NULL },
};

const luaL_Reg vklua_lock_meta[] = {
    { "__gc", lock_close },
#if LUA_VERSION_NUM >= 504
    { "__close", lock_close_scope },
#endif
    { "__tostring", lock_tostring },
    { NULL, NULL },
};

const luaL_Reg vklua_lock_functions[] = {
    { "lock_manager", l_lock_manager },
    { "default_lock_options", l_default_lock_options },
    { "rate_limiter_lock_options", l_rate_limiter_lock_options },
    { NULL, NULL },
};
