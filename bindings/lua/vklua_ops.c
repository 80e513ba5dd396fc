/*
 * Operations of the bytes-mode clients (vklua_hosted.c, vklua_hosted_lock.c)
 * for require "vkclient.ngx": each returns a ticket at once, and its
 * completion, which runs later inside a call into one of those clients
 * (received, wrote, tick, ...), appends
 *   ticket, value, err
 * to the completions table that every client of this Lua state shares, so
 * that any driver collecting it (vk._take_done) serves every waiting
 * request: value is the reply in Lua form (a lock handle; true for unlock
 * and extend), or false; err is an error object, or false. A try that
 * finds the lock taken gives false, false.
 */
#include "vklua.h"

#include <stdlib.h>
#include <string.h>

/* The registry slot of the completions table. */
static char done_key;
/* Tickets are unique across the clients of the process. */
static lua_Integer next_ticket;

/* Pushes the completions table, made on first use. */
static void push_done(lua_State *L)
{
    lua_pushlightuserdata(L, &done_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isnil(L, -1))
        return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushlightuserdata(L, &done_key);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

typedef struct completion {
    vklua_op *op;
    vk_status status;
    const vk_reply *reply;
    vk_lock *lock;
} completion;

/* Appends ticket, value, err (under protection: a memory error cannot
 * unwind through the core). */
static int append_completion(lua_State *L)
{
    completion *c = lua_touserdata(L, 1);
    push_done(L);
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
    } else if (c->op->kind == VKLUA_OP_LOCK) {
        if (c->lock != NULL) {
            /* The manager keeps the lock's clients alive. */
            lua_rawgeti(L, LUA_REGISTRYINDEX, c->op->keeper_ref);
            vklua_push_owned_lock(L, c->lock, lua_gettop(L));
            c->lock = NULL;   /* the handle's now */
            lua_remove(L, -2);
        } else {
            lua_pushboolean(L, 0);
        }
        lua_pushboolean(L, 0);
    } else if (c->op->kind == VKLUA_OP_DONE) {
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

static void unlink_op(vklua_op *op)
{
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        op->list->head = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
}

/* Every completion: the Lua state inside the call that runs it takes the
 * result. Outside any call there is nobody to tell. */
static void complete(vklua_op *op, vk_status status, const vk_reply *reply, vk_lock *lock)
{
    unlink_op(op);
    lua_State *L = vklua_active_state;
    completion c = {op, status, reply, lock};
    if (L != NULL && lua_checkstack(L, 8)) {
        lua_pushcfunction(L, append_completion);
        lua_pushlightuserdata(L, &c);
        if (lua_pcall(L, 1, 0, 0) != 0)
            lua_pop(L, 1);
    }
    if (c.lock != NULL)
        vk_lock_free(c.lock);
    if (L != NULL && op->keeper_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, op->keeper_ref);
    free(op);
}

void vklua_op_on_reply(void *op, vk_status status, vk_reply *reply)
{
    complete(op, status, reply, NULL);
    vk_reply_free(reply);
}

void vklua_op_on_lock(void *op, vk_status status, vk_lock *lock)
{
    complete(op, status, NULL, lock);
}

void vklua_op_on_done(void *op, vk_status status)
{
    complete(op, status, NULL, NULL);
}

vklua_op *vklua_op_new(lua_State *L, vklua_op_list *list, vklua_op_kind kind, int keeper)
{
    vklua_op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return NULL;
    op->list = list;
    op->kind = kind;
    op->ticket = ++next_ticket;
    op->keeper_ref = LUA_NOREF;
    if (keeper != 0) {
        lua_pushvalue(L, keeper);
        op->keeper_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    op->next = list->head;
    if (list->head != NULL)
        list->head->prev = op;
    list->head = op;
    return op;
}

int vklua_op_queued(lua_State *L, vklua_op *op, vk_status st)
{
    if (st != VK_OK) {
        unlink_op(op);
        if (op->keeper_ref != LUA_NOREF)
            luaL_unref(L, LUA_REGISTRYINDEX, op->keeper_ref);
        free(op);
        return vklua_return_failure(L, st);
    }
    lua_pushinteger(L, op->ticket);
    return 1;
}

vklua_op *vklua_op_find(const vklua_op_list *list, lua_Integer ticket)
{
    vklua_op *op = list->head;
    while (op != NULL && op->ticket != ticket)
        op = op->next;
    return op;
}

int vklua_no_such_operation(lua_State *L)
{
    lua_pushnil(L);
    const char *text = "invalid argument: no such operation in flight";
    vklua_push_error_object(L, VK_ERR_INVALID_ARGUMENT, text, strlen(text));
    return 2;
}

/* vk._take_done() -> the completions table (ticket, value, err, ...); a new
 * empty one takes its place. */
static int l_take_done(lua_State *L)
{
    push_done(L);
    if (vklua_rawlen(L, -1) == 0)
        return 1;
    lua_pushlightuserdata(L, &done_key);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 1;
}

const luaL_Reg vklua_op_functions[] = {
    {"_take_done", l_take_done},
    {NULL, NULL},
};
