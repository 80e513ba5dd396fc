/*
 * A pipeline's batch and commands (batch.h): releasing them, and reading
 * a batch's replies for the end of its transactions.
 */
#include "engine/batch.h"

#include <stdlib.h>
#include <string.h>

void vk__pipeline_batch_free(vk_pipeline_batch *batch)
{
    free(batch->requests);
    free(batch->ends);
    memset(batch, 0, sizeof *batch);
}

void vk__pipeline_commands_free(vk_pipeline_commands *c)
{
    free(c->commands);
    free(c->bytes);
    free(c->arg_len);
    free((void *)c->args);
    memset(c, 0, sizeof *c);
}

bool vk__transactions_ended(const size_t *ends, size_t ends_len, const redisReply *array)
{
    for (size_t i = 0; i < ends_len; i++) {
        const redisReply *r = array->element[ends[i]];
        if (r->type == REDIS_REPLY_ERROR && (r->len < 9 || memcmp(r->str, "EXECABORT", 9) != 0))
            return false;
    }
    return true;
}

