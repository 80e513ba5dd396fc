/*
 * Where a command's keys are, so that it can be sent to the master of
 * their slot. The common commands are described here; for any other the
 * server is asked (COMMAND GETKEYS), so new or module commands route right
 * too, at the cost of a round trip.
 */
#include "topology/cluster.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum key_layout {
    KEYLESS,      /* no key: any master */
    RANGE,        /* keys at first, first + step, ... up to last */
    NUMKEYS,      /* a count at `first`, then that many keys; plus a key at
                   * `last` when it is positive (the *STORE destination) */
    STREAMS       /* after the STREAMS keyword: n keys then n IDs */
} key_layout;

typedef struct key_spec {
    const char *name;
    key_layout layout;
    int first;
    int last;     /* RANGE: negative counts from the end (-1: last argument) */
    int step;
} key_spec;

#define ONE(name) {name, RANGE, 1, 1, 1}
#define TWO(name) {name, RANGE, 1, 2, 1}
#define ALL(name) {name, RANGE, 1, -1, 1}
#define NONE(name) {name, KEYLESS, 0, 0, 0}

/* Sorted once at first use (by upper-case name) for bsearch. */
static key_spec specs[] = {
    /* strings and generic keys */
    ONE("GET"), ONE("SET"), ONE("SETNX"), ONE("SETEX"), ONE("PSETEX"), ONE("GETSET"),
    ONE("GETDEL"), ONE("GETEX"), ONE("APPEND"), ONE("INCR"), ONE("DECR"), ONE("INCRBY"),
    ONE("DECRBY"), ONE("INCRBYFLOAT"), ONE("STRLEN"), ONE("GETRANGE"), ONE("SETRANGE"),
    ONE("SUBSTR"), ALL("DEL"), ALL("UNLINK"), ALL("EXISTS"), ALL("TOUCH"), ALL("MGET"),
    {"MSET", RANGE, 1, -1, 2}, {"MSETNX", RANGE, 1, -1, 2}, ONE("EXPIRE"), ONE("PEXPIRE"),
    ONE("EXPIREAT"), ONE("PEXPIREAT"), ONE("TTL"), ONE("PTTL"), ONE("PERSIST"),
    ONE("EXPIRETIME"), ONE("PEXPIRETIME"), ONE("TYPE"), ONE("DUMP"), ONE("RESTORE"),
    TWO("RENAME"), TWO("RENAMENX"), TWO("COPY"), {"OBJECT", RANGE, 2, 2, 1}, TWO("LCS"),
    ONE("SORT_RO"), ALL("WATCH"),
    /* hashes */
    ONE("HSET"), ONE("HSETNX"), ONE("HGET"), ONE("HMSET"), ONE("HMGET"), ONE("HDEL"),
    ONE("HEXISTS"), ONE("HGETALL"), ONE("HKEYS"), ONE("HVALS"), ONE("HLEN"),
    ONE("HINCRBY"), ONE("HINCRBYFLOAT"), ONE("HSTRLEN"), ONE("HRANDFIELD"), ONE("HSCAN"),
    /* lists */
    ONE("LPUSH"), ONE("RPUSH"), ONE("LPUSHX"), ONE("RPUSHX"), ONE("LPOP"), ONE("RPOP"),
    ONE("LLEN"), ONE("LRANGE"), ONE("LINDEX"), ONE("LSET"), ONE("LREM"), ONE("LTRIM"),
    ONE("LINSERT"), ONE("LPOS"), TWO("RPOPLPUSH"), TWO("LMOVE"), TWO("BLMOVE"),
    TWO("BRPOPLPUSH"), {"BLPOP", RANGE, 1, -2, 1}, {"BRPOP", RANGE, 1, -2, 1},
    /* sets */
    ONE("SADD"), ONE("SREM"), ONE("SMEMBERS"), ONE("SISMEMBER"), ONE("SMISMEMBER"),
    ONE("SCARD"), ONE("SPOP"), ONE("SRANDMEMBER"), ONE("SSCAN"), TWO("SMOVE"),
    ALL("SUNION"), ALL("SINTER"), ALL("SDIFF"), ALL("SUNIONSTORE"), ALL("SINTERSTORE"),
    ALL("SDIFFSTORE"),
    /* sorted sets */
    ONE("ZADD"), ONE("ZREM"), ONE("ZSCORE"), ONE("ZMSCORE"), ONE("ZINCRBY"), ONE("ZCARD"),
    ONE("ZCOUNT"), ONE("ZRANGE"), ONE("ZREVRANGE"), ONE("ZRANGEBYSCORE"),
    ONE("ZREVRANGEBYSCORE"), ONE("ZRANGEBYLEX"), ONE("ZREVRANGEBYLEX"), ONE("ZLEXCOUNT"),
    ONE("ZRANK"), ONE("ZREVRANK"), ONE("ZREMRANGEBYRANK"), ONE("ZREMRANGEBYSCORE"),
    ONE("ZREMRANGEBYLEX"), ONE("ZPOPMIN"), ONE("ZPOPMAX"), ONE("ZRANDMEMBER"),
    ONE("ZSCAN"), TWO("ZRANGESTORE"), {"BZPOPMIN", RANGE, 1, -2, 1},
    {"BZPOPMAX", RANGE, 1, -2, 1},
    /* streams */
    ONE("XADD"), ONE("XLEN"), ONE("XRANGE"), ONE("XREVRANGE"), ONE("XDEL"), ONE("XTRIM"),
    ONE("XACK"), ONE("XCLAIM"), ONE("XAUTOCLAIM"), ONE("XPENDING"), ONE("XSETID"),
    {"XGROUP", RANGE, 2, 2, 1}, {"XINFO", RANGE, 2, 2, 1}, {"XREAD", STREAMS, 0, 0, 0},
    {"XREADGROUP", STREAMS, 0, 0, 0},
    /* HyperLogLog, bits, geo */
    ONE("PFADD"), ALL("PFCOUNT"), ALL("PFMERGE"), ONE("SETBIT"), ONE("GETBIT"),
    ONE("BITCOUNT"), ONE("BITPOS"), ONE("BITFIELD"), ONE("BITFIELD_RO"),
    {"BITOP", RANGE, 2, -1, 1}, ONE("GEOADD"), ONE("GEODIST"), ONE("GEOHASH"),
    ONE("GEOPOS"), ONE("GEOSEARCH"), ONE("GEORADIUS_RO"), ONE("GEORADIUSBYMEMBER_RO"),
    TWO("GEOSEARCHSTORE"),
    /* scripts, functions and numkeys-style commands */
    {"EVAL", NUMKEYS, 2, 0, 0}, {"EVALSHA", NUMKEYS, 2, 0, 0}, {"EVAL_RO", NUMKEYS, 2, 0, 0},
    {"EVALSHA_RO", NUMKEYS, 2, 0, 0}, {"FCALL", NUMKEYS, 2, 0, 0},
    {"FCALL_RO", NUMKEYS, 2, 0, 0}, {"ZUNIONSTORE", NUMKEYS, 2, 1, 0},
    {"ZINTERSTORE", NUMKEYS, 2, 1, 0}, {"ZDIFFSTORE", NUMKEYS, 2, 1, 0},
    {"ZUNION", NUMKEYS, 1, 0, 0}, {"ZINTER", NUMKEYS, 1, 0, 0}, {"ZDIFF", NUMKEYS, 1, 0, 0},
    {"ZINTERCARD", NUMKEYS, 1, 0, 0}, {"SINTERCARD", NUMKEYS, 1, 0, 0},
    {"LMPOP", NUMKEYS, 1, 0, 0}, {"ZMPOP", NUMKEYS, 1, 0, 0}, {"BLMPOP", NUMKEYS, 2, 0, 0},
    {"BZMPOP", NUMKEYS, 2, 0, 0},
    /* keyless */
    NONE("PING"), NONE("ECHO"), NONE("INFO"), NONE("TIME"), NONE("DBSIZE"),
    NONE("FLUSHALL"), NONE("FLUSHDB"), NONE("SCRIPT"), NONE("FUNCTION"), NONE("CLUSTER"),
    NONE("COMMAND"), NONE("CONFIG"), NONE("CLIENT"), NONE("RANDOMKEY"), NONE("KEYS"),
    NONE("SCAN"), NONE("WAIT"), NONE("LASTSAVE"), NONE("ROLE"), NONE("HELLO"),
    NONE("AUTH"), NONE("SELECT"), NONE("READONLY"), NONE("READWRITE"), NONE("PUBLISH"),
    NONE("SAVE"), NONE("BGSAVE"), NONE("LOLWUT"), NONE("SLOWLOG"), NONE("LATENCY"),
    NONE("ASKING"), NONE("SWAPDB"), NONE("MULTI"), NONE("EXEC"), NONE("DISCARD"),
    NONE("UNWATCH"), NONE("ACL"), NONE("MODULE"),
};

static const size_t spec_count = sizeof specs / sizeof specs[0];
static pthread_once_t sort_once = PTHREAD_ONCE_INIT;

static int compare_specs(const void *a, const void *b)
{
    return strcmp(((const key_spec *)a)->name, ((const key_spec *)b)->name);
}

static void sort_specs(void)
{
    qsort(specs, spec_count, sizeof specs[0], compare_specs);
}

static const key_spec *find_spec(const char *name, size_t len)
{
    char upper[24];
    if (name == NULL || len == 0 || len >= sizeof upper)
        return NULL;
    for (size_t i = 0; i < len; i++)
        upper[i] = (char)toupper((unsigned char)name[i]);
    upper[len] = '\0';
    pthread_once(&sort_once, sort_specs);
    key_spec key = {upper, KEYLESS, 0, 0, 0};
    return bsearch(&key, specs, spec_count, sizeof specs[0], compare_specs);
}

/* Folds one more key into the slot found so far. */
static int merge_slot(int slot, const char *key, size_t len)
{
    int s = (int)vk__cluster_key_slot(key != NULL ? key : "", len);
    if (slot == VK_SLOT_NONE)
        return s;
    return s == slot ? slot : VK_SLOT_CROSS;
}

static int range_slot(const key_spec *spec, int argc, const char *const *argv,
                      const size_t *argvlen)
{
    int last = spec->last < 0 ? argc + spec->last : spec->last;
    int slot = VK_SLOT_NONE;
    for (int i = spec->first; i <= last && i < argc && slot != VK_SLOT_CROSS; i += spec->step)
        slot = merge_slot(slot, argv[i], argvlen[i]);
    return slot;
}

/* A small non-negative decimal argument; -1 when it is not one. */
static long small_number(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > 9)
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int numkeys_slot(const key_spec *spec, int argc, const char *const *argv,
                        const size_t *argvlen)
{
    if (spec->first >= argc)
        return VK_SLOT_UNKNOWN;   /* malformed: let the server answer */
    long n = small_number(argv[spec->first], argvlen[spec->first]);
    if (n < 0 || spec->first + 1 + n > argc)
        return VK_SLOT_UNKNOWN;
    int slot = VK_SLOT_NONE;
    if (spec->last > 0 && spec->last < argc)
        slot = merge_slot(slot, argv[spec->last], argvlen[spec->last]);
    for (long i = 0; i < n && slot != VK_SLOT_CROSS; i++) {
        int at = spec->first + 1 + (int)i;
        slot = merge_slot(slot, argv[at], argvlen[at]);
    }
    return slot;
}

static int streams_slot(int argc, const char *const *argv, const size_t *argvlen)
{
    for (int i = 1; i < argc; i++) {
        if (argvlen[i] == 7 && strncasecmp(argv[i], "STREAMS", 7) == 0) {
            int rest = argc - i - 1;
            if (rest == 0 || rest % 2 != 0)
                return VK_SLOT_UNKNOWN;
            int slot = VK_SLOT_NONE;
            for (int k = 0; k < rest / 2 && slot != VK_SLOT_CROSS; k++)
                slot = merge_slot(slot, argv[i + 1 + k], argvlen[i + 1 + k]);
            return slot;
        }
    }
    return VK_SLOT_UNKNOWN;
}

int vk__command_slot(int argc, const char *const *argv, const size_t *argvlen)
{
    const key_spec *spec = find_spec(argv[0], argvlen[0]);
    if (spec == NULL)
        return VK_SLOT_UNKNOWN;
    switch (spec->layout) {
    case KEYLESS:
        return VK_SLOT_NONE;
    case RANGE:
        return range_slot(spec, argc, argv, argvlen);
    case NUMKEYS:
        return numkeys_slot(spec, argc, argv, argvlen);
    case STREAMS:
        return streams_slot(argc, argv, argvlen);
    }
    return VK_SLOT_UNKNOWN;
}

int vk__getkeys_slot(const redisReply *keys)
{
    if (keys == NULL || keys->type != REDIS_REPLY_ARRAY)
        return VK_SLOT_NONE;
    int slot = VK_SLOT_NONE;
    for (size_t i = 0; i < keys->elements && slot != VK_SLOT_CROSS; i++) {
        const redisReply *k = keys->element[i];
        if (k->type == REDIS_REPLY_STRING)
            slot = merge_slot(slot, k->str, k->len);
    }
    return slot;
}
