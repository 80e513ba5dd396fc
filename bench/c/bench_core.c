/*
 * bench_core: vkclient against raw hiredis 0.14 on the same server and one
 * connection each.
 *
 *   bench_core HOST PORT [ops per case] [runs]
 *
 * Cases: request/response SET and GET, pipelines of 100 SETs, and lock
 * pairs (vkclient acquire+release against hiredis SET NX PX + EVALSHA of a
 * compare-and-delete script). Pipelines send PIPELINE_SCALE times the ops
 * of the other cases, so that each measurement lasts about as long: at a
 * million commands a second, 20,000 of them take 20 ms, and a shift of one
 * scheduler slice between client and server would move the figure by a
 * fifth. Each run measures every case for both
 * clients back to back, so the ratio within a run compares like with like;
 * the report gives the median ops/s and the median ratio over the runs.
 * Pin the client and the server to one core (bench/run.sh does) or the
 * loopback round trip hides every client's own cost.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <vkclient.h>
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PIPELINE_DEPTH 100
#define PIPELINE_SCALE 25
#define MAX_RUNS 50

static const char RELEASE_SCRIPT[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end";

typedef struct bench_ctx {
    vk_client *vk;
    vk_lock_manager *locks;
    redisContext *raw;
    char release_sha[41];
    long ops;
} bench_ctx;

typedef int (*bench_fn)(bench_ctx *b);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_core: %s: %s\n", what, detail);
    exit(1);
}

/* ---- vkclient ------------------------------------------------------------ */

static int bench_vk_one(bench_ctx *b, int argc, const char *const *argv, const size_t *lens)
{
    vk_reply *reply = NULL;
    vk_status st = vk_client_command(&reply, b->vk, NULL, argc, argv, lens);
    int ok = st == VK_OK && vk_reply_get_type(reply) != VK_REPLY_ERROR;
    vk_reply_free(reply);
    return ok ? 0 : -1;
}

static int bench_vk_set(bench_ctx *b)
{
    static const char *const argv[] = {"SET", "bench:key", "value-0123456789"};
    static const size_t lens[] = {3, 9, 16};
    for (long i = 0; i < b->ops; i++)
        if (bench_vk_one(b, 3, argv, lens) != 0)
            return -1;
    return 0;
}

static int bench_vk_get(bench_ctx *b)
{
    static const char *const argv[] = {"GET", "bench:key"};
    static const size_t lens[] = {3, 9};
    for (long i = 0; i < b->ops; i++)
        if (bench_vk_one(b, 2, argv, lens) != 0)
            return -1;
    return 0;
}

static int bench_vk_pipeline(bench_ctx *b)
{
    static const char *const argv[] = {"SET", "bench:key", "value-0123456789"};
    static const size_t lens[] = {3, 9, 16};
    vk_pipeline *p = NULL;
    if (vk_pipeline_new(&p, b->vk) != VK_OK)
        return -1;
    int rc = 0;
    for (long done = 0; done < b->ops && rc == 0; done += PIPELINE_DEPTH) {
        for (int i = 0; i < PIPELINE_DEPTH; i++)
            vk_pipeline_append(p, 3, argv, lens);
        vk_reply *replies = NULL;
        if (vk_pipeline_exec(&replies, p, NULL) != VK_OK ||
            vk_reply_get_length(replies) != PIPELINE_DEPTH)
            rc = -1;
        vk_reply_free(replies);
    }
    vk_pipeline_free(p);
    return rc;
}

static int bench_vk_lock_pairs(bench_ctx *b)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1;
    for (long i = 0; i < b->ops; i++) {
        vk_lock *lock = NULL;
        if (vk_lock_manager_acquire(&lock, b->locks, NULL, "bench:lock", 10, &opts) != VK_OK)
            return -1;
        vk_status st = vk_lock_unlock(lock, NULL);
        vk_lock_free(lock);
        if (st != VK_OK)
            return -1;
    }
    return 0;
}

/* ---- raw hiredis ----------------------------------------------------------- */

static int raw_one(bench_ctx *b, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(b->raw, argc, argv, lens);
    int ok = r && r->type != REDIS_REPLY_ERROR;
    freeReplyObject(r);
    return ok ? 0 : -1;
}

static int raw_set(bench_ctx *b)
{
    const char *argv[] = {"SET", "bench:key", "value-0123456789"};
    const size_t lens[] = {3, 9, 16};
    for (long i = 0; i < b->ops; i++)
        if (raw_one(b, 3, argv, lens) != 0)
            return -1;
    return 0;
}

static int raw_get(bench_ctx *b)
{
    const char *argv[] = {"GET", "bench:key"};
    const size_t lens[] = {3, 9};
    for (long i = 0; i < b->ops; i++)
        if (raw_one(b, 2, argv, lens) != 0)
            return -1;
    return 0;
}

static int raw_pipeline(bench_ctx *b)
{
    const char *argv[] = {"SET", "bench:key", "value-0123456789"};
    const size_t lens[] = {3, 9, 16};
    for (long done = 0; done < b->ops; done += PIPELINE_DEPTH) {
        for (int i = 0; i < PIPELINE_DEPTH; i++)
            if (redisAppendCommandArgv(b->raw, 3, argv, lens) != REDIS_OK)
                return -1;
        for (int i = 0; i < PIPELINE_DEPTH; i++) {
            void *r = NULL;
            if (redisGetReply(b->raw, &r) != REDIS_OK)
                return -1;
            freeReplyObject(r);
        }
    }
    return 0;
}

/* The usual hand-rolled lock: SET NX PX with a random value, then a
 * compare-and-delete script by SHA. */
static int raw_lock_pairs(bench_ctx *b)
{
    for (long i = 0; i < b->ops; i++) {
        char value[32];
        snprintf(value, sizeof value, "%08lx%08lx", (unsigned long)rand(), (unsigned long)i);
        const char *set[] = {"SET", "bench:rawlock", value, "NX", "PX", "10000"};
        const size_t set_len[] = {3, 13, strlen(value), 2, 2, 5};
        redisReply *r = redisCommandArgv(b->raw, 6, set, set_len);
        int ok = r && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (!ok)
            return -1;
        const char *rel[] = {"EVALSHA", b->release_sha, "1", "bench:rawlock", value};
        const size_t rel_len[] = {7, 40, 1, 13, strlen(value)};
        r = redisCommandArgv(b->raw, 5, rel, rel_len);
        ok = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        freeReplyObject(r);
        if (!ok)
            return -1;
    }
    return 0;
}

/* ---- driver ---------------------------------------------------------------- */

typedef struct bench_case {
    const char *name;
    bench_fn vk;
    bench_fn raw;
    long scale;          /* ops of this case: the run's ops times scale */
    double vk_ops[MAX_RUNS];
    double raw_ops[MAX_RUNS];
    double ratio[MAX_RUNS];
} bench_case;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *values, int n)
{
    double sorted[MAX_RUNS];
    memcpy(sorted, values, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

static double measure(bench_ctx *b, bench_fn fn, const char *what, long ops)
{
    b->ops = ops;
    double t0 = now_s();
    if (fn(b) != 0)
        die(what, b->raw->err ? b->raw->errstr : vk_last_error());
    return (double)ops / (now_s() - t0);
}

static void connect_both(bench_ctx *b, const char *host, int port)
{
    char address[300];
    snprintf(address, sizeof address, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    vk_config *cfg = NULL;
    if (vk_config_new(&cfg) != VK_OK || vk_config_set_standalone(cfg, address) != VK_OK ||
        vk_config_set_pool_size(cfg, 1) != VK_OK || vk_client_new(&b->vk, cfg) != VK_OK)
        die("vkclient connect", vk_last_error());
    vk_config_free(cfg);
    if (vk_lock_manager_new(&b->locks, b->vk) != VK_OK)
        die("lock manager", vk_last_error());

    b->raw = redisConnect(host, port);
    if (!b->raw || b->raw->err)
        die("hiredis connect", b->raw ? b->raw->errstr : "out of memory");
    redisReply *r = redisCommand(b->raw, "SCRIPT LOAD %s", RELEASE_SCRIPT);
    if (!r || r->type != REDIS_REPLY_STRING || r->len != 40)
        die("SCRIPT LOAD", r && r->str ? r->str : "no reply");
    memcpy(b->release_sha, r->str, 41);
    freeReplyObject(r);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_core HOST PORT [ops per case] [runs]\n");
        return 2;
    }
    bench_ctx b = {0};
    b.ops = argc > 3 ? atol(argv[3]) : 20000;
    int runs = argc > 4 ? atoi(argv[4]) : 5;
    if (b.ops < PIPELINE_DEPTH || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "bench_core: ops must be >= %d and runs in 1..%d\n", PIPELINE_DEPTH,
                MAX_RUNS);
        return 2;
    }
    connect_both(&b, argv[1], atoi(argv[2]));

    bench_case cases[] = {
        {"SET", bench_vk_set, raw_set, 1, {0}, {0}, {0}},
        {"GET", bench_vk_get, raw_get, 1, {0}, {0}, {0}},
        {"SET pipeline x100", bench_vk_pipeline, raw_pipeline, PIPELINE_SCALE, {0}, {0}, {0}},
        {"lock pair", bench_vk_lock_pairs, raw_lock_pairs, 1, {0}, {0}, {0}},
    };
    const int ncases = (int)(sizeof cases / sizeof cases[0]);

    /* Warm-up: connections, script caches, CPU frequency. */
    long ops = b.ops;
    for (int c = 0; c < ncases; c++) {
        measure(&b, cases[c].vk, cases[c].name, PIPELINE_DEPTH);
        measure(&b, cases[c].raw, cases[c].name, PIPELINE_DEPTH);
    }

    for (int run = 0; run < runs; run++) {
        for (int c = 0; c < ncases; c++) {
            long n = ops * cases[c].scale;
            /* Alternate who goes first so neither always gets a warm cache. */
            if (run % 2 == 0) {
                cases[c].vk_ops[run] = measure(&b, cases[c].vk, cases[c].name, n);
                cases[c].raw_ops[run] = measure(&b, cases[c].raw, cases[c].name, n);
            } else {
                cases[c].raw_ops[run] = measure(&b, cases[c].raw, cases[c].name, n);
                cases[c].vk_ops[run] = measure(&b, cases[c].vk, cases[c].name, n);
            }
            cases[c].ratio[run] = cases[c].vk_ops[run] / cases[c].raw_ops[run];
        }
    }

    printf("vkclient %s vs raw hiredis %s: %ld ops per case (pipelines: %ld commands), "
           "median of %d runs\n",
           vk_version(), vk_hiredis_version(), ops, ops * PIPELINE_SCALE, runs);
    printf("%-20s %14s %14s %8s\n", "case", "vkclient op/s", "hiredis op/s", "ratio");
    for (int c = 0; c < ncases; c++)
        printf("%-20s %14.0f %14.0f %8.2f\n", cases[c].name, median(cases[c].vk_ops, runs),
               median(cases[c].raw_ops, runs), median(cases[c].ratio, runs));
    printf("(lock pair: vkclient acquire+release vs hiredis SET NX PX + EVALSHA)\n");

    vk_lock_manager_free(b.locks);
    vk_client_free(b.vk);
    redisFree(b.raw);
    return 0;
}
