/*
 * The RESP reader: hiredis's parser with one guard added. An array announces
 * its length before any element arrives, and hiredis allocates the element
 * table at once, so a peer announcing "*2000000000" (or a few nested arrays
 * of that size) would make the client allocate gigabytes for a reply it
 * never receives. The element tables of one reply are capped; a reply over
 * the cap is a protocol error.
 */
#include "conn.h"

#include <pthread.h>

/* The budget of the reply being parsed travels as the reader's privdata,
 * which hiredis copies into every read task. */

static redisReplyObjectFunctions capped_functions;
#if HIREDIS_MAJOR >= 1
static void *(*default_create_array)(const redisReadTask *, size_t);
static void *capped_create_array(const redisReadTask *task, size_t elements)
#else
static void *(*default_create_array)(const redisReadTask *, int);
static void *capped_create_array(const redisReadTask *task, int elements)
#endif
{
    vk_reply_budget *b = task->privdata;
    if (b != NULL) {
        if (task->parent == NULL)
            b->elements = 0;   /* a new top-level reply */
        if (elements < 0 || (size_t)elements > VK_MAX_REPLY_ELEMENTS - b->elements) {
            b->exceeded = true;
            return NULL;        /* hiredis reports it as out of memory */
        }
        b->elements += (size_t)elements;
    }
    return default_create_array(task, elements);
}

static pthread_once_t functions_once = PTHREAD_ONCE_INIT;

/* hiredis keeps its default functions private: borrow them from a reader. */
static void init_capped_functions(void)
{
    redisReader *probe = redisReaderCreate();
    if (probe == NULL)
        return;
    capped_functions = *probe->fn;
    default_create_array = capped_functions.createArray;
    capped_functions.createArray = capped_create_array;
    redisReaderFree(probe);
}

redisReader *vk__reader_new(void)
{
    pthread_once(&functions_once, init_capped_functions);
    if (default_create_array == NULL)
        return NULL;
    return redisReaderCreateWithFunctions(&capped_functions);
}

int vk__reader_get_reply(redisReader *r, vk_reply_budget *budget, void **reply)
{
    r->privdata = budget;
    return redisReaderGetReply(r, reply);
}
