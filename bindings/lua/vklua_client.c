/*
 * require "vkclient": the Lua binding over the vkclient C ABI.
 *
 * One source for Lua 5.1, LuaJIT 2.1 and Lua 5.4 (the few differences are
 * the shims at the top). The binding is thin: every rule lives in the core;
 * this file converts arguments and replies and maps errors.
 *
 * Conventions (README "Lua"):
 *  - runtime failures return nil, err; err is a table with the metatable
 *    "vkclient.error": tostring(err) is the core's full message, err.code
 *    names the vk_status ("LOCK_NOT_HELD"), err.status is its number;
 *  - misuse (wrong argument types, unknown config fields) raises;
 *  - a nil reply, also inside arrays, is vk.null (a NULL light userdata, so
 *    it equals OpenResty's ngx.null);
 *  - callbacks (logger, metrics, the with_lock function) only ever run on
 *    the thread that owns the lua_State, inside a call into this module:
 *    clients queue background events and deliver them at the end of each
 *    call and in client:poll().
 */
#include <vkclient.h>

#include <lauxlib.h>
#include <lua.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- compatibility shims (5.1 and LuaJIT: LUA_VERSION_NUM 501) ----------- */

#if LUA_VERSION_NUM >= 502
#  define vk_rawlen(L, i) lua_rawlen(L, (i))
#else
#  define vk_rawlen(L, i) lua_objlen(L, (i))
#endif

/* Registers functions into the table on top of the stack. */
static void vk_setfuncs(lua_State *L, const luaL_Reg *funcs)
{
    for (; funcs->name != NULL; funcs++) {
        lua_pushcfunction(L, funcs->func);
        lua_setfield(L, -2, funcs->name);
    }
}

/* The userdata's one associated Lua value (5.1: its environment table). */
static void vk_set_uservalue(lua_State *L, int index)
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
static void vk_get_uservalue(lua_State *L, int index)
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
static int vk_protected_call(lua_State *L, lua_CFunction f, void *ud)
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
static int vk_is_integral(lua_State *L, int index)
{
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, index))
        return 1;
#endif
    lua_Number n = lua_tonumber(L, index);
    return n == floor(n) && fabs(n) < 9007199254740992.0;
}

static void vk_push_int64(lua_State *L, int64_t value)
{
    lua_pushinteger(L, (lua_Integer)value);
}

/* ---- names --------------------------------------------------------------- */

#define CLIENT_MT "vkclient.client"
#define PIPELINE_MT "vkclient.pipeline"
#define MANAGER_MT "vkclient.lock_manager"
#define LOCK_MT "vkclient.lock"
#define ERROR_MT "vkclient.error"
#define CONFIG_BOX_MT "vkclient.config_box"
#define CONFIG_MT "vkclient.config"
#define STATIC_PASSWORD_MT "vkclient.static_password"
#define GCP_IAM_MT "vkclient.gcp_iam"

/* Arguments of client:call up to this count live on the C stack. */
#define SMALL_ARGC 16

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
};
#define STATUS_NAME_COUNT ((int)(sizeof status_names / sizeof status_names[0]))

static const char *status_name(vk_status status)
{
    int i = (int)status;
    return i >= 0 && i < STATUS_NAME_COUNT ? status_names[i] : "UNKNOWN";
}

/* ---- the calling thread's Lua state -------------------------------------- */

/*
 * The lua_State currently inside a call into this module on this thread.
 * Callbacks run on it and only on it: a callback fired anywhere else (a
 * background thread, or outside any call) finds NULL and is dropped, which
 * cannot happen for queued clients but keeps a stray event harmless.
 */
static _Thread_local lua_State *active_state = NULL;

static lua_State *enter(lua_State *L)
{
    lua_State *previous = active_state;
    active_state = L;
    return previous;
}

static void leave(lua_State *previous)
{
    active_state = previous;
}

/* Identifies the Lua universe a state belongs to (its registry table). */
static const void *universe_of(lua_State *L)
{
    return lua_topointer(L, LUA_REGISTRYINDEX);
}

/* ---- handles ------------------------------------------------------------- */

/* The userdata at index 1 when it is of the class `name`, else raises.
 * Methods and metamethods carry their class metatable as upvalue 1 (see
 * new_class), which spares luaL_checkudata's registry lookup by name on
 * every call; luaL_checkudata remains the slow path and gives the error. */
static void *check_self(lua_State *L, const char *name)
{
    void *self = lua_touserdata(L, 1);
    if (self != NULL && lua_getmetatable(L, 1)) {
        int same = lua_rawequal(L, -1, lua_upvalueindex(1));
        lua_pop(L, 1);
        if (same)
            return self;
    }
    return luaL_checkudata(L, 1, name);
}

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
    luaL_getmetatable(L, ERROR_MT);
    lua_setmetatable(L, -2);
}

/* Pushes an error object {code, status, message}. */
static void push_error_object(lua_State *L, vk_status status, const char *message, size_t len)
{
    lua_pushlstring(L, message, len);
    wrap_error_message(L, status);
}

/* Returns nil, err for the last failure on this thread. */
static int return_failure(lua_State *L, vk_status status)
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
static int return_status(lua_State *L, vk_status status)
{
    if (status != VK_OK)
        return return_failure(L, status);
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
static int push_text_protected(lua_State *L, const char *text, size_t len)
{
    text_ref t = { text, len };
    if (!lua_checkstack(L, 4) || vk_protected_call(L, store_text, &t) != 0)
        return -1;
    lua_pushlightuserdata(L, &pushed_text_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &pushed_text_key);
    lua_pushnil(L); /* clearing an existing key does not allocate */
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

static int raise_no_memory(lua_State *L)
{
    return luaL_error(L, "vkclient: not enough memory");
}

/* ---- callbacks: logger, metrics, package logger -------------------------- */

/* A Lua function handed to the core as a callback's userdata. */
typedef struct lua_callback {
    const void *universe; /* the Lua state that owns ref */
    int ref;              /* the function, in that state's registry */
} lua_callback;

/* Takes a reference to the function at index; NULL when out of memory. */
static lua_callback *callback_new(lua_State *L, int index)
{
    lua_callback *cb = malloc(sizeof *cb);
    if (cb == NULL)
        return NULL;
    lua_pushvalue(L, index);
    cb->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    cb->universe = universe_of(L);
    return cb;
}

/* The core's free hook. The reference is dropped when this runs inside a
 * call from the owning state (always, in practice: clients are freed by
 * close and __gc); elsewhere only the C memory is released. */
static void callback_free(void *userdata)
{
    lua_callback *cb = userdata;
    lua_State *L = active_state;
    if (L != NULL && universe_of(L) == cb->universe)
        luaL_unref(L, LUA_REGISTRYINDEX, cb->ref);
    free(cb);
}

/* The state to run cb on, or NULL when this is not the owning thread. */
static lua_State *callback_state(const lua_callback *cb)
{
    lua_State *L = active_state;
    if (L == NULL || universe_of(L) != cb->universe || !lua_checkstack(L, 8))
        return NULL;
    return L;
}

static void push_fields(lua_State *L, const vk_field *fields, size_t nfields)
{
    lua_createtable(L, 0, (int)nfields);
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].key == NULL)
            continue;
        lua_pushstring(L, fields[i].value != NULL ? fields[i].value : "");
        lua_setfield(L, -2, fields[i].key);
    }
}

typedef struct log_event {
    const lua_callback *cb;
    vk_log_level level;
    const char *message;
    const vk_field *fields;
    size_t nfields;
} log_event;

/* fn(level, message, fields), run under vk_protected_call. */
static int deliver_log(lua_State *L)
{
    const log_event *e = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->cb->ref);
    lua_pushstring(L, vk_log_level_name(e->level));
    lua_pushstring(L, e->message != NULL ? e->message : "");
    push_fields(L, e->fields, e->nfields);
    lua_call(L, 3, 0);
    return 0;
}

/* A logger that raises is not allowed to unwind through the core: its
 * error is dropped, like any failure of a diagnostic sink. */
static void log_trampoline(void *userdata, vk_log_level level, const char *message,
                           const vk_field *fields, size_t nfields)
{
    log_event e = { userdata, level, message, fields, nfields };
    lua_State *L = callback_state(e.cb);
    if (L != NULL)
        (void)vk_protected_call(L, deliver_log, &e);
}

typedef struct metric_event {
    const lua_callback *cb;
    const char *name;
    vk_metric_kind kind;
    double value;
    const vk_field *labels;
    size_t nlabels;
} metric_event;

/* fn(name, kind, value, labels), run under vk_protected_call. */
static int deliver_metric(lua_State *L)
{
    const metric_event *e = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->cb->ref);
    lua_pushstring(L, e->name != NULL ? e->name : "");
    lua_pushstring(L, vk_metric_kind_name(e->kind));
    lua_pushnumber(L, e->value);
    push_fields(L, e->labels, e->nlabels);
    lua_call(L, 4, 0);
    return 0;
}

static void metric_trampoline(void *userdata, const char *name, vk_metric_kind kind,
                              double value, const vk_field *labels, size_t nlabels)
{
    metric_event e = { userdata, name, kind, value, labels, nlabels };
    lua_State *L = callback_state(e.cb);
    if (L != NULL)
        (void)vk_protected_call(L, deliver_metric, &e);
}

/* vk.set_package_logger(fn or nil). Raises when the core cannot store
 * the logger (out of memory); the previous logger then stays. */
static int l_set_package_logger(lua_State *L)
{
    vk_status st;
    if (lua_isnoneornil(L, 1)) {
        lua_State *previous = enter(L);
        st = vk_set_package_logger(NULL, NULL, NULL);
        leave(previous);
    } else {
        luaL_checktype(L, 1, LUA_TFUNCTION);
        lua_callback *cb = callback_new(L, 1);
        if (cb == NULL)
            return luaL_error(L, "vkclient: out of memory");
        lua_State *previous = enter(L);
        st = vk_set_package_logger(log_trampoline, cb, callback_free); /* frees cb on failure */
        leave(previous);
    }
    if (st != VK_OK)
        return luaL_error(L, "vkclient: %s", vk_last_error());
    return 0;
}

/* ---- seconds <-> milliseconds -------------------------------------------- */

/* Seconds (Lua number) to milliseconds. A non-zero duration never rounds to
 * zero (which means "the default" for timeouts) and keeps its sign, so that
 * validation sees what the caller meant. */
static int64_t seconds_to_ms(lua_State *L, int index, const char *what)
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

/* ---- reading config tables ----------------------------------------------- */

/* Raises unless every key of the table at index is one of `allowed`. */
static void check_fields(lua_State *L, int index, const char *where, const char *const *allowed)
{
    lua_pushnil(L);
    while (lua_next(L, index) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "vkclient: %s: field names must be strings", where);
        const char *name = lua_tostring(L, -1);
        int known = 0;
        for (const char *const *a = allowed; *a != NULL; a++)
            known = known || strcmp(*a, name) == 0;
        if (!known)
            luaL_error(L, "vkclient: %s: unknown field '%s'", where, name);
    }
}

/* Pushes t[name] and returns its type; raises when it is present with a
 * type other than `expected` (LUA_TNONE: any). */
static int get_field(lua_State *L, int index, const char *where, const char *name, int expected)
{
    lua_getfield(L, index, name);
    int type = lua_type(L, -1);
    if (type != LUA_TNIL && expected != LUA_TNONE && type != expected)
        luaL_error(L, "vkclient: %s.%s must be a %s, got %s", where, name,
                   lua_typename(L, expected), luaL_typename(L, -1));
    return type;
}

/* Optional string field; NULL when absent. The string stays valid while the
 * table holds it (callers read it before the table can change). */
static const char *opt_string(lua_State *L, int index, const char *where, const char *name)
{
    int type = get_field(L, index, where, name, LUA_TSTRING);
    const char *value = type == LUA_TNIL ? NULL : lua_tostring(L, -1);
    lua_pop(L, 1);
    return value;
}

static int opt_integer(lua_State *L, int index, const char *where, const char *name,
                       int *out)
{
    int type = get_field(L, index, where, name, LUA_TNUMBER);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (!vk_is_integral(L, -1) || fabs(lua_tonumber(L, -1)) > 2147483647.0)
        luaL_error(L, "vkclient: %s.%s must be an integer", where, name);
    *out = (int)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return 1;
}

static int opt_seconds(lua_State *L, int index, const char *where, const char *name,
                       int64_t *out_ms)
{
    int type = get_field(L, index, where, name, LUA_TNUMBER);
    if (type != LUA_TNIL)
        *out_ms = seconds_to_ms(L, -1, name);
    lua_pop(L, 1);
    return type != LUA_TNIL;
}

static int opt_boolean(lua_State *L, int index, const char *where, const char *name, int *out)
{
    int type = get_field(L, index, where, name, LUA_TBOOLEAN);
    if (type != LUA_TNIL)
        *out = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return type != LUA_TNIL;
}

/* Pushes t[name] when it is a table (absolute index returned), else 0. */
static int opt_table(lua_State *L, int index, const char *where, const char *name)
{
    if (get_field(L, index, where, name, LUA_TTABLE) == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    return lua_gettop(L);
}

/* A vk_config owned by a userdata, so that a raise while reading a config
 * table (misuse) cannot leak it: __gc frees it. */
typedef struct config_box {
    vk_config *cfg;
} config_box;

static int config_box_gc(lua_State *L)
{
    config_box *box = luaL_checkudata(L, 1, CONFIG_BOX_MT);
    lua_State *previous = enter(L);
    vk_config_free(box->cfg);
    leave(previous);
    box->cfg = NULL;
    return 0;
}

static config_box *push_config_box(lua_State *L)
{
    config_box *box = lua_newuserdata(L, sizeof *box);
    box->cfg = NULL;
    luaL_getmetatable(L, CONFIG_BOX_MT);
    lua_setmetatable(L, -2);
    return box;
}

#define TRY(expr)                 \
    do {                          \
        vk_status st_ = (expr);   \
        if (st_ != VK_OK)         \
            return st_;           \
    } while (0)

typedef vk_status (*add_address_fn)(vk_config *, const char *);

/* Adds the addresses at index: one string, or a list of strings (named
 * `what` in errors). */
static vk_status add_addresses(lua_State *L, int index, const char *what, vk_config *cfg,
                               add_address_fn add)
{
    if (lua_type(L, index) == LUA_TSTRING)
        return add(cfg, lua_tostring(L, index));
    if (lua_type(L, index) != LUA_TTABLE)
        luaL_error(L, "vkclient: %s must be a string or a list of strings, got %s", what,
                   luaL_typename(L, index));
    size_t n = vk_rawlen(L, index);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, index, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "vkclient: %s[%d] must be a string, got %s", what, (int)i,
                       luaL_typename(L, -1));
        vk_status st = add(cfg, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (st != VK_OK)
            return st;
    }
    return VK_OK;
}

/* t.addresses, when present. */
static vk_status apply_addresses(lua_State *L, int t, const char *where, vk_config *cfg,
                                 add_address_fn add)
{
    char what[32];
    snprintf(what, sizeof what, "%s.addresses", where);
    vk_status st = VK_OK;
    if (get_field(L, t, where, "addresses", LUA_TNONE) != LUA_TNIL)
        st = add_addresses(L, lua_gettop(L), what, cfg, add);
    lua_pop(L, 1);
    return st;
}

/* True when the table at index is a plain list (keys 1..n only, n > 0). */
static int is_list(lua_State *L, int index)
{
    size_t n = vk_rawlen(L, index);
    if (n == 0)
        return 0;
    int list = 1;
    lua_pushnil(L);
    while (list && lua_next(L, index) != 0) {
        lua_pop(L, 1);
        list = lua_type(L, -1) == LUA_TNUMBER && vk_is_integral(L, -1) &&
               lua_tonumber(L, -1) >= 1 && lua_tonumber(L, -1) <= (lua_Number)n;
    }
    if (!list)
        lua_pop(L, 1); /* the key lua_next left */
    return list;
}

/* cluster = { addresses = ... }, or the addresses alone: a list of strings
 * or one string, as the other bindings take them. */
static vk_status apply_cluster(lua_State *L, int t, vk_config *cfg)
{
    static const char *const cluster_fields[] = { "addresses", NULL };
    int type = get_field(L, t, "config", "cluster", LUA_TNONE);
    int cluster = lua_gettop(L);
    vk_status st = VK_OK;
    if (type == LUA_TSTRING || (type == LUA_TTABLE && is_list(L, cluster))) {
        if ((st = vk_config_set_cluster(cfg)) == VK_OK)
            st = add_addresses(L, cluster, "config.cluster", cfg, vk_config_add_cluster_address);
    } else if (type == LUA_TTABLE) {
        check_fields(L, cluster, "cluster", cluster_fields);
        if ((st = vk_config_set_cluster(cfg)) == VK_OK)
            st = apply_addresses(L, cluster, "cluster", cfg, vk_config_add_cluster_address);
    } else if (type != LUA_TNIL) {
        luaL_error(L, "vkclient: config.cluster must be a table or a string, got %s",
                   luaL_typename(L, cluster));
    }
    lua_pop(L, 1);
    return st;
}

static vk_status apply_topology(lua_State *L, int t, vk_config *cfg)
{
    static const char *const sentinel_fields[] = { "addresses", "master_name", "username",
                                                   "password", NULL };

    const char *standalone = opt_string(L, t, "config", "standalone");
    if (standalone != NULL)
        TRY(vk_config_set_standalone(cfg, standalone));

    int sentinel = opt_table(L, t, "config", "sentinel");
    if (sentinel != 0) {
        check_fields(L, sentinel, "sentinel", sentinel_fields);
        const char *master = opt_string(L, sentinel, "sentinel", "master_name");
        TRY(vk_config_set_sentinel(cfg, master != NULL ? master : ""));
        TRY(apply_addresses(L, sentinel, "sentinel", cfg, vk_config_add_sentinel_address));
        const char *user = opt_string(L, sentinel, "sentinel", "username");
        const char *password = opt_string(L, sentinel, "sentinel", "password");
        if (user != NULL || password != NULL)
            TRY(vk_config_set_sentinel_auth(cfg, user, password));
        lua_pop(L, 1);
    }

    return apply_cluster(L, t, cfg);
}

static vk_tls_version parse_tls_version(lua_State *L, int index)
{
    static const struct { const char *name; vk_tls_version version; } versions[] = {
        { "1.0", VK_TLS1_0 }, { "1.1", VK_TLS1_1 }, { "1.2", VK_TLS1_2 }, { "1.3", VK_TLS1_3 },
    };
    char buf[16];
    const char *text = buf;
    if (lua_type(L, index) == LUA_TNUMBER) {
        snprintf(buf, sizeof buf, "%.1f", (double)lua_tonumber(L, index));
    } else if (lua_type(L, index) == LUA_TSTRING) {
        text = lua_tostring(L, index);
    } else {
        luaL_error(L, "vkclient: tls.min_version must be a string such as \"1.2\", got %s",
                   luaL_typename(L, index));
    }
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++)
        if (strcmp(versions[i].name, text) == 0)
            return versions[i].version;
    luaL_error(L, "vkclient: tls.min_version must be one of \"1.0\", \"1.1\", \"1.2\", \"1.3\"");
    return VK_TLS_DEFAULT;
}

static vk_status apply_tls(lua_State *L, int t, vk_config *cfg)
{
    static const char *const fields[] = { "ca_cert_base64", "ca_file", "use_system_ca",
                                          "min_version", "allow_legacy_min_version",
                                          "client_cert_base64", "client_key_base64",
                                          "server_name", NULL };
    int tls = opt_table(L, t, "config", "tls");
    if (tls == 0)
        return VK_OK;
    check_fields(L, tls, "tls", fields);
    /* Trust: every source given is trusted; the core requires one. */
    const char *ca = opt_string(L, tls, "tls", "ca_cert_base64");
    TRY(vk_config_set_tls(cfg, ca != NULL ? ca : ""));
    const char *ca_file = opt_string(L, tls, "tls", "ca_file");
    if (ca_file != NULL)
        TRY(vk_config_set_tls_ca_file(cfg, ca_file));
    int system_ca = 0;
    if (opt_boolean(L, tls, "tls", "use_system_ca", &system_ca))
        TRY(vk_config_set_tls_use_system_ca(cfg, system_ca));
    if (get_field(L, tls, "tls", "min_version", LUA_TNONE) != LUA_TNIL)
        TRY(vk_config_set_tls_min_version(cfg, parse_tls_version(L, -1)));
    lua_pop(L, 1);
    int legacy = 0;
    if (opt_boolean(L, tls, "tls", "allow_legacy_min_version", &legacy))
        TRY(vk_config_set_tls_allow_legacy_min_version(cfg, legacy));
    const char *cert = opt_string(L, tls, "tls", "client_cert_base64");
    const char *key = opt_string(L, tls, "tls", "client_key_base64");
    if (cert != NULL || key != NULL)
        TRY(vk_config_set_tls_client_cert(cfg, cert, key));
    const char *server_name = opt_string(L, tls, "tls", "server_name");
    if (server_name != NULL)
        TRY(vk_config_set_tls_server_name(cfg, server_name));
    lua_pop(L, 1);
    return VK_OK;
}

/* Gives an auth table the redacting metatable, unless it has one. */
static void redact_auth_table(lua_State *L, int index, const char *metatable)
{
    if (lua_getmetatable(L, index)) {
        lua_pop(L, 1);
        return;
    }
    luaL_getmetatable(L, metatable);
    lua_setmetatable(L, index);
}

static vk_status apply_auth(lua_State *L, int t, vk_config *cfg)
{
    static const char *const static_fields[] = { "password", "username", NULL };
    static const char *const iam_fields[] = { "credentials_base64", "service_account",
                                              "token_lifetime", "refresh_every",
                                              "refresh_check_interval",
                                              "refresh_operation_timeout", "endpoint", NULL };
    int sp = opt_table(L, t, "config", "static_password");
    if (sp != 0) {
        check_fields(L, sp, "static_password", static_fields);
        redact_auth_table(L, sp, STATIC_PASSWORD_MT);
        const char *user = opt_string(L, sp, "static_password", "username");
        const char *password = opt_string(L, sp, "static_password", "password");
        TRY(vk_config_set_static_password(cfg, user, password));
        lua_pop(L, 1);
    }
    int iam = opt_table(L, t, "config", "gcp_iam");
    if (iam != 0) {
        check_fields(L, iam, "gcp_iam", iam_fields);
        redact_auth_table(L, iam, GCP_IAM_MT);
        const char *credentials = opt_string(L, iam, "gcp_iam", "credentials_base64");
        const char *account = opt_string(L, iam, "gcp_iam", "service_account");
        TRY(vk_config_set_gcp_iam(cfg, credentials, account != NULL ? account : ""));
        int64_t ms;
        if (opt_seconds(L, iam, "gcp_iam", "token_lifetime", &ms))
            TRY(vk_config_set_gcp_iam_token_lifetime_ms(cfg, ms));
        if (opt_seconds(L, iam, "gcp_iam", "refresh_every", &ms))
            TRY(vk_config_set_gcp_iam_refresh_every_ms(cfg, ms));
        if (opt_seconds(L, iam, "gcp_iam", "refresh_check_interval", &ms))
            TRY(vk_config_set_gcp_iam_refresh_check_interval_ms(cfg, ms));
        if (opt_seconds(L, iam, "gcp_iam", "refresh_operation_timeout", &ms))
            TRY(vk_config_set_gcp_iam_refresh_operation_timeout_ms(cfg, ms));
        const char *endpoint = opt_string(L, iam, "gcp_iam", "endpoint");
        if (endpoint != NULL)
            TRY(vk_config_set_gcp_iam_endpoint(cfg, endpoint));
        lua_pop(L, 1);
    }
    return VK_OK;
}

static vk_status apply_options(lua_State *L, int t, vk_config *cfg)
{
    static const char *const fields[] = { "db", "protocol", "pool_size", "min_idle_conns",
                                          "read_timeout", "write_timeout", "dial_timeout",
                                          "pool_timeout", "max_retries", "min_retry_backoff",
                                          "max_retry_backoff", NULL };
    static const struct {
        const char *name;
        vk_status (*set)(vk_config *, int);
    } ints[] = {
        { "db", vk_config_set_db },
        { "protocol", vk_config_set_protocol },
        { "pool_size", vk_config_set_pool_size },
        { "min_idle_conns", vk_config_set_min_idle_conns },
        { "max_retries", vk_config_set_max_retries },
    };
    static const struct {
        const char *name;
        vk_status (*set)(vk_config *, int64_t);
    } durations[] = {
        { "read_timeout", vk_config_set_read_timeout_ms },
        { "write_timeout", vk_config_set_write_timeout_ms },
        { "dial_timeout", vk_config_set_dial_timeout_ms },
        { "pool_timeout", vk_config_set_pool_timeout_ms },
        { "min_retry_backoff", vk_config_set_min_retry_backoff_ms },
        { "max_retry_backoff", vk_config_set_max_retry_backoff_ms },
    };
    int options = opt_table(L, t, "config", "options");
    if (options == 0)
        return VK_OK;
    check_fields(L, options, "options", fields);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int value;
        if (opt_integer(L, options, "options", ints[i].name, &value))
            TRY(ints[i].set(cfg, value));
    }
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        int64_t ms;
        if (opt_seconds(L, options, "options", durations[i].name, &ms))
            TRY(durations[i].set(cfg, ms));
    }
    lua_pop(L, 1);
    return VK_OK;
}

/* Sinks and modes; *has_sinks tells whether a logger or metrics was set. */
static vk_status apply_host(lua_State *L, int t, vk_config *cfg, int *has_sinks)
{
    *has_sinks = 0;
    if (get_field(L, t, "config", "logger", LUA_TFUNCTION) != LUA_TNIL) {
        lua_callback *cb = callback_new(L, -1);
        if (cb == NULL)
            return VK_ERR_NO_MEMORY;
        TRY(vk_config_set_logger(cfg, log_trampoline, cb, callback_free));
        *has_sinks = 1;
    }
    lua_pop(L, 1);
    if (get_field(L, t, "config", "metrics", LUA_TFUNCTION) != LUA_TNIL) {
        lua_callback *cb = callback_new(L, -1);
        if (cb == NULL)
            return VK_ERR_NO_MEMORY;
        TRY(vk_config_set_metrics(cfg, metric_trampoline, cb, callback_free));
        *has_sinks = 1;
    }
    lua_pop(L, 1);
    const char *mode = opt_string(L, t, "config", "refresh_mode");
    if (mode != NULL) {
        if (strcmp(mode, "driven") == 0)
            TRY(vk_config_set_refresh_mode(cfg, VK_REFRESH_DRIVEN));
        else if (strcmp(mode, "thread") == 0)
            TRY(vk_config_set_refresh_mode(cfg, VK_REFRESH_THREAD));
        else
            luaL_error(L, "vkclient: config.refresh_mode must be \"thread\" or \"driven\"");
    }
    /* Lua states are single-threaded: background events wait in a queue
     * until this thread calls into the client again (or client:poll()). */
    return vk_config_set_event_delivery(cfg, VK_EVENTS_QUEUED);
}

static const char *const config_fields[] = { "standalone", "sentinel", "cluster", "tls",
                                             "static_password", "gcp_iam", "options",
                                             "logger", "metrics", "refresh_mode", NULL };
/* What vk.from_url takes besides the URL (the URL gives topology and auth). */
static const char *const url_extra_fields[] = { "tls", "options", "logger", "metrics",
                                                "refresh_mode", NULL };

/* Fills cfg from the config table at t. Raises on misuse; returns the
 * core's status for values it refuses. */
static vk_status apply_config(lua_State *L, int t, vk_config *cfg, int with_topology,
                              int *has_sinks)
{
    check_fields(L, t, "config", with_topology ? config_fields : url_extra_fields);
    if (with_topology) {
        TRY(apply_topology(L, t, cfg));
        TRY(apply_auth(L, t, cfg));
    }
    TRY(apply_tls(L, t, cfg));
    TRY(apply_options(L, t, cfg));
    return apply_host(L, t, cfg, has_sinks);
}

/* ---- replies ------------------------------------------------------------- */

static void push_reply(lua_State *L, const vk_reply *reply);

static void push_aggregate(lua_State *L, const vk_reply *reply)
{
    size_t n = vk_reply_get_length(reply);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_reply(L, vk_reply_get_element(reply, i));
        lua_rawseti(L, -2, (int)(i + 1));
    }
}

static void push_map(lua_State *L, const vk_reply *reply)
{
    size_t n = vk_reply_get_length(reply);
    lua_createtable(L, 0, (int)(n / 2));
    for (size_t i = 0; i + 1 < n; i += 2) {
        push_reply(L, vk_reply_get_element(reply, i));
        push_reply(L, vk_reply_get_element(reply, i + 1));
        lua_rawset(L, -3);
    }
}

/* Converts a reply to Lua values. It may raise (out of memory, nesting too
 * deep): callers park the C reply where close/__gc/the next call frees it. */
static void push_reply(lua_State *L, const vk_reply *reply)
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
        push_error_object(L, VK_ERR_SERVER, text != NULL ? text : "", len);
        break;
    case VK_REPLY_NIL:
    default:
        lua_pushlightuserdata(L, NULL);
        break;
    }
}

/* ---- client -------------------------------------------------------------- */

typedef struct client_ud {
    vk_client *client;  /* NULL once closed */
    vk_reply *parked;   /* a reply being converted; freed if conversion raised */
    int has_sinks;      /* events to deliver after each call */
} client_ud;

static client_ud *check_client(lua_State *L)
{
    return check_self(L, CLIENT_MT);
}

static void deliver_events(client_ud *c)
{
    if (c->has_sinks && c->client != NULL)
        (void)vk_client_poll_events(c->client, 0);
}

static void release_parked(vk_reply **parked)
{
    if (*parked != NULL) {
        vk_reply_free(*parked);
        *parked = NULL;
    }
}

/* The idempotent close behind client:close(), __gc and __close. */
static int client_close(lua_State *L)
{
    client_ud *c = check_client(L);
    lua_State *previous = enter(L);
    release_parked(&c->parked);
    if (c->client != NULL) {
        deliver_events(c);
        vk_client_free(c->client);
        c->client = NULL;
    }
    leave(previous);
    return 0;
}

static client_ud *push_client_ud(lua_State *L)
{
    client_ud *c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    luaL_getmetatable(L, CLIENT_MT);
    lua_setmetatable(L, -2);
    return c;
}

/* Connects with the config in box; leaves the client (or nil, err) on the
 * stack and returns the number of results. */
static int connect_client(lua_State *L, config_box *box, int has_sinks)
{
    client_ud *c = push_client_ud(L); /* allocated first: no raise after connecting */
    lua_State *previous = enter(L);
    vk_status st = vk_client_new(&c->client, box->cfg);
    vk_config_free(box->cfg);
    box->cfg = NULL;
    leave(previous);
    if (st != VK_OK)
        return return_failure(L, st);
    c->has_sinks = has_sinks;
    return 1;
}

/* vk.new(config) -> client | nil, err */
static int l_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    config_box *box = push_config_box(L);
    lua_State *previous = enter(L);
    vk_status st = vk_config_new(&box->cfg);
    leave(previous);
    if (st != VK_OK)
        return return_failure(L, st);
    int has_sinks = 0;
    st = apply_config(L, 1, box->cfg, 1, &has_sinks);
    if (st != VK_OK)
        return return_failure(L, st);
    return connect_client(L, box, has_sinks);
}

/* vk.from_url(url [, extra]) -> client | nil, err */
static int l_from_url(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    config_box *box = push_config_box(L);
    lua_State *previous = enter(L);
    vk_status st = vk_config_from_url(&box->cfg, url);
    leave(previous);
    if (st != VK_OK)
        return return_failure(L, st);
    int has_sinks = 0;
    if (lua_istable(L, 2)) {
        st = apply_config(L, 2, box->cfg, 0, &has_sinks);
    } else {
        st = vk_config_set_event_delivery(box->cfg, VK_EVENTS_QUEUED);
    }
    if (st != VK_OK)
        return return_failure(L, st);
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
static int collect_args(lua_State *L, int first, const char **small_argv, size_t *small_lens,
                        const char ***argv, size_t **lens)
{
    int argc = lua_gettop(L) - first + 1;
    if (argc < 1)
        luaL_error(L, "vkclient: a command name is required");
    *argv = small_argv;
    *lens = small_lens;
    if (argc > SMALL_ARGC) {
        void *scratch = lua_newuserdata(L, (size_t)argc * (sizeof(char *) + sizeof(size_t)));
        *lens = scratch;
        *argv = (const char **)((size_t *)scratch + argc);
    }
    for (int i = 0; i < argc; i++)
        (*argv)[i] = command_arg(L, first + i, &(*lens)[i]);
    return argc;
}

/* Pushes a converted reply, or nil, err for an error reply; frees it. */
static int return_reply(lua_State *L, vk_reply **parked, vk_reply *reply)
{
    *parked = reply;
    if (vk_reply_get_type(reply) == VK_REPLY_ERROR) {
        lua_pushnil(L);
        push_reply(L, reply);
        release_parked(parked);
        return 2;
    }
    push_reply(L, reply);
    release_parked(parked);
    return 1;
}

/* client:call(name, args...) -> reply | nil, err */
static int client_call(lua_State *L)
{
    client_ud *c = check_client(L);
    const char *small_argv[SMALL_ARGC];
    size_t small_lens[SMALL_ARGC];
    const char **argv;
    size_t *lens;
    int argc = collect_args(L, 2, small_argv, small_lens, &argv, &lens);
    release_parked(&c->parked);

    vk_reply *reply = NULL;
    lua_State *previous = enter(L);
    vk_status st = vk_client_command(&reply, c->client, NULL, argc, argv, lens);
    /* Results first: a sink run by deliver_events may call into vkclient
     * and replace this thread's last error. */
    int nresults = st != VK_OK ? return_failure(L, st) : return_reply(L, &c->parked, reply);
    deliver_events(c);
    leave(previous);
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
 * vk_protected_call: a memory error cannot skip the snapshot's release. */
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
    client_ud *c = check_client(L);
    lua_settop(L, 1);
    vk_snapshot *snap = NULL;
    lua_State *previous = enter(L);
    vk_status st = vk_client_snapshot(&snap, c->client);
    if (st != VK_OK) {
        int nresults = return_failure(L, st);
        leave(previous);
        return nresults;
    }
    int failed = !lua_checkstack(L, 4) || vk_protected_call(L, build_status, snap) != 0;
    vk_snapshot_free(snap);
    if (failed) {
        leave(previous);
        return raise_no_memory(L);
    }
    lua_pushlightuserdata(L, &status_table_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &status_table_key);
    lua_pushnil(L); /* clearing an existing key does not allocate */
    lua_rawset(L, LUA_REGISTRYINDEX);
    deliver_events(c);
    leave(previous);
    return 1;
}

/* client:is_connected() -> boolean */
static int client_is_connected(lua_State *L)
{
    client_ud *c = check_client(L);
    lua_State *previous = enter(L);
    int connected = vk_client_is_connected(c->client);
    lua_pushboolean(L, connected);
    deliver_events(c);
    leave(previous);
    return 1;
}

/* client:last_refresh_error() -> string | nil */
static int client_last_refresh_error(lua_State *L)
{
    client_ud *c = check_client(L);
    char *text = NULL;
    lua_State *previous = enter(L);
    vk_status st = vk_client_last_refresh_error(&text, c->client);
    leave(previous);
    if (st != VK_OK)
        return return_failure(L, st);
    if (text == NULL) {
        lua_pushnil(L);
        return 1;
    }
    int copy_failed = push_text_protected(L, text, strlen(text)) != 0;
    vk_free(text);
    if (copy_failed)
        return raise_no_memory(L);
    return 1;
}

/* client:connect() -> true | nil, err  (create-ping-swap) */
static int client_connect(lua_State *L)
{
    client_ud *c = check_client(L);
    lua_State *previous = enter(L);
    vk_status st = vk_client_connect(c->client, NULL);
    int nresults = return_status(L, st);
    deliver_events(c);
    leave(previous);
    return nresults;
}

/* client:poll([max]) -> number of events delivered */
static int client_poll(lua_State *L)
{
    client_ud *c = check_client(L);
    int max = (int)luaL_optinteger(L, 2, 0);
    lua_State *previous = enter(L);
    int delivered = c->client != NULL ? vk_client_poll_events(c->client, max) : 0;
    leave(previous);
    lua_pushinteger(L, delivered < 0 ? 0 : delivered);
    return 1;
}

/* client:tick() -> true | nil, err  (driven refresh mode; for ngx.timer.every) */
static int client_tick(lua_State *L)
{
    client_ud *c = check_client(L);
    lua_State *previous = enter(L);
    vk_status st = vk_client_tick(c->client, NULL);
    int nresults = return_status(L, st);
    deliver_events(c);
    leave(previous);
    return nresults;
}

static int client_tostring(lua_State *L)
{
    client_ud *c = check_client(L);
    lua_pushfstring(L, "vkclient.client (%s): %p",
                    c->client == NULL ? "closed"
                    : vk_client_is_connected(c->client) ? "connected" : "not connected",
                    (void *)c);
    return 1;
}

/* ---- pipeline ------------------------------------------------------------ */

typedef struct pipeline_ud {
    vk_pipeline *pipeline;
    vk_reply *parked;
    client_ud *owner; /* kept alive by the pipeline's user value */
} pipeline_ud;

static pipeline_ud *check_pipeline(lua_State *L)
{
    return check_self(L, PIPELINE_MT);
}

/* client:pipeline() -> pipeline | nil, err */
static int client_pipeline(lua_State *L)
{
    client_ud *c = check_client(L);
    pipeline_ud *p = lua_newuserdata(L, sizeof *p);
    memset(p, 0, sizeof *p);
    luaL_getmetatable(L, PIPELINE_MT);
    lua_setmetatable(L, -2);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    vk_set_uservalue(L, -2);
    p->owner = c;
    lua_State *previous = enter(L);
    vk_status st = vk_pipeline_new(&p->pipeline, c->client);
    leave(previous);
    if (st != VK_OK)
        return return_failure(L, st);
    return 1;
}

/* pipeline:call(name, args...) -> pipeline | nil, err */
static int pipeline_call(lua_State *L)
{
    pipeline_ud *p = check_pipeline(L);
    const char *small_argv[SMALL_ARGC];
    size_t small_lens[SMALL_ARGC];
    const char **argv;
    size_t *lens;
    int argc = collect_args(L, 2, small_argv, small_lens, &argv, &lens);
    lua_State *previous = enter(L);
    vk_status st = vk_pipeline_append(p->pipeline, argc, argv, lens);
    leave(previous);
    if (st != VK_OK)
        return return_failure(L, st);
    lua_settop(L, 1);
    return 1;
}

/* pipeline:run() -> { reply, ... } | nil, err. Error replies are error
 * objects inside the results; the pipeline is emptied for reuse. */
static int pipeline_run(lua_State *L)
{
    pipeline_ud *p = check_pipeline(L);
    release_parked(&p->parked);
    vk_reply *reply = NULL;
    lua_State *previous = enter(L);
    vk_status st = vk_pipeline_exec(&reply, p->pipeline, NULL);
    if (st != VK_OK) {
        int nresults = return_failure(L, st);
        deliver_events(p->owner);
        leave(previous);
        return nresults;
    }
    p->parked = reply;
    push_reply(L, reply);
    release_parked(&p->parked);
    deliver_events(p->owner);
    leave(previous);
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
    lua_State *previous = enter(L);
    release_parked(&p->parked);
    vk_pipeline_free(p->pipeline);
    p->pipeline = NULL;
    leave(previous);
    return 0;
}

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
static void read_lock_options(lua_State *L, int index, vk_lock_options *opts)
{
    static const char *const fields[] = { "expiry", "tries", "retry_delay", "drift_factor",
                                          "auto_renew", NULL };
    vk_lock_options_init(opts, VK_LOCK_OPTIONS_VERSION);
    luaL_checktype(L, index, LUA_TTABLE);
    check_fields(L, index, "lock options", fields);
    opt_seconds(L, index, "lock options", "expiry", &opts->expiry_ms);
    opt_integer(L, index, "lock options", "tries", &opts->tries);
    opt_seconds(L, index, "lock options", "retry_delay", &opts->retry_delay_ms);
    if (get_field(L, index, "lock options", "drift_factor", LUA_TNUMBER) != LUA_TNIL)
        opts->drift_factor = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
    opt_boolean(L, index, "lock options", "auto_renew", &opts->auto_renew);
}

/* ---- lock handles -------------------------------------------------------- */

typedef struct lock_ud {
    vk_lock *lock;  /* NULL once closed (or, when borrowed, after the function) */
    int borrowed;   /* lent by with_lock: the core owns it */
} lock_ud;

static lock_ud *check_lock(lua_State *L)
{
    return check_self(L, LOCK_MT);
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
    luaL_getmetatable(L, LOCK_MT);
    lua_setmetatable(L, -2);
    vk_get_uservalue(L, manager);
    vk_set_uservalue(L, -2);
    return h;
}

/* h:unlock() -> true | nil, err */
static int lock_unlock(lua_State *L)
{
    lock_ud *h = check_lock(L);
    lua_State *previous = enter(L);
    vk_status st = vk_lock_unlock(h->lock, NULL);
    leave(previous);
    return return_status(L, st);
}

/* h:extend(seconds) -> true | nil, err */
static int lock_extend(lua_State *L)
{
    lock_ud *h = check_lock(L);
    luaL_checktype(L, 2, LUA_TNUMBER);
    int64_t ms = seconds_to_ms(L, 2, "expiry");
    lua_State *previous = enter(L);
    vk_status st = vk_lock_extend(h->lock, NULL, ms);
    leave(previous);
    return return_status(L, st);
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
    vk_push_int64(L, vk_lock_fencing_token(h->lock));
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
        lua_State *previous = enter(L);
        vk_lock_free(h->lock);
        leave(previous);
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
        lua_State *previous = enter(L);
        (void)vk_lock_unlock(h->lock, NULL);
        leave(previous);
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
    client_ud *clients[1];    /* kept alive by the manager's user value */
} manager_ud;

static manager_ud *check_manager(lua_State *L)
{
    return check_self(L, MANAGER_MT);
}

/* 1 when the value at index is a client userdata. */
static int is_client(lua_State *L, int index)
{
    if (lua_type(L, index) != LUA_TUSERDATA || !lua_getmetatable(L, index))
        return 0;
    luaL_getmetatable(L, CLIENT_MT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

static void manager_deliver_events(manager_ud *m)
{
    for (int i = 0; i < m->nclients; i++)
        deliver_events(m->clients[i]);
}

/* vk.lock_manager(client) or vk.lock_manager({c1, c2, c3}) -> manager | nil, err */
static int l_lock_manager(lua_State *L)
{
    int n;
    if (lua_istable(L, 1)) {
        n = (int)vk_rawlen(L, 1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, 1, i);
            if (!is_client(L, -1))
                luaL_error(L, "vkclient: lock_manager: element %d is not a vkclient client", i);
            lua_pop(L, 1);
        }
    } else {
        luaL_checkudata(L, 1, CLIENT_MT);
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, 1);
        lua_replace(L, 1);
        n = 1;
    }
    lua_settop(L, 1);
    size_t size = sizeof(manager_ud) + (size_t)(n > 1 ? n - 1 : 0) * sizeof(client_ud *);
    manager_ud *m = lua_newuserdata(L, size);
    memset(m, 0, size);
    luaL_getmetatable(L, MANAGER_MT);
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
    vk_set_uservalue(L, 2);
    m->nclients = n;

    lua_State *previous = enter(L);
    vk_status st = n == 1 ? vk_lock_manager_new(&m->manager, raw[0])
                          : vk_lock_manager_new_quorum(&m->manager, raw, (size_t)n);
    leave(previous);
    if (st != VK_OK)
        return return_failure(L, st);
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
    lua_State *previous = enter(L);
    vk_status st = vk_lock_manager_try_lock(&h->lock, m->manager, NULL, key, keylen);
    int nresults = 1;
    if (st != VK_OK)
        nresults = return_failure(L, st);
    else if (h->lock == NULL)
        lua_pushnil(L); /* taken by someone else: not an error */
    manager_deliver_events(m);
    leave(previous);
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
        read_lock_options(L, 3, &opts);
    lock_ud *h = push_lock_ud(L, 1, 0);
    lua_State *previous = enter(L);
    vk_status st = vk_lock_manager_acquire(&h->lock, m->manager, NULL, key, keylen,
                                           has_opts ? &opts : NULL);
    int nresults = st != VK_OK ? return_failure(L, st) : 1;
    manager_deliver_events(m);
    leave(previous);
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
    push_error_object(L, VK_ERR_LOCK_FN, message, len);
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

    lua_State *previous = enter(L);
    vk_status st = vk_lock_manager_with_lock_options(m->manager, NULL, key, keylen, opts,
                                                     has_fn ? run_locked_function : NULL,
                                                     &call);
    call.borrowed->lock = NULL;
    int nresults;
    if (st == VK_OK)
        nresults = lua_gettop(L) - base;
    else if (st != VK_ERR_LOCK_FN || call.status == 0)
        nresults = return_failure(L, st);
    else
        nresults = return_function_error(L, call.status);
    manager_deliver_events(m);
    leave(previous);
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
    read_lock_options(L, 3, &opts);
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
        push_error_object(L, VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK, text, strlen(text));
        return 2;
    }
    lock_ud *h = luaL_checkudata(L, 2, LOCK_MT);
    lua_State *previous = enter(L);
    vk_status st = vk_lock_unlock(h->lock, NULL);
    int nresults = return_status(L, st);
    manager_deliver_events(m);
    leave(previous);
    return nresults;
}

static int manager_close(lua_State *L)
{
    manager_ud *m = check_manager(L);
    lua_State *previous = enter(L);
    vk_lock_manager_free(m->manager);
    m->manager = NULL;
    leave(previous);
    return 0;
}

/* ---- auth and config tables: printing without secrets -------------------- */

static int static_password_tostring(lua_State *L)
{
    lua_pushliteral(L, "StaticPasswordAuth{Password:REDACTED}");
    return 1;
}

static int gcp_iam_tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "service_account");
    const char *account = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    lua_pushfstring(L, "GCPIAMAuth{ServiceAccount:%s, CredentialsBase64:REDACTED}", account);
    return 1;
}

/* vk.static_password{password=, username=} / vk.gcp_iam{...}: the table
 * itself, with the redacting metatable. */
static int l_static_password(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, STATIC_PASSWORD_MT);
    lua_setmetatable(L, 1);
    return 1;
}

static int l_gcp_iam(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, GCP_IAM_MT);
    lua_setmetatable(L, 1);
    return 1;
}

/* vk.describe(config) -> the core's one-line description, secrets redacted
 * (or nil, err when the core refuses a value). Logger/metrics functions in
 * the table are referenced only for the duration of the call. */
static int l_describe(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    config_box *box = push_config_box(L);
    lua_State *previous = enter(L);
    vk_status st = vk_config_new(&box->cfg);
    leave(previous);
    if (st != VK_OK)
        return return_failure(L, st);
    int has_sinks = 0;
    st = apply_config(L, 1, box->cfg, 1, &has_sinks);
    previous = enter(L);
    char *text = NULL;
    if (st == VK_OK)
        st = vk_config_describe(&text, box->cfg);
    vk_config_free(box->cfg);
    box->cfg = NULL;
    leave(previous);
    if (st != VK_OK)
        return return_failure(L, st);
    int copy_failed = push_text_protected(L, text, strlen(text)) != 0;
    vk_free(text);
    if (copy_failed)
        return raise_no_memory(L);
    return 1;
}

static int config_tostring(lua_State *L)
{
    lua_settop(L, 1);
    lua_pushcfunction(L, l_describe);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 2);
    if (lua_isnil(L, -2)) {
        lua_pushfstring(L, "Config{<invalid: %s>}", lua_tostring(L, -1));
        return 1;
    }
    lua_pop(L, 1);
    return 1;
}

/* vk.config{...} -> the table itself, printing as the core's description. */
static int l_config(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, CONFIG_MT);
    lua_setmetatable(L, 1);
    return 1;
}

/* ---- module -------------------------------------------------------------- */

/* Creates metatable `name` with methods in __index and the metamethods. */
/* Registers funcs into the table on top of the stack as closures over the
 * value at `upvalue` (absolute index). */
static void set_closures(lua_State *L, const luaL_Reg *funcs, int upvalue)
{
    for (; funcs->name != NULL; funcs++) {
        lua_pushvalue(L, upvalue);
        lua_pushcclosure(L, funcs->func, 1);
        lua_setfield(L, -2, funcs->name);
    }
}

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      const luaL_Reg *metamethods)
{
    luaL_newmetatable(L, name);
    int metatable = lua_gettop(L);
    if (metamethods != NULL)
        set_closures(L, metamethods, metatable);
    if (methods != NULL) {
        lua_newtable(L);
        set_closures(L, methods, metatable);
        lua_setfield(L, -2, "__index");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "vkclient");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

static const luaL_Reg client_methods[] = {
    { "call", client_call },
    { "pipeline", client_pipeline },
    { "status", client_status },
    { "is_connected", client_is_connected },
    { "last_refresh_error", client_last_refresh_error },
    { "connect", client_connect },
    { "poll", client_poll },
    { "tick", client_tick },
    { "close", client_close },
    { NULL, NULL },
};

static const luaL_Reg client_meta[] = {
    { "__gc", client_close },
#if LUA_VERSION_NUM >= 504
    { "__close", client_close },
#endif
    { "__tostring", client_tostring },
    { NULL, NULL },
};

static const luaL_Reg pipeline_methods[] = {
    { "call", pipeline_call },
    { "run", pipeline_run },
    { "length", pipeline_length },
    { "close", pipeline_close },
    { NULL, NULL },
};

static const luaL_Reg pipeline_meta[] = {
    { "__gc", pipeline_close },
#if LUA_VERSION_NUM >= 504
    { "__close", pipeline_close },
#endif
    { NULL, NULL },
};

static const luaL_Reg manager_methods[] = {
    { "with_lock", manager_with_lock },
    { "with_lock_options", manager_with_lock_options },
    { "try_lock", manager_try_lock },
    { "acquire", manager_acquire },
    { "unlock", manager_unlock },
    { "close", manager_close },
    { NULL, NULL },
};

static const luaL_Reg manager_meta[] = {
    { "__gc", manager_close },
#if LUA_VERSION_NUM >= 504
    { "__close", manager_close },
#endif
    { NULL, NULL },
};

static const luaL_Reg lock_methods[] = {
    { "unlock", lock_unlock },
    { "extend", lock_extend },
    { "validity", lock_validity },
    { "fencing_token", lock_fencing_token },
    { "key", lock_key },
    { "is_lost", lock_is_lost },
    { "close", lock_close },
    { NULL, NULL },
};

static const luaL_Reg lock_meta[] = {
    { "__gc", lock_close },
#if LUA_VERSION_NUM >= 504
    { "__close", lock_close_scope },
#endif
    { "__tostring", lock_tostring },
    { NULL, NULL },
};

static const luaL_Reg error_meta[] = {
    { "__tostring", error_tostring },
    { NULL, NULL },
};

static const luaL_Reg config_box_meta[] = {
    { "__gc", config_box_gc },
    { NULL, NULL },
};

static const luaL_Reg config_meta[] = {
    { "__tostring", config_tostring },
    { NULL, NULL },
};

static const luaL_Reg static_password_meta[] = {
    { "__tostring", static_password_tostring },
    { NULL, NULL },
};

static const luaL_Reg gcp_iam_meta[] = {
    { "__tostring", gcp_iam_tostring },
    { NULL, NULL },
};

static const luaL_Reg module_functions[] = {
    { "new", l_new },
    { "from_url", l_from_url },
    { "lock_manager", l_lock_manager },
    { "default_lock_options", l_default_lock_options },
    { "rate_limiter_lock_options", l_rate_limiter_lock_options },
    { "set_package_logger", l_set_package_logger },
    { "static_password", l_static_password },
    { "gcp_iam", l_gcp_iam },
    { "config", l_config },
    { "describe", l_describe },
    { NULL, NULL },
};

/* Metatables of plain Lua tables (error objects, auth and config tables):
 * no methods and no __metatable lock, so getmetatable(err) == vk.error_mt. */
static void new_plain_metatable(lua_State *L, const char *name, const luaL_Reg *metamethods)
{
    luaL_newmetatable(L, name);
    vk_setfuncs(L, metamethods);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_vkclient(lua_State *L);

int luaopen_vkclient(lua_State *L)
{
    new_class(L, CLIENT_MT, client_methods, client_meta);
    new_class(L, PIPELINE_MT, pipeline_methods, pipeline_meta);
    new_class(L, MANAGER_MT, manager_methods, manager_meta);
    new_class(L, LOCK_MT, lock_methods, lock_meta);
    new_class(L, CONFIG_BOX_MT, NULL, config_box_meta);
    new_plain_metatable(L, ERROR_MT, error_meta);
    new_plain_metatable(L, CONFIG_MT, config_meta);
    new_plain_metatable(L, STATIC_PASSWORD_MT, static_password_meta);
    new_plain_metatable(L, GCP_IAM_MT, gcp_iam_meta);

    lua_newtable(L);
    vk_setfuncs(L, module_functions);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, vk_version());
    lua_setfield(L, -2, "version");
    lua_pushstring(L, vk_hiredis_version());
    lua_setfield(L, -2, "hiredis_version");
    lua_pushboolean(L, vk_resp3_supported());
    lua_setfield(L, -2, "resp3_supported");
    /* vk.codes.LOCK_NOT_HELD == 4, and so on for every vk_status. */
    lua_createtable(L, 0, STATUS_NAME_COUNT);
    for (int i = 0; i < STATUS_NAME_COUNT; i++) {
        lua_pushinteger(L, i);
        lua_setfield(L, -2, status_names[i]);
    }
    lua_setfield(L, -2, "codes");
    /* The metatable of error objects, to recognise them. */
    luaL_getmetatable(L, ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    return 1;
}
