/*
 * The pool (VKTEST_NEEDS_SERVER): a caller waits at most pool_timeout for a
 * connection, connections are reused, and many threads share a small pool.
 */
#include "vktest.h"
#include "servers.h"
#include "vkclient.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static vkt_server *server;

static vk_status run(vk_reply **out, vk_client *c, int argc, const char *const *argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return vk_client_command(out, c, NULL, argc, argv, lens);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *hold_connection(void *arg)
{
    const char *blpop[] = {"BLPOP", "pool-test-list", "2"};
    vk_reply *r = NULL;
    run(&r, arg, 3, blpop);
    vk_reply_free(r);
    return NULL;
}

static void test_pool_exhaustion(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_pool_size(cfg, 1);
    vk_config_set_pool_timeout_ms(cfg, 300);
    vk_config_set_max_retries(cfg, -1);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));

    pthread_t holder;
    pthread_create(&holder, NULL, hold_connection, c);
    usleep(200 * 1000);   /* the holder is blocked in BLPOP by now */
    const char *ping[] = {"PING"};
    vk_reply *r = NULL;
    double started = now_s();
    CHECK_FAILS(run(&r, c, 1, ping), VK_ERR_POOL_TIMEOUT, "connection pool timeout");
    double waited = now_s() - started;
    CHECK(waited >= 0.25 && waited < 1.5);
    CHECK(r == NULL);
    pthread_join(holder, NULL);

    /* Once the holder is done, the single connection serves again. */
    CHECK_OK(run(&r, c, 1, ping));
    vk_reply_free(r);
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_connection_reused(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    const char *id[] = {"CLIENT", "ID"};
    vk_reply *a = NULL, *b = NULL;
    CHECK_OK(run(&a, c, 2, id));
    CHECK_OK(run(&b, c, 2, id));
    CHECK(vk_reply_get_integer(a) == vk_reply_get_integer(b));
    vk_reply_free(a);
    vk_reply_free(b);
    vk_client_free(c);
    vk_config_free(cfg);
}

/* An idle connection the server closed is noticed before reuse, so even a
 * write with retries disabled does not see the dead connection. */
static void test_dead_idle_connection_not_handed_out(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_pool_size(cfg, 1);
    vk_config_set_max_retries(cfg, -1);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    const char *id[] = {"CLIENT", "ID"};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, c, 2, id));
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%lld", vk_reply_get_integer(r));
    vk_reply_free(r);
    const char *kill[] = {"CLIENT", "KILL", "ID", id_text};
    free(vkt_server_cmd(server, kill, 4));
    usleep(1200 * 1000);   /* idle long enough to be checked */
    const char *incr[] = {"INCR", "pool-idle-counter"};
    CHECK_OK(run(&r, c, 2, incr));
    CHECK_EQ_INT(vk_reply_get_integer(r), 1);
    vk_reply_free(r);
    vk_client_free(c);
    vk_config_free(cfg);
}

typedef struct shared {
    vk_client *client;
    atomic_int failures;
} shared;

static void *hammer(void *arg)
{
    shared *s = arg;
    const char *incr[] = {"INCR", "pool-counter"};
    for (int i = 0; i < 500; i++) {
        vk_reply *r = NULL;
        if (run(&r, s->client, 2, incr) != VK_OK)
            atomic_fetch_add(&s->failures, 1);
        vk_reply_free(r);
    }
    return NULL;
}

static void test_threads_share_small_pool(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_pool_size(cfg, 2);
    vk_config_set_min_idle_conns(cfg, 2);
    shared s = {0};
    CHECK_OK(vk_client_new(&s.client, cfg));
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, &s);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_INT(atomic_load(&s.failures), 0);
    const char *get[] = {"GET", "pool-counter"};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, s.client, 2, get));
    size_t len = 0;
    const char *v = vk_reply_get_string(r, &len);
    CHECK(len == 4 && memcmp(v, "2000", 4) == 0);
    vk_reply_free(r);
    vk_client_free(s.client);
    vk_config_free(cfg);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    if (server == NULL)
        return 1;
    RUN(test_pool_exhaustion);
    RUN(test_connection_reused);
    RUN(test_dead_idle_connection_not_handed_out);
    RUN(test_threads_share_small_pool);
    vkt_server_stop(server);
    return vkt_finish();
}
