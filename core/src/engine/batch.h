/*
 * A pipeline's commands as the engine sends them: encoded back to back,
 * one reply each, with the places of the transactions' ends (batch.c).
 */
#ifndef VK_BATCH_H
#define VK_BATCH_H

#include "proto/proto.h"

/* A pipeline's commands, taken out of it. */
typedef struct vk_pipeline_batch {
    char *requests;        /* every command's RESP, back to back */
    size_t len;
    size_t count;          /* commands, one reply each */
    size_t *ends;          /* per transaction: the index of its EXEC or DISCARD */
    size_t ends_len;
} vk_pipeline_batch;

void vk__pipeline_batch_free(vk_pipeline_batch *batch);
/* True when every transaction (MULTI ... EXEC or DISCARD) has surely ended
 * on the server, given the replies: its EXEC answered with an array (or
 * nil), EXECABORT (the server discarded it), or its DISCARD with OK. Any
 * other error (a server that refused the EXEC or DISCARD itself) may have
 * left the connection inside MULTI. ends: the index of each transaction's
 * EXEC or DISCARD among the replies. */
bool vk__transactions_ended(const size_t *ends, size_t ends_len, const redisReply *array);
static inline bool vk__pipeline_batch_ended(const vk_pipeline_batch *batch,
                                           const redisReply *array)
{
    return vk__transactions_ended(batch->ends, batch->ends_len, array);
}

#endif /* VK_BATCH_H */
