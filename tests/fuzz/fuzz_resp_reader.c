/*
 * Fuzzes the RESP reply path: bytes from a server go through the hiredis
 * reader that vkclient's connections use, split into chunks the way reads
 * from a socket split them. Every reply that comes out is walked twice:
 * through hiredis's structure, to check that lengths and nesting are sound,
 * and through vkclient's public reply accessors, which must agree with it
 * (a vk_reply is the reply tree the reader built, handed out as is). The
 * reader must reject, not crash on, malformed input, and refuse replies that
 * announce more array elements than vkclient accepts instead of allocating
 * for them.
 */
#include "vkclient.h"
#include "conn.h"

#include <hiredis/hiredis.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t walk(const redisReply *r, int depth)
{
    if (!r || depth > 10000)
        abort();
    size_t nodes = 1;
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        /* The reader NUL-terminates every string after len bytes. */
        if (r->str == NULL || r->str[r->len] != '\0')
            abort();
        break;
    case REDIS_REPLY_ARRAY:
        if (r->elements > 0 && r->element == NULL)
            abort();
        for (size_t i = 0; i < r->elements; i++)
            nodes += walk(r->element[i], depth + 1);
        break;
    case REDIS_REPLY_INTEGER:
    case REDIS_REPLY_NIL:
        break;
    default:
        abort();
    }
    return nodes;
}

/* The public accessors must report what the reader built. */
static void check_accessors(const redisReply *r)
{
    const vk_reply *v = (const vk_reply *)r;
    size_t len = 1;
    const char *str = vk_reply_get_string(v, &len);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR: {
        vk_reply_type want = r->type == REDIS_REPLY_STRING   ? VK_REPLY_STRING
                             : r->type == REDIS_REPLY_STATUS ? VK_REPLY_STATUS
                                                             : VK_REPLY_ERROR;
        if (vk_reply_get_type(v) != want || str != r->str || len != (size_t)r->len)
            abort();
        break;
    }
    case REDIS_REPLY_ARRAY:
        if (vk_reply_get_type(v) != VK_REPLY_ARRAY || str != NULL || len != 0 ||
            vk_reply_get_length(v) != r->elements ||
            vk_reply_get_element(v, r->elements) != NULL)
            abort();
        for (size_t i = 0; i < r->elements; i++) {
            if (vk_reply_get_element(v, i) != (const vk_reply *)r->element[i])
                abort();
            check_accessors(r->element[i]);
        }
        break;
    case REDIS_REPLY_INTEGER:
        if (vk_reply_get_type(v) != VK_REPLY_INTEGER || vk_reply_get_integer(v) != r->integer)
            abort();
        break;
    case REDIS_REPLY_NIL:
        if (vk_reply_get_type(v) != VK_REPLY_NIL || str != NULL || len != 0)
            abort();
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* The first byte picks the chunk size: 1 byte at a time up to 255. */
    size_t chunk = data[0] ? data[0] : 1;
    data++;
    size--;

    redisReader *reader = vk__reader_new();
    vk_reply_budget budget = {0, false};
    if (!reader)
        return 0;
    /* Keep the reader's buffer small so the compaction path runs too. */
    reader->maxbuf = 64;
    int failed = 0;
    for (size_t off = 0; off < size && !failed; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        if (redisReaderFeed(reader, (const char *)data + off, n) != REDIS_OK) {
            failed = 1;
            break;
        }
        for (;;) {
            void *reply = NULL;
            if (vk__reader_get_reply(reader, &budget, &reply) != REDIS_OK) {
                /* A protocol error must come with a message. */
                if (reader->errstr[0] == '\0')
                    abort();
                failed = 1;
                break;
            }
            if (!reply)
                break;
            walk(reply, 0);
            check_accessors(reply);
            vk_reply_free(reply);
        }
    }
    redisReaderFree(reader);
    return 0;
}
