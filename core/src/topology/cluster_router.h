/*
 * Cluster routing without I/O (cluster_router.c): the slot map, one engine
 * per node (each a multiplexed connection of its own), and the routing of
 * commands and pipelines with the blocking router's rules (cluster_rules.c):
 * MOVED and ASK followed, refusals retried for a while, a failed node's
 * commands sent again where the map says once it is reloaded, pipelines
 * split by node and put back in order. It makes no system call, starts no
 * thread and reads the time only through its driver.
 *
 * The driver (driven.c) opens and closes the node engines, gives the
 * router a timer, and delivers completions. Every call comes from the
 * client's thread.
 */
#ifndef VK_CLUSTER_ROUTER_H
#define VK_CLUSTER_ROUTER_H

#include "topology/cluster.h"
#include "engine/engine.h"

typedef struct vk_router vk_router;

typedef struct vk_router_driver {
    void *userdata;
    /* An engine for the node at ep, on a connection of its own, dialled
     * when first used. */
    vk_status (*node_open)(void *userdata, const vk_endpoint *ep, vk_engine **out);
    /* The node's engine is no longer wanted: it is closed, and freed once
     * no call into it runs. It has nothing pending. */
    void (*node_close)(void *userdata, vk_engine *node);
    /* A blocking command (or a part of a pipeline holding one) runs on a
     * connection of its own to the node, a lane (driven_lane.c): taken,
     * then given back (kept for the next when `keep`, else closed: a
     * cancel ends the server's wait). */
    vk_status (*lane_take)(void *userdata, const vk_endpoint *ep, vk_engine **out);
    void (*lane_give_back)(void *userdata, vk_engine *lane, bool keep);
    /* A wait: fn(op_userdata, VK_OK, NULL) at (or after) at_ms, or
     * VK_ERR_CANCELLED when cancel_after(id) comes first. */
    vk_status (*after)(void *userdata, int64_t at_ms, vk_async_fn fn, void *op_userdata,
                       uint64_t *id);
    void (*cancel_after)(void *userdata, uint64_t id);
    /* An operation completed: as vk_engine_driver.complete. */
    void (*complete)(void *userdata, vk_async_fn fn, void *op_userdata, vk_status status,
                     redisReply *reply);
    int64_t (*now_ms)(void *userdata);
} vk_router_driver;

/* The seeds are cfg's cluster addresses; tls: nodes are reached over TLS
 * (the maps' TLS ports are used). cfg and events are borrowed. */
vk_status vk__router_new(vk_router **out, const vk_config *cfg, vk_events *events, bool tls,
                         const vk_router_driver *driver);
/* Every operation not complete completes with VK_ERR_CANCELLED and the
 * detail `why`, the waits are cancelled, and every node engine is given
 * to node_close. The driver then frees those engines (their cancelled
 * operations come back here), then calls vk__router_free. */
void vk__router_close(vk_router *r, const char *why);
void vk__router_free(vk_router *r);

/* A caller's command: checked, classified, refused when it would change
 * the shared connection (VK_ERR_COMMAND_NOT_ALLOWED) or names keys in more
 * than one slot (VK_ERR_INVALID_ARGUMENT, CROSSSLOT); nothing completes on
 * a refusal. Otherwise it completes through the driver, never before this
 * returns. *id names it for vk__router_cancel. */
vk_status vk__router_command(vk_router *r, int argc, const char *const *argv,
                             const size_t *argvlen, vk_async_fn fn, void *op_userdata,
                             uint64_t *id);
/* The same for a keyless command that must run on the master at `at`
 * (SCAN's walk of every master): refusals and failures are retried as for
 * any command, a redirect is its reply, and a node that is not in the map
 * in service (reloaded after a failure) fails it with VK_ERR_IO "redis
 * cluster: node <at> is not in the slot map". */
vk_status vk__router_command_at(vk_router *r, int argc, const char *const *argv,
                                const size_t *argvlen, const vk_endpoint *at, vk_async_fn fn,
                                void *op_userdata, uint64_t *id);
/* The map in service (borrowed; NULL before the first load) and its
 * version, bumped by every change. */
const vk_slot_map *vk__router_map(const vk_router *r, uint64_t *version);
/* A pipeline's commands (taken over): split by node, the replies put back
 * in order in one array. A command in more than one slot refuses the
 * whole pipeline before anything is sent. */
vk_status vk__router_pipeline(vk_router *r, vk_pipeline_commands *cmds, vk_async_fn fn,
                              void *op_userdata, uint64_t *id);
/* The router's operation ids have the top bit set: the client's waits,
 * on its timer engine, have ids of their own. */
#define VK_ROUTER_ID_BIT (UINT64_C(1) << 63)
static inline bool vk__router_owns_id(uint64_t id)
{
    return (id & VK_ROUTER_ID_BIT) != 0;
}
/* VK_OK when id was in flight: it completed with VK_ERR_CANCELLED. */
vk_status vk__router_cancel(vk_router *r, uint64_t id);
size_t vk__router_pending(const vk_router *r);
/* True while a slot map is in service. */
bool vk__router_connected(const vk_router *r);
/* As vk__cluster_stats. */
vk_status vk__router_stats(const vk_router *r, vk_cluster_stats *out);

#endif /* VK_CLUSTER_ROUTER_H */
