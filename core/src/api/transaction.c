/*
 * Transactions (transaction.h). A transaction is sent as one write,
 * MULTI, its commands, EXEC, on one connection, and its replies are read
 * in order: OK, QUEUED for each command (or the refusal of one that could
 * not be queued), then EXEC's array of results. The caller gets EXEC's
 * array, as redis-py, go-redis and redis-rb give it.
 */
#include "api/transaction.h"

#include <string.h>

const char vk__multi_request[] = "*1\r\n$5\r\nMULTI\r\n";
const char vk__exec_request[] = "*1\r\n$4\r\nEXEC\r\n";

bool vk__exec_aborted(const redisReply *r)
{
    return r->type == REDIS_REPLY_NIL;
}

static bool is_error(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR;
}

vk_status vk__transaction_result(redisReply *replies, redisReply **out, bool *ended)
{
    *out = NULL;
    size_t count = replies->elements - 2;
    redisReply *multi = replies->element[0];
    redisReply *exec = replies->element[count + 1];
    /* EXEC ends the transaction and forgets the watched keys whatever it
     * answers, unless it was refused itself (an error other than
     * EXECABORT), in which case nothing is known. */
    *ended = !is_error(exec) || (exec->len >= 9 && memcmp(exec->str, "EXECABORT", 9) == 0);
    if (is_error(multi)) {
        /* The commands then ran one by one, outside any transaction. */
        *ended = false;
        return vk__fail(VK_ERR_SERVER, "MULTI was refused: %.*s", (int)multi->len, multi->str);
    }
    if (vk__exec_aborted(exec))
        return vk__fail(VK_ERR_WATCH_CONFLICT, NULL);
    if (is_error(exec)) {
        for (size_t i = 1; i <= count; i++) {
            const redisReply *r = replies->element[i];
            if (is_error(r))
                return vk__fail(VK_ERR_SERVER,
                                "transaction discarded: command %zu was refused: %.*s", i,
                                (int)r->len, r->str);
        }
        return vk__fail(VK_ERR_SERVER, "EXEC: %.*s", (int)exec->len, exec->str);
    }
    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != count) {
        *ended = false;
        return vk__fail(VK_ERR_PROTOCOL, "EXEC answered with no array of %zu results", count);
    }
    replies->element[count + 1] = NULL;
    *out = exec;
    return VK_OK;
}
