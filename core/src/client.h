/*
 * The client's private state, shared by client.c (lifecycle, connect,
 * reconnect), client_command.c (the command path), pipeline.c, snapshot.c
 * and fork.c.
 */
#ifndef VK_CLIENT_H
#define VK_CLIENT_H

#include "pool.h"

struct vk_client {
    atomic_int refs;              /* the user's reference + dependent objects */
    atomic_bool alive;            /* false once vk_client_free() ran */
    vk_config *cfg;               /* prepared private copy */
    vk_events *events;
    vk_tls *tls;                  /* NULL: plain */
    vk_refresher *refresher;      /* NULL unless GCP IAM */
    vk_endpoint endpoint;
    vk_credentials credentials;

    /* Guards pool, last_error and the reconnect state below. Held only for
     * a few loads and stores, never across I/O. */
    pthread_mutex_t lock;
    vk_pool *pool;                /* NULL when not connected */
    atomic_bool connected;        /* false: the next command reconnects first */
    char *last_error;             /* last refresh / reconnect failure */

    /* Serialises (re)connects so concurrent callers do not dial at once. */
    pthread_mutex_t connect_lock;
    int reconnect_failures;       /* k: consecutive failed reconnects */
    int64_t last_attempt_ms;      /* monotonic time of the last failed attempt */
    int64_t reconnect_wait_ms;    /* min(d, 30 s) drawn after that failure */

    unsigned fork_generation;     /* the process generation the state belongs to */
    bool refresher_running;
};

/* fork.c: the current process generation (bumped in every forked child). */
unsigned vk__fork_generation(void);
/* Installs the atfork handler once. */
void vk__fork_watch(void);
/* Called on entry by every operation that touches connections: after a
 * fork, drops the parent's connections and restarts the refresh loop. */
void vk__client_after_fork(vk_client *c);
static inline void vk__client_check_fork(vk_client *c)
{
    if (VK_UNLIKELY(c->fork_generation != vk__fork_generation()))
        vk__client_after_fork(c);
}

/* client.c */
/* Takes a reference on the current pool, reconnecting on demand under the
 * rate limit when the client is not connected. */
vk_status vk__client_acquire_pool(vk_client *c, vk_pool **out, vk_context *ctx);
/* A command found the connection dead: the next command reconnects. */
void vk__client_mark_disconnected(vk_client *c);
/* Records the last refresh / reconnect error (copied). */
void vk__client_set_last_error(vk_client *c, const char *message);
/* The refresher's vk_apply_credentials_fn: new connections use the new
 * pair, idle ones of an older generation are re-authenticated before reuse. */
vk_status vk__client_apply_credentials(void *client, const char *username,
                                       const char *password);
/* Starts the refresh loop if there is one and it is not running. */
vk_status vk__client_start_refresher(vk_client *c);

/* readonly.c: true when running the command twice is harmless. */
bool vk__command_is_readonly(const char *name, size_t len);

#endif /* VK_CLIENT_H */
