/*
 * The IAM refresh loop (VKTEST_NEEDS_SERVER), against the fake Google
 * endpoints (tests/harness/fake_google.py) that install every minted token
 * into a real server's ACL and remove it when it expires.
 *
 * The refresher on its own (internal interface, tokens recorded by the
 * apply function): periodic refresh, failure keeps the old token and backs
 * off (seen in the fake's request log), recovery, stop wakes the loop at
 * once even mid-request, never two loops, driven ticks, a forked child.
 * Then through the client: tokens rotated every second for 30 s under 4
 * threads of commands (2 under Valgrind) with zero failures, failure and
 * recovery in the status, close stops the loop, driven mode via
 * vk_client_tick, log lines and metrics, and no secret in anything
 * captured.
 */
#include "vktest.h"
#include "servers.h"
#include "fake_google.h"
#include "vkclient.h"
#include "config.h"
#include "auth.h"
#include "gcp_iam.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static vkt_server *server;
static char server_password[40];
static vkt_google *google;
static char *key_b64;

/* ---- captured events ----------------------------------------------------------- */

static pthread_mutex_t captured_lock = PTHREAD_MUTEX_INITIALIZER;
static char *captured;
static size_t captured_len;
static atomic_int refresh_success, refresh_failure, expiry_gauges, info_refreshed, warn_failed;
static atomic_llong expiry_last_ms;   /* the latest time-to-expiry gauge */

static void capture(const char *text)
{
    pthread_mutex_lock(&captured_lock);
    size_t n = strlen(text);
    char *grown = realloc(captured, captured_len + n + 2);
    if (grown != NULL) {
        captured = grown;
        memcpy(captured + captured_len, text, n);
        captured_len += n;
        captured[captured_len++] = '\n';
        captured[captured_len] = '\0';
    }
    pthread_mutex_unlock(&captured_lock);
}

static void log_sink(void *userdata, vk_log_level level, const char *message,
                     const vk_field *fields, size_t nfields)
{
    capture(message);
    for (size_t i = 0; i < nfields; i++) {
        capture(fields[i].key);
        capture(fields[i].value);
    }
    if (level == VK_LOG_INFO && strcmp(message, "GCP IAM token refreshed") == 0)
        atomic_fetch_add(&info_refreshed, 1);
    if (level == VK_LOG_WARN &&
        strcmp(message, "GCP IAM token refresh failed; keeping the current token") == 0)
        atomic_fetch_add(&warn_failed, 1);
}

static void metric_sink(void *userdata, const char *name, vk_metric_kind kind, double value,
                        const vk_field *labels, size_t nlabels)
{
    if (strcmp(name, "redis_iam_token_refresh_total") == 0 && kind == VK_METRIC_COUNTER &&
        nlabels == 1 && strcmp(labels[0].key, "result") == 0) {
        if (strcmp(labels[0].value, "success") == 0)
            atomic_fetch_add(&refresh_success, 1);
        else if (strcmp(labels[0].value, "failure") == 0)
            atomic_fetch_add(&refresh_failure, 1);
    }
    if (strcmp(name, "redis_iam_token_expiry_seconds") == 0 && kind == VK_METRIC_GAUGE &&
        value > 0) {
        atomic_fetch_add(&expiry_gauges, 1);
        atomic_store(&expiry_last_ms, (long long)(value * 1000.0));
    }
}

/* ---- utilities ---------------------------------------------------------------------- */

static size_t count_requests(const char *endpoint)
{
    size_t n = 0;
    free(vkt_google_requests(google, endpoint, &n));
    return n;
}

/* Polls cond until it holds or timeout_ms passes. */
#define WAIT_FOR(cond, timeout_ms)                                                     \
    do {                                                                               \
        int64_t until_ = vk__now_ms() + vkt_scaled_ms(timeout_ms);                                  \
        while (!(cond) && vk__now_ms() < until_)                                       \
            usleep(20 * 1000);                                                         \
    } while (0)

/* Whether the server accepts token as a password of the default user now. */
static bool server_accepts(const char *token)
{
    const char *auth[] = {"AUTH", "default", token};
    char *line = vkt_server_cmd(server, auth, 3);
    bool ok = line != NULL && strcmp(line, "+OK") == 0;
    free(line);
    return ok;
}

/* ---- the refresher on its own --------------------------------------------------------- */

typedef struct applied {
    pthread_mutex_t lock;
    char *last;          /* the token in service */
    char *first;
    int count;
    atomic_bool fail;    /* make the apply step fail */
} applied;

static vk_status record_apply(void *client, const char *username, const char *password)
{
    applied *a = client;
    if (atomic_load(&a->fail))
        return vk__fail(VK_ERR_AUTH, "applying the token failed");
    pthread_mutex_lock(&a->lock);
    if (strcmp(username, "default") == 0) {
        if (a->first == NULL)
            a->first = strdup(password);
        free(a->last);
        a->last = strdup(password);
        a->count++;
    }
    pthread_mutex_unlock(&a->lock);
    return VK_OK;
}

static int applied_count(applied *a)
{
    pthread_mutex_lock(&a->lock);
    int n = a->count;
    pthread_mutex_unlock(&a->lock);
    return n;
}

static void applied_free(applied *a)
{
    free(a->first);
    free(a->last);
    pthread_mutex_destroy(&a->lock);
}

typedef struct rig {
    vk_config cfg;
    vk_events *events;
    vk_refresher *r;
    applied tokens;
} rig;

static void rig_init(rig *g, int64_t lifetime_ms, int64_t every_ms, int64_t interval_ms,
                     vk_refresh_mode mode)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->tokens.lock, NULL);
    g->cfg.auth_gcp_iam = true;
    g->cfg.iam_credentials_base64 = key_b64;
    g->cfg.iam_service_account = VKT_GOOGLE_SERVICE_ACCOUNT;
    g->cfg.iam_endpoint = (char *)vkt_google_url(google);
    g->cfg.iam_token_lifetime_ms = lifetime_ms;
    g->cfg.iam_refresh_every_ms = every_ms;
    g->cfg.iam_refresh_check_interval_ms = interval_ms;
    g->cfg.iam_refresh_operation_timeout_ms = vkt_scaled_ms(2000);
    g->cfg.refresh_mode = mode;
    vk_callback *logger = vk__callback_new((void (*)(void))log_sink, NULL, NULL);
    vk_callback *metrics = vk__callback_new((void (*)(void))metric_sink, NULL, NULL);
    g->events = vk__events_new(logger, metrics, NULL, VK_EVENTS_ANY_THREAD);
    vk__callback_unref(logger);
    vk__callback_unref(metrics);
    CHECK_OK(vk__refresher_new(&g->r, &g->cfg, g->events, record_apply, &g->tokens));
}

static void rig_free(rig *g)
{
    vk__refresher_free(g->r);
    vk__events_free(g->events);
    applied_free(&g->tokens);
}

static void status_of(vk_refresher *r, char **error, int64_t *at, bool *running)
{
    vk__refresher_status(r, error, at, running);
    if (*error != NULL)
        capture(*error);
}

/* For WAIT_FOR: whether the refresher has an error, and whether its last
 * refresh is later than after_ms. */
static bool refresher_has_error(vk_refresher *r)
{
    char *error;
    int64_t at;
    bool running;
    status_of(r, &error, &at, &running);
    bool has = error != NULL;
    free(error);
    return has;
}

static bool refresher_healed_since(vk_refresher *r, int64_t after_ms)
{
    char *error;
    int64_t at;
    bool running;
    status_of(r, &error, &at, &running);
    bool healed = error == NULL && at > after_ms;
    free(error);
    return healed;
}

static void test_refresher_refreshes(void)
{
    rig g;
    rig_init(&g, 3000, 300, 50, VK_REFRESH_THREAD);
    int success_before = atomic_load(&refresh_success);
    CHECK_OK(vk__refresher_fetch_now(g.r, NULL));
    CHECK_EQ_INT(applied_count(&g.tokens), 1);
    char *error;
    int64_t at0, at;
    bool running;
    status_of(g.r, &error, &at0, &running);
    CHECK(error == NULL && at0 > 0 && !running);
    free(error);

    CHECK_OK(vk__refresher_start(g.r));
    WAIT_FOR(applied_count(&g.tokens) >= 4, 5000);
    CHECK(applied_count(&g.tokens) >= 4);
    status_of(g.r, &error, &at, &running);
    CHECK(error == NULL && at > at0 && running);
    free(error);

    /* Every applied token authenticates at the server until it expires. */
    pthread_mutex_lock(&g.tokens.lock);
    char *latest = strdup(g.tokens.last);
    char *first = strdup(g.tokens.first);
    pthread_mutex_unlock(&g.tokens.lock);
    CHECK(strcmp(latest, first) != 0);
    CHECK(server_accepts(latest));
    /* The first one expired (3 s lifetime) and the fake removed it. */
    WAIT_FOR(!server_accepts(first), 5000);
    CHECK(!server_accepts(first));
    free(latest);
    free(first);

    vk__refresher_stop(g.r);
    status_of(g.r, &error, &at, &running);
    CHECK(!running);
    CHECK(atomic_load(&refresh_success) >= success_before + 4);
    CHECK(atomic_load(&expiry_gauges) > 0);
    CHECK(atomic_load(&info_refreshed) > 0);
    rig_free(&g);
}

static void test_refresher_failure_backoff_recovery(void)
{
    rig g;
    rig_init(&g, 60000, 200, 100, VK_REFRESH_THREAD);
    CHECK_OK(vk__refresher_fetch_now(g.r, NULL));
    pthread_mutex_lock(&g.tokens.lock);
    char *old = strdup(g.tokens.last);
    pthread_mutex_unlock(&g.tokens.lock);

    int failures_before = atomic_load(&refresh_failure);
    size_t logged_before = 0;
    free(vkt_google_requests(google, "token", &logged_before));
    CHECK(vkt_google_control(google, "{\"status\":500,\"message\":\"backend unavailable\"}"));
    CHECK_OK(vk__refresher_start(g.r));
    usleep(4000 * 1000);

    /* The old token stays in service and the error is visible. */
    char *error;
    int64_t at;
    bool running;
    status_of(g.r, &error, &at, &running);
    CHECK_EQ_STR(error, "GCP IAM token request failed: token endpoint returned HTTP 500: "
                        "backend unavailable");
    free(error);
    CHECK(running);
    CHECK_EQ_INT(applied_count(&g.tokens), 1);
    CHECK(server_accepts(old));
    CHECK(atomic_load(&refresh_failure) > failures_before);
    CHECK(atomic_load(&warn_failed) > 0);

    /* Back-off in the request log: without it, 4 s at a 100 ms interval
     * would be ~40 attempts; with it the expected count is ~7, and every
     * gap is at least one check interval. */
    size_t n = 0;
    double *times = vkt_google_requests(google, "token", &n);
    size_t attempts = n - logged_before;
    CHECK(attempts >= 2 && attempts <= 15);
    for (size_t i = logged_before + 1; i < n; i++)
        VKT_CHECK_(times[i] - times[i - 1] >= 0.09, "gap %zu is %.3f s", i,
                   times[i] - times[i - 1]);
    free(times);

    /* Recovery clears the error (the streak's wait is at most 30 s). */
    CHECK(vkt_google_control(google, ""));
    int64_t last_at = at;
    WAIT_FOR(refresher_healed_since(g.r, last_at), 35000);
    status_of(g.r, &error, &at, &running);
    CHECK(error == NULL && at > last_at);
    free(error);
    CHECK(applied_count(&g.tokens) >= 2);

    /* An apply that fails is a failed refresh too: the old token stays. */
    atomic_store(&g.tokens.fail, true);
    WAIT_FOR(refresher_has_error(g.r), 5000);
    status_of(g.r, &error, &at, &running);
    CHECK_EQ_STR(error, "authentication failed: applying the token failed");
    free(error);
    atomic_store(&g.tokens.fail, false);

    vk__refresher_stop(g.r);
    free(old);
    rig_free(&g);
}

static void test_refresher_stop_is_prompt(void)
{
    /* Asleep for a 10 s interval: stop wakes it at once. */
    rig g;
    rig_init(&g, 60000, 1000, 10000, VK_REFRESH_THREAD);
    CHECK_OK(vk__refresher_fetch_now(g.r, NULL));
    CHECK_OK(vk__refresher_start(g.r));
    CHECK_OK(vk__refresher_start(g.r));      /* never a second loop */
    usleep(100 * 1000);
    int64_t start = vk__now_ms();
    vk__refresher_stop(g.r);
    /* Bounds far below the interval (10 s) and the stall (8 s), stretched
     * where everything runs slower (Valgrind). */
    CHECK(vk__now_ms() - start < vkt_scaled_ms(300));
    vk__refresher_stop(g.r);                 /* idempotent */
    rig_free(&g);

    /* Mid-request against a stalled endpoint: stop aborts the request. */
    rig_init(&g, 60000, 100, 50, VK_REFRESH_THREAD);
    g.cfg.iam_refresh_operation_timeout_ms = vkt_scaled_ms(10000);
    vk__refresher_free(g.r);
    CHECK_OK(vk__refresher_new(&g.r, &g.cfg, g.events, record_apply, &g.tokens));
    CHECK_OK(vk__refresher_fetch_now(g.r, NULL));
    CHECK(vkt_google_control(google, "{\"stall_ms\":8000}"));
    CHECK_OK(vk__refresher_start(g.r));
    CHECK_OK(vk__refresher_start(g.r));
    usleep(600 * 1000);                      /* the loop is inside a request now */
    start = vk__now_ms();
    vk__refresher_stop(g.r);
    int64_t took = vk__now_ms() - start;
    VKT_CHECK_(took < vkt_scaled_ms(500), "stop took %lld ms", (long long)took);
    CHECK(vkt_google_control(google, ""));

    /* Stopped means stopped: no request arrives afterwards (a second loop
     * started by the second start would still be making them). */
    usleep(300 * 1000);
    size_t before = count_requests("token");
    usleep(1000 * 1000);
    CHECK_EQ_INT(count_requests("token"), before);
    char *error;
    int64_t at;
    bool running;
    status_of(g.r, &error, &at, &running);
    CHECK(!running);
    CHECK(error == NULL);        /* an abort by stop is not a failure */
    free(error);
    rig_free(&g);
}

static void test_refresher_driven(void)
{
    rig g;
    rig_init(&g, 60000, 300, 50, VK_REFRESH_DRIVEN);
    CHECK_OK(vk__refresher_fetch_now(g.r, NULL));
    /* Before start (or after stop), ticks do nothing. */
    usleep(400 * 1000);
    CHECK_OK(vk__refresher_tick(g.r, NULL));
    CHECK_EQ_INT(applied_count(&g.tokens), 1);

    CHECK_OK(vk__refresher_start(g.r));
    size_t iam_before = count_requests("iam");
    /* No thread: nothing happens without ticks. */
    usleep(700 * 1000);
    CHECK_EQ_INT(count_requests("iam"), iam_before);
    char *error;
    int64_t at0, at;
    bool running;
    status_of(g.r, &error, &at0, &running);
    CHECK(running);
    CHECK_OK(vk__refresher_tick(g.r, NULL));
    CHECK_EQ_INT(applied_count(&g.tokens), 2);
    CHECK_EQ_INT(count_requests("iam"), iam_before + 1);
    /* Not due again right away: a tick is cheap. */
    CHECK_OK(vk__refresher_tick(g.r, NULL));
    CHECK_EQ_INT(applied_count(&g.tokens), 2);
    status_of(g.r, &error, &at, &running);
    CHECK(at > at0 && error == NULL);

    /* A failing tick reports the failure and backs off. */
    usleep(400 * 1000);
    CHECK(vkt_google_control(google, "{\"status\":500,\"message\":\"nope\"}"));
    CHECK_FAILS(vk__refresher_tick(g.r, NULL), VK_ERR_IAM,
                "GCP IAM token request failed: token endpoint returned HTTP 500: nope");
    capture(vk_last_error());
    CHECK(vkt_google_control(google, ""));
    vk__refresher_stop(g.r);
    status_of(g.r, &error, &at, &running);
    CHECK(!running && error != NULL);
    free(error);
    rig_free(&g);
}

static void test_refresher_refresh_if_stale(void)
{
    /* What a reconnect after close runs: a token older than refresh_every
     * is replaced before connecting, a fresh one is kept. */
    rig g;
    rig_init(&g, 60000, 300, 50, VK_REFRESH_THREAD);
    CHECK_OK(vk__refresher_refresh_if_stale(g.r, NULL));   /* none yet */
    CHECK_EQ_INT(applied_count(&g.tokens), 1);
    CHECK_OK(vk__refresher_refresh_if_stale(g.r, NULL));   /* fresh */
    CHECK_EQ_INT(applied_count(&g.tokens), 1);
    usleep(400 * 1000);
    CHECK_OK(vk__refresher_refresh_if_stale(g.r, NULL));   /* stale */
    CHECK_EQ_INT(applied_count(&g.tokens), 2);
    CHECK(vkt_google_control(google, "{\"status\":500,\"message\":\"down\"}"));
    usleep(400 * 1000);
    CHECK_FAILS(vk__refresher_refresh_if_stale(g.r, NULL), VK_ERR_IAM,
                "GCP IAM token request failed: token endpoint returned HTTP 500: down");
    capture(vk_last_error());
    CHECK(vkt_google_control(google, ""));
    CHECK_EQ_INT(applied_count(&g.tokens), 2);
    rig_free(&g);
}

static void test_refresher_after_fork(void)
{
    /* The parent's loop is running but idle (nothing due for a minute), so
     * at fork time it holds no lock the child could need. */
    rig g;
    rig_init(&g, 120000, 60000, 50, VK_REFRESH_THREAD);
    CHECK_OK(vk__refresher_fetch_now(g.r, NULL));
    CHECK_OK(vk__refresher_start(g.r));
    usleep(100 * 1000);
    pid_t pid = fork();
    if (pid == 0) {
        /* The parent's loop thread does not exist here: forget it, start
         * our own (stop must then join ours promptly), and fetch. */
        vk__refresher_after_fork(g.r);
        char *error;
        int64_t at;
        bool running;
        vk__refresher_status(g.r, &error, &at, &running);
        if (running)
            _exit(2);
        if (vk__refresher_start(g.r) != VK_OK)
            _exit(3);
        vk__refresher_status(g.r, &error, &at, &running);
        if (!running)
            _exit(4);
        int before = applied_count(&g.tokens);
        if (vk__refresher_fetch_now(g.r, NULL) != VK_OK || applied_count(&g.tokens) != before + 1)
            _exit(5);
        int64_t start = vk__now_ms();
        vk__refresher_stop(g.r);
        _exit(vk__now_ms() - start < 1000 ? 0 : 6);
    }
    CHECK(pid > 0);
    int status = 0;
    int64_t until = vk__now_ms() + 20000;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (vk__now_ms() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(20 * 1000);
    }
    VKT_CHECK_(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x",
               (unsigned)status);
    /* The parent's loop is untouched. */
    char *error;
    int64_t at;
    bool running;
    status_of(g.r, &error, &at, &running);
    CHECK(running && error == NULL);
    free(error);
    vk__refresher_stop(g.r);
    rig_free(&g);
}

/* ---- through the client ---------------------------------------------------------------- */

static vk_config *client_config(int64_t lifetime_ms, int64_t every_ms, int64_t interval_ms)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_tls(cfg, vkt_ca_base64());
    vk_config_set_gcp_iam(cfg, key_b64, VKT_GOOGLE_SERVICE_ACCOUNT);
    vk_config_set_gcp_iam_endpoint(cfg, vkt_google_url(google));
    vk_config_set_gcp_iam_token_lifetime_ms(cfg, lifetime_ms);
    vk_config_set_gcp_iam_refresh_every_ms(cfg, every_ms);
    vk_config_set_gcp_iam_refresh_check_interval_ms(cfg, interval_ms);
    vk_config_set_gcp_iam_refresh_operation_timeout_ms(cfg, vkt_scaled_ms(2000));
    vk_config_set_logger(cfg, log_sink, NULL, NULL);
    vk_config_set_metrics(cfg, metric_sink, NULL, NULL);
    vk_config_set_pool_size(cfg, 8);
    return cfg;
}

/* A client on cfg (which it frees); NULL, with the failure recorded, when
 * the first connect fails. */
static vk_client *client_on(vk_config *cfg)
{
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static bool incr(vk_client *c, const char *key)
{
    const char *argv[] = {"INCR", key};
    const size_t lens[] = {4, strlen(key)};
    vk_reply *r = NULL;
    vk_status st = vk_client_command(&r, c, NULL, 2, argv, lens);
    bool ok = st == VK_OK && vk_reply_get_type(r) == VK_REPLY_INTEGER;
    if (!ok) {
        if (st != VK_OK)
            capture(vk_last_error());
        else if (vk_reply_get_type(r) == VK_REPLY_ERROR)
            capture(vk_reply_get_string(r, &(size_t){0}));
    }
    vk_reply_free(r);
    return ok;
}

typedef struct snapshot_view {
    char *error;
    int64_t at;
    bool running;
    bool connected;
} snapshot_view;

static snapshot_view view(vk_client *c)
{
    snapshot_view v = {0};
    vk_snapshot *s = NULL;
    if (vk_client_snapshot(&s, c) == VK_OK) {
        const char *e = vk_snapshot_last_refresh_error(s);
        v.error = e != NULL ? strdup(e) : NULL;
        if (e != NULL)
            capture(e);
        v.at = vk_snapshot_last_refresh_at_ms(s);
        v.running = vk_snapshot_refresh_loop_running(s) != 0;
        v.connected = vk_snapshot_connected(s) != 0;
    }
    vk_snapshot_free(s);
    return v;
}

static bool client_has_error(vk_client *c)
{
    snapshot_view v = view(c);
    bool has = v.error != NULL;
    free(v.error);
    return has;
}

static bool client_healed_since(vk_client *c, int64_t after_ms)
{
    snapshot_view v = view(c);
    bool healed = v.error == NULL && v.at > after_ms;
    free(v.error);
    return healed;
}

typedef struct load {
    vk_client *client;
    atomic_bool stop;
    atomic_long ok, failed;
} load;

static void *hammer(void *arg)
{
    load *l = arg;
    char key[32];
    snprintf(key, sizeof key, "iam:rotation:%lx", (unsigned long)pthread_self());
    while (!atomic_load(&l->stop)) {
        if (incr(l->client, key))
            atomic_fetch_add(&l->ok, 1);
        else
            atomic_fetch_add(&l->failed, 1);
    }
    return NULL;
}

/* Threads of commands during the rotation: four, and one under Valgrind
 * (the suite sets VK_TEST_TIME_SCALE=10 there, 2 under ASan), which runs
 * one thread of the process at a time: with more busy ones the refresh
 * loop's thread (each refresh signs a JWT, slow under Valgrind) gets too
 * few turns to keep the one-second pace on a busy machine. */
enum { MAX_HAMMERS = 4 };

static int hammer_threads(void)
{
    return vkt_scaled_ms(1) >= 10 ? 1 : MAX_HAMMERS;
}

static void test_client_rotation_under_load(void)
{
    vk_client *c = client_on(client_config(3000, 1000, 100));
    if (c == NULL)
        return;
    snapshot_view first = view(c);
    CHECK(first.error == NULL && first.at > 0 && first.running && first.connected);
    size_t iam_before = count_requests("iam");

    load l = {.client = c};
    pthread_t threads[MAX_HAMMERS];
    int hammers = hammer_threads();
    for (int i = 0; i < hammers; i++)
        pthread_create(&threads[i], NULL, hammer, &l);
    usleep(30 * 1000 * 1000);
    atomic_store(&l.stop, true);
    for (int i = 0; i < hammers; i++)
        pthread_join(threads[i], NULL);

    /* Tokens lived 3 s and were replaced every ~1 s: each one expired
     * and was removed from the server's ACL while commands ran. */
    size_t refreshes = count_requests("iam") - iam_before;
    VKT_CHECK_(refreshes >= 20 && refreshes <= 35, "%zu refreshes in 30 s", refreshes);
    VKT_CHECK_(atomic_load(&l.failed) == 0, "%ld of %ld commands failed",
               (long)atomic_load(&l.failed), (long)(atomic_load(&l.ok) + atomic_load(&l.failed)));
    CHECK(atomic_load(&l.ok) > 1000);

    /* The server keeps connections that logged in with a token it has
     * since removed, so the load alone does not prove that new tokens are
     * applied. New logins do: every connection dropped, each command dials
     * and authenticates with the token in service (the first ones expired
     * long ago). Idle past the pool's check, so no write meets a dead
     * socket. */
    const char *kill_all[] = {"CLIENT", "KILL", "TYPE", "normal"};
    free(vkt_server_cmd(server, kill_all, 4));
    usleep(1100 * 1000);
    CHECK(incr(c, "iam:rotation:after-kill"));
    snapshot_view last = view(c);
    CHECK(last.error == NULL && last.at > first.at && last.running);
    free(last.error);
    free(first.error);

    /* Close stops the loop: not running, no more requests. */
    CHECK_OK(vk_client_close(c));
    snapshot_view closed = view(c);
    CHECK(!closed.running && !closed.connected);
    free(closed.error);
    usleep(200 * 1000);
    size_t after_close = count_requests("iam");
    usleep(1500 * 1000);
    CHECK_EQ_INT(count_requests("iam"), after_close);
    vk_client_free(c);
}

static int64_t refreshed_at(vk_client *c)
{
    snapshot_view v = view(c);
    free(v.error);
    return v.at;
}

/* A new token reaches the idle connections on the refresh loop's thread:
 * after a refresh with no command in between, their last command on the
 * server is the AUTH the loop sent. */
static void test_idle_connections_switch_in_background(void)
{
    vk_config *cfg = client_config(60000, 1000, 50);
    vk_config_set_min_idle_conns(cfg, 3);
    vk_client *c = client_on(cfg);
    if (c == NULL)
        return;
    int64_t first = refreshed_at(c);
    WAIT_FOR(refreshed_at(c) > first, 5000);   /* the loop applies, then records */
    CHECK(refreshed_at(c) > first);

    const char *argv[] = {"CLIENT", "LIST"};
    const size_t lens[] = {6, 4};
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, c, NULL, 2, argv, lens));
    size_t len = 0;
    const char *list = r != NULL ? vk_reply_get_string(r, &len) : NULL;
    int authed = 0;
    for (const char *p = list; p != NULL && (p = strstr(p, " cmd=auth ")) != NULL; p++)
        authed++;
    /* Three idle connections, one of them now running CLIENT LIST. */
    VKT_CHECK_(authed >= 2, "%d idle connections re-authenticated:\n%.*s", authed, (int)len,
               list != NULL ? list : "");
    vk_reply_free(r);
    vk_client_free(c);
}

/* The time-to-expiry gauge is reported at every check, not only when a
 * token arrives: between refreshes it falls with the token's age. */
static void test_expiry_gauge_between_refreshes(void)
{
    vk_client *c = client_on(client_config(60000, 30000, 50));
    if (c == NULL)
        return;
    size_t iam_before = count_requests("iam");
    int reports = atomic_load(&expiry_gauges);
    WAIT_FOR(atomic_load(&expiry_gauges) >= reports + 2, 2000);
    long long early = atomic_load(&expiry_last_ms);
    usleep(600 * 1000);
    long long late = atomic_load(&expiry_last_ms);
    CHECK(atomic_load(&expiry_gauges) >= reports + 5);
    VKT_CHECK_(early > 50000 && early <= 60000, "gauge %lld ms", early);
    VKT_CHECK_(late < early && early - late >= 300, "gauge went %lld -> %lld ms", early, late);
    CHECK_EQ_INT(count_requests("iam"), iam_before);   /* no refresh meanwhile */
    vk_client_free(c);
}

static void test_client_failure_and_recovery(void)
{
    vk_client *c = client_on(client_config(60000, 500, 100));
    if (c == NULL)
        return;
    CHECK(vkt_google_control(google, "{\"status\":500,\"message\":\"backend unavailable\","
                                     "\"endpoints\":[\"iam\"]}"));
    WAIT_FOR(client_has_error(c), 5000);
    snapshot_view before = view(c);
    CHECK_EQ_STR(before.error, "GCP IAM token request failed: IAM Credentials API returned "
                               "HTTP 500: backend unavailable");
    char *last_error = NULL;
    CHECK_OK(vk_client_last_refresh_error(&last_error, c));
    CHECK_EQ_STR(last_error, before.error);
    vk_free(last_error);
    /* The old token keeps working, on old and new connections. */
    for (int i = 0; i < 50; i++)
        CHECK(incr(c, "iam:failing"));
    CHECK_OK(vk_client_connect(c, NULL));
    CHECK(incr(c, "iam:failing"));

    /* The fake down altogether, then back on the same port. */
    vkt_google_kill(google);
    usleep(1000 * 1000);
    snapshot_view down = view(c);
    CHECK(down.error != NULL && down.running);
    CHECK(incr(c, "iam:failing"));
    CHECK(vkt_google_restart(google));
    CHECK(vkt_google_control(google, ""));
    WAIT_FOR(client_healed_since(c, down.at), 35000);
    snapshot_view healed = view(c);
    CHECK(healed.error == NULL && healed.at > down.at);
    CHECK(incr(c, "iam:failing"));
    free(healed.error);
    free(down.error);
    free(before.error);
    vk_client_free(c);
}

static void test_client_driven_mode(void)
{
    vk_config *cfg = client_config(60000, 300, 50);
    vk_config_set_refresh_mode(cfg, VK_REFRESH_DRIVEN);
    vk_client *c = client_on(cfg);
    if (c == NULL)
        return;
    size_t iam_before = count_requests("iam");
    snapshot_view v0 = view(c);
    usleep(600 * 1000);
    CHECK_EQ_INT(count_requests("iam"), iam_before);   /* no thread of its own */
    CHECK_OK(vk_client_tick(c, NULL));
    CHECK_EQ_INT(count_requests("iam"), iam_before + 1);
    snapshot_view v1 = view(c);
    CHECK(v1.at > v0.at && v1.error == NULL);
    CHECK(incr(c, "iam:driven"));
    CHECK_OK(vk_client_close(c));
    usleep(400 * 1000);
    CHECK_OK(vk_client_tick(c, NULL));                 /* closed: nothing to do */
    CHECK_EQ_INT(count_requests("iam"), iam_before + 1);
    free(v0.error);
    free(v1.error);
    vk_client_free(c);
}

/* ---- no secret anywhere ---------------------------------------------------------------- */

static void check_absent(const char *what, const char *needle)
{
    bool leaked = captured != NULL && strstr(captured, needle) != NULL;
    VKT_CHECK_(!leaked, "%s appears in a captured error or log line", what);
}

static void test_no_secret_in_output(void)
{
    CHECK(captured_len > 0);
    char *pem = strdup(vkt_google_private_key_pem());
    for (char *line = strtok(pem, "\n"); line != NULL; line = strtok(NULL, "\n"))
        if (strncmp(line, "-----", 5) != 0 && strlen(line) >= 16)
            check_absent("a line of the private key", line);
    free(pem);
    char chunk[41];
    snprintf(chunk, sizeof chunk, "%s", key_b64 + strlen(key_b64) / 2);
    check_absent("the credentials base64", chunk);
    check_absent("a JWT", "eyJhbGciOiJSUzI1NiIs");
    check_absent("an OAuth token", "ya29.");
    check_absent("an access token", "vkiam-");
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

    RUN(test_refresher_refreshes);
    RUN(test_refresher_failure_backoff_recovery);
    RUN(test_refresher_stop_is_prompt);
    RUN(test_refresher_driven);
    RUN(test_refresher_refresh_if_stale);
    RUN(test_refresher_after_fork);
    RUN(test_client_rotation_under_load);
    RUN(test_idle_connections_switch_in_background);
    RUN(test_expiry_gauge_between_refreshes);
    RUN(test_client_failure_and_recovery);
    RUN(test_client_driven_mode);
    RUN(test_no_secret_in_output);

    free(key_b64);
    vkt_google_stop(google);
    vkt_server_stop(server);
    free(captured);
    return vkt_finish();
}
