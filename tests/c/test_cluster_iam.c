/*
 * GCP IAM in cluster mode (VKTEST_NEEDS_SERVER): a real 3-master cluster
 * whose every node receives each token the fake Google endpoints mint (as
 * a password of the default user, removed again when the token expires).
 * Tokens live 3 s and are replaced every second while two threads write to
 * keys on every master: a refresh must reach every node's connections,
 * with no failed command.
 */
#include "vkclient.h"
#include "vktest.h"
#include "clusters.h"
#include "fake_google.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MASTERS 3
#define WRITERS 2
#define PASSWORD "cluster-iam-admin"   /* the harness's and the fake's own access */

static vkt_cluster *cluster;
static vkt_google *google;
static char *key_b64;

/* A key that master m serves, found by asking the cluster. */
static bool key_on_master(char *out, size_t cap, int m)
{
    for (int i = 0; i < 10000; i++) {
        snprintf(out, cap, "iam:%d:%d", m, i);
        if (vkt_cluster_key_owner(cluster, out) == m)
            return true;
    }
    return false;
}

static size_t iam_requests(void)
{
    size_t n = 0;
    free(vkt_google_requests(google, "iam", &n));
    return n;
}

typedef struct writer {
    vk_client *client;
    char keys[MASTERS][32];
    atomic_bool *stop;
    long ok, failed;
    char first_error[256];
} writer;

static void *write_loop(void *arg)
{
    writer *w = arg;
    for (long n = 0; !atomic_load(w->stop); n++) {
        const char *key = w->keys[n % MASTERS];
        const char *argv[] = { "INCR", key };
        const size_t len[] = { 4, strlen(key) };
        vk_reply *r = NULL;
        vk_status st = vk_client_command(&r, w->client, NULL, 2, argv, len);
        if (st == VK_OK && vk_reply_get_type(r) == VK_REPLY_INTEGER) {
            w->ok++;
        } else {
            if (w->failed++ == 0) {
                size_t n_text = 0;
                const char *text = st == VK_OK ? vk_reply_get_string(r, &n_text) : NULL;
                snprintf(w->first_error, sizeof w->first_error, "%.*s",
                         text != NULL ? (int)n_text : (int)strlen(vk_last_error()),
                         text != NULL ? text : vk_last_error());
            }
        }
        vk_reply_free(r);
    }
    return NULL;
}

static void test_tokens_reach_every_node_under_load(void)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cluster, 0))));
    CHECK_OK(vk_config_set_tls(cfg, vkt_ca_base64()));
    CHECK_OK(vk_config_set_gcp_iam(cfg, key_b64, VKT_GOOGLE_SERVICE_ACCOUNT));
    CHECK_OK(vk_config_set_gcp_iam_endpoint(cfg, vkt_google_url(google)));
    CHECK_OK(vk_config_set_gcp_iam_token_lifetime_ms(cfg, 3000));
    CHECK_OK(vk_config_set_gcp_iam_refresh_every_ms(cfg, 1000));
    CHECK_OK(vk_config_set_gcp_iam_refresh_check_interval_ms(cfg, 100));
    CHECK_OK(vk_config_set_gcp_iam_refresh_operation_timeout_ms(cfg, vkt_scaled_ms(2000)));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    if (c == NULL)
        return;

    atomic_bool stop = false;
    writer w[WRITERS];
    pthread_t threads[WRITERS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < WRITERS; i++) {
        w[i].client = c;
        w[i].stop = &stop;
        for (int m = 0; m < MASTERS; m++) {
            char key[32];
            CHECK(key_on_master(key, sizeof key, m));
            snprintf(w[i].keys[m], sizeof w[i].keys[m], "%s", key);
        }
        pthread_create(&threads[i], NULL, write_loop, &w[i]);
    }
    size_t before = iam_requests();
    /* Long enough for every token the client started with to expire and
     * be removed from every node. */
    usleep(8000 * 1000);
    atomic_store(&stop, true);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(threads[i], NULL);

    size_t refreshes = iam_requests() - before;
    VKT_CHECK_(refreshes >= 5, "%zu token refreshes in 8 s", refreshes);
    long ok = 0, failed = 0;
    for (int i = 0; i < WRITERS; i++) {
        ok += w[i].ok;
        failed += w[i].failed;
        VKT_CHECK_(w[i].failed == 0, "writer %d: %ld failed, first: %s", i, w[i].failed,
                   w[i].first_error);
    }
    CHECK(ok > 300);
    fprintf(stderr, "   %zu refreshes, %ld commands on %d masters, %ld failed\n", refreshes,
            ok, MASTERS, failed);

    /* Every master served the writes, with the tokens of the last seconds. */
    vk_snapshot *s = NULL;
    CHECK_OK(vk_client_snapshot(&s, c));
    CHECK(vk_snapshot_last_refresh_error(s) == NULL);
    CHECK(vk_snapshot_refresh_loop_running(s));
    CHECK_EQ_INT(vk_snapshot_node_count(s), MASTERS);
    vk_snapshot_free(s);
    for (int m = 0; m < MASTERS; m++) {
        const char *get[] = { "GET", w[0].keys[m] };
        char *value = vkt_server_cmd_line(vkt_cluster_node(cluster, m), get, 2, 1);
        CHECK(value != NULL && atol(value) > 0);
        free(value);
    }

    /* Every node drops the client's connections: the new ones must log in
     * with the current token, which therefore reached every node. */
    for (int m = 0; m < MASTERS; m++) {
        const char *kill[] = { "CLIENT", "KILL", "TYPE", "normal" };
        free(vkt_server_cmd(vkt_cluster_node(cluster, m), kill, 4));
    }
    for (int m = 0; m < MASTERS; m++) {
        const char *get[] = { "GET", w[0].keys[m] };
        const size_t len[] = { 3, strlen(w[0].keys[m]) };
        vk_reply *r = NULL;
        CHECK_OK(vk_client_command(&r, c, NULL, 2, get, len));
        CHECK(r != NULL && vk_reply_get_type(r) == VK_REPLY_STRING);
        vk_reply_free(r);
    }
    vk_client_free(c);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    /* GCP IAM requires TLS: every node serves TLS only (harness CA). */
    cluster = vkt_cluster_start(MASTERS, 0, PASSWORD, true);
    if (cluster == NULL) {
        fprintf(stderr, "cannot start a cluster of %s\n", vkt_server_binary());
        return 1;
    }
    const char *addrs[MASTERS + 1] = { NULL };
    for (int m = 0; m < MASTERS; m++)
        addrs[m] = vkt_server_address(vkt_cluster_node(cluster, m));
    const vkt_google_opts opts = { .redis_addrs = addrs, .redis_tls_ca = vkt_ca_path(),
                                   .redis_password = PASSWORD };
    google = vkt_google_start(&opts);
    if (google == NULL) {
        vkt_cluster_stop(cluster);
        return 1;
    }
    char token_uri[128];
    snprintf(token_uri, sizeof token_uri, "%s/token", vkt_google_url(google));
    key_b64 = vkt_google_key_base64(token_uri);

    RUN(test_tokens_reach_every_node_under_load);

    free(key_b64);
    vkt_google_stop(google);
    vkt_cluster_stop(cluster);
    return vkt_finish();
}
