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
 */
#include "api/driven.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hosted_conn hosted_conn;
struct hosted_conn {
    vk_hosted *client;
    vk_engine *engine;      /* the node's is the client's d.engine */
    bool is_node;
    vk_endpoint endpoint;
    char peer[300];         /* the endpoint, for messages */
    uint64_t id;            /* the current connection, 0: none */
    bool connecting;        /* id is to be opened */
    bool open;              /* id is open */
    int64_t wake_at_ms;     /* VK_ENGINE_NEVER: no tick wanted */
    hosted_conn *next;      /* among the probes, then the released */
};

struct vk_hosted {
    vk_driven d;            /* first: the engine, the core, the thread */
    hosted_conn node;
    hosted_conn *probes;            /* Sentinel: the sentinels being asked */
    hosted_conn *released_probes;   /* freed once no call runs */
    uint64_t last_id;
};

/* ---- the engines' driver functions ----------------------------------------- */

static void want_connection(hosted_conn *c)
{
    c->id = ++c->client->last_id;
    c->connecting = true;
    c->open = false;
}

static void drv_open(void *userdata)
{
    hosted_conn *c = userdata;
    if (c->is_node) {
        vk_driven *d = &c->client->d;
        if (vk__driven_locate(d))
            return;   /* drv_located asks for the connection */
        c->endpoint = d->endpoint;
        snprintf(c->peer, sizeof c->peer, "%s", d->peer);
    }
    want_connection(c);
}

/* Sentinel mode: the master is known (or not) for the node's dial. */
static void drv_located(vk_driven *d, vk_status st)
{
    vk_hosted *h = (vk_hosted *)d;
    hosted_conn *c = &h->node;
    if (st != VK_OK) {
        vk__engine_open_failed(c->engine, st, vk__now_ms());
        return;
    }
    c->endpoint = d->endpoint;
    snprintf(c->peer, sizeof c->peer, "%s", d->peer);
    want_connection(c);
    vk__engine_dial_started(c->engine, vk__now_ms());
}

static void drv_close(void *userdata)
{
    hosted_conn *c = userdata;
    c->id = 0;
    c->connecting = false;
    c->open = false;
    if (c->is_node)
        vk__driven_node_closed(&c->client->d);
}

static void drv_want_write(void *userdata)
{
    (void)userdata;   /* the host reads the output with the wants */
}

static void drv_wake(void *userdata, int64_t at_ms)
{
    hosted_conn *c = userdata;
    c->wake_at_ms = at_ms;
}

static void conn_init(hosted_conn *c, vk_hosted *h, const vk_endpoint *ep, bool is_node)
{
    c->client = h;
    c->is_node = is_node;
    c->wake_at_ms = VK_ENGINE_NEVER;
    if (ep != NULL) {
        c->endpoint = *ep;
        vk__format_endpoint(c->peer, sizeof c->peer, ep);
    }
}

static void drv_check_master(void *userdata)
{
    vk_driven *d = &((hosted_conn *)userdata)->client->d;
    vk__driven_check_master(d);
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
        .check_master = c->is_node ? drv_check_master : NULL,
    };
}

/* Sentinel mode: a probe to the sentinel at ep (sentinel_seek.h). */
static vk_status drv_probe_open(vk_driven *d, const vk_endpoint *ep, const vk_config *cfg,
                                vk_credentials *credentials, vk_engine **out)
{
    vk_hosted *h = (vk_hosted *)d;
    hosted_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return vk__fail_nomem();
    conn_init(c, h, ep, false);
    const vk_engine_driver driver = conn_driver(c);
    vk_status st = vk__engine_new(&c->engine, cfg, credentials, c->peer, &driver);
    if (st != VK_OK) {
        free(c);
        return st;
    }
    c->next = h->probes;
    h->probes = c;
    *out = c->engine;
    return VK_OK;
}

/* The probe's connection is no longer wanted from now on; the probe is
 * freed once no call runs (the seek may be inside one of its engine's
 * completions). */
static void drv_probe_close(vk_driven *d, vk_engine *probe)
{
    vk_hosted *h = (vk_hosted *)d;
    for (hosted_conn **at = &h->probes; *at != NULL; at = &(*at)->next) {
        hosted_conn *c = *at;
        if (c->engine == probe) {
            *at = c->next;
            c->next = h->released_probes;
            h->released_probes = c;
            c->id = 0;
            c->connecting = c->open = false;
            return;
        }
    }
}

static void release_probes(vk_hosted *h)
{
    while (h->released_probes != NULL) {
        hosted_conn *c = h->released_probes;
        h->released_probes = c->next;
        vk__engine_free(c->engine, "the sentinel probe closed");
        free(c);
    }
}

static void release(vk_driven *d)
{
    vk_hosted *h = (vk_hosted *)d;
    while (h->probes != NULL)
        drv_probe_close(d, h->probes->engine);
    release_probes(h);
    free(h);
}

/* Every event from the host: enter() ... leave(). */
static void enter(vk_hosted *h)
{
    vk__driven_enter(&h->d);
}

static void leave(vk_hosted *h)
{
    if (!vk__driven_leave(&h->d) && h->d.depth == 0)
        release_probes(h);
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
    h->d.probe_open = drv_probe_open;
    h->d.probe_close = drv_probe_close;
    h->d.located = drv_located;
    conn_init(&h->node, h, NULL, true);
    const vk_engine_driver driver = conn_driver(&h->node);
    vk_status st = vk__driven_init(&h->d, cfg, &driver);
    if (st != VK_OK) {
        release_probes(h);
        free(h);
        return st;
    }
    h->node.engine = h->d.engine;
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
    for (const hosted_conn *c = h->probes; c != NULL; c = c->next) {
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
    for (const hosted_conn *c = client->probes; c != NULL; c = c->next)
        n += c->id != 0;
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
    const vk_endpoint *ep = &c->endpoint;
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
        wants->output = vk__engine_output(c->engine, &wants->output_len);
    return VK_OK;
}

VK_API int64_t vk_hosted_tick_in_ms(const vk_hosted *client)
{
    if (client == NULL)
        return -1;
    int64_t at = client->node.wake_at_ms;
    for (const hosted_conn *c = client->probes; c != NULL; c = c->next) {
        if (c->wake_at_ms < at)
            at = c->wake_at_ms;
    }
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
    for (hosted_conn *c = h->probes; c != NULL; c = c->next) {
        if (c->id == id)
            return c;
    }
    return NULL;
}

VK_API void vk_hosted_connected(vk_hosted *client, uint64_t conn)
{
    hosted_conn *c = current(client, conn, "vk_hosted_connected");
    if (c == NULL || !c->connecting)
        return;
    c->connecting = false;
    c->open = true;
    enter(client);
    vk__engine_opened(c->engine, vk__now_ms());
    leave(client);
}

static void connect_failed(vk_hosted *h, hosted_conn *c, vk_status status, const char *why)
{
    why = why != NULL && why[0] != '\0' ? why : "failed";
    if (status == VK_ERR_TLS)
        vk__fail(VK_ERR_TLS, "handshake with %s failed: %s", c->peer, why);
    else if (status == VK_ERR_TIMEOUT)
        vk__fail(VK_ERR_TIMEOUT, "dial %s: %s", c->peer, why);
    else
        status = vk__fail(VK_ERR_IO, "dial %s: %s", c->peer, why);
    c->connecting = false;
    enter(h);
    vk__engine_open_failed(c->engine, status, vk__now_ms());
    leave(h);
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
    vk__engine_wrote(c->engine, n, vk__now_ms());
    leave(client);
}

VK_API void vk_hosted_received(vk_hosted *client, uint64_t conn, const char *bytes,
                               size_t len)
{
    hosted_conn *c = current(client, conn, "vk_hosted_received");
    if (c == NULL || !c->open || bytes == NULL)
        return;
    enter(client);
    vk__engine_feed(c->engine, bytes, len, vk__now_ms());
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
        vk__fail(VK_ERR_TLS, "read %s: %s", c->peer, why);
    else if (status == VK_ERR_TIMEOUT)
        vk__fail(VK_ERR_TIMEOUT, "read %s: %s", c->peer, why);
    else
        status = vk__fail(VK_ERR_IO, "read %s: %s", c->peer, why);
    enter(client);
    vk__engine_lost(c->engine, status, vk__now_ms());
    leave(client);
}

static void tick_if_due(hosted_conn *c, int64_t now_ms)
{
    if (c->wake_at_ms > now_ms)
        return;
    c->wake_at_ms = VK_ENGINE_NEVER;
    vk__engine_tick(c->engine, now_ms);
}

VK_API void vk_hosted_tick(vk_hosted *client)
{
    if (client == NULL || client->d.closing || client->d.free_requested ||
        !vk__driven_on_thread(&client->d, "vk_hosted_tick"))
        return;
    int64_t now_ms = vk__now_ms();
    enter(client);
    tick_if_due(&client->node, now_ms);
    for (hosted_conn *c = client->probes; c != NULL && !client->d.free_requested;) {
        hosted_conn *next = c->next;   /* a tick may close the probe */
        tick_if_due(c, now_ms);
        c = next;
    }
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

VK_API int vk_hosted_is_connected(const vk_hosted *client)
{
    return client != NULL && client->d.engine != NULL && vk__engine_ready(client->d.engine);
}

VK_API size_t vk_hosted_pending(const vk_hosted *client)
{
    return client != NULL && client->d.engine != NULL ? vk__engine_pending(client->d.engine)
                                                      : 0;
}
