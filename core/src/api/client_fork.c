/*
 * Fork safety (DESIGN §4), the client's part: a child never reuses the
 * parent's sockets or TLS state. Each client notices the new generation
 * on its next use and rebuilds its state there, once: every thread of the
 * child may reach the client at the same moment, and only one of them may
 * free the parent's pool.
 */
#include "api/client.h"
#include "topology/cluster.h"
#include "topology/sentinel.h"

#include <stdlib.h>

/* Only one thread runs this, under the fork reset lock, and every other thread of
 * the child waits for it in vk__client_after_fork() before it touches the
 * client. Any lock below may have been held by a parent thread at fork
 * time: they are re-initialised, not taken. */
static void reset_client(vk_client *c)
{
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->connect_lock, NULL);
    pthread_mutex_init(&c->credentials.lock, NULL);
    /* The eventfd is the parent's kernel object, and the queued events
     * are the parent's to deliver. */
    vk__events_after_fork(c->events);

    /* The parent keeps using its connections: close our copies of the fds
     * without a byte on the wire. Connections that other parent threads
     * had checked out are lost with those threads. */
    vk_pool *pool = c->pool;
    c->pool = NULL;
    vk__pool_abandon(pool);
    atomic_store(&c->connected, false);
    vk__reconnect_gate_passed(&c->reconnects);

    /* The sentinel watcher thread is gone too; it restarts with the
     * refresh loop. */
    vk__sentinel_watch_after_fork(c->watch);
    /* Cluster mode: every master's pool is abandoned the same way; the
     * slot map is loaded again by the reconnect. */
    vk__cluster_after_fork(c->cluster);
    if (c->refresher != NULL) {
        vk__refresher_after_fork(c->refresher);
        c->refresher_running = false;
    }
    /* The next command reconnects on demand and restarts the refresh loop. */
}

void vk__client_after_fork(vk_client *c)
{
    unsigned generation = vk__fork_generation();
    vk__fork_reset_lock();
    /* Another thread may have done it while this one waited. */
    if (atomic_load_explicit(&c->fork_generation, memory_order_relaxed) != generation) {
        reset_client(c);
        /* Last, with release: a thread that sees the new generation on the
         * fast path sees the rebuilt state too. */
        atomic_store_explicit(&c->fork_generation, generation, memory_order_release);
    }
    vk__fork_reset_unlock();
}
