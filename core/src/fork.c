/*
 * Fork safety (DESIGN §4): a child never reuses the parent's sockets or TLS
 * state. The atfork child handler only bumps a counter; each client notices
 * the new generation on its next use and rebuilds its state there, once:
 * every thread of the child may reach the client at the same moment, and
 * only one of them may free the parent's pool.
 */
#include "client.h"
#include "sentinel.h"
#include "cluster.h"

#include <stdlib.h>

static atomic_uint fork_generation;
static pthread_once_t watch_once = PTHREAD_ONCE_INIT;

/* Serialises the after-fork resets of every client of the process. The
 * forking thread holds it across fork() (pthread_atfork's prepare and
 * parent/child handlers), so a child never starts with it held by a thread
 * that does not exist there, nor with a reset left half done. */
static pthread_mutex_t reset_lock = PTHREAD_MUTEX_INITIALIZER;

static void before_fork(void)
{
    pthread_mutex_lock(&reset_lock);
}

static void after_fork_in_parent(void)
{
    pthread_mutex_unlock(&reset_lock);
}

static void after_fork_in_child(void)
{
    atomic_fetch_add_explicit(&fork_generation, 1, memory_order_relaxed);
    pthread_mutex_unlock(&reset_lock);
}

static void install_handlers(void)
{
    pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

void vk__fork_watch(void)
{
    pthread_once(&watch_once, install_handlers);
}

/* Relaxed is enough: the counter changes only in the child's one thread
 * before any other exists, and pthread_create orders it for the rest. */
unsigned vk__fork_generation(void)
{
    return atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

/* Only one thread runs this, under reset_lock, and every other thread of
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
    pthread_mutex_lock(&reset_lock);
    /* Another thread may have done it while this one waited. */
    if (atomic_load_explicit(&c->fork_generation, memory_order_relaxed) != generation) {
        reset_client(c);
        /* Last, with release: a thread that sees the new generation on the
         * fast path sees the rebuilt state too. */
        atomic_store_explicit(&c->fork_generation, generation, memory_order_release);
    }
    pthread_mutex_unlock(&reset_lock);
}
