/*
 * bench_get: request/response GETs of one key on one blocking client, with
 * no logger, metrics or tracer configured: the path whose cost the sinks
 * must not raise. It calls only functions of the 1.0 ABI, so the same
 * program runs against the library of any 1.x release (bench/sinks_cost.sh
 * swaps the library under it with LD_LIBRARY_PATH).
 *
 *   bench_get HOST PORT OPS     prints "<ops/s> <library version>"
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <vkclient.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what)
{
    fprintf(stderr, "bench_get: %s: %s\n", what, vk_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: bench_get HOST PORT OPS\n");
        return 2;
    }
    char address[300];
    snprintf(address, sizeof address, "%s:%s", argv[1], argv[2]);
    long ops = atol(argv[3]);
    vk_config *cfg = NULL;
    vk_client *client = NULL;
    if (vk_config_new(&cfg) != VK_OK || vk_config_set_standalone(cfg, address) != VK_OK)
        return fail("config");
    if (vk_client_new(&client, cfg) != VK_OK)
        return fail("connect");
    vk_config_free(cfg);
    const char *set[] = {"SET", "bench:get", "value"};
    const size_t set_len[] = {3, 9, 5};
    const char *get[] = {"GET", "bench:get"};
    const size_t get_len[] = {3, 9};
    vk_reply *reply = NULL;
    if (vk_client_command(&reply, client, NULL, 3, set, set_len) != VK_OK)
        return fail("SET");
    vk_reply_free(reply);
    /* A warm-up, then the measured GETs. */
    for (long i = 0; i < ops / 10 + 1; i++) {
        if (vk_client_command(&reply, client, NULL, 2, get, get_len) != VK_OK)
            return fail("GET");
        vk_reply_free(reply);
    }
    double start = now_s();
    for (long i = 0; i < ops; i++) {
        if (vk_client_command(&reply, client, NULL, 2, get, get_len) != VK_OK)
            return fail("GET");
        vk_reply_free(reply);
    }
    double elapsed = now_s() - start;
    printf("%.0f %s\n", (double)ops / elapsed, vk_version());
    vk_client_free(client);
    return 0;
}
