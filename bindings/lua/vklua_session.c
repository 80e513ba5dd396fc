/*
 * Sessions: client:session([key]) pins one pooled connection to the
 * caller until session:close() (or __gc / __close), for the commands a
 * shared connection refuses. The methods follow lua-resty-redis:
 * s:watch(...), s:multi() ("OK"), commands answer "QUEUED" inside MULTI,
 * s:exec() (the results, or vk.null when a watched key changed),
 * s:discard(), s:unwatch(); s:call(name, ...) runs any command, and
 * s:run(pipeline) a pipeline of the client on the session's connection.
 *
 * client:transaction(fn, keys [, opts]) is the optimistic-locking loop:
 * WATCH keys on a new session, fn(session) (reads, then s:multi() and the
 * queued writes), EXEC by the helper; again on a conflict, up to
 * opts.retries more times (default: until it succeeds).
 */
#include "vklua.h"

#include <string.h>
#include <strings.h>

typedef struct session_ud {
    vk_session *session;     /* NULL once closed */
    vk_reply *parked;
    vklua_client_ud *owner;  /* kept alive by the session's user value */
    int in_multi;            /* MULTI sent and not yet ended (for transaction) */
} session_ud;

static session_ud *check_session(lua_State *L)
{
    return vklua_check_self(L, VKLUA_SESSION_MT);
}

static vk_session *open_session(lua_State *L, session_ud *s)
{
    if (s->session == NULL)
        luaL_error(L, "vkclient: the session is closed");
    return s->session;
}

/* The idempotent close behind session:close(), __gc and __close. */
static int session_close(lua_State *L)
{
    session_ud *s = check_session(L);
    lua_State *previous = vklua_enter(L);
    vklua_release_parked(&s->parked);
    if (s->session != NULL) {
        vk_session_close(s->session);
        s->session = NULL;
        vklua_deliver_events(s->owner);
    }
    vklua_leave(previous);
    return 0;
}

/* client:session([key]) -> session | nil, err. In cluster mode key is
 * required: the session runs on the master of its hash slot. */
int vklua_client_session(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    size_t keylen = 0;
    const char *key = luaL_optlstring(L, 2, NULL, &keylen);
    lua_settop(L, 2);
    session_ud *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    luaL_getmetatable(L, VKLUA_SESSION_MT);
    lua_setmetatable(L, -2);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    vklua_set_uservalue(L, -2);
    s->owner = c;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_session_open(&s->session, c->client, c->trace_ctx, key, keylen);
    int nresults = st != VK_OK ? vklua_return_failure(L, st) : 1;
    vklua_deliver_events(c);
    vklua_leave(previous);
    return nresults;
}

static int is_name(const char *arg, size_t len, const char *name)
{
    return len == strlen(name) && strncasecmp(arg, name, len) == 0;
}

/* Runs argv on the session and returns its reply (nil, err for an error
 * reply or a failure; vk.null for an EXEC a watched key aborted). */
static int run_command(lua_State *L, session_ud *s, int argc, const char **argv, size_t *lens)
{
    vk_session *session = open_session(L, s);
    vklua_release_parked(&s->parked);
    vk_reply *reply = NULL;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_session_command(&reply, session, s->owner->trace_ctx, argc, argv, lens);
    int ends = is_name(argv[0], lens[0], "EXEC") || is_name(argv[0], lens[0], "DISCARD");
    int nresults;
    if (st == VK_ERR_WATCH_CONFLICT) {
        lua_pushlightuserdata(L, NULL);   /* lua-resty-redis: exec() gives null */
        nresults = 1;
    } else if (st != VK_OK) {
        nresults = vklua_return_failure(L, st);
    } else {
        if (is_name(argv[0], lens[0], "MULTI") && vk_reply_get_type(reply) != VK_REPLY_ERROR)
            s->in_multi = 1;
        nresults = vklua_return_reply(L, &s->parked, reply);
    }
    if (ends && st != VK_ERR_COMMAND_NOT_ALLOWED && st != VK_ERR_INVALID_ARGUMENT)
        s->in_multi = 0;
    vklua_deliver_events(s->owner);
    vklua_leave(previous);
    return nresults;
}

/* session:call(name, args...) -> reply | nil, err */
static int session_call(lua_State *L)
{
    session_ud *s = check_session(L);
    const char *small_argv[VKLUA_SMALL_ARGC];
    size_t small_lens[VKLUA_SMALL_ARGC];
    const char **argv;
    size_t *lens;
    int argc = vklua_collect_args(L, 2, small_argv, small_lens, &argv, &lens);
    return run_command(L, s, argc, argv, lens);
}

/* A command named `name` followed by the method's arguments (from 2). */
static int named_command(lua_State *L, const char *name)
{
    check_session(L);
    lua_pushstring(L, name);
    lua_insert(L, 2);
    return session_call(L);
}

static int session_watch(lua_State *L)
{
    if (lua_gettop(L) < 2)
        return luaL_error(L, "vkclient: watch needs at least one key");
    return named_command(L, "WATCH");
}

static int session_unwatch(lua_State *L)
{
    lua_settop(L, 1);
    return named_command(L, "UNWATCH");
}

static int session_multi(lua_State *L)
{
    lua_settop(L, 1);
    return named_command(L, "MULTI");
}

static int session_exec(lua_State *L)
{
    lua_settop(L, 1);
    return named_command(L, "EXEC");
}

static int session_discard(lua_State *L)
{
    lua_settop(L, 1);
    return named_command(L, "DISCARD");
}

/* session:run(pipeline) -> { reply, ... } | vk.null | nil, err: the
 * pipeline on the session's connection (a transaction pipeline: EXEC's
 * results, vk.null when a watched key changed). */
static int session_run(lua_State *L)
{
    session_ud *s = check_session(L);
    vk_pipeline *pipeline = vklua_check_pipeline(L, 2);
    vk_session *session = open_session(L, s);
    vklua_release_parked(&s->parked);
    vk_reply *reply = NULL;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_session_pipeline_exec(&reply, session, pipeline, s->owner->trace_ctx);
    int nresults;
    if (st == VK_ERR_WATCH_CONFLICT) {
        lua_pushlightuserdata(L, NULL);
        nresults = 1;
    } else if (st != VK_OK) {
        nresults = vklua_return_failure(L, st);
    } else {
        s->parked = reply;
        vklua_push_reply(L, reply);
        vklua_release_parked(&s->parked);
        nresults = 1;
    }
    vklua_deliver_events(s->owner);
    vklua_leave(previous);
    return nresults;
}

static int session_is_closed(lua_State *L)
{
    session_ud *s = check_session(L);
    lua_pushboolean(L, s->session == NULL);
    return 1;
}

static int session_tostring(lua_State *L)
{
    session_ud *s = check_session(L);
    lua_pushfstring(L, "vkclient.session (%s): %p", s->session == NULL ? "closed" : "open",
                    (void *)s);
    return 1;
}

const luaL_Reg vklua_session_methods[] = {
    { "call", session_call },
    { "watch", session_watch },
    { "unwatch", session_unwatch },
    { "multi", session_multi },
    { "exec", session_exec },
    { "discard", session_discard },
    { "run", session_run },
    { "is_closed", session_is_closed },
    { "close", session_close },
    { NULL, NULL },
};

const luaL_Reg vklua_session_meta[] = {
    { "__gc", session_close },
#if LUA_VERSION_NUM >= 504
    { "__close", session_close },
#endif
    { "__tostring", session_tostring },
    { NULL, NULL },
};

/* ---- client:transaction ----------------------------------------------------- */

/* Calls method `name` of the session at index with the values from
 * `first` to the top as arguments; leaves its results. */
static int call_method(lua_State *L, int session, const char *name, int first)
{
    int nargs = lua_gettop(L) - first + 1;
    int base = lua_gettop(L) - nargs;
    lua_getfield(L, session, name);
    lua_pushvalue(L, session);
    for (int i = 0; i < nargs; i++)
        lua_pushvalue(L, first + i);
    lua_call(L, nargs + 1, LUA_MULTRET);
    int nresults = lua_gettop(L) - base - nargs;
    /* Drop the arguments below the results. */
    for (int i = 0; i < nargs; i++)
        lua_remove(L, base + 1);
    return nresults;
}

/* Closes the session at index (protected: a failure to close must not
 * hide the outcome). */
static void close_at(lua_State *L, int session)
{
    session_ud *s = lua_touserdata(L, session);
    lua_State *previous = vklua_enter(L);
    vklua_release_parked(&s->parked);
    if (s->session != NULL) {
        vk_session_close(s->session);
        s->session = NULL;
    }
    vklua_leave(previous);
}

/* client:transaction(fn, keys [, opts]) -> results | nil, err. keys: a key
 * or an array of keys to WATCH; opts: { retries = n (default: no limit),
 * key = k (cluster: the session's node; default keys[1]) }. fn(session)
 * reads with session:call and queues its writes after session:multi();
 * the helper sends EXEC when fn returns. A conflict (EXEC gives vk.null)
 * runs it all again; after the retries, nil and an error WATCH_CONFLICT.
 * An error raised by fn is raised again once the session is closed. */
int vklua_client_transaction(lua_State *L)
{
    vklua_check_client(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 4);
    if (lua_type(L, 3) == LUA_TSTRING) {   /* one key */
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, 3);
        lua_rawseti(L, -2, 1);
        lua_replace(L, 3);
    } else if (!lua_isnil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
    }
    lua_Integer retries = -1;
    if (!lua_isnil(L, 4)) {
        static const char *const fields[] = {"retries", "key", NULL};
        luaL_checktype(L, 4, LUA_TTABLE);
        vklua_check_fields(L, 4, "transaction options", fields);
        lua_getfield(L, 4, "retries");
        if (!lua_isnil(L, -1)) {
            if (!vklua_is_integral(L, -1) || lua_tointeger(L, -1) < 0)
                return luaL_error(L, "vkclient: transaction retries must be an integer >= 0");
            retries = lua_tointeger(L, -1);
        }
        lua_pop(L, 1);
        lua_getfield(L, 4, "key");
    } else {
        lua_pushnil(L);
    }
    /* 5: the session's key. */
    if (lua_isnil(L, 5) && !lua_isnil(L, 3)) {
        lua_pop(L, 1);
        lua_rawgeti(L, 3, 1);
    }
    int nkeys = lua_isnil(L, 3) ? 0 : (int)vklua_rawlen(L, 3);
    for (lua_Integer attempt = 0;; attempt++) {
        lua_settop(L, 5);
        lua_getfield(L, 1, "session");
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 5);
        lua_call(L, 2, 2);
        if (lua_isnil(L, 6))
            return 2;                       /* nil, err */
        lua_pop(L, 1);
        /* 6: the session. */
        if (nkeys > 0) {
            lua_checkstack(L, nkeys + 4);
            for (int i = 1; i <= nkeys; i++)
                lua_rawgeti(L, 3, i);
            if (call_method(L, 6, "watch", 7) == 2 && lua_isnil(L, -2)) {
                close_at(L, 6);
                return 2;
            }
            lua_settop(L, 6);
        }
        lua_pushvalue(L, 2);
        lua_pushvalue(L, 6);
        if (lua_pcall(L, 1, 0, 0) != 0) {
            close_at(L, 6);
            return lua_error(L);
        }
        session_ud *s = lua_touserdata(L, 6);
        if (!s->in_multi) {
            close_at(L, 6);
            lua_newtable(L);
            return 1;
        }
        int nresults = call_method(L, 6, "exec", 7);
        close_at(L, 6);
        int aborted = nresults == 1 && lua_touserdata(L, -1) == NULL &&
                      lua_type(L, -1) == LUA_TLIGHTUSERDATA;
        if (!aborted)
            return nresults;
        if (retries >= 0 && attempt >= retries) {
            lua_State *previous = vklua_enter(L);
            lua_pushnil(L);
            vklua_push_error_object(L, VK_ERR_WATCH_CONFLICT,
                                    vk_strerror(VK_ERR_WATCH_CONFLICT),
                                    strlen(vk_strerror(VK_ERR_WATCH_CONFLICT)));
            vklua_leave(previous);
            return 2;
        }
    }
}
