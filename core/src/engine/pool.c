/*
 * The per-node connection pool (see pool.h) and the credentials that its
 * connections authenticate with.
 */
#include "engine/pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* An idle connection older than this is probed before reuse: the peer may
 * have closed it (server timeout, restart, CLIENT KILL) while it sat idle. */
#define VK_POOL_IDLE_CHECK_MS 1000
/* How often a waiter wakes to look at a cancellable context. */
#define VK_POOL_WAIT_SLICE_US 50000

struct vk_pool {
    pthread_mutex_t lock;
    pthread_cond_t available;      /* signalled when a connection or a slot frees up */
    vk_pool_params params;
    vk_conn **idle;                /* LIFO stack, capacity pool_size */
    int64_t *idle_since_ms;        /* when each idle connection was returned */
    int idle_count;
    int open_count;                /* idle + in use + being opened */
    int waiters;
    int capacity;
    bool closed;
    atomic_int refs;
    char node[300];                /* the "node" label's value; "" without one */
};

/* A coarse monotonic clock (a few ms resolution, no syscall): enough to
 * tell a connection idle for a second from one just returned. */
static int64_t coarse_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- credentials -------------------------------------------------------- */

void vk__credentials_init(vk_credentials *cr)
{
    pthread_mutex_init(&cr->lock, NULL);
    cr->username = NULL;
    cr->password = NULL;
    atomic_init(&cr->generation, 1);
}

void vk__credentials_destroy(vk_credentials *cr)
{
    free(cr->username);
    vk__free_secret(cr->password);
    free(cr->failure);
    cr->username = NULL;
    cr->password = NULL;
    cr->failure = NULL;
    pthread_mutex_destroy(&cr->lock);
}

void vk__credentials_await_token(vk_credentials *cr)
{
    atomic_store(&cr->token_pending, true);
}

void vk__credentials_fetch_failed(vk_credentials *cr, vk_status st, const char *text)
{
    char *copy = strdup(text != NULL ? text : vk_strerror(st));
    pthread_mutex_lock(&cr->lock);
    free(cr->failure);
    cr->failure = copy;
    cr->failure_status = st;
    atomic_fetch_add(&cr->failures, 1);
    pthread_mutex_unlock(&cr->lock);
}

vk_status vk__credentials_new_failure(vk_credentials *cr, uint64_t *seen)
{
    if (atomic_load(&cr->failures) <= *seen)
        return VK_OK;
    pthread_mutex_lock(&cr->lock);
    *seen = atomic_load(&cr->failures);
    vk_status st = cr->failure_status != VK_OK ? cr->failure_status : VK_ERR_IAM;
    vk__fail_msg(st, "%s", cr->failure != NULL ? cr->failure : vk_strerror(st));
    pthread_mutex_unlock(&cr->lock);
    return st;
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (s == NULL || s[0] == '\0')
        return NULL;
    char *copy = strdup(s);
    if (copy == NULL)
        *failed = true;
    return copy;
}

vk_status vk__credentials_set(vk_credentials *cr, const char *username, const char *password)
{
    bool failed = false;
    char *user = dup_or_null(username, &failed);
    char *pass = dup_or_null(password, &failed);
    if (failed) {
        free(user);
        vk__free_secret(pass);
        return vk__fail_nomem();
    }
    pthread_mutex_lock(&cr->lock);
    char *old_user = cr->username;
    char *old_pass = cr->password;
    cr->username = user;
    cr->password = pass;
    atomic_fetch_add(&cr->generation, 1);
    atomic_store(&cr->token_pending, false);
    pthread_mutex_unlock(&cr->lock);
    free(old_user);
    vk__free_secret(old_pass);
    return VK_OK;
}

vk_status vk__credentials_copy(vk_credentials *cr, char **username, char **password,
                               uint64_t *generation)
{
    bool failed = false;
    pthread_mutex_lock(&cr->lock);
    *username = dup_or_null(cr->username, &failed);
    *password = dup_or_null(cr->password, &failed);
    *generation = atomic_load(&cr->generation);
    pthread_mutex_unlock(&cr->lock);
    if (failed) {
        free(*username);
        vk__free_secret(*password);
        *username = *password = NULL;
        return vk__fail_nomem();
    }
    return VK_OK;
}

/* ---- opening and refreshing connections --------------------------------- */

static vk_status open_conn(const vk_pool_params *pp, vk_conn **out, vk_context *ctx)
{
    char *user, *pass;
    uint64_t generation;
    vk_status st = vk__credentials_copy(pp->credentials, &user, &pass, &generation);
    if (st != VK_OK)
        return st;
    vk_conn_params cp = {
        .cfg = pp->cfg,
        .tls = pp->tls,
        .server_name = pp->cfg->tls_server_name,
        .username = user,
        .password = pass,
    };
    st = vk__conn_open(out, &pp->endpoint, &cp, ctx);
    if (st == VK_OK)
        vk__conn_set_tag(*out, generation);
    free(user);
    vk__free_secret(pass);
    return st;
}

/* Brings an idle connection up to the current credentials; false when it
 * could not be re-authenticated (the caller replaces it). */
static bool reauth_conn(const vk_pool_params *pp, vk_conn *c, vk_context *ctx)
{
    char *user, *pass;
    uint64_t generation;
    if (vk__credentials_copy(pp->credentials, &user, &pass, &generation) != VK_OK)
        return false;
    bool ok = pass == NULL || vk__conn_auth(c, user, pass, ctx) == VK_OK;
    if (ok)
        vk__conn_set_tag(c, generation);
    free(user);
    vk__free_secret(pass);
    return ok;
}

/* Decides, outside the lock, whether an idle connection may be handed out.
 * *dead: the server closed it while it sat idle. */
static bool idle_conn_ready(const vk_pool_params *pp, vk_conn *c, int64_t idle_since_ms,
                            vk_context *ctx, bool *dead)
{
    if (vk__conn_is_broken(c))
        return false;
    if (coarse_now_ms() - idle_since_ms > VK_POOL_IDLE_CHECK_MS && !vk__conn_still_usable(c)) {
        *dead = true;
        return false;
    }
    if (VK_UNLIKELY(vk__conn_tag(c) != atomic_load_explicit(&pp->credentials->generation,
                                                            memory_order_acquire)))
        return reauth_conn(pp, c, ctx);
    return true;
}

/* ---- gauges --------------------------------------------------------------- */

static void report_gauges(vk_pool *p, int in_use, int idle, int waiters)
{
    /* The node label, where there is one, is appended: the state label
     * stays first, where sinks have always found it. */
    size_t node = p->node[0] != '\0' ? 1 : 0;
    const vk_field in_use_labels[] = {{"state", "in_use"}, {"node", p->node}};
    const vk_field idle_labels[] = {{"state", "idle"}, {"node", p->node}};
    const vk_field node_label[] = {{"node", p->node}};
    vk_events *ev = p->params.events;
    vk__metric(ev, "redis_pool_connections", VK_METRIC_GAUGE, in_use, in_use_labels, 1 + node);
    vk__metric(ev, "redis_pool_connections", VK_METRIC_GAUGE, idle, idle_labels, 1 + node);
    vk__metric(ev, "redis_pool_waiters", VK_METRIC_GAUGE, waiters, node ? node_label : NULL,
               node);
}

/* Called with the lock held: takes the numbers, and reports them after
 * unlocking so a slow sink never holds up other callers. */
static void unlock_and_report(vk_pool *p)
{
    if (VK_LIKELY(!vk__events_has_metrics(p->params.events) || p->params.cfg->no_pool_gauges)) {
        pthread_mutex_unlock(&p->lock);
        return;
    }
    int idle = p->idle_count;
    int in_use = p->open_count - p->idle_count;
    int waiters = p->waiters;
    pthread_mutex_unlock(&p->lock);
    report_gauges(p, in_use, idle, waiters);
}

void vk__pool_report_none(vk_events *ev)
{
    if (!vk__events_has_metrics(ev))
        return;
    const vk_field in_use[] = {{"state", "in_use"}}, idle[] = {{"state", "idle"}};
    vk__metric(ev, "redis_pool_connections", VK_METRIC_GAUGE, 0, in_use, 1);
    vk__metric(ev, "redis_pool_connections", VK_METRIC_GAUGE, 0, idle, 1);
    vk__metric(ev, "redis_pool_waiters", VK_METRIC_GAUGE, 0, NULL, 0);
}

void vk__pool_report_gauges(vk_pool *p)
{
    if (p == NULL || !vk__events_has_metrics(p->params.events))
        return;
    pthread_mutex_lock(&p->lock);
    int idle = p->idle_count;
    int in_use = p->open_count - p->idle_count;
    int waiters = p->waiters;
    pthread_mutex_unlock(&p->lock);
    report_gauges(p, in_use, idle, waiters);
}

/* ---- lifecycle ------------------------------------------------------------ */

static void free_pool(vk_pool *p)
{
    for (int i = 0; i < p->idle_count; i++)
        vk__conn_close(p->idle[i]);
    free(p->idle);
    free(p->idle_since_ms);
    pthread_cond_destroy(&p->available);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static void init_sync(vk_pool *p)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->available, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&p->lock, NULL);
}

vk_status vk__pool_new(vk_pool **out, const vk_pool_params *params, vk_context *ctx)
{
    *out = NULL;
    vk_pool *p = calloc(1, sizeof *p);
    int capacity = params->cfg->pool_size > 0 ? params->cfg->pool_size : 1;
    if (p == NULL || (p->idle = calloc((size_t)capacity, sizeof *p->idle)) == NULL ||
        (p->idle_since_ms = calloc((size_t)capacity, sizeof *p->idle_since_ms)) == NULL) {
        if (p != NULL)
            free(p->idle);
        free(p);
        return vk__fail_nomem();
    }
    p->params = *params;
    p->capacity = capacity;
    if (params->label_node)
        vk__format_endpoint(p->node, sizeof p->node, &params->endpoint);
    atomic_init(&p->refs, 1);
    init_sync(p);

    vk_conn *first;
    vk_status st = open_conn(&p->params, &first, ctx);
    if (st != VK_OK) {
        free_pool(p);
        return st;
    }
    int64_t now = coarse_now_ms();
    p->idle_since_ms[p->idle_count] = now;
    p->idle[p->idle_count++] = first;
    p->open_count = 1;

    /* Warm connections beyond the first are a best effort: the pool is
     * usable without them and opens more on demand. */
    int warm = params->cfg->min_idle_conns < capacity ? params->cfg->min_idle_conns : capacity;
    while (p->open_count < warm) {
        vk_conn *c;
        if (open_conn(&p->params, &c, ctx) != VK_OK)
            break;
        p->idle_since_ms[p->idle_count] = now;
        p->idle[p->idle_count++] = c;
        p->open_count++;
    }
    *out = p;
    return VK_OK;
}

vk_pool *vk__pool_ref(vk_pool *p)
{
    if (p != NULL)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void vk__pool_unref(vk_pool *p)
{
    if (p != NULL && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        free_pool(p);
}

void vk__pool_close(vk_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->closed = true;
    int n = p->idle_count;
    vk_conn *to_close[n > 0 ? n : 1];
    memcpy(to_close, p->idle, (size_t)n * sizeof *to_close);
    p->open_count -= n;
    p->idle_count = 0;
    pthread_cond_broadcast(&p->available);
    unlock_and_report(p);
    for (int i = 0; i < n; i++)
        vk__conn_close(to_close[i]);
}

void vk__pool_abandon(vk_pool *p)
{
    if (p == NULL)
        return;
    /* The parent's threads may have held these when fork() ran. */
    init_sync(p);
    for (int i = 0; i < p->idle_count; i++)
        vk__conn_abandon(p->idle[i]);
    p->idle_count = 0;
    free(p->idle);
    free(p->idle_since_ms);
    pthread_cond_destroy(&p->available);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* ---- get / put ---------------------------------------------------------- */

static void deadline_to_timespec(struct timespec *ts, int64_t deadline_us)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t wait_us = deadline_us - vk__now_us();
    if (wait_us < 0)
        wait_us = 0;
    int64_t ns = now.tv_nsec + (wait_us % 1000000) * 1000;
    ts->tv_sec = now.tv_sec + (time_t)(wait_us / 1000000) + (time_t)(ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
}

/* Waits (lock held) until a connection or a slot is free, the pool closes,
 * or the pool timeout / ctx ends the wait. */
static vk_status wait_for_slot(vk_pool *p, vk_context *ctx)
{
    int64_t deadline = vk__now_us() + p->params.cfg->pool_timeout_ms * 1000;
    int64_t ctx_deadline = vk__ctx_deadline_us(ctx);
    bool check_ctx = vk__ctx_needs_poll(ctx);
    vk_status st = VK_OK;
    p->waiters++;
    while (!p->closed && p->idle_count == 0 && p->open_count >= p->capacity) {
        int64_t now = vk__now_us();
        if (check_ctx && (st = vk__ctx_check(ctx)) != VK_OK)
            break;
        if (now >= deadline) {
            st = vk__fail(VK_ERR_POOL_TIMEOUT, NULL);
            break;
        }
        int64_t until = deadline < ctx_deadline ? deadline : ctx_deadline;
        if (check_ctx && until - now > VK_POOL_WAIT_SLICE_US)
            until = now + VK_POOL_WAIT_SLICE_US;
        struct timespec ts;
        deadline_to_timespec(&ts, until);
        pthread_cond_timedwait(&p->available, &p->lock, &ts);
    }
    p->waiters--;
    return st;
}

/* Closes a connection taken out of the pool and frees its slot. */
static void discard_conn(vk_pool *p, vk_conn *c)
{
    vk__conn_close(c);
    pthread_mutex_lock(&p->lock);
    p->open_count--;
    pthread_cond_signal(&p->available);
    unlock_and_report(p);
}

void vk__pool_discard(vk_pool *p, vk_conn *c)
{
    discard_conn(p, c);
}

vk_status vk__pool_get(vk_pool *p, vk_conn **out, vk_context *ctx, bool *closed)
{
    *closed = false;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        if (p->idle_count == 0 && p->open_count >= p->capacity && !p->closed) {
            vk_status st = wait_for_slot(p, ctx);
            if (st != VK_OK) {
                unlock_and_report(p);
                return st;
            }
        }
        if (p->closed) {
            pthread_mutex_unlock(&p->lock);
            *closed = true;
            return vk__fail_msg(VK_ERR_IO, "redis: client is closed");
        }
        if (p->idle_count > 0) {
            vk_conn *c = p->idle[--p->idle_count];
            int64_t idle_since = p->idle_since_ms[p->idle_count];
            unlock_and_report(p);
            bool dead = false;
            if (VK_LIKELY(idle_conn_ready(&p->params, c, idle_since, ctx, &dead))) {
                *out = c;
                return VK_OK;
            }
            /* Stale: drop it and look again (its slot is free now), unless
             * the caller must hear that the server hung up. */
            bool report = dead && p->params.report_dead_idle;
            char peer[300];
            if (report)
                snprintf(peer, sizeof peer, "%s", vk__conn_peer(c));
            discard_conn(p, c);
            if (report)
                return vk__fail(VK_ERR_IO, "connection to %s was closed by the server", peer);
            continue;
        }
        /* A free slot: reserve it, then dial outside the lock. */
        p->open_count++;
        unlock_and_report(p);
        vk_status st = open_conn(&p->params, out, ctx);
        if (st != VK_OK) {
            pthread_mutex_lock(&p->lock);
            p->open_count--;
            pthread_cond_signal(&p->available);
            unlock_and_report(p);
        }
        return st;
    }
}

/* Takes out the newest idle connection whose credentials are older than
 * `generation`, or returns NULL. Called with the lock held. */
static vk_conn *take_stale_idle(vk_pool *p, uint64_t generation)
{
    for (int i = p->idle_count - 1; i >= 0; i--) {
        vk_conn *c = p->idle[i];
        if (vk__conn_tag(c) == generation)
            continue;
        int after = p->idle_count - 1 - i;
        memmove(&p->idle[i], &p->idle[i + 1], (size_t)after * sizeof *p->idle);
        memmove(&p->idle_since_ms[i], &p->idle_since_ms[i + 1],
                (size_t)after * sizeof *p->idle_since_ms);
        p->idle_count--;
        return c;
    }
    return NULL;
}

void vk__pool_reauth_idle(vk_pool *p, vk_context *ctx)
{
    /* At most one pass over the pool: a connection re-authenticated with
     * a generation that a newer token has already replaced waits for the
     * next call rather than keeping this one going. */
    for (int budget = p->capacity; budget > 0; budget--) {
        uint64_t generation = atomic_load_explicit(&p->params.credentials->generation,
                                                   memory_order_acquire);
        pthread_mutex_lock(&p->lock);
        vk_conn *c = p->closed ? NULL : take_stale_idle(p, generation);
        unlock_and_report(p);
        if (c == NULL)
            return;
        if (!vk__conn_is_broken(c) && reauth_conn(&p->params, c, ctx)) {
            vk__pool_put(p, c);
            continue;
        }
        /* Refused or dead: a command would have replaced it too. */
        discard_conn(p, c);
    }
}

void vk__pool_put(vk_pool *p, vk_conn *c)
{
    if (c == NULL)
        return;
    int64_t now = coarse_now_ms();
    pthread_mutex_lock(&p->lock);
    bool keep = !p->closed && !vk__conn_is_broken(c) && p->idle_count < p->capacity;
    if (keep) {
        p->idle_since_ms[p->idle_count] = now;
        p->idle[p->idle_count++] = c;
    }
    else
        p->open_count--;
    if (p->waiters > 0)
        pthread_cond_signal(&p->available);
    unlock_and_report(p);
    if (!keep)
        vk__conn_close(c);
}
