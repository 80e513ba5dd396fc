/*
 * Fork safety (DESIGN §4), the process's part: the atfork child handler
 * only bumps a generation counter; each client notices the new generation
 * on its next use and rebuilds its state there (client_fork.c).
 */
#include "support/support.h"

#include <stdatomic.h>
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

void vk__fork_reset_lock(void)
{
    pthread_mutex_lock(&reset_lock);
}

void vk__fork_reset_unlock(void)
{
    pthread_mutex_unlock(&reset_lock);
}
