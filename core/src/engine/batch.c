/*
 * A pipeline's batch (batch.h): releasing it, and reading its replies for
 * the end of its transactions.
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

bool vk__transactions_ended(const size_t *ends, size_t ends_len, const redisReply *array)
{
    for (size_t i = 0; i < ends_len; i++) {
        const redisReply *r = array->element[ends[i]];
        if (r->type == REDIS_REPLY_ERROR && (r->len < 9 || memcmp(r->str, "EXECABORT", 9) != 0))
            return false;
    }
    return true;
}

