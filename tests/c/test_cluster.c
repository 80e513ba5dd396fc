/*
 * The cluster topology against a real 3-master cluster (VKTEST_NEEDS_SERVER),
 * master 0 with one replica: key hashing as the server does it, keys on
 * every master, hash tags, cross-slot refusals, a blocking command sent on
 * with ASK, pipelines spanning every node, the slot map from CLUSTER SLOTS
 * where SHARDS is refused, pool gauges per node, a slot migration under
 * load (multi-key commands included) with zero errors, a failover, and the
 * lock's mutual exclusion in cluster mode.
 */
#include "vkclient.h"
#include "contention.h"
#include "vktest.h"
#include "clusters.h"
#include "cluster.h"
#include "client.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MASTERS 3
#define REPLICA_OF_0 MASTERS   /* node index of master 0's replica */
#define PASSWORD "cluster-secret"   /* every node requires it */

static vkt_cluster *cluster;
static vk_client *client;

static atomic_int moved_seen, ask_seen, tryagain_seen, refreshes_seen;
static atomic_int connected_logs;

static const char CROSSSLOT_TEXT[] =
    "invalid argument: CROSSSLOT keys in request don't hash to the same slot";

/* ---- sinks --------------------------------------------------------------------- */

static void count_metric(void *userdata, const char *name, vk_metric_kind kind, double value,
                         const vk_field *labels, size_t nlabels)
{
    (void)userdata;
    (void)kind;
    (void)value;
    if (strcmp(name, "redis_cluster_slot_refreshes_total") == 0)
        atomic_fetch_add(&refreshes_seen, 1);
    if (strcmp(name, "redis_cluster_refusals_total") == 0 && nlabels == 1 &&
        strcmp(labels[0].value, "tryagain") == 0)
        atomic_fetch_add(&tryagain_seen, 1);
    if (strcmp(name, "redis_cluster_redirects_total") != 0 || nlabels != 1)
        return;
    if (strcmp(labels[0].value, "moved") == 0)
        atomic_fetch_add(&moved_seen, 1);
    else if (strcmp(labels[0].value, "ask") == 0)
        atomic_fetch_add(&ask_seen, 1);
}

static void watch_log(void *userdata, vk_log_level level, const char *message,
                      const vk_field *fields, size_t nfields)
{
    (void)userdata;
    (void)level;
    (void)fields;
    (void)nfields;
    if (strcmp(message, "connected to Redis/Valkey in cluster mode") == 0)
        atomic_fetch_add(&connected_logs, 1);
}

/* ---- commands and keys ----------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Runs a command of NUL-terminated arguments on client c. */
static vk_status run_with(vk_client *c, vk_reply **out, int argc, const char *const *argv)
{
    size_t len[16];
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    return vk_client_command(out, c, NULL, argc, argv, len);
}

static vk_status run(vk_reply **out, int argc, const char *const *argv)
{
    return run_with(client, out, argc, argv);
}

/* True when the reply is a string (or status) equal to want. */
static bool reply_is(const vk_reply *r, const char *want)
{
    size_t len;
    const char *s = vk_reply_get_string(r, &len);
    return s != NULL && len == strlen(want) && memcmp(s, want, len) == 0 &&
           vk_reply_get_type(r) != VK_REPLY_ERROR;
}

static bool set_key_with(vk_client *c, const char *key, const char *value)
{
    const char *argv[] = { "SET", key, value };
    vk_reply *r = NULL;
    bool ok = run_with(c, &r, 3, argv) == VK_OK && reply_is(r, "OK");
    vk_reply_free(r);
    return ok;
}

static bool set_key(const char *key, const char *value)
{
    return set_key_with(client, key, value);
}

static bool key_equals(const char *key, const char *value)
{
    const char *argv[] = { "GET", key };
    vk_reply *r = NULL;
    bool ok = run(&r, 2, argv) == VK_OK && reply_is(r, value);
    vk_reply_free(r);
    return ok;
}

/* A key named prefix<n>, for the first n whose key node `node` serves. */
static bool key_on_node(char *out, size_t cap, const char *prefix, int node)
{
    for (int n = 0; n < 10000; n++) {
        snprintf(out, cap, "%s%d", prefix, n);
        if (vkt_cluster_key_owner(cluster, out) == node)
            return true;
    }
    return false;
}

static vk_client *new_client(void)
{
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    /* One seed is enough: the others are discovered. */
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cluster, 1))));
    CHECK_OK(vk_config_set_pool_size(cfg, 4));
    /* The credentials reach every node's connections. */
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    CHECK_OK(vk_config_set_metrics(cfg, count_metric, NULL, NULL));
    CHECK_OK(vk_config_set_logger(cfg, watch_log, NULL, NULL));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_key_slots_match_the_server(void)
{
    static const char *const keys[] = {
        "foo", "bar", "user:1000", "{user1000}.following", "{user1000}.followers",
        "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "{", "}", "{}", "a{b", "", "\xff\x01",
        "123456789",
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        int server_slot = vkt_cluster_keyslot(cluster, keys[i]);
        CHECK_EQ_INT(vk__cluster_key_slot(keys[i], strlen(keys[i])), server_slot);
    }
    /* The reference value of the cluster specification. */
    CHECK_EQ_INT(vk__cluster_key_slot("123456789", 9), 0x31C3 & 16383);
}

/* The key table agrees with the server's own COMMAND GETKEYS. */
static void test_key_table_matches_the_server(void)
{
    static const char *const commands[][10] = {
        { "GET", "k1" }, { "SET", "k2", "v", "PX", "10" }, { "MSET", "{t}a", "1", "{t}b", "2" },
        { "MGET", "{t}a", "{t}b", "{t}c" }, { "DEL", "{t}a", "{t}b" },
        { "BLPOP", "{q}1", "{q}2", "0" }, { "RPOPLPUSH", "{q}1", "{q}2" },
        { "EVAL", "return 1", "1", "k3", "arg" }, { "EVALSHA", "abc", "0", "arg" },
        { "ZUNIONSTORE", "{z}d", "2", "{z}a", "{z}b", "WEIGHTS", "1", "2" },
        { "ZINTER", "2", "{z}a", "{z}b" }, { "LMPOP", "1", "l1", "LEFT" },
        { "XREAD", "COUNT", "2", "STREAMS", "{s}1", "{s}2", "0", "0" },
        { "XGROUP", "CREATE", "s3", "g", "$" }, { "OBJECT", "ENCODING", "k4" },
        { "BITOP", "AND", "{b}d", "{b}1", "{b}2" }, { "HSET", "h1", "f", "v" },
        { "EXPIRE", "k5", "10" }, { "PFCOUNT", "{p}1", "{p}2" }, { "ZADD", "z9", "1", "m" },
        { "GEOSEARCHSTORE", "{g}d", "{g}s", "FROMLONLAT", "0", "0", "BYRADIUS", "1", "km" },
    };
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
        const char *args[12] = { "COMMAND", "GETKEYS" };
        size_t lens[12] = { 7, 7 };
        int argc = 0;
        while (argc < 10 && commands[c][argc] != NULL) {
            args[2 + argc] = commands[c][argc];
            lens[2 + argc] = strlen(commands[c][argc]);
            argc++;
        }
        vk_reply *r = NULL;
        vk_status st = vk_client_command(&r, client, NULL, argc + 2, args, lens);
        int ours = vk__command_slot(argc, args + 2, lens + 2);
        int servers = st == VK_OK ? vk__getkeys_slot((const redisReply *)r) : -100;
        VKT_CHECK_(ours == servers, "%s: slot %d, server says %d", commands[c][0], ours, servers);
        vk_reply_free(r);
    }
    /* Keyless commands and what the table leaves to the server. */
    const char *ping[] = { "PING" };
    const size_t ping_len[] = { 4 };
    CHECK_EQ_INT(vk__command_slot(1, ping, ping_len), VK_SLOT_NONE);
    const char *sort[] = { "SORT", "k" };
    const size_t sort_len[] = { 4, 1 };
    CHECK_EQ_INT(vk__command_slot(2, sort, sort_len), VK_SLOT_UNKNOWN);
    const char *cross[] = { "MGET", "a", "b" };
    const size_t cross_len[] = { 4, 1, 1 };
    CHECK_EQ_INT(vk__command_slot(3, cross, cross_len), VK_SLOT_CROSS);
}

static void test_unreachable_seeds(void)
{
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, "127.0.0.1:1"));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_IO,
                "redis cluster: all nodes are unreachable: connection error: dial "
                "127.0.0.1:1: Connection refused");
    CHECK(c == NULL);
    /* A bad seed is skipped when another one answers. */
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cluster, 2))));
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK(c != NULL && vk_client_is_connected(c));
    vk_client_free(c);
    vk_config_free(cfg);
}

/* c's snapshot lists the MASTERS masters of the harness, which serve
 * every slot between them, from at least one slot map loaded. */
static void check_masters(vk_client *c)
{
    vk_snapshot *s = NULL;
    CHECK_OK(vk_client_snapshot(&s, c));
    CHECK_EQ_STR(vk_snapshot_mode(s), "cluster");
    CHECK(vk_snapshot_slot_map_refreshes(s) >= 1);
    CHECK_EQ_INT(vk_snapshot_node_count(s), MASTERS);
    int slots = 0;
    for (size_t i = 0; i < vk_snapshot_node_count(s); i++) {
        const char *address = vk_snapshot_node_address(s, i);
        bool known = false;
        for (int m = 0; m < MASTERS; m++)
            known |= address != NULL &&
                     strcmp(address, vkt_server_address(vkt_cluster_node(cluster, m))) == 0;
        CHECK(known);
        CHECK(vk_snapshot_node_slots(s, i) > 0);
        slots += vk_snapshot_node_slots(s, i);
    }
    CHECK_EQ_INT(slots, 16384);
    CHECK(vk_snapshot_node_address(s, MASTERS) == NULL);
    CHECK_EQ_INT(vk_snapshot_node_slots(s, MASTERS), 0);
    vk_snapshot_free(s);
}

static void test_connects_in_cluster_mode(void)
{
    CHECK(client != NULL);
    CHECK(vk_client_is_connected(client));
    CHECK_EQ_INT(atomic_load(&connected_logs), 1);
    CHECK(atomic_load(&refreshes_seen) >= 1);
    /* The snapshot names the masters, their slots and the maps loaded. */
    check_masters(client);
    vk_snapshot *s = NULL;
    CHECK_OK(vk_client_snapshot(&s, client));
    CHECK(vk_snapshot_master_address(s) == NULL);
    CHECK_EQ_INT(vk_snapshot_master_switches(s), 0);
    vk_snapshot_free(s);
}

/* Redirects followed so far, from the client's snapshot. */
static void redirects_seen(uint64_t *moved, uint64_t *ask)
{
    vk_snapshot *s = NULL;
    CHECK_OK(vk_client_snapshot(&s, client));
    *moved = vk_snapshot_moved_redirects(s);
    *ask = vk_snapshot_ask_redirects(s);
    vk_snapshot_free(s);
}

static void test_keys_on_every_master(void)
{
    bool used[MASTERS] = { false };
    char key[32], value[32];
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "spread:%d", i);
        snprintf(value, sizeof value, "value-%d", i);
        CHECK(set_key(key, value));
        int owner = vkt_cluster_key_owner(cluster, key);
        CHECK(owner >= 0 && owner < MASTERS);
        if (owner >= 0 && owner < MASTERS)
            used[owner] = true;
        /* The node that serves the key holds it. */
        const char *argv[] = { "GET", key };
        char *line = vkt_server_cmd_line(vkt_cluster_node(cluster, owner), argv, 2, 1);
        CHECK_EQ_STR(line, value);
        free(line);
    }
    for (int m = 0; m < MASTERS; m++)
        CHECK(used[m]);
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "spread:%d", i);
        snprintf(value, sizeof value, "value-%d", i);
        CHECK(key_equals(key, value));
    }
}

static void test_hash_tags_share_a_slot(void)
{
    const char *argv[] = { "MSET", "{user:7}:name", "ada", "{user:7}:lang", "c" };
    vk_reply *r = NULL;
    CHECK_OK(run(&r, 5, argv));
    CHECK(reply_is(r, "OK"));
    vk_reply_free(r);
    CHECK_EQ_INT(vkt_cluster_key_owner(cluster, "{user:7}:name"),
                 vkt_cluster_key_owner(cluster, "{user:7}:lang"));
    const char *mget[] = { "MGET", "{user:7}:name", "{user:7}:lang", "{user:7}:none" };
    CHECK_OK(run(&r, 4, mget));
    CHECK_EQ_INT(vk_reply_get_length(r), 3);
    CHECK(reply_is(vk_reply_get_element(r, 0), "ada"));
    CHECK(reply_is(vk_reply_get_element(r, 1), "c"));
    CHECK_EQ_INT(vk_reply_get_type(vk_reply_get_element(r, 2)), VK_REPLY_NIL);
    vk_reply_free(r);
    /* A script over tagged keys goes to their slot's master. */
    const char *eval[] = { "EVAL", "return redis.call('GET', KEYS[1]) .. ARGV[1]", "1",
                           "{user:7}:name", "!" };
    CHECK_OK(run(&r, 5, eval));
    CHECK(reply_is(r, "ada!"));
    vk_reply_free(r);
}

static void test_cross_slot_is_refused(void)
{
    CHECK(vk__cluster_key_slot("alpha", 5) != vk__cluster_key_slot("beta", 4));
    const char *mget[] = { "MGET", "alpha", "beta" };
    vk_reply *r = NULL;
    CHECK_FAILS(run(&r, 3, mget), VK_ERR_INVALID_ARGUMENT, CROSSSLOT_TEXT);
    CHECK(r == NULL);
    const char *del[] = { "DEL", "{x}alpha", "{y}alpha" };
    CHECK_FAILS(run(&r, 3, del), VK_ERR_INVALID_ARGUMENT, CROSSSLOT_TEXT);
    const char *eval[] = { "EVAL", "return 1", "2", "alpha", "beta" };
    CHECK_FAILS(run(&r, 5, eval), VK_ERR_INVALID_ARGUMENT, CROSSSLOT_TEXT);

    /* In a pipeline, nothing is sent. */
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, client));
    const char *set[] = { "SET", "cross:sent", "1" };
    const size_t set_len[] = { 3, 10, 1 };
    const size_t mget_len[] = { 4, 5, 4 };
    CHECK_OK(vk_pipeline_append(p, 3, set, set_len));
    CHECK_OK(vk_pipeline_append(p, 3, mget, mget_len));
    CHECK_FAILS(vk_pipeline_exec(&r, p, NULL), VK_ERR_INVALID_ARGUMENT, CROSSSLOT_TEXT);
    vk_pipeline_free(p);
    const char *exists[] = { "EXISTS", "cross:sent" };
    CHECK_OK(run(&r, 2, exists));
    CHECK_EQ_INT(vk_reply_get_integer(r), 0);
    vk_reply_free(r);
}

static void test_commands_without_a_table_entry(void)
{
    /* SORT is not in the key table: its key is asked of the server. */
    vk_reply *r = NULL;
    const char *push[] = { "RPUSH", "sortme", "3", "1", "2" };
    CHECK_OK(run(&r, 5, push));
    vk_reply_free(r);
    const char *sort[] = { "SORT", "sortme" };
    CHECK_OK(run(&r, 2, sort));
    CHECK_EQ_INT(vk_reply_get_length(r), 3);
    CHECK(reply_is(vk_reply_get_element(r, 0), "1"));
    CHECK(reply_is(vk_reply_get_element(r, 2), "3"));
    vk_reply_free(r);
    /* Keyless commands go to any master. */
    const char *ping[] = { "PING" };
    CHECK_OK(run(&r, 1, ping));
    CHECK(reply_is(r, "PONG"));
    vk_reply_free(r);
    /* An unknown command reaches a server, whose error reply says so. */
    const char *bogus[] = { "NOSUCHCOMMAND", "x" };
    CHECK_OK(run(&r, 2, bogus));
    CHECK_EQ_INT(vk_reply_get_type(r), VK_REPLY_ERROR);
    vk_reply_free(r);
}

/* CLUSTER SETSLOT <slot of key> on node i: IMPORTING/MIGRATING (with the
 * other node's ID) or STABLE. */
static bool set_slot(int node, const char *key, const char *state, int other)
{
    char slot[16];
    snprintf(slot, sizeof slot, "%d", vkt_cluster_keyslot(cluster, key));
    const char *argv[] = { "CLUSTER", "SETSLOT", slot, state,
                           other >= 0 ? vkt_cluster_node_id(cluster, other) : NULL };
    char *line = vkt_server_cmd(vkt_cluster_node(cluster, node), argv, other >= 0 ? 5 : 4);
    bool ok = line != NULL && strcmp(line, "+OK") == 0;
    free(line);
    return ok;
}

/* A blocking command that an ASK sends on to the importing node gets its
 * own timeout for its reply there too, as on its slot's master: not just
 * the read timeout (200 ms here). */
static void test_blocking_command_follows_ask(void)
{
    char key[32];
    CHECK(key_on_node(key, sizeof key, "ask-blpop:", 0));
    /* The slot half-way from node 0 to node 1: node 0 answers ASK for a
     * key it does not have. */
    CHECK(set_slot(1, key, "IMPORTING", 0));
    CHECK(set_slot(0, key, "MIGRATING", 1));
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cluster, 0))));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    CHECK_OK(vk_config_set_read_timeout_ms(cfg, 200));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);

    const char *blpop[] = { "BLPOP", key, "1" };
    vk_reply *r = NULL;
    int64_t started = now_ms();
    CHECK_OK(run_with(c, &r, 3, blpop));
    int64_t took = now_ms() - started;
    CHECK(r != NULL && vk_reply_get_type(r) == VK_REPLY_NIL);
    VKT_CHECK_(took >= 900, "BLPOP k 1 answered after %lld ms", (long long)took);
    vk_reply_free(r);
    vk_snapshot *s = NULL;
    CHECK_OK(vk_client_snapshot(&s, c));
    CHECK_EQ_INT((int)vk_snapshot_ask_redirects(s), 1);
    CHECK_EQ_INT((int)vk_snapshot_moved_redirects(s), 0);
    vk_snapshot_free(s);

    CHECK(set_slot(0, key, "STABLE", -1));
    CHECK(set_slot(1, key, "STABLE", -1));
    vk_client_free(c);
}

static void test_pipeline_spans_every_node(void)
{
    enum { N = 60 };
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, client));
    char keys[N][24], values[N][24];
    bool used[MASTERS] = { false };
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "pipe:%d", i);
        snprintf(values[i], sizeof values[i], "v%d", i * 7);
        const char *set[] = { "SET", keys[i], values[i] };
        const size_t set_len[] = { 3, strlen(keys[i]), strlen(values[i]) };
        const char *get[] = { "GET", keys[i] };
        const size_t get_len[] = { 3, strlen(keys[i]) };
        CHECK_OK(vk_pipeline_append(p, 3, set, set_len));
        CHECK_OK(vk_pipeline_append(p, 2, get, get_len));
    }
    const char *ping[] = { "PING" };
    const size_t ping_len[] = { 4 };
    CHECK_OK(vk_pipeline_append(p, 1, ping, ping_len));
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(r), 2 * N + 1);
    for (int i = 0; i < N && r != NULL; i++) {
        CHECK(reply_is(vk_reply_get_element(r, (size_t)(2 * i)), "OK"));
        CHECK(reply_is(vk_reply_get_element(r, (size_t)(2 * i + 1)), values[i]));
        int owner = vkt_cluster_key_owner(cluster, keys[i]);
        if (owner >= 0 && owner < MASTERS)
            used[owner] = true;
    }
    CHECK(reply_is(vk_reply_get_element(r, 2 * N), "PONG"));
    vk_reply_free(r);
    for (int m = 0; m < MASTERS; m++)
        CHECK(used[m]);
    /* The pipeline is reusable and empty after exec. */
    CHECK_EQ_INT(vk_pipeline_length(p), 0);
    vk_pipeline_free(p);
}

/* The owner of each slot in a, compared by endpoint with b. */
static bool same_owners(const vk_slot_map *a, const vk_slot_map *b)
{
    for (int s = 0; s < VK_CLUSTER_SLOTS; s++) {
        if ((a->owner[s] == 0) != (b->owner[s] == 0))
            return false;
        if (a->owner[s] == 0)
            continue;
        const vk_endpoint *x = &a->nodes[a->owner[s] - 1].endpoint;
        const vk_endpoint *y = &b->nodes[b->owner[s] - 1].endpoint;
        if (x->port != y->port || strcmp(x->host, y->host) != 0)
            return false;
    }
    return true;
}

static void test_slots_and_shards_agree(void)
{
    vk_reply *shards = NULL, *slots = NULL;
    const char *shards_argv[] = { "CLUSTER", "SHARDS" };
    const char *slots_argv[] = { "CLUSTER", "SLOTS" };
    CHECK_OK(run(&shards, 2, shards_argv));
    CHECK_OK(run(&slots, 2, slots_argv));
    vk_endpoint from;
    CHECK_OK(vk__parse_address(&from, vkt_server_address(vkt_cluster_node(cluster, 0))));
    vk_slot_map *a = NULL, *b = NULL;
    CHECK_OK(vk__slot_map_parse(&a, (const redisReply *)shards, true, &from, false, NULL));
    CHECK_OK(vk__slot_map_parse(&b, (const redisReply *)slots, false, &from, false, NULL));
    if (a != NULL && b != NULL) {
        CHECK_EQ_INT(a->node_count, MASTERS);
        CHECK_EQ_INT(b->node_count, MASTERS);
        CHECK_EQ_INT(vk__slot_map_covered(a), VK_CLUSTER_SLOTS);
        CHECK(same_owners(a, b));
        /* The map's owner of a key is the node that serves it. */
        int slot = (int)vk__cluster_key_slot("spread:1", 8);
        int owner = vkt_cluster_key_owner(cluster, "spread:1");
        CHECK_EQ_INT(a->nodes[a->owner[slot] - 1].endpoint.port,
                     vkt_server_port(vkt_cluster_node(cluster, owner)));
    }
    vk__slot_map_unref(a);
    vk__slot_map_unref(b);
    vk_reply_free(shards);
    vk_reply_free(slots);
    /* Replies that are not slot maps are refused, not guessed at. */
    const char *ping[] = { "PING" };
    vk_reply *pong = NULL;
    CHECK_OK(run(&pong, 1, ping));
    CHECK_FAILS(vk__slot_map_parse(&a, (const redisReply *)pong, true, &from, false, NULL),
                VK_ERR_PROTOCOL, "redis cluster: unexpected reply to CLUSTER SHARDS");
    vk_reply_free(pong);
}

/* Where CLUSTER SHARDS is refused (servers before Redis 7.0 do not know
 * it), the client loads the map from CLUSTER SLOTS: here as a user that
 * every node forbids SHARDS but allows everything else. */
static void test_slot_map_from_cluster_slots(void)
{
    for (int i = 0; i < vkt_cluster_size(cluster); i++) {
        const char *acl[] = { "ACL", "SETUSER", "slots-only", "on", ">slots-secret", "~*",
                              "&*", "+@all", "-cluster|shards" };
        char *line = vkt_server_cmd(vkt_cluster_node(cluster, i), acl, 9);
        CHECK_EQ_STR(line, "+OK");
        free(line);
    }
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cluster, 1))));
    CHECK_OK(vk_config_set_static_password(cfg, "slots-only", "slots-secret"));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    if (c == NULL)
        return;
    /* The user really cannot read SHARDS, so the map came from SLOTS. */
    const char *shards[] = { "CLUSTER", "SHARDS" };
    vk_reply *r = NULL;
    CHECK_OK(run_with(c, &r, 2, shards));
    size_t len = 0;
    const char *text = vk_reply_get_string(r, &len);
    CHECK(vk_reply_get_type(r) == VK_REPLY_ERROR && text != NULL && len > 6 &&
          memcmp(text, "NOPERM", 6) == 0);
    vk_reply_free(r);
    check_masters(c);
    /* Keys go to the master that serves them, on every master. */
    for (int m = 0; m < MASTERS; m++) {
        char key[32];
        CHECK(key_on_node(key, sizeof key, "slots:", m));
        CHECK(set_key_with(c, key, key));
        const char *get[] = { "GET", key };
        char *line = vkt_server_cmd_line(vkt_cluster_node(cluster, m), get, 2, 1);
        CHECK_EQ_STR(line, key);
        free(line);
    }
    vk_client_free(c);
}

/* ---- pool gauges per node ------------------------------------------------------ */

#define SERIES_MAX 64

/* The distinct redis_pool_* series a sink saw: "name key=value ...". */
static struct {
    pthread_mutex_t lock;
    int count;
    char line[SERIES_MAX][200];
} pool_series = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void record_pool_series(void *userdata, const char *name, vk_metric_kind kind,
                               double value, const vk_field *labels, size_t nlabels)
{
    (void)userdata;
    (void)kind;
    (void)value;
    if (strncmp(name, "redis_pool_", 11) != 0)
        return;
    char line[200];
    size_t n = (size_t)snprintf(line, sizeof line, "%s", name);
    for (size_t i = 0; i < nlabels && n < sizeof line; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, " %s=%s", labels[i].key,
                              labels[i].value);
    pthread_mutex_lock(&pool_series.lock);
    bool seen = false;
    for (int i = 0; i < pool_series.count && !seen; i++)
        seen = strcmp(pool_series.line[i], line) == 0;
    if (!seen && pool_series.count < SERIES_MAX)
        strcpy(pool_series.line[pool_series.count++], line);
    pthread_mutex_unlock(&pool_series.lock);
}

static bool pool_series_seen(const char *line)
{
    pthread_mutex_lock(&pool_series.lock);
    bool seen = false;
    for (int i = 0; i < pool_series.count && !seen; i++)
        seen = strcmp(pool_series.line[i], line) == 0;
    pthread_mutex_unlock(&pool_series.lock);
    return seen;
}

/* Each master's pool reports its gauges under a node label of its own, so
 * that the masters' series do not overwrite one another. */
static void test_pool_gauges_per_node(void)
{
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cluster, 2))));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    CHECK_OK(vk_config_set_metrics(cfg, record_pool_series, NULL, NULL));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    if (c == NULL)
        return;
    for (int m = 0; m < MASTERS; m++) {
        char key[32];
        CHECK(key_on_node(key, sizeof key, "gauge:", m));
        CHECK(set_key_with(c, key, "1"));
    }
    vk_client_free(c);
    for (int m = 0; m < MASTERS; m++) {
        const char *address = vkt_server_address(vkt_cluster_node(cluster, m));
        char want[3][200];
        snprintf(want[0], sizeof want[0], "redis_pool_connections state=in_use node=%s", address);
        snprintf(want[1], sizeof want[1], "redis_pool_connections state=idle node=%s", address);
        snprintf(want[2], sizeof want[2], "redis_pool_waiters node=%s", address);
        for (int w = 0; w < 3; w++)
            VKT_CHECK_(pool_series_seen(want[w]), "no series \"%s\"", want[w]);
    }
    /* Every series names its node, and only masters have pools. */
    const char *replica = vkt_server_address(vkt_cluster_node(cluster, REPLICA_OF_0));
    pthread_mutex_lock(&pool_series.lock);
    CHECK_EQ_INT(pool_series.count, 3 * MASTERS);
    for (int i = 0; i < pool_series.count; i++) {
        const char *node = strstr(pool_series.line[i], " node=");
        VKT_CHECK_(node != NULL && strcmp(node + 6, replica) != 0, "series \"%s\"",
                   pool_series.line[i]);
    }
    pthread_mutex_unlock(&pool_series.lock);
}

static void test_close_then_reconnect_on_demand(void)
{
    CHECK_OK(vk_client_close(client));
    CHECK(!vk_client_is_connected(client));
    CHECK_OK(vk_client_close(client));   /* twice is harmless */
    CHECK(key_equals("spread:3", "value-3"));
    CHECK(vk_client_is_connected(client));
    CHECK_OK(vk_client_connect(client, NULL));
    CHECK(key_equals("spread:4", "value-4"));
}

static void test_forked_child_uses_its_own_connections(void)
{
    CHECK(set_key("fork:parent", "before"));
    pid_t pid = fork();
    if (pid == 0) {
        bool ok = set_key("fork:child", "from-child") && key_equals("fork:parent", "before");
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The parent's connections were not disturbed by the child. */
    CHECK(key_equals("fork:child", "from-child"));
    CHECK(set_key("fork:parent", "after"));
    CHECK(key_equals("fork:parent", "after"));
}

/* ---- slot migration under load ------------------------------------------------- */

#define MIG_KEYS 20
#define MULTI_KEYS 6
/* Thread 0 runs single commands, thread 1 pipelines, thread 2 multi-key
 * commands. */
#define MIG_THREADS 3

static char mig_keys[MIG_KEYS][24];
static char multi_keys[MULTI_KEYS][24];
static atomic_bool stop_load;
static atomic_int load_errors;
static atomic_long increments[MIG_KEYS];
static atomic_long operations;

/* Counts an INCR reply of key k: an integer, or an error. */
static void count_increment(int k, vk_status st, const vk_reply *r)
{
    if (st == VK_OK && vk_reply_get_type(r) == VK_REPLY_INTEGER) {
        atomic_fetch_add(&increments[k], 1);
        return;
    }
    atomic_fetch_add(&load_errors, 1);
    size_t len = 0;
    const char *text = r != NULL ? vk_reply_get_string(r, &len) : NULL;
    fprintf(stderr, "   INCR %s: %s %.*s\n", mig_keys[k], vk_last_error(), (int)len,
            text != NULL ? text : "");
}

/* Single commands: INCR then GET of a random key. */
static void single_round(unsigned *seed)
{
    int k = (int)(rand_r(seed) % MIG_KEYS);
    const char *incr[] = { "INCR", mig_keys[k] };
    vk_reply *r = NULL;
    vk_status st = run(&r, 2, incr);
    count_increment(k, st, r);
    vk_reply_free(r);
    const char *get[] = { "GET", mig_keys[k] };
    st = run(&r, 2, get);
    if (st != VK_OK || vk_reply_get_type(r) != VK_REPLY_STRING) {
        atomic_fetch_add(&load_errors, 1);
        fprintf(stderr, "   GET %s: %s\n", mig_keys[k], vk_last_error());
    }
    vk_reply_free(r);
    atomic_fetch_add(&operations, 2);
}

/* A pipeline: INCR of four random keys around a key of another slot, so
 * that each batch spans nodes and meets ASK and MOVED per command. */
static void pipeline_round(vk_pipeline *p, unsigned *seed)
{
    int picked[4];
    for (int i = 0; i < 4; i++) {
        picked[i] = (int)(rand_r(seed) % MIG_KEYS);
        const char *incr[] = { "INCR", mig_keys[picked[i]] };
        const size_t len[] = { 4, strlen(mig_keys[picked[i]]) };
        vk_pipeline_append(p, 2, incr, len);
        if (i == 1) {
            const char *get[] = { "GET", "spread:1" };
            const size_t get_len[] = { 3, 8 };
            vk_pipeline_append(p, 2, get, get_len);
        }
    }
    vk_reply *r = NULL;
    vk_status st = vk_pipeline_exec(&r, p, NULL);
    if (st != VK_OK || vk_reply_get_length(r) != 5) {
        atomic_fetch_add(&load_errors, 1);
        fprintf(stderr, "   pipeline: %s\n", vk_last_error());
    } else {
        for (int i = 0; i < 4; i++)
            count_increment(picked[i], st, vk_reply_get_element(r, (size_t)(i < 2 ? i : i + 1)));
        if (!reply_is(vk_reply_get_element(r, 2), "value-1"))
            atomic_fetch_add(&load_errors, 1);
    }
    vk_reply_free(r);
    atomic_fetch_add(&operations, 5);
}

/* Counts a failed multi-key command and says what it got. */
static void multi_error(const char *command, vk_status st, const vk_reply *r)
{
    atomic_fetch_add(&load_errors, 1);
    size_t len = 0;
    const char *text = r != NULL ? vk_reply_get_string(r, &len) : NULL;
    fprintf(stderr, "   %s: %s %.*s\n", command, st != VK_OK ? vk_last_error() : "",
            (int)len, text != NULL ? text : "");
}

/* Round n of multi-key commands on the moving slot: MSET of n to every
 * multi key, MGET of them (all n), and on odd rounds DEL (all of them
 * existed), so that MSET both creates and overwrites keys mid-migration.
 * The harness moves half of these keys before its pause and half after:
 * while they are split, or missing on the target, the nodes refuse these
 * commands with TRYAGAIN, which the client must ride out. */
static void multi_round(long n)
{
    char value[24];
    snprintf(value, sizeof value, "%ld", n);
    const char *mset[1 + 2 * MULTI_KEYS] = { "MSET" };
    const char *mget[1 + MULTI_KEYS] = { "MGET" };
    const char *del[1 + MULTI_KEYS] = { "DEL" };
    for (int k = 0; k < MULTI_KEYS; k++) {
        mset[1 + 2 * k] = multi_keys[k];
        mset[2 + 2 * k] = value;
        mget[1 + k] = del[1 + k] = multi_keys[k];
    }
    vk_reply *r = NULL;
    vk_status st = run(&r, 1 + 2 * MULTI_KEYS, mset);
    if (st != VK_OK || !reply_is(r, "OK"))
        multi_error("MSET", st, r);
    vk_reply_free(r);
    st = run(&r, 1 + MULTI_KEYS, mget);
    bool same = st == VK_OK && vk_reply_get_type(r) == VK_REPLY_ARRAY &&
                vk_reply_get_length(r) == MULTI_KEYS;
    for (size_t k = 0; same && k < MULTI_KEYS; k++)
        same = reply_is(vk_reply_get_element(r, k), value);
    if (!same)
        multi_error("MGET", st, r);
    vk_reply_free(r);
    if (n % 2 == 1) {
        st = run(&r, 1 + MULTI_KEYS, del);
        if (st != VK_OK || vk_reply_get_type(r) != VK_REPLY_INTEGER ||
            vk_reply_get_integer(r) != MULTI_KEYS)
            multi_error("DEL", st, r);
        vk_reply_free(r);
    }
    atomic_fetch_add(&operations, n % 2 == 1 ? 3 : 2);
}

static void *mig_load(void *arg)
{
    int kind = (int)(size_t)arg;
    unsigned seed = (unsigned)kind + 1;
    long rounds = 0;
    vk_pipeline *p = NULL;
    if (kind == 1 && vk_pipeline_new(&p, client) != VK_OK)
        return NULL;
    while (!atomic_load(&stop_load)) {
        if (kind == 0)
            single_round(&seed);
        else if (kind == 1)
            pipeline_round(p, &seed);
        else
            multi_round(++rounds);
    }
    vk_pipeline_free(p);
    return NULL;
}

static void test_slot_migration_under_load(void)
{
    int slot = vkt_cluster_keyslot(cluster, "{migrating}");
    int from = vkt_cluster_key_owner(cluster, "{migrating}");
    CHECK(from >= 0 && from < MASTERS);
    if (from < 0 || from >= MASTERS)
        return;
    int to = (from + 1) % MASTERS;
    /* The harness moves the first half of names, pauses, then the rest:
     * half of the multi keys go in each half. */
    const char *names[MIG_KEYS + MULTI_KEYS];
    int count = 0;
    for (int m = 0; m < MULTI_KEYS; m++)
        snprintf(multi_keys[m], sizeof multi_keys[m], "{migrating}:multi:%d", m);
    for (int k = 0; k < MIG_KEYS; k++) {
        snprintf(mig_keys[k], sizeof mig_keys[k], "{migrating}:%d", k);
        CHECK(set_key(mig_keys[k], "0"));
        if (k == MIG_KEYS / 2)
            for (int m = 0; m < MULTI_KEYS / 2; m++)
                names[count++] = multi_keys[m];
        names[count++] = mig_keys[k];
    }
    for (int m = MULTI_KEYS / 2; m < MULTI_KEYS; m++)
        names[count++] = multi_keys[m];
    int moved_before = atomic_load(&moved_seen), ask_before = atomic_load(&ask_seen);
    int tryagain_before = atomic_load(&tryagain_seen);
    uint64_t moved_counted, ask_counted;
    redirects_seen(&moved_counted, &ask_counted);
    atomic_store(&stop_load, false);
    pthread_t threads[MIG_THREADS];
    for (int t = 0; t < MIG_THREADS; t++)
        pthread_create(&threads[t], NULL, mig_load, (void *)(size_t)t);
    sleep_ms(200);
    CHECK(vkt_cluster_move_slot(cluster, slot, from, to, names, count, 300));
    sleep_ms(300);
    atomic_store(&stop_load, true);
    for (int t = 0; t < MIG_THREADS; t++)
        pthread_join(threads[t], NULL);

    CHECK_EQ_INT(atomic_load(&load_errors), 0);
    CHECK(atomic_load(&operations) > 100);
    /* Every increment that was acknowledged is there, on the new owner. */
    for (int k = 0; k < MIG_KEYS; k++) {
        char want[32];
        snprintf(want, sizeof want, "%ld", atomic_load(&increments[k]));
        CHECK(key_equals(mig_keys[k], want));
        CHECK_EQ_INT(vkt_cluster_key_owner(cluster, mig_keys[k]), to);
    }
    for (int m = 0; m < MULTI_KEYS; m++)
        CHECK_EQ_INT(vkt_cluster_key_owner(cluster, multi_keys[m]), to);
    CHECK(atomic_load(&moved_seen) > moved_before);
    CHECK(atomic_load(&ask_seen) > ask_before);
    /* While the multi keys were split between the nodes (the harness's
     * 300 ms pause), every multi-key command was refused at least once. */
    CHECK(atomic_load(&tryagain_seen) > tryagain_before);
    /* The snapshot counted what the metrics reported. */
    uint64_t moved_after, ask_after;
    redirects_seen(&moved_after, &ask_after);
    CHECK_EQ_INT(moved_after - moved_counted, atomic_load(&moved_seen) - moved_before);
    CHECK_EQ_INT(ask_after - ask_counted, atomic_load(&ask_seen) - ask_before);
    fprintf(stderr, "   migration: %ld operations, %d MOVED, %d ASK, %d TRYAGAIN\n",
            atomic_load(&operations), atomic_load(&moved_seen) - moved_before,
            atomic_load(&ask_seen) - ask_before, atomic_load(&tryagain_seen) - tryagain_before);
}

/* ---- locks --------------------------------------------------------------------- */

#define LOCK_THREADS 4
#define LOCK_ROUNDS 50

static void test_lock_mutual_exclusion(void)
{
    vk_lock_manager *m = NULL;
    CHECK_OK(vk_lock_manager_new(&m, client));
    vkt_contention r;
    vkt_run_contention(m, "cluster:lock", LOCK_THREADS, LOCK_ROUNDS, &r);
    CHECK_EQ_INT(r.counter, LOCK_THREADS * LOCK_ROUNDS);
    CHECK_EQ_INT(r.overlaps, 0);
    CHECK_EQ_INT(r.token_regressions, 0);
    CHECK_EQ_INT(r.failures, 0);

    /* Fencing tokens grow across acquisitions of the same key. */
    vk_lock *a = NULL, *b = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&a, m, NULL, "cluster:fence", 13));
    CHECK(a != NULL);
    CHECK_OK(vk_lock_unlock(a, NULL));
    CHECK_OK(vk_lock_manager_try_lock(&b, m, NULL, "cluster:fence", 13));
    CHECK(b != NULL);
    CHECK(vk_lock_fencing_token(b) > vk_lock_fencing_token(a));
    CHECK_OK(vk_lock_unlock(b, NULL));
    vk_lock_free(a);
    vk_lock_free(b);

    /* Keys whose counter cannot be "{key}:fencing" ('}' but no hash tag),
     * with and without a tag: every lock script finds both keys in one
     * slot (a cross-slot script would fail the unlock and the extend). */
    static const char *const odd_keys[] = {"cluster:a}b", "}", "{}x", "x{}y}"};
    for (size_t i = 0; i < sizeof odd_keys / sizeof odd_keys[0]; i++) {
        const char *key = odd_keys[i];
        vk_lock *held = NULL, *again = NULL;
        CHECK_OK(vk_lock_manager_try_lock(&held, m, NULL, key, strlen(key)));
        CHECK(held != NULL && vk_lock_fencing_token(held) > 0);
        CHECK_OK(vk_lock_extend(held, NULL, 5000));
        CHECK_OK(vk_lock_unlock(held, NULL));
        CHECK_OK(vk_lock_manager_try_lock(&again, m, NULL, key, strlen(key)));
        CHECK(again != NULL && vk_lock_fencing_token(again) > vk_lock_fencing_token(held));
        CHECK_OK(vk_lock_unlock(again, NULL));
        vk_lock_free(held);
        vk_lock_free(again);
    }
    vk_lock_manager_free(m);
}

/* ---- failover ------------------------------------------------------------------- */

static char failover_key[32];
static atomic_long failover_writes;
static atomic_int failover_errors;
static atomic_llong last_failure_ms;

static void *failover_load(void *arg)
{
    (void)arg;
    long n = 0;
    while (!atomic_load(&stop_load)) {
        char value[24];
        snprintf(value, sizeof value, "%ld", ++n);
        if (set_key(failover_key, value)) {
            atomic_store(&failover_writes, n);
        } else {
            atomic_fetch_add(&failover_errors, 1);
            atomic_store(&last_failure_ms, now_ms());
            fprintf(stderr, "   write during failover: %s\n", vk_last_error());
            sleep_ms(10);
        }
    }
    return NULL;
}

static void test_failover_is_followed(void)
{
    CHECK(key_on_node(failover_key, sizeof failover_key, "failover:", 0));
    CHECK(set_key(failover_key, "0"));
    atomic_store(&stop_load, false);
    pthread_t thread;
    pthread_create(&thread, NULL, failover_load, NULL);
    sleep_ms(200);
    int64_t started = now_ms();
    CHECK(vkt_cluster_failover(cluster, REPLICA_OF_0, 20000));
    int64_t switched = now_ms();
    long writes_at_switch = atomic_load(&failover_writes);
    /* Writes go on, now on the promoted replica, without a new client. */
    while (atomic_load(&failover_writes) < writes_at_switch + 50 && now_ms() < switched + 5000)
        sleep_ms(20);
    atomic_store(&stop_load, true);
    pthread_join(thread, NULL);
    CHECK(atomic_load(&failover_writes) >= writes_at_switch + 50);
    CHECK_EQ_INT(vkt_cluster_key_owner(cluster, failover_key), REPLICA_OF_0);
    /* The promoted replica is one of the masters the snapshot lists. */
    vk_snapshot *s = NULL;
    CHECK_OK(vk_client_snapshot(&s, client));
    bool listed = false;
    for (size_t i = 0; i < vk_snapshot_node_count(s); i++)
        listed |= strcmp(vk_snapshot_node_address(s, i),
                         vkt_server_address(vkt_cluster_node(cluster, REPLICA_OF_0))) == 0;
    CHECK(listed);
    vk_snapshot_free(s);
    char want[24];
    snprintf(want, sizeof want, "%ld", atomic_load(&failover_writes));
    CHECK(key_equals(failover_key, want));
    /* A graceful failover loses no write; errors, if any, end with it. */
    CHECK(atomic_load(&failover_errors) == 0 || atomic_load(&last_failure_ms) < switched + 5000);
    fprintf(stderr, "   failover: %lld ms, %d failed writes, %ld writes\n",
            (long long)(switched - started), atomic_load(&failover_errors),
            atomic_load(&failover_writes));
}

static void test_killed_master_is_replaced(void)
{
    /* After the failover above, node REPLICA_OF_0 serves the key and node 0
     * is its replica. Kill the master: the replica is promoted by the
     * cluster, and the same client finds it. */
    vkt_server_kill(vkt_cluster_node(cluster, REPLICA_OF_0));
    int64_t killed = now_ms();
    bool written = false;
    int failures = 0;
    while (!written && now_ms() < killed + 20000) {
        written = set_key(failover_key, "after-kill");
        if (!written) {
            if (failures++ == 0)
                fprintf(stderr, "   first failure: %s\n", vk_last_error());
            sleep_ms(100);
        }
    }
    CHECK(written);
    CHECK(key_equals(failover_key, "after-kill"));
    CHECK_EQ_INT(vkt_cluster_key_owner(cluster, failover_key), 0);
    /* Keys of the other masters were served throughout and still are. */
    CHECK(key_equals("spread:5", "value-5"));
    fprintf(stderr, "   master killed: writes back after %lld ms (%d failed attempts)\n",
            (long long)(now_ms() - killed), failures);
}

/* New credentials (what an IAM token refresh applies) reach the pool of
 * every master: the nodes drop every connection and change the password,
 * and the client, given the new pair, goes on with keys on every master.
 * Last: the harness's own commands use the old password. */
static void test_new_credentials_reach_every_node(void)
{
    for (int i = 0; i < vkt_cluster_size(cluster); i++) {
        vkt_server *node = vkt_cluster_node(cluster, i);
        if (vkt_server_pid(node) <= 0)
            continue;
        const char *kill[] = { "CLIENT", "KILL", "TYPE", "normal" };
        const char *set[] = { "CONFIG", "SET", "requirepass", "rotated-secret" };
        char *killed = vkt_server_cmd(node, kill, 4);
        char *line = vkt_server_cmd(node, set, 4);
        CHECK(killed != NULL && killed[0] == ':');
        CHECK_EQ_STR(line, "+OK");
        free(killed);
        free(line);
    }
    CHECK_OK(vk__client_apply_credentials(client, NULL, "rotated-secret"));
    for (int i = 0; i < 30; i++) {
        char key[32], value[32];
        snprintf(key, sizeof key, "spread:%d", i);
        snprintf(value, sizeof value, "value-%d", i);
        CHECK(key_equals(key, value));
    }
    CHECK(set_key("spread:0", "rotated"));
}

/* A TLS-only cluster: the slot map names the TLS ports, and every
 * master's connections verify the harness CA. */
static void test_tls_cluster(void)
{
    vkt_cluster *tls = vkt_cluster_start(MASTERS, 0, NULL, true);
    CHECK(tls != NULL);
    if (tls == NULL)
        return;
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(tls, 0))));
    CHECK_OK(vk_config_set_tls(cfg, vkt_ca_base64()));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    bool used[MASTERS] = { false };
    char keys[30][16];
    for (int i = 0; i < 30; i++) {
        snprintf(keys[i], sizeof keys[i], "tls:%d", i);
        const char *set[] = { "SET", keys[i], keys[i] };
        const size_t len[] = { 3, strlen(keys[i]), strlen(keys[i]) };
        vk_reply *r = NULL;
        CHECK_OK(vk_client_command(&r, c, NULL, 3, set, len));
        vk_reply_free(r);
        const char *get[] = { "GET", keys[i] };
        CHECK_OK(vk_pipeline_append(p, 2, get, len));
        int owner = vkt_cluster_key_owner(tls, keys[i]);
        if (owner >= 0 && owner < MASTERS)
            used[owner] = true;
    }
    vk_reply *all = NULL;
    CHECK_OK(vk_pipeline_exec(&all, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(all), 30);
    for (int i = 0; i < 30 && all != NULL; i++)
        CHECK(reply_is(vk_reply_get_element(all, (size_t)i), keys[i]));
    vk_reply_free(all);
    for (int m = 0; m < MASTERS; m++)
        CHECK(used[m]);
    vk_pipeline_free(p);
    vk_client_free(c);
    vkt_cluster_stop(tls);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER VKTEST_FAILOVERS */
    cluster = vkt_cluster_start(MASTERS, 1, PASSWORD, false);
    if (cluster == NULL) {
        fprintf(stderr, "cannot start a cluster of %s\n", vkt_server_binary());
        return 1;
    }
    client = new_client();
    if (client != NULL) {
        RUN(test_key_slots_match_the_server);
        RUN(test_connects_in_cluster_mode);
        RUN(test_unreachable_seeds);
        RUN(test_key_table_matches_the_server);
        RUN(test_keys_on_every_master);
        RUN(test_hash_tags_share_a_slot);
        RUN(test_cross_slot_is_refused);
        RUN(test_commands_without_a_table_entry);
        RUN(test_blocking_command_follows_ask);
        RUN(test_pipeline_spans_every_node);
        RUN(test_slots_and_shards_agree);
        RUN(test_slot_map_from_cluster_slots);
        RUN(test_pool_gauges_per_node);
        RUN(test_close_then_reconnect_on_demand);
        RUN(test_forked_child_uses_its_own_connections);
        RUN(test_slot_migration_under_load);
        RUN(test_lock_mutual_exclusion);
        RUN(test_failover_is_followed);
        RUN(test_killed_master_is_replaced);
        RUN(test_new_credentials_reach_every_node);
        RUN(test_tls_cluster);
    }
    vk_client_free(client);
    vkt_cluster_stop(cluster);
    return vkt_finish();
}
