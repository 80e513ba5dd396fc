/*
 * Cluster mode on the event-loop client against a real cluster
 * (VKTEST_NEEDS_SERVER) of 3 masters, masters 0 and 1 with one replica
 * each, every node requiring a password, each scenario on libuv and on
 * libevent: keys on every master (read back on the node that serves
 * them), commands for one master after another each answered at once,
 * hash tags, cross-slot refusals (returned at once, with the
 * blocking client's code and text, nothing sent), keyless commands and
 * commands the key table leaves to COMMAND GETKEYS, pipelines spanning
 * every node with their replies in order, MULTI refused in a cluster
 * pipeline, blocking commands (their own timeout, an ASK followed),
 * cancellation, unreachable seeds, the snapshot, a slot migration under
 * load (MOVED, ASK and TRYAGAIN ridden out, zero failures, every
 * acknowledged write on the new owner), the lock's mutual exclusion, a
 * CLUSTER FAILOVER under load and a killed master replaced by the cluster.
 *
 * The failover and kill scenarios come last: libuv's use shard 0,
 * libevent's shard 1, so that each has a replica to promote.
 */
#include "vktest.h"
#include "clusters.h"
#include "readback.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MASTERS 3
#define REPLICATED 2              /* masters 0 and 1 have a replica: node MASTERS + i */
#define PASSWORD "async-cluster-secret"
#define MS 1000                   /* microseconds in a millisecond */

static const char CROSSSLOT_TEXT[] =
    "invalid argument: CROSSSLOT keys in request don't hash to the same slot";
static const char CLUSTER_MULTI_TEXT[] =
    "command not allowed on a shared connection: MULTI, EXEC and DISCARD in a cluster "
    "pipeline, which is split by node: a transaction cannot be kept on one connection (use "
    "a transaction pipeline, its keys in one slot)";

static vkt_cluster *cluster;
static vk_client *checker;   /* a blocking cluster client, to compare and to read */

/* ---- metrics ------------------------------------------------------------------------ */

/* The cluster counters one client reported. */
typedef struct counts {
    atomic_int moved, ask, refreshes, tryagain, refusals;
} counts;

static void count_metric(void *userdata, const char *name, vk_metric_kind kind, double value,
                         const vk_field *labels, size_t nlabels)
{
    counts *m = userdata;
    (void)kind;
    (void)value;
    if (strcmp(name, "redis_cluster_slot_refreshes_total") == 0) {
        atomic_fetch_add(&m->refreshes, 1);
    } else if (strcmp(name, "redis_cluster_refusals_total") == 0 && nlabels == 1) {
        atomic_fetch_add(&m->refusals, 1);
        if (strcmp(labels[0].value, "tryagain") == 0)
            atomic_fetch_add(&m->tryagain, 1);
    } else if (strcmp(name, "redis_cluster_redirects_total") == 0 && nlabels == 1) {
        if (strcmp(labels[0].value, "moved") == 0)
            atomic_fetch_add(&m->moved, 1);
        else if (strcmp(labels[0].value, "ask") == 0)
            atomic_fetch_add(&m->ask, 1);
    }
}

/* ---- clients ------------------------------------------------------------------------ */

/* A cluster config with node `seed` as the only seed (the others are
 * discovered), the password, and m's counters (m may be NULL). */
static vk_config *cluster_config(int seed, counts *m)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg,
                                           vkt_server_address(vkt_cluster_node(cluster, seed))));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    if (m != NULL)
        CHECK_OK(vk_config_set_metrics(cfg, count_metric, m, NULL));
    return cfg;
}

static vk_async *new_client(vkt_loop *loop, int seed, counts *m)
{
    vk_config *cfg = cluster_config(seed, m);
    vk_async *a = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    return a;
}

/* A blocking standalone client of node i (for INFO). */
static vk_client *node_client(int i)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(vkt_cluster_node(cluster, i)));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

/* ---- commands through the event-loop client ---------------------------------------- */

/* The reply's string is text and it is not an error reply. */
static bool reply_is(const vk_reply *r, const char *text)
{
    return r != NULL && vk_reply_get_type(r) != VK_REPLY_ERROR && vkt_reply_is(r, text);
}

static bool async_set(vkt_loop *loop, vk_async *a, const char *key, const char *value)
{
    vkt_op op = {0};
    const char *argv[] = {"SET", key, value};
    bool ok = vkt_call(loop, a, &op, 3, argv) && op.status == VK_OK && reply_is(op.reply, "OK");
    if (!ok)
        fprintf(stderr, "   SET %s: %s\n", key, op.status != VK_OK ? op.error : "not OK");
    vkt_op_clear(&op);
    return ok;
}

static bool async_get_is(vkt_loop *loop, vk_async *a, const char *key, const char *want)
{
    vkt_op op = {0};
    const char *argv[] = {"GET", key};
    bool ok = vkt_call(loop, a, &op, 2, argv) && op.status == VK_OK && reply_is(op.reply, want);
    if (!ok)
        fprintf(stderr, "   GET %s: %s\n", key, op.status != VK_OK ? op.error : "not as wanted");
    vkt_op_clear(&op);
    return ok;
}

/* Several operations, each with its vkt_op. */
typedef struct op_set {
    vkt_op *ops;
    int n;
} op_set;

static bool all_done(void *arg)
{
    op_set *s = arg;
    for (int i = 0; i < s->n; i++) {
        if (s->ops[i].calls == 0)
            return false;
    }
    return true;
}

/* ---- the cluster, seen from the nodes ----------------------------------------------- */

static bool node_is_master(int i)
{
    const char *argv[] = {"ROLE"};
    char *role = vkt_server_cmd_line(vkt_cluster_node(cluster, i), argv, 1, 2);
    bool yes = role != NULL && strcmp(role, "master") == 0;
    free(role);
    return yes;
}

/* A replica whose link to its master is up. */
static bool replica_in_sync(int i)
{
    const char *argv[] = {"ROLE"};
    char *role = vkt_server_cmd_line(vkt_cluster_node(cluster, i), argv, 1, 2);
    char *link = vkt_server_cmd_line(vkt_cluster_node(cluster, i), argv, 1, 7);
    bool ok = role != NULL && strcmp(role, "slave") == 0 && link != NULL &&
              strcmp(link, "connected") == 0;
    free(role);
    free(link);
    return ok;
}

/* The node index at address; -1 when none. */
static int node_at(const char *address)
{
    for (int i = 0; address != NULL && i < vkt_cluster_size(cluster); i++) {
        if (strcmp(vkt_server_address(vkt_cluster_node(cluster, i)), address) == 0)
            return i;
    }
    return -1;
}

/* The value of key on node i (malloc'd), NULL when it has none. */
static char *node_get(int i, const char *key)
{
    return vkt_node_get(vkt_cluster_node(cluster, i), key);
}

static bool node_value_is(int i, const char *key, const char *want)
{
    char *value = node_get(i, key);
    bool same = value != NULL && strcmp(value, want) == 0;
    if (!same)
        fprintf(stderr, "   node %d has %s = %s, want %s\n", i, key, value ? value : "(nil)",
                want);
    free(value);
    return same;
}

/* A key named <prefix><n>, for the first n whose key node `node` serves. */
static bool key_on_node(char *out, size_t cap, const char *prefix, int node)
{
    for (int n = 0; n < 10000; n++) {
        snprintf(out, cap, "%s%d", prefix, n);
        if (vkt_cluster_key_owner(cluster, out) == node)
            return true;
    }
    return false;
}

/* INFO commandstats's calls of COMMAND GETKEYS, summed over the masters. */
static long long getkeys_calls(void)
{
    long long total = 0;
    for (int i = 0; i < vkt_cluster_size(cluster); i++) {
        if (vkt_server_pid(vkt_cluster_node(cluster, i)) <= 0 || !node_is_master(i))
            continue;
        vk_client *c = node_client(i);
        vk_reply *r = NULL;
        if (c != NULL && vkt_blocking_run(c, &r, 2, (const char *[]){"INFO", "commandstats"}) ==
                             VK_OK) {
            size_t len = 0;
            const char *s = vk_reply_get_string(r, &len);
            static const char field[] = "cmdstat_command|getkeys:calls=";
            const char *at = s != NULL ? memmem(s, len, field, strlen(field)) : NULL;
            if (at != NULL)
                total += atoll(at + strlen(field));
        }
        vk_reply_free(r);
        vk_client_free(c);
    }
    return total;
}

/* ---- the snapshot ------------------------------------------------------------------- */

/* The snapshot of a client in service: cluster mode, the masters serving
 * every slot between them, no sentinel master, the maps loaded as the
 * metrics counted them (when m is not NULL). */
static void check_snapshot(vk_async *a, counts *m)
{
    vk_snapshot *s = NULL;
    CHECK_OK(vk_async_snapshot(&s, a));
    if (s == NULL)
        return;
    CHECK_EQ_STR(vk_snapshot_mode(s), "cluster");
    CHECK_EQ_INT(vk_snapshot_connected(s), vk_async_is_connected(a));
    CHECK(vk_snapshot_master_address(s) == NULL);
    CHECK_EQ_INT(vk_snapshot_master_switches(s), 0);
    CHECK(vk_snapshot_slot_map_refreshes(s) >= 1);
    if (m != NULL) {
        CHECK_EQ_INT(vk_snapshot_slot_map_refreshes(s), atomic_load(&m->refreshes));
        CHECK_EQ_INT(vk_snapshot_moved_redirects(s), atomic_load(&m->moved));
        CHECK_EQ_INT(vk_snapshot_ask_redirects(s), atomic_load(&m->ask));
    }
    CHECK_EQ_INT(vk_snapshot_node_count(s), MASTERS);
    int slots = 0;
    for (size_t i = 0; i < vk_snapshot_node_count(s); i++) {
        int node = node_at(vk_snapshot_node_address(s, i));
        VKT_CHECK_(node >= 0 && node_is_master(node), "snapshot node %s is not a master",
                   vk_snapshot_node_address(s, i) ? vk_snapshot_node_address(s, i) : "(null)");
        CHECK(vk_snapshot_node_slots(s, i) > 0);
        slots += vk_snapshot_node_slots(s, i);
    }
    CHECK_EQ_INT(slots, 16384);
    CHECK(vk_snapshot_node_address(s, MASTERS) == NULL);
    vk_snapshot_free(s);
}

/* The snapshot lists the node at address among its masters. */
static bool snapshot_lists(vk_async *a, const char *address)
{
    vk_snapshot *s = NULL;
    bool listed = false;
    if (vk_async_snapshot(&s, a) == VK_OK) {
        for (size_t i = 0; i < vk_snapshot_node_count(s); i++)
            listed |= strcmp(vk_snapshot_node_address(s, i), address) == 0;
    }
    vk_snapshot_free(s);
    return listed;
}

/* ---- keys and routing ---------------------------------------------------------------- */

/* Configured with one seed: no I/O before the first command; 30 SETs in
 * flight at once land each on the master that serves its key, on every
 * master, with no redirect (the map was loaded first); the GETs read them
 * back; the blocking client agrees. */
static void test_keys_on_every_master(vkt_loop *loop)
{
    enum { N = 30 };
    const char *name = vkt_loop_name(loop);
    counts m = {0};
    vk_async *a = new_client(loop, 1, &m);
    if (a == NULL)
        return;
    CHECK(!vk_async_is_connected(a));
    CHECK_EQ_INT(vk_async_pending(a), 0);
    vk_snapshot *s = NULL;
    CHECK_OK(vk_async_snapshot(&s, a));
    if (s != NULL) {
        CHECK_EQ_STR(vk_snapshot_mode(s), "cluster");
        CHECK_EQ_INT(vk_snapshot_connected(s), 0);
        CHECK_EQ_INT(vk_snapshot_node_count(s), 0);
        CHECK_EQ_INT(vk_snapshot_slot_map_refreshes(s), 0);
    }
    vk_snapshot_free(s);
    CHECK_EQ_INT(atomic_load(&m.refreshes), 0);

    static char keys[N][48], values[N][48];
    static vkt_op ops[N];
    memset(ops, 0, sizeof ops);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "spread:%s:%d", name, i);
        snprintf(values[i], sizeof values[i], "%s-value-%d", name, i);
        const char *argv[] = {"SET", keys[i], values[i]};
        CHECK_OK(vkt_submit(a, &ops[i], NULL, 3, argv));
    }
    CHECK_EQ_INT(vk_async_pending(a), N);
    op_set set = {ops, N};
    CHECK(vkt_loop_run_until(loop, all_done, &set, 10000));
    bool used[MASTERS] = {false};
    for (int i = 0; i < N; i++) {
        VKT_CHECK_(ops[i].status == VK_OK && reply_is(ops[i].reply, "OK"), "SET %s: %d %s",
                   keys[i], (int)ops[i].status, ops[i].error);
        int owner = vkt_cluster_key_owner(cluster, keys[i]);
        CHECK(owner >= 0 && owner < MASTERS);
        if (owner >= 0 && owner < MASTERS)
            used[owner] = true;
        /* The node that serves the key holds it. */
        if (owner >= 0)
            CHECK(node_value_is(owner, keys[i], values[i]));
        vkt_op_clear(&ops[i]);
    }
    for (int i = 0; i < MASTERS; i++)
        VKT_CHECK_(used[i], "no key landed on master %d", i);
    CHECK(vk_async_is_connected(a));

    for (int i = 0; i < N; i++) {
        const char *argv[] = {"GET", keys[i]};
        CHECK_OK(vkt_submit(a, &ops[i], NULL, 2, argv));
    }
    CHECK(vkt_loop_run_until(loop, all_done, &set, 10000));
    char buf[64];
    for (int i = 0; i < N; i++) {
        VKT_CHECK_(ops[i].status == VK_OK && reply_is(ops[i].reply, values[i]), "GET %s: %d %s",
                   keys[i], (int)ops[i].status, ops[i].error);
        CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2,
                                       (const char *[]){"GET", keys[i]}),
                     values[i]);
        vkt_op_clear(&ops[i]);
    }
    /* Routed by the map: no redirect; the maps loaded were counted. */
    CHECK_EQ_INT(atomic_load(&m.moved), 0);
    CHECK_EQ_INT(atomic_load(&m.ask), 0);
    CHECK(atomic_load(&m.refreshes) >= 1);
    check_snapshot(a, &m);
    vk_async_free(a);
}

/* One command at a time, each for another master than the one before:
 * each is answered at once (not when a timer, such as the read timeout,
 * moves the client on). */
static void test_alternating_masters_answer_promptly(vkt_loop *loop)
{
    char keys[MASTERS][64];
    for (int node = 0; node < MASTERS; node++) {
        char prefix[40];
        snprintf(prefix, sizeof prefix, "alternate:%s:", vkt_loop_name(loop));
        CHECK(key_on_node(keys[node], sizeof keys[node], prefix, node));
    }
    long long slowest = 0;
    int slowest_round = -1, slowest_node = -1;
    for (int round = 0; round < 6; round++) {
        /* A fresh client each round, seeded at the next node. */
        vk_async *a = new_client(loop, round % MASTERS, NULL);
        if (a == NULL)
            return;
        for (int i = 0; i < 3 * MASTERS; i++) {
            int node = (round + i) % MASTERS;
            vkt_op op = {0};
            int64_t started = vkt_now_ms();
            CHECK(vkt_call(loop, a, &op, 2, (const char *[]){"INCR", keys[node]}));
            long long took = vkt_now_ms() - started;
            CHECK(op.status == VK_OK && vk_reply_get_type(op.reply) == VK_REPLY_INTEGER);
            vkt_op_clear(&op);
            if (took > slowest) {
                slowest = took;
                slowest_round = round;
                slowest_node = node;
            }
        }
        vk_async_free(a);
    }
    VKT_CHECK_(slowest < vkt_scaled_ms(1000),
               "an INCR for master %d took %lld ms (client %d)", slowest_node, slowest,
               slowest_round);
}

static void test_hash_tags_share_a_slot(vkt_loop *loop)
{
    char name_key[48], lang_key[48], none_key[48];
    snprintf(name_key, sizeof name_key, "{user:%s}:name", vkt_loop_name(loop));
    snprintf(lang_key, sizeof lang_key, "{user:%s}:lang", vkt_loop_name(loop));
    snprintf(none_key, sizeof none_key, "{user:%s}:none", vkt_loop_name(loop));
    vk_async *a = new_client(loop, 0, NULL);
    if (a == NULL)
        return;
    vkt_op op = {0};
    CHECK(vkt_call(loop, a, &op, 5, (const char *[]){"MSET", name_key, "ada", lang_key, "c"}));
    CHECK(op.status == VK_OK && reply_is(op.reply, "OK"));
    vkt_op_clear(&op);
    int owner = vkt_cluster_key_owner(cluster, name_key);
    CHECK(owner >= 0);
    CHECK_EQ_INT(vkt_cluster_key_owner(cluster, lang_key), owner);
    if (owner >= 0) {
        CHECK(node_value_is(owner, name_key, "ada"));
        CHECK(node_value_is(owner, lang_key, "c"));
    }
    CHECK(vkt_call(loop, a, &op, 4, (const char *[]){"MGET", name_key, lang_key, none_key}));
    CHECK(op.status == VK_OK && vk_reply_get_length(op.reply) == 3);
    if (op.status == VK_OK && vk_reply_get_length(op.reply) == 3) {
        CHECK(reply_is(vk_reply_get_element(op.reply, 0), "ada"));
        CHECK(reply_is(vk_reply_get_element(op.reply, 1), "c"));
        CHECK_EQ_INT(vk_reply_get_type(vk_reply_get_element(op.reply, 2)), VK_REPLY_NIL);
    }
    vkt_op_clear(&op);
    /* A script over tagged keys goes to their slot's master. */
    CHECK(vkt_call(loop, a, &op, 5,
                   (const char *[]){"EVAL", "return redis.call('GET', KEYS[1]) .. ARGV[1]", "1",
                                    name_key, "!"}));
    CHECK(op.status == VK_OK && reply_is(op.reply, "ada!"));
    vkt_op_clear(&op);
    CHECK(vkt_call(loop, a, &op, 3, (const char *[]){"DEL", name_key, lang_key}));
    CHECK(op.status == VK_OK && vk_reply_get_integer(op.reply) == 2);
    vkt_op_clear(&op);
    vk_async_free(a);
}

/* Cross-slot commands are refused when queued, with the blocking client's
 * code and text: no completion, nothing pending, nothing sent; in a
 * pipeline the whole pipeline, which empties. Before and after the first
 * connection alike. */
static void test_cross_slot_is_refused(vkt_loop *loop)
{
    static const char *const commands[][6] = {
        {"MGET", "alpha", "beta"},
        {"DEL", "{x}alpha", "{y}alpha"},
        {"EVAL", "return 1", "2", "alpha", "beta"},
        {"MSET", "alpha", "1", "beta", "2"},
    };
    static const int argcs[] = {3, 3, 5, 5};
    vk_async *a = new_client(loop, 2, NULL);
    if (a == NULL)
        return;
    char sent_key[48];
    snprintf(sent_key, sizeof sent_key, "cross:sent:%s", vkt_loop_name(loop));
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", sent_key});
    for (int round = 0; round < 2; round++) {
        if (round == 1)   /* now connected */
            CHECK(async_set(loop, a, "cross:warm", "1"));
        vkt_op op = {0};
        for (size_t c = 0; c < sizeof argcs / sizeof argcs[0]; c++) {
            vk_reply *r = NULL;
            CHECK_FAILS(vkt_blocking_run(checker, &r, argcs[c], commands[c]),
                        VK_ERR_INVALID_ARGUMENT, CROSSSLOT_TEXT);
            uint64_t id = 0;
            CHECK_FAILS(vkt_submit(a, &op, &id, argcs[c], commands[c]), VK_ERR_INVALID_ARGUMENT,
                        CROSSSLOT_TEXT);
            CHECK_EQ_INT(vk_async_pending(a), 0);
        }
        vk_pipeline *p = NULL;
        CHECK_OK(vk_async_pipeline_new(&p, a));
        if (p != NULL) {
            const size_t set_len[] = {3, strlen(sent_key), 1};
            const size_t mget_len[] = {4, 5, 4};
            CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", sent_key, "1"}, set_len));
            CHECK_OK(vk_pipeline_append(p, 3, commands[0], mget_len));
            CHECK_FAILS(vkt_pipeline_submit(p, vkt_op_fn, &op, NULL), VK_ERR_INVALID_ARGUMENT,
                        CROSSSLOT_TEXT);
            CHECK_EQ_INT(vk_pipeline_length(p), 0);
            CHECK_EQ_INT(vk_async_pending(a), 0);
        }
        vkt_loop_run_for(loop, 100);
        CHECK_EQ_INT(op.calls, 0);
        CHECK_EQ_INT(vkt_blocking_integer(checker, 2, (const char *[]){"EXISTS", sent_key}), 0);
        /* The client and the pipeline go on. */
        if (p != NULL) {
            const size_t set_len[] = {3, strlen(sent_key), 2};
            const size_t get_len[] = {3, strlen(sent_key)};
            CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", sent_key, "ok"}, set_len));
            CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"GET", sent_key}, get_len));
            CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &op, NULL));
            CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
            CHECK(op.status == VK_OK && vk_reply_get_length(op.reply) == 2 &&
                  reply_is(vk_reply_get_element(op.reply, 0), "OK") &&
                  reply_is(vk_reply_get_element(op.reply, 1), "ok"));
            vkt_op_clear(&op);
            vkt_blocking_do(checker, 2, (const char *[]){"DEL", sent_key});
        }
        vk_pipeline_free(p);
    }
    vk_async_free(a);
}

/* Keyless commands go to any master; SORT, which the key table leaves to
 * the server, is located with COMMAND GETKEYS (the masters count the
 * calls) and goes straight to the key's master (no redirect), on every
 * master; an unknown command reaches a server, whose error reply says so. */
static void test_commands_without_a_table_entry(vkt_loop *loop)
{
    counts m = {0};
    vk_async *a = new_client(loop, 0, &m);
    if (a == NULL)
        return;
    vkt_op op = {0};
    CHECK(vkt_call(loop, a, &op, 1, (const char *[]){"PING"}));
    CHECK(op.status == VK_OK && reply_is(op.reply, "PONG"));
    vkt_op_clear(&op);
    for (int node = 0; node < MASTERS; node++) {
        char prefix[40], key[64];
        snprintf(prefix, sizeof prefix, "sortme:%s:", vkt_loop_name(loop));
        CHECK(key_on_node(key, sizeof key, prefix, node));
        vkt_blocking_do(checker, 2, (const char *[]){"DEL", key});
        CHECK(vkt_call(loop, a, &op, 5, (const char *[]){"RPUSH", key, "3", "1", "2"}));
        CHECK(op.status == VK_OK && vk_reply_get_integer(op.reply) == 3);
        vkt_op_clear(&op);
        long long getkeys_before = getkeys_calls();
        int moved_before = atomic_load(&m.moved), ask_before = atomic_load(&m.ask);
        CHECK(vkt_call(loop, a, &op, 2, (const char *[]){"SORT", key}));
        CHECK(op.status == VK_OK && vk_reply_get_type(op.reply) == VK_REPLY_ARRAY &&
              vk_reply_get_length(op.reply) == 3);
        if (op.status == VK_OK && vk_reply_get_length(op.reply) == 3) {
            CHECK(reply_is(vk_reply_get_element(op.reply, 0), "1"));
            CHECK(reply_is(vk_reply_get_element(op.reply, 1), "2"));
            CHECK(reply_is(vk_reply_get_element(op.reply, 2), "3"));
        }
        vkt_op_clear(&op);
        VKT_CHECK_(getkeys_calls() > getkeys_before, "no COMMAND GETKEYS for SORT on node %d",
                   node);
        CHECK_EQ_INT(atomic_load(&m.moved), moved_before);
        CHECK_EQ_INT(atomic_load(&m.ask), ask_before);
        /* SORT ... STORE writes: it went to the key's master. */
        char dest[80];
        snprintf(dest, sizeof dest, "{%s}:sorted", key);
        CHECK(vkt_call(loop, a, &op, 4, (const char *[]){"SORT", key, "STORE", dest}));
        VKT_CHECK_(op.status == VK_OK && vk_reply_get_type(op.reply) == VK_REPLY_INTEGER &&
                       vk_reply_get_integer(op.reply) == 3,
                   "SORT %s STORE %s: %d %s", key, dest, (int)op.status, op.error);
        vkt_op_clear(&op);
        CHECK_EQ_INT(vkt_blocking_integer(checker, 2, (const char *[]){"LLEN", dest}), 3);
        vkt_blocking_do(checker, 2, (const char *[]){"DEL", dest});
    }
    /* Keys of two slots that only the server can name: the blocking
     * client's refusal, as the operation's failure (nothing was written). */
    char one[64], two[64];
    snprintf(one, sizeof one, "sort-cross:%s:a", vkt_loop_name(loop));
    snprintf(two, sizeof two, "sort-cross:%s:b", vkt_loop_name(loop));
    CHECK(vkt_cluster_keyslot(cluster, one) != vkt_cluster_keyslot(cluster, two));
    const char *sort_cross[] = {"SORT", one, "STORE", two};
    vk_reply *r = NULL;
    CHECK_FAILS(vkt_blocking_run(checker, &r, 4, sort_cross), VK_ERR_INVALID_ARGUMENT,
                CROSSSLOT_TEXT);
    vk_status st = vkt_submit(a, &op, NULL, 4, sort_cross);
    if (st == VK_OK) {
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
        CHECK_EQ_INT(op.status, VK_ERR_INVALID_ARGUMENT);
        CHECK_EQ_STR(op.error, CROSSSLOT_TEXT);
    } else {
        CHECK_FAILS(st, VK_ERR_INVALID_ARGUMENT, CROSSSLOT_TEXT);
    }
    vkt_op_clear(&op);
    CHECK_EQ_INT(vkt_blocking_integer(checker, 2, (const char *[]){"EXISTS", two}), 0);
    CHECK(vkt_call(loop, a, &op, 2, (const char *[]){"NOSUCHCOMMAND", "x"}));
    CHECK(op.status == VK_OK && vkt_reply_error_starts(op.reply, "ERR unknown command"));
    vkt_op_clear(&op);
    vk_async_free(a);
}

/* ---- pipelines ------------------------------------------------------------------------- */

/* 60 SET/GET pairs and a PING in one pipeline, split over every master:
 * one reply per command, in order; the pipeline is empty after exec and
 * runs again; two pipelines and single commands in flight at once. */
static void test_pipeline_spans_every_node(vkt_loop *loop)
{
    enum { N = 60 };
    vk_async *a = new_client(loop, 1, NULL);
    if (a == NULL)
        return;
    vk_pipeline *p = NULL, *q = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, a));
    CHECK_OK(vk_async_pipeline_new(&q, a));
    if (p == NULL || q == NULL) {
        vk_pipeline_free(p);
        vk_pipeline_free(q);
        vk_async_free(a);
        return;
    }
    static char keys[N][48], values[N][48];
    bool used[MASTERS] = {false};
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "pipe:%s:%d", vkt_loop_name(loop), i);
        snprintf(values[i], sizeof values[i], "v%d", i * 7);
        const size_t set_len[] = {3, strlen(keys[i]), strlen(values[i])};
        const size_t get_len[] = {3, strlen(keys[i])};
        CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", keys[i], values[i]}, set_len));
        CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"GET", keys[i]}, get_len));
    }
    CHECK_OK(vk_pipeline_append(p, 1, (const char *[]){"PING"}, (const size_t[]){4}));
    CHECK_EQ_INT(vk_pipeline_length(p), 2 * N + 1);
    vkt_op op = {0};
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &op, NULL));
    CHECK_EQ_INT(vk_pipeline_length(p), 0);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
    CHECK(op.status == VK_OK && vk_reply_get_length(op.reply) == 2 * N + 1);
    if (op.status == VK_OK && vk_reply_get_length(op.reply) == 2 * N + 1) {
        for (int i = 0; i < N; i++) {
            VKT_CHECK_(reply_is(vk_reply_get_element(op.reply, (size_t)(2 * i)), "OK") &&
                           reply_is(vk_reply_get_element(op.reply, (size_t)(2 * i + 1)),
                                    values[i]),
                       "replies %d and %d", 2 * i, 2 * i + 1);
        }
        CHECK(reply_is(vk_reply_get_element(op.reply, 2 * N), "PONG"));
    }
    vkt_op_clear(&op);
    for (int i = 0; i < N; i++) {
        int owner = vkt_cluster_key_owner(cluster, keys[i]);
        if (owner >= 0 && owner < MASTERS)
            used[owner] = true;
        if (i % 10 == 0 && owner >= 0)
            CHECK(node_value_is(owner, keys[i], values[i]));
    }
    for (int i = 0; i < MASTERS; i++)
        VKT_CHECK_(used[i], "no key of the pipeline on master %d", i);

    /* Again, with INCRs, next to a second pipeline and single commands. */
    vkt_op first = {0}, second = {0}, single[3];
    memset(single, 0, sizeof single);
    for (int i = 0; i < N; i++) {
        const size_t len[] = {3, strlen(keys[i]), 1};
        CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", keys[i], "0"}, len));
        CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"INCR", keys[i]},
                                    (const size_t[]){4, strlen(keys[i])}));
        CHECK_OK(vk_pipeline_append(q, 2, (const char *[]){"STRLEN", keys[N - 1 - i]},
                                    (const size_t[]){6, strlen(keys[N - 1 - i])}));
    }
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &first, NULL));
    for (int i = 0; i < 3; i++)
        CHECK_OK(vkt_submit(a, &single[i], NULL, 1, (const char *[]){"PING"}));
    CHECK_OK(vkt_pipeline_submit(q, vkt_op_fn, &second, NULL));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &first, 10000));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &second, 10000));
    op_set singles = {single, 3};
    CHECK(vkt_loop_run_until(loop, all_done, &singles, 10000));
    CHECK(first.status == VK_OK && vk_reply_get_length(first.reply) == 2 * N);
    CHECK(second.status == VK_OK && vk_reply_get_length(second.reply) == N);
    if (first.status == VK_OK && vk_reply_get_length(first.reply) == 2 * N &&
        second.status == VK_OK && vk_reply_get_length(second.reply) == N) {
        for (int i = 0; i < N; i++) {
            CHECK(reply_is(vk_reply_get_element(first.reply, (size_t)(2 * i)), "OK"));
            CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(first.reply,
                                                                   (size_t)(2 * i + 1))),
                         1);
            /* STRLEN of the key in reverse order: "v<7 (N-1-i)>" or "1" */
            long long len = vk_reply_get_integer(vk_reply_get_element(second.reply, (size_t)i));
            CHECK(len == 1 || len == (long long)strlen(values[N - 1 - i]));
        }
    }
    for (int i = 0; i < 3; i++) {
        CHECK(single[i].status == VK_OK && reply_is(single[i].reply, "PONG"));
        vkt_op_clear(&single[i]);
    }
    vkt_op_clear(&first);
    vkt_op_clear(&second);
    char buf[32];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2,
                                   (const char *[]){"GET", keys[N / 2]}),
                 "1");
    vk_pipeline_free(p);
    vk_pipeline_free(q);
    vk_async_free(a);
}

/* MULTI in a cluster pipeline: refused at append and at exec with the
 * blocking cluster pipeline's code and text, nothing sent; the pipeline
 * goes on. On a client that has not connected yet, as on one that has. */
static void test_pipeline_transaction_refused(vkt_loop *loop)
{
    char key[48];
    snprintf(key, sizeof key, "{refused}:%s", vkt_loop_name(loop));
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", key});
    const size_t set_len[] = {3, strlen(key), 1};
    const size_t get_len[] = {3, strlen(key)};
    const size_t one[] = {5};
    /* The blocking cluster pipeline's texts. */
    vk_pipeline *bp = NULL;
    CHECK_OK(vk_pipeline_new(&bp, checker));
    CHECK_FAILS(vk_pipeline_append(bp, 1, (const char *[]){"MULTI"}, one),
                VK_ERR_COMMAND_NOT_ALLOWED, CLUSTER_MULTI_TEXT);
    vk_reply *r = NULL;
    CHECK_FAILS(vk_pipeline_exec(&r, bp, NULL), VK_ERR_COMMAND_NOT_ALLOWED, CLUSTER_MULTI_TEXT);
    vk_pipeline_free(bp);

    vk_async *a = new_client(loop, 0, NULL);
    if (a == NULL)
        return;
    for (int round = 0; round < 2; round++) {
        vk_pipeline *p = NULL;
        CHECK_OK(vk_async_pipeline_new(&p, a));
        if (p == NULL)
            break;
        vkt_op op = {0};
        /* A transaction pipeline is not kept together here yet. */
        CHECK_OK(vk_pipeline_set_transaction(p, 1));
        CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", key, "v"}, set_len));
        CHECK_FAILS(vkt_pipeline_submit(p, vkt_op_fn, &op, NULL), VK_ERR_COMMAND_NOT_ALLOWED,
                    "command not allowed on a shared connection: a transaction pipeline of an "
                    "event-loop client in cluster mode: run it on the blocking client or on a "
                    "session");
        CHECK_EQ_INT(vk_pipeline_length(p), 0);
        CHECK_OK(vk_pipeline_set_transaction(p, 0));
        CHECK_FAILS(vk_pipeline_append(p, 1, (const char *[]){"MULTI"}, one),
                    VK_ERR_COMMAND_NOT_ALLOWED, CLUSTER_MULTI_TEXT);
        CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", key, "v"}, set_len));
        CHECK_FAILS(vk_pipeline_append(p, 1, (const char *[]){"EXEC"}, (const size_t[]){4}),
                    VK_ERR_COMMAND_NOT_ALLOWED, CLUSTER_MULTI_TEXT);
        CHECK_FAILS(vkt_pipeline_submit(p, vkt_op_fn, &op, NULL), VK_ERR_COMMAND_NOT_ALLOWED,
                    CLUSTER_MULTI_TEXT);
        CHECK_EQ_INT(vk_pipeline_length(p), 0);
        CHECK_EQ_INT(vk_async_pending(a), 0);
        vkt_loop_run_for(loop, 50);
        CHECK_EQ_INT(op.calls, 0);
        char buf[32];
        CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2,
                                       (const char *[]){"GET", key}),
                     "(nil)");   /* nothing was sent */
        /* The pipeline goes on. */
        CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", key, "v"}, set_len));
        CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"GET", key}, get_len));
        CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &op, NULL));
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
        CHECK(op.status == VK_OK && vk_reply_get_length(op.reply) == 2 &&
              reply_is(vk_reply_get_element(op.reply, 1), "v"));
        vkt_op_clear(&op);
        vkt_blocking_do(checker, 2, (const char *[]){"DEL", key});
        vk_pipeline_free(p);
    }
    vk_async_free(a);
}

/* ---- blocking commands ---------------------------------------------------------------- */

/* CLUSTER SETSLOT <slot of key> on node i: IMPORTING/MIGRATING (with the
 * other node's ID) or STABLE. */
static bool set_slot(int node, const char *key, const char *state, int other)
{
    char slot[16];
    snprintf(slot, sizeof slot, "%d", vkt_cluster_keyslot(cluster, key));
    const char *argv[] = {"CLUSTER", "SETSLOT", slot, state,
                          other >= 0 ? vkt_cluster_node_id(cluster, other) : NULL};
    char *line = vkt_server_cmd(vkt_cluster_node(cluster, node), argv, other >= 0 ? 5 : 4);
    bool ok = line != NULL && strcmp(line, "+OK") == 0;
    free(line);
    return ok;
}

/* A client whose read timeout (200 ms) is far below the commands' own. */
static vk_async *short_read_timeout_client(vkt_loop *loop, int seed, counts *m)
{
    vk_config *cfg = cluster_config(seed, m);
    CHECK_OK(vk_config_set_read_timeout_ms(cfg, 200));
    vk_async *a = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    return a;
}

/* BLPOP waits for its own timeout (not the read timeout); a command for
 * another master is answered meanwhile; an element pushed while it waits
 * is its reply. */
static void test_blocking_command(vkt_loop *loop)
{
    const char *name = vkt_loop_name(loop);
    char prefix[40], list[64], other[64];
    snprintf(prefix, sizeof prefix, "blpop:%s:", name);
    CHECK(key_on_node(list, sizeof list, prefix, 2));
    snprintf(prefix, sizeof prefix, "beside:%s:", name);
    CHECK(key_on_node(other, sizeof other, prefix, 1));
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", list});
    vk_async *a = short_read_timeout_client(loop, 0, NULL);
    if (a == NULL)
        return;
    CHECK(async_set(loop, a, other, "beside"));

    vkt_op op = {0};
    int64_t started = vkt_now_ms();
    CHECK(vkt_call(loop, a, &op, 3, (const char *[]){"BLPOP", list, "1"}));
    int64_t took = vkt_now_ms() - started;
    VKT_CHECK_(op.status == VK_OK && vk_reply_get_type(op.reply) == VK_REPLY_NIL,
               "BLPOP %s 1: %d %s", list, (int)op.status, op.error);
    VKT_CHECK_(took >= 900, "BLPOP k 1 answered after %lld ms", (long long)took);
    vkt_op_clear(&op);

    vkt_op beside = {0};
    started = vkt_now_ms();
    CHECK_OK(vkt_submit(a, &op, NULL, 3, (const char *[]){"BLPOP", list, "5"}));
    vkt_loop_run_for(loop, 300);
    CHECK_OK(vkt_submit(a, &beside, NULL, 2, (const char *[]){"GET", other}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &beside, 3000));
    CHECK(beside.status == VK_OK && reply_is(beside.reply, "beside"));
    CHECK_EQ_INT(op.calls, 0);   /* still waiting */
    vkt_op_clear(&beside);
    vkt_blocking_do(checker, 3, (const char *[]){"RPUSH", list, "pushed"});
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 5000));
    took = vkt_now_ms() - started;
    CHECK(op.status == VK_OK && vk_reply_get_type(op.reply) == VK_REPLY_ARRAY &&
          vk_reply_get_length(op.reply) == 2);
    if (op.status == VK_OK && vk_reply_get_length(op.reply) == 2) {
        CHECK(reply_is(vk_reply_get_element(op.reply, 0), list));
        CHECK(reply_is(vk_reply_get_element(op.reply, 1), "pushed"));
    }
    VKT_CHECK_(took < vkt_scaled_ms(4000), "BLPOP answered %lld ms after it was sent",
               (long long)took);
    vkt_op_clear(&op);
    vk_async_free(a);
}

/* A blocking command that an ASK sends on to the importing node gets its
 * own timeout for its reply there too. */
static void test_blocking_command_follows_ask(vkt_loop *loop)
{
    char prefix[40], key[64];
    snprintf(prefix, sizeof prefix, "ask-blpop:%s:", vkt_loop_name(loop));
    CHECK(key_on_node(key, sizeof key, prefix, 0));
    /* The slot half-way from node 0 to node 1: node 0 answers ASK for a
     * key it does not have. */
    CHECK(set_slot(1, key, "IMPORTING", 0));
    CHECK(set_slot(0, key, "MIGRATING", 1));
    counts m = {0};
    vk_async *a = short_read_timeout_client(loop, 0, &m);
    if (a != NULL) {
        vkt_op op = {0};
        int64_t started = vkt_now_ms();
        CHECK(vkt_call(loop, a, &op, 3, (const char *[]){"BLPOP", key, "1"}));
        int64_t took = vkt_now_ms() - started;
        VKT_CHECK_(op.status == VK_OK && vk_reply_get_type(op.reply) == VK_REPLY_NIL,
                   "BLPOP %s 1 through ASK: %d %s", key, (int)op.status, op.error);
        VKT_CHECK_(took >= 900, "BLPOP k 1 answered after %lld ms", (long long)took);
        vkt_op_clear(&op);
        vk_snapshot *s = NULL;
        CHECK_OK(vk_async_snapshot(&s, a));
        CHECK_EQ_INT((int)vk_snapshot_ask_redirects(s), 1);
        CHECK_EQ_INT((int)vk_snapshot_moved_redirects(s), 0);
        vk_snapshot_free(s);
        CHECK_EQ_INT(atomic_load(&m.ask), 1);
        CHECK_EQ_INT(atomic_load(&m.moved), 0);
        vk_async_free(a);
    }
    CHECK(set_slot(0, key, "STABLE", -1));
    CHECK(set_slot(1, key, "STABLE", -1));
}

/* ---- cancellation --------------------------------------------------------------------- */

/* A command cancelled once written (a BLPOP waiting on its node) and one
 * cancelled before anything was sent complete with VK_ERR_CANCELLED inside
 * vk_async_cancel; the connection stays in step (the next reply on it is
 * its own, not the cancelled BLPOP's); half of 30 commands cancelled at
 * once; then the client serves every master. */
static void test_cancel_in_flight(vkt_loop *loop)
{
    const char *name = vkt_loop_name(loop);
    char list[64], value_key[64];
    snprintf(list, sizeof list, "{cancel:%s}:list", name);
    snprintf(value_key, sizeof value_key, "{cancel:%s}:value", name);
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", list});
    vk_async *a = new_client(loop, 1, NULL);
    if (a == NULL)
        return;
    CHECK(async_set(loop, a, value_key, "before"));

    vkt_op op = {0};
    uint64_t id = 0;
    CHECK_OK(vkt_submit(a, &op, &id, 3, (const char *[]){"BLPOP", list, "1"}));
    vkt_loop_run_for(loop, 200);   /* written, waiting on the node */
    CHECK_EQ_INT(op.calls, 0);
    CHECK_OK(vk_async_cancel(a, id));
    CHECK_EQ_INT(op.calls, 1);
    CHECK_EQ_INT(op.status, VK_ERR_CANCELLED);
    CHECK(strncmp(op.error, "operation cancelled", 19) == 0);
    CHECK_EQ_INT(vk_async_cancel(a, id), VK_ERR_INVALID_ARGUMENT);   /* no longer in flight */
    vkt_op_clear(&op);
    /* Behind the cancelled BLPOP on the same node: its own reply. */
    CHECK(async_get_is(loop, a, value_key, "before"));
    vkt_loop_run_for(loop, 1000);   /* past the BLPOP's timeout on the node */
    CHECK(async_get_is(loop, a, value_key, "before"));

    /* Cancelled before anything was sent. */
    CHECK_OK(vkt_submit(a, &op, &id, 2, (const char *[]){"GET", value_key}));
    CHECK_OK(vk_async_cancel(a, id));
    CHECK_EQ_INT(op.calls, 1);
    CHECK_EQ_INT(op.status, VK_ERR_CANCELLED);
    vkt_op_clear(&op);

    /* Half of many, across the masters. */
    enum { N = 30 };
    static vkt_op ops[N];
    static char keys[N][48];
    uint64_t ids[N];
    memset(ops, 0, sizeof ops);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "cancel:%s:%d", name, i);
        CHECK_OK(vkt_submit(a, &ops[i], &ids[i], 3, (const char *[]){"SET", keys[i], "x"}));
    }
    for (int i = 1; i < N; i += 2) {
        CHECK_OK(vk_async_cancel(a, ids[i]));
        CHECK_EQ_INT(ops[i].calls, 1);
    }
    op_set set = {ops, N};
    CHECK(vkt_loop_run_until(loop, all_done, &set, 10000));
    for (int i = 0; i < N; i++) {
        if (i % 2 == 1)
            CHECK_EQ_INT(ops[i].status, VK_ERR_CANCELLED);
        else
            VKT_CHECK_(ops[i].status == VK_OK && reply_is(ops[i].reply, "OK"), "SET %s: %d %s",
                       keys[i], (int)ops[i].status, ops[i].error);
        vkt_op_clear(&ops[i]);
    }
    CHECK(vkt_async_drain(loop, a));
    /* Every master still served by the same client. */
    for (int node = 0; node < MASTERS; node++) {
        char prefix[40], key[64];
        snprintf(prefix, sizeof prefix, "after-cancel:%s:", name);
        CHECK(key_on_node(key, sizeof key, prefix, node));
        CHECK(async_set(loop, a, key, "after"));
        CHECK(async_get_is(loop, a, key, "after"));
        CHECK(node_value_is(node, key, "after"));
    }
    vk_async_free(a);
}

/* ---- unreachable seeds ---------------------------------------------------------------- */

static void test_unreachable_seeds(vkt_loop *loop)
{
    static const char want[] = "redis cluster: all nodes are unreachable: connection error: "
                               "dial 127.0.0.1:1: Connection refused";
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, "127.0.0.1:1"));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    vk_client *b = NULL;
    CHECK_FAILS(vk_client_new(&b, cfg), VK_ERR_IO, want);
    CHECK(b == NULL);

    /* A command and a pipeline waiting for the map: both fail with it. */
    vk_async *a = vkt_async_new(loop, cfg);
    if (a != NULL) {
        CHECK(!vk_async_is_connected(a));
        vkt_op op = {0}, pop = {0};
        vk_pipeline *p = NULL;
        CHECK_OK(vk_async_pipeline_new(&p, a));
        CHECK_OK(vkt_submit(a, &op, NULL, 3, (const char *[]){"SET", "unreachable", "1"}));
        if (p != NULL) {
            CHECK_OK(vk_pipeline_append(p, 1, (const char *[]){"PING"}, (const size_t[]){4}));
            CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &pop, NULL));
        } else {
            pop.calls = 1;
        }
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &pop, 10000));
        CHECK_EQ_INT(op.status, VK_ERR_IO);
        CHECK_EQ_STR(op.error, want);
        if (p != NULL) {
            CHECK_EQ_INT(pop.status, VK_ERR_IO);
            CHECK_EQ_STR(pop.error, want);
        }
        CHECK(!vk_async_is_connected(a));
        vk_snapshot *s = NULL;
        CHECK_OK(vk_async_snapshot(&s, a));
        if (s != NULL) {
            CHECK_EQ_STR(vk_snapshot_mode(s), "cluster");
            CHECK_EQ_INT(vk_snapshot_connected(s), 0);
        }
        vk_snapshot_free(s);
        vkt_op_clear(&op);
        vkt_op_clear(&pop);
        vk_pipeline_free(p);
        vk_async_free(a);
    }

    /* A seed that is down is skipped when another one answers. */
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cluster, 2))));
    a = vkt_async_new(loop, cfg);
    if (a != NULL) {
        char key[48];
        snprintf(key, sizeof key, "seeds:%s", vkt_loop_name(loop));
        CHECK(async_set(loop, a, key, "1"));
        CHECK(vk_async_is_connected(a));
        vk_async_free(a);
    }
    vk_config_free(cfg);
}

/* ---- a slot migration under load ----------------------------------------------------- */

#define MIG_KEYS 20
#define MULTI_KEYS 6
#define MIG_SINGLES 16   /* INCR chains, each with one command in flight */
#define MIG_PIPELINES 2  /* pipeline chains */

typedef struct migration migration;

typedef struct single_chain {
    migration *m;
    int key;
} single_chain;

typedef struct pipeline_chain {
    migration *m;
    vk_pipeline *p;
    int picked[4];
} pipeline_chain;

typedef struct multi_chain {
    migration *m;
    int step;   /* 0: MSET, 1: MGET, 2: DEL */
    long round;
} multi_chain;

struct migration {
    vk_async *a;
    char keys[MIG_KEYS][64];
    char multi[MULTI_KEYS][64];
    char other[64];            /* a key of another slot, "steady" */
    long acked[MIG_KEYS];      /* INCRs acknowledged per key */
    bool stop;
    long operations;
    int errors;
    char first_error[512];
    unsigned seed;
    single_chain singles[MIG_SINGLES];
    pipeline_chain pipelines[MIG_PIPELINES];
    multi_chain multi_chain;
};

static void load_error(migration *m, const char *what, vk_status st, const vk_reply *r)
{
    size_t len = 0;
    const char *text = st == VK_OK && r != NULL ? vk_reply_get_string(r, &len) : NULL;
    char line[512];
    snprintf(line, sizeof line, "%s: %s%.*s", what, st != VK_OK ? vk_last_error() : "reply ",
             (int)len, text != NULL ? text : "");
    if (m->errors < 5)
        fprintf(stderr, "   %s\n", line);
    if (m->errors++ == 0)
        snprintf(m->first_error, sizeof m->first_error, "%s", line);
}

static void send_single(single_chain *c);
static void send_pipeline(pipeline_chain *c);
static void send_multi(multi_chain *c);

static void single_done(void *userdata, vk_status st, vk_reply *reply)
{
    single_chain *c = userdata;
    vkt_note_completion();
    if (st == VK_OK && vk_reply_get_type(reply) == VK_REPLY_INTEGER)
        c->m->acked[c->key]++;
    else
        load_error(c->m, "INCR", st, reply);
    vk_reply_free(reply);
    c->m->operations++;
    if (!c->m->stop)
        send_single(c);
}

static void send_single(single_chain *c)
{
    c->key = (int)(rand_r(&c->m->seed) % MIG_KEYS);
    const char *key = c->m->keys[c->key];
    const size_t len[] = {4, strlen(key)};
    vk_status st = vkt_submitv(c->m->a, single_done, c, NULL, 2, (const char *[]){"INCR", key},
                               len);
    if (st != VK_OK)
        load_error(c->m, "queueing INCR", st, NULL);
}

/* Four INCRs around a GET of a key of another slot: each batch spans
 * nodes and meets ASK and MOVED command by command. */
static void pipeline_done(void *userdata, vk_status st, vk_reply *reply)
{
    pipeline_chain *c = userdata;
    vkt_note_completion();
    if (st != VK_OK || vk_reply_get_length(reply) != 5) {
        load_error(c->m, "pipeline", st, reply);
    } else {
        for (int i = 0; i < 4; i++) {
            const vk_reply *r = vk_reply_get_element(reply, (size_t)(i < 2 ? i : i + 1));
            if (vk_reply_get_type(r) == VK_REPLY_INTEGER)
                c->m->acked[c->picked[i]]++;
            else
                load_error(c->m, "pipelined INCR", VK_OK, r);
        }
        if (!reply_is(vk_reply_get_element(reply, 2), "steady"))
            load_error(c->m, "pipelined GET", VK_OK, vk_reply_get_element(reply, 2));
    }
    vk_reply_free(reply);
    c->m->operations += 5;
    if (!c->m->stop)
        send_pipeline(c);
}

static void send_pipeline(pipeline_chain *c)
{
    migration *m = c->m;
    for (int i = 0; i < 4; i++) {
        c->picked[i] = (int)(rand_r(&m->seed) % MIG_KEYS);
        const char *key = m->keys[c->picked[i]];
        vk_pipeline_append(c->p, 2, (const char *[]){"INCR", key},
                           (const size_t[]){4, strlen(key)});
        if (i == 1)
            vk_pipeline_append(c->p, 2, (const char *[]){"GET", m->other},
                               (const size_t[]){3, strlen(m->other)});
    }
    vk_status st = vkt_pipeline_submit(c->p, pipeline_done, c, NULL);
    if (st != VK_OK)
        load_error(m, "queueing a pipeline", st, NULL);
}

/* Round n: MSET of n to every multi key, MGET of them (all n), and on odd
 * rounds DEL (all of them existed). While the harness has moved half of
 * them, the nodes refuse these with TRYAGAIN, which the client rides out. */
static void multi_done(void *userdata, vk_status st, vk_reply *reply)
{
    multi_chain *c = userdata;
    migration *m = c->m;
    vkt_note_completion();
    char want[24];
    snprintf(want, sizeof want, "%ld", c->round);
    if (c->step == 0) {
        if (st != VK_OK || !reply_is(reply, "OK"))
            load_error(m, "MSET", st, reply);
        c->step = 1;
    } else if (c->step == 1) {
        bool same = st == VK_OK && vk_reply_get_type(reply) == VK_REPLY_ARRAY &&
                    vk_reply_get_length(reply) == MULTI_KEYS;
        for (size_t k = 0; same && k < MULTI_KEYS; k++)
            same = reply_is(vk_reply_get_element(reply, k), want);
        if (!same)
            load_error(m, "MGET", st, reply);
        c->step = c->round % 2 == 1 ? 2 : 0;
    } else {
        if (st != VK_OK || vk_reply_get_type(reply) != VK_REPLY_INTEGER ||
            vk_reply_get_integer(reply) != MULTI_KEYS)
            load_error(m, "DEL", st, reply);
        c->step = 0;
    }
    vk_reply_free(reply);
    m->operations++;
    if (!m->stop)
        send_multi(c);
}

static void send_multi(multi_chain *c)
{
    migration *m = c->m;
    if (c->step == 0)
        c->round++;
    char value[24];
    snprintf(value, sizeof value, "%ld", c->round);
    const char *argv[1 + 2 * MULTI_KEYS];
    size_t len[1 + 2 * MULTI_KEYS];
    int argc = 1;
    argv[0] = c->step == 0 ? "MSET" : c->step == 1 ? "MGET" : "DEL";
    for (int k = 0; k < MULTI_KEYS; k++) {
        argv[argc++] = m->multi[k];
        if (c->step == 0)
            argv[argc++] = value;
    }
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    vk_status st = vkt_submitv(m->a, multi_done, c, NULL, argc, argv, len);
    if (st != VK_OK)
        load_error(m, "queueing a multi-key command", st, NULL);
}

typedef struct mover {
    int slot, from, to;
    const char *names[MIG_KEYS + MULTI_KEYS];
    int count;
    bool ok;
    atomic_int done;
} mover;

static void *move_slot_thread(void *arg)
{
    mover *mv = arg;
    mv->ok = vkt_cluster_move_slot(cluster, mv->slot, mv->from, mv->to, mv->names, mv->count,
                                   300);
    atomic_store(&mv->done, 1);
    return NULL;
}

static bool mover_done(void *arg)
{
    return atomic_load(&((mover *)arg)->done) != 0;
}

/* The number of keys node i has in slot. */
static long long keys_in_slot(int i, int slot)
{
    char s[16];
    snprintf(s, sizeof s, "%d", slot);
    const char *argv[] = {"CLUSTER", "COUNTKEYSINSLOT", s};
    char *line = vkt_server_cmd(vkt_cluster_node(cluster, i), argv, 3);
    long long n = line != NULL && line[0] == ':' ? atoll(line + 1) : -1;
    free(line);
    return n;
}

/* While the harness moves a slot the way redis-cli reshards (IMPORTING,
 * MIGRATING, keys moved in two halves with pauses, SETSLOT NODE), 16
 * INCR chains, 2 pipeline chains and a chain of multi-key commands keep
 * commands in flight through one client: none fails, every acknowledged
 * increment is on the new owner, and the client met MOVED, ASK and
 * TRYAGAIN on the way (metrics and snapshot agree). */
static void test_slot_migration_under_load(vkt_loop *loop)
{
    static migration m;
    memset(&m, 0, sizeof m);
    m.seed = 7;
    /* A hash tag whose slot holds no key yet, so that the listed keys are
     * all the slot's. */
    char tag[32];
    int slot = -1, from = -1;
    for (int n = 0; n < 100 && from < 0; n++) {
        snprintf(tag, sizeof tag, "{mig:%s:%d}", vkt_loop_name(loop), n);
        slot = vkt_cluster_keyslot(cluster, tag);
        int owner = vkt_cluster_key_owner(cluster, tag);
        if (owner >= 0 && owner < MASTERS && keys_in_slot(owner, slot) == 0)
            from = owner;
    }
    CHECK(from >= 0);
    if (from < 0)
        return;
    int to = (from + 1) % MASTERS;
    for (int k = 0; k < MIG_KEYS; k++)
        snprintf(m.keys[k], sizeof m.keys[k], "%s:%d", tag, k);
    for (int k = 0; k < MULTI_KEYS; k++)
        snprintf(m.multi[k], sizeof m.multi[k], "%s:multi:%d", tag, k);
    char prefix[40];
    snprintf(prefix, sizeof prefix, "steady:%s:", vkt_loop_name(loop));
    CHECK(key_on_node(m.other, sizeof m.other, prefix, (to + 1) % MASTERS));

    counts c = {0};
    m.a = new_client(loop, 2, &c);
    if (m.a == NULL)
        return;
    for (int k = 0; k < MIG_KEYS; k++)
        CHECK(async_set(loop, m.a, m.keys[k], "0"));
    CHECK(async_set(loop, m.a, m.other, "steady"));

    /* The harness moves the first half of the names, pauses, then the
     * rest: half of the multi keys in each half. */
    static mover mv;
    memset(&mv, 0, sizeof mv);
    mv.slot = slot;
    mv.from = from;
    mv.to = to;
    for (int k = 0; k < MIG_KEYS; k++) {
        if (k == MIG_KEYS / 2)
            for (int j = 0; j < MULTI_KEYS / 2; j++)
                mv.names[mv.count++] = m.multi[j];
        mv.names[mv.count++] = m.keys[k];
    }
    for (int j = MULTI_KEYS / 2; j < MULTI_KEYS; j++)
        mv.names[mv.count++] = m.multi[j];

    for (int i = 0; i < MIG_PIPELINES; i++) {
        m.pipelines[i].m = &m;
        CHECK_OK(vk_async_pipeline_new(&m.pipelines[i].p, m.a));
    }
    for (int i = 0; i < MIG_SINGLES; i++) {
        m.singles[i].m = &m;
        send_single(&m.singles[i]);
    }
    for (int i = 0; i < MIG_PIPELINES; i++) {
        if (m.pipelines[i].p != NULL)
            send_pipeline(&m.pipelines[i]);
    }
    m.multi_chain.m = &m;
    send_multi(&m.multi_chain);
    vkt_loop_run_for(loop, 200);
    long before = m.operations;
    CHECK(before > 0);

    pthread_t thread;
    bool started = pthread_create(&thread, NULL, move_slot_thread, &mv) == 0;
    CHECK(started);
    if (started) {
        CHECK(vkt_loop_run_until(loop, mover_done, &mv, 60000));
        vkt_loop_run_for(loop, 300);
    }
    m.stop = true;
    CHECK(vkt_async_drain(loop, m.a));
    if (started)
        pthread_join(thread, NULL);
    CHECK(mv.ok);

    VKT_CHECK_(m.errors == 0, "%d failures under load, the first: %s", m.errors,
               m.first_error);
    CHECK(m.operations > 100);
    CHECK(m.operations - before > 50);   /* the load went on during the move */
    /* Every increment that was acknowledged is there, on the new owner. */
    for (int k = 0; k < MIG_KEYS; k++) {
        char want[32];
        snprintf(want, sizeof want, "%ld", m.acked[k]);
        CHECK_EQ_INT(vkt_cluster_key_owner(cluster, m.keys[k]), to);
        CHECK(node_value_is(to, m.keys[k], want));
        CHECK(async_get_is(loop, m.a, m.keys[k], want));
    }
    for (int k = 0; k < MULTI_KEYS; k++)
        CHECK_EQ_INT(vkt_cluster_key_owner(cluster, m.multi[k]), to);
    CHECK_EQ_INT(keys_in_slot(from, slot), 0);
    CHECK(atomic_load(&c.moved) > 0);
    CHECK(atomic_load(&c.ask) > 0);
    /* While the multi keys were split between the nodes (the harness's
     * 300 ms pause), the multi-key commands were refused at least once. */
    CHECK(atomic_load(&c.tryagain) > 0);
    CHECK(atomic_load(&c.refusals) >= atomic_load(&c.tryagain));
    check_snapshot(m.a, &c);
    fprintf(stderr, "   migration of slot %d (node %d -> %d) on %s: %ld operations, %d MOVED, "
                    "%d ASK, %d TRYAGAIN, %d maps loaded\n",
            slot, from, to, vkt_loop_name(loop), m.operations, atomic_load(&c.moved),
            atomic_load(&c.ask), atomic_load(&c.tryagain), atomic_load(&c.refreshes));
    for (int i = 0; i < MIG_PIPELINES; i++)
        vk_pipeline_free(m.pipelines[i].p);
    vk_async_free(m.a);
}

/* ---- the lock -------------------------------------------------------------------------- */

#define LOCK_SECTIONS 30
#define LOCK_THREAD_ROUNDS 10

/* What the critical sections of one run see. */
typedef struct exclusion {
    const char *key;          /* the lock */
    const char *counter;      /* bumped under it: GET, then SET value + 1 */
    vk_async *a;
    atomic_int inside;
    atomic_int overlaps;
    atomic_int failures;
    int finished;             /* sections on the loop over (loop thread) */
    atomic_int thread_done;
    char failure[512];
    vk_lock_manager *bm;      /* the blocking API's side, on a thread */
} exclusion;

typedef struct section {
    exclusion *x;
    vk_lock *lock;
} section;

static void note_failure(exclusion *x, const char *what, vk_status st, const char *text)
{
    if (atomic_fetch_add(&x->failures, 1) == 0)
        snprintf(x->failure, sizeof x->failure, "%s: %d (%s)", what, (int)st, text);
}

static void enter(exclusion *x)
{
    if (atomic_fetch_add(&x->inside, 1) != 0)
        atomic_fetch_add(&x->overlaps, 1);
}

static void leave(exclusion *x)
{
    atomic_fetch_sub(&x->inside, 1);
}

static void section_over(section *sec)
{
    vk_lock_free(sec->lock);
    sec->lock = NULL;
    sec->x->finished++;
}

static void section_unlocked(void *userdata, vk_status status)
{
    section *sec = userdata;
    vkt_note_completion();
    if (status != VK_OK)
        note_failure(sec->x, "unlock", status, vk_last_error());
    section_over(sec);
}

static void section_set(void *userdata, vk_status status, vk_reply *reply)
{
    section *sec = userdata;
    vkt_note_completion();
    if (status != VK_OK || !reply_is(reply, "OK"))
        note_failure(sec->x, "SET", status, status == VK_OK ? "not OK" : vk_last_error());
    vk_reply_free(reply);
    leave(sec->x);
    vk_status st = vk_async_lock_unlock(sec->lock, section_unlocked, sec);
    if (st != VK_OK) {
        note_failure(sec->x, "starting the unlock", st, vk_last_error());
        section_over(sec);
    }
}

static void section_get(void *userdata, vk_status status, vk_reply *reply)
{
    section *sec = userdata;
    vkt_note_completion();
    long long value = 0;
    if (status != VK_OK)
        note_failure(sec->x, "GET", status, vk_last_error());
    else if (vk_reply_get_type(reply) == VK_REPLY_STRING)
        value = atoll(vk_reply_get_string(reply, &(size_t){0}));
    vk_reply_free(reply);
    char next[32];
    snprintf(next, sizeof next, "%lld", value + 1);
    const char *argv[] = {"SET", sec->x->counter, next};
    const size_t lens[] = {3, strlen(sec->x->counter), strlen(next)};
    vk_status st = vkt_submitv(sec->x->a, section_set, sec, NULL, 3, argv, lens);
    if (st != VK_OK) {
        note_failure(sec->x, "queueing SET", st, vk_last_error());
        leave(sec->x);
        section_over(sec);
    }
}

static void section_acquired(void *userdata, vk_status status, vk_lock *lock)
{
    section *sec = userdata;
    vkt_note_completion();
    if (status != VK_OK || lock == NULL) {
        note_failure(sec->x, "acquire", status, status == VK_OK ? "no handle" : vk_last_error());
        vk_lock_free(lock);
        sec->x->finished++;
        return;
    }
    sec->lock = lock;
    enter(sec->x);
    const char *argv[] = {"GET", sec->x->counter};
    const size_t lens[] = {3, strlen(sec->x->counter)};
    vk_status st = vkt_submitv(sec->x->a, section_get, sec, NULL, 2, argv, lens);
    if (st != VK_OK) {
        note_failure(sec->x, "queueing GET", st, vk_last_error());
        leave(sec->x);
        section_over(sec);
    }
}

/* The blocking API's critical sections, through the blocking cluster
 * client, on a thread of their own. */
static void *blocking_sections(void *arg)
{
    exclusion *x = arg;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = vkt_scaled_ms(10);
    for (int i = 0; i < LOCK_THREAD_ROUNDS; i++) {
        vk_lock *lock = NULL;
        vk_status st = vk_lock_manager_acquire(&lock, x->bm, NULL, x->key, strlen(x->key), &opts);
        if (st != VK_OK || lock == NULL) {
            note_failure(x, "blocking acquire", st, vk_last_error());
            continue;
        }
        enter(x);
        long long value = vkt_blocking_integer(checker, 2, (const char *[]){"GET", x->counter});
        char next[32];
        snprintf(next, sizeof next, "%lld", value + 1);
        vk_reply *r = NULL;
        st = vkt_blocking_run(checker, &r, 3, (const char *[]){"SET", x->counter, next});
        if (st != VK_OK)
            note_failure(x, "blocking SET", st, vk_last_error());
        vk_reply_free(r);
        leave(x);
        st = vk_lock_unlock(lock, NULL);
        if (st != VK_OK)
            note_failure(x, "blocking unlock", st, vk_last_error());
        vk_lock_free(lock);
    }
    atomic_store(&x->thread_done, 1);
    return NULL;
}

static bool sections_over(void *arg)
{
    exclusion *x = arg;
    return x->finished >= LOCK_SECTIONS && atomic_load(&x->thread_done);
}

typedef struct lock_op {
    int calls;
    vk_status status;
    vk_lock *lock;
} lock_op;

static void lock_fn(void *userdata, vk_status status, vk_lock *lock)
{
    lock_op *op = userdata;
    vkt_note_completion();
    op->calls++;
    op->status = status;
    op->lock = lock;
}

static bool lock_op_done(void *arg)
{
    return ((lock_op *)arg)->calls > 0;
}

typedef struct done_op {
    int calls;
    vk_status status;
} done_op;

static void done_fn(void *userdata, vk_status status)
{
    done_op *op = userdata;
    vkt_note_completion();
    op->calls++;
    op->status = status;
}

static bool done_op_done(void *arg)
{
    return ((done_op *)arg)->calls > 0;
}

/* 30 acquisitions at once on the loop and a thread of the blocking API
 * on the same key: a read-modify-write counter under the lock loses no
 * update; the lock is gone afterwards. Keys whose fencing counter needs
 * care ('}' without a hash tag): try, extend, unlock, try again with a
 * greater fencing token. */
static void test_lock_mutual_exclusion(vkt_loop *loop)
{
    char key[64], counter[64];
    snprintf(key, sizeof key, "alock:%s", vkt_loop_name(loop));
    snprintf(counter, sizeof counter, "alock-counter:%s", vkt_loop_name(loop));
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", counter});
    vk_async *a = new_client(loop, 0, NULL);
    if (a == NULL)
        return;
    vk_async_lock_manager *lm = NULL;
    vk_lock_manager *bm = NULL;
    CHECK_OK(vk_async_lock_manager_new(&lm, &a, 1));
    CHECK_OK(vk_lock_manager_new(&bm, checker));
    if (lm == NULL || bm == NULL) {
        vk_async_lock_manager_free(lm);
        vk_lock_manager_free(bm);
        vk_async_free(a);
        return;
    }
    static exclusion x;
    memset(&x, 0, sizeof x);
    x.key = key;
    x.counter = counter;
    x.a = a;
    x.bm = bm;
    static section sections[LOCK_SECTIONS];
    memset(sections, 0, sizeof sections);
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = vkt_scaled_ms(5);
    pthread_t thread;
    bool threaded = pthread_create(&thread, NULL, blocking_sections, &x) == 0;
    CHECK(threaded);
    if (!threaded)
        atomic_store(&x.thread_done, 1);
    for (int i = 0; i < LOCK_SECTIONS; i++) {
        sections[i].x = &x;
        vk_status st = vk_async_lock_acquire(lm, key, strlen(key), &opts, section_acquired,
                                             &sections[i], NULL);
        VKT_CHECK_(st == VK_OK, "starting acquisition %d -> %d (%s)", i, (int)st,
                   vk_last_error());
        if (st != VK_OK)
            x.finished++;
    }
    bool done = vkt_loop_run_until(loop, sections_over, &x, 60000);
    VKT_CHECK_(done, "%d of %d sections on the loop finished", x.finished, LOCK_SECTIONS);
    if (threaded)
        pthread_join(thread, NULL);
    VKT_CHECK_(atomic_load(&x.failures) == 0, "%d failures, the first: %s",
               atomic_load(&x.failures), x.failure);
    CHECK_EQ_INT(atomic_load(&x.overlaps), 0);
    CHECK_EQ_INT(vkt_blocking_integer(checker, 2, (const char *[]){"GET", counter}),
                 LOCK_SECTIONS + (threaded ? LOCK_THREAD_ROUNDS : 0));
    CHECK_EQ_INT(vkt_blocking_integer(checker, 2, (const char *[]){"EXISTS", key}), 0);

    static const char *const odd_keys[] = {"acluster:a}b", "}", "{}x", "x{}y}"};
    for (size_t i = 0; i < sizeof odd_keys / sizeof odd_keys[0]; i++) {
        char odd[64];
        snprintf(odd, sizeof odd, "%s%s", odd_keys[i], vkt_loop_name(loop));
        lock_op held = {0}, again = {0};
        done_op ext = {0}, un = {0};
        CHECK_OK(vk_async_lock_try(lm, odd, strlen(odd), lock_fn, &held, NULL));
        CHECK(vkt_loop_run_until(loop, lock_op_done, &held, 10000));
        VKT_CHECK_(held.status == VK_OK && held.lock != NULL, "try of %s: %d", odd,
                   (int)held.status);
        if (held.lock == NULL)
            continue;
        CHECK(vk_lock_fencing_token(held.lock) > 0);
        CHECK_OK(vk_async_lock_extend(held.lock, 5000, done_fn, &ext));
        CHECK(vkt_loop_run_until(loop, done_op_done, &ext, 10000));
        CHECK_EQ_INT(ext.status, VK_OK);
        CHECK_OK(vk_async_lock_unlock(held.lock, done_fn, &un));
        CHECK(vkt_loop_run_until(loop, done_op_done, &un, 10000));
        CHECK_EQ_INT(un.status, VK_OK);
        CHECK_OK(vk_async_lock_try(lm, odd, strlen(odd), lock_fn, &again, NULL));
        CHECK(vkt_loop_run_until(loop, lock_op_done, &again, 10000));
        CHECK(again.status == VK_OK && again.lock != NULL &&
              vk_lock_fencing_token(again.lock) > vk_lock_fencing_token(held.lock));
        if (again.lock != NULL) {
            memset(&un, 0, sizeof un);
            CHECK_OK(vk_async_lock_unlock(again.lock, done_fn, &un));
            CHECK(vkt_loop_run_until(loop, done_op_done, &un, 10000));
            CHECK_EQ_INT(un.status, VK_OK);
        }
        vk_lock_free(held.lock);
        vk_lock_free(again.lock);
    }
    vk_async_lock_manager_free(lm);
    vk_lock_manager_free(bm);
    vk_async_free(a);
}

/* ---- failover under load --------------------------------------------------------------- */

#define WRITERS 8

/* Each writer SETs 1, 2, 3... to its own key of the shard, one write in
 * flight; after a failure it waits 20 ms. */
typedef struct fo_writer {
    vk_async *a;
    char key[64];
    bool stop;
    bool in_flight;
    long n;                  /* the value in flight / last sent */
    long last_ok;
    int64_t last_ok_us;
    int64_t resume_us;
    int failed;
    int64_t last_error_us;
} fo_writer;

static void send_fo_write(fo_writer *w);

static void fo_write_done(void *userdata, vk_status st, vk_reply *reply)
{
    fo_writer *w = userdata;
    vkt_note_completion();
    w->in_flight = false;
    if (st == VK_OK && reply_is(reply, "OK")) {
        w->last_ok = w->n;
        w->last_ok_us = vkt_now_us();
    } else {
        if (w->failed++ < 3)
            fprintf(stderr, "   write during failover: %s\n",
                    st != VK_OK ? vk_last_error() : "an error reply");
        w->last_error_us = vkt_now_us();
        w->resume_us = w->last_error_us + 20 * MS;
        w->n--;   /* that value again */
    }
    vk_reply_free(reply);
    if (!w->stop && w->resume_us <= vkt_now_us())
        send_fo_write(w);
}

static void send_fo_write(fo_writer *w)
{
    char value[24];
    snprintf(value, sizeof value, "%ld", ++w->n);
    const size_t len[] = {3, strlen(w->key), strlen(value)};
    w->in_flight = true;
    if (vkt_submitv(w->a, fo_write_done, w, NULL, 3, (const char *[]){"SET", w->key, value},
                    len) != VK_OK) {
        w->in_flight = false;
        w->n--;
        w->failed++;
        w->resume_us = vkt_now_us() + 20 * MS;
    }
}

typedef struct fo_load {
    fo_writer w[WRITERS];
    bool (*until)(struct fo_load *l);
    atomic_int *flag;        /* for until_flag */
    int64_t after_us;        /* for until_all_after */
} fo_load;

/* Writers that paused after a failure write again; then l->until(l). */
static bool fo_turn(void *arg)
{
    fo_load *l = arg;
    int64_t now = vkt_now_us();
    for (int i = 0; i < WRITERS; i++) {
        fo_writer *w = &l->w[i];
        if (!w->stop && !w->in_flight && now >= w->resume_us)
            send_fo_write(w);
    }
    return l->until(l);
}

static bool until_flag(fo_load *l)
{
    return atomic_load(l->flag) != 0;
}

static bool until_all_after(fo_load *l)
{
    for (int i = 0; i < WRITERS; i++) {
        if (l->w[i].last_ok_us <= l->after_us || l->w[i].last_ok < 10)
            return false;
    }
    return true;
}

static bool until_idle(fo_load *l)
{
    for (int i = 0; i < WRITERS; i++) {
        if (l->w[i].in_flight)
            return false;
    }
    return true;
}

typedef struct failover_job {
    int replica;
    bool ok;
    atomic_int done;
} failover_job;

static void *failover_thread(void *arg)
{
    failover_job *job = arg;
    job->ok = vkt_cluster_failover(cluster, job->replica, (int)vkt_scaled_ms(20000));
    atomic_store(&job->done, 1);
    return NULL;
}

/* The shard of this loop's failover and kill scenarios: each has its own
 * replica to promote. */
static int shard_of(vkt_loop *loop)
{
    return strcmp(vkt_loop_name(loop), "libuv") == 0 ? 0 : 1;
}

static bool wait_in_sync(int replica, long long ms)
{
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(ms);
    while (!replica_in_sync(replica)) {
        if (vkt_now_ms() > deadline)
            return false;
        vkt_sleep_ms(50);
    }
    return true;
}

/* CLUSTER FAILOVER on the shard's replica while 8 writers stream SETs to
 * keys of that shard through one client: the client follows the promoted
 * replica on its own; every writer's writes succeed again after the
 * switch; what each saw acknowledged last is what the new master holds;
 * failures, if any, end with the failover. */
static void test_failover_under_load(vkt_loop *loop)
{
    int master = shard_of(loop), replica = MASTERS + shard_of(loop);
    CHECK(node_is_master(master));
    CHECK(wait_in_sync(replica, 10000));
    counts c = {0};
    vk_async *a = new_client(loop, 2, &c);
    if (a == NULL)
        return;
    static fo_load l;
    memset(&l, 0, sizeof l);
    for (int i = 0; i < WRITERS; i++) {
        char prefix[40];
        snprintf(prefix, sizeof prefix, "failover:%s:%d:", vkt_loop_name(loop), i);
        CHECK(key_on_node(l.w[i].key, sizeof l.w[i].key, prefix, master));
        l.w[i].a = a;
    }
    /* Writing, with no failure, before. */
    l.after_us = 0;
    l.until = until_all_after;
    CHECK(vkt_loop_run_until(loop, fo_turn, &l, 10000));
    for (int i = 0; i < WRITERS; i++)
        CHECK_EQ_INT(l.w[i].failed, 0);

    static failover_job job;
    memset(&job, 0, sizeof job);
    job.replica = replica;
    pthread_t thread;
    int64_t started = vkt_now_us();
    bool threaded = pthread_create(&thread, NULL, failover_thread, &job) == 0;
    CHECK(threaded);
    if (threaded) {
        atomic_int *flag = &job.done;
        l.flag = flag;
        l.until = until_flag;
        CHECK(vkt_loop_run_until(loop, fo_turn, &l, 30000));
        pthread_join(thread, NULL);
    }
    CHECK(job.ok);
    int64_t switched = vkt_now_us();
    /* Every writer's writes succeed again, on the promoted replica. */
    l.after_us = switched;
    l.until = until_all_after;
    bool resumed = vkt_loop_run_until(loop, fo_turn, &l, 5000);
    CHECK(resumed);
    vkt_loop_run_for(loop, 200);
    for (int i = 0; i < WRITERS; i++)
        l.w[i].stop = true;
    l.until = until_idle;
    CHECK(vkt_loop_run_until(loop, fo_turn, &l, 10000));

    int failed = 0;
    for (int i = 0; i < WRITERS; i++) {
        fo_writer *w = &l.w[i];
        failed += w->failed;
        CHECK_EQ_INT(vkt_cluster_key_owner(cluster, w->key), replica);
        char want[24];
        snprintf(want, sizeof want, "%ld", w->last_ok);
        CHECK(node_value_is(replica, w->key, want));
        /* A graceful failover loses no write; errors, if any, end with it. */
        if (w->failed > 0)
            VKT_CHECK_(w->last_error_us < switched + vkt_scaled_ms(5000) * MS,
                       "writer %d failed %lld ms after the switch", i,
                       (long long)((w->last_error_us - switched) / MS));
    }
    CHECK(snapshot_lists(a, vkt_server_address(vkt_cluster_node(cluster, replica))));
    CHECK(vk_async_is_connected(a));
    fprintf(stderr, "   failover of shard %d on %s: %lld ms, %d failed writes, %d MOVED, %d maps "
                    "loaded\n",
            master, vkt_loop_name(loop), (long long)((switched - started) / MS), failed,
            atomic_load(&c.moved), atomic_load(&c.refreshes));
    vk_async_free(a);
}

/* ---- a killed master ------------------------------------------------------------------- */

/* After the failover above, node MASTERS + shard serves the shard and the
 * old master is its replica. Kill the master: the cluster promotes the
 * replica, and the same client finds it (its map reloaded after the
 * connection failure); the other masters are served throughout. */
static void test_killed_master_is_replaced(vkt_loop *loop)
{
    int master = MASTERS + shard_of(loop), replica = shard_of(loop);
    CHECK(node_is_master(master));
    CHECK(wait_in_sync(replica, 10000));
    counts c = {0};
    vk_async *a = new_client(loop, 2, &c);
    if (a == NULL)
        return;
    char prefix[40], key[64], steady[64];
    snprintf(prefix, sizeof prefix, "killed:%s:", vkt_loop_name(loop));
    CHECK(key_on_node(key, sizeof key, prefix, master));
    snprintf(prefix, sizeof prefix, "unharmed:%s:", vkt_loop_name(loop));
    CHECK(key_on_node(steady, sizeof steady, prefix, 2));
    CHECK(async_set(loop, a, key, "before"));
    CHECK(async_set(loop, a, steady, "steady"));
    int refreshes = atomic_load(&c.refreshes);

    vkt_server_kill(vkt_cluster_node(cluster, master));
    int64_t killed = vkt_now_ms();
    int64_t promoted = 0;   /* when the replica was first seen a master */
    bool written = false;
    int failures = 0;
    vk_status last_failure = VK_OK;
    while (!written && vkt_now_ms() < killed + vkt_scaled_ms(20000)) {
        if (promoted == 0 && node_is_master(replica))
            promoted = vkt_now_ms();
        vkt_op op = {0};
        if (!vkt_call(loop, a, &op, 3, (const char *[]){"SET", key, "after-kill"}))
            break;
        written = op.status == VK_OK && reply_is(op.reply, "OK");
        if (!written) {
            /* The first failure of each kind, with its time. */
            failures++;
            if (op.status != last_failure)
                fprintf(stderr, "   after %lld ms: %s\n", (long long)(vkt_now_ms() - killed),
                        op.status != VK_OK ? op.error : "an error reply");
            last_failure = op.status;
        }
        vkt_op_clear(&op);
        if (!written) {
            /* Meanwhile the other masters are served. */
            CHECK(async_get_is(loop, a, steady, "steady"));
            vkt_loop_run_for(loop, 100);
        }
    }
    int64_t back = vkt_now_ms();
    CHECK(written);
    CHECK(promoted > 0);
    /* Once the cluster promoted the replica, the client finds it at once
     * (the blocking client's next attempt reloads the map after the dead
     * node refuses it), not when a back-off for the dead node ends. */
    VKT_CHECK_(promoted == 0 || back - promoted <= vkt_scaled_ms(1500),
               "writes came back %lld ms after the replica was promoted",
               (long long)(back - promoted));
    CHECK(async_get_is(loop, a, key, "after-kill"));
    CHECK(node_value_is(replica, key, "after-kill"));
    CHECK_EQ_INT(vkt_cluster_key_owner(cluster, key), replica);
    CHECK(atomic_load(&c.refreshes) > refreshes);
    CHECK(snapshot_lists(a, vkt_server_address(vkt_cluster_node(cluster, replica))));
    CHECK(async_get_is(loop, a, steady, "steady"));
    fprintf(stderr, "   master %d killed on %s: replica promoted after %lld ms, writes back "
                    "after %lld ms (%d failed attempts, %d maps loaded)\n",
            master, vkt_loop_name(loop), (long long)(promoted ? promoted - killed : -1),
            (long long)(back - killed), failures, atomic_load(&c.refreshes) - refreshes);
    vk_async_free(a);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER VKTEST_FAILOVERS */
    int64_t t0 = vkt_now_ms();
    cluster = vkt_cluster_start(MASTERS, REPLICATED, PASSWORD, false);
    if (cluster == NULL) {
        fprintf(stderr, "cannot start a cluster of %s\n", vkt_server_binary());
        return 1;
    }
    vk_config *cfg = cluster_config(1, NULL);
    CHECK_OK(vk_client_new(&checker, cfg));
    vk_config_free(cfg);
    fprintf(stderr, "cluster up in %lld ms\n", (long long)(vkt_now_ms() - t0));
    if (checker != NULL) {
        RUN_ON_LOOPS(test_keys_on_every_master);
        RUN_ON_LOOPS(test_alternating_masters_answer_promptly);
        RUN_ON_LOOPS(test_hash_tags_share_a_slot);
        RUN_ON_LOOPS(test_cross_slot_is_refused);
        RUN_ON_LOOPS(test_commands_without_a_table_entry);
        RUN_ON_LOOPS(test_pipeline_spans_every_node);
        RUN_ON_LOOPS(test_pipeline_transaction_refused);
        RUN_ON_LOOPS(test_blocking_command);
        RUN_ON_LOOPS(test_blocking_command_follows_ask);
        RUN_ON_LOOPS(test_cancel_in_flight);
        RUN_ON_LOOPS(test_unreachable_seeds);
        RUN_ON_LOOPS(test_slot_migration_under_load);
        RUN_ON_LOOPS(test_lock_mutual_exclusion);
        /* Last: they change which nodes are masters. */
        RUN_ON_LOOPS(test_failover_under_load);
        RUN_ON_LOOPS(test_killed_master_is_replaced);
    }
    vk_client_free(checker);
    vkt_cluster_stop(cluster);
    fprintf(stderr, "total %lld ms\n", (long long)(vkt_now_ms() - t0));
    return vkt_finish();
}
