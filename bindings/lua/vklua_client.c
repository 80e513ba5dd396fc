/*
 * Clients: vk.new and vk.from_url, commands (client:call), status and the
 * other client methods, client:with_trace_parent. Every call delivers the
 * client's queued logger, metrics and tracer events before it returns.
 */
#include "vklua.h"

#include <string.h>

/* ---- client -------------------------------------------------------------- */

/* The idempotent close behind client:close(), __gc and __close. */
static int client_close(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    lua_State *previous = vklua_enter(L);
    vklua_release_parked(&c->parked);
    if (c->client != NULL) {
        vklua_deliver_events(c);
        vk_client_free(c->client);
        c->client = NULL;
    }
    vklua_leave(previous);
    return 0;
}

static vklua_client_ud *push_client_ud(lua_State *L)
{
    vklua_client_ud *c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    luaL_getmetatable(L, VKLUA_CLIENT_MT);
    lua_setmetatable(L, -2);
    return c;
}

/* Connects with the config in box; leaves the client (or nil, err) on the
 * stack and returns the number of results. */
static int connect_client(lua_State *L, vklua_config_box *box, int has_sinks)
{
    vklua_client_ud *c = push_client_ud(L); /* allocated first: no raise after connecting */
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_client_new(&c->client, box->cfg);
    vk_config_free(box->cfg);
    box->cfg = NULL;
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    c->has_sinks = has_sinks;
    return 1;
}

/* vk.new(config) -> client | nil, err */
static int l_new(lua_State *L)
{
    vklua_config_box *box;
    int has_sinks = 0;
    vk_status st = vklua_config_from_args(L, 0, &box, &has_sinks);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return connect_client(L, box, has_sinks);
}

/* vk.from_url(url [, extra]) -> client | nil, err */
static int l_from_url(lua_State *L)
{
    vklua_config_box *box;
    int has_sinks = 0;
    vk_status st = vklua_config_from_args(L, 1, &box, &has_sinks);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    return connect_client(L, box, has_sinks);
}

/* An argument of a command: strings as they are, numbers in their decimal
 * form; anything else is misuse. */
static const char *command_arg(lua_State *L, int index, size_t *len)
{
    int type = lua_type(L, index);
    if (type != LUA_TSTRING && type != LUA_TNUMBER)
        luaL_error(L, "vkclient: command argument #%d must be a string or a number, got %s",
                   index - 1, luaL_typename(L, index));
    return lua_tolstring(L, index, len);
}

/* Collects the arguments from `first` to the top into argv/lens. Small
 * commands use the caller's arrays; larger ones a scratch userdata left on
 * the stack (collected with everything else, also if a later step raises). */
int vklua_collect_args(lua_State *L, int first, const char **small_argv, size_t *small_lens,
                       const char ***argv, size_t **lens)
{
    int argc = lua_gettop(L) - first + 1;
    if (argc < 1)
        luaL_error(L, "vkclient: a command name is required");
    *argv = small_argv;
    *lens = small_lens;
    if (argc > VKLUA_SMALL_ARGC) {
        void *scratch = lua_newuserdata(L, (size_t)argc * (sizeof(char *) + sizeof(size_t)));
        *lens = scratch;
        *argv = (const char **)((size_t *)scratch + argc);
    }
    for (int i = 0; i < argc; i++)
        (*argv)[i] = command_arg(L, first + i, &(*lens)[i]);
    return argc;
}

/* Pushes a converted reply, or nil, err for an error reply; frees it. */
int vklua_return_reply(lua_State *L, vk_reply **parked, vk_reply *reply)
{
    *parked = reply;
    if (vk_reply_get_type(reply) == VK_REPLY_ERROR) {
        lua_pushnil(L);
        vklua_push_reply(L, reply);
        vklua_release_parked(parked);
        return 2;
    }
    vklua_push_reply(L, reply);
    vklua_release_parked(parked);
    return 1;
}

/* client:call(name, args...) -> reply | nil, err */
static int client_call(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    const char *small_argv[VKLUA_SMALL_ARGC];
    size_t small_lens[VKLUA_SMALL_ARGC];
    const char **argv;
    size_t *lens;
    int argc = vklua_collect_args(L, 2, small_argv, small_lens, &argv, &lens);
    vklua_release_parked(&c->parked);

    vk_reply *reply = NULL;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_client_command(&reply, c->client, c->trace_ctx, argc, argv, lens);
    /* Results first: a sink run by vklua_deliver_events may call into vkclient
     * and replace this thread's last error. */
    int nresults =
        st != VK_OK ? vklua_return_failure(L, st) : vklua_return_reply(L, &c->parked, reply);
    vklua_deliver_events(c);
    vklua_leave(previous);
    return nresults;
}

/* The registry slot through which build_status hands its table back. */
static char status_table_key;

static void set_string_field(lua_State *L, const char *name, const char *value)
{
    if (value == NULL)
        return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, name);
}

static void set_number_field(lua_State *L, const char *name, lua_Number value)
{
    lua_pushnumber(L, value);
    lua_setfield(L, -2, name);
}

/* Counters: integers on 5.3+ (lua_Integer is at least 32 bits on 5.1). */
static void set_count_field(lua_State *L, const char *name, uint64_t value)
{
    lua_pushinteger(L, (lua_Integer)value);
    lua_setfield(L, -2, name);
}

/* Builds the status table from the snapshot (light userdata 1), run under
 * vklua_protected_call: a memory error cannot skip the snapshot's release. */
static int build_status(lua_State *L)
{
    const vk_snapshot *snap = lua_touserdata(L, 1);
    lua_pushlightuserdata(L, &status_table_key);
    lua_createtable(L, 0, 11);
    lua_pushboolean(L, vk_snapshot_connected(snap));
    lua_setfield(L, -2, "connected");
    set_string_field(L, "last_refresh_error", vk_snapshot_last_refresh_error(snap));
    int64_t at_ms = vk_snapshot_last_refresh_at_ms(snap);
    if (at_ms > 0)
        set_number_field(L, "last_refresh_at", (lua_Number)at_ms / 1000.0);
    lua_pushboolean(L, vk_snapshot_refresh_loop_running(snap));
    lua_setfield(L, -2, "refresh_loop_running");
    set_string_field(L, "mode", vk_snapshot_mode(snap));
    set_string_field(L, "master_address", vk_snapshot_master_address(snap));
    set_count_field(L, "master_switches", vk_snapshot_master_switches(snap));
    set_count_field(L, "slot_map_refreshes", vk_snapshot_slot_map_refreshes(snap));
    set_count_field(L, "moved_redirects", vk_snapshot_moved_redirects(snap));
    set_count_field(L, "ask_redirects", vk_snapshot_ask_redirects(snap));
    size_t nodes = vk_snapshot_node_count(snap);
    lua_createtable(L, 0, (int)nodes);
    for (size_t i = 0; i < nodes; i++)
        set_count_field(L, vk_snapshot_node_address(snap, i), (uint64_t)vk_snapshot_node_slots(snap, i));
    lua_setfield(L, -2, "nodes");
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

/* client:status() -> { connected, last_refresh_error, last_refresh_at,
 * refresh_loop_running, mode, master_address, master_switches,
 * slot_map_refreshes, moved_redirects, ask_redirects, nodes }
 * (last_refresh_at in Unix seconds, nil if never; nodes maps each cluster
 * master to the number of slots it serves) */
static int client_status(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    lua_settop(L, 1);
    vk_snapshot *snap = NULL;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_client_snapshot(&snap, c->client);
    int nresults = st != VK_OK ? vklua_return_failure(L, st) : vklua_return_snapshot(L, snap);
    vklua_deliver_events(c);
    vklua_leave(previous);
    return nresults;
}

int vklua_return_snapshot(lua_State *L, vk_snapshot *snap)
{
    int failed = !lua_checkstack(L, 4) || vklua_protected_call(L, build_status, snap) != 0;
    vk_snapshot_free(snap);
    if (failed)
        return vklua_raise_no_memory(L);
    lua_pushlightuserdata(L, &status_table_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &status_table_key);
    lua_pushnil(L); /* clearing an existing key does not allocate */
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 1;
}

/* client:is_connected() -> boolean */
static int client_is_connected(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    lua_State *previous = vklua_enter(L);
    int connected = vk_client_is_connected(c->client);
    lua_pushboolean(L, connected);
    vklua_deliver_events(c);
    vklua_leave(previous);
    return 1;
}

/* client:last_refresh_error() -> string | nil */
static int client_last_refresh_error(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    char *text = NULL;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_client_last_refresh_error(&text, c->client);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    if (text == NULL) {
        lua_pushnil(L);
        return 1;
    }
    int copy_failed = vklua_push_text_protected(L, text, strlen(text)) != 0;
    vk_free(text);
    if (copy_failed)
        return vklua_raise_no_memory(L);
    return 1;
}

/* client:connect() -> true | nil, err  (create-ping-swap) */
static int client_connect(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_client_connect(c->client, c->trace_ctx);
    int nresults = vklua_return_status(L, st);
    vklua_deliver_events(c);
    vklua_leave(previous);
    return nresults;
}

/* client:poll([max]) -> number of events delivered */
static int client_poll(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    int max = (int)luaL_optinteger(L, 2, 0);
    lua_State *previous = vklua_enter(L);
    int delivered = c->client != NULL ? vk_client_poll_events(c->client, max) : 0;
    vklua_leave(previous);
    lua_pushinteger(L, delivered < 0 ? 0 : delivered);
    return 1;
}

/* client:tick() -> true | nil, err  (driven refresh mode; for ngx.timer.every) */
static int client_tick(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_client_tick(c->client, c->trace_ctx);
    int nresults = vklua_return_status(L, st);
    vklua_deliver_events(c);
    vklua_leave(previous);
    return nresults;
}

/* client:with_trace_parent(span, fn, ...) -> fn's results. The spans of
 * the calls made through this client while fn runs (and through lock
 * managers over it) that have no enclosing vkclient span name span as
 * their parent. An error raised by fn is raised again, after the parent is
 * restored. */
static int client_with_trace_parent(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    luaL_checkany(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 3;
    lua_pushvalue(L, 2);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX); /* nil: LUA_REFNIL, no reference */
    vk_context *ctx = NULL;
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_context_new(&ctx);
    if (st == VK_OK)
        st = vk_context_set_trace_parent(ctx, vklua_span_handle(ref));
    vklua_leave(previous);
    if (st != VK_OK) {
        vk_context_free(ctx);
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return vklua_raise_no_memory(L);
    }
    vk_context *outer = c->trace_ctx;
    c->trace_ctx = ctx;
    int base = 2; /* fn and its arguments start at 3 */
    int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
    c->trace_ctx = outer;
    vk_context_free(ctx);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    if (status != 0)
        return lua_error(L);
    return lua_gettop(L) - base;
}

static int client_tostring(lua_State *L)
{
    vklua_client_ud *c = vklua_check_client(L);
    lua_pushfstring(L, "vkclient.client (%s): %p",
                    c->client == NULL ? "closed"
                    : vk_client_is_connected(c->client) ? "connected" : "not connected",
                    (void *)c);
    return 1;
}

const luaL_Reg vklua_client_methods[] = {
    { "call", client_call },
    { "run_script", vklua_client_run_script },
    { "pipeline", vklua_client_pipeline },
    { "scan_iter", vklua_client_scan_iter },
    { "hscan_iter", vklua_client_hscan_iter },
    { "sscan_iter", vklua_client_sscan_iter },
    { "zscan_iter", vklua_client_zscan_iter },
    { "session", vklua_client_session },
    { "transaction", vklua_client_transaction },
    { "status", client_status },
    { "is_connected", client_is_connected },
    { "last_refresh_error", client_last_refresh_error },
    { "connect", client_connect },
    { "poll", client_poll },
    { "tick", client_tick },
    { "with_trace_parent", client_with_trace_parent },
    { "close", client_close },
    { NULL, NULL },
};

const luaL_Reg vklua_client_meta[] = {
    { "__gc", client_close },
#if LUA_VERSION_NUM >= 504
    { "__close", client_close },
#endif
    { "__tostring", client_tostring },
    { NULL, NULL },
};

const luaL_Reg vklua_client_functions[] = {
    { "new", l_new },
    { "from_url", l_from_url },
    { NULL, NULL },
};
