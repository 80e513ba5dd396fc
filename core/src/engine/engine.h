/*
 * The engine of one node's multiplexed connection, without I/O: it takes
 * operations (commands and pipelines), decides when the connection is
 * opened, sends the handshake and a new token's AUTH in line with the
 * requests, matches replies (through the mux), applies the retry policy
 * and the reconnect rate limit, and watches the read and write timeouts.
 * It makes no system call, reads no clock (every entry point takes the
 * current monotonic time) and starts no thread.
 *
 * What it needs done, it asks of its driver through vk_engine_driver:
 * open a connection, close it, write (the bytes are in vk__engine_output),
 * wake it at a time, and an operation completed. The driver answers with
 * vk__engine_opened / _open_failed / _wrote / _feed / _lost / _tick.
 * Driver functions may be called from inside any entry point; a completion
 * may call back into the engine (submit, cancel), but must not free it.
 */
#ifndef VK_ENGINE_H
#define VK_ENGINE_H

#include "proto/command.h"
#include "engine/batch.h"
#include "engine/pool.h"

#include "vkclient_async.h"

typedef struct vk_engine vk_engine;

/* No wake-up wanted. */
#define VK_ENGINE_NEVER INT64_MAX

typedef struct vk_engine_driver {
    void *userdata;
    /* Start opening a connection to the node (TCP, then TLS when the
     * config has it); answer with vk__engine_opened or _open_failed. */
    void (*open)(void *userdata);
    /* Close the connection at once (it failed, or the engine is done with
     * it); no answer. */
    void (*close)(void *userdata);
    /* vk__engine_output has bytes to write. */
    void (*want_write)(void *userdata);
    /* Call vk__engine_tick at (or after) at_ms; VK_ENGINE_NEVER: no
     * wake-up. Replaces the previous request. */
    void (*wake)(void *userdata, int64_t at_ms);
    /* An operation completed: the driver calls fn(op_userdata, ...) with
     * status VK_OK and its reply (fn owns it), or a failure (the
     * vk_last_error() detail set). */
    void (*complete)(void *userdata, vk_async_fn fn, void *op_userdata, vk_status status,
                     redisReply *reply);
    /* Optional: what a dial that runs out of time is still doing, for its
     * message ("lookup <host>: name resolution timed out"), or NULL. */
    const char *(*dial_stage)(void *userdata);
    /* Optional: a pub/sub message on the connection (the driver owns it);
     * without it, a message fails the connection. */
    void (*push)(void *userdata, redisReply *message);
    /* Sentinel mode: check with the sentinels that the node is still the
     * master (about once a second while the connection is up); when it is
     * not, the driver calls vk__engine_leave_node. */
    void (*check_master)(void *userdata);
} vk_engine_driver;

/* All borrowed: they outlive the engine. */
vk_status vk__engine_new(vk_engine **out, const vk_config *cfg, vk_credentials *credentials,
                         const char *peer, const vk_engine_driver *driver);
/* Sentinel mode, before any operation: the handshake checks that the node
 * is a master (ROLE); the driver's open() first locates the master (and
 * names it with vk__engine_set_peer), then calls vk__engine_dial_started,
 * from which the dial timeout counts; a node that answers READONLY or
 * MASTERDOWN is left once its line is empty (the command is retried by
 * the retry budget), and the next open locates the master again. */
void vk__engine_follow_master(vk_engine *e);
/* Cluster mode, before any operation: the router decides every retry.
 * Refusals (TRYAGAIN, ...) complete as replies, and a failure completes
 * at once, vk__engine_may_resend telling whether it may be sent again. */
void vk__engine_route(vk_engine *e);
/* In a routed engine's failure completion: nothing of the operation ran
 * (or it only reads) and another attempt may help. */
bool vk__engine_may_resend(const vk_engine *e);
/* Sentinel mode: the node is no longer the master: as after READONLY. */
void vk__engine_leave_node(vk_engine *e, int64_t now_ms);
/* The node's name in messages, from now on. */
void vk__engine_set_peer(vk_engine *e, const char *peer);
/* Sentinel mode: the master is located, the dial starts now. */
void vk__engine_dial_started(vk_engine *e, int64_t now_ms);
/* Every operation not complete completes with VK_ERR_CANCELLED and the
 * detail `why`; the connection is closed. NULL-safe. */
void vk__engine_free(vk_engine *e, const char *why);

/* Queues a command (its arguments are encoded at once) or a pipeline's
 * batch (taken over, freed by the engine). *id names it for cancel. */
vk_status vk__engine_command(vk_engine *e, const vk_command *cmd, vk_async_fn fn,
                             void *op_userdata, int64_t now_ms, uint64_t *id);
vk_status vk__engine_pipeline(vk_engine *e, vk_pipeline_batch *batch, vk_async_fn fn,
                              void *op_userdata, int64_t now_ms, uint64_t *id);
/* A wait: completes with VK_OK and no reply at (or after) at_ms, on a
 * tick; no connection is involved. Cancelled like any operation. */
vk_status vk__engine_after(vk_engine *e, int64_t at_ms, vk_async_fn fn, void *op_userdata,
                           int64_t now_ms, uint64_t *id);
/* VK_OK when id was in flight: it completed with VK_ERR_CANCELLED. */
vk_status vk__engine_cancel(vk_engine *e, uint64_t id, int64_t now_ms);
size_t vk__engine_pending(const vk_engine *e);
bool vk__engine_ready(const vk_engine *e);

/* ---- from the driver ---------------------------------------------------- */

/* The connection is open (TLS done): the handshake starts. */
void vk__engine_opened(vk_engine *e, int64_t now_ms);
/* The connection could not be opened (status and detail set). */
void vk__engine_open_failed(vk_engine *e, vk_status status, int64_t now_ms);
/* The bytes to write now; *len 0 when none. Valid until the next call. */
const char *vk__engine_output(const vk_engine *e, size_t *len);
void vk__engine_wrote(vk_engine *e, size_t n, int64_t now_ms);
/* Bytes read from the connection. */
void vk__engine_feed(vk_engine *e, const char *bytes, size_t len, int64_t now_ms);
/* The open connection failed or closed (status and detail set). */
void vk__engine_lost(vk_engine *e, vk_status status, int64_t now_ms);
/* The time asked for through wake() has come. */
void vk__engine_tick(vk_engine *e, int64_t now_ms);

/* ---- connection reuse (a host's keepalive pool, bytes mode) ------------- */

/* The connection is open, taken from the host's keepalive pool, where it
 * went after a release (vk__engine_release) of a connection logged in
 * with the credentials of `generation`: no handshake is sent (Sentinel
 * mode: only ROLE); with newer credentials, their AUTH goes in line. */
void vk__engine_opened_reused(vk_engine *e, uint64_t generation, int64_t now_ms);
/* Clean, so that another client may take the connection as it is: ready
 * (handshake done), nothing in flight or queued (no reply or cancelled
 * request awaited, no partial output), not subscribed, not in a
 * transaction, not left (Sentinel), not failed, and logged in with the
 * current credentials. */
bool vk__engine_idle(const vk_engine *e);
/* Gives an idle connection up for the host's pool (one idle but logged in
 * with credentials replaced since sends their AUTH first): a PING goes out, and
 * once its reply is in, if the connection is still idle, the driver's
 * close() runs with vk__engine_closing_clean() true and nothing fails
 * (an operation queued meanwhile keeps it). True when started (or
 * already running), false when the connection is not idle. The PING is
 * what makes this work for a host whose read cannot be interrupted: its
 * reader returns with the reply. */
bool vk__engine_release(vk_engine *e, int64_t now_ms);
/* Inside the driver's close(): the connection is given up clean. */
bool vk__engine_closing_clean(const vk_engine *e);
/* The credentials generation the connection logged in with. */
uint64_t vk__engine_auth_generation(const vk_engine *e);

#endif /* VK_ENGINE_H */
