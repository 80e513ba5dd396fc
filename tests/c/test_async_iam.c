/*
 * The event-loop client with GCP IAM tokens rotated every second, on
 * libuv and libevent (VKTEST_NEEDS_SERVER): a TLS server whose default
 * user takes each token the fake Google endpoints issue and loses it when
 * it expires (3 s). Sixteen INCRs stay in flight on the client's one
 * connection for several rotations and none fails; the connection is then
 * killed, and the next command logs in again with the token in service.
 * The first token is fetched on the refresh thread: creating a client
 * never waits for Google, commands wait for the token while the loop goes
 * on, a failed first fetch fails them with the blocking client's text,
 * the refresh thread's events wait for vk_async_poll_events in queued
 * delivery, and the driven refresh mode is refused.
 */
#include "vktest.h"
#include "servers.h"
#include "fake_google.h"
#include "async_loops.h"

#include "support/support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static vkt_server *server;
static vkt_google *google;
static char *key_b64;
static char server_password[33];

static vk_config *iam_config(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_tls(cfg, vkt_ca_base64());
    vk_config_set_gcp_iam(cfg, key_b64, VKT_GOOGLE_SERVICE_ACCOUNT);
    vk_config_set_gcp_iam_endpoint(cfg, vkt_google_url(google));
    vk_config_set_gcp_iam_token_lifetime_ms(cfg, 3000);
    vk_config_set_gcp_iam_refresh_every_ms(cfg, 1000);
    vk_config_set_gcp_iam_refresh_check_interval_ms(cfg, 100);
    vk_config_set_gcp_iam_refresh_operation_timeout_ms(cfg, vkt_scaled_ms(2000));
    /* Commands wait for the first token as long as for a dial. */
    vk_config_set_dial_timeout_ms(cfg, vkt_scaled_ms(5000));
    return cfg;
}

static size_t count_iam_requests(void)
{
    size_t n = 0;
    free(vkt_google_requests(google, "iam", &n));
    return n;
}

/* INCRs kept in flight: each completion queues the next until stopped. */
typedef struct load {
    vk_async *client;
    bool stop;
    int in_flight;
    long ok, failed;
    char first_failure[300];
} load;

static void submit_incr(load *l);

static void on_incr(void *userdata, vk_status st, vk_reply *reply)
{
    load *l = userdata;
    vkt_note_completion();
    l->in_flight--;
    if (st == VK_OK && vk_reply_get_type(reply) == VK_REPLY_INTEGER) {
        l->ok++;
    } else {
        if (l->failed++ == 0)
            snprintf(l->first_failure, sizeof l->first_failure, "%s",
                     st != VK_OK ? vk_last_error() : vk_reply_get_string(reply, &(size_t){0}));
    }
    vk_reply_free(reply);
    if (!l->stop)
        submit_incr(l);
}

static void submit_incr(load *l)
{
    const char *argv[] = {"INCR", "async:iam:rotation"};
    const size_t lens[] = {4, 18};
    if (vk_async_command(l->client, 2, argv, lens, on_incr, l, NULL) == VK_OK)
        l->in_flight++;
    else
        l->failed++;
}

static bool load_drained(void *arg)
{
    return ((load *)arg)->in_flight == 0;
}

static void test_rotation_under_load(vkt_loop *loop)
{
    vk_config *cfg = iam_config();
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    vkt_op first = {0};
    const char *ping[] = {"PING"};
    CHECK(vkt_call(loop, c, &first, 1, ping));
    CHECK(first.status == VK_OK && vkt_reply_is(first.reply, "PONG"));
    vkt_op_clear(&first);
    vkt_op id_before = {0};
    const char *client_id[] = {"CLIENT", "ID"};
    CHECK(vkt_call(loop, c, &id_before, 2, client_id));

    size_t iam_before = count_iam_requests();
    load l = {.client = c};
    for (int i = 0; i < 16; i++)
        submit_incr(&l);
    /* Past several tokens' whole lives (3 s each, one issued a second). */
    vkt_loop_run_for(loop, 7000);
    l.stop = true;
    CHECK(vkt_loop_run_until(loop, load_drained, &l, 10000));
    size_t refreshes = count_iam_requests() - iam_before;
    /* Under Valgrind (a stretched time scale) each refresh's signing and
     * HTTPS call run many times slower: fewer rotations fit, and what
     * matters, no command failing across them, is checked the same. */
    size_t want = vkt_scaled_ms(1) > 1 ? 2 : 4;
    VKT_CHECK_(refreshes >= want, "%zu refreshes in 7 s", refreshes);
    VKT_CHECK_(l.failed == 0, "%ld of %ld commands failed, the first: %s", l.failed,
               l.ok + l.failed, l.first_failure);
    CHECK(l.ok > 100);

    /* The same connection all along: the new tokens went to it in line. */
    vkt_op id_after = {0};
    CHECK(vkt_call(loop, c, &id_after, 2, client_id));
    CHECK(id_before.status == VK_OK && id_after.status == VK_OK &&
          vk_reply_get_integer(id_before.reply) == vk_reply_get_integer(id_after.reply));
    vkt_op_clear(&id_before);
    vkt_op_clear(&id_after);

    /* A new login must use the token in service: the first expired long
     * ago and the server no longer knows it. */
    const char *kill_all[] = {"CLIENT", "KILL", "TYPE", "normal"};
    free(vkt_server_cmd(server, kill_all, 4));
    vkt_op again = {0};
    const char *incr[] = {"INCR", "async:iam:after-kill"};
    for (int attempt = 0; attempt < 3; attempt++) {
        /* A read-only retry is not an INCR's: the kill may surface on the
         * first command as a lost connection; the next logs in anew. */
        vkt_op_clear(&again);
        CHECK(vkt_call(loop, c, &again, 2, incr));
        if (again.status == VK_OK)
            break;
        vkt_loop_run_for(loop, 1100);   /* past the reconnect rate limit */
    }
    VKT_CHECK_(again.status == VK_OK, "after the kill: %d %s", (int)again.status, again.error);
    vkt_op_clear(&again);
    vk_async_free(c);
}

/* The loop turns while Google takes its time with the first token. */
typedef struct slow_start {
    vkt_op *op;
    int turns;
} slow_start;

static bool count_turns(void *arg)
{
    slow_start *s = arg;
    s->turns++;
    return vkt_op_done(s->op);
}

static void test_first_token_on_the_refresh_thread(vkt_loop *loop)
{
    size_t tokens_before = count_iam_requests();
    CHECK(vkt_google_control(google, "{\"delay_ms\": 300}"));
    vk_config *cfg = iam_config();
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL) {
        vkt_google_control(google, "");
        return;
    }
    /* vk_async_new did not wait for the token ... */
    CHECK_EQ_INT(count_iam_requests(), tokens_before);
    /* ... and the loop keeps turning while the first command waits for it. */
    vkt_op ping = {0};
    CHECK_OK(vkt_submit(c, &ping, NULL, 1, (const char *[]){"PING"}));
    slow_start s = {&ping, 0};
    CHECK(vkt_loop_run_until(loop, count_turns, &s, 10000));
    CHECK(s.turns > 10);
    VKT_CHECK_(ping.status == VK_OK && vkt_reply_is(ping.reply, "PONG"), "first command: %d %s",
               (int)ping.status, ping.error);
    CHECK(count_iam_requests() > tokens_before);
    vkt_op_clear(&ping);
    CHECK(vkt_google_control(google, ""));
    vk_async_free(c);
}

/* The first fetch fails: the waiting command fails with the blocking
 * client's code and text; once Google is back, the next one succeeds. */
static void test_first_token_fails(vkt_loop *loop)
{
    CHECK(vkt_google_control(google, "{\"status\": 503, \"message\": \"unavailable\"}"));
    vk_config *cfg = iam_config();
    vk_config_set_gcp_iam_refresh_check_interval_ms(cfg, 300);
    vk_client *b = NULL;
    vk_status blocking = vk_client_new(&b, cfg);
    char want[512];
    snprintf(want, sizeof want, "%s", vk_last_error());
    CHECK(blocking != VK_OK && b == NULL);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL) {
        vkt_google_control(google, "");
        return;
    }
    vkt_op ping = {0};
    CHECK(vkt_call(loop, c, &ping, 1, (const char *[]){"PING"}));
    CHECK_EQ_INT(ping.status, blocking);
    CHECK_EQ_STR(ping.error, want);
    vkt_op_clear(&ping);
    CHECK(vkt_google_control(google, ""));
    bool served = false;
    for (int attempt = 0; attempt < 50 && !served; attempt++) {
        CHECK(vkt_call(loop, c, &ping, 1, (const char *[]){"PING"}));
        served = ping.status == VK_OK;
        vkt_op_clear(&ping);
        if (!served)
            vkt_loop_run_for(loop, 100);
    }
    CHECK(served);
    vk_snapshot *snap = NULL;
    CHECK_OK(vk_async_snapshot(&snap, c));
    CHECK(vk_snapshot_last_refresh_error(snap) == NULL);
    CHECK_EQ_INT(vk_snapshot_refresh_loop_running(snap), 1);
    vk_snapshot_free(snap);
    vk_async_free(c);
}

/* Events in VK_EVENTS_QUEUED mode: what the refresh thread logs waits
 * for vk_async_poll_events, which delivers it on the loop's thread. */
typedef struct log_seen {
    pthread_t loop_thread;
    int refreshed;           /* "GCP IAM token refreshed" seen */
    int off_thread;          /* events delivered on another thread */
} log_seen;

static void record_log(void *userdata, vk_log_level level, const char *message,
                       const vk_field *fields, size_t nfields)
{
    (void)level;
    (void)fields;
    (void)nfields;
    log_seen *seen = userdata;
    if (!pthread_equal(pthread_self(), seen->loop_thread))
        seen->off_thread++;
    if (strcmp(message, "GCP IAM token refreshed") == 0)
        seen->refreshed++;
}

static void test_queued_events_are_polled(vkt_loop *loop)
{
    log_seen seen = {pthread_self(), 0, 0};
    vk_config *cfg = iam_config();
    CHECK_OK(vk_config_set_logger(cfg, record_log, &seen, NULL));
    CHECK_OK(vk_config_set_event_delivery(cfg, VK_EVENTS_QUEUED));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    CHECK_EQ_INT(vk_async_poll_events(NULL, 0), -1);
    vkt_op ping = {0};
    CHECK(vkt_call(loop, c, &ping, 1, (const char *[]){"PING"}));
    CHECK(ping.status == VK_OK && vkt_reply_is(ping.reply, "PONG"));
    vkt_op_clear(&ping);
    /* The first token was fetched on the refresh thread: its event waits. */
    CHECK_EQ_INT(seen.refreshed, 0);
    CHECK(vk_async_poll_events(c, 0) >= 1);
    CHECK(seen.refreshed >= 1);   /* a later refresh (every second) may be in too */
    CHECK_EQ_INT(seen.off_thread, 0);
    vk_async_free(c);
}

static void test_driven_refresh_is_refused(vkt_loop *loop)
{
    vk_config *cfg = iam_config();
    vk_config_set_refresh_mode(cfg, VK_REFRESH_DRIVEN);
    vk_async *c = NULL;
    CHECK_FAILS(vk_async_new(&c, cfg, vkt_loop_adapter(loop)), VK_ERR_INVALID_CONFIG,
                "invalid redis config: the event-loop client refreshes GCP IAM tokens on a "
                "thread of its own: refresh mode VK_REFRESH_DRIVEN is for vk_client_tick");
    CHECK(c == NULL);
    vk_config_free(cfg);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    unsetenv("GCE_METADATA_HOST");
    unsigned char raw[16];
    vk__random_bytes(raw, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(server_password + 2 * i, 3, "%02x", raw[i]);
    const vkt_server_opts server_opts = {.tls = true, .unix_socket = true,
                                         .requirepass = server_password};
    server = vkt_server_start(&server_opts);
    if (server == NULL)
        return 1;
    const vkt_google_opts google_opts = {
        .redis_unix = vkt_server_unix_address(server) + strlen("unix:"),
        .redis_password = server_password,
    };
    google = vkt_google_start(&google_opts);
    if (google == NULL) {
        vkt_server_stop(server);
        return 1;
    }
    char token_uri[128];
    snprintf(token_uri, sizeof token_uri, "%s/token", vkt_google_url(google));
    key_b64 = vkt_google_key_base64(token_uri);

    RUN_ON_LOOPS(test_rotation_under_load);
    RUN_ON_LOOPS(test_first_token_on_the_refresh_thread);
    RUN_ON_LOOPS(test_first_token_fails);
    RUN_ON_LOOPS(test_queued_events_are_polled);
    RUN_ON_LOOPS(test_driven_refresh_is_refused);

    free(key_b64);
    vkt_google_stop(google);
    vkt_server_stop(server);
    return vkt_finish();
}
