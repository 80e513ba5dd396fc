/*
 * Scripts: vk.script(source) makes a script object (the source and its
 * SHA-1, computed once by the core); client:run_script(script, keys, args)
 * runs it with the core's EVALSHA-then-EVAL (vk_script_run). A script
 * object holds no connection: any client may run it.
 */
#include "vklua.h"

#include <vkclient_async.h>

#include <string.h>

typedef struct vklua_script_ud {
    vk_script *script;
} vklua_script_ud;

static vklua_script_ud *check_script(lua_State *L, int index)
{
    return luaL_checkudata(L, index, VKLUA_SCRIPT_MT);
}

vk_script *vklua_check_script(lua_State *L, int index)
{
    return check_script(L, index)->script;
}

/* vk.script(source) -> script */
static int l_script(lua_State *L)
{
    size_t len = 0;
    const char *source = luaL_checklstring(L, 1, &len);
    vklua_script_ud *s = lua_newuserdata(L, sizeof *s);
    s->script = NULL;
    luaL_getmetatable(L, VKLUA_SCRIPT_MT);
    lua_setmetatable(L, -2);
    vk_status st = vk_script_new(&s->script, source, len);
    if (st != VK_OK)
        return luaL_error(L, "vkclient: %s", vk_last_error());
    return 1;
}

/* script:sha() -> the SHA-1, 40 lower-case hex digits */
static int script_sha(lua_State *L)
{
    lua_pushstring(L, vk_script_sha1(check_script(L, 1)->script));
    return 1;
}

/* script:source() -> the source */
static int script_source(lua_State *L)
{
    size_t len = 0;
    const char *source = vk_script_source(check_script(L, 1)->script, &len);
    lua_pushlstring(L, source, len);
    return 1;
}

static int script_gc(lua_State *L)
{
    vklua_script_ud *s = check_script(L, 1);
    vk_script_free(s->script);
    s->script = NULL;
    return 0;
}

static int script_tostring(lua_State *L)
{
    lua_pushfstring(L, "vkclient.script(%s)", vk_script_sha1(check_script(L, 1)->script));
    return 1;
}

/* Pushes the items 1..#t of the table at index (nil: none) and returns
 * their count; strings and numbers only. The values stay on the stack, so
 * the strings (numbers converted in place) live until the call returns. */
static int push_list(lua_State *L, int index, const char *what)
{
    if (lua_isnoneornil(L, index))
        return 0;
    luaL_checktype(L, index, LUA_TTABLE);
    int n = (int)vklua_rawlen(L, index);
    luaL_checkstack(L, n, "vkclient: too many keys and args");
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, index, i);
        int type = lua_type(L, -1);
        if (type != LUA_TSTRING && type != LUA_TNUMBER)
            luaL_error(L, "vkclient: %s[%d] must be a string or a number, got %s", what, i,
                       luaL_typename(L, -1));
    }
    return n;
}

/* A run's keys (index 3) and args (index 4) as one argv: keys first. The
 * strings and the array stay on the stack until the call returns. */
typedef struct run_args {
    int nkeys, nargs;
    const char **argv;
    size_t *lens;
} run_args;

static void collect_run_args(lua_State *L, run_args *a)
{
    lua_settop(L, 4);
    int base = lua_gettop(L);
    a->nkeys = push_list(L, 3, "keys");
    a->nargs = push_list(L, 4, "args");
    int n = a->nkeys + a->nargs;
    a->argv = NULL;
    a->lens = NULL;
    if (n > 0) {
        void *scratch = lua_newuserdata(L, (size_t)n * (sizeof(char *) + sizeof(size_t)));
        a->lens = scratch;
        a->argv = (const char **)(a->lens + n);
        for (int i = 0; i < n; i++)
            a->argv[i] = lua_tolstring(L, base + 1 + i, &a->lens[i]);
    }
}

/* client:run_script(script, keys, args) -> reply | nil, err */
int vklua_client_run_script(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    vklua_script_ud *s = check_script(L, 2);
    run_args a;
    collect_run_args(L, &a);
    int nkeys = a.nkeys, nargs = a.nargs;
    const char **argv = a.argv;
    size_t *lens = a.lens;
    vklua_release_parked(&c->parked);

    vk_reply *reply = NULL;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_script_run(&reply, c->client, c->trace_ctx, s->script, nkeys, argv, lens,
                                 nargs, argv != NULL ? argv + nkeys : NULL,
                                 lens != NULL ? lens + nkeys : NULL);
    int nresults = st != VK_OK ? vklua_return_failure(L, st)
                               : vklua_return_reply(L, &c->parked, reply);
    vklua_deliver_events(c);
    vklua_leave(previous);
    return nresults;
}

/* h:run_script(script, keys, args) -> ticket | nil, err: the bytes-mode
 * client's run (require "vkclient.ngx"), completing with the final reply. */
int vklua_hosted_run_script(lua_State *L)
{
    vklua_op_list *ops;
    vk_hosted *h = vklua_check_hosted_ops(L, 1, &ops);
    vklua_script_ud *s = check_script(L, 2);
    run_args a;
    collect_run_args(L, &a);
    vklua_op *op = vklua_op_new(L, ops, VKLUA_OP_REPLY, 0);
    if (op == NULL)
        return vklua_raise_no_memory(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_hosted_script_run(h, s->script, a.nkeys, a.argv, a.lens, a.nargs,
                                        a.argv != NULL ? a.argv + a.nkeys : NULL,
                                        a.lens != NULL ? a.lens + a.nkeys : NULL,
                                        vklua_op_on_reply, op, &op->id);
    vklua_leave(previous);
    return vklua_op_queued(L, op, st);
}

const luaL_Reg vklua_script_methods[] = {
    { "sha", script_sha },
    { "source", script_source },
    { NULL, NULL },
};

const luaL_Reg vklua_script_meta[] = {
    { "__gc", script_gc },
    { "__tostring", script_tostring },
    { NULL, NULL },
};

const luaL_Reg vklua_script_functions[] = {
    { "script", l_script },
    { NULL, NULL },
};
