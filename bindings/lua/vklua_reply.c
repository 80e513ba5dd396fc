/*
 * Replies: a vk_reply tree to Lua values. Strings stay binary safe, nil is
 * vk.null (also inside arrays), maps become tables and error replies become
 * error objects with code "SERVER".
 */
#include "vklua.h"

/* ---- replies ------------------------------------------------------------- */

static void push_aggregate(lua_State *L, const vk_reply *reply)
{
    size_t n = vk_reply_get_length(reply);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        vklua_push_reply(L, vk_reply_get_element(reply, i));
        lua_rawseti(L, -2, (int)(i + 1));
    }
}

static void push_map(lua_State *L, const vk_reply *reply)
{
    size_t n = vk_reply_get_length(reply);
    lua_createtable(L, 0, (int)(n / 2));
    for (size_t i = 0; i + 1 < n; i += 2) {
        vklua_push_reply(L, vk_reply_get_element(reply, i));
        vklua_push_reply(L, vk_reply_get_element(reply, i + 1));
        lua_rawset(L, -3);
    }
}

/* Converts a reply to Lua values. It may raise (out of memory, nesting too
 * deep): callers park the C reply where close/__gc/the next call frees it. */
void vklua_push_reply(lua_State *L, const vk_reply *reply)
{
    if (!lua_checkstack(L, 4))
        luaL_error(L, "vkclient: reply nested too deeply");
    size_t len = 0;
    const char *text;
    switch (vk_reply_get_type(reply)) {
    case VK_REPLY_STRING:
    case VK_REPLY_STATUS:
    case VK_REPLY_BIGNUM:
    case VK_REPLY_VERB:
        text = vk_reply_get_string(reply, &len);
        lua_pushlstring(L, text != NULL ? text : "", len);
        break;
    case VK_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)vk_reply_get_integer(reply));
        break;
    case VK_REPLY_DOUBLE:
        lua_pushnumber(L, (lua_Number)vk_reply_get_double(reply));
        break;
    case VK_REPLY_BOOL:
        lua_pushboolean(L, vk_reply_get_integer(reply) != 0);
        break;
    case VK_REPLY_ARRAY:
    case VK_REPLY_SET:
    case VK_REPLY_PUSH:
        push_aggregate(L, reply);
        break;
    case VK_REPLY_MAP:
    case VK_REPLY_ATTR:
        push_map(L, reply);
        break;
    case VK_REPLY_ERROR:
        text = vk_reply_get_string(reply, &len);
        vklua_push_error_object(L, VK_ERR_SERVER, text != NULL ? text : "", len);
        break;
    case VK_REPLY_NIL:
    default:
        lua_pushlightuserdata(L, NULL);
        break;
    }
}
