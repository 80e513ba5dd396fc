/*
 * Status snapshots: a copy of the client's state at one moment, not a
 * probe of the server.
 */
#include "api/client.h"
#include "api/driven.h"
#include "topology/cluster.h"

#include <stdlib.h>

struct vk_snapshot {
    bool connected;
    char *last_refresh_error;    /* NULL: none */
    int64_t last_refresh_at_ms;
    bool refresh_loop_running;
    const char *mode;
    char master_address[300];    /* "": unknown or cluster mode */
    uint64_t master_switches;
    vk_cluster_stats cluster;    /* zero outside cluster mode */
};

static const char *mode_of(const vk_client *c)
{
    if (c->sentinel != NULL)
        return "sentinel";
    if (c->cluster != NULL)
        return "cluster";
    return "standalone";
}

/* The topology's part of the snapshot. */
static vk_status take_topology(vk_snapshot *s, vk_client *c)
{
    s->mode = mode_of(c);
    s->master_switches = atomic_load(&c->master_switches);
    if (c->cluster != NULL)
        return vk__cluster_stats(c->cluster, &s->cluster);
    pthread_mutex_lock(&c->lock);
    if (c->serving_known)
        vk__format_endpoint(s->master_address, sizeof s->master_address, &c->serving);
    pthread_mutex_unlock(&c->lock);
    return VK_OK;
}

/* The token refresh's part; a blocking client's failed reconnect counts
 * too, as LastRefreshError in the original. */
static vk_status take_refresh_state(vk_snapshot *s, const vk_client *c, bool reconnects)
{
    if (c->refresher != NULL)
        vk__refresher_status(c->refresher, &s->last_refresh_error, &s->last_refresh_at_ms,
                             &s->refresh_loop_running);
    if (s->last_refresh_error == NULL && reconnects)
        return vk_client_last_refresh_error(&s->last_refresh_error, c);
    return VK_OK;
}

VK_API vk_status vk_client_snapshot(vk_snapshot **out, const vk_client *client)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (client == NULL) {
        vk__misuse("vk_client_snapshot", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    vk_snapshot *s = calloc(1, sizeof *s);
    if (s == NULL)
        return vk__fail_nomem();
    vk_client *c = (vk_client *)client;
    /* After a fork the locks below may be held by a parent thread. */
    vk__client_check_fork(c);
    s->connected = atomic_load(&c->connected);
    vk_status st = take_topology(s, c);
    if (st != VK_OK) {
        free(s);
        return st;
    }
    if ((st = take_refresh_state(s, c, true)) != VK_OK) {
        vk_snapshot_free(s);
        return st;
    }
    *out = s;
    return VK_OK;
}

vk_status vk__driven_snapshot(vk_snapshot **out, vk_driven *d, const char *function)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    vk_snapshot *s = calloc(1, sizeof *s);
    if (s == NULL)
        return vk__fail_nomem();
    s->connected = vk__driven_connected(d);
    s->mode = mode_of(d->core);
    s->master_switches = atomic_load(&d->core->master_switches);
    if (d->has_endpoint)
        vk__format_endpoint(s->master_address, sizeof s->master_address, &d->endpoint);
    if (d->router != NULL && (st = vk__router_stats(d->router, &s->cluster)) != VK_OK) {
        free(s);
        return st;
    }
    if ((st = take_refresh_state(s, d->core, false)) != VK_OK) {
        vk_snapshot_free(s);
        return st;
    }
    *out = s;
    return VK_OK;
}

VK_API void vk_snapshot_free(vk_snapshot *snapshot)
{
    if (snapshot == NULL)
        return;
    free(snapshot->last_refresh_error);
    free(snapshot->cluster.master);
    free(snapshot);
}

VK_API int vk_snapshot_connected(const vk_snapshot *snapshot)
{
    return snapshot != NULL && snapshot->connected ? 1 : 0;
}

VK_API const char *vk_snapshot_last_refresh_error(const vk_snapshot *snapshot)
{
    return snapshot != NULL ? snapshot->last_refresh_error : NULL;
}

VK_API int64_t vk_snapshot_last_refresh_at_ms(const vk_snapshot *snapshot)
{
    return snapshot != NULL ? snapshot->last_refresh_at_ms : 0;
}

VK_API int vk_snapshot_refresh_loop_running(const vk_snapshot *snapshot)
{
    return snapshot != NULL && snapshot->refresh_loop_running ? 1 : 0;
}

VK_API const char *vk_snapshot_mode(const vk_snapshot *snapshot)
{
    return snapshot != NULL ? snapshot->mode : NULL;
}

VK_API const char *vk_snapshot_master_address(const vk_snapshot *snapshot)
{
    return snapshot != NULL && snapshot->master_address[0] != '\0' ? snapshot->master_address
                                                                   : NULL;
}

VK_API uint64_t vk_snapshot_master_switches(const vk_snapshot *snapshot)
{
    return snapshot != NULL ? snapshot->master_switches : 0;
}

VK_API uint64_t vk_snapshot_slot_map_refreshes(const vk_snapshot *snapshot)
{
    return snapshot != NULL ? snapshot->cluster.slot_refreshes : 0;
}

VK_API uint64_t vk_snapshot_moved_redirects(const vk_snapshot *snapshot)
{
    return snapshot != NULL ? snapshot->cluster.moved_redirects : 0;
}

VK_API uint64_t vk_snapshot_ask_redirects(const vk_snapshot *snapshot)
{
    return snapshot != NULL ? snapshot->cluster.ask_redirects : 0;
}

VK_API size_t vk_snapshot_node_count(const vk_snapshot *snapshot)
{
    return snapshot != NULL ? snapshot->cluster.masters : 0;
}

VK_API const char *vk_snapshot_node_address(const vk_snapshot *snapshot, size_t i)
{
    if (snapshot == NULL || i >= snapshot->cluster.masters)
        return NULL;
    return snapshot->cluster.master[i].address;
}

VK_API int vk_snapshot_node_slots(const vk_snapshot *snapshot, size_t i)
{
    if (snapshot == NULL || i >= snapshot->cluster.masters)
        return 0;
    return snapshot->cluster.master[i].slots;
}
