/*
 * vklua: the internals shared by the files of the Lua binding
 * (require "vkclient"), a thin binding over the vkclient C ABI.
 *
 * One set of sources for Lua 5.1, LuaJIT 2.1 and Lua 5.4 (the few
 * differences are the compatibility shims below). The binding is thin:
 * every rule lives in the core; these files convert arguments and replies
 * and map errors. One file per concern:
 *   vklua_common.c    shims, status names, the calling thread's Lua state,
 *                     error objects, strings the core owns, seconds <-> ms
 *   vklua_sinks.c     logger, metrics, tracer and package logger callbacks
 *   vklua_config.c    config tables, auth/config printing without secrets
 *   vklua_reply.c     replies to Lua values
 *   vklua_client.c    clients and commands
 *   vklua_pipeline.c  pipelines
 *   vklua_scan.c      SCAN and its siblings as generic-for iterators
 *   vklua_session.c   sessions (a pinned connection) and client:transaction
 *   vklua_lock.c      lock options, lock handles, the lock manager
 *   vklua_script.c    script objects and client:run_script
 *   vklua_ops.c       operations of the bytes-mode clients: tickets, and
 *                     completions into one table (require "vkclient.ngx")
 *   vklua_hosted.c    the bytes-mode client (vk._hosted_new): commands,
 *                     pipelines, the connections' wants
 *   vklua_hosted_lock.c  lock managers over bytes-mode clients
 *   vklua_module.c    the classes, the module table and luaopen_vkclient
 *
 * Conventions (README "Lua"):
 *  - runtime failures return nil, err; err is a table with the metatable
 *    "vkclient.error": tostring(err) is the core's full message, err.code
 *    names the vk_status ("LOCK_NOT_HELD"), err.status is its number;
 *  - misuse (wrong argument types, unknown config fields) raises;
 *  - a nil reply, also inside arrays, is vk.null (a NULL light userdata, so
 *    it equals OpenResty's ngx.null);
 *  - callbacks (logger, metrics, tracer, the with_lock function) only ever
 *    run on the thread that owns the lua_State, inside a call into this module:
 *    clients queue background events and deliver them at the end of each
 *    call and in client:poll().
 *
 * Only luaopen_vkclient is exported from the module: everything declared
 * here has hidden visibility, whatever flags the module is built with.
 */
#ifndef VKLUA_H
#define VKLUA_H

#include <vkclient.h>
#include <vkclient_async.h>

#include <lauxlib.h>
#include <lua.h>

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#  pragma GCC visibility push(hidden)
#endif

/* ---- compatibility shims (vklua_common.c; 5.1 and LuaJIT: 501) ---------- */

#if LUA_VERSION_NUM >= 502
#  define vklua_rawlen(L, i) lua_rawlen(L, (i))
#else
#  define vklua_rawlen(L, i) lua_objlen(L, (i))
#endif

/* Registers functions into the table on top of the stack. */
void vklua_setfuncs(lua_State *L, const luaL_Reg *funcs);
/* Sets the userdata's one associated Lua value (5.1: its environment
 * table) to the value on top, which is popped. */
void vklua_set_uservalue(lua_State *L, int index);
/* Pushes the userdata's associated value. */
void vklua_get_uservalue(lua_State *L, int index);
/* Calls f(L) with ud as its only argument, catching every error (including
 * out of memory) so that nothing can unwind through the C core. Returns 0
 * on success; on failure the error value is popped. */
int vklua_protected_call(lua_State *L, lua_CFunction f, void *ud);
/* 1 when the value at index is an integer-valued number. */
int vklua_is_integral(lua_State *L, int index);
void vklua_push_int64(lua_State *L, int64_t value);

/* ---- names --------------------------------------------------------------- */

#define VKLUA_CLIENT_MT "vkclient.client"
#define VKLUA_PIPELINE_MT "vkclient.pipeline"
#define VKLUA_SCAN_MT "vkclient.scan"
#define VKLUA_HOSTED_SCAN_MT "vkclient.hosted_scan"
#define VKLUA_SESSION_MT "vkclient.session"
#define VKLUA_MANAGER_MT "vkclient.lock_manager"
#define VKLUA_LOCK_MT "vkclient.lock"
#define VKLUA_ERROR_MT "vkclient.error"
#define VKLUA_CONFIG_BOX_MT "vkclient.config_box"
#define VKLUA_CONFIG_MT "vkclient.config"
#define VKLUA_STATIC_PASSWORD_MT "vkclient.static_password"
#define VKLUA_GCP_IAM_MT "vkclient.gcp_iam"
#define VKLUA_HOSTED_MT "vkclient.hosted"
#define VKLUA_HOSTED_PIPELINE_MT "vkclient.hosted_pipeline"
#define VKLUA_HOSTED_MANAGER_MT "vkclient.hosted_lock_manager"
#define VKLUA_SCRIPT_MT "vkclient.script"

/* Arguments of client:call up to this count live on the C stack. */
#define VKLUA_SMALL_ARGC 16

/* Pushes vk.codes: { OK = 0, ..., LOCK_NOT_HELD = 4, ... } for every
 * vk_status (vklua_common.c). */
void vklua_push_codes(lua_State *L);

/* ---- the calling thread's Lua state (vklua_common.c) --------------------- */

/*
 * The lua_State currently inside a call into this module on this thread.
 * Callbacks run on it and only on it: a callback fired anywhere else (a
 * background thread, or outside any call) finds NULL and is dropped, which
 * cannot happen for queued clients but keeps a stray event harmless.
 */
extern _Thread_local lua_State *vklua_active_state;

/* Every call into the core runs between vklua_enter(L), which returns the
 * previous state, and vklua_leave(previous). */
static inline lua_State *vklua_enter(lua_State *L)
{
    lua_State *previous = vklua_active_state;
    vklua_active_state = L;
    return previous;
}

static inline void vklua_leave(lua_State *previous)
{
    vklua_active_state = previous;
}

/* ---- handles ------------------------------------------------------------- */

/* The userdata at index 1 when it is of the class `name`, else raises.
 * Methods and metamethods carry their class metatable as upvalue 1 (see
 * new_class in vklua_module.c), which spares luaL_checkudata's registry
 * lookup by name on every call; luaL_checkudata remains the slow path and
 * gives the error. */
static inline void *vklua_check_self(lua_State *L, const char *name)
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

/* ---- error objects (vklua_common.c) -------------------------------------- */

/* Pushes an error object {code, status, message}. */
void vklua_push_error_object(lua_State *L, vk_status status, const char *message, size_t len);
/* Returns nil, err for the last failure on this thread. */
int vklua_return_failure(lua_State *L, vk_status status);
/* Returns true, or nil, err. */
int vklua_return_status(lua_State *L, vk_status status);
/* The metamethods of error objects (__tostring). */
extern const luaL_Reg vklua_error_meta[];

/* ---- strings the core owns (vklua_common.c) ------------------------------ */

/* Pushes a copy of text, which the caller must release whatever happens:
 * the copy is made under protection, so a memory error cannot skip the
 * release. Returns 0 when pushed; else nothing is pushed and the caller
 * releases its memory, then raises. */
int vklua_push_text_protected(lua_State *L, const char *text, size_t len);
/* Raises "vkclient: not enough memory". */
int vklua_raise_no_memory(lua_State *L);

/* ---- seconds <-> milliseconds (vklua_common.c) --------------------------- */

/* Seconds (Lua number) to milliseconds. A non-zero duration never rounds to
 * zero (which means "the default" for timeouts) and keeps its sign, so that
 * validation sees what the caller meant. */
int64_t vklua_seconds_to_ms(lua_State *L, int index, const char *what);

/* ---- callbacks: logger, metrics, tracer, package logger (vklua_sinks.c) -- */

/* Installs the function at index as the config's logger / metrics sink.
 * Returns VK_ERR_NO_MEMORY when the reference cannot be stored, else the
 * core's status. */
vk_status vklua_config_set_logger(lua_State *L, int index, vk_config *cfg);
vk_status vklua_config_set_metrics(lua_State *L, int index, vk_config *cfg);
/* Installs the functions at `start` and `finish` as the config's tracer.
 * Span handles are registry references (see vklua_span_handle). */
vk_status vklua_config_set_tracer(lua_State *L, int start, int finish, vk_config *cfg);
/* The span handle the core sees for a registry reference (NULL for
 * LUA_REFNIL: a nil span); the tracer trampolines turn it back into the
 * value. */
void *vklua_span_handle(int ref);
/* vk.set_package_logger. */
extern const luaL_Reg vklua_sink_functions[];

/* ---- reading config tables (vklua_config.c) ------------------------------ */

/* Raises unless every key of the table at index is one of `allowed`. */
void vklua_check_fields(lua_State *L, int index, const char *where, const char *const *allowed);
/* Pushes t[name] and returns its type; raises when it is present with a
 * type other than `expected` (LUA_TNONE: any). */
int vklua_get_field(lua_State *L, int index, const char *where, const char *name, int expected);
/* Optional fields: each returns 1 and sets *out when present, else 0;
 * raises when present with the wrong type. */
int vklua_opt_integer(lua_State *L, int index, const char *where, const char *name, int *out);
int vklua_opt_seconds(lua_State *L, int index, const char *where, const char *name,
                      int64_t *out_ms);
int vklua_opt_boolean(lua_State *L, int index, const char *where, const char *name, int *out);

/* A vk_config owned by a userdata, so that a raise while reading a config
 * table (misuse) cannot leak it: __gc frees it. */
typedef struct vklua_config_box {
    vk_config *cfg;
} vklua_config_box;

vklua_config_box *vklua_push_config_box(lua_State *L);
/* Fills cfg from the config table at t. Raises on misuse; returns the
 * core's status for values it refuses. */
vk_status vklua_apply_config(lua_State *L, int t, vk_config *cfg, int with_topology,
                             int *has_sinks);

/* The config of vk.new(config) (from_url 0) or vk.from_url(url [, extra])
 * (from_url 1), from the arguments at 1 (and 2), in a box pushed on the
 * stack (*out). Raises on misuse; returns the core's status for values it
 * refuses. */
vk_status vklua_config_from_args(lua_State *L, int from_url, vklua_config_box **out,
                                 int *has_sinks);

/* Metamethods of the config box, config tables and auth tables, and
 * vk.static_password, vk.gcp_iam, vk.config, vk.describe. */
extern const luaL_Reg vklua_config_box_meta[];
extern const luaL_Reg vklua_config_meta[];
extern const luaL_Reg vklua_static_password_meta[];
extern const luaL_Reg vklua_gcp_iam_meta[];
extern const luaL_Reg vklua_config_functions[];

/* ---- replies (vklua_reply.c) --------------------------------------------- */

/* Converts a reply to Lua values. It may raise (out of memory, nesting too
 * deep): callers park the C reply where close/__gc/the next call frees it. */
void vklua_push_reply(lua_State *L, const vk_reply *reply);

/* ---- client (vklua_client.c) --------------------------------------------- */

typedef struct vklua_client_ud {
    vk_client *client;  /* NULL once closed */
    vk_reply *parked;   /* a reply being converted; freed if conversion raised */
    int has_sinks;      /* events to deliver after each call */
    vk_context *trace_ctx; /* the caller-given trace parent, inside
                              client:with_trace_parent; else NULL */
} vklua_client_ud;

static inline vklua_client_ud *vklua_check_client(lua_State *L)
{
    return vklua_check_self(L, VKLUA_CLIENT_MT);
}

/* Delivers the client's queued logger/metrics/tracer events, if it has
 * sinks. */
static inline void vklua_deliver_events(vklua_client_ud *c)
{
    if (c->has_sinks && c->client != NULL)
        (void)vk_client_poll_events(c->client, 0);
}

static inline void vklua_release_parked(vk_reply **parked)
{
    if (*parked != NULL) {
        vk_reply_free(*parked);
        *parked = NULL;
    }
}

/* Collects the arguments from `first` to the top into argv/lens. Small
 * commands use the caller's arrays; larger ones a scratch userdata left on
 * the stack (collected with everything else, also if a later step raises). */
int vklua_collect_args(lua_State *L, int first, const char **small_argv, size_t *small_lens,
                       const char ***argv, size_t **lens);

/* Pushes a converted reply, or nil, err for an error reply; frees it
 * (parked meanwhile, see vklua_release_parked). Returns the number of results. */
int vklua_return_reply(lua_State *L, vk_reply **parked, vk_reply *reply);

/* Pushes the status table of snap (client:status()), which it frees;
 * returns 1. Raises when out of memory. */
int vklua_return_snapshot(lua_State *L, vk_snapshot *snap);

/* Client methods and metamethods; vk.new, vk.from_url. */
extern const luaL_Reg vklua_client_methods[];
extern const luaL_Reg vklua_client_meta[];
extern const luaL_Reg vklua_client_functions[];

/* ---- scripts (vklua_script.c) ------------------------------------------- */

/* client:run_script(script, keys, args) -> reply | nil, err */
int vklua_client_run_script(lua_State *L);
/* The core's script behind the script object at index (raises otherwise);
 * for any client that runs scripts (the bytes-mode one too). */
vk_script *vklua_check_script(lua_State *L, int index);
/* Script methods and metamethods; vk.script. */
extern const luaL_Reg vklua_script_methods[];
extern const luaL_Reg vklua_script_meta[];
extern const luaL_Reg vklua_script_functions[];

/* ---- pipeline (vklua_pipeline.c) ----------------------------------------- */

/* client:pipeline() -> pipeline | nil, err */
int vklua_client_pipeline(lua_State *L);

extern const luaL_Reg vklua_pipeline_methods[];
extern const luaL_Reg vklua_pipeline_meta[];
/* The C handle of the pipeline at index (raises for another type). */
vk_pipeline *vklua_check_pipeline(lua_State *L, int index);

/* ---- sessions (vklua_session.c) ------------------------------------------ */

/* client:session([key]) -> session | nil, err */
int vklua_client_session(lua_State *L);
/* client:transaction(fn, keys [, opts]) -> results | nil, err */
int vklua_client_transaction(lua_State *L);

extern const luaL_Reg vklua_session_methods[];
extern const luaL_Reg vklua_session_meta[];

/* ---- scans (vklua_scan.c) ------------------------------------------------ */

/* client:scan_iter([opts]), client:hscan_iter(key [, opts]), sscan_iter,
 * zscan_iter -> iterator | nil, err */
int vklua_client_scan_iter(lua_State *L);
int vklua_client_hscan_iter(lua_State *L);
int vklua_client_sscan_iter(lua_State *L);
int vklua_client_zscan_iter(lua_State *L);

extern const luaL_Reg vklua_scan_meta[];

/* ---- locks (vklua_lock.c) ------------------------------------------------ */

/* Reads a lock options table (missing fields keep the defaults). */
void vklua_read_lock_options(lua_State *L, int index, vk_lock_options *opts);
/* Pushes a handle owning lock; the value at `keeper` (what the lock's
 * client needs kept alive) becomes its user value. */
void vklua_push_owned_lock(lua_State *L, vk_lock *lock, int keeper);
/* The C handle of the lock handle at index (NULL once closed). */
vk_lock *vklua_check_lock(lua_State *L, int index);

/* Lock handle and lock manager methods and metamethods; vk.lock_manager,
 * vk.default_lock_options, vk.rate_limiter_lock_options. */
extern const luaL_Reg vklua_lock_methods[];
extern const luaL_Reg vklua_lock_meta[];
extern const luaL_Reg vklua_manager_methods[];
extern const luaL_Reg vklua_manager_meta[];
extern const luaL_Reg vklua_lock_functions[];

/* ---- operations of the bytes-mode clients (vklua_ops.c) ------------------ */

typedef enum vklua_op_kind {
    VKLUA_OP_REPLY,     /* a command or pipeline: its reply */
    VKLUA_OP_LOCK,      /* an acquisition: a handle (its id is the manager's) */
    VKLUA_OP_DONE       /* an unlock or extend: true */
} vklua_op_kind;

typedef struct vklua_op vklua_op;
/* The operations in flight of one client or manager. */
typedef struct vklua_op_list {
    vklua_op *head;
} vklua_op_list;

struct vklua_op {
    vklua_op *prev, *next;
    vklua_op_list *list;
    lua_Integer ticket;         /* the Lua side's name for it */
    vklua_op_kind kind;
    uint64_t id;                /* the core's, for cancel */
    int keeper_ref;             /* registry: kept alive while it runs (LUA_NOREF) */
};

/* A new operation in list; the value at `keeper` (0: none) stays alive
 * until it completes (a manager, which lock handles then keep). */
vklua_op *vklua_op_new(lua_State *L, vklua_op_list *list, vklua_op_kind kind, int keeper);
/* The operation was queued (its ticket returned), or refused (undone;
 * nil, err returned). */
int vklua_op_queued(lua_State *L, vklua_op *op, vk_status st);
vklua_op *vklua_op_find(const vklua_op_list *list, lua_Integer ticket);
/* Returns nil, err: no such operation in flight. */
int vklua_no_such_operation(lua_State *L);
/* The completions the core calls, with the operation as userdata. */
void vklua_op_on_reply(void *op, vk_status status, vk_reply *reply);
void vklua_op_on_lock(void *op, vk_status status, vk_lock *lock);
void vklua_op_on_done(void *op, vk_status status);
/* vk._take_done. */
extern const luaL_Reg vklua_op_functions[];

/* ---- the bytes-mode client (vklua_hosted.c) and its locks (vklua_hosted_lock.c) */

/* The client of the bytes-mode userdata at index; raises when closed. */
vk_hosted *vklua_check_hosted(lua_State *L, int index);
/* The same, with the list its operations complete into. */
vk_hosted *vklua_check_hosted_ops(lua_State *L, int index, vklua_op_list **ops);
/* Scans and scripts of the bytes-mode client (vklua_scan.c, vklua_script.c):
 * h:scan_new(command, key, opts) -> scan | nil, err; h:scan_next(scan) ->
 * ticket (the page); h:run_script(script, keys, args) -> ticket. */
int vklua_hosted_scan_new(lua_State *L);
int vklua_hosted_scan_next(lua_State *L);
int vklua_hosted_run_script(lua_State *L);
extern const luaL_Reg vklua_hosted_scan_methods[];
extern const luaL_Reg vklua_hosted_scan_meta[];

/* Methods and metamethods; vk._hosted_new, vk._hosted_from_url, vk._error,
 * vk._strerror; vk._hosted_lock_manager. */
extern const luaL_Reg vklua_hosted_methods[];
extern const luaL_Reg vklua_hosted_meta[];
extern const luaL_Reg vklua_hosted_functions[];
extern const luaL_Reg vklua_hosted_pipeline_methods[];
extern const luaL_Reg vklua_hosted_pipeline_meta[];
extern const luaL_Reg vklua_hosted_manager_methods[];
extern const luaL_Reg vklua_hosted_manager_meta[];
extern const luaL_Reg vklua_hosted_lock_functions[];

#if defined(__GNUC__)
#  pragma GCC visibility pop
#endif

#endif /* VKLUA_H */
