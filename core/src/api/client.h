/*
 * The client's private state, shared by client.c (lifecycle, connect,
 * reconnect), client_command.c (the command path), pipeline.c, snapshot.c
 * and fork.c.
 */
#ifndef VK_CLIENT_H
#define VK_CLIENT_H

#include "auth/auth.h"
#include "engine/pool.h"
#include "engine/retry.h"

/* sentinel.h: the sentinel topology (NULL in the other modes). */
typedef struct vk_sentinel vk_sentinel;
typedef struct vk_sentinel_watch vk_sentinel_watch;
/* cluster.h: the cluster topology (NULL in the other modes). */
typedef struct vk_cluster vk_cluster;

struct vk_client {
    atomic_int refs;              /* the user's reference + dependent objects */
    atomic_bool alive;            /* false once vk_client_free() ran */
    vk_config *cfg;               /* prepared private copy */
    vk_events *events;
    vk_tls *tls;                  /* NULL: plain */
    vk_refresher *refresher;      /* NULL unless GCP IAM */
    vk_sentinel *sentinel;        /* NULL unless sentinel mode */
    vk_sentinel_watch *watch;     /* follows failovers; NULL unless sentinel mode */
    vk_cluster *cluster;          /* slot map and per-master pools; NULL unless cluster
                                   * mode, where it takes the place of pool */
    /* The node the pool connects to. In sentinel mode it changes with the
     * master: read and written only under connect_lock. */
    vk_endpoint endpoint;
    vk_credentials credentials;

    /* Guards pool, last_error and the reconnect state below. Held only for
     * a few loads and stores, never across I/O. */
    pthread_mutex_t lock;
    vk_pool *pool;                /* NULL when not connected */
    atomic_bool connected;        /* false: the next command reconnects first */
    char *last_error;             /* last refresh / reconnect failure */
    /* The node the pool in service talks to (standalone and sentinel), for
     * the snapshot: endpoint itself is only stable under connect_lock,
     * which a snapshot must not wait for. */
    vk_endpoint serving;
    bool serving_known;
    atomic_uint_fast64_t master_switches;   /* sentinel: new masters followed */

    /* Serialises (re)connects so concurrent callers do not dial at once. */
    pthread_mutex_t connect_lock;
    vk_reconnect_gate reconnects; /* the rate limit of failed reconnects */

    atomic_uint fork_generation;  /* the process generation the state belongs to */
    bool refresher_running;
};

/* ---- client.c: what other core files need of a client ------------------- */

/* Clients are refcounted so that objects made from them (lock managers,
 * pipelines) outlive vk_client_free() safely. */
vk_client *vk__client_ref(vk_client *c);
void vk__client_unref(vk_client *c);
/* False once vk_client_free() was called. */
bool vk__client_alive(const vk_client *c);
vk_events *vk__client_events(vk_client *c);
/* The client's prepared config (read-only). */
const vk_config *vk__client_config(const vk_client *c);

/* Called on entry by every operation that touches the client's state:
 * after a fork, drops the parent's connections and restarts the refresh
 * loop. The reset runs once per fork even when several threads of the
 * child arrive at once: the others wait for it. Without a fork the check
 * is two loads and a compare. */
void vk__client_after_fork(vk_client *c);
static inline void vk__client_check_fork(vk_client *c)
{
    if (VK_UNLIKELY(atomic_load_explicit(&c->fork_generation, memory_order_acquire) !=
                    vk__fork_generation()))
        vk__client_after_fork(c);
}

/* client.c */
/* Takes a reference on the current pool, reconnecting on demand under the
 * rate limit when the client is not connected. */
vk_status vk__client_acquire_pool(vk_client *c, vk_pool **out, vk_context *ctx);
/* Standalone and Sentinel: a connection of the client's current pool
 * (following a pool swapped meanwhile), and that pool, referenced. A
 * connection that cannot be opened marks the client disconnected, as a
 * command's does. */
vk_status vk__client_take_conn(vk_client *c, vk_pool **pool, vk_conn **conn, vk_context *ctx);
/* Reconnects on demand under the rate limit when the client is not
 * connected (cluster mode: loads the slot map again). */
vk_status vk__client_ensure_connected(vk_client *c, vk_context *ctx);
/* A command found the connection dead: the next command reconnects. */
void vk__client_mark_disconnected(vk_client *c);
/* Records the last refresh / reconnect error (copied). */
void vk__client_set_last_error(vk_client *c, const char *message);
/* The refresher's vk_apply_credentials_fn: new connections use the new
 * pair, idle ones of an older generation are re-authenticated before reuse. */
vk_status vk__client_apply_credentials(void *client, const char *username,
                                       const char *password);
/* Starts the background loops (IAM refresh, sentinel watcher) that the
 * client has and that are not running. */
vk_status vk__client_start_refresher(vk_client *c);
/* Sentinel mode: counts and logs a switch of master found by a driver of
 * the engine, as the blocking client does its own. */
void vk__client_announce_switch(vk_client *c, const vk_endpoint *from, const vk_endpoint *to);
/* Sentinel mode, the watcher's vk_follow_master_fn: when master differs
 * from the current node (or the client is not connected), retires the
 * current pool at once, so that no command goes to a demoted node, and
 * builds and verifies (ROLE) a pool to master; callers wait meanwhile. */
vk_status vk__client_follow_master(void *client, const vk_endpoint *master, vk_context *ctx);
/* True in sentinel mode: error replies that show the node is no longer
 * the master (READONLY, MASTERDOWN) send the client back to discovery. */
static inline bool vk__client_follows_master(const vk_client *c)
{
    return c->sentinel != NULL;
}
/* client_command.c: vk_client_command() for checked arguments, in cluster
 * mode on the master at `at` (NULL: routed by key as usual; ignored in the
 * other modes, which have one node). */
vk_status vk__client_command_at(redisReply **reply, vk_client *client, vk_context *ctx,
                                int argc, const char *const *argv, const size_t *argvlen,
                                const vk_endpoint *at);
/* For a driver that opens its own connections (the event-loop client): a
 * client prepared as vk_client_new() prepares one (config validated, TLS,
 * credentials, the IAM refresh loop running) that never connects. The
 * first IAM token is fetched on the refresh thread: the credentials say
 * it is awaited (vk__credentials_await_token) and count failed fetches.
 * A config whose topology is not among `topologies` (VK_TOPO_*) is
 * refused with VK_ERR_INVALID_CONFIG and `refusal`, as is IAM auth with
 * the driven refresh mode. */
vk_status vk__client_new_detached(vk_client **out, const vk_config *cfg, unsigned topologies,
                                  const char *refusal);

#endif /* VK_CLIENT_H */
