/*
 * What the core needs to know of a caller's command, found in one lookup
 * of its name in one table: whether it changes the state of the connection
 * (and is refused), whether it waits on the server (and for how long), and
 * whether it only reads (and may be re-sent). The slot of a cluster command
 * is left to the router (cluster_keys.c), which computes it once and keeps
 * it in the descriptor.
 *
 * This sits on the command path: a command's first letter picks a bucket
 * of a handful of names, sorted by length, so that most commands are
 * compared with a few lengths and at most one or two names; nothing
 * allocates.
 *
 * Commands that change the state of the connection they run on: a pooled
 * connection goes from one caller to the next, so such a command would leak
 * into whatever the next caller sends (SELECT 1 makes its GET read db 1;
 * MULTI makes it answer QUEUED). The shared command path and pipelines
 * refuse them before anything is sent; the README lists them with the
 * reason for each.
 *
 * Commands that wait on the server: BLPOP and its kin, XREAD / XREADGROUP
 * with BLOCK, WAIT, WAITAOF. Their reply may rightly take as long as the
 * timeout they carry, so a call's read timeout stretches to that timeout
 * plus the configured read timeout (go-redis does the same), and a timeout
 * of 0 waits without limit, as the server does. Bindings ask
 * vk_command_is_blocking() to give such calls an interruptible context.
 *
 * Commands that only read (or only touch the connection), so that running
 * one twice is harmless: the retry policy may re-send them after the reply
 * was lost. Anything not listed is treated as a write and never re-sent.
 */
#include "proto/command.h"
#include "proto/proto.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef enum timeout_unit { SECONDS, MILLISECONDS } timeout_unit;

/* Only in the table: CLIENT's effect depends on its subcommand. */
#define BY_SUBCOMMAND (1u << 8)

typedef struct command_info {
    const char *name;         /* upper case */
    size_t len;
    unsigned flags;           /* VK_COMMAND_READONLY, VK_COMMAND_BLOCKING, BY_SUBCOMMAND */
    /* VK_COMMAND_BLOCKING: where the command keeps its timeout: argv[at]
     * when at > 0, counted from the end when at < 0, after the BLOCK
     * option when at == 0. */
    int at;
    timeout_unit unit;
    vk_conn_effect effect;
    const char *reason;       /* the detail of VK_ERR_COMMAND_NOT_ALLOWED */
} command_info;

#define READS(name) {name, sizeof name - 1, VK_COMMAND_READONLY, 0, SECONDS, VK_EFFECT_NONE, NULL}
#define WAITS(name, at, unit) \
    {name, sizeof name - 1, VK_COMMAND_BLOCKING, at, unit, VK_EFFECT_NONE, NULL}
#define REFUSED(name, effect, reason) {name, sizeof name - 1, 0, 0, SECONDS, effect, reason}

#define TRANSACTION_ADVICE \
    "send MULTI ... EXEC in one pipeline (or use a transaction pipeline or a session)"
#define WATCH_ADVICE "use a session"
#define PUBSUB_ADVICE "use a dedicated connection (a pub/sub API is to come)"

/* By first letter, and within a letter by length (the lookup stops at the
 * first longer name). */
static const command_info a_commands[] = {
    REFUSED("AUTH", VK_EFFECT_STATEFUL,
            "AUTH changes the user of the connection; set the credentials with the auth config "
            "options"),
    REFUSED("ASKING", VK_EFFECT_STATEFUL,
            "ASKING applies to the next command on the connection; the client follows ASK "
            "redirects itself"),
};
static const command_info b_commands[] = {
    WAITS("BLPOP", -1, SECONDS),    WAITS("BRPOP", -1, SECONDS),
    READS("BITPOS"),                WAITS("BLMOVE", -1, SECONDS),
    WAITS("BLMPOP", 1, SECONDS),    WAITS("BZMPOP", 1, SECONDS),
    READS("BITCOUNT"),              WAITS("BZPOPMIN", -1, SECONDS),
    WAITS("BZPOPMAX", -1, SECONDS), WAITS("BRPOPLPUSH", -1, SECONDS),
    READS("BITFIELD_RO"),
};
static const command_info c_commands[] = {
    /* CLIENT KILL, CLIENT LIST, ... leave the connection as it is; the
     * subcommands below do not. */
    {"CLIENT", 6, BY_SUBCOMMAND, 0, SECONDS, VK_EFFECT_NONE, NULL},
};
static const command_info d_commands[] = {
    READS("DUMP"),
    READS("DBSIZE"),
    REFUSED("DISCARD", VK_EFFECT_CLOSES_MULTI, "DISCARD without MULTI; " TRANSACTION_ADVICE),
};
static const command_info e_commands[] = {
    READS("ECHO"),
    REFUSED("EXEC", VK_EFFECT_CLOSES_MULTI, "EXEC without MULTI; " TRANSACTION_ADVICE),
    READS("EXISTS"),
    READS("EVAL_RO"),
    READS("EVALSHA_RO"),
    READS("EXPIRETIME"),
};
static const command_info f_commands[] = {
    READS("FCALL_RO"),
};
static const command_info g_commands[] = {
    READS("GET"),       READS("GEOPOS"),       READS("GETBIT"),
    READS("GEODIST"),   READS("GEOHASH"),      READS("GETRANGE"),
    READS("GEOSEARCH"), READS("GEORADIUS_RO"), READS("GEORADIUSBYMEMBER_RO"),
};
static const command_info h_commands[] = {
    READS("HGET"),
    READS("HLEN"),
    REFUSED("HELLO", VK_EFFECT_STATEFUL,
            "HELLO changes the protocol and user of the connection; set them with the protocol "
            "and auth config options"),
    READS("HKEYS"),
    READS("HMGET"),
    READS("HSCAN"),
    READS("HVALS"),
    READS("HEXISTS"),
    READS("HGETALL"),
    READS("HSTRLEN"),
    READS("HRANDFIELD"),
};
static const command_info k_commands[] = {
    READS("KEYS"),
};
static const command_info l_commands[] = {
    READS("LCS"),    READS("LLEN"),   READS("LPOS"),
    READS("LINDEX"), READS("LOLWUT"), READS("LRANGE"),
};
static const command_info m_commands[] = {
    READS("MGET"),
    REFUSED("MULTI", VK_EFFECT_OPENS_MULTI,
            "MULTI leaves the connection in a transaction; " TRANSACTION_ADVICE),
    REFUSED("MONITOR", VK_EFFECT_STATEFUL,
            "MONITOR turns the connection into a stream of every command; " PUBSUB_ADVICE),
};
static const command_info o_commands[] = {
    READS("OBJECT"),
};
static const command_info p_commands[] = {
    READS("PING"),
    READS("PTTL"),
    REFUSED("PSYNC", VK_EFFECT_STATEFUL,
            "PSYNC turns the connection into a replication stream; use a dedicated connection"),
    READS("PFCOUNT"),
    REFUSED("PSUBSCRIBE", VK_EFFECT_STATEFUL,
            "PSUBSCRIBE turns the connection into a subscriber; " PUBSUB_ADVICE),
    READS("PEXPIRETIME"),
    REFUSED("PUNSUBSCRIBE", VK_EFFECT_STATEFUL,
            "PUNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB_ADVICE),
};
static const command_info q_commands[] = {
    REFUSED("QUIT", VK_EFFECT_STATEFUL,
            "QUIT closes the connection; close the client with its close call"),
};
static const command_info r_commands[] = {
    REFUSED("RESET", VK_EFFECT_STATEFUL,
            "RESET drops the database, user and protocol of the connection; set them with the "
            "db, auth and protocol config options"),
    REFUSED("READONLY", VK_EFFECT_STATEFUL,
            "READONLY changes how the connection reads in a cluster; the client chooses the "
            "nodes it reads from"),
    REFUSED("REPLCONF", VK_EFFECT_STATEFUL,
            "REPLCONF configures the connection as a replica; use a dedicated connection"),
    READS("RANDOMKEY"),
    REFUSED("READWRITE", VK_EFFECT_STATEFUL,
            "READWRITE changes how the connection reads in a cluster; the client chooses the "
            "nodes it reads from"),
};
static const command_info s_commands[] = {
    READS("SCAN"),
    REFUSED("SYNC", VK_EFFECT_STATEFUL,
            "SYNC turns the connection into a replication stream; use a dedicated connection"),
    READS("SCARD"),
    READS("SDIFF"),
    READS("SSCAN"),
    READS("SINTER"),
    REFUSED("SELECT", VK_EFFECT_STATEFUL,
            "SELECT changes the database of the connection; choose the database with the db "
            "connection option"),
    READS("STRLEN"),
    READS("SUBSTR"),
    READS("SUNION"),
    READS("SMEMBERS"),
    READS("SISMEMBER"),
    REFUSED("SUBSCRIBE", VK_EFFECT_STATEFUL,
            "SUBSCRIBE turns the connection into a subscriber; " PUBSUB_ADVICE),
    READS("SINTERCARD"),
    READS("SMISMEMBER"),
    REFUSED("SSUBSCRIBE", VK_EFFECT_STATEFUL,
            "SSUBSCRIBE turns the connection into a subscriber; " PUBSUB_ADVICE),
    READS("SRANDMEMBER"),
    REFUSED("SUNSUBSCRIBE", VK_EFFECT_STATEFUL,
            "SUNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB_ADVICE),
};
static const command_info t_commands[] = {
    READS("TTL"), READS("TIME"), READS("TYPE"), READS("TOUCH"),
};
static const command_info u_commands[] = {
    REFUSED("UNWATCH", VK_EFFECT_STATEFUL,
            "UNWATCH acts on keys watched by the connection; " WATCH_ADVICE),
    REFUSED("UNSUBSCRIBE", VK_EFFECT_STATEFUL,
            "UNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB_ADVICE),
};
static const command_info w_commands[] = {
    WAITS("WAIT", 2, MILLISECONDS),
    REFUSED("WATCH", VK_EFFECT_STATEFUL,
            "WATCH leaves keys watched on the connection; " WATCH_ADVICE),
    WAITS("WAITAOF", 3, MILLISECONDS),
};
static const command_info x_commands[] = {
    READS("XLEN"),     READS("XINFO"),     WAITS("XREAD", 0, MILLISECONDS),
    READS("XRANGE"),   READS("XPENDING"),  READS("XREVRANGE"),
    WAITS("XREADGROUP", 0, MILLISECONDS),
};
static const command_info z_commands[] = {
    READS("ZCARD"),         READS("ZDIFF"),          READS("ZRANK"),
    READS("ZSCAN"),         READS("ZCOUNT"),         READS("ZINTER"),
    READS("ZRANGE"),        READS("ZSCORE"),         READS("ZUNION"),
    READS("ZMSCORE"),       READS("ZREVRANK"),       READS("ZLEXCOUNT"),
    READS("ZREVRANGE"),     READS("ZINTERCARD"),     READS("ZRANGEBYLEX"),
    READS("ZRANDMEMBER"),   READS("ZRANGEBYSCORE"),  READS("ZREVRANGEBYLEX"),
    READS("ZREVRANGEBYSCORE"),
};

/* CLIENT subcommands that change the connection they are sent on. */
static const command_info client_subcommands[] = {
    REFUSED("REPLY", VK_EFFECT_STATEFUL,
            "CLIENT REPLY stops the replies of the connection; every command needs its reply"),
    REFUSED("TRACKING", VK_EFFECT_STATEFUL,
            "CLIENT TRACKING sends invalidations on the connection; use a dedicated connection"),
    REFUSED("CACHING", VK_EFFECT_STATEFUL,
            "CLIENT CACHING changes tracking for the next command on the connection; use a "
            "dedicated connection"),
    REFUSED("SETNAME", VK_EFFECT_STATEFUL,
            "CLIENT SETNAME names the connection for every later caller; use a dedicated "
            "connection"),
    REFUSED("SETINFO", VK_EFFECT_STATEFUL,
            "CLIENT SETINFO labels the connection for every later caller; use a dedicated "
            "connection"),
    REFUSED("NO-EVICT", VK_EFFECT_STATEFUL,
            "CLIENT NO-EVICT changes the eviction of the connection for every later caller; "
            "use a dedicated connection"),
    REFUSED("NO-TOUCH", VK_EFFECT_STATEFUL,
            "CLIENT NO-TOUCH changes what every later command on the connection does to key "
            "access times; use a dedicated connection"),
    REFUSED("CAPA", VK_EFFECT_STATEFUL,
            "CLIENT CAPA changes the replies of the connection for every later caller; use a "
            "dedicated connection"),
    REFUSED("IMPORT-SOURCE", VK_EFFECT_STATEFUL,
            "CLIENT IMPORT-SOURCE marks the connection for every later caller; use a dedicated "
            "connection"),
};

#define COUNT(table) (sizeof table / sizeof table[0])
#define BUCKET(table) {table, COUNT(table)}

typedef struct bucket {
    const command_info *entries;
    size_t count;
} bucket;

static const bucket by_letter[26] = {
    ['A' - 'A'] = BUCKET(a_commands), ['B' - 'A'] = BUCKET(b_commands),
    ['C' - 'A'] = BUCKET(c_commands), ['D' - 'A'] = BUCKET(d_commands),
    ['E' - 'A'] = BUCKET(e_commands), ['F' - 'A'] = BUCKET(f_commands),
    ['G' - 'A'] = BUCKET(g_commands), ['H' - 'A'] = BUCKET(h_commands),
    ['K' - 'A'] = BUCKET(k_commands), ['L' - 'A'] = BUCKET(l_commands),
    ['M' - 'A'] = BUCKET(m_commands), ['O' - 'A'] = BUCKET(o_commands),
    ['P' - 'A'] = BUCKET(p_commands), ['Q' - 'A'] = BUCKET(q_commands),
    ['R' - 'A'] = BUCKET(r_commands), ['S' - 'A'] = BUCKET(s_commands),
    ['T' - 'A'] = BUCKET(t_commands), ['U' - 'A'] = BUCKET(u_commands),
    ['W' - 'A'] = BUCKET(w_commands), ['X' - 'A'] = BUCKET(x_commands),
    ['Z' - 'A'] = BUCKET(z_commands),
};

#define SHORTEST 3    /* GET, LCS, TTL */
#define LONGEST 20    /* GEORADIUSBYMEMBER_RO */

/* ASCII-only and locale-independent; s may hold any bytes. */
static bool equals_upper(const char *s, const char *upper, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'a' && c <= 'z')
            c = (unsigned char)(c - 'a' + 'A');
        if (c != (unsigned char)upper[i])
            return false;
    }
    return true;
}

/* entries sorted by length, or not (the few CLIENT subcommands): the scan
 * stops at the first longer name only in the sorted buckets. */
static const command_info *find(const command_info *entries, size_t count, bool sorted,
                                const char *name, size_t len)
{
    for (size_t i = 0; i < count; i++) {
        if (entries[i].len == len && equals_upper(name, entries[i].name, len))
            return &entries[i];
        if (sorted && entries[i].len > len)
            break;
    }
    return NULL;
}

static const command_info *lookup(const char *name, size_t len)
{
    if (VK_UNLIKELY(len < SHORTEST || len > LONGEST))
        return NULL;
    unsigned letter = ((unsigned char)name[0] | 0x20u) - 'a';
    if (VK_UNLIKELY(letter >= 26))
        return NULL;
    return find(by_letter[letter].entries, by_letter[letter].count, true, name, len);
}

/* ---- blocking timeouts ------------------------------------------------------ */

static bool is_word(const char *s, size_t len, const char *word, size_t word_len)
{
    return len == word_len && equals_upper(s, word, len);
}

/* The argument as a number of ms; false when it is not a number >= 0. */
static bool parse_timeout(const char *s, size_t len, timeout_unit unit, int64_t *ms)
{
    char text[32];
    if (s == NULL || len == 0 || len >= sizeof text)
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    char *end;
    double value = strtod(text, &end);
    if (*end != '\0' || !(value >= 0) || value > 1e12)
        return false;
    *ms = (int64_t)(unit == SECONDS ? value * 1000.0 : value);
    if (*ms == 0 && value > 0)
        *ms = 1;   /* BLPOP k 0.0001 still has a limit */
    return true;
}

/* XREAD [COUNT n] [BLOCK ms] STREAMS ...: the BLOCK option, if any, comes
 * before STREAMS. */
static int block_option_index(int argc, const char *const *argv, const size_t *argvlen)
{
    for (int i = 1; i + 1 < argc; i++) {
        if (is_word(argv[i], argvlen[i], "STREAMS", 7))
            return -1;
        if (is_word(argv[i], argvlen[i], "BLOCK", 5))
            return i + 1;
    }
    return -1;
}

/* True when the command's timeout argument is where its entry says and is
 * a number: only then does it wait on the server. */
static bool blocking_timeout(const command_info *info, int argc, const char *const *argv,
                             const size_t *argvlen, int64_t *ms)
{
    int at = info->at > 0 ? info->at : info->at < 0 ? argc + info->at
                                                    : block_option_index(argc, argv, argvlen);
    if (at < 1 || at >= argc)
        return false;
    return parse_timeout(argv[at], argvlen[at], info->unit, ms);
}

/* ---- the descriptor --------------------------------------------------------- */

void vk__command_internal(vk_command *cmd, int argc, const char *const *argv,
                          const size_t *argvlen)
{
    cmd->argc = argc;
    cmd->argv = argv;
    cmd->argvlen = argvlen;
    cmd->flags = 0;
    cmd->block_ms = 0;
    cmd->effect = VK_EFFECT_NONE;
    cmd->refusal = NULL;
    cmd->slot = VK_SLOT_NONE;
}

void vk__command_classify(vk_command *cmd, int argc, const char *const *argv,
                          const size_t *argvlen)
{
    vk__command_internal(cmd, argc, argv, argvlen);
    cmd->slot = VK_SLOT_PENDING;
    const command_info *info = lookup(argv[0], argvlen[0]);
    if (VK_LIKELY(info == NULL))
        return;
    cmd->flags = info->flags & VK_COMMAND_READONLY;
    if (info->flags & VK_COMMAND_BLOCKING) {
        if (blocking_timeout(info, argc, argv, argvlen, &cmd->block_ms))
            cmd->flags |= VK_COMMAND_BLOCKING;
        else
            cmd->block_ms = 0;
    }
    if (VK_UNLIKELY(info->flags & BY_SUBCOMMAND)) {
        if (argc < 2 || argv[1] == NULL)
            return;
        info = find(client_subcommands, COUNT(client_subcommands), false, argv[1], argvlen[1]);
        if (info == NULL)
            return;
    }
    cmd->effect = info->effect;
    cmd->refusal = info->reason;
}

void vk__command_name_label(const char *name, size_t len, char label[VK_COMMAND_LABEL_MAX])
{
    size_t n = len < VK_COMMAND_LABEL_MAX - 1 ? len : VK_COMMAND_LABEL_MAX - 1;
    for (size_t i = 0; i < n; i++)
        label[i] = (char)tolower((unsigned char)name[i]);
    label[n] = '\0';
}

void vk__command_label(const vk_command *cmd, char label[VK_COMMAND_LABEL_MAX])
{
    vk__command_name_label(cmd->argv[0], cmd->argvlen[0], label);
}

VK_API int vk_command_is_blocking(int argc, const char *const *argv, const size_t *argvlen)
{
    if (argc < 1 || argv == NULL || argvlen == NULL || argv[0] == NULL)
        return 0;
    vk_command cmd;
    vk__command_classify(&cmd, argc, argv, argvlen);
    return (cmd.flags & VK_COMMAND_BLOCKING) != 0;
}

vk_status vk__command_check(int argc, const char *const *argv, const size_t *argvlen)
{
    if (argc <= 0 || argv == NULL || argvlen == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a command needs argc >= 1, argv and argvlen");
    for (int i = 0; i < argc; i++) {
        if (argv[i] == NULL && argvlen[i] != 0)
            return vk__fail(VK_ERR_INVALID_ARGUMENT, "argument %d is NULL", i);
    }
    size_t request;
    if (!vk__request_size(argc, argvlen, &request))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
    return VK_OK;
}

vk_status vk__command_accept(vk_command *cmd, int argc, const char *const *argv,
                             const size_t *argvlen)
{
    vk_status st = vk__command_check(argc, argv, argvlen);
    if (st != VK_OK)
        return st;
    vk__command_classify(cmd, argc, argv, argvlen);
    /* The connection is shared by every operation: nothing may change it. */
    if (VK_UNLIKELY(cmd->effect != VK_EFFECT_NONE))
        return vk__fail(VK_ERR_COMMAND_NOT_ALLOWED, "%s", cmd->refusal);
    return VK_OK;
}

vk_status vk__command_copy(const vk_command *cmd, vk_command *out, void **mem)
{
    /* The pointers, the lengths, then the bytes (their total fits: the
     * command's encoded size did). */
    size_t n = (size_t)cmd->argc, bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += cmd->argvlen[i];
    char *block = malloc(n * (sizeof(char *) + sizeof(size_t)) + bytes + 1);
    if (block == NULL)
        return vk__fail_nomem();
    const char **args = (const char **)(void *)block;
    size_t *lens = (size_t *)(void *)(block + n * sizeof(char *));
    char *at = block + n * (sizeof(char *) + sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        args[i] = at;
        lens[i] = cmd->argvlen[i];
        if (lens[i] > 0)
            memcpy(at, cmd->argv[i], lens[i]);
        at += lens[i];
    }
    *out = *cmd;
    out->argv = args;
    out->argvlen = lens;
    *mem = block;
    return VK_OK;
}
