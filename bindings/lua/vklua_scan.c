/*
 * Scans as generic-for iterators:
 *
 *   for key in client:scan_iter{ match = "user:*", count = 100, type = "hash" } do
 *   for field, value in client:hscan_iter(key, { match = ..., count = ... }) do
 *   for member in client:sscan_iter(key, opts) do
 *   for member, score in client:zscan_iter(key, opts) do   -- score: a number
 *
 * Creating the iterator fails like every call (nil, err) when the core
 * refuses the options; a wrong option type raises. A page that fails while
 * the loop runs (connection error, WRONGTYPE, a cluster slot map that
 * changed during the walk) raises the error object, so that a loop never
 * ends early without a word: wrap it in pcall to get the object back.
 * The iterator fetches a page only when the previous one is used up.
 */
#include "vklua.h"

#include <vkclient_async.h>
#include <string.h>

typedef struct scan_ud {
    vk_scan *scan;           /* NULL once closed */
    vk_reply *parked;        /* a page being converted; freed if conversion raised */
    vklua_client_ud *owner;  /* kept alive by the scan's user value */
    int stride;              /* 1: items; 2: name, value pairs */
    int scores;              /* ZSCAN: the value is a number */
} scan_ud;

static scan_ud *check_scan(lua_State *L)
{
    return luaL_checkudata(L, 1, VKLUA_SCAN_MT);
}

static const char *const scan_fields[] = { "match", "count", "type", NULL };

/* The options table at index (nil: none). *type only for SCAN. */
static void read_options(lua_State *L, int index, const char *where, const char **match,
                         size_t *matchlen, int *count, const char **type)
{
    *match = NULL;
    *matchlen = 0;
    *count = 0;
    if (type != NULL)
        *type = NULL;
    if (lua_isnoneornil(L, index))
        return;
    luaL_checktype(L, index, LUA_TTABLE);
    static const char *const key_fields[] = { "match", "count", NULL };
    vklua_check_fields(L, index, where, type != NULL ? scan_fields : key_fields);
    if (vklua_get_field(L, index, where, "match", LUA_TSTRING) != LUA_TNIL)
        *match = lua_tolstring(L, -1, matchlen);
    lua_pop(L, 1);   /* the table keeps the string */
    if (vklua_opt_integer(L, index, where, "count", count) && *count == 0)
        luaL_error(L, "%s: count must be a positive integer", where);
    if (type != NULL) {
        if (vklua_get_field(L, index, where, "type", LUA_TSTRING) != LUA_TNIL)
            *type = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
}

/* Pushes the next item (1 or 2 values) of the page table at `page` from
 * position *pos, or returns 0 when the page is used up. */
static int push_item(lua_State *L, scan_ud *s, int page, lua_Integer *pos)
{
    if (*pos + s->stride - 1 > (lua_Integer)vklua_rawlen(L, page))
        return 0;
    lua_rawgeti(L, page, (int)*pos);
    if (s->stride == 2) {
        lua_rawgeti(L, page, (int)*pos + 1);
        if (s->scores && lua_type(L, -1) == LUA_TSTRING) {
            lua_Number score = lua_tonumber(L, -1);
            lua_pop(L, 1);
            lua_pushnumber(L, score);
        }
    }
    *pos += s->stride;
    return s->stride;
}

/* The iterator: upvalue 1 the scan, 2 the current page (a table or nil), 3
 * the position of the next item in it. */
static int scan_step(lua_State *L)
{
    scan_ud *s = lua_touserdata(L, lua_upvalueindex(1));
    for (;;) {
        if (lua_istable(L, lua_upvalueindex(2))) {
            lua_Integer pos = lua_tointeger(L, lua_upvalueindex(3));
            int n = push_item(L, s, lua_upvalueindex(2), &pos);
            if (n > 0) {
                lua_pushinteger(L, pos);
                lua_replace(L, lua_upvalueindex(3));
                return n;
            }
        }
        if (s->scan == NULL || vk_scan_done(s->scan))
            return 0;   /* nil: the loop ends */
        vklua_release_parked(&s->parked);
        vk_reply *page = NULL;
        lua_State *previous = vklua_enter(L);
        vk_status st = vk_scan_next(&page, s->scan, s->owner->trace_ctx);
        vklua_deliver_events(s->owner);
        vklua_leave(previous);
        if (st != VK_OK) {
            const char *message = vk_last_error();
            vklua_push_error_object(L, st, message, strlen(message));
            return lua_error(L);
        }
        s->parked = page;
        vklua_push_reply(L, page);
        vklua_release_parked(&s->parked);
        lua_replace(L, lua_upvalueindex(2));
        lua_pushinteger(L, 1);
        lua_replace(L, lua_upvalueindex(3));
    }
}

/* Makes the scan userdata for the client at 1 and returns the iterator. */
static int new_iterator(lua_State *L, const char *where, const char *command, int key_index,
                        int opts_index)
{
    vklua_client_ud *c = vklua_check_client(L);
    size_t keylen = 0, matchlen;
    const char *key = key_index > 0 ? luaL_checklstring(L, key_index, &keylen) : NULL;
    const char *match, *type;
    int count;
    read_options(L, opts_index, where, &match, &matchlen, &count, key == NULL ? &type : NULL);

    scan_ud *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    luaL_getmetatable(L, VKLUA_SCAN_MT);
    lua_setmetatable(L, -2);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    vklua_set_uservalue(L, -2);
    s->owner = c;
    s->stride = strcmp(command, "HSCAN") == 0 || strcmp(command, "ZSCAN") == 0 ? 2 : 1;
    s->scores = strcmp(command, "ZSCAN") == 0;
    lua_State *previous = vklua_enter(L);
    vk_status st;
    if (key == NULL)
        st = vk_scan_new(&s->scan, c->client, match, matchlen, count, type);
    else
        st = vk_scan_new_key(&s->scan, c->client, command, key, keylen, match, matchlen, count);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    lua_pushnil(L);
    lua_pushinteger(L, 1);
    lua_pushcclosure(L, scan_step, 3);
    return 1;
}

/* client:scan_iter([opts]) -> iterator | nil, err */
int vklua_client_scan_iter(lua_State *L)
{
    return new_iterator(L, "scan_iter", "SCAN", 0, 2);
}

/* client:hscan_iter(key [, opts]) -> iterator | nil, err; also s- and z-. */
int vklua_client_hscan_iter(lua_State *L)
{
    return new_iterator(L, "hscan_iter", "HSCAN", 2, 3);
}

int vklua_client_sscan_iter(lua_State *L)
{
    return new_iterator(L, "sscan_iter", "SSCAN", 2, 3);
}

int vklua_client_zscan_iter(lua_State *L)
{
    return new_iterator(L, "zscan_iter", "ZSCAN", 2, 3);
}

static int scan_close(lua_State *L)
{
    scan_ud *s = check_scan(L);
    lua_State *previous = vklua_enter(L);
    vklua_release_parked(&s->parked);
    vk_scan_free(s->scan);
    s->scan = NULL;
    vklua_leave(previous);
    return 0;
}

const luaL_Reg vklua_scan_meta[] = {
    { "__gc", scan_close },
    { NULL, NULL },
};

/* ---- the bytes-mode client (require "vkclient.ngx") -------------------------- */

/* A scan of a bytes-mode client: its pages complete into the client's
 * operations; vkclient/ngx.lua makes the iterator. Its user value keeps
 * the client alive. */
typedef struct hosted_scan_ud {
    vk_scan *scan;           /* NULL once closed */
} hosted_scan_ud;

static hosted_scan_ud *check_hosted_scan(lua_State *L, int index)
{
    hosted_scan_ud *s = luaL_checkudata(L, index, VKLUA_HOSTED_SCAN_MT);
    if (s->scan == NULL)
        luaL_error(L, "vkclient.ngx: the scan is closed");
    return s;
}

/* h:scan_new(command, key, opts) -> scan | nil, err; command "SCAN" (key
 * nil), "HSCAN", "SSCAN" or "ZSCAN"; opts as client:scan_iter's. */
int vklua_hosted_scan_new(lua_State *L)
{
    vk_hosted *h = vklua_check_hosted(L, 1);
    const char *command = luaL_checkstring(L, 2);
    size_t keylen = 0, matchlen;
    const char *key = lua_isnoneornil(L, 3) ? NULL : luaL_checklstring(L, 3, &keylen);
    const char *where = key == NULL ? "scan_iter" : strcmp(command, "HSCAN") == 0 ? "hscan_iter"
                        : strcmp(command, "SSCAN") == 0 ? "sscan_iter" : "zscan_iter";
    const char *match, *type;
    int count;
    read_options(L, 4, where, &match, &matchlen, &count, key == NULL ? &type : NULL);
    hosted_scan_ud *s = lua_newuserdata(L, sizeof *s);
    s->scan = NULL;
    luaL_getmetatable(L, VKLUA_HOSTED_SCAN_MT);
    lua_setmetatable(L, -2);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    vklua_set_uservalue(L, -2);
    lua_State *previous = vklua_enter(L);
    vk_status st = key == NULL
                       ? vk_hosted_scan_new(&s->scan, h, match, matchlen, count, type)
                       : vk_hosted_scan_new_key(&s->scan, h, command, key, keylen, match,
                                                matchlen, count);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return 1;
}

/* h:scan_next(scan) -> ticket | nil, err: the next page (an array). The
 * scan stays alive while its page is in flight. */
int vklua_hosted_scan_next(lua_State *L)
{
    vklua_op_list *ops;
    vklua_check_hosted_ops(L, 1, &ops);
    hosted_scan_ud *s = check_hosted_scan(L, 2);
    vklua_op *op = vklua_op_new(L, ops, VKLUA_OP_REPLY, 2);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_scan_next(s->scan, vklua_op_on_reply, op);
    vklua_leave(previous);
    return vklua_op_queued(L, op, st);
}

/* scan:done() -> true once the last page came */
static int hosted_scan_done(lua_State *L)
{
    hosted_scan_ud *s = luaL_checkudata(L, 1, VKLUA_HOSTED_SCAN_MT);
    lua_pushboolean(L, s->scan == NULL || vk_scan_done(s->scan));
    return 1;
}

static int hosted_scan_close(lua_State *L)
{
    hosted_scan_ud *s = luaL_checkudata(L, 1, VKLUA_HOSTED_SCAN_MT);
    lua_State *previous = vklua_enter(L);
    vk_scan_free(s->scan);
    s->scan = NULL;
    vklua_leave(previous);
    return 0;
}

const luaL_Reg vklua_hosted_scan_methods[] = {
    { "done", hosted_scan_done },
    { "close", hosted_scan_close },
    { NULL, NULL },
};

const luaL_Reg vklua_hosted_scan_meta[] = {
    { "__gc", hosted_scan_close },
    { NULL, NULL },
};
