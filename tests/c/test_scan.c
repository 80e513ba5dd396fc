/*
 * Scans (VKTEST_NEEDS_SERVER): vk_scan over a standalone server and a
 * 3-master cluster. 1,000 keys all returned by the walk (in cluster mode
 * spread over every master), MATCH, TYPE and COUNT, HSCAN / SSCAN / ZSCAN
 * of collections larger than a page, an empty database, bad input, a
 * server error reply, cancellation through a context, a slot map that
 * changes during the walk and a master killed during it.
 */
#include "vkclient.h"
#include "vktest.h"
#include "clusters.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS 1000
#define MEMBERS 1000
#define MASTERS 3

/* ---- helpers -------------------------------------------------------------------- */

static vk_client *new_client(const char *address, bool cluster_mode)
{
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    if (cluster_mode) {
        CHECK_OK(vk_config_set_cluster(cfg));
        CHECK_OK(vk_config_add_cluster_address(cfg, address));
    } else {
        CHECK_OK(vk_config_set_standalone(cfg, address));
    }
    CHECK_OK(vk_config_set_max_retries(cfg, 1));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static void command(vk_client *c, int argc, const char *const *argv)
{
    size_t len[8];
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, c, NULL, argc, argv, len));
    CHECK(vk_reply_get_type(r) != VK_REPLY_ERROR);
    vk_reply_free(r);
}

/* Sends n commands "<cmd> <key> <a1 of i> <a2 of i>" in one pipeline;
 * NULL key: the key is prefix<i> and takes no argument of its own. */
static void fill(vk_client *c, const char *cmd, const char *key, const char *prefix, int n,
                 bool score)
{
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    for (int i = 0; i < n; i++) {
        char name[32], value[32];
        snprintf(name, sizeof name, "%s%d", prefix, i);
        snprintf(value, sizeof value, score ? "%d.5" : "v%d", i);
        const char *argv[4] = { cmd, key != NULL ? key : name, NULL, NULL };
        int argc = 2;
        if (score) {
            argv[argc++] = value;
            argv[argc++] = name;
        } else {
            if (key != NULL)
                argv[argc++] = name;
            else if (strcmp(cmd, "HSET") == 0)
                argv[argc++] = "f";
            if (strcmp(cmd, "SADD") != 0)
                argv[argc++] = value;
        }
        size_t len[4];
        for (int k = 0; k < argc; k++)
            len[k] = strlen(argv[k]);
        CHECK_OK(vk_pipeline_append(p, argc, argv, len));
    }
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(r), n);
    vk_reply_free(r);
    vk_pipeline_free(p);
}

/* Walks a scan to its end. seen[i] counts the items named prefix<i>
 * (stride 2 with values: only the names are counted; values are checked
 * against the name when check_values). Returns the number of items, or
 * -1 when a page failed; *pages gets the number of pages. */
typedef struct walk_result {
    long items;
    int pages;
    bool foreign;           /* an item not named prefix<i> */
    bool bad_value;
} walk_result;

static walk_result walk(vk_scan *s, const char *prefix, int stride, bool scores, int *seen,
                        int n)
{
    walk_result w = { 0, 0, false, false };
    size_t plen = strlen(prefix);
    while (!vk_scan_done(s)) {
        vk_reply *page = NULL;
        vk_status st = vk_scan_next(&page, s, NULL);
        if (st != VK_OK) {
            fprintf(stderr, "   page failed: %s\n", vk_last_error());
            w.items = -1;
            return w;
        }
        w.pages++;
        CHECK_EQ_INT(vk_reply_get_type(page), VK_REPLY_ARRAY);
        CHECK_EQ_INT(vk_reply_get_length(page) % (size_t)stride, 0);
        for (size_t i = 0; i + (size_t)stride - 1 < vk_reply_get_length(page);
             i += (size_t)stride) {
            size_t len;
            const char *item = vk_reply_get_string(vk_reply_get_element(page, i), &len);
            w.items++;
            if (item == NULL || len <= plen || memcmp(item, prefix, plen) != 0) {
                w.foreign = true;
                continue;
            }
            int index = atoi(item + plen);
            if (index < 0 || index >= n) {
                w.foreign = true;
                continue;
            }
            seen[index]++;
            if (stride == 2) {
                size_t vlen;
                const char *v = vk_reply_get_string(vk_reply_get_element(page, i + 1), &vlen);
                char want[32];
                snprintf(want, sizeof want, scores ? "%d.5" : "v%d", index);
                if (v == NULL || vlen != strlen(want) || memcmp(v, want, vlen) != 0)
                    w.bad_value = true;
            }
        }
        vk_reply_free(page);
    }
    return w;
}

static int count_seen(const int *seen, int n)
{
    int distinct = 0;
    for (int i = 0; i < n; i++)
        distinct += seen[i] > 0;
    return distinct;
}

/* The keys of the whole key space, all of them once at least. */
static void check_all_keys(vk_client *c, int64_t count)
{
    static int seen[KEYS];
    memset(seen, 0, sizeof seen);
    vk_scan *s = NULL;
    CHECK_OK(vk_scan_new(&s, c, NULL, 0, count, NULL));
    walk_result w = walk(s, "scan:", 1, false, seen, KEYS);
    /* scan:*, typed:* and the three big collections. */
    CHECK(w.items >= KEYS + 23);
    CHECK_EQ_INT(count_seen(seen, KEYS), KEYS);
    /* COUNT 100 over 1,000 keys: pages of about that size. */
    if (count > 0)
        CHECK(w.pages >= KEYS / (int)count / 2);
    fprintf(stderr, "   %ld keys in %d pages (COUNT %lld)\n", w.items, w.pages,
            (long long)count);
    /* A scan that is done hands out empty pages. */
    vk_reply *page = NULL;
    CHECK_OK(vk_scan_next(&page, s, NULL));
    CHECK_EQ_INT(vk_reply_get_type(page), VK_REPLY_ARRAY);
    CHECK_EQ_INT(vk_reply_get_length(page), 0);
    vk_reply_free(page);
    vk_scan_free(s);
}

/* MATCH scan:1* finds scan:1, scan:10..19 and scan:100..199; TYPE hash
 * finds the hashes and nothing else. */
static void check_filters(vk_client *c)
{
    static int seen[KEYS];
    memset(seen, 0, sizeof seen);
    vk_scan *s = NULL;
    CHECK_OK(vk_scan_new(&s, c, "scan:1*", 7, 50, NULL));
    walk_result w = walk(s, "scan:", 1, false, seen, KEYS);
    CHECK(!w.foreign);
    CHECK_EQ_INT(count_seen(seen, KEYS), 111);
    for (int i = 0; i < KEYS; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d", i);
        if (seen[i] > 0)
            CHECK(name[0] == '1');
    }
    vk_scan_free(s);

    int hashes[20] = { 0 };
    CHECK_OK(vk_scan_new(&s, c, NULL, 0, 0, "hash"));
    w = walk(s, "typed:", 1, false, hashes, 20);
    /* typed:0..19 and big:hash; none of the strings, sets, sorted sets. */
    CHECK_EQ_INT(w.items, 21);
    CHECK_EQ_INT(count_seen(hashes, 20), 20);
    vk_scan_free(s);
}

static void check_collections(vk_client *c)
{
    static int seen[MEMBERS];
    struct {
        const char *cmd, *key;
        int stride;
        bool scores;
    } cases[] = {
        { "HSCAN", "big:hash", 2, false },
        { "SSCAN", "big:set", 1, false },
        { "ZSCAN", "big:zset", 2, true },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memset(seen, 0, sizeof seen);
        vk_scan *s = NULL;
        CHECK_OK(vk_scan_new_key(&s, c, cases[k].cmd, cases[k].key, strlen(cases[k].key),
                                 NULL, 0, 100));
        walk_result w = walk(s, "m", cases[k].stride, cases[k].scores, seen, MEMBERS);
        CHECK(!w.foreign);
        CHECK(!w.bad_value);
        CHECK_EQ_INT(count_seen(seen, MEMBERS), MEMBERS);
        CHECK(w.pages > 1);
        fprintf(stderr, "   %s: %ld items in %d pages\n", cases[k].cmd, w.items, w.pages);
        vk_scan_free(s);
    }
    /* MATCH on a collection, lower-case command name. */
    memset(seen, 0, sizeof seen);
    vk_scan *s = NULL;
    CHECK_OK(vk_scan_new_key(&s, c, "hscan", "big:hash", 8, "m99*", 4, 0));
    walk_result w = walk(s, "m", 2, false, seen, MEMBERS);
    CHECK(!w.foreign);
    CHECK_EQ_INT(count_seen(seen, MEMBERS), 11);   /* m99, m990..m999 */
    vk_scan_free(s);
}

static void fill_data(vk_client *c)
{
    fill(c, "SET", NULL, "scan:", KEYS, false);
    fill(c, "HSET", NULL, "typed:", 20, false);
    fill(c, "HSET", "big:hash", "m", MEMBERS, false);
    fill(c, "SADD", "big:set", "m", MEMBERS, false);
    fill(c, "ZADD", "big:zset", "m", MEMBERS, true);
}

static void check_empty(vk_client *c)
{
    vk_scan *s = NULL;
    CHECK_OK(vk_scan_new(&s, c, NULL, 0, 0, NULL));
    int none[1] = { 0 };
    walk_result w = walk(s, "x", 1, false, none, 1);
    CHECK_EQ_INT(w.items, 0);
    CHECK(w.pages >= 1);
    CHECK(vk_scan_done(s));
    vk_scan_free(s);
    /* A collection that does not exist is empty too. */
    CHECK_OK(vk_scan_new_key(&s, c, "SSCAN", "no:such:set", 11, NULL, 0, 0));
    w = walk(s, "x", 1, false, none, 1);
    CHECK_EQ_INT(w.items, 0);
    vk_scan_free(s);
}

static void check_cancelled(vk_client *c)
{
    vk_scan *s = NULL;
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_scan_new(&s, c, NULL, 0, 10, NULL));
    vk_reply *page = NULL;
    CHECK_OK(vk_scan_next(&page, s, ctx));
    vk_reply_free(page);
    CHECK_OK(vk_context_cancel(ctx));
    CHECK_FAILS(vk_scan_next(&page, s, ctx), VK_ERR_CANCELLED, "operation cancelled");
    CHECK(page == NULL);
    CHECK(!vk_scan_done(s));
    /* The scan goes on from where it was with another context. */
    static int seen[KEYS];
    memset(seen, 0, sizeof seen);
    walk_result w = walk(s, "scan:", 1, false, seen, KEYS);
    CHECK(w.items > 0);
    vk_scan_free(s);
    vk_context_free(ctx);
}

/* ---- standalone ------------------------------------------------------------------- */

static vkt_server *server;
static vk_client *client;

static void test_empty_database(void)
{
    check_empty(client);
}

static void test_every_key_once_at_least(void)
{
    fill_data(client);
    check_all_keys(client, 100);
    check_all_keys(client, 0);
}

static void test_match_and_type(void)
{
    check_filters(client);
}

static void test_hscan_sscan_zscan(void)
{
    check_collections(client);
}

static void test_bad_input(void)
{
    vk_scan *s = (vk_scan *)1;
    CHECK_FAILS(vk_scan_new(&s, NULL, NULL, 0, 0, NULL), VK_ERR_NIL_CLIENT, "redis client is nil");
    CHECK(s == NULL);
    CHECK_FAILS(vk_scan_new(&s, client, NULL, 0, -1, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: scan count cannot be negative");
    CHECK_FAILS(vk_scan_new(&s, client, NULL, 0, 0, ""), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: scan type cannot be empty");
    CHECK_FAILS(vk_scan_new(&s, client, NULL, 3, 0, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: scan match is NULL with a length");
    CHECK_FAILS(vk_scan_new_key(&s, client, "SCAN", "k", 1, NULL, 0, 0), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: scan command must be HSCAN, SSCAN or ZSCAN");
    CHECK_FAILS(vk_scan_new_key(&s, client, NULL, "k", 1, NULL, 0, 0), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: scan command must be HSCAN, SSCAN or ZSCAN");
    CHECK_FAILS(vk_scan_new_key(&s, client, "HSCAN", NULL, 2, NULL, 0, 0),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: scan key is NULL with a length");
    CHECK_FAILS(vk_scan_new(NULL, client, NULL, 0, 0, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    vk_reply *page = (vk_reply *)1;
    CHECK_FAILS(vk_scan_next(&page, NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: scan is nil");
    CHECK(page == NULL);
    CHECK(vk_scan_done(NULL));
    vk_scan_free(NULL);
}

static void test_server_error_reply(void)
{
    const char *set[] = { "SET", "plain:string", "x" };
    command(client, 3, set);
    vk_scan *s = NULL;
    CHECK_OK(vk_scan_new_key(&s, client, "HSCAN", "plain:string", 12, NULL, 0, 0));
    vk_reply *page = NULL;
    CHECK_FAILS(vk_scan_next(&page, s, NULL), VK_ERR_SERVER,
                "server error reply: HSCAN: WRONGTYPE Operation against a key holding the "
                "wrong kind of value");
    CHECK(page == NULL);
    CHECK(!vk_scan_done(s));
    vk_scan_free(s);
    const char *del[] = { "DEL", "plain:string" };
    command(client, 2, del);
}

static void test_cancelled_context(void)
{
    check_cancelled(client);
}

static void test_outlives_its_client(void)
{
    vk_client *c = new_client(vkt_server_address(server), false);
    vk_scan *s = NULL;
    CHECK_OK(vk_scan_new(&s, c, NULL, 0, 0, NULL));
    vk_client_free(c);
    vk_reply *page = NULL;
    CHECK_FAILS(vk_scan_next(&page, s, NULL), VK_ERR_NIL_CLIENT, "redis client is nil");
    vk_scan_free(s);
}

/* ---- cluster ---------------------------------------------------------------------- */

static vkt_cluster *cluster;
static vk_client *cluster_client;

static void test_cluster_empty_database(void)
{
    check_empty(cluster_client);
}

/* The 1,000 keys are on every master, and the walk finds all of them. */
static void test_cluster_walks_every_master(void)
{
    fill_data(cluster_client);
    for (int m = 0; m < MASTERS; m++) {
        const char *argv[] = { "DBSIZE" };
        char *line = vkt_server_cmd(vkt_cluster_node(cluster, m), argv, 1);
        CHECK(line != NULL && line[0] == ':' && atoi(line + 1) > 100);
        free(line);
    }
    check_all_keys(cluster_client, 100);
    check_all_keys(cluster_client, 0);
}

static void test_cluster_match_and_type(void)
{
    check_filters(cluster_client);
}

static void test_cluster_collections(void)
{
    check_collections(cluster_client);
}

static void test_cluster_cancelled_context(void)
{
    check_cancelled(cluster_client);
}

/* A slot moved to another master during the walk: the next page says so
 * rather than skip the keys that moved. */
static void test_cluster_slot_map_change(void)
{
    vk_scan *s = NULL;
    CHECK_OK(vk_scan_new(&s, cluster_client, NULL, 0, 10, NULL));
    vk_reply *page = NULL;
    CHECK_OK(vk_scan_next(&page, s, NULL));
    vk_reply_free(page);

    const char *key = "scan:7";
    int slot = vkt_cluster_keyslot(cluster, key);
    int from = vkt_cluster_key_owner(cluster, key);
    int to = (from + 1) % MASTERS;
    char *keys[KEYS];
    int nkeys = 0;
    for (int i = 0; i < KEYS; i++) {
        char name[32];
        snprintf(name, sizeof name, "scan:%d", i);
        if (vkt_cluster_keyslot(cluster, name) == slot)
            keys[nkeys++] = strdup(name);
    }
    CHECK(vkt_cluster_move_slot(cluster, slot, from, to, (const char *const *)keys, nkeys, 0));
    for (int i = 0; i < nkeys; i++)
        free(keys[i]);
    /* A command on the moved slot meets MOVED: the client's map changes. */
    const char *get[] = { "GET", key };
    command(cluster_client, 2, get);

    char want[512];
    snprintf(want, sizeof want,
             "redis cluster: scan: the slot map changed during the walk (slot %d moved from "
             "%s to %s); start the walk again",
             slot, vkt_server_address(vkt_cluster_node(cluster, from)),
             vkt_server_address(vkt_cluster_node(cluster, to)));
    CHECK_FAILS(vk_scan_next(&page, s, NULL), VK_ERR_IO, want);
    vk_scan_free(s);
    /* A new walk goes over the new map: every key again. */
    check_all_keys(cluster_client, 100);
}

/* A master killed during the walk: a page that needs it fails with an
 * error naming it; no master is skipped silently. */
static void test_cluster_master_killed(void)
{
    vk_scan *s = NULL;
    CHECK_OK(vk_scan_new(&s, cluster_client, NULL, 0, 1000, NULL));
    vk_reply *page = NULL;
    CHECK_OK(vk_scan_next(&page, s, NULL));   /* the first master, whole */
    vk_reply_free(page);
    for (int m = 0; m < MASTERS; m++)
        vkt_server_kill(vkt_cluster_node(cluster, m));
    vk_status st = vk_scan_next(&page, s, NULL);
    CHECK(st == VK_ERR_IO);
    CHECK(page == NULL);
    CHECK(!vk_scan_done(s));
    fprintf(stderr, "   page after the kill: %s\n", vk_last_error());
    /* The master the walk is at: the first one (if its page was not its
     * last) or the second. */
    bool named = false;
    for (int m = 0; m < 2; m++) {
        char want[128];
        snprintf(want, sizeof want, "connection error: dial %s: Connection refused",
                 vkt_server_address(vkt_cluster_node(cluster, m)));
        named |= strcmp(vk_last_error(), want) == 0;
    }
    VKT_CHECK_(named, "unexpected text: %s", vk_last_error());
    vk_scan_free(s);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    vkt_server_opts opts = { 0 };
    server = vkt_server_start(&opts);
    if (server == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    client = new_client(vkt_server_address(server), false);
    if (client != NULL) {
        RUN(test_empty_database);
        RUN(test_every_key_once_at_least);
        RUN(test_match_and_type);
        RUN(test_hscan_sscan_zscan);
        RUN(test_bad_input);
        RUN(test_server_error_reply);
        RUN(test_cancelled_context);
        RUN(test_outlives_its_client);
    }
    vk_client_free(client);
    vkt_server_stop(server);

    cluster = vkt_cluster_start(MASTERS, 0, NULL, false);
    if (cluster == NULL) {
        fprintf(stderr, "cannot start a cluster of %s\n", vkt_server_binary());
        return 1;
    }
    cluster_client = new_client(vkt_server_address(vkt_cluster_node(cluster, 1)), true);
    if (cluster_client != NULL) {
        RUN(test_cluster_empty_database);
        RUN(test_cluster_walks_every_master);
        RUN(test_cluster_match_and_type);
        RUN(test_cluster_collections);
        RUN(test_cluster_cancelled_context);
        RUN(test_cluster_slot_map_change);
        RUN(test_cluster_master_killed);
    }
    vk_client_free(cluster_client);
    vkt_cluster_stop(cluster);
    return vkt_finish();
}
