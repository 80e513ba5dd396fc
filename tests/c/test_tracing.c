/*
 * Spans (vk_config_set_tracer) against real servers (VKTEST_NEEDS_SERVER):
 * a failing connect, a connect and a close, commands and pipelines with
 * vk_config_set_trace_commands, a reconnect that fails and one that works,
 * with_lock contended and timed out, with_lock whose function runs a
 * command (its span's parent), try_lock busy, a caller's parent on the
 * context, IAM refreshes that fail then succeed (on the caller's thread
 * inside "redis.connect", and on the refresh thread delivered by the poll
 * in queued mode), and no secret in any attribute or error.
 */
#include "vktest.h"
#include "servers.h"
#include "fake_google.h"
#include "spans.h"

#include "support/support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- servers and configs ------------------------------------------------------ */

static vkt_server *server;        /* with a password */
static vkt_server *iam_server;    /* TLS, takes the fake Google's tokens */
static vkt_google *google;
static char *key_b64;
static char password[33];

static vk_config *traced_config(const char *address)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, address));
    CHECK_OK(vk_config_set_tracer(cfg, vkt_span_start, vkt_span_end, NULL, NULL));
    return cfg;
}

static vk_config *server_config(void)
{
    vk_config *cfg = traced_config(vkt_server_address(server));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, password));
    return cfg;
}

static vk_client *new_client(vk_config *cfg)
{
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static vk_status run(vk_client *c, vk_context *ctx, int argc, const char *const *argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    vk_reply *r = NULL;
    vk_status st = vk_client_command(&r, c, ctx, argc, argv, lens);
    vk_reply_free(r);
    return st;
}

/* ---- connect, commands, close ---------------------------------------------------- */

static void test_failing_connect(void)
{
    vkt_spans_reset();
    int port = vkt_free_port();
    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    vk_config *cfg = traced_config(address);
    vk_config_set_dial_timeout_ms(cfg, 500);
    vk_client *c = NULL;
    CHECK(vk_client_new(&c, cfg) != VK_OK);
    char expected[600];
    snprintf(expected, sizeof expected, "%s", vk_last_error());
    vk_config_free(cfg);
    CHECK(c == NULL);
    CHECK_EQ_INT((int)vkt_spans_count(), 1);
    vkt_span *s = vkt_spans_find("redis.connect", 0);
    CHECK(s != NULL && s->ended);
    if (s == NULL)
        return;
    CHECK(s->status != VK_OK);
    CHECK_EQ_STR(s->error, expected);
    CHECK(strstr(s->error, "dial") != NULL);
    CHECK(s->parent == NULL);
    CHECK_EQ_STR(vkt_span_attr(s, "db.system"), "redis");
    CHECK_EQ_STR(vkt_span_attr(s, "redis.mode"), "standalone");
    CHECK_EQ_STR(vkt_span_attr(s, "server.address"), address);
    CHECK(s->start_ns > 0 && s->start_ns <= s->end_ns);
    CHECK(s->end_ns <= vk__wall_ns());
    /* A client that never was is not closed: no "redis.close". */
    CHECK_EQ_INT(vkt_spans_named("redis.close"), 0);
}

static void test_connect_commands_close(void)
{
    vkt_spans_reset();
    vk_config *cfg = server_config();
    CHECK_OK(vk_config_set_trace_commands(cfg, 1));
    vk_client *c = new_client(cfg);
    if (c == NULL)
        return;
    vkt_span *connect = vkt_spans_find("redis.connect", 0);
    CHECK(connect != NULL && connect->ended && connect->status == VK_OK);
    CHECK_EQ_STR(connect->error, "");
    CHECK_EQ_STR(vkt_span_attr(connect, "server.address"), vkt_server_address(server));

    CHECK_OK(run(c, NULL, 3, (const char *[]){"SET", "trace:k", "value-not-traced"}));
    CHECK_OK(run(c, NULL, 2, (const char *[]){"GET", "trace:k"}));
    vkt_span *set = vkt_spans_find("redis.command", 0);
    vkt_span *get = vkt_spans_find("redis.command", 1);
    CHECK_EQ_STR(vkt_span_attr(set, "db.operation"), "set");
    CHECK_EQ_STR(vkt_span_attr(get, "db.operation"), "get");
    CHECK(get != NULL && get->ended && get->status == VK_OK && get->parent == NULL);

    /* An error reply is the command's answer, not a failure of the call. */
    CHECK_OK(run(c, NULL, 2, (const char *[]){"INCR", "trace:k"}));
    vkt_span *incr = vkt_spans_find("redis.command", 2);
    CHECK(incr != NULL && incr->status == VK_OK);

    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    for (int i = 0; i < 3; i++)
        CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"GET", "trace:k"},
                                    (const size_t[]){3, 7}));
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    vk_reply_free(r);
    vk_pipeline_free(p);
    vkt_span *pipe = vkt_spans_find("redis.command", 3);
    CHECK_EQ_STR(vkt_span_attr(pipe, "db.operation"), "pipeline");
    CHECK_EQ_STR(vkt_span_attr(pipe, "redis.pipeline.length"), "3");

    /* A refused command's span ends with the refusal. */
    CHECK(run(c, NULL, 1, (const char *[]){"MULTI"}) == VK_ERR_COMMAND_NOT_ALLOWED);
    vkt_span *multi = vkt_spans_find("redis.command", 4);
    CHECK(multi != NULL && multi->ended && multi->status == VK_ERR_COMMAND_NOT_ALLOWED);
    CHECK(multi != NULL && strstr(multi->error, "MULTI") != NULL);

    /* The caller's parent, on the call's context. */
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    int host_span;
    CHECK_OK(vk_context_set_trace_parent(ctx, &host_span));
    CHECK_OK(run(c, ctx, 1, (const char *[]){"PING"}));
    vkt_span *ping = vkt_spans_find("redis.command", 5);
    CHECK(ping != NULL && ping->parent == &host_span);
    vk_context_free(ctx);

    /* A session's commands and pipelines have theirs too. */
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    CHECK_OK(vk_session_command(&r, s, NULL, 2, (const char *[]){"WATCH", "trace:k"},
                                (const size_t[]){5, 7}));
    vk_reply_free(r);
    vkt_span *watch = vkt_spans_find("redis.command", 6);
    CHECK(watch != NULL && watch->ended && watch->status == VK_OK);
    CHECK_EQ_STR(vkt_span_attr(watch, "db.operation"), "watch");
    CHECK_OK(vk_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_set_transaction(p, 1));
    CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"GET", "trace:k"}, (const size_t[]){3, 7}));
    CHECK_OK(vk_session_pipeline_exec(&r, s, p, NULL));
    vk_reply_free(r);
    vk_pipeline_free(p);
    vkt_span *tx = vkt_spans_find("redis.command", 7);
    CHECK_EQ_STR(vkt_span_attr(tx, "db.operation"), "pipeline");
    vk_session_close(s);

    vk_client_free(c);
    vkt_span *close = vkt_spans_find("redis.close", 0);
    CHECK(close != NULL && close->ended && close->status == VK_OK);
    CHECK(vkt_spans_free_of(password));
    CHECK(vkt_spans_free_of("value-not-traced"));
}

static void test_commands_untraced_by_default(void)
{
    vkt_spans_reset();
    vk_client *c = new_client(server_config());
    if (c == NULL)
        return;
    CHECK_OK(run(c, NULL, 1, (const char *[]){"PING"}));
    vk_client_free(c);
    CHECK_EQ_INT(vkt_spans_named("redis.command"), 0);
    CHECK_EQ_INT(vkt_spans_named("redis.connect"), 1);
    CHECK_EQ_INT(vkt_spans_named("redis.close"), 1);
}

static void test_reconnect(void)
{
    vkt_spans_reset();
    vk_config *cfg = server_config();
    vk_config_set_max_retries(cfg, -1);
    vk_config_set_dial_timeout_ms(cfg, 500);
    vk_client *c = new_client(cfg);
    if (c == NULL)
        return;
    vkt_server_kill(server);
    /* The command that finds the connection dead fails; the next one
     * reconnects, and fails while the server is down. */
    CHECK(run(c, NULL, 1, (const char *[]){"PING"}) != VK_OK);
    CHECK(run(c, NULL, 1, (const char *[]){"PING"}) != VK_OK);
    vkt_span *failed = vkt_spans_find("redis.reconnect", 0);
    CHECK(failed != NULL && failed->ended && failed->status != VK_OK);
    CHECK(failed != NULL && strstr(failed->error, "dial") != NULL);
    CHECK(vkt_server_restart(server));
    /* The failed reconnect's back-off runs out, then it works. */
    vk_status st = VK_ERR_IO;
    for (int i = 0; i < 100 && st != VK_OK; i++) {
        st = run(c, NULL, 1, (const char *[]){"PING"});
        if (st != VK_OK)
            vkt_sleep_ms(50);
    }
    CHECK_OK(st);
    int n = vkt_spans_named("redis.reconnect");
    vkt_span *ok = vkt_spans_find("redis.reconnect", n - 1);
    CHECK(ok != NULL && ok->ended && ok->status == VK_OK);
    CHECK_EQ_STR(vkt_span_attr(ok, "server.address"), vkt_server_address(server));
    vk_client_free(c);
    CHECK(vkt_spans_free_of(password));
}

/* ---- locks ------------------------------------------------------------------------- */

typedef struct inner_call {
    vk_client *client;
    vk_status st;
} inner_call;

static vk_status run_inside(void *userdata, vk_lock *lock)
{
    (void)lock;
    inner_call *call = userdata;
    call->st = run(call->client, NULL, 2, (const char *[]){"INCR", "trace:counter"});
    return call->st;
}

static void test_locks(void)
{
    vk_config *cfg = server_config();
    CHECK_OK(vk_config_set_trace_commands(cfg, 1));
    vk_client *c = new_client(cfg);
    vk_client *holder = new_client(server_config());
    if (c == NULL || holder == NULL) {
        vk_client_free(c);
        vk_client_free(holder);
        return;
    }
    vk_lock_manager *m = NULL, *hm = NULL;
    CHECK_OK(vk_lock_manager_new(&m, c));
    CHECK_OK(vk_lock_manager_new(&hm, holder));

    /* with_lock: its function's command is its child. */
    vkt_spans_reset();
    inner_call call = {c, VK_ERR_IO};
    CHECK_OK(vk_lock_manager_with_lock(m, NULL, "trace:lock", 10, run_inside, &call));
    CHECK_OK(call.st);
    vkt_span *with = vkt_spans_find("redis.lock.with_lock", 0);
    CHECK(with != NULL && with->ended && with->status == VK_OK);
    CHECK_EQ_STR(vkt_span_attr(with, "redis.lock.key"), "trace:lock");
    CHECK_EQ_STR(vkt_span_attr(with, "redis.lock.attempts"), "1");
    CHECK_EQ_STR(vkt_span_attr(with, "redis.lock.outcome"), "released");
    vkt_span *incr = NULL;
    for (int i = 0; (incr = vkt_spans_find("redis.command", i)) != NULL; i++)
        if (strcmp(vkt_span_attr(incr, "db.operation"), "incr") == 0)
            break;
    CHECK(incr != NULL && with != NULL && incr->parent == with);

    /* Held elsewhere: try_lock is busy, with_lock gives up after its tries. */
    vk_lock *held = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&held, hm, NULL, "trace:lock", 10));
    CHECK(held != NULL);
    vkt_spans_reset();
    vk_lock *got = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&got, m, NULL, "trace:lock", 10));
    CHECK(got == NULL);
    vkt_span *busy = vkt_spans_find("redis.lock.try_lock", 0);
    CHECK(busy != NULL && busy->ended && busy->status == VK_OK);
    CHECK_EQ_STR(vkt_span_attr(busy, "redis.lock.outcome"), "contended");
    CHECK_EQ_STR(vkt_span_attr(busy, "redis.lock.attempts"), "1");

    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 3;
    opts.retry_delay_ms = 10;
    vk_status st = vk_lock_manager_with_lock_options(m, NULL, "trace:lock", 10, &opts,
                                                     run_inside, &call);
    CHECK(st == VK_ERR_LOCK_ACQUIRE);
    char expected[300];
    snprintf(expected, sizeof expected, "%s", vk_last_error());
    vkt_span *timed_out = vkt_spans_find("redis.lock.with_lock", 0);
    CHECK(timed_out != NULL && timed_out->ended && timed_out->status == VK_ERR_LOCK_ACQUIRE);
    CHECK_EQ_STR(timed_out->error, expected);
    CHECK_EQ_STR(vkt_span_attr(timed_out, "redis.lock.outcome"), "contended");
    CHECK_EQ_STR(vkt_span_attr(timed_out, "redis.lock.attempts"), "3");
    /* The tracer's calls leave the caller's error as it was. */
    CHECK_EQ_STR(vk_last_error(), expected);

    /* A deadline ends the tries: an error outcome, with the attempts made. */
    opts.tries = 1000;
    opts.retry_delay_ms = 20;
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_set_timeout_ms(ctx, 150));
    st = vk_lock_manager_with_lock_options(m, ctx, "trace:lock", 10, &opts, run_inside, &call);
    CHECK(st == VK_ERR_TIMEOUT);
    vkt_span *deadline = vkt_spans_find("redis.lock.with_lock", 1);
    CHECK(deadline != NULL && deadline->status == VK_ERR_TIMEOUT);
    CHECK_EQ_STR(vkt_span_attr(deadline, "redis.lock.outcome"), "error");
    const char *attempts = vkt_span_attr(deadline, "redis.lock.attempts");
    CHECK(attempts != NULL && atoi(attempts) >= 2 && atoi(attempts) < 1000);
    vk_context_free(ctx);

    CHECK_OK(vk_lock_unlock(held, NULL));
    vk_lock_free(held);
    vk_lock_manager_free(m);
    vk_lock_manager_free(hm);
    vk_client_free(c);
    vk_client_free(holder);
    CHECK(vkt_spans_free_of(password));
}

/* ---- IAM ------------------------------------------------------------------------------ */

static vk_config *iam_config(void)
{
    vk_config *cfg = traced_config(vkt_server_address(iam_server));
    CHECK_OK(vk_config_set_tls(cfg, vkt_ca_base64()));
    CHECK_OK(vk_config_set_gcp_iam(cfg, key_b64, VKT_GOOGLE_SERVICE_ACCOUNT));
    CHECK_OK(vk_config_set_gcp_iam_endpoint(cfg, vkt_google_url(google)));
    CHECK_OK(vk_config_set_gcp_iam_token_lifetime_ms(cfg, 3000));
    CHECK_OK(vk_config_set_gcp_iam_refresh_every_ms(cfg, 500));
    CHECK_OK(vk_config_set_gcp_iam_refresh_check_interval_ms(cfg, 100));
    CHECK_OK(vk_config_set_gcp_iam_refresh_operation_timeout_ms(cfg, vkt_scaled_ms(2000)));
    return cfg;
}

static void test_iam_refresh_fails_then_works(void)
{
    vkt_spans_reset();
    CHECK(vkt_google_control(google, "{\"status\": 503, \"message\": \"unavailable\"}"));
    vk_config *cfg = iam_config();
    vk_client *c = NULL;
    CHECK(vk_client_new(&c, cfg) != VK_OK);
    CHECK(vkt_google_control(google, ""));
    vkt_span *connect = vkt_spans_find("redis.connect", 0);
    vkt_span *failed = vkt_spans_find("redis.iam_refresh", 0);
    CHECK(connect != NULL && connect->status != VK_OK);
    CHECK(failed != NULL && failed->ended && failed->status != VK_OK);
    CHECK(failed != NULL && failed->parent == connect);
    CHECK(failed != NULL && strstr(failed->error, "503") != NULL);
    CHECK_EQ_STR(vkt_span_attr(failed, "gcp.service_account"), VKT_GOOGLE_SERVICE_ACCOUNT);

    vkt_spans_reset();
    CHECK_OK(vk_client_new(&c, cfg));
    connect = vkt_spans_find("redis.connect", 0);
    vkt_span *ok = vkt_spans_find("redis.iam_refresh", 0);
    CHECK(ok != NULL && ok->ended && ok->status == VK_OK && ok->parent == connect);
    CHECK(connect != NULL && connect->status == VK_OK && ok != NULL &&
          connect->start_ns <= ok->start_ns && ok->end_ns <= connect->end_ns);
    /* The refresh thread's spans: no parent, on that thread. */
    int64_t until = vkt_now_ms() + vkt_scaled_ms(5000);
    while (vkt_spans_named("redis.iam_refresh") < 2 && vkt_now_ms() < until)
        vkt_sleep_ms(50);
    vkt_span *background = vkt_spans_find("redis.iam_refresh", 1);
    CHECK(background != NULL && background->parent == NULL);
    CHECK(background != NULL && !pthread_equal(background->thread, pthread_self()));
    vk_client_free(c);
    vk_config_free(cfg);
    CHECK(vkt_spans_free_of(key_b64 + 40));
    CHECK(vkt_spans_free_of(password));
}

/* Queued delivery: the refresh thread's spans wait for the poll, which
 * gives each, start then end, on the polling thread, with the times it
 * ran. */
static void test_iam_refresh_span_queued(void)
{
    vk_config *cfg = iam_config();
    CHECK_OK(vk_config_set_event_delivery(cfg, VK_EVENTS_QUEUED));
    vk_client *c = new_client(cfg);
    if (c == NULL)
        return;
    vkt_spans_reset();
    int64_t since_ns = vk__wall_ns();
    vkt_sleep_ms((int)vkt_scaled_ms(1500));
    CHECK_EQ_INT(vkt_spans_named("redis.iam_refresh"), 0);
    CHECK(vk_client_poll_events(c, 0) > 0);
    vkt_span *s = vkt_spans_find("redis.iam_refresh", 0);
    CHECK(s != NULL && s->ended && s->status == VK_OK && s->parent == NULL);
    CHECK(s != NULL && pthread_equal(s->thread, pthread_self()));
    CHECK(s != NULL && s->start_ns >= since_ns && s->start_ns <= s->end_ns);
    CHECK_EQ_STR(vkt_span_attr(s, "db.system"), "redis");
    vk_client_free(c);
}

static void test_tracer_needs_end(void)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK(vk_config_set_tracer(cfg, vkt_span_start, NULL, NULL, NULL) == VK_ERR_INVALID_ARGUMENT);
    CHECK_OK(vk_config_set_tracer(cfg, NULL, NULL, NULL, NULL));
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
        snprintf(password + 2 * i, 3, "%02x", raw[i]);
    const vkt_server_opts opts = {.requirepass = password};
    server = vkt_server_start(&opts);
    const vkt_server_opts iam_opts = {.tls = true, .unix_socket = true, .requirepass = password};
    iam_server = vkt_server_start(&iam_opts);
    if (server == NULL || iam_server == NULL)
        return 1;
    const vkt_google_opts google_opts = {
        .redis_unix = vkt_server_unix_address(iam_server) + strlen("unix:"),
        .redis_password = password,
    };
    google = vkt_google_start(&google_opts);
    if (google == NULL)
        return 1;
    char token_uri[128];
    snprintf(token_uri, sizeof token_uri, "%s/token", vkt_google_url(google));
    key_b64 = vkt_google_key_base64(token_uri);

    RUN(test_tracer_needs_end);
    RUN(test_failing_connect);
    RUN(test_connect_commands_close);
    RUN(test_commands_untraced_by_default);
    RUN(test_locks);
    RUN(test_iam_refresh_fails_then_works);
    RUN(test_iam_refresh_span_queued);
    RUN(test_reconnect);

    free(key_b64);
    vkt_google_stop(google);
    vkt_server_stop(iam_server);
    vkt_server_stop(server);
    return vkt_finish();
}
