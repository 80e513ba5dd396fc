/*
 * Finding the master through the sentinels without blocking: the walk of
 * vk__sentinel_discover (sentinel.c) for the engine's drivers. The
 * sentinels are asked in turn, each on a probe: an engine of its own that
 * the driver connects to that sentinel (TLS like the data nodes) and that
 * authenticates with the sentinels' own credentials. The first that names
 * the master moves to the front of the list and its view of the other
 * sentinels is merged in; the failures are logged and reported with the
 * texts of vk__sentinel_gave_up. No system call, no clock read, no thread.
 *
 * While the client is connected it also keeps a subscription to
 * +switch-master and +promoted-slave on the first sentinel of the list
 * (vk__seek_watch, on a probe of its own): a switch it hears of is handed
 * to the driver at once, a promotion starts a walk.
 */
#ifndef VK_SENTINEL_SEEK_H
#define VK_SENTINEL_SEEK_H

#include "engine/engine.h"
#include "topology/sentinel.h"

typedef struct vk_seek vk_seek;

typedef struct vk_seek_driver {
    void *userdata;
    /* A probe to the sentinel at ep: a new engine for cfg and credentials
     * (the seek's, which outlive it), whose connection the driver opens
     * when the engine asks. */
    vk_status (*probe_open)(void *userdata, const vk_endpoint *ep, const vk_config *cfg,
                            vk_credentials *credentials, vk_engine **out);
    /* The same for the subscription: its pub/sub messages go to
     * push(push_userdata, message), which owns them. */
    vk_status (*watch_open)(void *userdata, const vk_endpoint *ep, const vk_config *cfg,
                            vk_credentials *credentials,
                            void (*push)(void *push_userdata, redisReply *message),
                            void *push_userdata, vk_engine **out);
    /* Done with a probe (nothing of the seek's is left in it): the driver
     * frees it once no call into it is running. */
    void (*probe_close)(void *userdata, vk_engine *probe);
    /* The walk ended: VK_OK and the master's address, or the failure (its
     * detail set). May start the walk again. */
    void (*found)(void *userdata, vk_status st, const vk_endpoint *master);
    /* The subscription heard (from the sentinel at via) that master is the
     * master now. */
    void (*announced)(void *userdata, const vk_endpoint *master, const vk_endpoint *via);
    /* The current monotonic time, in ms (the engines' entry points need it). */
    int64_t (*now_ms)(void *userdata);
} vk_seek_driver;

/* For the sentinels of s (borrowed) and the client's prepared cfg
 * (borrowed: the probes' settings derive from it). */
vk_status vk__seek_new(vk_seek **out, vk_sentinel *s, const vk_config *cfg,
                       const vk_seek_driver *driver);
/* Stops a walk, then frees. NULL-safe. */
void vk__seek_free(vk_seek *k);
/* Starts a walk from the first sentinel of the list, unless one runs. */
void vk__seek_start(vk_seek *k);
/* Ends a walk that runs, without calling found(). */
void vk__seek_stop(vk_seek *k);
bool vk__seek_running(const vk_seek *k);
/* Keeps the subscription: opens it when there is none, else PINGs it (a
 * dead one fails by the read timeout and is opened again next time).
 * Called about once a second while the node's connection is up. */
void vk__seek_watch(vk_seek *k);

#endif /* VK_SENTINEL_SEEK_H */
