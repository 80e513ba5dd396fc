/*
 * Bytes mode (vkclient_async.h, vk_hosted): the engine's driver for a host
 * that owns the sockets. The engines' wishes are kept as state the host
 * reads (vk_hosted_get_wants); the host's events go to an engine once they
 * are known to be about one of its current connections. No system call is
 * made here for the connections.
 *
 * The connections are the node's and, in Sentinel mode, the probes that ask
 * the sentinels where the master is (sentinel_seek.c), each with its
 * engine.
 *
 * Connection reuse: the host may keep connections in a keepalive pool of
 * its own (nginx's cosocket pool). Each connection to be opened gets the
 * name of the pool that may hold one fit for it; a connection given up
 * clean (the engine's verdict, vk__engine_idle) is remembered for a while
 * with the name of the pool it may go to.
 */
#include "api/driven.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for a pool name: the node, the TLS server name, the user. */
#define POOL_NAME_MAX 1024
/* Connections given up clean that the client remembers (the last ones). */
#define RELEASED_MAX 32

/* Every client of the process has a number of its own in its pool names:
 * two clients never share a pool, so a connection logged in by one (with
 * its password or token) is never taken by another, whose credentials
 * may differ (a password changed by making a new client). */
static _Atomic uint64_t last_instance;

typedef struct hosted_conn hosted_conn;
struct hosted_conn {
    vk_driven_conn base;    /* first: engine, endpoint, peer, wake-up */
    vk_hosted *client;
    uint64_t id;            /* the current connection, 0: none */
    bool connecting;        /* id is to be opened */
    bool open;              /* id is open */
    /* To be opened: the keepalive pool that may hold a connection fit for
     * it ("" when it is not to be pooled), and the credentials generation
     * that name carries. */
    char pool[POOL_NAME_MAX];
    uint64_t pool_generation;
};

/* A connection given up clean, and the pool it may go to. */
typedef struct released_conn {
    uint64_t id;
    char pool[POOL_NAME_MAX];
} released_conn;

struct vk_hosted {
    vk_driven d;            /* first: the engine, the core, the thread */
    hosted_conn node;       /* the probes (Sentinel) are in d.probes */
    uint64_t last_id;
    uint64_t instance;      /* see last_instance */
    released_conn released[RELEASED_MAX];   /* a ring */
    size_t released_next;
};

/* ---- pool names ------------------------------------------------------------ */

/* The connections whose state is the client's config alone: the node's,
 * the lanes, the nodes of a cluster. Not the sentinels' (other
 * credentials; one is subscribed). */
static bool poolable(const hosted_conn *c)
{
    return c->base.is_node || c->base.lane || c->client->d.router != NULL;
}

/* The name of the pool for c's connections logged in with the credentials
 * of *generation (0: the current ones, whose generation it takes): what
 * would make a reused connection wrong (node, TLS server name, db,
 * protocol, user, credentials), and no secret. False when it does not
 * fit. */
static bool pool_name(const hosted_conn *c, uint64_t *generation, char *out, size_t size)
{
    const vk_hosted *h = c->client;
    const vk_config *cfg = vk__client_config(h->d.core);
    char *user = NULL, *pass = NULL;
    uint64_t current = 0;
    if (vk__credentials_copy(&h->d.core->credentials, &user, &pass, &current) != VK_OK)
        return false;
    if (*generation == 0)
        *generation = current;
    char node[300];
    vk__format_endpoint(node, sizeof node, &c->base.endpoint);
    const char *server_name = cfg->tls_server_name != NULL && cfg->tls_server_name[0] != '\0'
                                  ? cfg->tls_server_name
                                  : c->base.endpoint.host;
    int n = snprintf(out, size, "vkclient|node=%s|tls=%s|db=%d|proto=%d|cred=%llu.%llu|user=%s",
                     node, cfg->tls_enabled && server_name != NULL ? server_name : "-", cfg->db,
                     cfg->protocol == 3 ? 3 : 2, (unsigned long long)h->instance,
                     (unsigned long long)*generation, user != NULL ? user : "default");
    free(user);
    vk__free_secret(pass);
    return n > 0 && (size_t)n < size;
}

/* The client gave c's connection up clean: the host may pool it. */
static void remember_released(hosted_conn *c, uint64_t generation)
{
    vk_hosted *h = c->client;
    char name[POOL_NAME_MAX];
    if (!pool_name(c, &generation, name, sizeof name))
        return;
    released_conn *r = &h->released[h->released_next];
    r->id = c->id;
    memcpy(r->pool, name, sizeof name);
    h->released_next = (h->released_next + 1) % RELEASED_MAX;
}

static const released_conn *find_released(const vk_hosted *h, uint64_t id)
{
    for (size_t i = 0; i < RELEASED_MAX && id != 0; i++) {
        if (h->released[i].id == id)
            return &h->released[i];
    }
    return NULL;
}

/* ---- the engines' driver functions ----------------------------------------- */

static void want_connection(hosted_conn *c)
{
    c->id = ++c->client->last_id;
    c->connecting = true;
    c->open = false;
    c->pool[0] = '\0';
    c->pool_generation = 0;
    if (poolable(c) && !pool_name(c, &c->pool_generation, c->pool, sizeof c->pool))
        c->pool[0] = '\0';
}

static void drv_open(void *userdata)
{
    hosted_conn *c = userdata;
    if (c->base.is_node && !vk__driven_dial_now(&c->client->d, &c->base))
        return;   /* drv_located asks for the connection */
    want_connection(c);
}

/* Sentinel mode: the master is known (or not) for the node's dial. */
static void drv_located(vk_driven *d, vk_status st)
{
    vk_hosted *h = (vk_hosted *)d;
    hosted_conn *c = &h->node;
    if (st != VK_OK) {
        vk__engine_open_failed(c->base.engine, st, vk__now_ms());
        return;
    }
    want_connection(c);
    vk__engine_dial_started(c->base.engine, vk__now_ms());
}

static void drv_close(void *userdata)
{
    hosted_conn *c = userdata;
    if (c->id != 0 && c->open && poolable(c) && vk__engine_closing_clean(c->base.engine))
        remember_released(c, vk__engine_auth_generation(c->base.engine));
    c->id = 0;
    c->connecting = false;
    c->open = false;
    if (c->base.is_node)
        vk__driven_node_closed(&c->client->d);
}

static void drv_want_write(void *userdata)
{
    (void)userdata;   /* the host reads the output with the wants */
}

static void drv_wake(void *userdata, int64_t at_ms)
{
    hosted_conn *c = userdata;
    c->base.wake_at_ms = at_ms;
}

static vk_engine_driver conn_driver(hosted_conn *c)
{
    return (vk_engine_driver){
        .userdata = c,
        .open = drv_open,
        .close = drv_close,
        .want_write = drv_want_write,
        .wake = drv_wake,
        .complete = vk__driven_complete,
        .check_master = c->base.is_node ? vk__driven_conn_check_master : NULL,
        .push = c->base.is_node ? NULL : vk__driven_conn_push,
    };
}

/* Sentinel mode: a record for a probe's connection (driven.h). */
static vk_driven_conn *drv_conn_new(vk_driven *d, vk_engine_driver *driver)
{
    hosted_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->client = (vk_hosted *)d;
    *driver = conn_driver(c);
    return &c->base;
}

/* Its connection is no longer among the wants: the host closes it. */
static void drv_conn_closed(vk_driven *d, vk_driven_conn *base)
{
    (void)d;
    hosted_conn *c = (hosted_conn *)base;
    /* A lane beyond those kept idle, a node that left the slot map. */
    if (c->id != 0 && c->open && poolable(c) && vk__engine_idle(c->base.engine))
        remember_released(c, vk__engine_auth_generation(c->base.engine));
    c->id = 0;
    c->connecting = c->open = false;
}

static void drv_conn_free(vk_driven_conn *c)
{
    free(c);
}

static void release(vk_driven *d)
{
    free(d);
}

/* Every event from the host: enter() ... leave(). */
static void enter(vk_hosted *h)
{
    vk__driven_enter(&h->d);
}

static void leave(vk_hosted *h)
{
    if (!vk__driven_leave(&h->d) && h->d.depth == 0)
        vk__driven_free_closed(&h->d);
}

/* ---- lifecycle ------------------------------------------------------------- */

VK_API vk_status vk_hosted_new(vk_hosted **out, const vk_config *cfg)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (cfg == NULL)
        return vk__fail(VK_ERR_INVALID_CONFIG, "config is NULL");
    vk_hosted *h = calloc(1, sizeof *h);
    if (h == NULL)
        return vk__fail_nomem();
    h->d.kind = VK_DRIVEN_HOSTED;
    h->d.release = release;
    h->d.conn_new = drv_conn_new;
    h->d.conn_closed = drv_conn_closed;
    h->d.conn_free = drv_conn_free;
    h->d.located = drv_located;
    h->instance = atomic_fetch_add(&last_instance, 1) + 1;
    h->node.client = h;
    vk__driven_conn_init(&h->node.base, &h->d, NULL, true);
    const vk_engine_driver driver = conn_driver(&h->node);
    vk_status st = vk__driven_init(&h->d, cfg, &driver);
    if (st != VK_OK) {
        free(h);
        return st;
    }
    h->node.base.engine = h->d.engine;
    *out = h;
    return VK_OK;
}

VK_API void vk_hosted_free(vk_hosted *client)
{
    if (client != NULL)
        vk__driven_free(&client->d, "vk_hosted_free");
}

/* The i-th connection wanted: the node's first, then the probes'. */
static const hosted_conn *wanted(const vk_hosted *h, size_t i)
{
    if (h->node.id != 0) {
        if (i == 0)
            return &h->node;
        i--;
    }
    for (const vk_driven_conn *p = h->d.probes; p != NULL; p = p->next) {
        const hosted_conn *c = (const hosted_conn *)p;
        if (c->id == 0)
            continue;
        if (i == 0)
            return c;
        i--;
    }
    return NULL;
}

VK_API size_t vk_hosted_connection_count(const vk_hosted *client)
{
    if (client == NULL)
        return 0;
    size_t n = client->node.id != 0 ? 1 : 0;
    for (const vk_driven_conn *p = client->d.probes; p != NULL; p = p->next)
        n += ((const hosted_conn *)p)->id != 0;
    return n;
}

VK_API vk_status vk_hosted_get_wants(const vk_hosted *client, size_t i,
                                     vk_hosted_wants *wants)
{
    if (wants == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "wants is NULL");
    memset(wants, 0, sizeof *wants);
    if (client == NULL || client->d.engine == NULL)
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    const hosted_conn *c = wanted(client, i);
    if (c == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "no connection %zu", i);
    const vk_endpoint *ep = &c->base.endpoint;
    const vk_config *cfg = vk__client_config(client->d.core);
    wants->conn = c->id;
    wants->connect = c->connecting;
    if (ep->is_unix) {
        wants->path = ep->path;
    } else {
        wants->host = ep->host;
        wants->port = ep->port;
    }
    wants->tls = cfg->tls_enabled;
    wants->server_name = cfg->tls_server_name != NULL && cfg->tls_server_name[0] != '\0'
                             ? cfg->tls_server_name
                             : ep->host;
    wants->read = c->open;
    if (c->open)
        wants->output = vk__engine_output(c->base.engine, &wants->output_len);
    return VK_OK;
}

VK_API int64_t vk_hosted_tick_in_ms(const vk_hosted *client)
{
    if (client == NULL)
        return -1;
    int64_t at = vk__driven_next_wake(&client->d, &client->node.base);
    if (at == VK_ENGINE_NEVER)
        return -1;
    int64_t ms = at - vk__now_ms();
    return ms > 0 ? ms : 0;
}

/* ---- the host's events ---------------------------------------------------------- */

/* The connection an event names, when it is one the client wants on its
 * thread (an event about another is ignored). */
static hosted_conn *current(vk_hosted *h, uint64_t id, const char *function)
{
    if (h == NULL || h->d.closing || h->d.free_requested ||
        !vk__driven_on_thread(&h->d, function) || id == 0)
        return NULL;
    if (h->node.id == id)
        return &h->node;
    for (vk_driven_conn *p = h->d.probes; p != NULL; p = p->next) {
        if (((hosted_conn *)p)->id == id)
            return (hosted_conn *)p;
    }
    return NULL;
}

static void connect_failed_detail(vk_hosted *h, hosted_conn *c, vk_status status);

VK_API void vk_hosted_connected(vk_hosted *client, uint64_t conn)
{
    hosted_conn *c = current(client, conn, "vk_hosted_connected");
    if (c == NULL || !c->connecting)
        return;
    c->connecting = false;
    c->open = true;
    enter(client);
    vk__engine_opened(c->base.engine, vk__now_ms());
    leave(client);
}

VK_API void vk_hosted_connected_reused(vk_hosted *client, uint64_t conn)
{
    hosted_conn *c = current(client, conn, "vk_hosted_connected_reused");
    if (c == NULL || !c->connecting)
        return;
    if (c->pool[0] == '\0') {
        /* Not one to take from a pool: the host must not have. */
        vk__misuse("vk_hosted_connected_reused", "the connection has no keepalive pool");
        vk__fail(VK_ERR_IO, "closed: the connection has no keepalive pool");
        connect_failed_detail(client, c, VK_ERR_IO);
        return;
    }
    c->connecting = false;
    c->open = true;
    enter(client);
    vk__engine_opened_reused(c->base.engine, c->pool_generation, vk__now_ms());
    leave(client);
}

/* ---- connection reuse --------------------------------------------------------------- */

VK_API const char *vk_hosted_pool_name(const vk_hosted *client, uint64_t conn)
{
    if (client == NULL || conn == 0 || client->d.engine == NULL)
        return NULL;
    const hosted_conn *c = client->node.id == conn ? &client->node : NULL;
    for (const vk_driven_conn *p = client->d.probes; c == NULL && p != NULL; p = p->next) {
        if (((const hosted_conn *)p)->id == conn)
            c = (const hosted_conn *)p;
    }
    if (c != NULL)
        return c->connecting && c->pool[0] != '\0' ? c->pool : NULL;
    const released_conn *r = find_released(client, conn);
    return r != NULL ? r->pool : NULL;
}

VK_API vk_status vk_hosted_release(vk_hosted *client, uint64_t conn)
{
    if (client == NULL || client->d.closing || client->d.free_requested)
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    vk_status st = vk__driven_check_thread(&client->d, "vk_hosted_release");
    if (st != VK_OK)
        return st;
    hosted_conn *c = current(client, conn, "vk_hosted_release");
    if (c == NULL || !c->open)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "connection %llu is not open",
                        (unsigned long long)conn);
    if (!poolable(c))
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "connection %llu is not kept in a pool (a sentinel's)",
                        (unsigned long long)conn);
    enter(client);
    bool started = vk__engine_release(c->base.engine, vk__now_ms());
    leave(client);
    if (!started)
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "connection %llu is busy or not ready: it cannot be kept",
                        (unsigned long long)conn);
    return VK_OK;
}

/* The dial failed, its detail set. */
static void connect_failed_detail(vk_hosted *h, hosted_conn *c, vk_status status)
{
    c->connecting = false;
    enter(h);
    vk__engine_open_failed(c->base.engine, status, vk__now_ms());
    leave(h);
}

static void connect_failed(vk_hosted *h, hosted_conn *c, vk_status status, const char *why)
{
    why = why != NULL && why[0] != '\0' ? why : "failed";
    if (status == VK_ERR_TLS)
        vk__fail(VK_ERR_TLS, "handshake with %s failed: %s", c->base.peer, why);
    else if (status == VK_ERR_TIMEOUT)
        vk__fail(VK_ERR_TIMEOUT, "dial %s: %s", c->base.peer, why);
    else
        status = vk__fail(VK_ERR_IO, "dial %s: %s", c->base.peer, why);
    connect_failed_detail(h, c, status);
}

VK_API void vk_hosted_connect_failed(vk_hosted *client, uint64_t conn, vk_status status,
                                     const char *why)
{
    hosted_conn *c = current(client, conn, "vk_hosted_connect_failed");
    if (c != NULL && c->connecting)
        connect_failed(client, c, status, why);
}

VK_API void vk_hosted_wrote(vk_hosted *client, uint64_t conn, size_t n)
{
    hosted_conn *c = current(client, conn, "vk_hosted_wrote");
    if (c == NULL || !c->open)
        return;
    enter(client);
    vk__engine_wrote(c->base.engine, n, vk__now_ms());
    leave(client);
}

VK_API void vk_hosted_received(vk_hosted *client, uint64_t conn, const char *bytes,
                               size_t len)
{
    hosted_conn *c = current(client, conn, "vk_hosted_received");
    if (c == NULL || !c->open || bytes == NULL)
        return;
    enter(client);
    vk__engine_feed(c->base.engine, bytes, len, vk__now_ms());
    leave(client);
}

VK_API void vk_hosted_lost(vk_hosted *client, uint64_t conn, vk_status status,
                           const char *why)
{
    hosted_conn *c = current(client, conn, "vk_hosted_lost");
    if (c == NULL)
        return;
    if (c->connecting) {
        connect_failed(client, c, status, why);
        return;
    }
    why = why != NULL && why[0] != '\0' ? why : "closed";
    if (status == VK_ERR_TLS)
        vk__fail(VK_ERR_TLS, "read %s: %s", c->base.peer, why);
    else if (status == VK_ERR_TIMEOUT)
        vk__fail(VK_ERR_TIMEOUT, "read %s: %s", c->base.peer, why);
    else
        status = vk__fail(VK_ERR_IO, "read %s: %s", c->base.peer, why);
    enter(client);
    vk__engine_lost(c->base.engine, status, vk__now_ms());
    leave(client);
}

VK_API void vk_hosted_tick(vk_hosted *client)
{
    if (client == NULL || client->d.closing || client->d.free_requested ||
        !vk__driven_on_thread(&client->d, "vk_hosted_tick"))
        return;
    enter(client);
    vk__driven_tick(&client->d, &client->node.base, vk__now_ms());
    leave(client);
}

/* ---- operations ------------------------------------------------------------------ */

VK_API vk_status vk_hosted_command(vk_hosted *client, int argc, const char *const *argv,
                                   const size_t *argvlen, vk_async_fn fn, void *userdata,
                                   uint64_t *id)
{
    return vk__driven_command(client != NULL ? &client->d : NULL, "vk_hosted_command", argc,
                              argv, argvlen, fn, userdata, id);
}

VK_API vk_status vk_hosted_script_run(vk_hosted *client, const vk_script *script, int nkeys,
                                     const char *const *keys, const size_t *keylens,
                                     int nargs, const char *const *args,
                                     const size_t *arglens, vk_async_fn fn, void *userdata,
                                     uint64_t *id)
{
    return vk__driven_script_run(client != NULL ? &client->d : NULL, "vk_hosted_script_run",
                                 script, nkeys, keys, keylens, nargs, args, arglens, fn,
                                 userdata, id);
}

VK_API vk_status vk_hosted_pipeline_new(vk_pipeline **out, vk_hosted *client)
{
    return vk__driven_pipeline_new(client != NULL ? &client->d : NULL,
                                   "vk_hosted_pipeline_new", out);
}

VK_API vk_status vk_hosted_pipeline_exec(vk_pipeline *pipeline, vk_async_fn fn,
                                         void *userdata, uint64_t *id)
{
    return vk__driven_pipeline_exec(VK_DRIVEN_HOSTED, "vk_hosted_pipeline_exec", pipeline, fn,
                                    userdata, id);
}

VK_API vk_status vk_hosted_cancel(vk_hosted *client, uint64_t id)
{
    return vk__driven_cancel(client != NULL ? &client->d : NULL, "vk_hosted_cancel", id);
}

VK_API vk_status vk_hosted_snapshot(vk_snapshot **out, vk_hosted *client)
{
    return vk__driven_snapshot(out, client != NULL ? &client->d : NULL, "vk_hosted_snapshot");
}

VK_API int vk_hosted_poll_events(vk_hosted *client, int max)
{
    return vk__driven_poll_events(client != NULL ? &client->d : NULL, "vk_hosted_poll_events", max);
}

VK_API int vk_hosted_is_connected(const vk_hosted *client)
{
    return client != NULL && vk__driven_connected(&client->d);
}

VK_API size_t vk_hosted_pending(const vk_hosted *client)
{
    return client != NULL ? vk__driven_pending(&client->d) : 0;
}
