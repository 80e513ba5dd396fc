/*
 * Status snapshots: a copy of the client's state at one moment, not a
 * probe of the server.
 */
#include "client.h"

#include <stdlib.h>

struct vk_snapshot {
    bool connected;
    char *last_refresh_error;    /* NULL: none */
    int64_t last_refresh_at_ms;
    bool refresh_loop_running;
};

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
    s->connected = atomic_load(&c->connected);
    if (c->refresher != NULL)
        vk__refresher_status(c->refresher, &s->last_refresh_error, &s->last_refresh_at_ms,
                             &s->refresh_loop_running);
    if (s->last_refresh_error == NULL) {
        /* A failed reconnect counts too, as LastRefreshError in the original. */
        vk_status st = vk_client_last_refresh_error(&s->last_refresh_error, client);
        if (st != VK_OK) {
            free(s);
            return st;
        }
    }
    *out = s;
    return VK_OK;
}

VK_API void vk_snapshot_free(vk_snapshot *snapshot)
{
    if (snapshot == NULL)
        return;
    free(snapshot->last_refresh_error);
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
