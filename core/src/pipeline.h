/*
 * What the event-loop client needs of a pipeline (pipeline.c): its
 * commands taken out as one encoded batch, and the check that decides
 * whether the connection is still outside MULTI afterwards.
 */
#ifndef VK_PIPELINE_H
#define VK_PIPELINE_H

#include "internal.h"

#include <hiredis/hiredis.h>

/* A pipeline's commands, taken out of it: the pipeline is empty again. */
typedef struct vk_pipeline_batch {
    char *requests;        /* every command's RESP, back to back */
    size_t len;
    size_t count;          /* commands, one reply each */
    size_t *ends;          /* per transaction: the index of its EXEC or DISCARD */
    size_t ends_len;
} vk_pipeline_batch;

/* A pipeline of client that only vk_async_pipeline_exec() runs, for owner
 * (the event-loop client, which frees client last). */
vk_status vk__pipeline_new_detached(vk_pipeline **out, vk_client *client, void *owner);
/* The owner of a detached pipeline while its client lives, else NULL. */
void *vk__pipeline_owner(const vk_pipeline *p);
/* The pipeline's refusals, as vk_pipeline_exec() gives them; then its
 * commands move into batch (count 0: nothing to send). */
vk_status vk__pipeline_take(vk_pipeline *p, vk_pipeline_batch *batch);
void vk__pipeline_batch_free(vk_pipeline_batch *batch);
/* True when every transaction of the batch has surely ended on the server,
 * given the array of its replies. */
bool vk__pipeline_batch_ended(const vk_pipeline_batch *batch, const redisReply *array);
/* An empty array reply of count elements that vk__reply_free releases
 * whole. */
redisReply *vk__array_reply_new(size_t count);

#endif /* VK_PIPELINE_H */
