/*
 * The command classifier (command.c), without a server: every command of
 * the refused, blocking and read-only lists is classified as the command
 * path expects (refusal texts, blocking timeouts and their units, the
 * read-only set), names match in any case and never across an embedded
 * NUL, and CLIENT is judged by its subcommand.
 */
#include "vktest.h"
#include "command.h"

#include <stdio.h>
#include <string.h>

/* Classifies argv (NUL-terminated arguments). The descriptor borrows
 * argv, so only what was found is returned. */
static vk_command classify(int argc, const char *const *argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    vk_command cmd;
    vk__command_classify(&cmd, argc, argv, lens);
    cmd.argv = NULL;
    cmd.argvlen = NULL;
    return cmd;
}

static vk_command classify1(const char *name)
{
    const char *argv[] = {name};
    return classify(1, argv);
}

/* Lower-cases an ASCII name into buf. */
static const char *lower(char *buf, size_t cap, const char *name)
{
    size_t n = 0;
    for (; name[n] != '\0' && n + 1 < cap; n++)
        buf[n] = name[n] >= 'A' && name[n] <= 'Z' ? (char)(name[n] - 'A' + 'a') : name[n];
    buf[n] = '\0';
    return buf;
}

/* ---- refused commands ---------------------------------------------------------- */

typedef struct refused {
    const char *name;
    vk_conn_effect effect;
    const char *text;
} refused;

static const refused refused_commands[] = {
    {"ASKING", VK_EFFECT_STATEFUL,
     "ASKING applies to the next command on the connection; the client follows "
     "ASK redirects itself"},
    {"AUTH", VK_EFFECT_STATEFUL,
     "AUTH changes the user of the connection; set the credentials with the "
     "auth config options"},
    {"DISCARD", VK_EFFECT_CLOSES_MULTI,
     "DISCARD without MULTI; send MULTI ... EXEC in one pipeline (or use a "
     "transaction pipeline or a session)"},
    {"EXEC", VK_EFFECT_CLOSES_MULTI,
     "EXEC without MULTI; send MULTI ... EXEC in one pipeline (or use a "
     "transaction pipeline or a session)"},
    {"HELLO", VK_EFFECT_STATEFUL,
     "HELLO changes the protocol and user of the connection; set them with the "
     "protocol and auth config options"},
    {"MULTI", VK_EFFECT_OPENS_MULTI,
     "MULTI leaves the connection in a transaction; send MULTI ... EXEC in one "
     "pipeline (or use a transaction pipeline or a session)"},
    {"MONITOR", VK_EFFECT_STATEFUL,
     "MONITOR turns the connection into a stream of every command; use a "
     "dedicated connection (a pub/sub API is to come)"},
    {"PSUBSCRIBE", VK_EFFECT_STATEFUL,
     "PSUBSCRIBE turns the connection into a subscriber; use a dedicated "
     "connection (a pub/sub API is to come)"},
    {"PUNSUBSCRIBE", VK_EFFECT_STATEFUL,
     "PUNSUBSCRIBE acts on the subscriptions of the connection; use a "
     "dedicated connection (a pub/sub API is to come)"},
    {"PSYNC", VK_EFFECT_STATEFUL,
     "PSYNC turns the connection into a replication stream; use a dedicated "
     "connection"},
    {"QUIT", VK_EFFECT_STATEFUL,
     "QUIT closes the connection; close the client with its close call"},
    {"RESET", VK_EFFECT_STATEFUL,
     "RESET drops the database, user and protocol of the connection; set them "
     "with the db, auth and protocol config options"},
    {"READONLY", VK_EFFECT_STATEFUL,
     "READONLY changes how the connection reads in a cluster; the client "
     "chooses the nodes it reads from"},
    {"READWRITE", VK_EFFECT_STATEFUL,
     "READWRITE changes how the connection reads in a cluster; the client "
     "chooses the nodes it reads from"},
    {"REPLCONF", VK_EFFECT_STATEFUL,
     "REPLCONF configures the connection as a replica; use a dedicated "
     "connection"},
    {"SELECT", VK_EFFECT_STATEFUL,
     "SELECT changes the database of the connection; choose the database with "
     "the db connection option"},
    {"SUBSCRIBE", VK_EFFECT_STATEFUL,
     "SUBSCRIBE turns the connection into a subscriber; use a dedicated "
     "connection (a pub/sub API is to come)"},
    {"SSUBSCRIBE", VK_EFFECT_STATEFUL,
     "SSUBSCRIBE turns the connection into a subscriber; use a dedicated "
     "connection (a pub/sub API is to come)"},
    {"SUNSUBSCRIBE", VK_EFFECT_STATEFUL,
     "SUNSUBSCRIBE acts on the subscriptions of the connection; use a "
     "dedicated connection (a pub/sub API is to come)"},
    {"SYNC", VK_EFFECT_STATEFUL,
     "SYNC turns the connection into a replication stream; use a dedicated "
     "connection"},
    {"UNSUBSCRIBE", VK_EFFECT_STATEFUL,
     "UNSUBSCRIBE acts on the subscriptions of the connection; use a dedicated "
     "connection (a pub/sub API is to come)"},
    {"UNWATCH", VK_EFFECT_STATEFUL,
     "UNWATCH acts on keys watched by the connection; use a session"},
    {"WATCH", VK_EFFECT_STATEFUL,
     "WATCH leaves keys watched on the connection; use a session"},
};

/* CLIENT <subcommand>. */
static const refused refused_client[] = {
    {"REPLY", VK_EFFECT_STATEFUL,
     "CLIENT REPLY stops the replies of the connection; every command needs "
     "its reply"},
    {"TRACKING", VK_EFFECT_STATEFUL,
     "CLIENT TRACKING sends invalidations on the connection; use a dedicated "
     "connection"},
    {"CACHING", VK_EFFECT_STATEFUL,
     "CLIENT CACHING changes tracking for the next command on the connection; "
     "use a dedicated connection"},
    {"SETNAME", VK_EFFECT_STATEFUL,
     "CLIENT SETNAME names the connection for every later caller; use a "
     "dedicated connection"},
    {"SETINFO", VK_EFFECT_STATEFUL,
     "CLIENT SETINFO labels the connection for every later caller; use a "
     "dedicated connection"},
    {"NO-EVICT", VK_EFFECT_STATEFUL,
     "CLIENT NO-EVICT changes the eviction of the connection for every later "
     "caller; use a dedicated connection"},
    {"NO-TOUCH", VK_EFFECT_STATEFUL,
     "CLIENT NO-TOUCH changes what every later command on the connection does "
     "to key access times; use a dedicated connection"},
    {"CAPA", VK_EFFECT_STATEFUL,
     "CLIENT CAPA changes the replies of the connection for every later "
     "caller; use a dedicated connection"},
    {"IMPORT-SOURCE", VK_EFFECT_STATEFUL,
     "CLIENT IMPORT-SOURCE marks the connection for every later caller; use a "
     "dedicated connection"},
};

#define COUNT(table) (sizeof table / sizeof table[0])

static void test_refused_commands(void)
{
    for (size_t i = 0; i < COUNT(refused_commands); i++) {
        const refused *t = &refused_commands[i];
        char name[32];
        for (int pass = 0; pass < 2; pass++) {
            const char *n = pass == 0 ? t->name : lower(name, sizeof name, t->name);
            const char *argv[] = {n, "arg"};
            vk_command cmd = classify(pass == 0 ? 1 : 2, argv);
            VKT_CHECK_(cmd.effect == t->effect, "%s: effect %d", n, (int)cmd.effect);
            CHECK(cmd.refusal != NULL);
            if (cmd.refusal != NULL)
                CHECK_EQ_STR(cmd.refusal, t->text);
            CHECK_EQ_INT((int)cmd.flags, 0);
            CHECK_EQ_INT(cmd.slot, VK_SLOT_PENDING);
        }
    }
}

static void test_client_subcommands(void)
{
    for (size_t i = 0; i < COUNT(refused_client); i++) {
        const refused *t = &refused_client[i];
        char sub[32];
        const char *argv[] = {"client", lower(sub, sizeof sub, t->name), "x"};
        vk_command cmd = classify(3, argv);
        VKT_CHECK_(cmd.effect == VK_EFFECT_STATEFUL, "CLIENT %s", t->name);
        if (cmd.refusal != NULL)
            CHECK_EQ_STR(cmd.refusal, t->text);
        else
            VKT_CHECK_(false, "CLIENT %s: no refusal", t->name);
    }
    /* Subcommands that leave the connection as it is, and CLIENT alone. */
    static const char *const harmless[] = {"LIST", "KILL", "ID", "INFO", "GETNAME", "PAUSE"};
    for (size_t i = 0; i < COUNT(harmless); i++) {
        const char *argv[] = {"CLIENT", harmless[i]};
        vk_command cmd = classify(2, argv);
        VKT_CHECK_(cmd.effect == VK_EFFECT_NONE && cmd.refusal == NULL, "CLIENT %s",
                   harmless[i]);
    }
    CHECK(classify1("CLIENT").effect == VK_EFFECT_NONE);
    /* A missing (NULL, empty) subcommand is no subcommand. */
    const char *argv[] = {"CLIENT", NULL};
    size_t lens[] = {6, 0};
    vk_command cmd;
    vk__command_classify(&cmd, 2, argv, lens);
    CHECK(cmd.effect == VK_EFFECT_NONE);
    /* The subcommand is a whole word: not a prefix, not SETNAME\0x. */
    const char *prefix[] = {"CLIENT", "SETNAMES"};
    CHECK(classify(2, prefix).effect == VK_EFFECT_NONE);
    const char *nul[] = {"CLIENT", "SETNAME\0x"};
    size_t nul_lens[] = {6, 9};
    vk__command_classify(&cmd, 2, nul, nul_lens);
    CHECK(cmd.effect == VK_EFFECT_NONE);
}

/* ---- commands that wait on the server ------------------------------------------ */

typedef struct blocking_case {
    int argc;
    const char *argv[9];
    bool blocking;
    int64_t block_ms;
} blocking_case;

static const blocking_case blocking_cases[] = {
    /* timeout last, in seconds */
    {3, {"BLPOP", "a", "1"}, true, 1000},
    {4, {"blpop", "a", "b", "1.5"}, true, 1500},
    {3, {"BRPOP", "a", "0"}, true, 0},
    {3, {"BZPOPMIN", "z", "0.25"}, true, 250},
    {3, {"BZPOPMAX", "z", "2"}, true, 2000},
    {4, {"BRPOPLPUSH", "a", "b", "3"}, true, 3000},
    {6, {"BLMOVE", "a", "b", "LEFT", "RIGHT", "0.001"}, true, 1},
    {3, {"BLPOP", "a", "0.0001"}, true, 1},   /* still has a limit */
    /* timeout first, in seconds */
    {5, {"BLMPOP", "2", "1", "a", "LEFT"}, true, 2000},
    {5, {"BZMPOP", "0", "1", "z", "MIN"}, true, 0},
    /* milliseconds at a fixed place */
    {3, {"WAIT", "1", "100"}, true, 100},
    {4, {"WAITAOF", "1", "0", "250"}, true, 250},
    {4, {"waitaof", "0", "1", "0"}, true, 0},
    /* milliseconds after BLOCK, before STREAMS */
    {8, {"XREAD", "COUNT", "2", "BLOCK", "100", "STREAMS", "s", "$"}, true, 100},
    {6, {"xread", "block", "0", "streams", "s", "$"}, true, 0},
    {8, {"XREADGROUP", "GROUP", "g", "c", "BLOCK", "5", "STREAMS", "s"}, true, 5},
    /* not waiting: no BLOCK, "block" as a stream name, a bad timeout */
    {4, {"XREAD", "STREAMS", "s", "$"}, false, 0},
    {4, {"XREAD", "STREAMS", "block", "0"}, false, 0},
    {7, {"XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"}, false, 0},
    {3, {"BLPOP", "a", "soon"}, false, 0},
    {3, {"BLPOP", "a", "-1"}, false, 0},
    {1, {"BLPOP"}, false, 0},
    {2, {"WAIT", "1"}, false, 0},
    {3, {"WAITAOF", "1", "0"}, false, 0},
    {2, {"GET", "k"}, false, 0},
    {3, {"BLPOPX", "a", "1"}, false, 0},
};

static void test_blocking_commands(void)
{
    for (size_t i = 0; i < COUNT(blocking_cases); i++) {
        const blocking_case *t = &blocking_cases[i];
        vk_command cmd = classify(t->argc, t->argv);
        bool blocking = (cmd.flags & VK_COMMAND_BLOCKING) != 0;
        VKT_CHECK_(blocking == t->blocking, "case %zu (%s): blocking %d", i, t->argv[0],
                   (int)blocking);
        VKT_CHECK_(cmd.block_ms == t->block_ms, "case %zu (%s): %lld ms", i, t->argv[0],
                   (long long)cmd.block_ms);
        CHECK(cmd.effect == VK_EFFECT_NONE);
        /* The public function agrees. */
        size_t lens[9];
        for (int k = 0; k < t->argc; k++)
            lens[k] = strlen(t->argv[k]);
        CHECK_EQ_INT(vk_command_is_blocking(t->argc, t->argv, lens), t->blocking);
    }
    CHECK(!vk_command_is_blocking(0, NULL, NULL));
}

/* ---- read-only commands -------------------------------------------------------- */

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

static void test_readonly_commands(void)
{
    for (size_t i = 0; i < COUNT(readonly_commands); i++) {
        char name[32];
        const char *upper = readonly_commands[i];
        vk_command a = classify1(upper);
        vk_command b = classify1(lower(name, sizeof name, upper));
        VKT_CHECK_(a.flags == VK_COMMAND_READONLY, "%s: flags %u", upper, a.flags);
        VKT_CHECK_(b.flags == VK_COMMAND_READONLY, "%s (lower case): flags %u", upper,
                   b.flags);
        CHECK(a.effect == VK_EFFECT_NONE && a.refusal == NULL);
    }
    /* Writes, and commands that are not read-only however harmless-looking. */
    static const char *const writes[] = {"SET", "DEL", "INCR", "EVAL", "EVALSHA", "FCALL",
                                         "XREAD", "SORT", "GETDEL", "GETEX", "HSET",
                                         "SPOP", "BITFIELD", "GEORADIUS", "COMMAND", "INFO"};
    for (size_t i = 0; i < COUNT(writes); i++)
        VKT_CHECK_(classify1(writes[i]).flags == 0, "%s is read-only", writes[i]);
}

/* ---- names ------------------------------------------------------------------- */

static void test_names_in_any_case(void)
{
    static const char *const names[] = {"Get", "gEt", "SeLeCt", "mUlTi", "bLpOp"};
    CHECK(classify1(names[0]).flags == VK_COMMAND_READONLY);
    CHECK(classify1(names[1]).flags == VK_COMMAND_READONLY);
    CHECK(classify1(names[2]).effect == VK_EFFECT_STATEFUL);
    CHECK(classify1(names[3]).effect == VK_EFFECT_OPENS_MULTI);
    const char *blpop[] = {names[4], "k", "2"};
    CHECK(classify(3, blpop).block_ms == 2000);
    /* Bytes that only look like letters once masked are not letters. */
    CHECK(classify1("\xc7" "ET").flags == 0);
    CHECK(classify1("[ET").flags == 0);
    CHECK(classify1("@ET").flags == 0);
}

static void test_names_are_binary_safe(void)
{
    vk_command cmd;
    /* An embedded NUL makes another name, never the one before it. */
    const char *get_nul[] = {"GET\0"};
    size_t get_len[] = {4};
    vk__command_classify(&cmd, 1, get_nul, get_len);
    CHECK(cmd.flags == 0);
    const char *select_nul[] = {"SEL\0CT"};
    size_t select_len[] = {6};
    vk__command_classify(&cmd, 1, select_nul, select_len);
    CHECK(cmd.effect == VK_EFFECT_NONE && cmd.refusal == NULL);
    const char *blpop_nul[] = {"BLPOP\0", "k", "1"};
    size_t blpop_len[] = {6, 1, 1};
    vk__command_classify(&cmd, 3, blpop_nul, blpop_len);
    CHECK(cmd.flags == 0);
    /* The length given counts, not the terminator: "GETX" cut to 3 is GET. */
    const char *getx[] = {"GETX"};
    size_t three[] = {3};
    vk__command_classify(&cmd, 1, getx, three);
    CHECK(cmd.flags == VK_COMMAND_READONLY);
    /* A timeout is read up to its given length only. */
    const char *cut_timeout[] = {"BLPOP", "k", "15"};
    size_t cut_len[] = {5, 1, 1};
    vk__command_classify(&cmd, 3, cut_timeout, cut_len);
    CHECK(cmd.flags == VK_COMMAND_BLOCKING && cmd.block_ms == 1000);
    /* BLOCK\0 is not BLOCK. */
    const char *xread[] = {"XREAD", "BLOCK\0", "5", "STREAMS", "s", "$"};
    size_t xread_len[] = {5, 6, 1, 7, 1, 1};
    vk__command_classify(&cmd, 6, xread, xread_len);
    CHECK(cmd.flags == 0);
    /* An empty name (NULL) is no command. */
    const char *empty[] = {NULL};
    size_t zero[] = {0};
    vk__command_classify(&cmd, 1, empty, zero);
    CHECK(cmd.flags == 0 && cmd.effect == VK_EFFECT_NONE);
}

static void test_internal_and_label(void)
{
    const char *argv[] = {"COMMAND", "GETKEYS", "BLPOP", "k", "0"};
    size_t lens[] = {7, 7, 5, 1, 1};
    vk_command cmd;
    vk__command_internal(&cmd, 5, argv, lens);
    CHECK(cmd.flags == 0 && cmd.block_ms == 0 && cmd.effect == VK_EFFECT_NONE);
    CHECK_EQ_INT(cmd.slot, VK_SLOT_NONE);
    CHECK_EQ_INT(cmd.argc, 5);

    /* The descriptor borrows argv: the label is read while it lives. */
    char label[VK_COMMAND_LABEL_MAX];
    const char *get[] = {"GeT", "k"};
    size_t get_lens[] = {3, 1};
    vk__command_classify(&cmd, 2, get, get_lens);
    vk__command_label(&cmd, label);
    CHECK_EQ_STR(label, "get");
    char longer[100];
    memset(longer, 'X', sizeof longer);
    const char *cut[] = {longer};
    size_t cut_lens[] = {sizeof longer};
    vk__command_classify(&cmd, 1, cut, cut_lens);
    vk__command_label(&cmd, label);
    CHECK_EQ_INT((int)strlen(label), VK_COMMAND_LABEL_MAX - 1);
    CHECK(label[0] == 'x');
}

int main(void)
{
    RUN(test_refused_commands);
    RUN(test_client_subcommands);
    RUN(test_blocking_commands);
    RUN(test_readonly_commands);
    RUN(test_names_in_any_case);
    RUN(test_names_are_binary_safe);
    RUN(test_internal_and_label);
    return vkt_finish();
}
