/*
 * Scripts (vk_script_run, vk_async_script_run) against real servers
 * (VKTEST_NEEDS_SERVER): a standalone server and a Cluster of 3 masters,
 * through the blocking client and the event-loop client (libuv and
 * libevent). The first run after SCRIPT FLUSH is EVALSHA answered NOSCRIPT
 * and then EVAL (the script is cached: SCRIPT EXISTS), the next runs are
 * one EVALSHA each (INFO commandstats counts the calls), a script's error
 * reply is a reply, keys and args are binary safe, a SCRIPT FLUSH between
 * runs is recovered from, keys route the run to their master in a
 * Cluster (each master loads the script on first use there), keys of
 * different slots are refused as CROSSSLOT, a run is cancelled by its id,
 * and the script object may be freed while its run is in flight.
 */
#include "vktest.h"
#include "clusters.h"
#include "readback.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MASTERS 3
#define PASSWORD "script-secret"

static const char CROSSSLOT_TEXT[] =
    "invalid argument: CROSSSLOT keys in request don't hash to the same slot";
/* Writes ARGV[1] to KEYS[1] and returns what it reads back there. */
static const char SET_GET[] =
    "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])";
static const char ECHO[] = "return {KEYS[1], ARGV[1], #ARGV[1]}";
static const char FAILS[] = "return redis.error_reply('MYERR the script says no')";

static vkt_server *server;
static vkt_cluster *cluster;

/* ---- helpers --------------------------------------------------------------------- */

static vk_script *new_script(const char *source)
{
    vk_script *s = NULL;
    CHECK_OK(vk_script_new(&s, source, strlen(source)));
    return s;
}

static vk_client *standalone_client(const vkt_server *node, const char *password)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(node));
    if (password != NULL)
        CHECK_OK(vk_config_set_static_password(cfg, NULL, password));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static vk_config *cluster_config(void)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg,
                                           vkt_server_address(vkt_cluster_node(cluster, 0))));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    return cfg;
}

/* The calls of command `name` INFO commandstats counts on c's node; 0 when
 * it was not called since the reset. */
static long long cmdstat_calls(vk_client *c, const char *name)
{
    const char *argv[] = {"INFO", "commandstats"};
    vk_reply *r = NULL;
    long long calls = -1;
    if (vkt_blocking_run(c, &r, 2, argv) == VK_OK && vk_reply_get_type(r) != VK_REPLY_ERROR) {
        size_t len = 0;
        const char *text = vk_reply_get_string(r, &len);
        char *copy = strndup(text, len);
        char field[64];
        snprintf(field, sizeof field, "\ncmdstat_%s:calls=", name);
        const char *at = strstr(copy, field);
        calls = at != NULL ? atoll(at + strlen(field)) : 0;
        free(copy);
    }
    vk_reply_free(r);
    return calls;
}

static void reset_node(vk_client *c)
{
    const char *flush[] = {"SCRIPT", "FLUSH"};
    const char *reset[] = {"CONFIG", "RESETSTAT"};
    vkt_blocking_do(c, 2, flush);
    vkt_blocking_do(c, 2, reset);
}

static long long script_exists(vk_client *c, const vk_script *s)
{
    const char *argv[] = {"SCRIPT", "EXISTS", vk_script_sha1(s)};
    vk_reply *r = NULL;
    long long v = -1;
    if (vkt_blocking_run(c, &r, 3, argv) == VK_OK && vk_reply_get_length(r) == 1)
        v = vk_reply_get_integer(vk_reply_get_element(r, 0));
    vk_reply_free(r);
    return v;
}

/* The reply is a string (not an error) with exactly text. */
static bool reply_is(const vk_reply *r, const char *text)
{
    return r != NULL && vk_reply_get_type(r) != VK_REPLY_ERROR && vkt_reply_is(r, text);
}

static vk_status run1(vk_reply **out, vk_client *c, const vk_script *s, const char *key,
                      const char *arg)
{
    const char *keys[] = {key};
    const size_t keylens[] = {strlen(key)};
    const char *args[] = {arg};
    const size_t arglens[] = {strlen(arg)};
    return vk_script_run(out, c, NULL, s, 1, keys, keylens, 1, args, arglens);
}

/* ---- the script object -------------------------------------------------------------- */

static void test_script_object(void)
{
    vk_script *s = new_script("return 1");
    CHECK_EQ_STR(vk_script_sha1(s), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    size_t len = 0;
    CHECK_EQ_STR(vk_script_source(s, &len), "return 1");
    CHECK_EQ_INT(len, 8);
    vk_script_free(s);

    vk_script *empty = NULL;
    CHECK_OK(vk_script_new(&empty, NULL, 0));
    CHECK_EQ_STR(vk_script_sha1(empty), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    vk_script_free(empty);

    CHECK_FAILS(vk_script_new(NULL, "x", 1), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    vk_script *none = (vk_script *)1;
    CHECK_FAILS(vk_script_new(&none, NULL, 3), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: script source is NULL");
    CHECK(none == NULL);
    CHECK(vk_script_sha1(NULL) == NULL);
    CHECK(vk_script_source(NULL, &len) == NULL);
    CHECK_EQ_INT(len, 0);
    vk_script_free(NULL);
}

static void test_bad_arguments(void)
{
    vk_client *c = standalone_client(server, NULL);
    vk_script *s = new_script("return 1");
    vk_reply *r = (vk_reply *)1;
    const char *keys[] = {NULL};
    const size_t lens[] = {3};
    CHECK_FAILS(vk_script_run(NULL, c, NULL, s, 0, NULL, NULL, 0, NULL, NULL),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: out is NULL");
    CHECK_FAILS(vk_script_run(&r, NULL, NULL, s, 0, NULL, NULL, 0, NULL, NULL),
                VK_ERR_NIL_CLIENT, "redis client is nil");
    CHECK(r == NULL);
    CHECK_FAILS(vk_script_run(&r, c, NULL, NULL, 0, NULL, NULL, 0, NULL, NULL),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: script is NULL");
    CHECK_FAILS(vk_script_run(&r, c, NULL, s, -1, NULL, NULL, 0, NULL, NULL),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: the number of keys is negative");
    CHECK_FAILS(vk_script_run(&r, c, NULL, s, 1, NULL, NULL, 0, NULL, NULL),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: keys and their lengths are required");
    CHECK_FAILS(vk_script_run(&r, c, NULL, s, 0, NULL, NULL, 1, keys, lens),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: args 0 is NULL");
    vk_script_free(s);
    vk_client_free(c);
}

/* ---- blocking, standalone ----------------------------------------------------------- */

static void test_first_run_loads_then_evalsha_only(void)
{
    vk_client *c = standalone_client(server, NULL);
    vk_script *s = new_script(SET_GET);
    reset_node(c);
    CHECK_EQ_INT(script_exists(c, s), 0);

    vk_reply *r = NULL;
    CHECK_OK(run1(&r, c, s, "script:a", "one"));
    CHECK(reply_is(r, "one"));
    vk_reply_free(r);
    CHECK_EQ_INT(script_exists(c, s), 1);
    CHECK_EQ_INT(cmdstat_calls(c, "eval"), 1);
    long long evalsha_before = cmdstat_calls(c, "evalsha");

    for (int i = 0; i < 3; i++) {
        CHECK_OK(run1(&r, c, s, "script:a", "two"));
        CHECK(reply_is(r, "two"));
        vk_reply_free(r);
    }
    CHECK_EQ_INT(cmdstat_calls(c, "eval"), 1);
    CHECK_EQ_INT(cmdstat_calls(c, "evalsha"), evalsha_before + 3);
    vk_script_free(s);
    vk_client_free(c);
}

static void test_error_reply_is_a_reply(void)
{
    vk_client *c = standalone_client(server, NULL);
    vk_script *s = new_script(FAILS);
    vk_reply *r = NULL;
    for (int i = 0; i < 2; i++) {   /* by EVAL, then by EVALSHA */
        CHECK_OK(vk_script_run(&r, c, NULL, s, 0, NULL, NULL, 0, NULL, NULL));
        CHECK(vkt_reply_error_starts(r, "MYERR the script says no"));
        vk_reply_free(r);
    }
    /* A runtime error of the script is the server's error reply too. */
    vk_script *bad = new_script("return redis.call('INCR', KEYS[1])");
    const char *set[] = {"SET", "script:str", "text"};
    vkt_blocking_do(c, 3, set);
    const char *keys[] = {"script:str"};
    const size_t keylens[] = {10};
    CHECK_OK(vk_script_run(&r, c, NULL, bad, 1, keys, keylens, 0, NULL, NULL));
    CHECK(vk_reply_get_type(r) == VK_REPLY_ERROR);
    vk_reply_free(r);
    vk_script_free(bad);
    vk_script_free(s);
    vk_client_free(c);
}

static bool echo_is(const vk_reply *r, const char *key, size_t keylen, const char *arg,
                    size_t arglen)
{
    if (r == NULL || vk_reply_get_type(r) != VK_REPLY_ARRAY || vk_reply_get_length(r) != 3)
        return false;
    size_t klen = 0, alen = 0;
    const char *k = vk_reply_get_string(vk_reply_get_element(r, 0), &klen);
    const char *a = vk_reply_get_string(vk_reply_get_element(r, 1), &alen);
    return k != NULL && a != NULL && klen == keylen && memcmp(k, key, keylen) == 0 &&
           alen == arglen && memcmp(a, arg, arglen) == 0 &&
           vk_reply_get_integer(vk_reply_get_element(r, 2)) == (long long)arglen;
}

static void test_binary_safe(void)
{
    vk_client *c = standalone_client(server, NULL);
    vk_script *s = new_script(ECHO);
    const char key[] = "bin\0key\xff";
    const char arg[] = "\0\r\n\xfe arg";
    const char *keys[] = {key};
    const size_t keylens[] = {sizeof key - 1};
    const char *args[] = {arg};
    const size_t arglens[] = {sizeof arg - 1};
    vk_reply *r = NULL;
    CHECK_OK(vk_script_run(&r, c, NULL, s, 1, keys, keylens, 1, args, arglens));
    CHECK(echo_is(r, key, sizeof key - 1, arg, sizeof arg - 1));
    vk_reply_free(r);
    vk_script_free(s);
    vk_client_free(c);
}

static void test_flush_between_runs_recovers(void)
{
    vk_client *c = standalone_client(server, NULL);
    vk_script *s = new_script(SET_GET);
    reset_node(c);
    vk_reply *r = NULL;
    CHECK_OK(run1(&r, c, s, "script:f", "1"));
    CHECK(reply_is(r, "1"));
    vk_reply_free(r);
    const char *flush[] = {"SCRIPT", "FLUSH"};
    vkt_blocking_do(c, 2, flush);
    CHECK_EQ_INT(script_exists(c, s), 0);
    CHECK_OK(run1(&r, c, s, "script:f", "2"));
    CHECK(reply_is(r, "2"));
    vk_reply_free(r);
    CHECK_EQ_INT(script_exists(c, s), 1);
    CHECK_EQ_INT(cmdstat_calls(c, "eval"), 2);
    vk_script_free(s);
    vk_client_free(c);
}

/* ---- blocking, Cluster ------------------------------------------------------------- */

/* A key served by master i ("script:<n>" for the first n that lands there). */
static void key_on_master(int i, char *key, size_t cap)
{
    for (int n = 0;; n++) {
        snprintf(key, cap, "script:%d", n);
        if (vkt_cluster_key_owner(cluster, key) == i)
            return;
    }
}

static void test_cluster_routes_by_key(void)
{
    vk_config *cfg = cluster_config();
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    vk_client *nodes[MASTERS];
    for (int i = 0; i < MASTERS; i++) {
        nodes[i] = standalone_client(vkt_cluster_node(cluster, i), PASSWORD);
        reset_node(nodes[i]);
    }
    vk_script *s = new_script(SET_GET);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < MASTERS; i++) {
            char key[32], value[32];
            key_on_master(i, key, sizeof key);
            snprintf(value, sizeof value, "v%d-%d", i, round);
            vk_reply *r = NULL;
            CHECK_OK(run1(&r, c, s, key, value));
            CHECK(reply_is(r, value));
            vk_reply_free(r);
            char *held = vkt_node_get(vkt_cluster_node(cluster, i), key);
            CHECK(held != NULL && strcmp(held, value) == 0);
            free(held);
        }
    }
    /* Each master loaded it once (by EVAL), then ran it by EVALSHA. */
    for (int i = 0; i < MASTERS; i++) {
        CHECK_EQ_INT(script_exists(nodes[i], s), 1);
        CHECK_EQ_INT(cmdstat_calls(nodes[i], "eval"), 1);
        CHECK(cmdstat_calls(nodes[i], "evalsha") >= 1);
    }

    /* Keys of two slots: refused before anything is sent. */
    const char *keys[] = {"{a}x", "{b}y"};
    const size_t keylens[] = {4, 4};
    vk_reply *r = (vk_reply *)1;
    CHECK_FAILS(vk_script_run(&r, c, NULL, s, 2, keys, keylens, 0, NULL, NULL),
                VK_ERR_INVALID_ARGUMENT, CROSSSLOT_TEXT);
    CHECK(r == NULL);
    /* Keys of one slot (a hash tag) go together. */
    vk_script *both = new_script("return redis.call('MSET', KEYS[1], ARGV[1], KEYS[2], ARGV[1])");
    const char *tagged[] = {"{t}x", "{t}y"};
    const char *args[] = {"z"};
    const size_t arglens[] = {1};
    CHECK_OK(vk_script_run(&r, c, NULL, both, 2, tagged, keylens, 1, args, arglens));
    CHECK(reply_is(r, "OK"));
    vk_reply_free(r);
    /* No keys: any master runs it. */
    vk_script *one = new_script("return 7");
    CHECK_OK(vk_script_run(&r, c, NULL, one, 0, NULL, NULL, 0, NULL, NULL));
    CHECK_EQ_INT(vk_reply_get_integer(r), 7);
    vk_reply_free(r);

    /* A flush on every master between runs: each run loads it again. */
    for (int i = 0; i < MASTERS; i++) {
        const char *flush[] = {"SCRIPT", "FLUSH"};
        vkt_blocking_do(nodes[i], 2, flush);
    }
    char key[32];
    key_on_master(2, key, sizeof key);
    CHECK_OK(run1(&r, c, s, key, "after-flush"));
    CHECK(reply_is(r, "after-flush"));
    vk_reply_free(r);
    CHECK_EQ_INT(script_exists(nodes[2], s), 1);
    CHECK_EQ_INT(script_exists(nodes[0], s), 0);

    vk_script_free(one);
    vk_script_free(both);
    vk_script_free(s);
    for (int i = 0; i < MASTERS; i++)
        vk_client_free(nodes[i]);
    vk_client_free(c);
}

/* ---- event loop ----------------------------------------------------------------------- */

static vk_status async_run1(vk_async *a, vkt_op *op, const vk_script *s, const char *key,
                            const char *arg, uint64_t *id)
{
    const char *keys[] = {key};
    const size_t keylens[] = {strlen(key)};
    const char *args[] = {arg};
    const size_t arglens[] = {strlen(arg)};
    return vk_async_script_run(a, s, key != NULL ? 1 : 0, keys, keylens, 1, args, arglens,
                               vkt_op_fn, op, id);
}

static bool async_call1(vkt_loop *loop, vk_async *a, vkt_op *op, const vk_script *s,
                        const char *key, const char *arg)
{
    vk_status st = async_run1(a, op, s, key, arg, NULL);
    CHECK_OK(st);
    return st == VK_OK && vkt_loop_run_until(loop, vkt_op_done, op, 10000) && op->calls == 1 &&
           op->status == VK_OK;
}

/* A completion that cancels a script run by its id. */
typedef struct canceller {
    vk_async *a;
    uint64_t id;
    int done;
    vk_status cancel_status;
} canceller;

static void cancel_run(void *userdata, vk_status status, vk_reply *reply)
{
    canceller *cn = userdata;
    (void)status;
    vk_reply_free(reply);
    vkt_note_completion();
    cn->cancel_status = vk_async_cancel(cn->a, cn->id);
    cn->done++;
}

static void test_async_standalone(vkt_loop *loop)
{
    vk_client *node = standalone_client(server, NULL);
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    vk_async *a = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    vk_script *s = new_script(SET_GET);
    reset_node(node);

    /* First run: NOSCRIPT, then EVAL; the completion sees the final reply. */
    vkt_op op = {0};
    CHECK(async_call1(loop, a, &op, s, "script:async", "first"));
    CHECK(reply_is(op.reply, "first"));
    vkt_op_clear(&op);
    CHECK_EQ_INT(script_exists(node, s), 1);
    CHECK_EQ_INT(cmdstat_calls(node, "eval"), 1);
    long long evalsha = cmdstat_calls(node, "evalsha");
    CHECK(async_call1(loop, a, &op, s, "script:async", "second"));
    CHECK(reply_is(op.reply, "second"));
    vkt_op_clear(&op);
    CHECK_EQ_INT(cmdstat_calls(node, "eval"), 1);
    CHECK_EQ_INT(cmdstat_calls(node, "evalsha"), evalsha + 1);

    /* A flush between runs, and the script freed while its run is out. */
    const char *flush[] = {"SCRIPT", "FLUSH"};
    vkt_blocking_do(node, 2, flush);
    vk_script *gone = new_script(SET_GET);
    CHECK_OK(async_run1(a, &op, gone, "script:async", "third", NULL));
    vk_script_free(gone);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
    CHECK(op.status == VK_OK && reply_is(op.reply, "third"));
    vkt_op_clear(&op);
    CHECK_EQ_INT(cmdstat_calls(node, "eval"), 2);

    /* An error reply of the script. */
    vk_script *fails = new_script(FAILS);
    CHECK_OK(vk_async_script_run(a, fails, 0, NULL, NULL, 0, NULL, NULL, vkt_op_fn, &op, NULL));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
    CHECK(op.status == VK_OK && vkt_reply_error_starts(op.reply, "MYERR the script says no"));
    vkt_op_clear(&op);

    /* Binary-safe keys and args. */
    vk_script *echo = new_script(ECHO);
    const char key[] = "k\0\xff";
    const char arg[] = "\0a\r\n";
    const char *keys[] = {key};
    const size_t keylens[] = {sizeof key - 1};
    const char *args[] = {arg};
    const size_t arglens[] = {sizeof arg - 1};
    CHECK_OK(vk_async_script_run(a, echo, 1, keys, keylens, 1, args, arglens, vkt_op_fn, &op,
                                 NULL));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
    CHECK(op.status == VK_OK && echo_is(op.reply, key, sizeof key - 1, arg, sizeof arg - 1));
    vkt_op_clear(&op);

    /* Cancelled by the run's id, while EVALSHA (or EVAL) is out. */
    vkt_blocking_do(node, 2, flush);
    uint64_t id = 0;
    CHECK_OK(async_run1(a, &op, s, "script:async", "cancelled", &id));
    CHECK(id != 0);
    CHECK_OK(vk_async_cancel(a, id));
    CHECK_EQ_INT(op.calls, 1);
    CHECK(op.status == VK_ERR_CANCELLED);
    vkt_op_clear(&op);
    CHECK(vk_async_cancel(a, id) == VK_ERR_INVALID_ARGUMENT);
    CHECK(vkt_async_drain(loop, a));

    /* Cancelled once EVALSHA was answered NOSCRIPT, with EVAL queued: a
     * command queued right behind the run completes after EVALSHA did
     * (replies come in order), and cancels the run from its completion. */
    vkt_blocking_do(node, 2, flush);
    long long evalsha_before = cmdstat_calls(node, "evalsha");
    canceller cn = {.a = a};
    CHECK_OK(async_run1(a, &op, s, "script:async", "late", &cn.id));
    const char *ping[] = {"PING"};
    const size_t ping_len[] = {4};
    CHECK_OK(vk_async_command(a, 1, ping, ping_len, cancel_run, &cn, NULL));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
    CHECK_EQ_INT(cn.done, 1);
    CHECK(cn.cancel_status == VK_OK);
    CHECK(op.status == VK_ERR_CANCELLED);
    vkt_op_clear(&op);
    CHECK(vkt_async_drain(loop, a));
    CHECK_EQ_INT(cmdstat_calls(node, "evalsha"), evalsha_before + 1);
    CHECK(async_call1(loop, a, &op, s, "script:async", "after"));
    CHECK(reply_is(op.reply, "after"));
    vkt_op_clear(&op);

    /* Refusals: returned at once, no completion. */
    CHECK_FAILS(vk_async_script_run(a, NULL, 0, NULL, NULL, 0, NULL, NULL, vkt_op_fn, &op,
                                    NULL),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: script is NULL");
    CHECK_FAILS(vk_async_script_run(a, s, 0, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: a completion function is required");
    CHECK_FAILS(vk_async_script_run(NULL, s, 0, NULL, NULL, 0, NULL, NULL, vkt_op_fn, &op,
                                    NULL),
                VK_ERR_NIL_CLIENT, "redis client is nil");
    CHECK_EQ_INT(op.calls, 0);

    /* Freed with a run out: it completes, cancelled. */
    CHECK_OK(async_run1(a, &op, s, "script:async", "closing", NULL));
    vk_async_free(a);
    CHECK_EQ_INT(op.calls, 1);
    CHECK(op.status == VK_ERR_CANCELLED);
    vkt_op_clear(&op);

    vk_script_free(echo);
    vk_script_free(fails);
    vk_script_free(s);
    vk_client_free(node);
}


static void test_async_cluster(vkt_loop *loop)
{
    vk_config *cfg = cluster_config();
    vk_async *a = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    vk_client *nodes[MASTERS];
    for (int i = 0; i < MASTERS; i++) {
        nodes[i] = standalone_client(vkt_cluster_node(cluster, i), PASSWORD);
        reset_node(nodes[i]);
    }
    vk_script *s = new_script(SET_GET);
    /* All masters at once: each loads it, on the node its key routes to. */
    vkt_op ops[MASTERS];
    memset(ops, 0, sizeof ops);
    char keys[MASTERS][32];
    for (int i = 0; i < MASTERS; i++) {
        key_on_master(i, keys[i], sizeof keys[i]);
        CHECK_OK(async_run1(a, &ops[i], s, keys[i], keys[i], NULL));
    }
    CHECK(vkt_async_drain(loop, a));
    for (int i = 0; i < MASTERS; i++) {
        CHECK(ops[i].status == VK_OK && reply_is(ops[i].reply, keys[i]));
        vkt_op_clear(&ops[i]);
        char *held = vkt_node_get(vkt_cluster_node(cluster, i), keys[i]);
        CHECK(held != NULL && strcmp(held, keys[i]) == 0);
        free(held);
        CHECK_EQ_INT(script_exists(nodes[i], s), 1);
        CHECK_EQ_INT(cmdstat_calls(nodes[i], "eval"), 1);
    }
    /* Again: EVALSHA only. */
    for (int i = 0; i < MASTERS; i++)
        CHECK(async_call1(loop, a, &ops[i], s, keys[i], "again"));
    for (int i = 0; i < MASTERS; i++) {
        CHECK(reply_is(ops[i].reply, "again"));
        vkt_op_clear(&ops[i]);
        CHECK_EQ_INT(cmdstat_calls(nodes[i], "eval"), 1);
    }
    /* CROSSSLOT: at once, nothing queued. */
    const char *two[] = {"{a}x", "{b}y"};
    const size_t lens[] = {4, 4};
    vkt_op op = {0};
    CHECK_FAILS(vk_async_script_run(a, s, 2, two, lens, 0, NULL, NULL, vkt_op_fn, &op, NULL),
                VK_ERR_INVALID_ARGUMENT, CROSSSLOT_TEXT);
    CHECK_EQ_INT(op.calls, 0);
    CHECK_EQ_INT(vk_async_pending(a), 0);
    /* Cancelled by id (a router operation underneath). */
    uint64_t id = 0;
    CHECK_OK(async_run1(a, &op, s, keys[1], "x", &id));
    CHECK_OK(vk_async_cancel(a, id));
    CHECK(op.calls == 1 && op.status == VK_ERR_CANCELLED);
    vkt_op_clear(&op);
    CHECK(vkt_async_drain(loop, a));

    vk_async_free(a);
    vk_script_free(s);
    for (int i = 0; i < MASTERS; i++)
        vk_client_free(nodes[i]);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    RUN(test_script_object);
    server = vkt_server_start(&(vkt_server_opts){0});
    if (server == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    RUN(test_bad_arguments);
    RUN(test_first_run_loads_then_evalsha_only);
    RUN(test_error_reply_is_a_reply);
    RUN(test_binary_safe);
    RUN(test_flush_between_runs_recovers);
    RUN_ON_LOOPS(test_async_standalone);
    cluster = vkt_cluster_start(MASTERS, 0, PASSWORD, false);
    if (cluster == NULL) {
        fprintf(stderr, "cannot start a cluster of %s\n", vkt_server_binary());
        vkt_server_stop(server);
        return 1;
    }
    RUN(test_cluster_routes_by_key);
    RUN_ON_LOOPS(test_async_cluster);
    vkt_cluster_stop(cluster);
    vkt_server_stop(server);
    return vkt_finish();
}
