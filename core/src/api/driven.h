/*
 * What every driver of the engine shares (driven.c): the client prepared
 * without connecting (config, TLS, credentials, the IAM refresh loop),
 * the engine, the thread the client belongs to, and the rule for calls
 * that come back in from a completion (a free asked for there waits until
 * the outermost call returns). The event-loop client (async.c) and the
 * bytes mode (hosted.c) embed one as their first member.
 */
#ifndef VK_DRIVEN_H
#define VK_DRIVEN_H

#include "api/client.h"
#include "engine/engine.h"
#include "api/pipeline.h"
#include "topology/sentinel_seek.h"
#include "topology/cluster_router.h"

#include <pthread.h>

typedef enum vk_driven_kind {
    VK_DRIVEN_ASYNC = 1,    /* vk_async */
    VK_DRIVEN_HOSTED        /* vk_hosted */
} vk_driven_kind;

typedef struct vk_driven vk_driven;
typedef struct vk_lane_op vk_lane_op;
typedef struct vk_script_op vk_script_op;

/* What the drivers' connection records (async.c's vk_async_conn, hosted.c's
 * hosted_conn) have in common, as their first member: the node's
 * connection, or a probe's (Sentinel). */
typedef struct vk_driven_conn vk_driven_conn;
struct vk_driven_conn {
    vk_driven *d;             /* the client it belongs to */
    vk_driven_conn *next;     /* among the probes, then the closed ones */
    vk_engine *engine;        /* the node's is the client's d->engine */
    bool is_node;
    vk_endpoint endpoint;
    char peer[300];           /* the endpoint, for messages */
    int64_t wake_at_ms;       /* its engine's wake-up; VK_ENGINE_NEVER: none */
    /* A lane (driven_lane.c): a connection for one blocking operation at a
     * time; idle: kept for the next one. */
    bool lane;
    bool lane_idle;
    /* A subscription's messages go to push(push_userdata, message). */
    void (*push)(void *push_userdata, redisReply *message);
    void *push_userdata;
};

/* Whoever keeps a pointer to a client beyond one call (a lock manager)
 * hears when it goes: gone() runs first thing in its free, before its
 * operations are cancelled, and must only forget the pointer. */
typedef struct vk_driven_watch vk_driven_watch;
struct vk_driven_watch {
    vk_driven_watch *next;
    void (*gone)(vk_driven_watch *w);
};

struct vk_driven {
    vk_driven_kind kind;
    vk_client *core;          /* config, TLS, credentials, IAM refresh; never connects */
    vk_engine *engine;
    pthread_t owner;          /* every call comes from this thread */
    vk_endpoint endpoint;     /* the node (Sentinel: the master last found) */
    char peer[300];           /* the node, for messages */
    bool has_endpoint;        /* endpoint holds a node */
    vk_driven_conn *node;     /* the driver's record of the node's connection */
    /* Sentinel mode: the walk that finds the master before each dial of
     * the node (vk__driven_dial_now), and checks it while connected
     * (vk__driven_check_master); NULL otherwise. */
    vk_seek *seek;
    bool seek_locates;        /* the walk running is for a dial */
    /* Cluster mode: the router, over one engine per node (its records are
     * among the probes); d->engine only keeps the client's timers. NULL
     * otherwise. */
    vk_router *router;
    /* Blocking operations on lanes of their own (driven_lane.c). */
    vk_lane_op *lane_ops;
    uint64_t next_lane_id;
    /* Script runs (driven_script.c): EVALSHA, then EVAL on NOSCRIPT. */
    vk_script_op *script_ops;
    uint64_t next_script_id;
    /* A switch the subscription heard of: the next dial goes there. */
    bool has_announced;
    vk_endpoint announced;
    int depth;                /* public calls running (completions may re-enter) */
    bool free_requested;      /* freed from inside a call: done when it returns */
    bool closing;
    vk_driven_watch *watches;
    /* Releases the driver's own state and the struct (after the engine
     * and core are gone). */
    void (*release)(vk_driven *d);
    /* Sentinel mode: the probes' connections (vk__driven_probe_*), and
     * those closed, freed by vk__driven_free_closed; Cluster mode: the
     * nodes'. */
    vk_driven_conn *probes;
    vk_driven_conn *closed;
    /* Set by the driver: a new record of its own for a probe (NULL: out of
     * memory), with driver filled for its engine; ... */
    vk_driven_conn *(*conn_new)(vk_driven *d, vk_engine_driver *driver);
    /* ... a probe's connection is no longer wanted (close its socket); ... */
    void (*conn_closed)(vk_driven *d, vk_driven_conn *c);
    /* ... the record goes (its engine is freed). */
    void (*conn_free)(vk_driven_conn *c);
    /* The end of a search started by vk__driven_dial_now: VK_OK when the
     * node's record names the master (the driver starts the dial's time,
     * vk__engine_dial_started, and dials it), else the failure for
     * vk__engine_open_failed. */
    void (*located)(vk_driven *d, vk_status st);
};

/* A connection record's common part: its client, endpoint (NULL: none
 * yet), no wake-up. */
void vk__driven_conn_init(vk_driven_conn *c, vk_driven *d, const vk_endpoint *ep, bool is_node);
/* A new connection record of the driver's (conn_new) to ep, with an engine
 * of its own for cfg and credentials, among the probes (closed with
 * vk__driven_probe_close). */
vk_status vk__driven_conn_open(vk_driven *d, const vk_endpoint *ep, const vk_config *cfg,
                               vk_credentials *credentials, vk_driven_conn **out);
/* The node's vk_engine_driver.check_master, for a vk_driven_conn userdata
 * (vk__driven_check_master). */
void vk__driven_conn_check_master(void *userdata);
/* A probe's vk_engine_driver.push, for a vk_driven_conn userdata: to the
 * record's push function. */
void vk__driven_conn_push(void *userdata, redisReply *message);
/* The earliest wake-up wanted by node and the probes (VK_ENGINE_NEVER). */
int64_t vk__driven_next_wake(const vk_driven *d, const vk_driven_conn *node);
/* Ticks the engines (node's and probes') whose wake-up is due. */
void vk__driven_tick(vk_driven *d, vk_driven_conn *node, int64_t now_ms);
/* The probe whose engine is probe closes now (conn_closed) and is freed by
 * the next vk__driven_free_closed (a completion of its engine may be
 * running). */
void vk__driven_probe_close(vk_driven *d, vk_engine *probe);
/* Frees the closed probes; once no call into their engines runs. */
void vk__driven_free_closed(vk_driven *d);

/* ---- driven_lane.c: blocking operations on connections of their own ------ */

/* The ids of operations on lanes have this bit (the engine's and the
 * router's have others). */
#define VK_LANE_ID_BIT (UINT64_C(1) << 62)
/* An engine of its own for one blocking operation to the node at ep: an
 * idle lane kept from before, or a new one (dialled when used). */
vk_status vk__driven_lane_take(vk_driven *d, const vk_endpoint *ep, vk_engine **out);
/* The operation on the lane ended: the lane is kept for the next one when
 * `keep` (it completed, the connection is ready and few are kept), else
 * closed, which ends a wait on the server. */
void vk__driven_lane_give_back(vk_driven *d, vk_engine *lane, bool keep);
/* A blocking command (standalone and Sentinel) on a lane, when the node is
 * known (false: it goes on the shared connection). Its id has
 * VK_LANE_ID_BIT. */
bool vk__driven_lane_command(vk_driven *d, const vk_command *cmd, vk_async_fn fn,
                             void *userdata, uint64_t *id, vk_status *st);
/* The same for a pipeline's batch holding a blocking command (taken over
 * when true). */
bool vk__driven_lane_pipeline(vk_driven *d, vk_pipeline_batch *batch, vk_async_fn fn,
                              void *userdata, uint64_t *id, vk_status *st);
vk_status vk__driven_lane_cancel(vk_driven *d, uint64_t id);
size_t vk__driven_lane_pending(const vk_driven *d);

/* ---- driven_script.c: EVALSHA, then EVAL on NOSCRIPT, as one operation -- */

/* The ids of script runs have this bit. */
#define VK_SCRIPT_ID_BIT (UINT64_C(1) << 61)
/* vk_X_script_run: the EVALSHA request now; its completion sends EVAL when
 * the reply is NOSCRIPT, and fn gets the final reply. */
vk_status vk__driven_script_run(vk_driven *d, const char *function, const vk_script *script,
                                int nkeys, const char *const *keys, const size_t *keylens,
                                int nargs, const char *const *args, const size_t *arglens,
                                vk_async_fn fn, void *userdata, uint64_t *id);
/* Cancels the run's request in flight (its completion runs now). */
vk_status vk__driven_script_cancel(vk_driven *d, uint64_t id);

/* Prepares d (kind, release, conn_new, conn_closed, conn_free and located
 * set by the caller) for cfg, standalone, Sentinel or Cluster; the engine
 * talks to driver. */
vk_status vk__driven_init(vk_driven *d, const vk_config *cfg, const vk_engine_driver *driver);
/* Cancels every operation ("client closed"), frees the engine and the
 * core, then d->release(d). */
void vk__driven_destroy(vk_driven *d);

/* The engine asks to open the node's connection: standalone, the node's
 * record has d's endpoint and peer, and the driver dials it at once
 * (true); Sentinel, the master is looked for first and located() follows,
 * the record's endpoint and peer set when it was found (false). */
bool vk__driven_dial_now(vk_driven *d, vk_driven_conn *node);
/* The node's connection is closed: a search for the master stops. */
void vk__driven_node_closed(vk_driven *d);
/* The engine's check_master: when the sentinels name another master, the
 * node is left (vk__engine_leave_node) and the next dial finds the new
 * one. */
void vk__driven_check_master(vk_driven *d);

void vk__driven_watch(vk_driven *d, vk_driven_watch *w);
/* Before the watcher goes itself (d still live). */
void vk__driven_unwatch(vk_driven *d, vk_driven_watch *w);

/* The checks of every operation call: a live client (VK_ERR_NIL_CLIENT)
 * on its own thread (VK_ERR_INVALID_ARGUMENT). */
vk_status vk__driven_usable(vk_driven *d, const char *function);
bool vk__driven_on_thread(const vk_driven *d, const char *function);
/* The same as a failure: VK_ERR_INVALID_ARGUMENT off the client's thread. */
vk_status vk__driven_check_thread(const vk_driven *d, const char *function);
static inline void vk__driven_enter(vk_driven *d)
{
    d->depth++;
}
/* Ends a call; at the outermost level a requested free happens now (then
 * true: d is gone). */
bool vk__driven_leave(vk_driven *d);
/* A vk_X_free: destroys d now, or once the running call returns. */
void vk__driven_free(vk_driven *d, const char *function);

/* The operations, as the public functions of both drivers give them. */
vk_status vk__driven_command(vk_driven *d, const char *function, int argc,
                             const char *const *argv, const size_t *argvlen, vk_async_fn fn,
                             void *userdata, uint64_t *id);
/* The same; in Cluster mode on the master at `at` (NULL: routed by key as
 * usual; ignored in the other modes, which have one node). */
vk_status vk__driven_command_at(vk_driven *d, const char *function, int argc,
                                const char *const *argv, const size_t *argvlen,
                                const vk_endpoint *at, vk_async_fn fn, void *userdata,
                                uint64_t *id);
vk_status vk__driven_pipeline_new(vk_driven *d, const char *function, vk_pipeline **out);
vk_status vk__driven_pipeline_exec(vk_driven_kind kind, const char *function,
                                   vk_pipeline *pipeline, vk_async_fn fn, void *userdata,
                                   uint64_t *id);
vk_status vk__driven_cancel(vk_driven *d, const char *function, uint64_t id);
/* The same inside a call (no checks): to whichever part owns id. */
vk_status vk__driven_cancel_id(vk_driven *d, uint64_t id);
/* A wait of delay_ms on the client's timer: fn(userdata, VK_OK, NULL) then
 * (VK_ERR_CANCELLED when cancelled or the client is freed first). */
vk_status vk__driven_after(vk_driven *d, const char *function, int64_t delay_ms,
                           vk_async_fn fn, void *userdata, uint64_t *id);
/* vk_X_poll_events: the queued events of the client's core; -1 when the
 * client is not usable here. */
int vk__driven_poll_events(vk_driven *d, const char *function, int max);
/* Operations not complete (vk_X_pending). */
size_t vk__driven_pending(const vk_driven *d);
/* Connected (vk_X_is_connected): the node's connection is ready; Cluster
 * mode: a slot map is in service. */
bool vk__driven_connected(const vk_driven *d);
/* A status snapshot (vk_snapshot): connected, the mode, the node (the
 * master last found), the switches followed and the token refresh state. */
vk_status vk__driven_snapshot(vk_snapshot **out, vk_driven *d, const char *function);
/* The completion every driver gives the engine. */
void vk__driven_complete(void *userdata, vk_async_fn fn, void *op_userdata, vk_status st,
                         redisReply *reply);

#endif /* VK_DRIVEN_H */
