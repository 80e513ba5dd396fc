/*
 * bench_async: GET throughput of the event-loop client (vk_async on libuv)
 * with many requests in flight on its one connection, against the blocking
 * client (vk_client_command) called from many threads that share one
 * client.
 *
 *   bench_async HOST PORT evloop   INFLIGHT TOTAL [runs]
 *   bench_async HOST PORT blocking THREADS  TOTAL [runs]
 *   bench_async HOST PORT evlock   INFLIGHT TOTAL [runs]
 *
 * evloop: one vk_async keeps INFLIGHT GETs outstanding; each completion
 * queues the next until TOTAL GETs were queued, and the run ends when the
 * last one completes. blocking: THREADS threads share one vk_client (pool
 * size THREADS) and take GETs from a shared count until TOTAL were sent.
 * Every GET reads the same key, set once before the runs, and must come
 * back as that value. evlock: lock pairs (vk_async_lock_try, then
 * vk_async_lock_unlock) on the event-loop lock, INFLIGHT keys at once, each
 * key's pairs one after the other; every try must take its lock. A warm-up run (a tenth of TOTAL, at least a few per
 * request slot) opens the connections first.
 *
 * Output: one line per run, then the median:
 *   run 1: 812345 ops/s
 *   evloop 64: 812345 ops/s (median of 5 runs of 500000 GETs)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthread barriers */

#include <vkclient.h>
#include <vkclient_async.h>
#include <vkclient/libuv.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define MAX_RUNS 50
#define MAX_THREADS 1024
#define MAX_INFLIGHT 100000

static const char KEY[] = "bench:async:key";
/* Three bytes, as valkey-benchmark's default data size (-d 3). */
static const char VALUE[] = "xxx";

static const char *const GET_ARGV[] = {"GET", KEY};
static const size_t GET_LENS[] = {3, sizeof KEY - 1};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_async: %s: %s\n", what, detail);
    exit(1);
}

/* 1 when reply is the value that was set. */
static int reply_ok(const vk_reply *reply)
{
    size_t len = 0;
    const char *s;
    if (!reply || vk_reply_get_type(reply) != VK_REPLY_STRING)
        return 0;
    s = vk_reply_get_string(reply, &len);
    return len == sizeof VALUE - 1 && memcmp(s, VALUE, len) == 0;
}

static vk_config *make_config(const char *host, int port, int pool_size)
{
    char address[300];
    vk_config *cfg = NULL;
    snprintf(address, sizeof address, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    if (vk_config_new(&cfg) != VK_OK || vk_config_set_standalone(cfg, address) != VK_OK ||
        vk_config_set_pool_size(cfg, pool_size) != VK_OK)
        die("config", vk_last_error());
    return cfg;
}

/* SET the key once with a blocking client of its own. */
static void set_key(const char *host, int port)
{
    static const char *const argv[] = {"SET", KEY, VALUE};
    static const size_t lens[] = {3, sizeof KEY - 1, sizeof VALUE - 1};
    vk_config *cfg = make_config(host, port, 1);
    vk_client *vk = NULL;
    vk_reply *reply = NULL;
    if (vk_client_new(&vk, cfg) != VK_OK)
        die("connect", vk_last_error());
    vk_config_free(cfg);
    if (vk_client_command(&reply, vk, NULL, 3, argv, lens) != VK_OK)
        die("SET", vk_last_error());
    if (vk_reply_get_type(reply) == VK_REPLY_ERROR)
        die("SET", vk_reply_get_string(reply, NULL));
    vk_reply_free(reply);
    vk_client_free(vk);
}

/* ---- event-loop client ----------------------------------------------------- */

typedef struct evloop_run {
    uv_loop_t *loop;
    vk_async *client;
    long total;      /* GETs of this run */
    long queued;     /* queued so far */
    long completed;  /* completed so far */
    int failed;
    char error[256];
} evloop_run;

static void evloop_queue_one(evloop_run *r);

static void evloop_fail(evloop_run *r, const char *detail)
{
    if (!r->failed) {
        r->failed = 1;
        snprintf(r->error, sizeof r->error, "%s", detail);
    }
    uv_stop(r->loop);
}

static void evloop_done(void *userdata, vk_status status, vk_reply *reply)
{
    evloop_run *r = userdata;
    if (status != VK_OK)
        evloop_fail(r, vk_last_error());
    else if (!reply_ok(reply))
        evloop_fail(r, "unexpected reply to GET");
    vk_reply_free(reply);
    r->completed++;
    if (r->failed)
        return;
    if (r->queued < r->total)
        evloop_queue_one(r);
    else if (r->completed == r->total)
        uv_stop(r->loop);
}

static void evloop_queue_one(evloop_run *r)
{
    r->queued++;
    if (vk_async_command(r->client, 2, GET_ARGV, GET_LENS, evloop_done, r, NULL) != VK_OK) {
        r->completed++; /* refused: no completion will come */
        evloop_fail(r, vk_last_error());
    }
}

/* One run: `inflight` GETs queued at once, each completion queues the next. */
static double evloop_measure(uv_loop_t *loop, vk_async *client, long inflight, long total)
{
    evloop_run r;
    memset(&r, 0, sizeof r);
    r.loop = loop;
    r.client = client;
    r.total = total;
    double t0 = now_s();
    for (long i = 0; i < inflight && r.queued < total && !r.failed; i++)
        evloop_queue_one(&r);
    if (!r.failed)
        uv_run(loop, UV_RUN_DEFAULT);
    double elapsed = now_s() - t0;
    if (r.failed)
        die("event-loop GET", r.error);
    if (r.completed != total)
        die("event-loop GET", "the loop stopped before every GET completed");
    return (double)total / elapsed;
}

/* ---- event-loop lock pairs ------------------------------------------------- */

typedef struct evlock_run evlock_run;
typedef struct evlock_slot {
    evlock_run *run;
    char key[48];
    vk_lock *lock;
} evlock_slot;

struct evlock_run {
    uv_loop_t *loop;
    vk_async_lock_manager *locks;
    long total;      /* pairs of this run */
    long started;
    long completed;
    int failed;
    char error[256];
    evlock_slot *slots;
};

static void evlock_start(evlock_slot *slot);

static void evlock_fail(evlock_run *r, const char *detail)
{
    if (!r->failed) {
        r->failed = 1;
        snprintf(r->error, sizeof r->error, "%s", detail);
    }
    uv_stop(r->loop);
}

static void evlock_unlocked(void *userdata, vk_status status)
{
    evlock_slot *slot = userdata;
    evlock_run *r = slot->run;
    vk_lock_free(slot->lock);
    slot->lock = NULL;
    r->completed++;
    if (status != VK_OK)
        evlock_fail(r, vk_last_error());
    if (r->failed)
        return;
    if (r->started < r->total)
        evlock_start(slot);
    else if (r->completed == r->total)
        uv_stop(r->loop);
}

static void evlock_locked(void *userdata, vk_status status, vk_lock *lock)
{
    evlock_slot *slot = userdata;
    evlock_run *r = slot->run;
    if (status != VK_OK || lock == NULL) {
        r->completed++;
        evlock_fail(r, status != VK_OK ? vk_last_error() : "a try found its key taken");
        return;
    }
    slot->lock = lock;
    if (vk_async_lock_unlock(lock, evlock_unlocked, slot) != VK_OK) {
        r->completed++;
        evlock_fail(r, vk_last_error());
    }
}

static void evlock_start(evlock_slot *slot)
{
    evlock_run *r = slot->run;
    r->started++;
    if (vk_async_lock_try(r->locks, slot->key, strlen(slot->key), evlock_locked, slot, NULL) !=
        VK_OK) {
        r->completed++;
        evlock_fail(r, vk_last_error());
    }
}

/* One run: `inflight` keys, each locked and unlocked in turn. */
static double evlock_measure(uv_loop_t *loop, vk_async_lock_manager *locks, long inflight,
                             long total)
{
    evlock_run r;
    memset(&r, 0, sizeof r);
    r.loop = loop;
    r.locks = locks;
    r.total = total;
    r.slots = calloc((size_t)inflight, sizeof *r.slots);
    if (r.slots == NULL)
        die("evlock", "out of memory");
    double t0 = now_s();
    for (long i = 0; i < inflight && r.started < total && !r.failed; i++) {
        r.slots[i].run = &r;
        snprintf(r.slots[i].key, sizeof r.slots[i].key, "bench:async:lock:%ld", i);
        evlock_start(&r.slots[i]);
    }
    if (!r.failed)
        uv_run(loop, UV_RUN_DEFAULT);
    double elapsed = now_s() - t0;
    free(r.slots);
    if (r.failed)
        die("event-loop lock pair", r.error);
    if (r.completed != total)
        die("event-loop lock pair", "the loop stopped before every pair completed");
    return (double)total / elapsed;
}

/* ---- blocking client from threads ------------------------------------------ */

typedef struct blocking_run {
    vk_client *vk;
    long total;
    atomic_long next;    /* GETs claimed by the threads */
    atomic_int failed;
    pthread_barrier_t start;
    char error[256];
    pthread_mutex_t error_lock;
} blocking_run;

static void *blocking_thread(void *arg)
{
    blocking_run *r = arg;
    pthread_barrier_wait(&r->start);
    while (!atomic_load_explicit(&r->failed, memory_order_relaxed) &&
           atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed) < r->total) {
        vk_reply *reply = NULL;
        vk_status st = vk_client_command(&reply, r->vk, NULL, 2, GET_ARGV, GET_LENS);
        int ok = st == VK_OK && reply_ok(reply);
        vk_reply_free(reply);
        if (!ok) {
            pthread_mutex_lock(&r->error_lock);
            if (!atomic_load(&r->failed))
                snprintf(r->error, sizeof r->error, "%s",
                         st != VK_OK ? vk_last_error() : "unexpected reply to GET");
            atomic_store(&r->failed, 1);
            pthread_mutex_unlock(&r->error_lock);
        }
    }
    return NULL;
}

/* One run: `threads` threads share the client until `total` GETs were sent;
 * the clock starts when every thread is ready. */
static double blocking_measure(vk_client *vk, long threads, long total)
{
    static pthread_t tids[MAX_THREADS];
    blocking_run r;
    memset(&r, 0, sizeof r);
    r.vk = vk;
    r.total = total;
    atomic_init(&r.next, 0);
    atomic_init(&r.failed, 0);
    pthread_mutex_init(&r.error_lock, NULL);
    if (pthread_barrier_init(&r.start, NULL, (unsigned)threads + 1) != 0)
        die("threads", "pthread_barrier_init failed");
    for (long i = 0; i < threads; i++)
        if (pthread_create(&tids[i], NULL, blocking_thread, &r) != 0)
            die("threads", "pthread_create failed");
    pthread_barrier_wait(&r.start);
    double t0 = now_s();
    for (long i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    double elapsed = now_s() - t0;
    pthread_barrier_destroy(&r.start);
    pthread_mutex_destroy(&r.error_lock);
    if (atomic_load(&r.failed))
        die("blocking GET", r.error);
    return (double)total / elapsed;
}

/* ---- driver ---------------------------------------------------------------- */

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

static void usage(void)
{
    fprintf(stderr, "usage: bench_async HOST PORT evloop INFLIGHT TOTAL [runs]\n"
                    "       bench_async HOST PORT blocking THREADS TOTAL [runs]\n"
                    "       bench_async HOST PORT evlock INFLIGHT TOTAL [runs]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 6)
        usage();
    const char *host = argv[1];
    int port = atoi(argv[2]);
    const char *mode = argv[3];
    long n = atol(argv[4]);
    long total = atol(argv[5]);
    int runs = argc > 6 ? atoi(argv[6]) : 5;
    int evlock = strcmp(mode, "evlock") == 0;
    int evloop = evlock || strcmp(mode, "evloop") == 0;
    if (!evloop && strcmp(mode, "blocking") != 0)
        usage();
    long max_n = evloop ? MAX_INFLIGHT : MAX_THREADS;
    if (port <= 0 || n < 1 || n > max_n || total < n || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "bench_async: need 1 <= %s <= %ld, total >= it, runs in 1..%d\n",
                evloop ? "INFLIGHT" : "THREADS", max_n, MAX_RUNS);
        return 2;
    }
    long warmup = total / 10;
    if (warmup < 20 * n)
        warmup = 20 * n;

    set_key(host, port);

    double ops[MAX_RUNS];
    if (evloop) {
        uv_loop_t loop;
        vk_loop_adapter adapter;
        vk_async *client = NULL;
        if (uv_loop_init(&loop) != 0)
            die("libuv", "uv_loop_init failed");
        vk_libuv_adapter(&adapter, &loop);
        vk_config *cfg = make_config(host, port, 1);
        if (vk_async_new(&client, cfg, &adapter) != VK_OK)
            die("vk_async_new", vk_last_error());
        vk_config_free(cfg);
        vk_async_lock_manager *locks = NULL;
        if (evlock && vk_async_lock_manager_new(&locks, &client, 1) != VK_OK)
            die("vk_async_lock_manager_new", vk_last_error());
        if (evlock)
            evlock_measure(&loop, locks, n, warmup);
        else
            evloop_measure(&loop, client, n, warmup);
        for (int i = 0; i < runs; i++) {
            ops[i] = evlock ? evlock_measure(&loop, locks, n, total)
                            : evloop_measure(&loop, client, n, total);
            printf("run %d: %.0f ops/s\n", i + 1, ops[i]);
        }
        vk_async_lock_manager_free(locks);
        vk_async_free(client);
        /* Let libuv close the handles the adapter released. */
        uv_run(&loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&loop) != 0)
            die("libuv", "the loop still has handles after vk_async_free");
    } else {
        vk_client *vk = NULL;
        vk_config *cfg = make_config(host, port, (int)n);
        if (vk_client_new(&vk, cfg) != VK_OK)
            die("vk_client_new", vk_last_error());
        vk_config_free(cfg);
        blocking_measure(vk, n, warmup);
        for (int i = 0; i < runs; i++) {
            ops[i] = blocking_measure(vk, n, total);
            printf("run %d: %.0f ops/s\n", i + 1, ops[i]);
        }
        vk_client_free(vk);
    }
    printf("%s %ld: %.0f ops/s (median of %d runs of %ld %s)\n", mode, n, median(ops, runs),
           runs, total, evlock ? "lock pairs" : "GETs");
    return 0;
}
