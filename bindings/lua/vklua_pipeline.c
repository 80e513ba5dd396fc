/*
 * Pipelines: client:pipeline(), then pipeline:call(...) to queue commands
 * and pipeline:run() to send them in one round trip.
 */
#include "vklua.h"

#include <string.h>

/* ---- pipeline ------------------------------------------------------------ */

typedef struct pipeline_ud {
    vk_pipeline *pipeline;
    vk_reply *parked;
    vklua_client_ud *owner; /* kept alive by the pipeline's user value */
} pipeline_ud;

static pipeline_ud *check_pipeline(lua_State *L)
{
    return vklua_check_self(L, VKLUA_PIPELINE_MT);
}

vk_pipeline *vklua_check_pipeline(lua_State *L, int index)
{
    pipeline_ud *p = luaL_checkudata(L, index, VKLUA_PIPELINE_MT);
    if (p->pipeline == NULL)
        luaL_error(L, "vkclient: the pipeline is closed");
    return p->pipeline;
}

/* client:pipeline([{ transaction = true }]) -> pipeline | nil, err. A
 * transaction pipeline's run() sends MULTI, the commands and EXEC in one
 * write and returns EXEC's results. */
int vklua_client_pipeline(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    int transaction = 0;
    if (!lua_isnoneornil(L, 2)) {
        static const char *const fields[] = {"transaction", NULL};
        luaL_checktype(L, 2, LUA_TTABLE);
        vklua_check_fields(L, 2, "pipeline options", fields);
        vklua_opt_boolean(L, 2, "pipeline options", "transaction", &transaction);
        lua_settop(L, 1);
    }
    pipeline_ud *p = lua_newuserdata(L, sizeof *p);
    memset(p, 0, sizeof *p);
    luaL_getmetatable(L, VKLUA_PIPELINE_MT);
    lua_setmetatable(L, -2);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    vklua_set_uservalue(L, -2);
    p->owner = c;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_pipeline_new(&p->pipeline, c->client);
    if (st == VK_OK && transaction)
        st = vk_pipeline_set_transaction(p->pipeline, 1);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return 1;
}

/* pipeline:call(name, args...) -> pipeline | nil, err */
static int pipeline_call(lua_State *L)
{
    pipeline_ud *p = check_pipeline(L);
    const char *small_argv[VKLUA_SMALL_ARGC];
    size_t small_lens[VKLUA_SMALL_ARGC];
    const char **argv;
    size_t *lens;
    int argc = vklua_collect_args(L, 2, small_argv, small_lens, &argv, &lens);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_pipeline_append(p->pipeline, argc, argv, lens);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    lua_settop(L, 1);
    return 1;
}

/* pipeline:run() -> { reply, ... } | nil, err. Error replies are error
 * objects inside the results; the pipeline is emptied for reuse. */
static int pipeline_run(lua_State *L)
{
    pipeline_ud *p = check_pipeline(L);
    vklua_release_parked(&p->parked);
    vk_reply *reply = NULL;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_pipeline_exec(&reply, p->pipeline, p->owner->trace_ctx);
    if (st != VK_OK) {
        int nresults = vklua_return_failure(L, st);
        vklua_deliver_events(p->owner);
        vklua_leave(previous);
        return nresults;
    }
    p->parked = reply;
    vklua_push_reply(L, reply);
    vklua_release_parked(&p->parked);
    vklua_deliver_events(p->owner);
    vklua_leave(previous);
    return 1;
}

/* pipeline:length() -> commands queued */
static int pipeline_length(lua_State *L)
{
    pipeline_ud *p = check_pipeline(L);
    lua_pushinteger(L, (lua_Integer)vk_pipeline_length(p->pipeline));
    return 1;
}

static int pipeline_close(lua_State *L)
{
    pipeline_ud *p = check_pipeline(L);
    lua_State *previous = vklua_enter(L);
    vklua_release_parked(&p->parked);
    vk_pipeline_free(p->pipeline);
    p->pipeline = NULL;
    vklua_leave(previous);
    return 0;
}

const luaL_Reg vklua_pipeline_methods[] = {
    { "call", pipeline_call },
    { "run", pipeline_run },
    { "length", pipeline_length },
    { "close", pipeline_close },
    { NULL, NULL },
};

const luaL_Reg vklua_pipeline_meta[] = {
    { "__gc", pipeline_close },
#if LUA_VERSION_NUM >= 504
    { "__close", pipeline_close },
#endif
    { NULL, NULL },
};
