/*
 * The client against a real server (VKTEST_NEEDS_SERVER): new, commands,
 * close and reconnect on demand, create-ping-swap under load, binary
 * values, read timeout, the retry policy, log lines, metrics and status.
 */
#include "vktest.h"
#include "servers.h"
#include "vkclient.h"
#include "client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static vkt_server *server;

/* Runs a command given as NUL-terminated words. */
static vk_status run(vk_reply **out, vk_client *c, int argc, const char *const *argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return vk_client_command(out, c, NULL, argc, argv, lens);
}

static long long run_int(vk_client *c, int argc, const char *const *argv)
{
    vk_reply *r = NULL;
    long long v = -1;
    if (run(&r, c, argc, argv) == VK_OK && vk_reply_get_type(r) == VK_REPLY_INTEGER)
        v = vk_reply_get_integer(r);
    vk_reply_free(r);
    return v;
}

static vk_config *config_for(const char *address)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, address);
    return cfg;
}

/* ---- sinks that record what they see ------------------------------------ */

typedef struct recorded {
    pthread_mutex_t lock;
    char lines[64][160];
    int count;
} recorded;

static void record_line(recorded *r, const char *line)
{
    pthread_mutex_lock(&r->lock);
    if (r->count < 64)
        snprintf(r->lines[r->count++], sizeof r->lines[0], "%s", line);
    pthread_mutex_unlock(&r->lock);
}

static bool has_line(recorded *r, const char *line)
{
    bool found = false;
    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < r->count && !found; i++)
        found = strcmp(r->lines[i], line) == 0;
    pthread_mutex_unlock(&r->lock);
    return found;
}

static void log_sink(void *userdata, vk_log_level level, const char *message,
                     const vk_field *fields, size_t nfields)
{
    char line[160];
    snprintf(line, sizeof line, "%s %s", vk_log_level_name(level), message);
    record_line(userdata, line);
}

static void metric_sink(void *userdata, const char *name, vk_metric_kind kind, double value,
                        const vk_field *labels, size_t nlabels)
{
    if (kind == VK_METRIC_HISTOGRAM || kind == VK_METRIC_GAUGE)
        value = 0;  /* observations and levels vary; the series is what matters */
    char line[160];
    snprintf(line, sizeof line, "%s %s{%s=\"%s\"} %g", vk_metric_kind_name(kind), name,
             nlabels ? labels[0].key : "", nlabels ? labels[0].value : "", value);
    record_line(userdata, line);
}

/* ---- tests ----------------------------------------------------------------- */

static void test_new_command_close_reconnect(void)
{
    vk_config *cfg = config_for(vkt_server_address(server));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK(vk_client_is_connected(c));

    const char *set[] = {"SET", "greeting", "hello"};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, c, 3, set));
    size_t len = 0;
    CHECK(vk_reply_get_type(r) == VK_REPLY_STATUS);
    CHECK(memcmp(vk_reply_get_string(r, &len), "OK", 2) == 0 && len == 2);
    vk_reply_free(r);

    const char *get[] = {"GET", "greeting"};
    CHECK_OK(run(&r, c, 2, get));
    const char *s = vk_reply_get_string(r, &len);
    CHECK(len == 5 && memcmp(s, "hello", 5) == 0);
    vk_reply_free(r);

    /* An error reply is a reply, not a failure. */
    const char *bad[] = {"INCR", "greeting"};
    CHECK_OK(run(&r, c, 2, bad));
    CHECK(vk_reply_get_type(r) == VK_REPLY_ERROR);
    vk_reply_free(r);

    CHECK_OK(vk_client_close(c));
    CHECK(!vk_client_is_connected(c));
    CHECK_OK(vk_client_close(c));   /* twice is harmless */
    CHECK_OK(run(&r, c, 2, get));    /* reconnects on demand */
    CHECK(vk_reply_get_type(r) == VK_REPLY_STRING);
    vk_reply_free(r);
    CHECK(vk_client_is_connected(c));

    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_new_failures(void)
{
    vk_config *cfg = NULL;
    vk_client *c = (vk_client *)&cfg;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_INVALID_CONFIG,
                "invalid redis config: exactly one topology must be configured");
    CHECK(c == NULL);

    CHECK_OK(vk_config_set_sentinel(cfg, "mymaster"));
    CHECK_OK(vk_config_add_sentinel_address(cfg, "127.0.0.1:1"));
    /* Sentinel mode: no sentinel listens there. */
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_IO,
                "redis sentinel: all sentinels are unreachable: connection error: dial "
                "127.0.0.1:1: Connection refused");
    CHECK(c == NULL);
    vk_config_free(cfg);

    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, "127.0.0.1:1"));
    /* Cluster mode: no seed node listens there. */
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_IO,
                "redis cluster: all nodes are unreachable: connection error: dial "
                "127.0.0.1:1: Connection refused");
    CHECK(c == NULL);
    vk_config_free(cfg);

    /* A port nobody listens on: the connection error, nothing left behind. */
    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%d", vkt_server_port(server) + 7);
    cfg = config_for(address);
    vk_config_set_dial_timeout_ms(cfg, 500);
    CHECK(vk_client_new(&c, cfg) == VK_ERR_IO);
    CHECK(c == NULL);
    vk_config_free(cfg);
}

static void test_logs_and_metrics(void)
{
    recorded logs = {.lock = PTHREAD_MUTEX_INITIALIZER};
    recorded metrics = {.lock = PTHREAD_MUTEX_INITIALIZER};
    vk_config *cfg = config_for(vkt_server_address(server));
    vk_config_set_logger(cfg, log_sink, &logs, NULL);
    vk_config_set_metrics(cfg, metric_sink, &metrics, NULL);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK(has_line(&logs, "info connecting to Redis/Valkey"));
    CHECK(has_line(&logs, "info connected to Redis/Valkey in standalone mode"));
    CHECK(has_line(&logs, "warn redis connection established without TLS; "
                          "consider configuring TLS for production use"));

    const char *get[] = {"GeT", "nothing"};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, c, 2, get));
    vk_reply_free(r);
    CHECK(has_line(&metrics, "histogram redis_command_duration_seconds{command=\"get\"} 0"));
    CHECK(has_line(&metrics, "gauge redis_pool_connections{state=\"in_use\"} 0"));
    CHECK(has_line(&metrics, "gauge redis_pool_connections{state=\"idle\"} 0"));
    CHECK(has_line(&metrics, "gauge redis_pool_waiters{=\"\"} 0"));
    vk_client_free(c);
    vk_config_free(cfg);

    /* A failed first connect counts as a connect failure. */
    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%d", vkt_server_port(server) + 7);
    cfg = config_for(address);
    vk_config_set_metrics(cfg, metric_sink, &metrics, NULL);
    CHECK(vk_client_new(&c, cfg) == VK_ERR_IO);
    CHECK(has_line(&metrics, "counter redis_connection_failures_total{operation=\"connect\"} 1"));
    vk_config_free(cfg);
}

static void test_binary_values(void)
{
    vk_config *cfg = config_for(vkt_server_address(server));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    const char value[] = {'a', '\0', 'b', '\r', '\n', '\0', (char)0xff};
    const char key[] = {'k', '\0', 'y'};
    const char *set[] = {"SET", key, value};
    size_t set_len[] = {3, sizeof key, sizeof value};
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, c, NULL, 3, set, set_len));
    vk_reply_free(r);
    const char *get[] = {"GET", key};
    size_t get_len[] = {3, sizeof key};
    CHECK_OK(vk_client_command(&r, c, NULL, 2, get, get_len));
    size_t len = 0;
    const char *s = vk_reply_get_string(r, &len);
    CHECK(len == sizeof value && memcmp(s, value, len) == 0);
    vk_reply_free(r);
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_read_timeout(void)
{
    vk_config *cfg = config_for(vkt_server_address(server));
    vk_config_set_read_timeout_ms(cfg, 300);
    vk_config_set_max_retries(cfg, -1);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    /* The server takes 1 s to answer (a blocking command would have its
     * read timeout stretched: see test_blocking_commands_*). */
    const char *slow[] = {"DEBUG", "SLEEP", "1"};
    vk_reply *r = NULL;
    CHECK(run(&r, c, 3, slow) == VK_ERR_TIMEOUT);
    CHECK(r == NULL);
    usleep(800 * 1000);   /* the server is back */
    /* The timed-out connection is dropped; the next command works. */
    const char *ping[] = {"PING"};
    CHECK_OK(run(&r, c, 1, ping));
    vk_reply_free(r);
    vk_client_free(c);
    vk_config_free(cfg);
}

/* Kills (server side) the connection the client's next command will use. */
static void kill_client_connection(vk_client *c)
{
    const char *id[] = {"CLIENT", "ID"};
    long long conn_id = run_int(c, 2, id);
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%lld", conn_id);
    const char *kill[] = {"CLIENT", "KILL", "ID", id_text};
    free(vkt_server_cmd(server, kill, 4));
    usleep(50 * 1000);   /* let the close reach the client's socket */
}

/* Keeps the server from answering anybody for 600 ms. */
static void *keep_server_busy(void *arg)
{
    const char *sleep_cmd[] = {"DEBUG", "SLEEP", "0.6"};
    free(vkt_server_cmd(server, sleep_cmd, 3));
    return arg;
}

static void test_retry_policy(void)
{
    vk_config *cfg = config_for(vkt_server_address(server));
    vk_config_set_pool_size(cfg, 1);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    const char *del[] = {"DEL", "counter"};
    CHECK(run_int(c, 2, del) >= 0);

    /* A read-only command on a connection the server dropped is re-sent. */
    kill_client_connection(c);
    const char *get[] = {"GET", "counter"};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, c, 2, get));
    CHECK(vk_reply_get_type(r) == VK_REPLY_NIL);
    vk_reply_free(r);

    /* A write whose reply is lost is not re-sent. The server is kept
     * busy, the read times out, then the server runs the INCR it
     * already received exactly once. */
    vk_config *slow = config_for(vkt_server_address(server));
    vk_config_set_read_timeout_ms(slow, 200);
    vk_client *w = NULL;
    CHECK_OK(vk_client_new(&w, slow));
    pthread_t busy;
    pthread_create(&busy, NULL, keep_server_busy, NULL);
    usleep(100 * 1000);   /* the script is running by now */
    const char *incr[] = {"INCR", "counter"};
    CHECK(run(&r, w, 2, incr) == VK_ERR_TIMEOUT);
    pthread_join(busy, NULL);
    vk_reply *value = NULL;
    CHECK_OK(run(&value, c, 2, get));
    size_t len = 0;
    const char *s = vk_reply_get_string(value, &len);
    CHECK(len == 1 && s[0] == '1');
    vk_reply_free(value);

    /* And after its connection was killed, the INCR is not re-sent either. */
    kill_client_connection(w);
    vk_status st = run(&r, w, 2, incr);
    CHECK(st == VK_ERR_IO);
    CHECK_OK(run(&value, c, 2, get));
    s = vk_reply_get_string(value, &len);
    CHECK(len == 1 && s[0] == '1');
    vk_reply_free(value);

    vk_client_free(w);
    vk_config_free(slow);
    vk_client_free(c);
    vk_config_free(cfg);
}

/* ---- create-ping-swap under load ------------------------------------------ */

typedef struct load {
    vk_client *client;
    atomic_bool stop;
    atomic_int failures;
    atomic_int done;
} load;

static void *run_load(void *arg)
{
    load *l = arg;
    const char *ping[] = {"PING"};
    while (!atomic_load(&l->stop)) {
        vk_reply *r = NULL;
        if (run(&r, l->client, 1, ping) != VK_OK || vk_reply_get_type(r) != VK_REPLY_STATUS)
            atomic_fetch_add(&l->failures, 1);
        vk_reply_free(r);
        atomic_fetch_add(&l->done, 1);
    }
    return NULL;
}

static void test_connect_swaps_without_failures(void)
{
    vk_config *cfg = config_for(vkt_server_address(server));
    vk_config_set_max_retries(cfg, -1);   /* a swap must not need retries */
    load l = {0};
    CHECK_OK(vk_client_new(&l.client, cfg));
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, run_load, &l);
    for (int i = 0; i < 20; i++) {
        CHECK_OK(vk_client_connect(l.client, NULL));
        usleep(10 * 1000);
    }
    atomic_store(&l.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    CHECK_EQ_INT(atomic_load(&l.failures), 0);
    CHECK(atomic_load(&l.done) > 0);
    vk_client_free(l.client);
    vk_config_free(cfg);
}

static void test_status_snapshot(void)
{
    vk_config *cfg = config_for(vkt_server_address(server));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_snapshot *s = NULL;
    CHECK_OK(vk_client_snapshot(&s, c));
    CHECK_EQ_INT(vk_snapshot_connected(s), 1);
    CHECK(vk_snapshot_last_refresh_error(s) == NULL);
    CHECK_EQ_INT(vk_snapshot_last_refresh_at_ms(s), 0);
    CHECK_EQ_INT(vk_snapshot_refresh_loop_running(s), 0);
    CHECK_EQ_STR(vk_snapshot_mode(s), "standalone");
    CHECK_EQ_STR(vk_snapshot_master_address(s), vkt_server_address(server));
    CHECK_EQ_INT(vk_snapshot_master_switches(s), 0);
    CHECK_EQ_INT(vk_snapshot_slot_map_refreshes(s), 0);
    CHECK_EQ_INT(vk_snapshot_moved_redirects(s), 0);
    CHECK_EQ_INT(vk_snapshot_ask_redirects(s), 0);
    CHECK_EQ_INT(vk_snapshot_node_count(s), 0);
    CHECK(vk_snapshot_node_address(s, 0) == NULL);
    vk_snapshot_free(s);
    char *err = (char *)"x";
    CHECK_OK(vk_client_last_refresh_error(&err, c));
    CHECK(err == NULL);

    CHECK_OK(vk_client_close(c));
    CHECK_OK(vk_client_snapshot(&s, c));
    CHECK_EQ_INT(vk_snapshot_connected(s), 0);
    vk_snapshot_free(s);
    /* No queued events in the default delivery mode. */
    CHECK_EQ_INT(vk_client_poll_events(c, 0), 0);
    CHECK_OK(vk_client_tick(c, NULL));
    vk_client_free(c);
    vk_config_free(cfg);
}

/* ---- credentials applied by the refresher --------------------------------- */

static char *whoami(vk_client *c)
{
    const char *argv[] = {"ACL", "WHOAMI"};
    vk_reply *r = NULL;
    char *name = NULL;
    if (run(&r, c, 2, argv) == VK_OK && vk_reply_get_type(r) == VK_REPLY_STRING) {
        size_t len = 0;
        const char *s = vk_reply_get_string(r, &len);
        name = strndup(s, len);
    }
    vk_reply_free(r);
    return name;
}

static void test_new_credentials_reach_idle_connections(void)
{
    const char *alice[] = {"ACL", "SETUSER", "alice", "on", ">alice-secret", "~*", "+@all"};
    const char *bob[] = {"ACL", "SETUSER", "bob", "on", ">bob-secret", "~*", "+@all"};
    free(vkt_server_cmd(server, alice, 7));
    free(vkt_server_cmd(server, bob, 7));
    vk_config *cfg = config_for(vkt_server_address(server));
    vk_config_set_static_password(cfg, "alice", "alice-secret");
    vk_config_set_pool_size(cfg, 1);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    const char *id[] = {"CLIENT", "ID"};
    long long first_id = run_int(c, 2, id);
    char *name = whoami(c);
    CHECK_EQ_STR(name, "alice");
    free(name);

    /* What the IAM refresher does with each new token. */
    CHECK_OK(vk__client_apply_credentials(c, "bob", "bob-secret"));
    name = whoami(c);
    CHECK_EQ_STR(name, "bob");
    free(name);
    CHECK_EQ_INT(run_int(c, 2, id), first_id);   /* re-authenticated, not replaced */

    /* Nothing still runs as alice: removing her breaks no command. */
    const char *deluser[] = {"ACL", "DELUSER", "alice"};
    free(vkt_server_cmd(server, deluser, 3));
    CHECK_OK(vk_client_close(c));
    name = whoami(c);   /* a new connection, with the new pair */
    CHECK_EQ_STR(name, "bob");
    free(name);
    vk_client_free(c);
    vk_config_free(cfg);
}

/* ---- commands that wait on the server ------------------------------------------ */

static int blocking(int argc, const char *const *argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return vk_command_is_blocking(argc, argv, lens);
}

static void test_blocking_commands_are_recognised(void)
{
    const char *blpop[] = {"blpop", "a", "b", "1.5"};
    const char *blmove[] = {"BLMOVE", "a", "b", "LEFT", "RIGHT", "0"};
    const char *blmpop[] = {"BLMPOP", "2", "1", "a", "LEFT"};
    const char *xread[] = {"XREAD", "COUNT", "2", "BLOCK", "100", "STREAMS", "s", "$"};
    const char *xread_now[] = {"XREAD", "STREAMS", "block", "0"};
    const char *wait[] = {"WAIT", "1", "100"};
    const char *get[] = {"GET", "k"};
    const char *bad[] = {"BLPOP", "a", "soon"};
    CHECK(blocking(4, blpop));
    CHECK(blocking(6, blmove));
    CHECK(blocking(5, blmpop));
    CHECK(blocking(8, xread));
    CHECK(!blocking(4, xread_now));   /* "block" here is a stream name */
    CHECK(blocking(3, wait));
    CHECK(!blocking(2, get));
    CHECK(!blocking(3, bad));          /* the server will refuse it at once */
    CHECK(!vk_command_is_blocking(0, NULL, NULL));
}

typedef struct delayed_push {
    int delay_ms;
    const char *key;
} delayed_push;

static void *push_later(void *arg)
{
    delayed_push *p = arg;
    usleep((useconds_t)p->delay_ms * 1000);
    const char *rpush[] = {"RPUSH", p->key, "job"};
    free(vkt_server_cmd(server, rpush, 3));
    return NULL;
}

/* The reply of a blocking command may rightly come after the read
 * timeout: the wait is the command's own timeout (none for 0). */
static void test_blocking_commands_outlast_the_read_timeout(void)
{
    vk_config *cfg = config_for(vkt_server_address(server));
    vk_config_set_read_timeout_ms(cfg, 200);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);

    int64_t start = vkt_now_ms();
    const char *blpop[] = {"BLPOP", "blocking:empty", "0.6"};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, c, 3, blpop));
    CHECK(r != NULL && vk_reply_get_type(r) == VK_REPLY_NIL);
    CHECK(vkt_now_ms() - start >= 550);
    vk_reply_free(r);

    /* 0 waits for as long as it takes. */
    delayed_push push = {700, "blocking:queue"};
    pthread_t pusher;
    pthread_create(&pusher, NULL, push_later, &push);
    const char *forever[] = {"BLPOP", "blocking:queue", "0"};
    CHECK_OK(run(&r, c, 3, forever));
    pthread_join(pusher, NULL);
    CHECK(r != NULL && vk_reply_get_type(r) == VK_REPLY_ARRAY && vk_reply_get_length(r) == 2);
    vk_reply_free(r);

    const char *xread[] = {"XREAD", "BLOCK", "500", "STREAMS", "blocking:stream", "$"};
    CHECK_OK(run(&r, c, 6, xread));
    CHECK(r != NULL && vk_reply_get_type(r) == VK_REPLY_NIL);
    vk_reply_free(r);

    /* The stretch is for that one reply: a command that is merely slow
     * still meets the read timeout. */
    const char *slow[] = {"DEBUG", "SLEEP", "0.5"};
    CHECK_EQ_INT(run(&r, c, 3, slow), VK_ERR_TIMEOUT);
    vk_reply_free(r);

    /* A context cancels an unlimited wait. */
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_set_timeout_ms(ctx, 300));
    const char *nothing[] = {"BLPOP", "blocking:never", "0"};
    size_t lens[3] = {5, 14, 1};
    start = vkt_now_ms();
    CHECK_EQ_INT(vk_client_command(&r, c, ctx, 3, nothing, lens), VK_ERR_TIMEOUT);
    CHECK(vkt_now_ms() - start < vkt_scaled_ms(2000));
    vk_context_free(ctx);
    const char *ping[] = {"PING"};
    CHECK_OK(run(&r, c, 1, ping));
    vk_reply_free(r);
    vk_client_free(c);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    const char *const extra[] = {"enable-debug-command yes", NULL};
    server = vkt_server_start(&(vkt_server_opts){.extra = extra});
    if (server == NULL)
        return 1;
    RUN(test_new_command_close_reconnect);
    RUN(test_new_failures);
    RUN(test_logs_and_metrics);
    RUN(test_binary_values);
    RUN(test_read_timeout);
    RUN(test_retry_policy);
    RUN(test_blocking_commands_are_recognised);
    RUN(test_blocking_commands_outlast_the_read_timeout);
    RUN(test_connect_swaps_without_failures);
    RUN(test_status_snapshot);
    RUN(test_new_credentials_reach_idle_connections);
    vkt_server_stop(server);
    return vkt_finish();
}
