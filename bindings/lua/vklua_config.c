/*
 * Config tables: reading the table given to vk.new, vk.from_url and
 * vk.describe into a vk_config (unknown fields and wrong types raise; the
 * core judges the values), and printing auth and config tables without
 * their secrets (vk.static_password, vk.gcp_iam, vk.config, vk.describe).
 */
#include "vklua.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- reading config tables ----------------------------------------------- */

/* Raises unless every key of the table at index is one of `allowed`. */
void vklua_check_fields(lua_State *L, int index, const char *where, const char *const *allowed)
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
int vklua_get_field(lua_State *L, int index, const char *where, const char *name, int expected)
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
    int type = vklua_get_field(L, index, where, name, LUA_TSTRING);
    const char *value = type == LUA_TNIL ? NULL : lua_tostring(L, -1);
    lua_pop(L, 1);
    return value;
}

int vklua_opt_integer(lua_State *L, int index, const char *where, const char *name, int *out)
{
    int type = vklua_get_field(L, index, where, name, LUA_TNUMBER);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (!vklua_is_integral(L, -1) || fabs(lua_tonumber(L, -1)) > 2147483647.0)
        luaL_error(L, "vkclient: %s.%s must be an integer", where, name);
    *out = (int)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return 1;
}

int vklua_opt_seconds(lua_State *L, int index, const char *where, const char *name,
                      int64_t *out_ms)
{
    int type = vklua_get_field(L, index, where, name, LUA_TNUMBER);
    if (type != LUA_TNIL)
        *out_ms = vklua_seconds_to_ms(L, -1, name);
    lua_pop(L, 1);
    return type != LUA_TNIL;
}

int vklua_opt_boolean(lua_State *L, int index, const char *where, const char *name, int *out)
{
    int type = vklua_get_field(L, index, where, name, LUA_TBOOLEAN);
    if (type != LUA_TNIL)
        *out = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return type != LUA_TNIL;
}

/* Pushes t[name] when it is a table (absolute index returned), else 0. */
static int opt_table(lua_State *L, int index, const char *where, const char *name)
{
    if (vklua_get_field(L, index, where, name, LUA_TTABLE) == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    return lua_gettop(L);
}

/* The vk_config box (vklua.h): __gc frees the config, so that a raise while
 * reading a config table cannot leak it. */
static int config_box_gc(lua_State *L)
{
    vklua_config_box *box = luaL_checkudata(L, 1, VKLUA_CONFIG_BOX_MT);
    lua_State *previous = vklua_enter(L);
    vk_config_free(box->cfg);
    vklua_leave(previous);
    box->cfg = NULL;
    return 0;
}

vklua_config_box *vklua_push_config_box(lua_State *L)
{
    vklua_config_box *box = lua_newuserdata(L, sizeof *box);
    box->cfg = NULL;
    luaL_getmetatable(L, VKLUA_CONFIG_BOX_MT);
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
    size_t n = vklua_rawlen(L, index);
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
    if (vklua_get_field(L, t, where, "addresses", LUA_TNONE) != LUA_TNIL)
        st = add_addresses(L, lua_gettop(L), what, cfg, add);
    lua_pop(L, 1);
    return st;
}

/* True when the table at index is a plain list (keys 1..n only, n > 0). */
static int is_list(lua_State *L, int index)
{
    size_t n = vklua_rawlen(L, index);
    if (n == 0)
        return 0;
    int list = 1;
    lua_pushnil(L);
    while (list && lua_next(L, index) != 0) {
        lua_pop(L, 1);
        list = lua_type(L, -1) == LUA_TNUMBER && vklua_is_integral(L, -1) &&
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
    int type = vklua_get_field(L, t, "config", "cluster", LUA_TNONE);
    int cluster = lua_gettop(L);
    vk_status st = VK_OK;
    if (type == LUA_TSTRING || (type == LUA_TTABLE && is_list(L, cluster))) {
        if ((st = vk_config_set_cluster(cfg)) == VK_OK)
            st = add_addresses(L, cluster, "config.cluster", cfg, vk_config_add_cluster_address);
    } else if (type == LUA_TTABLE) {
        vklua_check_fields(L, cluster, "cluster", cluster_fields);
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
        vklua_check_fields(L, sentinel, "sentinel", sentinel_fields);
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
    vklua_check_fields(L, tls, "tls", fields);
    /* Trust: every source given is trusted; the core requires one. */
    const char *ca = opt_string(L, tls, "tls", "ca_cert_base64");
    TRY(vk_config_set_tls(cfg, ca != NULL ? ca : ""));
    const char *ca_file = opt_string(L, tls, "tls", "ca_file");
    if (ca_file != NULL)
        TRY(vk_config_set_tls_ca_file(cfg, ca_file));
    int system_ca = 0;
    if (vklua_opt_boolean(L, tls, "tls", "use_system_ca", &system_ca))
        TRY(vk_config_set_tls_use_system_ca(cfg, system_ca));
    if (vklua_get_field(L, tls, "tls", "min_version", LUA_TNONE) != LUA_TNIL)
        TRY(vk_config_set_tls_min_version(cfg, parse_tls_version(L, -1)));
    lua_pop(L, 1);
    int legacy = 0;
    if (vklua_opt_boolean(L, tls, "tls", "allow_legacy_min_version", &legacy))
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
        vklua_check_fields(L, sp, "static_password", static_fields);
        redact_auth_table(L, sp, VKLUA_STATIC_PASSWORD_MT);
        const char *user = opt_string(L, sp, "static_password", "username");
        const char *password = opt_string(L, sp, "static_password", "password");
        TRY(vk_config_set_static_password(cfg, user, password));
        lua_pop(L, 1);
    }
    int iam = opt_table(L, t, "config", "gcp_iam");
    if (iam != 0) {
        vklua_check_fields(L, iam, "gcp_iam", iam_fields);
        redact_auth_table(L, iam, VKLUA_GCP_IAM_MT);
        const char *credentials = opt_string(L, iam, "gcp_iam", "credentials_base64");
        const char *account = opt_string(L, iam, "gcp_iam", "service_account");
        TRY(vk_config_set_gcp_iam(cfg, credentials, account != NULL ? account : ""));
        int64_t ms;
        if (vklua_opt_seconds(L, iam, "gcp_iam", "token_lifetime", &ms))
            TRY(vk_config_set_gcp_iam_token_lifetime_ms(cfg, ms));
        if (vklua_opt_seconds(L, iam, "gcp_iam", "refresh_every", &ms))
            TRY(vk_config_set_gcp_iam_refresh_every_ms(cfg, ms));
        if (vklua_opt_seconds(L, iam, "gcp_iam", "refresh_check_interval", &ms))
            TRY(vk_config_set_gcp_iam_refresh_check_interval_ms(cfg, ms));
        if (vklua_opt_seconds(L, iam, "gcp_iam", "refresh_operation_timeout", &ms))
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
    vklua_check_fields(L, options, "options", fields);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int value;
        if (vklua_opt_integer(L, options, "options", ints[i].name, &value))
            TRY(ints[i].set(cfg, value));
    }
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        int64_t ms;
        if (vklua_opt_seconds(L, options, "options", durations[i].name, &ms))
            TRY(durations[i].set(cfg, ms));
    }
    lua_pop(L, 1);
    return VK_OK;
}

/* tracer = { start = function, finish = function }: both are required. */
static vk_status apply_tracer(lua_State *L, int t, vk_config *cfg)
{
    static const char *const fields[] = { "start", "finish", NULL };
    static const char *const functions[] = { "start", "finish" };
    int tracer = opt_table(L, t, "config", "tracer");
    if (tracer == 0)
        return VK_OK;
    vklua_check_fields(L, tracer, "tracer", fields);
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, tracer, functions[i]);
        if (lua_type(L, -1) != LUA_TFUNCTION)
            luaL_error(L, "vkclient: tracer.%s must be a function, got %s", functions[i],
                       luaL_typename(L, -1));
    }
    vk_status st = vklua_config_set_tracer(L, tracer + 1, tracer + 2, cfg);
    lua_pop(L, 3);
    return st;
}

/* Sinks and modes; *has_sinks tells whether a logger, metrics or tracer
 * was set. */
static vk_status apply_host(lua_State *L, int t, vk_config *cfg, int *has_sinks)
{
    *has_sinks = 0;
    if (vklua_get_field(L, t, "config", "tracer", LUA_TNONE) != LUA_TNIL)
        *has_sinks = 1;
    lua_pop(L, 1);
    TRY(apply_tracer(L, t, cfg));
    int trace_commands = 0;
    if (vklua_opt_boolean(L, t, "config", "trace_commands", &trace_commands))
        TRY(vk_config_set_trace_commands(cfg, trace_commands));
    if (vklua_get_field(L, t, "config", "logger", LUA_TFUNCTION) != LUA_TNIL) {
        TRY(vklua_config_set_logger(L, -1, cfg));
        *has_sinks = 1;
    }
    lua_pop(L, 1);
    if (vklua_get_field(L, t, "config", "metrics", LUA_TFUNCTION) != LUA_TNIL) {
        TRY(vklua_config_set_metrics(L, -1, cfg));
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
                                             "logger", "metrics", "tracer", "trace_commands",
                                             "refresh_mode", NULL };
/* What vk.from_url takes besides the URL (the URL gives topology and auth). */
static const char *const url_extra_fields[] = { "tls", "options", "logger", "metrics",
                                                "tracer", "trace_commands", "refresh_mode",
                                                NULL };

/* Fills cfg from the config table at t. Raises on misuse; returns the
 * core's status for values it refuses. */
vk_status vklua_apply_config(lua_State *L, int t, vk_config *cfg, int with_topology,
                             int *has_sinks)
{
    vklua_check_fields(L, t, "config", with_topology ? config_fields : url_extra_fields);
    if (with_topology) {
        TRY(apply_topology(L, t, cfg));
        TRY(apply_auth(L, t, cfg));
    }
    TRY(apply_tls(L, t, cfg));
    TRY(apply_options(L, t, cfg));
    return apply_host(L, t, cfg, has_sinks);
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
    luaL_getmetatable(L, VKLUA_STATIC_PASSWORD_MT);
    lua_setmetatable(L, 1);
    return 1;
}

static int l_gcp_iam(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, VKLUA_GCP_IAM_MT);
    lua_setmetatable(L, 1);
    return 1;
}

/* vk.describe(config) -> the core's one-line description, secrets redacted
 * (or nil, err when the core refuses a value). Logger/metrics/tracer
 * functions in the table are referenced only for the duration of the call. */
static int l_describe(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    vklua_config_box *box = vklua_push_config_box(L);
    lua_State *previous = vklua_enter(L);
    vk_status st = vk_config_new(&box->cfg);
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    int has_sinks = 0;
    st = vklua_apply_config(L, 1, box->cfg, 1, &has_sinks);
    previous = vklua_enter(L);
    char *text = NULL;
    if (st == VK_OK)
        st = vk_config_describe(&text, box->cfg);
    vk_config_free(box->cfg);
    box->cfg = NULL;
    vklua_leave(previous);
    if (st != VK_OK)
        return vklua_return_failure(L, st);
    int copy_failed = vklua_push_text_protected(L, text, strlen(text)) != 0;
    vk_free(text);
    if (copy_failed)
        return vklua_raise_no_memory(L);
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
    luaL_getmetatable(L, VKLUA_CONFIG_MT);
    lua_setmetatable(L, 1);
    return 1;
}

const luaL_Reg vklua_config_box_meta[] = {
    { "__gc", config_box_gc },
    { NULL, NULL },
};

const luaL_Reg vklua_config_meta[] = {
    { "__tostring", config_tostring },
    { NULL, NULL },
};

const luaL_Reg vklua_static_password_meta[] = {
    { "__tostring", static_password_tostring },
    { NULL, NULL },
};

const luaL_Reg vklua_gcp_iam_meta[] = {
    { "__tostring", gcp_iam_tostring },
    { NULL, NULL },
};

const luaL_Reg vklua_config_functions[] = {
    { "static_password", l_static_password },
    { "gcp_iam", l_gcp_iam },
    { "config", l_config },
    { "describe", l_describe },
    { NULL, NULL },
};

vk_status vklua_config_from_args(lua_State *L, int from_url, vklua_config_box **out,
                                 int *has_sinks)
{
    const char *url = NULL;
    if (from_url) {
        url = luaL_checkstring(L, 1);
        if (!lua_isnoneornil(L, 2))
            luaL_checktype(L, 2, LUA_TTABLE);
        lua_settop(L, 2);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    vklua_config_box *box = vklua_push_config_box(L);
    *out = box;
    *has_sinks = 0;
    lua_State *previous = vklua_enter(L);
    vk_status st = from_url ? vk_config_from_url(&box->cfg, url) : vk_config_new(&box->cfg);
    vklua_leave(previous);
    if (st != VK_OK)
        return st;
    if (!from_url)
        return vklua_apply_config(L, 1, box->cfg, 1, has_sinks);
    if (lua_istable(L, 2))
        return vklua_apply_config(L, 2, box->cfg, 0, has_sinks);
    return vk_config_set_event_delivery(box->cfg, VK_EVENTS_QUEUED);
}
