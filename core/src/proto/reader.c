/*
 * The RESP reader: hiredis's parser with two changes to the objects it
 * builds.
 *
 * A guard: an array announces its length before any element arrives, and
 * hiredis allocates the element table at once, so a peer announcing
 * "*2000000000" (or a few nested arrays of that size) would make the client
 * allocate gigabytes for a reply it never receives. The element tables of
 * one reply are capped; a reply over the cap is a protocol error.
 *
 * A saving: a string reply (bulk, status, error) is one allocation, its
 * bytes right after the redisReply, where hiredis makes two. Replies are
 * therefore freed with vk__reply_free(), never with freeReplyObject().
 */
#include "proto/proto.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static redisReplyObjectFunctions capped_functions;
#if HIREDIS_MAJOR >= 1
static void *(*default_create_array)(const redisReadTask *, size_t);
static void *capped_create_array(const redisReadTask *task, size_t elements)
#else
static void *(*default_create_array)(const redisReadTask *, int);
static void *capped_create_array(const redisReadTask *task, int elements)
#endif
{
    /* The budget of the reply being parsed: the reader's privdata, which
     * hiredis copies into every read task. */
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

/* The bytes of a string made by compact_create_string. */
static char *inline_str(redisReply *r)
{
    return (char *)(r + 1);
}

#if HIREDIS_MAJOR < 1
/* hiredis 0.14's string types (bulk, status, error), in one allocation.
 * (hiredis 1.x adds types with extra fields; its own function is kept.) */
static void *compact_create_string(const redisReadTask *task, char *str, size_t len)
{
    if (len > SIZE_MAX - sizeof(redisReply) - 1)
        return NULL;
    redisReply *r = malloc(sizeof *r + len + 1);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof *r);
    r->type = task->type;
    r->str = inline_str(r);
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    if (task->parent != NULL) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}
#endif

void vk__reply_free(void *reply)
{
    redisReply *r = reply;
    if (r == NULL)
        return;
    if (r->element != NULL) {
        for (size_t i = 0; i < r->elements; i++)
            vk__reply_free(r->element[i]);
        free(r->element);
    }
    if (r->str != NULL && r->str != inline_str(r))
        free(r->str);
    free(r);
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
#if HIREDIS_MAJOR < 1
    capped_functions.createString = compact_create_string;
#endif
    capped_functions.freeObject = vk__reply_free;
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
