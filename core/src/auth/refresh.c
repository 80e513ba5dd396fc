/*
 * The IAM token refresher (SEMANTICS §3 steps 4 and 6): fetches a token
 * before the first connect, then keeps it fresh from one background thread
 * (or from vk_client_tick in driven mode). A failed refresh keeps the old
 * token in service and backs off with full jitter; stop wakes the loop at
 * once and aborts an in-flight request.
 */
#include "auth/auth.h"
#include "auth/gcp_iam.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VK_REFRESH_MAX_BACKOFF_MS 30000
#define VK_REFRESH_USERNAME "default"

struct vk_refresher {
    /* Settings, copied from the prepared config (the key stays a secret). */
    char *credentials_base64;
    char *service_account;
    char *iam_endpoint;
    int64_t token_lifetime_ms;
    int64_t refresh_every_ms;
    int64_t check_interval_ms;
    int64_t operation_timeout_ms;
    vk_refresh_mode mode;

    vk_events *events;                 /* borrowed from the client */
    vk_apply_credentials_fn apply;
    vk_refresh_failed_fn failed;       /* may be NULL */
    void *client;

    /* One fetch at a time, whoever asks (loop, tick, fetch_now). */
    pthread_mutex_t fetch_lock;

    /* Everything below is guarded by lock. */
    pthread_mutex_t lock;
    pthread_cond_t wake;               /* signalled by stop */
    pthread_t thread;
    bool thread_started;
    bool driven_started;               /* driven mode: between start and stop */
    bool stopping;
    vk_context *in_flight;             /* the loop's current fetch, cancelled by stop */
    bool refreshed_once;
    int64_t last_refresh_mono_ms;      /* when the token in service was fetched */
    int64_t last_refresh_at_ms;        /* the same, Unix ms (0: never) */
    int64_t token_expires_at_ms;       /* Unix ms (0: no token) */
    char *last_error;
    int consecutive_failures;
    int64_t retry_not_before_ms;       /* monotonic; back-off after failures */
};

/* ---- small utilities --------------------------------------------------------- */

static bool copy_string(char **dst, const char *src)
{
    if (src == NULL) {
        *dst = NULL;
        return true;
    }
    *dst = strdup(src);
    return *dst != NULL;
}

static void init_sync(vk_refresher *r)
{
    pthread_mutex_init(&r->fetch_lock, NULL);
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    /* Monotonic, so a wall-clock jump neither stalls nor rushes the loop. */
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->wake, &attr);
    pthread_condattr_destroy(&attr);
}

/* The extra wait after k consecutive failures: min(d, 30 s), d uniform in
 * [0, check_interval * 2^k). */
static int64_t failure_backoff_ms(int64_t check_interval_ms, int failures)
{
    int64_t upper = check_interval_ms > 0 ? check_interval_ms : 1;
    for (int i = 0; i < failures && upper < VK_REFRESH_MAX_BACKOFF_MS; i++)
        upper *= 2;
    int64_t d = vk__jitter(upper);
    return d < VK_REFRESH_MAX_BACKOFF_MS ? d : VK_REFRESH_MAX_BACKOFF_MS;
}

static void emit_expiry_gauge(vk_refresher *r, int64_t expires_at_ms)
{
    if (expires_at_ms <= 0)
        return;
    double left_s = (double)(expires_at_ms - vk__wall_ms()) / 1000.0;
    vk__metric(r->events, "redis_iam_token_expiry_seconds", VK_METRIC_GAUGE,
               left_s > 0 ? left_s : 0, NULL, 0);
}

static void emit_outcome_metrics(vk_refresher *r, bool success, int64_t expires_at_ms)
{
    if (!vk__events_has_metrics(r->events))
        return;
    const vk_field result = {"result", success ? "success" : "failure"};
    vk__metric(r->events, "redis_iam_token_refresh_total", VK_METRIC_COUNTER, 1, &result, 1);
    emit_expiry_gauge(r, expires_at_ms);
}

/* Between refreshes too, at every check: the gauge falls as the token in
 * service ages instead of holding the value of the last refresh. */
static void report_token_expiry(vk_refresher *r)
{
    if (!vk__events_has_metrics(r->events))
        return;
    pthread_mutex_lock(&r->lock);
    int64_t expires_at_ms = r->token_expires_at_ms;
    pthread_mutex_unlock(&r->lock);
    emit_expiry_gauge(r, expires_at_ms);
}

/* ---- one refresh ------------------------------------------------------------ */

static void record_success(vk_refresher *r, int64_t expires_at_ms)
{
    pthread_mutex_lock(&r->lock);
    r->refreshed_once = true;
    r->last_refresh_mono_ms = vk__now_ms();
    r->last_refresh_at_ms = vk__wall_ms();
    r->token_expires_at_ms = expires_at_ms;
    free(r->last_error);
    r->last_error = NULL;
    r->consecutive_failures = 0;
    r->retry_not_before_ms = 0;
    pthread_mutex_unlock(&r->lock);

    char expires_in[32];
    vk__format_duration_ms(expires_in, sizeof expires_in,
                           expires_at_ms > vk__wall_ms() ? expires_at_ms - vk__wall_ms() : 0);
    const vk_field fields[] = {{"service_account", r->service_account},
                               {"expires_in", expires_in}};
    vk__log(r->events, VK_LOG_INFO, "GCP IAM token refreshed", fields, 2);
    emit_outcome_metrics(r, true, expires_at_ms);
}

/* The detail of the failure on this thread is kept as last_error; it never
 * holds credential material (gcp_iam.c guarantees that). */
static void record_failure(vk_refresher *r, vk_status st)
{
    char *message = vk__error_dup();
    if (message == NULL)
        message = strdup(vk_strerror(vk_last_status()));

    pthread_mutex_lock(&r->lock);
    free(r->last_error);
    r->last_error = message;
    if (r->consecutive_failures < 62)
        r->consecutive_failures++;
    int64_t extra = failure_backoff_ms(r->check_interval_ms, r->consecutive_failures);
    r->retry_not_before_ms = vk__now_ms() + extra;
    int failures = r->consecutive_failures;
    int64_t expires_at = r->token_expires_at_ms;
    pthread_mutex_unlock(&r->lock);

    char failures_text[16], backoff[32];
    snprintf(failures_text, sizeof failures_text, "%d", failures);
    vk__format_duration_ms(backoff, sizeof backoff, extra);
    const vk_field fields[] = {{"service_account", r->service_account},
                               {"error", message != NULL ? message : vk_strerror(VK_ERR_IAM)},
                               {"consecutive_failures", failures_text},
                               {"backoff", backoff}};
    vk__log(r->events, VK_LOG_WARN, "GCP IAM token refresh failed; keeping the current token",
            fields, 4);
    emit_outcome_metrics(r, false, expires_at);
    if (r->failed != NULL)
        r->failed(r->client, st, message);
}

static bool stopping(vk_refresher *r)
{
    pthread_mutex_lock(&r->lock);
    bool stop = r->stopping;
    pthread_mutex_unlock(&r->lock);
    return stop;
}

/* Fetches a token and puts it in service. The caller holds fetch_lock,
 * which also makes record_success/record_failure the only writers of
 * last_error. */
static vk_status refresh_once_traced(vk_refresher *r, vk_context *ctx);

/* One fetch, in a "redis.iam_refresh" span. */
static vk_status refresh_once(vk_refresher *r, vk_context *ctx)
{
    vk_span span;
    const vk_field attrs[] = {{"db.system", "redis"},
                              {"gcp.service_account", r->service_account}};
    vk__span_start(&span, r->events, "redis.iam_refresh", ctx, attrs, 2);
    vk_status st = refresh_once_traced(r, ctx);
    vk__span_end(&span, st, NULL, NULL, 0);
    return st;
}

static vk_status refresh_once_traced(vk_refresher *r, vk_context *ctx)
{
    const vk_gcp_request req = {
        .credentials_base64 = r->credentials_base64,
        .service_account = r->service_account,
        .iam_endpoint = r->iam_endpoint,
        .token_lifetime_ms = r->token_lifetime_ms,
    };
    char *token = NULL;
    int64_t expires_at_ms = 0;
    vk_status st = vk__gcp_fetch_token(&req, ctx, r->operation_timeout_ms, &token,
                                       &expires_at_ms);
    if (st == VK_OK) {
        st = r->apply(r->client, VK_REFRESH_USERNAME, token);
        vk__free_secret(token);
    }
    if (st == VK_OK) {
        record_success(r, expires_at_ms);
    } else if (st == VK_ERR_CANCELLED && stopping(r)) {
        /* Aborted by stop (close): not a failure worth reporting. */
    } else {
        record_failure(r, st);
    }
    return st;
}

/* Due: never refreshed, or now > last refresh + refresh_every, and out of
 * any failure back-off. */
static bool refresh_due(vk_refresher *r, int64_t now_ms)
{
    pthread_mutex_lock(&r->lock);
    bool due = (!r->refreshed_once || now_ms > r->last_refresh_mono_ms + r->refresh_every_ms) &&
               now_ms >= r->retry_not_before_ms;
    pthread_mutex_unlock(&r->lock);
    return due;
}

/* ---- the background loop ------------------------------------------------------ */

/* A per-fetch context that stop can cancel (the operation timeout bounds
 * the fetch separately). NULL when it cannot be made: the fetch is then
 * bounded by the timeout alone. */
static vk_context *begin_loop_fetch(vk_refresher *r)
{
    vk_context *ctx = NULL;
    if (vk_context_new(&ctx) != VK_OK)
        return NULL;
    pthread_mutex_lock(&r->lock);
    r->in_flight = ctx;
    if (r->stopping)                   /* stop came between check and fetch */
        vk_context_cancel(ctx);
    pthread_mutex_unlock(&r->lock);
    return ctx;
}

static void end_loop_fetch(vk_refresher *r, vk_context *ctx)
{
    pthread_mutex_lock(&r->lock);
    r->in_flight = NULL;
    pthread_mutex_unlock(&r->lock);
    vk_context_free(ctx);
}

/* Sleeps until the next check: one interval, after the extra back-off
 * wait of a failure streak; or until stop. Returns false once stopping.
 * Called with lock held. */
static bool wait_next_check(vk_refresher *r)
{
    int64_t now = vk__now_ms();
    int64_t wake_at = (r->retry_not_before_ms > now ? r->retry_not_before_ms : now) +
                      r->check_interval_ms;
    struct timespec ts = {.tv_sec = (time_t)(wake_at / 1000),
                          .tv_nsec = (long)(wake_at % 1000) * 1000000L};
    while (!r->stopping) {
        int rc = pthread_cond_timedwait(&r->wake, &r->lock, &ts);
        if (rc == ETIMEDOUT)
            break;
    }
    return !r->stopping;
}

static void *refresh_loop(void *arg)
{
    vk_refresher *r = arg;
    vk__events_enter_background();
    pthread_mutex_lock(&r->lock);
    /* Started without a token (an event-loop client): fetch it now. */
    bool first_now = !r->refreshed_once;
    while (first_now || wait_next_check(r)) {
        first_now = false;
        pthread_mutex_unlock(&r->lock);
        if (refresh_due(r, vk__now_ms())) {
            pthread_mutex_lock(&r->fetch_lock);
            vk_context *ctx = begin_loop_fetch(r);
            refresh_once(r, ctx);
            end_loop_fetch(r, ctx);
            pthread_mutex_unlock(&r->fetch_lock);
        } else {
            report_token_expiry(r);
        }
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

/* ---- the interface of auth.h ------------------------------------------------- */

vk_status vk__refresher_new(vk_refresher **out, const vk_config *cfg, vk_events *ev,
                            vk_apply_credentials_fn apply, void *client)
{
    *out = NULL;
    vk_refresher *r = calloc(1, sizeof *r);
    if (r == NULL)
        return vk__fail_nomem();
    bool ok = copy_string(&r->credentials_base64, cfg->iam_credentials_base64);
    ok = copy_string(&r->service_account, cfg->iam_service_account) && ok;
    ok = copy_string(&r->iam_endpoint, cfg->iam_endpoint) && ok;
    if (!ok) {
        vk__free_secret(r->credentials_base64);
        free(r->service_account);
        free(r->iam_endpoint);
        free(r);
        return vk__fail_nomem();
    }
    r->token_lifetime_ms = cfg->iam_token_lifetime_ms;
    r->refresh_every_ms = cfg->iam_refresh_every_ms;
    r->check_interval_ms = cfg->iam_refresh_check_interval_ms > 0
                               ? cfg->iam_refresh_check_interval_ms : 1;
    r->operation_timeout_ms = cfg->iam_refresh_operation_timeout_ms;
    r->mode = cfg->refresh_mode;
    r->events = ev;
    r->apply = apply;
    r->client = client;
    init_sync(r);
    *out = r;
    return VK_OK;
}

void vk__refresher_on_failure(vk_refresher *r, vk_refresh_failed_fn failed)
{
    r->failed = failed;
}

void vk__refresher_free(vk_refresher *r)
{
    if (r == NULL)
        return;
    vk__refresher_stop(r);
    vk__free_secret(r->credentials_base64);
    free(r->service_account);
    free(r->iam_endpoint);
    free(r->last_error);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->fetch_lock);
    free(r);
}

vk_status vk__refresher_fetch_now(vk_refresher *r, vk_context *ctx)
{
    pthread_mutex_lock(&r->fetch_lock);
    vk_status st = refresh_once(r, ctx);
    pthread_mutex_unlock(&r->fetch_lock);
    return st;
}

vk_status vk__refresher_start(vk_refresher *r)
{
    pthread_mutex_lock(&r->lock);
    vk_status st = VK_OK;
    if (r->mode == VK_REFRESH_DRIVEN) {
        r->driven_started = true;      /* the host's ticks are the loop */
    } else if (!r->thread_started) {
        r->stopping = false;
        int rc = pthread_create(&r->thread, NULL, refresh_loop, r);
        if (rc == 0)
            r->thread_started = true;
        else
            st = vk__fail(VK_ERR_IAM, "starting the token refresh loop failed (error %d)", rc);
    }
    pthread_mutex_unlock(&r->lock);
    return st;
}

/* Does nothing unless started in driven mode: a closed client's ticks
 * must not fetch tokens, and a threaded loop does its own work. */
vk_status vk__refresher_tick(vk_refresher *r, vk_context *ctx)
{
    pthread_mutex_lock(&r->lock);
    bool active = r->driven_started;
    pthread_mutex_unlock(&r->lock);
    if (!active)
        return VK_OK;
    if (!refresh_due(r, vk__now_ms())) {
        report_token_expiry(r);
        return VK_OK;
    }
    /* Another caller already refreshing: that refresh is this tick's work. */
    if (pthread_mutex_trylock(&r->fetch_lock) != 0)
        return VK_OK;
    vk_status st = VK_OK;
    if (refresh_due(r, vk__now_ms()))
        st = refresh_once(r, ctx);
    pthread_mutex_unlock(&r->fetch_lock);
    return st;
}

/* For a reconnect after close (or fork): the loop was not running, so the
 * token may be older than refresh_every (and expired, since refresh_every <
 * lifetime). Refreshes it synchronously in that case, in any mode and
 * regardless of the loop's back-off: the caller's own reconnect rate limit
 * bounds how often this runs. */
vk_status vk__refresher_refresh_if_stale(vk_refresher *r, vk_context *ctx)
{
    pthread_mutex_lock(&r->fetch_lock);
    pthread_mutex_lock(&r->lock);
    bool stale = !r->refreshed_once ||
                 vk__now_ms() > r->last_refresh_mono_ms + r->refresh_every_ms;
    pthread_mutex_unlock(&r->lock);
    vk_status st = stale ? refresh_once(r, ctx) : VK_OK;
    pthread_mutex_unlock(&r->fetch_lock);
    return st;
}

void vk__refresher_stop(vk_refresher *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->lock);
    r->driven_started = false;
    if (!r->thread_started) {
        pthread_mutex_unlock(&r->lock);
        return;
    }
    r->stopping = true;
    pthread_cond_broadcast(&r->wake);
    if (r->in_flight != NULL)
        vk_context_cancel(r->in_flight);
    pthread_t thread = r->thread;
    pthread_mutex_unlock(&r->lock);

    pthread_join(thread, NULL);

    pthread_mutex_lock(&r->lock);
    r->thread_started = false;
    r->stopping = false;
    pthread_mutex_unlock(&r->lock);
}

void vk__refresher_after_fork(vk_refresher *r)
{
    if (r == NULL)
        return;
    /* The parent's loop thread does not exist here, and it may have held
     * either lock at fork time: re-initialise rather than take them. Its
     * in-flight context belongs to the parent's copy of the loop; leaking
     * this copy is cheaper than guessing its state. */
    init_sync(r);
    r->thread_started = false;
    r->driven_started = false;
    r->stopping = false;
    r->in_flight = NULL;
}

void vk__refresher_status(vk_refresher *r, char **last_error, int64_t *last_refresh_at_ms,
                          bool *running)
{
    pthread_mutex_lock(&r->lock);
    *last_error = r->last_error != NULL ? strdup(r->last_error) : NULL;
    *last_refresh_at_ms = r->last_refresh_at_ms;
    *running = (r->thread_started && !r->stopping) || r->driven_started;
    pthread_mutex_unlock(&r->lock);
}
