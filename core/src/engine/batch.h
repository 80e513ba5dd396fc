/*
 * A pipeline's commands as the engine sends them: encoded back to back,
 * one reply each, with the places of the transactions' ends (batch.c).
 */
#ifndef VK_BATCH_H
#define VK_BATCH_H

#include "proto/proto.h"
#include "proto/command.h"

/* A pipeline's commands, taken out of it. */
typedef struct vk_pipeline_batch {
    char *requests;        /* every command's RESP, back to back */
    size_t len;
    size_t count;          /* commands, one reply each */
    size_t *ends;          /* per transaction: the index of its EXEC or DISCARD */
    size_t ends_len;
    /* VK_COMMAND_BLOCKING when a command waits on the server, block_ms then
     * their waits together (0: one waits without limit). */
    unsigned flags;
    int64_t block_ms;
    /* A transaction pipeline's: MULTI and EXEC around the commands (count
     * includes them; ends holds EXEC's index), and the caller wants EXEC's
     * results (vk__transaction_result) rather than every reply. */
    bool transaction;
} vk_pipeline_batch;

/* Adds a command's wait to a batch's (flags, block_ms). */
static inline void vk__batch_add_wait(unsigned *flags, int64_t *block_ms, const vk_command *cmd)
{
    if (!(cmd->flags & VK_COMMAND_BLOCKING))
        return;
    bool unbounded = (*flags & VK_COMMAND_BLOCKING) && *block_ms == 0;
    *flags |= VK_COMMAND_BLOCKING;
    *block_ms = unbounded || cmd->block_ms == 0 ? 0 : *block_ms + cmd->block_ms;
}

void vk__pipeline_batch_free(vk_pipeline_batch *batch);

/* A cluster pipeline's commands, kept as arguments for the router to
 * split by node, with the bytes they point into. */
typedef struct vk_pipeline_commands {
    vk_command *commands;     /* argv and argvlen point into the memory below */
    size_t count;
    char *bytes;              /* every argument's bytes */
    size_t *arg_len;          /* every argument's length */
    const char **args;        /* every argument's start */
} vk_pipeline_commands;

void vk__pipeline_commands_free(vk_pipeline_commands *c);
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
