/*
 * Fork safety (DESIGN §4): a child never reuses the parent's sockets or TLS
 * state. The atfork child handler only bumps a counter (it must be
 * async-signal-safe); each client notices the new generation on its next
 * use and rebuilds its state there.
 */
#include "client.h"
#include "sentinel.h"
#include "cluster.h"

#include <stdlib.h>

static atomic_uint fork_generation;
static pthread_once_t watch_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    atomic_fetch_add_explicit(&fork_generation, 1, memory_order_relaxed);
}

static void install_handler(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

void vk__fork_watch(void)
{
    pthread_once(&watch_once, install_handler);
}

unsigned vk__fork_generation(void)
{
    return atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

/* Runs on the child's first use of the client. Only the forking thread
 * exists here, so no lock can be contended, but any of them may have been
 * held by another parent thread at fork time: they are re-initialised, not
 * taken. */
void vk__client_after_fork(vk_client *c)
{
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->connect_lock, NULL);
    pthread_mutex_init(&c->credentials.lock, NULL);

    /* The parent keeps using its connections: close our copies of the fds
     * without a byte on the wire. Connections that other parent threads
     * had checked out are lost with those threads. */
    vk__pool_abandon(c->pool);
    c->pool = NULL;
    atomic_store(&c->connected, false);
    c->reconnect_failures = 0;

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
    c->fork_generation = vk__fork_generation();
    /* The next command reconnects on demand and restarts the refresh loop. */
}
