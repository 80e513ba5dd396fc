/*
 * Logger, metrics, tracer and package logger callbacks: Lua functions
 * handed to the core, and the trampolines that call them on the thread that
 * owns their Lua state, inside a call into this module (see vklua.h).
 */
#include "vklua.h"

#include <stdlib.h>

/* ---- callbacks: logger, metrics, tracer, package logger ------------------ */

/* Identifies the Lua universe a state belongs to (its registry table). */
static const void *universe_of(lua_State *L)
{
    return lua_topointer(L, LUA_REGISTRYINDEX);
}

/* A Lua function handed to the core as a callback's userdata. */
typedef struct lua_callback {
    const void *universe; /* the Lua state that owns ref */
    int ref;              /* the function, in that state's registry */
    int ref2;             /* a tracer's finish function; else LUA_NOREF */
} lua_callback;

/* Takes a reference to the function at index; NULL when out of memory. */
static lua_callback *callback_new(lua_State *L, int index)
{
    lua_callback *cb = malloc(sizeof *cb);
    if (cb == NULL)
        return NULL;
    lua_pushvalue(L, index);
    cb->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    cb->ref2 = LUA_NOREF;
    cb->universe = universe_of(L);
    return cb;
}

/* The core's free hook. The reference is dropped when this runs inside a
 * call from the owning state (always, in practice: clients are freed by
 * close and __gc); elsewhere only the C memory is released. */
static void callback_free(void *userdata)
{
    lua_callback *cb = userdata;
    lua_State *L = vklua_active_state;
    if (L != NULL && universe_of(L) == cb->universe) {
        luaL_unref(L, LUA_REGISTRYINDEX, cb->ref);
        luaL_unref(L, LUA_REGISTRYINDEX, cb->ref2);
    }
    free(cb);
}

/* The state to run cb on, or NULL when this is not the owning thread. */
static lua_State *callback_state(const lua_callback *cb)
{
    lua_State *L = vklua_active_state;
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

/* fn(level, message, fields), run under vklua_protected_call. */
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
        (void)vklua_protected_call(L, deliver_log, &e);
}

typedef struct metric_event {
    const lua_callback *cb;
    const char *name;
    vk_metric_kind kind;
    double value;
    const vk_field *labels;
    size_t nlabels;
} metric_event;

/* fn(name, kind, value, labels), run under vklua_protected_call. */
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
        (void)vklua_protected_call(L, deliver_metric, &e);
}

/* ---- tracer --------------------------------------------------------------- */

/*
 * A span handle, for the core, is the registry reference of the value the
 * tracer's start function returned (nil: no reference, NULL). It stays
 * referenced until finish has run for it. Caller-given parents
 * (client:with_trace_parent) are references in the same registry, so the
 * start trampoline turns any parent the core hands it back into its value.
 */
void *vklua_span_handle(int ref)
{
    return ref > 0 ? (void *)(intptr_t)ref : NULL;
}

static int span_ref(void *handle)
{
    return handle != NULL ? (int)(intptr_t)handle : LUA_REFNIL;
}

/* Pushes the span value behind handle (nil for NULL). */
static void push_span(lua_State *L, void *handle)
{
    if (handle == NULL)
        lua_pushnil(L);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, span_ref(handle));
}

/* Wall-clock nanoseconds to Unix seconds, with microsecond precision (what
 * a double keeps for current dates; client:status() gives times the same
 * way). */
static void push_unix_seconds(lua_State *L, int64_t unix_ns)
{
    lua_pushnumber(L, (lua_Number)(unix_ns / 1000) / 1e6);
}

typedef struct span_start_event {
    const lua_callback *cb;
    const char *name;
    void *parent;
    int64_t start_ns;
    const vk_field *attributes;
    size_t nattributes;
    int ref;            /* out: the reference to what start returned */
} span_start_event;

/* span = start(name, parent, attributes, start_time), run under
 * vklua_protected_call; the span is referenced (nil is not). */
static int deliver_span_start(lua_State *L)
{
    span_start_event *e = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->cb->ref);
    lua_pushstring(L, e->name != NULL ? e->name : "");
    push_span(L, e->parent);
    push_fields(L, e->attributes, e->nattributes);
    push_unix_seconds(L, e->start_ns);
    lua_call(L, 4, 1);
    e->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* A start function that raises gives a nil span (finish still runs). */
static void *span_start_trampoline(void *userdata, const char *name, void *parent,
                                   int64_t start_unix_ns, const vk_field *attributes,
                                   size_t nattributes)
{
    span_start_event e = { userdata, name, parent, start_unix_ns, attributes, nattributes,
                           LUA_REFNIL };
    lua_State *L = callback_state(e.cb);
    if (L == NULL || vklua_protected_call(L, deliver_span_start, &e) != 0)
        return NULL;
    return vklua_span_handle(e.ref);
}

typedef struct span_end_event {
    const lua_callback *cb;
    void *span;
    int64_t end_ns;
    vk_status status;
    const char *error;
    const vk_field *attributes;
    size_t nattributes;
} span_end_event;

/* finish(span, err, attributes, end_time), run under vklua_protected_call. */
static int deliver_span_end(lua_State *L)
{
    const span_end_event *e = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->cb->ref2);
    push_span(L, e->span);
    if (e->status == VK_OK)
        lua_pushnil(L);
    else
        lua_pushstring(L, e->error != NULL ? e->error : vk_strerror(e->status));
    push_fields(L, e->attributes, e->nattributes);
    push_unix_seconds(L, e->end_ns);
    lua_call(L, 4, 0);
    return 0;
}

/* The span's reference is dropped once finish has run, raise or not. */
static void span_end_trampoline(void *userdata, void *span, int64_t end_unix_ns,
                                vk_status status, const char *error,
                                const vk_field *attributes, size_t nattributes)
{
    span_end_event e = { userdata, span, end_unix_ns, status, error, attributes, nattributes };
    lua_State *L = callback_state(e.cb);
    if (L == NULL)
        return;
    (void)vklua_protected_call(L, deliver_span_end, &e);
    if (span != NULL)
        luaL_unref(L, LUA_REGISTRYINDEX, span_ref(span));
}

/* config.logger and config.metrics: the function at index, referenced
 * until the core frees the sink. */
vk_status vklua_config_set_logger(lua_State *L, int index, vk_config *cfg)
{
    lua_callback *cb = callback_new(L, index);
    if (cb == NULL)
        return VK_ERR_NO_MEMORY;
    return vk_config_set_logger(cfg, log_trampoline, cb, callback_free);
}

vk_status vklua_config_set_metrics(lua_State *L, int index, vk_config *cfg)
{
    lua_callback *cb = callback_new(L, index);
    if (cb == NULL)
        return VK_ERR_NO_MEMORY;
    return vk_config_set_metrics(cfg, metric_trampoline, cb, callback_free);
}

/* config.tracer: the start and finish functions at those indexes,
 * referenced until the core frees the tracer. */
vk_status vklua_config_set_tracer(lua_State *L, int start, int finish, vk_config *cfg)
{
    lua_callback *cb = callback_new(L, start);
    if (cb == NULL)
        return VK_ERR_NO_MEMORY;
    lua_pushvalue(L, finish);
    cb->ref2 = luaL_ref(L, LUA_REGISTRYINDEX);
    return vk_config_set_tracer(cfg, span_start_trampoline, span_end_trampoline, cb,
                                callback_free);
}

/* vk.set_package_logger(fn or nil). Raises when the core cannot store
 * the logger (out of memory); the previous logger then stays. */
static int l_set_package_logger(lua_State *L)
{
    vk_status st;
    if (lua_isnoneornil(L, 1)) {
        lua_State *previous = vklua_enter(L);
        st = vk_set_package_logger(NULL, NULL, NULL);
        vklua_leave(previous);
    } else {
        luaL_checktype(L, 1, LUA_TFUNCTION);
        lua_callback *cb = callback_new(L, 1);
        if (cb == NULL)
            return luaL_error(L, "vkclient: out of memory");
        lua_State *previous = vklua_enter(L);
        st = vk_set_package_logger(log_trampoline, cb, callback_free); /* frees cb on failure */
        vklua_leave(previous);
    }
    if (st != VK_OK)
        return luaL_error(L, "vkclient: %s", vk_last_error());
    return 0;
}

const luaL_Reg vklua_sink_functions[] = {
    { "set_package_logger", l_set_package_logger },
    { NULL, NULL },
};
