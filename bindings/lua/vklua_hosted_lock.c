/*
 * Lock managers over bytes-mode clients for require "vkclient.ngx": one
 * client (a lock on one node) or several (a Redlock quorum, majority of
 * n). Acquisitions, unlocks and extends return tickets and complete into
 * the shared completions table (vklua_ops.c); the handles are those of
 * vklua_lock.c (validity, fencing_token, key, is_lost, close), each keeping
 * its manager, and so its clients, alive. Hidden from users:
 * vk._hosted_lock_manager.
 */
#include "vklua.h"

#include <vkclient_async.h>

#include <string.h>

typedef struct hosted_manager {
    vk_async_lock_manager *m;   /* NULL once closed */
    vklua_op_list ops;          /* acquisitions, unlocks and extends in flight */
} hosted_manager;

static hosted_manager *check_manager(lua_State *L)
{
    hosted_manager *hm = vklua_check_self(L, VKLUA_HOSTED_MANAGER_MT);
    if (hm->m == NULL)
        luaL_error(L, "vkclient.ngx: the lock manager is closed");
    return hm;
}

/* vk._hosted_lock_manager({ client, ... }) -> manager | nil, err */
static int l_manager_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    int n = (int)vklua_rawlen(L, 1);
    if (n < 1)
        return luaL_argerror(L, 1, "at least one client");
    vk_hosted **clients = lua_newuserdata(L, (size_t)n * sizeof *clients);
    lua_createtable(L, n, 0);   /* the clients, kept alive by the manager */
    int kept = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        clients[i - 1] = vklua_check_hosted(L, -1);
        lua_rawseti(L, kept, i);
    }
    hosted_manager *hm = lua_newuserdata(L, sizeof *hm);
    memset(hm, 0, sizeof *hm);
    luaL_getmetatable(L, VKLUA_HOSTED_MANAGER_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, kept);
    vklua_set_uservalue(L, -2);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_lock_manager_new(&hm->m, clients, (size_t)n);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return 1;
}

/* m:try(key) / m:acquire(key [, options]) -> ticket | nil, err */
static int start(lua_State *L, int acquire)
{
    hosted_manager *hm = check_manager(L);
    size_t len;
    const char *key = luaL_checklstring(L, 2, &len);   /* empty: the core's refusal */
    vk_lock_options opts;
    int has_opts = acquire && !lua_isnoneornil(L, 3);
    if (has_opts)
        vklua_read_lock_options(L, 3, &opts);
    vklua_op *op = vklua_op_new(L, &hm->ops, VKLUA_OP_LOCK, 1);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = acquire ? vk_async_lock_acquire(hm->m, key, len, has_opts ? &opts : NULL,
                                                   vklua_op_on_lock, op, &op->id)
                           : vk_async_lock_try(hm->m, key, len, vklua_op_on_lock, op, &op->id);
    vklua_leave(previous);
    return vklua_op_queued(L, op, st);
}

static int manager_try(lua_State *L)
{
    return start(L, 0);
}

static int manager_acquire(lua_State *L)
{
    return start(L, 1);
}

/* m:unlock(handle) / m:extend(handle, seconds) -> ticket | nil, err */
static int manager_unlock(lua_State *L)
{
    hosted_manager *hm = check_manager(L);
    vk_lock *lock = vklua_check_lock(L, 2);
    vklua_op *op = vklua_op_new(L, &hm->ops, VKLUA_OP_DONE, 1);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_async_lock_unlock(lock, vklua_op_on_done, op);
    vklua_leave(previous);
    return vklua_op_queued(L, op, st);
}

static int manager_extend(lua_State *L)
{
    hosted_manager *hm = check_manager(L);
    vk_lock *lock = vklua_check_lock(L, 2);
    luaL_checktype(L, 3, LUA_TNUMBER);
    int64_t ms = vklua_seconds_to_ms(L, 3, "expiry");
    vklua_op *op = vklua_op_new(L, &hm->ops, VKLUA_OP_DONE, 1);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_async_lock_extend(lock, ms, vklua_op_on_done, op);
    vklua_leave(previous);
    return vklua_op_queued(L, op, st);
}

/* m:cancel(ticket) -> true | nil, err: an acquisition completes, cancelled
 * (what an attempt on the wire took is given back by the core). */
static int manager_cancel(lua_State *L)
{
    hosted_manager *hm = check_manager(L);
    vklua_op *op = vklua_op_find(&hm->ops, luaL_checkinteger(L, 2));
    if (op == NULL || op->kind != VKLUA_OP_LOCK)
        return vklua_no_such_operation(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_async_lock_cancel(hm->m, op->id);
    vklua_leave(previous);
    return vklua_return_status(L, st);
}

/* Handles and running operations keep what they need in the core; an
 * operation in flight keeps this userdata alive. */
static int manager_close(lua_State *L)
{
    hosted_manager *hm = vklua_check_self(L, VKLUA_HOSTED_MANAGER_MT);
    lua_State *previous = vklua_enter(L);
    vk_async_lock_manager_free(hm->m);
    hm->m = NULL;
    vklua_leave(previous);
    return 0;
}

const luaL_Reg vklua_hosted_manager_methods[] = {
    {"try", manager_try},
    {"acquire", manager_acquire},
    {"unlock", manager_unlock},
    {"extend", manager_extend},
    {"cancel", manager_cancel},
    {"close", manager_close},
    {NULL, NULL},
};

const luaL_Reg vklua_hosted_manager_meta[] = {
    {"__gc", manager_close},
    {NULL, NULL},
};

const luaL_Reg vklua_hosted_lock_functions[] = {
    {"_hosted_lock_manager", l_manager_new},
    {NULL, NULL},
};
