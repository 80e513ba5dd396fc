/*
 * The pieces every other file of the Lua binding uses: the compatibility
 * shims between Lua 5.1/LuaJIT and 5.4, the names of the vk_status codes,
 * the calling thread's Lua state, error objects, strings the core owns and
 * seconds <-> milliseconds.
 */
#include "vklua.h"

#include <math.h>

/* ---- compatibility shims (5.1 and LuaJIT: LUA_VERSION_NUM 501) ----------- */

/* Registers functions into the table on top of the stack. */
void vklua_setfuncs(lua_State *L, const luaL_Reg *funcs)
{
    for (; funcs->name != NULL; funcs++) {
        lua_pushcfunction(L, funcs->func);
        lua_setfield(L, -2, funcs->name);
    }
}

/* The userdata's one associated Lua value (5.1: its environment table). */
void vklua_set_uservalue(lua_State *L, int index)
{
#if LUA_VERSION_NUM >= 504
    lua_setiuservalue(L, index, 1);
#elif LUA_VERSION_NUM >= 502
    lua_setuservalue(L, index);
#else
    lua_setfenv(L, index);
#endif
}

/* Pushes the userdata's associated value. */
void vklua_get_uservalue(lua_State *L, int index)
{
#if LUA_VERSION_NUM >= 504
    lua_getiuservalue(L, index, 1);
#elif LUA_VERSION_NUM >= 502
    lua_getuservalue(L, index);
#else
    lua_getfenv(L, index);
#endif
}

/* Calls f(L) with ud as its only argument, catching every error (including
 * out of memory) so that nothing can unwind through the C core. Returns 0
 * on success; on failure the error value is popped. */
int vklua_protected_call(lua_State *L, lua_CFunction f, void *ud)
{
    int status;
#if LUA_VERSION_NUM >= 502
    /* Light C functions and light userdata do not allocate. */
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, ud);
    status = lua_pcall(L, 1, 0, 0);
#else
    status = lua_cpcall(L, f, ud);
#endif
    if (status != 0)
        lua_pop(L, 1);
    return status;
}

/* 1 when the value at index is an integer-valued number. */
int vklua_is_integral(lua_State *L, int index)
{
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, index))
        return 1;
#endif
    lua_Number n = lua_tonumber(L, index);
    return n == floor(n) && fabs(n) < 9007199254740992.0;
}

void vklua_push_int64(lua_State *L, int64_t value)
{
    lua_pushinteger(L, (lua_Integer)value);
}

/* ---- names --------------------------------------------------------------- */

/* One name per vk_status, the value of err.code. Append-only like the codes. */
static const char *const status_names[] = {
    "OK",
    "NIL_CLIENT",
    "INVALID_CONFIG",
    "NIL_LOCK_HANDLE",
    "LOCK_NOT_HELD",
    "NIL_LOCK_MANAGER",
    "LOCK_NOT_INITIALIZED",
    "NIL_LOCK_FN",
    "EMPTY_LOCK_KEY",
    "LOCK_EXPIRY_INVALID",
    "LOCK_TRIES_INVALID",
    "LOCK_TRIES_EXCEEDED",
    "LOCK_RETRY_DELAY_NEGATIVE",
    "LOCK_DRIFT_FACTOR_INVALID",
    "NIL_LOCK_HANDLE_ON_UNLOCK",
    "LOCK_ACQUIRE",
    "LOCK_FN",
    "IO",
    "TIMEOUT",
    "POOL_TIMEOUT",
    "RECONNECT_RATE_LIMITED",
    "AUTH",
    "TLS",
    "IAM",
    "PROTOCOL",
    "NO_MEMORY",
    "INVALID_ARGUMENT",
    "CANCELLED",
    "SERVER",
    "LOCK_LOST",
    "COMMAND_NOT_ALLOWED",
    "WATCH_CONFLICT",
};
#define STATUS_NAME_COUNT ((int)(sizeof status_names / sizeof status_names[0]))

static const char *status_name(vk_status status)
{
    int i = (int)status;
    return i >= 0 && i < STATUS_NAME_COUNT ? status_names[i] : "UNKNOWN";
}

void vklua_push_codes(lua_State *L)
{
    lua_createtable(L, 0, STATUS_NAME_COUNT);
    for (int i = 0; i < STATUS_NAME_COUNT; i++) {
        lua_pushinteger(L, i);
        lua_setfield(L, -2, status_names[i]);
    }
}

/* ---- the calling thread's Lua state -------------------------------------- */

/* The state inside a call into this module on this thread (see vklua.h;
 * vklua_enter and vklua_leave set it). */
_Thread_local lua_State *vklua_active_state = NULL;

/* ---- error objects ------------------------------------------------------- */

/* Turns the message on top of the stack into an error object
 * {code, status, message}. */
static void wrap_error_message(lua_State *L, vk_status status)
{
    lua_createtable(L, 0, 4);
    lua_insert(L, -2);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, status_name(status));
    lua_setfield(L, -2, "code");
    lua_pushinteger(L, (lua_Integer)status);
    lua_setfield(L, -2, "status");
    luaL_getmetatable(L, VKLUA_ERROR_MT);
    lua_setmetatable(L, -2);
}

/* Pushes an error object {code, status, message}. */
void vklua_push_error_object(lua_State *L, vk_status status, const char *message, size_t len)
{
    lua_pushlstring(L, message, len);
    wrap_error_message(L, status);
}

/* Returns nil, err for the last failure on this thread. */
int vklua_return_failure(lua_State *L, vk_status status)
{
    const char *message = vk_last_error();
    if (vk_last_status() != status || message[0] == '\0')
        message = vk_strerror(status);
    lua_pushnil(L);
    /* Copied before anything else allocates: a collection step could run a
     * finalizer that calls the core and replaces this thread's message. */
    lua_pushstring(L, message);
    wrap_error_message(L, status);
    return 2;
}

/* Returns true, or nil, err. */
int vklua_return_status(lua_State *L, vk_status status)
{
    if (status != VK_OK)
        return vklua_return_failure(L, status);
    lua_pushboolean(L, 1);
    return 1;
}

static int error_tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "message");
    if (!lua_isstring(L, -1))
        lua_pushliteral(L, "vkclient error");
    return 1;
}

const luaL_Reg vklua_error_meta[] = {
    { "__tostring", error_tostring },
    { NULL, NULL },
};

/* ---- strings the core owns ----------------------------------------------- */

/* The registry slot through which a protected push hands its string back. */
static char pushed_text_key;

typedef struct text_ref {
    const char *text;
    size_t len;
} text_ref;

static int store_text(lua_State *L)
{
    const text_ref *t = lua_touserdata(L, 1);
    lua_pushlightuserdata(L, &pushed_text_key);
    lua_pushlstring(L, t->text, t->len);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

/* Pushes a copy of text, which the caller must release whatever happens:
 * the copy is made under protection, so a memory error cannot skip the
 * release. Returns 0 when pushed; else nothing is pushed and the caller
 * releases its memory, then raises. */
int vklua_push_text_protected(lua_State *L, const char *text, size_t len)
{
    text_ref t = { text, len };
    if (!lua_checkstack(L, 4) || vklua_protected_call(L, store_text, &t) != 0)
        return -1;
    lua_pushlightuserdata(L, &pushed_text_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &pushed_text_key);
    lua_pushnil(L); /* clearing an existing key does not allocate */
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

int vklua_raise_no_memory(lua_State *L)
{
    return luaL_error(L, "vkclient: not enough memory");
}

/* ---- seconds <-> milliseconds -------------------------------------------- */

/* Seconds (Lua number) to milliseconds. A non-zero duration never rounds to
 * zero (which means "the default" for timeouts) and keeps its sign, so that
 * validation sees what the caller meant. */
int64_t vklua_seconds_to_ms(lua_State *L, int index, const char *what)
{
    lua_Number seconds = lua_tonumber(L, index);
    if (isnan(seconds) || isinf(seconds) || fabs(seconds) > 9.2e15)
        luaL_error(L, "vkclient: %s must be a finite number of seconds", what);
    double ms = seconds * 1000.0;
    int64_t rounded = (int64_t)llround(ms);
    if (rounded == 0 && ms > 0)
        return 1;
    if (rounded == 0 && ms < 0)
        return -1;
    return rounded;
}
