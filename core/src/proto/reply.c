/*
 * Reply accessors. A vk_reply is hiredis's redisReply: the tree hiredis's
 * reader builds (with the object functions of reader.c) is handed out as
 * is, so reading a reply costs nothing.
 */
#include "proto/proto.h"

#include <hiredis/hiredis.h>

#define AS_REDIS(reply) ((const redisReply *)(const void *)(reply))

VK_API void vk_reply_free(vk_reply *reply)
{
    if (reply != NULL)
        vk__reply_free(reply);
}

VK_API vk_reply_type vk_reply_get_type(const vk_reply *reply)
{
    if (reply == NULL)
        return VK_REPLY_NONE;
    switch (AS_REDIS(reply)->type) {
    case REDIS_REPLY_STRING: return VK_REPLY_STRING;
    case REDIS_REPLY_ARRAY: return VK_REPLY_ARRAY;
    case REDIS_REPLY_INTEGER: return VK_REPLY_INTEGER;
    case REDIS_REPLY_NIL: return VK_REPLY_NIL;
    case REDIS_REPLY_STATUS: return VK_REPLY_STATUS;
    case REDIS_REPLY_ERROR: return VK_REPLY_ERROR;
#if HIREDIS_MAJOR >= 1
    case REDIS_REPLY_DOUBLE: return VK_REPLY_DOUBLE;
    case REDIS_REPLY_BOOL: return VK_REPLY_BOOL;
    case REDIS_REPLY_MAP: return VK_REPLY_MAP;
    case REDIS_REPLY_SET: return VK_REPLY_SET;
    case REDIS_REPLY_ATTR: return VK_REPLY_ATTR;
    case REDIS_REPLY_PUSH: return VK_REPLY_PUSH;
    case REDIS_REPLY_BIGNUM: return VK_REPLY_BIGNUM;
    case REDIS_REPLY_VERB: return VK_REPLY_VERB;
#endif
    default: return (vk_reply_type)0;
    }
}

static bool is_aggregate(vk_reply_type type)
{
    return type == VK_REPLY_ARRAY || type == VK_REPLY_MAP || type == VK_REPLY_SET ||
           type == VK_REPLY_ATTR || type == VK_REPLY_PUSH;
}

VK_API const char *vk_reply_get_string(const vk_reply *reply, size_t *len)
{
    vk_reply_type type = vk_reply_get_type(reply);
    bool has_bytes = type == VK_REPLY_STRING || type == VK_REPLY_STATUS ||
                     type == VK_REPLY_ERROR || type == VK_REPLY_BIGNUM ||
                     type == VK_REPLY_VERB || type == VK_REPLY_DOUBLE;
    if (!has_bytes || AS_REDIS(reply)->str == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = AS_REDIS(reply)->len;
    return AS_REDIS(reply)->str;
}

VK_API long long vk_reply_get_integer(const vk_reply *reply)
{
    vk_reply_type type = vk_reply_get_type(reply);
    if (type == VK_REPLY_INTEGER || type == VK_REPLY_BOOL)
        return AS_REDIS(reply)->integer;
    return 0;
}

VK_API double vk_reply_get_double(const vk_reply *reply)
{
    vk_reply_type type = vk_reply_get_type(reply);
    if (type == VK_REPLY_INTEGER)
        return (double)AS_REDIS(reply)->integer;
#if HIREDIS_MAJOR >= 1
    if (type == VK_REPLY_DOUBLE)
        return AS_REDIS(reply)->dval;
#endif
    return 0;
}

VK_API size_t vk_reply_get_length(const vk_reply *reply)
{
    if (!is_aggregate(vk_reply_get_type(reply)))
        return 0;
    return AS_REDIS(reply)->elements;
}

VK_API const vk_reply *vk_reply_get_element(const vk_reply *reply, size_t index)
{
    if (index >= vk_reply_get_length(reply))
        return NULL;
    return (const vk_reply *)(const void *)AS_REDIS(reply)->element[index];
}

/* An array reply built the way hiredis builds its own, so vk_reply_free
 * (vk__reply_free) releases it and every element. */
redisReply *vk__array_reply_new(size_t count)
{
    redisReply *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->type = REDIS_REPLY_ARRAY;
    r->elements = count;
    if (count > 0 && (r->element = calloc(count, sizeof *r->element)) == NULL) {
        free(r);
        return NULL;
    }
    return r;
}
