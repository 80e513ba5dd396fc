/*
 * Server down and back (VKTEST_NEEDS_SERVER): commands fail while it is
 * down, reconnects are rate limited with the documented message, and the
 * same client recovers once the server is back.
 */
#include "vktest.h"
#include "servers.h"
#include "vkclient.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

static int reconnect_failures;
static int reconnect_successes;
static int reconnect_connection_failures;

static void metric_sink(void *userdata, const char *name, vk_metric_kind kind, double value,
                        const vk_field *labels, size_t nlabels)
{
    if (strcmp(name, "redis_connection_failures_total") == 0 && nlabels == 1 &&
        strcmp(labels[0].key, "operation") == 0 && strcmp(labels[0].value, "reconnect") == 0)
        reconnect_connection_failures++;
    if (strcmp(name, "redis_reconnections_total") != 0 || nlabels != 1 ||
        strcmp(labels[0].key, "result") != 0)
        return;
    if (strcmp(labels[0].value, "failure") == 0)
        reconnect_failures++;
    else if (strcmp(labels[0].value, "success") == 0)
        reconnect_successes++;
}

static vk_status ping(vk_client *c)
{
    const char *argv[] = {"PING"};
    size_t len[] = {4};
    vk_reply *r = NULL;
    vk_status st = vk_client_command(&r, c, NULL, 1, argv, len);
    vk_reply_free(r);
    return st;
}

static void test_server_down_and_back(void)
{
    vkt_server *server = vkt_server_start(&(vkt_server_opts){0});
    CHECK(server != NULL);
    if (server == NULL)
        return;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_dial_timeout_ms(cfg, 300);
    vk_config_set_metrics(cfg, metric_sink, NULL, NULL);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK_OK(ping(c));

    vkt_server_kill(server);
    int failed = 0, rate_limited = 0;
    for (int i = 0; i < 20; i++) {
        vk_status st = ping(c);
        if (st != VK_OK)
            failed++;
        if (st == VK_ERR_RECONNECT_RATE_LIMITED) {
            rate_limited++;
            const char *prefix = "redis reconnect: rate-limited (next attempt in ";
            CHECK(strncmp(vk_last_error(), prefix, strlen(prefix)) == 0);
            CHECK(vk_last_error()[strlen(vk_last_error()) - 1] == ')');
        }
        usleep(20 * 1000);
    }
    CHECK_EQ_INT(failed, 20);
    CHECK(rate_limited > 0);
    CHECK(reconnect_failures > 0);
    CHECK_EQ_INT(reconnect_connection_failures, reconnect_failures);
    CHECK(!vk_client_is_connected(c));
    char *err = NULL;
    CHECK_OK(vk_client_last_refresh_error(&err, c));
    CHECK(err != NULL);
    vk_free(err);

    CHECK(vkt_server_restart(server));
    /* The back-off after k failures is below min(500 ms * 2^k, 30 s). */
    vk_status st = VK_ERR_IO;
    for (int i = 0; i < 800 && st != VK_OK; i++) {
        st = ping(c);
        if (st != VK_OK)
            usleep(50 * 1000);
    }
    CHECK_OK(st);
    CHECK(vk_client_is_connected(c));
    CHECK(reconnect_successes == 1);
    /* The failure is over: the status no longer reports it. */
    CHECK_OK(vk_client_last_refresh_error(&err, c));
    CHECK(err == NULL);
    vk_snapshot *snap = NULL;
    CHECK_OK(vk_client_snapshot(&snap, c));
    CHECK(vk_snapshot_last_refresh_error(snap) == NULL);
    CHECK(vk_snapshot_connected(snap));
    vk_snapshot_free(snap);

    vk_client_free(c);
    vk_config_free(cfg);
    vkt_server_stop(server);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    RUN(test_server_down_and_back);
    return vkt_finish();
}
