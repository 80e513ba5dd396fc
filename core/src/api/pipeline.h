/*
 * What the engine's drivers need of a pipeline (pipeline.c): its commands
 * taken out as one encoded batch, or in cluster mode as arguments for the
 * router (batch.h).
 */
#ifndef VK_PIPELINE_H
#define VK_PIPELINE_H

#include "engine/batch.h"
#include "engine/conn.h"

/* A pipeline of client that only vk_async_pipeline_exec() runs, for owner
 * (the event-loop client, which frees client last). */
vk_status vk__pipeline_new_detached(vk_pipeline **out, vk_client *client, void *owner);
/* The owner of a detached pipeline while its client lives, else NULL. */
void *vk__pipeline_owner(const vk_pipeline *p);
/* The pipeline's refusals, as vk_pipeline_exec() gives them; then its
 * commands move into batch (count 0: nothing to send). */
vk_status vk__pipeline_take(vk_pipeline *p, vk_pipeline_batch *batch);

/* As vk__pipeline_take, for a cluster pipeline (its commands kept as
 * arguments, for the router): its refusals, then its
 * commands with their bytes (count 0: nothing to send). */
vk_status vk__pipeline_take_commands(vk_pipeline *p, vk_pipeline_commands *out);

/* Runs the pipeline on a session's connection (session.c): its refusals
 * first, and in cluster mode every key must hash to slot, the session's.
 * A transaction pipeline is framed by MULTI and EXEC and gives EXEC's
 * array, and is refused while the session is inside MULTI (in_multi).
 * *ended: the connection is surely outside any transaction on the server.
 * The pipeline is emptied. */
vk_status vk__pipeline_run_pinned(vk_pipeline *p, vk_client *client, vk_conn *conn, int slot,
                                  bool in_multi, redisReply **out, vk_context *ctx,
                                  bool *ended);

#endif /* VK_PIPELINE_H */
