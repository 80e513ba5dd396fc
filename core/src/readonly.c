/*
 * Commands that only read (or only touch the connection), so that running
 * one twice is harmless: the retry policy may re-send them after the reply
 * was lost. Anything not listed is treated as a write and never re-sent.
 */
#include "retry.h"

#include <stdlib.h>
#include <ctype.h>
#include <string.h>

/* Sorted (upper case) for bsearch. */
static const char *const readonly_commands[] = {
    "BITCOUNT", "BITFIELD_RO", "BITPOS", "DBSIZE", "DUMP", "ECHO", "EVALSHA_RO",
    "EVAL_RO", "EXISTS", "EXPIRETIME", "FCALL_RO", "GEODIST", "GEOHASH", "GEOPOS",
    "GEORADIUSBYMEMBER_RO", "GEORADIUS_RO", "GEOSEARCH", "GET", "GETBIT", "GETRANGE",
    "HEXISTS", "HGET", "HGETALL", "HKEYS", "HLEN", "HMGET", "HRANDFIELD", "HSCAN",
    "HSTRLEN", "HVALS", "KEYS", "LCS", "LINDEX", "LLEN", "LOLWUT", "LPOS", "LRANGE",
    "MGET", "OBJECT", "PEXPIRETIME", "PFCOUNT", "PING", "PTTL", "RANDOMKEY", "SCAN",
    "SCARD", "SDIFF", "SINTER", "SINTERCARD", "SISMEMBER", "SMEMBERS", "SMISMEMBER",
    "SRANDMEMBER", "SSCAN", "STRLEN", "SUBSTR", "SUNION", "TIME", "TOUCH", "TTL", "TYPE",
    "XINFO", "XLEN", "XPENDING", "XRANGE", "XREVRANGE", "ZCARD", "ZCOUNT", "ZDIFF",
    "ZINTER", "ZINTERCARD", "ZLEXCOUNT", "ZMSCORE", "ZRANDMEMBER", "ZRANGE",
    "ZRANGEBYLEX", "ZRANGEBYSCORE", "ZRANK", "ZREVRANGE", "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE", "ZREVRANK", "ZSCAN", "ZSCORE", "ZUNION",
};

typedef struct name_key {
    const char *name;
    size_t len;
} name_key;

static int compare_name(const void *key, const void *element)
{
    const name_key *k = key;
    const char *entry = *(const char *const *)element;
    size_t entry_len = strlen(entry);
    size_t n = k->len < entry_len ? k->len : entry_len;
    for (size_t i = 0; i < n; i++) {
        /* Upper-case both sides so the order matches the table's. */
        int a = toupper((unsigned char)k->name[i]);
        int b = (unsigned char)entry[i];
        if (a != b)
            return a - b;
    }
    return k->len < entry_len ? -1 : k->len > entry_len ? 1 : 0;
}

bool vk__command_is_readonly(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > 32)
        return false;
    name_key key = {name, len};
    return bsearch(&key, readonly_commands,
                   sizeof readonly_commands / sizeof readonly_commands[0],
                   sizeof readonly_commands[0], compare_name) != NULL;
}
