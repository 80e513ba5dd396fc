/*
 * Scans on the event-loop client (VKTEST_NEEDS_SERVER), each scenario on
 * libuv and on libevent: against a standalone server, 1,000 keys walked
 * page by page with MATCH and COUNT, an HSCAN larger than a page, the
 * empty page of a scan that is done (never from inside the call), one page
 * in flight at a time, the scans of one kind refused by the other's
 * functions, a scan freed with its page in flight and one that outlives
 * its client; against a 3-master cluster, a walk over every master that
 * starts before the router has a slot map, and a slot map that changes
 * during the walk.
 */
#include "vktest.h"
#include "clusters.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS 1000
#define MASTERS 3

static vkt_server *server;
static vk_client *plain;         /* a blocking client of the standalone server */
static vkt_cluster *cluster;
static vk_client *checker;       /* a blocking cluster client */

/* ---- helpers ------------------------------------------------------------------------- */

/* Writes n strings <prefix><i> (and, with hash, a hash <prefix>hash of n
 * fields) through a blocking client. */
static void fill(vk_client *c, const char *prefix, int n, bool hash)
{
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    char hkey[64];
    int len = snprintf(hkey, sizeof hkey, "%shash", prefix);
    CHECK(len > 0 && (size_t)len < sizeof hkey);
    for (int i = 0; i < n; i++) {
        char key[64], field[32];
        len = snprintf(key, sizeof key, "%s%d", prefix, i);
        CHECK(len > 0 && (size_t)len < sizeof key);
        snprintf(field, sizeof field, "f%d", i);
        const char *set[] = {"SET", key, "v"};
        size_t setlen[] = {3, strlen(key), 1};
        CHECK_OK(vk_pipeline_append(p, 3, set, setlen));
        if (hash) {
            const char *hset[] = {"HSET", hkey, field, "v"};
            size_t hsetlen[] = {4, strlen(hkey), strlen(field), 1};
            CHECK_OK(vk_pipeline_append(p, 4, hset, hsetlen));
        }
    }
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    vk_reply_free(r);
    vk_pipeline_free(p);
}

/* One page: submitted, the loop turned until its completion. */
static bool page(vkt_loop *loop, vk_scan *s, vkt_op *op)
{
    vkt_op_clear(op);
    vk_status st = vk_async_scan_next(s, vkt_op_fn, op);
    if (st != VK_OK) {
        fprintf(stderr, "   vk_async_scan_next: %s\n", vk_last_error());
        return false;
    }
    CHECK_EQ_INT(op->calls, 0);   /* never from inside the call */
    return vkt_loop_run_until(loop, vkt_op_done, op, 10000);
}

/* Walks s to its end; seen[i] counts the items <prefix><i> (every other
 * item with stride 2). Returns the number of pages, or -1 when one failed
 * (its text in op->error). */
static int walk(vkt_loop *loop, vk_scan *s, const char *prefix, int stride, int *seen, int n,
                vkt_op *op)
{
    int pages = 0;
    size_t plen = strlen(prefix);
    while (!vk_scan_done(s)) {
        if (!page(loop, s, op) || op->status != VK_OK)
            return -1;
        pages++;
        for (size_t i = 0; i < vk_reply_get_length(op->reply); i += (size_t)stride) {
            size_t len;
            const char *item = vk_reply_get_string(vk_reply_get_element(op->reply, i), &len);
            if (item != NULL && len > plen && memcmp(item, prefix, plen) == 0) {
                int index = atoi(item + plen);
                if (index >= 0 && index < n)
                    seen[index]++;
            }
        }
    }
    return pages;
}

static int distinct(const int *seen, int n)
{
    int count = 0;
    for (int i = 0; i < n; i++)
        count += seen[i] > 0;
    return count;
}

static vk_async *plain_client(vkt_loop *loop)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    vk_async *a = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    return a;
}

/* ---- standalone -------------------------------------------------------------------------- */

static void test_walks_every_key(vkt_loop *loop)
{
    char prefix[64], pattern[80];
    snprintf(prefix, sizeof prefix, "ascan:%s:", vkt_loop_name(loop));
    snprintf(pattern, sizeof pattern, "%s*", prefix);
    fill(plain, prefix, KEYS, true);
    vk_async *a = plain_client(loop);
    static int seen[KEYS];
    memset(seen, 0, sizeof seen);
    vk_scan *s = NULL;
    CHECK_OK(vk_async_scan_new(&s, a, pattern, strlen(pattern), 100, "string"));
    vkt_op op = {0};
    int pages = walk(loop, s, prefix, 1, seen, KEYS, &op);
    CHECK(pages > 1);
    CHECK_EQ_INT(distinct(seen, KEYS), KEYS);
    /* Done: an empty page, on the loop's next turn. */
    CHECK(page(loop, s, &op));
    CHECK_EQ_INT(op.status, VK_OK);
    CHECK_EQ_INT(vk_reply_get_type(op.reply), VK_REPLY_ARRAY);
    CHECK_EQ_INT(vk_reply_get_length(op.reply), 0);
    vk_scan_free(s);

    /* The hash, field by field over more than one page. */
    char hkey[96];
    snprintf(hkey, sizeof hkey, "%shash", prefix);
    memset(seen, 0, sizeof seen);
    CHECK_OK(vk_async_scan_new_key(&s, a, "hscan", hkey, strlen(hkey), NULL, 0, 100));
    pages = walk(loop, s, "f", 2, seen, KEYS, &op);
    CHECK(pages > 1);
    CHECK_EQ_INT(distinct(seen, KEYS), KEYS);
    vk_scan_free(s);
    vkt_op_clear(&op);
    vk_async_free(a);
}

static void test_one_page_at_a_time(vkt_loop *loop)
{
    vk_async *a = plain_client(loop);
    vk_scan *s = NULL;
    CHECK_OK(vk_async_scan_new(&s, a, NULL, 0, 10, NULL));
    vkt_op op = {0};
    CHECK_OK(vk_async_scan_next(s, vkt_op_fn, &op));
    CHECK_FAILS(vk_async_scan_next(s, vkt_op_fn, &op), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: a page of this scan is already in flight");
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
    CHECK_EQ_INT(op.status, VK_OK);

    /* Each kind of scan runs with its own functions. */
    vk_reply *r = NULL;
    CHECK_FAILS(vk_scan_next(&r, s, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: an event-loop client's scan runs with vk_async_scan_next "
                "or vk_hosted_scan_next");
    CHECK_FAILS(vk_hosted_scan_next(s, vkt_op_fn, &op), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: the scan belongs to another kind of client");
    vk_scan *blocking = NULL;
    CHECK_OK(vk_scan_new(&blocking, plain, NULL, 0, 0, NULL));
    CHECK_FAILS(vk_async_scan_next(blocking, vkt_op_fn, &op), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: the scan belongs to another kind of client");
    vk_scan_free(blocking);
    CHECK_FAILS(vk_async_scan_next(s, NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: fn is NULL");
    CHECK_FAILS(vk_async_scan_next(NULL, vkt_op_fn, &op), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: scan is nil");
    vk_scan *bad = NULL;
    CHECK_FAILS(vk_async_scan_new(&bad, a, NULL, 0, -5, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: scan count cannot be negative");
    CHECK_FAILS(vk_async_scan_new_key(&bad, a, "GET", "k", 1, NULL, 0, 0),
                VK_ERR_INVALID_ARGUMENT,
                "invalid argument: scan command must be HSCAN, SSCAN or ZSCAN");
    CHECK_FAILS(vk_async_scan_new(&bad, NULL, NULL, 0, 0, NULL), VK_ERR_NIL_CLIENT,
                "redis client is nil");
    CHECK(bad == NULL);
    vk_scan_free(s);
    vkt_op_clear(&op);
    vk_async_free(a);
}

static void test_free_with_page_in_flight(vkt_loop *loop)
{
    vk_async *a = plain_client(loop);
    vk_scan *s = NULL;
    CHECK_OK(vk_async_scan_new(&s, a, NULL, 0, 0, NULL));
    vkt_op op = {0};
    CHECK_OK(vk_async_scan_next(s, vkt_op_fn, &op));
    vk_scan_free(s);   /* the completion runs now */
    CHECK_EQ_INT(op.calls, 1);
    CHECK_EQ_INT(op.status, VK_ERR_CANCELLED);
    vkt_op_clear(&op);
    /* The client goes on. */
    const char *ping[] = {"PING"};
    CHECK(vkt_call(loop, a, &op, 1, ping));
    CHECK_EQ_INT(op.status, VK_OK);
    vkt_op_clear(&op);
    vk_async_free(a);
}

static void test_scan_outlives_its_client(vkt_loop *loop)
{
    vk_async *a = plain_client(loop);
    vk_scan *s = NULL;
    CHECK_OK(vk_async_scan_new(&s, a, NULL, 0, 0, NULL));
    vkt_op op = {0};
    CHECK_OK(vk_async_scan_next(s, vkt_op_fn, &op));
    vk_async_free(a);
    CHECK_EQ_INT(op.calls, 1);
    CHECK_EQ_INT(op.status, VK_ERR_CANCELLED);
    vkt_op_clear(&op);
    CHECK_FAILS(vk_async_scan_next(s, vkt_op_fn, &op), VK_ERR_NIL_CLIENT, "redis client is nil");
    vk_scan_free(s);
}

/* ---- cluster ------------------------------------------------------------------------------- */

static vk_async *cluster_client(vkt_loop *loop)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg,
                                           vkt_server_address(vkt_cluster_node(cluster, 0))));
    vk_async *a = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    return a;
}

static void test_cluster_walks_every_master(vkt_loop *loop)
{
    char prefix[64], pattern[80];
    snprintf(prefix, sizeof prefix, "ascan:%s:", vkt_loop_name(loop));
    snprintf(pattern, sizeof pattern, "%s*", prefix);
    fill(checker, prefix, KEYS, false);
    for (int m = 0; m < MASTERS; m++) {
        const char *argv[] = {"DBSIZE"};
        char *line = vkt_server_cmd(vkt_cluster_node(cluster, m), argv, 1);
        CHECK(line != NULL && line[0] == ':' && atoi(line + 1) > 100);
        free(line);
    }
    /* A new client: its router has no slot map when the walk begins. */
    vk_async *a = cluster_client(loop);
    static int seen[KEYS];
    memset(seen, 0, sizeof seen);
    vk_scan *s = NULL;
    CHECK_OK(vk_async_scan_new(&s, a, pattern, strlen(pattern), 200, NULL));
    vkt_op op = {0};
    int pages = walk(loop, s, prefix, 1, seen, KEYS, &op);
    CHECK(pages >= MASTERS);
    CHECK_EQ_INT(distinct(seen, KEYS), KEYS);
    fprintf(stderr, "   %d keys in %d pages\n", distinct(seen, KEYS), pages);
    vk_scan_free(s);
    vkt_op_clear(&op);
    vk_async_free(a);
}

/* A slot moved during the walk: the next page fails with the blocking
 * client's text instead of skipping keys. */
static void test_cluster_slot_map_change(vkt_loop *loop)
{
    char key[96];
    snprintf(key, sizeof key, "ascan:%s:7", vkt_loop_name(loop));
    vk_async *a = cluster_client(loop);
    vk_scan *s = NULL;
    CHECK_OK(vk_async_scan_new(&s, a, NULL, 0, 10, NULL));
    vkt_op op = {0};
    CHECK(page(loop, s, &op));
    CHECK_EQ_INT(op.status, VK_OK);

    int slot = vkt_cluster_keyslot(cluster, key);
    int from = vkt_cluster_key_owner(cluster, key);
    int to = (from + 1) % MASTERS;
    const char *keys[] = {key};
    CHECK(vkt_cluster_move_slot(cluster, slot, from, to, keys, 1, 0));
    const char *get[] = {"GET", key};
    vkt_op_clear(&op);
    CHECK(vkt_call(loop, a, &op, 2, get));   /* MOVED: the router's map changes */
    CHECK_EQ_INT(op.status, VK_OK);

    char want[512];
    snprintf(want, sizeof want,
             "redis cluster: scan: the slot map changed during the walk (slot %d moved from "
             "%s to %s); start the walk again",
             slot, vkt_server_address(vkt_cluster_node(cluster, from)),
             vkt_server_address(vkt_cluster_node(cluster, to)));
    CHECK(page(loop, s, &op));
    CHECK_EQ_INT(op.status, VK_ERR_IO);
    CHECK_EQ_STR(op.error, want);
    CHECK(!vk_scan_done(s));
    vk_scan_free(s);
    vkt_op_clear(&op);
    vk_async_free(a);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    vkt_server_opts opts = {0};
    server = vkt_server_start(&opts);
    if (server == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    CHECK_OK(vk_client_new(&plain, cfg));
    vk_config_free(cfg);
    if (plain != NULL) {
        RUN_ON_LOOPS(test_walks_every_key);
        RUN_ON_LOOPS(test_one_page_at_a_time);
        RUN_ON_LOOPS(test_free_with_page_in_flight);
        RUN_ON_LOOPS(test_scan_outlives_its_client);
    }
    vk_client_free(plain);
    vkt_server_stop(server);

    cluster = vkt_cluster_start(MASTERS, 0, NULL, false);
    if (cluster == NULL) {
        fprintf(stderr, "cannot start a cluster of %s\n", vkt_server_binary());
        return 1;
    }
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg,
                                           vkt_server_address(vkt_cluster_node(cluster, 1))));
    CHECK_OK(vk_client_new(&checker, cfg));
    vk_config_free(cfg);
    if (checker != NULL) {
        RUN_ON_LOOPS(test_cluster_walks_every_master);
        RUN_ON_LOOPS(test_cluster_slot_map_change);
    }
    vk_client_free(checker);
    vkt_cluster_stop(cluster);
    return vkt_finish();
}
