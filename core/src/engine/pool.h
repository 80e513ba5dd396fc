/*
 * A bounded pool of connections to one node. The uncontended get/put path
 * takes one mutex and allocates nothing: idle connections sit on a LIFO
 * stack so the most recently used (warmest) one is handed out first.
 *
 * Pools are refcounted: the client swaps a new pool in on reconnect and the
 * old one is freed once the last in-flight caller has returned its
 * connection.
 */
#ifndef VK_POOL_H
#define VK_POOL_H

#include "engine/conn.h"

#include <stdatomic.h>

/* The credentials new connections authenticate with. Every change bumps the
 * generation; a connection remembers (as its tag) the generation it
 * authenticated with, so stale idle connections are found before reuse. */
typedef struct vk_credentials {
    pthread_mutex_t lock;
    char *username;              /* NULL: the default user */
    char *password;              /* NULL: no AUTH */
    _Atomic uint64_t generation;
    /* GCP IAM auth of an event-loop client: the first token is fetched on
     * the refresh thread, and connections wait for it (the engine looks
     * again every few ms). Each fetch that fails meanwhile is counted, with
     * its status and text (under lock), so that the operations waiting
     * fail with it. */
    atomic_bool token_pending;
    _Atomic uint64_t failures;
    vk_status failure_status;
    char *failure;
} vk_credentials;

void vk__credentials_init(vk_credentials *cr);
void vk__credentials_destroy(vk_credentials *cr);
/* Replaces the pair (copies) and bumps the generation; a token awaited is
 * here. */
vk_status vk__credentials_set(vk_credentials *cr, const char *username, const char *password);
/* From now on connections wait for the first vk__credentials_set. */
void vk__credentials_await_token(vk_credentials *cr);
/* A fetch of the awaited token failed (st and its text). */
void vk__credentials_fetch_failed(vk_credentials *cr, vk_status st, const char *text);
/* The failures so far; with a count above *seen, the last one's status
 * (its text set as the detail) and *seen moves up to it. VK_OK: none new. */
vk_status vk__credentials_new_failure(vk_credentials *cr, uint64_t *seen);
/* Malloc'd copies of the current pair and its generation; the caller frees
 * them with vk__free_secret. */
vk_status vk__credentials_copy(vk_credentials *cr, char **username, char **password,
                               uint64_t *generation);

typedef struct vk_pool vk_pool;

/* What a pool needs to open connections; everything is borrowed from the
 * client, which outlives its pools. */
typedef struct vk_pool_params {
    vk_endpoint endpoint;
    const vk_config *cfg;
    vk_tls *tls;
    vk_events *events;
    vk_credentials *credentials;
    /* Label the pool's gauges with node="<address>": set where a client
     * has a pool per node (cluster), so that their series stay apart. */
    bool label_node;
    /* An idle connection the server closed is reported to the caller (a
     * VK_ERR_IO from vk__pool_get) instead of replaced unseen: set where
     * it may mean the node is no longer the one to talk to (sentinel). */
    bool report_dead_idle;
} vk_pool_params;

/* Builds a pool and opens (and pings, through the handshake) its first
 * connection plus the warm min_idle_conns. Nothing is left open on failure. */
vk_status vk__pool_new(vk_pool **out, const vk_pool_params *params, vk_context *ctx);
vk_pool *vk__pool_ref(vk_pool *p);
/* Frees the pool once the last reference is gone. NULL-safe. */
void vk__pool_unref(vk_pool *p);

/* Hands out a connection: an idle one (re-checked or re-authenticated when
 * needed), a new one while below pool_size, or waits up to pool_timeout.
 * *closed is set when the pool was closed meanwhile, so the caller can
 * retry on the client's current pool. */
vk_status vk__pool_get(vk_pool *p, vk_conn **out, vk_context *ctx, bool *closed);
/* Returns a connection; broken ones (and every one once the pool is
 * closed) are closed instead of kept. */
void vk__pool_put(vk_pool *p, vk_conn *c);
/* Closes a connection taken with vk__pool_get() instead of returning it:
 * for one whose stream is sound but whose state on the server cannot be
 * trusted (a transaction that may not have ended). */
void vk__pool_discard(vk_pool *p, vk_conn *c);
/* Re-authenticates the idle connections whose credentials are older than
 * the current ones, on the calling thread (the refresh loop), so that
 * commands seldom pay for it. Each is out of the pool meanwhile; one that
 * fails is closed. Connections in use catch up when next handed out. */
void vk__pool_reauth_idle(vk_pool *p, vk_context *ctx);
/* Reports the pool's gauges to the metrics sink now (NULL-safe), whether
 * or not the config has them reported at each change. */
void vk__pool_report_gauges(vk_pool *p);
/* The gauges of no pool (a client closed or not connected): all 0. */
void vk__pool_report_none(vk_events *ev);
/* Closes the idle connections and refuses further gets; connections in use
 * are closed as they come back. Idempotent. */
void vk__pool_close(vk_pool *p);
/* After fork() in the child: abandons every idle connection without a byte
 * on the wire, re-initialises the locks and frees the pool, whatever its
 * reference count (the parent's other threads do not exist here). */
void vk__pool_abandon(vk_pool *p);

#endif /* VK_POOL_H */
