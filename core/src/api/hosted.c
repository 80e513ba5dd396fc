/*
 * Bytes mode (vkclient_async.h, vk_hosted): the engine's driver for a host
 * that owns the sockets. The engine's wishes are kept as state the host
 * reads (vk_hosted_get_wants); the host's events go to the engine once
 * they are known to be about the current connection. No system call is
 * made here for the connection.
 */
#include "api/driven.h"

#include <stdlib.h>
#include <string.h>

struct vk_hosted {
    vk_driven d;            /* first: the engine, the core, the thread */
    uint64_t conn;          /* the current connection, 0: none */
    uint64_t last_conn;
    bool connecting;        /* conn is to be opened */
    bool open;              /* conn is open */
    int64_t wake_at_ms;     /* VK_ENGINE_NEVER: no tick wanted */
};

/* ---- the engine's driver functions ----------------------------------------- */

static void drv_open(void *userdata)
{
    vk_hosted *h = userdata;
    h->conn = ++h->last_conn;
    h->connecting = true;
    h->open = false;
}

static void drv_close(void *userdata)
{
    vk_hosted *h = userdata;
    h->conn = 0;
    h->connecting = false;
    h->open = false;
}

static void drv_want_write(void *userdata)
{
    (void)userdata;   /* the host reads the output with the wants */
}

static void drv_wake(void *userdata, int64_t at_ms)
{
    vk_hosted *h = userdata;
    h->wake_at_ms = at_ms;
}

static void release(vk_driven *d)
{
    free(d);
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
    h->wake_at_ms = VK_ENGINE_NEVER;
    const vk_engine_driver driver = {
        .userdata = h,
        .open = drv_open,
        .close = drv_close,
        .want_write = drv_want_write,
        .wake = drv_wake,
        .complete = vk__driven_complete,
    };
    vk_status st = vk__driven_init(&h->d, cfg, &driver);
    if (st != VK_OK) {
        free(h);
        return st;
    }
    *out = h;
    return VK_OK;
}

VK_API void vk_hosted_free(vk_hosted *client)
{
    if (client != NULL)
        vk__driven_free(&client->d, "vk_hosted_free");
}

VK_API size_t vk_hosted_connection_count(const vk_hosted *client)
{
    return client != NULL && client->conn != 0 ? 1 : 0;
}

VK_API vk_status vk_hosted_get_wants(const vk_hosted *client, size_t i,
                                     vk_hosted_wants *wants)
{
    if (wants == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "wants is NULL");
    memset(wants, 0, sizeof *wants);
    if (client == NULL || client->d.engine == NULL)
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    if (i >= vk_hosted_connection_count(client))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "no connection %zu", i);
    const vk_hosted *h = client;
    const vk_endpoint *ep = &h->d.endpoint;
    const vk_config *cfg = vk__client_config(h->d.core);
    wants->conn = h->conn;
    wants->connect = h->connecting;
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
    wants->read = h->open;
    if (h->open)
        wants->output = vk__engine_output(h->d.engine, &wants->output_len);
    return VK_OK;
}

VK_API int64_t vk_hosted_tick_in_ms(const vk_hosted *client)
{
    if (client == NULL || client->wake_at_ms == VK_ENGINE_NEVER)
        return -1;
    int64_t ms = client->wake_at_ms - vk__now_ms();
    return ms > 0 ? ms : 0;
}

/* ---- the host's events ---------------------------------------------------------- */

/* The checks of every event: the client's thread, and the current
 * connection (a stale one is ignored). */
static bool current(vk_hosted *h, uint64_t conn, const char *function)
{
    return h != NULL && !h->d.closing && !h->d.free_requested &&
           vk__driven_on_thread(&h->d, function) && conn != 0 && conn == h->conn;
}

VK_API void vk_hosted_connected(vk_hosted *client, uint64_t conn)
{
    if (!current(client, conn, "vk_hosted_connected") || !client->connecting)
        return;
    client->connecting = false;
    client->open = true;
    vk__driven_enter(&client->d);
    vk__engine_opened(client->d.engine, vk__now_ms());
    vk__driven_leave(&client->d);
}

VK_API void vk_hosted_connect_failed(vk_hosted *client, uint64_t conn, vk_status status,
                                     const char *why)
{
    if (!current(client, conn, "vk_hosted_connect_failed") || !client->connecting)
        return;
    const char *peer = client->d.peer;
    why = why != NULL && why[0] != '\0' ? why : "failed";
    if (status == VK_ERR_TLS)
        vk__fail(VK_ERR_TLS, "handshake with %s failed: %s", peer, why);
    else if (status == VK_ERR_TIMEOUT)
        vk__fail(VK_ERR_TIMEOUT, "dial %s: %s", peer, why);
    else
        status = vk__fail(VK_ERR_IO, "dial %s: %s", peer, why);
    client->connecting = false;
    vk__driven_enter(&client->d);
    vk__engine_open_failed(client->d.engine, status, vk__now_ms());
    vk__driven_leave(&client->d);
}

VK_API void vk_hosted_wrote(vk_hosted *client, uint64_t conn, size_t n)
{
    if (!current(client, conn, "vk_hosted_wrote") || !client->open)
        return;
    vk__driven_enter(&client->d);
    vk__engine_wrote(client->d.engine, n, vk__now_ms());
    vk__driven_leave(&client->d);
}

VK_API void vk_hosted_received(vk_hosted *client, uint64_t conn, const char *bytes,
                               size_t len)
{
    if (!current(client, conn, "vk_hosted_received") || !client->open || bytes == NULL)
        return;
    vk__driven_enter(&client->d);
    vk__engine_feed(client->d.engine, bytes, len, vk__now_ms());
    vk__driven_leave(&client->d);
}

VK_API void vk_hosted_lost(vk_hosted *client, uint64_t conn, vk_status status,
                           const char *why)
{
    if (!current(client, conn, "vk_hosted_lost"))
        return;
    if (client->connecting) {
        vk_hosted_connect_failed(client, conn, status, why);
        return;
    }
    why = why != NULL && why[0] != '\0' ? why : "closed";
    if (status == VK_ERR_TLS)
        vk__fail(VK_ERR_TLS, "read %s: %s", client->d.peer, why);
    else if (status == VK_ERR_TIMEOUT)
        vk__fail(VK_ERR_TIMEOUT, "read %s: %s", client->d.peer, why);
    else
        status = vk__fail(VK_ERR_IO, "read %s: %s", client->d.peer, why);
    vk__driven_enter(&client->d);
    vk__engine_lost(client->d.engine, status, vk__now_ms());
    vk__driven_leave(&client->d);
}

VK_API void vk_hosted_tick(vk_hosted *client)
{
    if (client == NULL || client->d.closing || client->d.free_requested ||
        !vk__driven_on_thread(&client->d, "vk_hosted_tick"))
        return;
    client->wake_at_ms = VK_ENGINE_NEVER;
    vk__driven_enter(&client->d);
    vk__engine_tick(client->d.engine, vk__now_ms());
    vk__driven_leave(&client->d);
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

VK_API int vk_hosted_is_connected(const vk_hosted *client)
{
    return client != NULL && client->d.engine != NULL && vk__engine_ready(client->d.engine);
}

VK_API size_t vk_hosted_pending(const vk_hosted *client)
{
    return client != NULL && client->d.engine != NULL ? vk__engine_pending(client->d.engine)
                                                      : 0;
}
