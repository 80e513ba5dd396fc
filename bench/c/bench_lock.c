/*
 * Lock pairs per second: vkclient's try_lock + unlock against raw hiredis
 * doing the same protocol by hand (SET NX PX, then a compare-and-delete
 * EVALSHA) on one connection, and the ratio of the two.
 *
 *   bench_lock [host] [port] [pairs] [runs]
 *
 * Defaults: 127.0.0.1 6379, 20000 pairs, 5 runs; the median run is shown.
 * Pin this program and the server to one core (taskset -c 0) to see the
 * clients' own costs rather than cross-core wake-ups.
 */
#include "vkclient.h"

#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('DEL', KEYS[1])\n"
    "end\n"
    "return 0\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double vkclient_pairs_per_s(vk_lock_manager *m, long pairs)
{
    double start = now_s();
    for (long i = 0; i < pairs; i++) {
        vk_lock *lock = NULL;
        if (vk_lock_manager_try_lock(&lock, m, NULL, "bench:lock", 10) != VK_OK || !lock) {
            fprintf(stderr, "vkclient try_lock: %s\n", vk_last_error());
            exit(1);
        }
        if (vk_lock_unlock(lock, NULL) != VK_OK) {
            fprintf(stderr, "vkclient unlock: %s\n", vk_last_error());
            exit(1);
        }
        vk_lock_free(lock);
    }
    return (double)pairs / (now_s() - start);
}

static double hiredis_pairs_per_s(redisContext *c, const char *sha, long pairs)
{
    double start = now_s();
    char value[33];
    for (long i = 0; i < pairs; i++) {
        snprintf(value, sizeof value, "%032lx", i);
        redisReply *r = redisCommand(c, "SET bench:raw %s NX PX 10000", value);
        if (!r || r->type != REDIS_REPLY_STATUS) {
            fprintf(stderr, "hiredis SET failed\n");
            exit(1);
        }
        freeReplyObject(r);
        r = redisCommand(c, "EVALSHA %s 1 bench:raw %s", sha, value);
        if (!r || r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
            fprintf(stderr, "hiredis EVALSHA failed\n");
            exit(1);
        }
        freeReplyObject(r);
    }
    return (double)pairs / (now_s() - start);
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "127.0.0.1";
    int port = argc > 2 ? atoi(argv[2]) : 6379;
    long pairs = argc > 3 ? atol(argv[3]) : 20000;
    int runs = argc > 4 ? atoi(argv[4]) : 5;
    if (port <= 0 || pairs <= 0 || runs <= 0 || runs > 99) {
        fprintf(stderr, "usage: bench_lock [host] [port] [pairs] [runs]\n");
        return 2;
    }
    char address[300];
    snprintf(address, sizeof address, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);

    vk_config *cfg = NULL;
    vk_client *client = NULL;
    vk_lock_manager *m = NULL;
    if (vk_config_new(&cfg) != VK_OK || vk_config_set_standalone(cfg, address) != VK_OK ||
        vk_config_set_pool_size(cfg, 1) != VK_OK || vk_client_new(&client, cfg) != VK_OK ||
        vk_lock_manager_new(&m, client) != VK_OK) {
        fprintf(stderr, "vkclient: %s\n", vk_last_error());
        return 1;
    }
    vk_config_free(cfg);

    redisContext *raw = redisConnect(host, port);
    if (!raw || raw->err) {
        fprintf(stderr, "hiredis: cannot connect\n");
        return 1;
    }
    redisReply *loaded = redisCommand(raw, "SCRIPT LOAD %s", release_script);
    if (!loaded || loaded->type != REDIS_REPLY_STRING) {
        fprintf(stderr, "hiredis: SCRIPT LOAD failed\n");
        return 1;
    }

    /* Warm both up: connections, script caches, allocator. */
    vkclient_pairs_per_s(m, 1000);
    hiredis_pairs_per_s(raw, loaded->str, 1000);

    double vk_rates[99], raw_rates[99], ratios[99];
    for (int r = 0; r < runs; r++) {
        vk_rates[r] = vkclient_pairs_per_s(m, pairs);
        raw_rates[r] = hiredis_pairs_per_s(raw, loaded->str, pairs);
        ratios[r] = vk_rates[r] / raw_rates[r];
    }
    qsort(vk_rates, (size_t)runs, sizeof(double), compare_doubles);
    qsort(raw_rates, (size_t)runs, sizeof(double), compare_doubles);
    qsort(ratios, (size_t)runs, sizeof(double), compare_doubles);
    printf("lock pairs/s (median of %d runs, %ld pairs each)\n", runs, pairs);
    printf("  vkclient try_lock+unlock : %10.0f\n", vk_rates[runs / 2]);
    printf("  raw hiredis SET+EVALSHA  : %10.0f\n", raw_rates[runs / 2]);
    printf("  ratio vkclient/hiredis   : %10.2f\n", ratios[runs / 2]);

    freeReplyObject(loaded);
    redisFree(raw);
    vk_lock_manager_free(m);
    vk_client_free(client);
    return 0;
}
