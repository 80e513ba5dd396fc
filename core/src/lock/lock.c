/*
 * The blocking lock manager (Redlock over one or more independent nodes),
 * its handles, TryLock / WithLock and automatic renewal on a thread.
 * SEMANTICS §4 is the contract; every rule that decides is in
 * lock_rules.c, shared with the event-loop manager (lock_async.c).
 *
 * Every operation goes through vk_client_command(), so the manager always
 * uses each client's current connections: a reconnect or a token refresh
 * never invalidates a manager or a held handle.
 *
 * Cost on one node: acquire is one round trip (SET NX PX and INCR of the
 * fencing counter, pipelined), release is one round trip (a script); the
 * handle is one allocation holding the key and its fencing-counter key.
 */
#include "api/client.h"
#include "lock/lock_rules.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct vk_lock_manager {
    atomic_int refs;          /* the owner plus one per live handle */
    size_t count;
    size_t quorum;            /* count / 2 + 1 */
    vk_client *clients[];     /* each referenced */
};

/*
 * Runs one lock script on one client and stores its integer result.
 * EVALSHA first; when the server does not know the script (first use, a
 * restart, SCRIPT FLUSH) it answers NOSCRIPT and the script is sent with
 * EVAL, which also caches it: later calls are one EVALSHA round trip
 * again. This is SCRIPT LOAD folded into the first call.
 */
static vk_status run_script(vk_client *client, vk_context *ctx, vk_lock_script id,
                            const vk_lock *lock, int nargs, const char *const *args,
                            long long *result)
{
    if (!vk__client_alive(client))
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    bool by_sha = vk__lock_script_has_sha(id);
    for (;;) {
        const char *argv[VK_LOCK_SCRIPT_MAX_ARGC];
        size_t argvlen[VK_LOCK_SCRIPT_MAX_ARGC];
        int argc = vk__lock_script_argv(lock, id, by_sha, nargs, args, argv, argvlen);
        vk_reply *reply = NULL;
        vk_status st = vk_client_command(&reply, client, ctx, argc, argv, argvlen);
        if (st != VK_OK)
            return st;
        bool resend = false;
        st = vk__lock_script_result(reply, by_sha, result, &resend);
        vk_reply_free(reply);
        if (!resend)
            return st;
        by_sha = false;
    }
}

/* One node's part of an acquisition (lock_rules.h): SET NX PX and INCR of the
 * fencing counter, pipelined in one round trip. */
static vk_status set_and_count(vk_client *client, vk_context *ctx, const vk_lock *lock,
                               long long *token)
{
    *token = 0;
    if (!vk__client_alive(client))
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    char expiry[24];
    const char *set[VK_LOCK_SET_ARGC], *incr[VK_LOCK_INCR_ARGC];
    size_t set_len[VK_LOCK_SET_ARGC], incr_len[VK_LOCK_INCR_ARGC];
    vk__lock_grant_argv(lock, expiry, set, set_len, incr, incr_len);
    vk_pipeline *pipeline = NULL;
    vk_reply *replies = NULL;
    vk_status st = vk_pipeline_new(&pipeline, client);
    if (st == VK_OK &&
        (st = vk_pipeline_append(pipeline, VK_LOCK_SET_ARGC, set, set_len)) == VK_OK &&
        (st = vk_pipeline_append(pipeline, VK_LOCK_INCR_ARGC, incr, incr_len)) == VK_OK)
        st = vk_pipeline_exec(&replies, pipeline, ctx);
    vk_pipeline_free(pipeline);
    if (st != VK_OK)
        return st;
    st = vk__lock_grant_result(vk_reply_get_element(replies, 0),
                               vk_reply_get_element(replies, 1), token);
    vk_reply_free(replies);
    return st;
}

/* ---- events ----------------------------------------------------------------- */

static vk_events *manager_events(const vk_lock_manager *m)
{
    vk_client *first = m->clients[0];
    return vk__client_alive(first) ? vk__client_events(first) : NULL;
}

/* ---- manager ------------------------------------------------------------------ */

static vk_status new_manager(vk_lock_manager **out, vk_client *const *clients, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!clients[i] || !vk__client_alive(clients[i])) {
            vk__misuse("vk_lock_manager_new", "redis client is nil");
            return vk__fail(VK_ERR_NIL_CLIENT, NULL);
        }
    }
    vk_lock_manager *m = malloc(sizeof *m + n * sizeof m->clients[0]);
    if (!m)
        return vk__fail_nomem();
    atomic_init(&m->refs, 1);
    m->count = n;
    m->quorum = n / 2 + 1;
    for (size_t i = 0; i < n; i++)
        m->clients[i] = vk__client_ref(clients[i]);
    *out = m;
    return VK_OK;
}

vk_status vk_lock_manager_new(vk_lock_manager **out, vk_client *client)
{
    if (!out)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    return new_manager(out, &client, 1);
}

vk_status vk_lock_manager_new_quorum(vk_lock_manager **out, vk_client *const *clients,
                                     size_t n)
{
    if (!out)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!clients || n == 0)
        return vk__fail_msg(VK_ERR_LOCK_NOT_INITIALIZED, "distributed lock is not initialized");
    if (n > VK_LOCK_MAX_NODES)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a lock quorum takes at most %d clients",
                        VK_LOCK_MAX_NODES);
    return new_manager(out, clients, n);
}

static void manager_unref(vk_lock_manager *m)
{
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    for (size_t i = 0; i < m->count; i++)
        vk__client_unref(m->clients[i]);
    free(m);
}

void vk_lock_manager_free(vk_lock_manager *manager)
{
    manager_unref(manager);
}

/* ---- handles ---------------------------------------------------------------------- */

static vk_lock *new_lock(vk_lock_manager *m, const char *key, size_t keylen,
                         const vk_lock_options *opts)
{
    vk_lock *lock = vk__lock_new(key, keylen, opts);
    if (!lock)
        return NULL;
    lock->manager = m;
    atomic_fetch_add(&m->refs, 1);
    return lock;
}

static void renewal_stop(vk_lock *lock);
static void release_after_fn(vk_lock *lock);

/* Starts the renewal a holder asked for; if it cannot start, the lock is
 * released and freed (a holder must not run unprotected) and the cause is
 * returned. */
static vk_status renew_or_give_back(vk_lock *lock)
{
    vk_status st = vk_lock_auto_renew(lock);
    if (st == VK_OK)
        return VK_OK;
    char *cause = vk__error_dup();
    release_after_fn(lock);
    vk_lock_free(lock);
    st = vk__fail_restore(st, cause);
    free(cause);
    return st;
}

void vk_lock_free(vk_lock *lock)
{
    if (!lock)
        return;
    if (lock->async_manager != NULL) {
        vk__async_lock_free(lock);
        return;
    }
    renewal_stop(lock);
    manager_unref(lock->manager);
    free(lock);
}

/* A context with its own budget for cleanup that must happen even when the
 * caller's context was cancelled or ran out. NULL if it cannot be made:
 * then the configured socket timeouts bound the call. */
static vk_context *cleanup_context(void)
{
    vk_context *ctx = NULL;
    if (vk_context_new(&ctx) != VK_OK)
        return NULL;
    vk_context_set_timeout_ms(ctx, VK_LOCK_RELEASE_BUDGET_MS);
    return ctx;
}

/* Compare-and-delete on the nodes in `nodes`, each node's answer voted. */
static void release_on(vk_lock *lock, vk_context *ctx, uint64_t nodes, vk_lock_votes *votes)
{
    const char *args[1] = { lock->value };
    for (size_t i = 0; i < lock->manager->count; i++) {
        if (!(nodes & ((uint64_t)1 << i)))
            continue;
        long long result = 0;
        vk_status st = run_script(lock->manager->clients[i], ctx, VK_LOCK_RELEASE, lock, 1,
                                  args, &result);
        vk__lock_vote(votes, st, result);
    }
}

/* Gives back what a failed attempt took, even if the caller's context is
 * done; the outcome changes nothing. */
static void give_back(vk_lock *lock, uint64_t nodes)
{
    if (!nodes)
        return;
    vk_context *cleanup = cleanup_context();
    vk_lock_votes votes = { 0 };
    char *detail = vk__error_dup();
    vk_status st = vk_last_status();
    release_on(lock, cleanup, nodes, &votes);
    free(votes.fault_detail);
    vk_context_free(cleanup);
    vk__fail_restore(st, detail);   /* the attempt's own error stays */
    free(detail);
}

/* One Redlock attempt (lock_rules.h has the rules): the nodes one after the
 * other. A fault is returned in *fault (detail on this thread). */
static vk_lock_outcome acquire_once(vk_lock *lock, vk_context *ctx, vk_status *fault)
{
    vk_lock_manager *m = lock->manager;
    *fault = vk__lock_new_value(lock);
    if (*fault != VK_OK)
        return VK_LOCK_FAULT;

    vk_lock_attempt attempt;
    vk__lock_attempt_init(&attempt, m->count);
    int64_t start_us = vk__now_us();
    for (size_t i = 0; i < m->count; i++) {
        long long token = 0;
        vk_status st = set_and_count(m->clients[i], ctx, lock, &token);
        vk__lock_attempt_grant(&attempt, i, st, token);
    }
    for (size_t i = 0; i < m->count; i++) {
        if (!vk__lock_attempt_must_raise(&attempt, i))
            continue;
        char floor[24];
        snprintf(floor, sizeof floor, "%lld", attempt.top);
        const char *raise_args[2] = { lock->value, floor };
        long long ours = 0;
        vk_status st = run_script(m->clients[i], ctx, VK_LOCK_RAISE, lock, 2, raise_args, &ours);
        vk__lock_attempt_raised(&attempt, i, st == VK_OK && ours == 1);
    }
    uint64_t nodes = 0;
    vk_lock_outcome outcome = vk__lock_attempt_decide(&attempt, lock, start_us, vk__now_us(),
                                                      &nodes, fault);
    give_back(lock, nodes);
    return outcome;
}

/* ---- acquire ------------------------------------------------------------------------ */

static vk_status check_manager_and_key(vk_lock_manager *manager, const char *key,
                                       size_t keylen, const char *function)
{
    if (!manager) {
        vk__misuse(function, "lock manager is nil");
        return vk__fail_msg(VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil");
    }
    if (vk__lock_key_is_blank(key, keylen))
        return vk__fail_msg(VK_ERR_EMPTY_LOCK_KEY, "lock key cannot be empty");
    return VK_OK;
}

/*
 * Tries up to opts->tries times. A fault returns its code (detail on this
 * thread); a cancelled or expired context stops the retries at once.
 */
static vk_status acquire_with_retries(vk_lock **out, vk_lock_manager *m, vk_context *ctx,
                                      const char *key, size_t keylen,
                                      const vk_lock_options *opts, vk_lock_outcome *outcome,
                                      int *attempts)
{
    *out = NULL;
    *attempts = 0;
    vk_lock *lock = new_lock(m, key, keylen, opts);
    if (!lock) {
        *outcome = VK_LOCK_FAULT;
        return vk__fail_nomem();
    }
    vk_lock_tries tries = { 0 };
    for (int attempt = 0; attempt < opts->tries; attempt++) {
        vk_status st = VK_OK;
        if (attempt > 0 && opts->retry_delay_ms > 0)
            st = vk__ctx_sleep_ms(ctx, vk__lock_jittered_delay_ms(opts->retry_delay_ms));
        vk_lock_outcome once = VK_LOCK_FAULT;
        if (st == VK_OK) {
            once = acquire_once(lock, ctx, &st);
            (*attempts)++;
        }
        if (once == VK_LOCK_ACQUIRED) {
            vk__lock_tries_note(&tries, once, VK_OK);
            *outcome = once;
            *out = lock;
            return VK_OK;
        }
        /* The caller's context ending stops the retries at once. */
        vk_status ctx_st = once == VK_LOCK_FAULT ? vk__ctx_check(ctx) : VK_OK;
        if (ctx_st != VK_OK) {
            vk__lock_tries_note(&tries, VK_LOCK_CONTENDED, VK_OK);
            vk_lock_free(lock);
            *outcome = VK_LOCK_FAULT;
            return ctx_st;
        }
        vk__lock_tries_note(&tries, once, st);
    }
    vk_lock_free(lock);
    vk_status fault;
    *outcome = vk__lock_tries_end(&tries, &fault);
    return fault;
}

vk_status vk_lock_manager_try_lock(vk_lock **out, vk_lock_manager *manager, vk_context *ctx,
                                   const char *key, size_t keylen)
{
    if (!out)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    vk_status st = check_manager_and_key(manager, key, keylen, "vk_lock_manager_try_lock");
    if (st != VK_OK)
        return st;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1;
    vk_lock_span span;
    vk__lock_span_start(&span, manager_events(manager), "redis.lock.try_lock", ctx, key,
                        keylen);
    vk_lock_outcome outcome;
    int attempts;
    st = acquire_with_retries(out, manager, ctx, key, keylen, &opts, &outcome, &attempts);
    vk__lock_report_acquire(manager_events(manager), key, keylen, outcome);
    st = outcome == VK_LOCK_FAULT ? vk__lock_fail_attempt(st, key, keylen) : VK_OK;
    vk__lock_span_end(&span, st, NULL, attempts, vk__lock_outcome_name(outcome));
    return st;
}

vk_status vk_lock_manager_acquire(vk_lock **out, vk_lock_manager *manager, vk_context *ctx,
                                  const char *key, size_t keylen,
                                  const vk_lock_options *opts)
{
    if (!out)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    vk_status st = check_manager_and_key(manager, key, keylen, "vk_lock_manager_acquire");
    if (st != VK_OK)
        return st;
    vk_lock_options resolved;
    st = vk__lock_options_resolve(&resolved, opts);
    if (st != VK_OK)
        return st;
    vk_lock_outcome outcome;
    int attempts;
    st = acquire_with_retries(out, manager, ctx, key, keylen, &resolved, &outcome, &attempts);
    vk__lock_report_acquire(manager_events(manager), key, keylen, outcome);
    if (outcome == VK_LOCK_CONTENDED)
        return vk__lock_fail_acquire(VK_ERR_LOCK_ACQUIRE, key, keylen, "lock already taken");
    if (st == VK_OK && resolved.auto_renew && (st = renew_or_give_back(*out)) != VK_OK)
        *out = NULL;
    return st;
}

/* ---- release, extend ----------------------------------------------------------------- */

/* A handle of this manager kind: blocking calls refuse an event-loop
 * manager's handle, whose nodes are driven by a loop. */
static vk_status check_handle(const vk_lock *lock, const char *function)
{
    if (lock && lock->async_manager != NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "%s: the lock belongs to an event-loop lock "
                                                 "manager: use its vk_async_lock_ functions",
                        function);
    if (!lock || !lock->manager || lock->value[0] == '\0')
        return vk__lock_fail_nil_handle(function);
    return VK_OK;
}

vk_status vk_lock_unlock(vk_lock *lock, vk_context *ctx)
{
    vk_status st = check_handle(lock, "vk_lock_unlock");
    if (st != VK_OK)
        return st;
    vk_lock_manager *m = lock->manager;
    /* Before the release: a renewal racing it could re-extend a freed key. */
    renewal_stop(lock);
    if (lock->released)
        return vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");
    vk_lock_votes votes = { 0 };
    release_on(lock, ctx, vk__lock_all_nodes(m->count), &votes);
    return vk__lock_unlock_decide(&votes, lock, m->quorum, manager_events(m), vk__now_us());
}

vk_status vk_lock_manager_unlock(vk_lock_manager *manager, vk_context *ctx, vk_lock *lock)
{
    if (!manager) {
        vk__misuse("vk_lock_manager_unlock", "lock manager is nil");
        return vk__fail_msg(VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil");
    }
    if (!lock) {
        vk__misuse("vk_lock_manager_unlock", "lock handle is nil");
        return vk__fail_msg(VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK, "lock handle is nil");
    }
    return vk_lock_unlock(lock, ctx);
}

vk_status vk_lock_extend(vk_lock *lock, vk_context *ctx, int64_t expiry_ms)
{
    vk_status st = check_handle(lock, "vk_lock_extend");
    if (st != VK_OK)
        return st;
    if (expiry_ms <= 0)
        return vk__fail_msg(VK_ERR_LOCK_EXPIRY_INVALID, "lock expiry must be greater than 0");
    if (lock->released)
        return vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");

    vk_lock_manager *m = lock->manager;
    char expiry[24];
    snprintf(expiry, sizeof expiry, "%lld", (long long)expiry_ms);
    const char *args[2] = { lock->value, expiry };
    vk_lock_votes votes = { 0 };
    int64_t start_us = vk__now_us();
    for (size_t i = 0; i < m->count; i++) {
        long long result = 0;
        st = run_script(m->clients[i], ctx, VK_LOCK_EXTEND, lock, 2, args, &result);
        vk__lock_vote(&votes, st, result);
    }
    return vk__lock_extend_decide(&votes, lock, m->quorum, expiry_ms, start_us, vk__now_us());
}

int64_t vk_lock_validity_ms(const vk_lock *lock)
{
    if (!lock)
        return 0;
    int64_t until = atomic_load(&((vk_lock *)lock)->valid_until_us);
    int64_t left = until - vk__now_us();
    return left > 0 ? left / 1000 : 0;
}

int64_t vk_lock_fencing_token(const vk_lock *lock)
{
    return lock ? lock->fencing_token : 0;
}

const char *vk_lock_key(const vk_lock *lock, size_t *len)
{
    if (!lock) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = lock->keylen;
    return lock->key;
}

int vk_lock_is_lost(const vk_lock *lock)
{
    return lock ? atomic_load(&((vk_lock *)lock)->lost) : 0;
}

/* ---- automatic renewal ---------------------------------------------------------------- */

/* One renewer per renewed lock: it extends the lock by its expiry every
 * expiry/3 until told to stop, and marks the lock lost when an extension
 * fails. A third leaves two more tries' worth of time before expiry. */
typedef struct renewer {
    vk_lock *lock;
    vk_context *ctx;          /* cancelled on stop to cut an extension short */
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    unsigned fork_generation; /* the thread exists only in this process */
    bool stop;
} renewer;

static void deadline_after_ms(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *renewer_main(void *arg)
{
    renewer *r = arg;
    vk__events_enter_background();
    int64_t interval_ms = vk__lock_renew_interval_ms(r->lock);
    pthread_mutex_lock(&r->mutex);
    while (!r->stop) {
        struct timespec wake_at;
        deadline_after_ms(&wake_at, interval_ms);
        int rc = 0;
        while (!r->stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&r->wake, &r->mutex, &wake_at);
        if (r->stop)
            break;
        pthread_mutex_unlock(&r->mutex);
        vk_context_set_timeout_ms(r->ctx, interval_ms);
        vk_status st = vk_lock_extend(r->lock, r->ctx, r->lock->expiry_ms);
        pthread_mutex_lock(&r->mutex);
        if (st != VK_OK && !r->stop) {
            atomic_store(&r->lock->lost, 1);
            vk__lock_log(manager_events(r->lock->manager), VK_LOG_WARN, "lock renewal failed; the lock is lost",
                     r->lock->key, r->lock->keylen, vk_last_error());
            break;
        }
    }
    pthread_mutex_unlock(&r->mutex);
    return NULL;
}

/* Stops and joins a renewer of this process, then frees it. */
static void renewer_stop_and_free(renewer *r)
{
    pthread_mutex_lock(&r->mutex);
    r->stop = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mutex);
    vk_context_cancel(r->ctx);
    pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->mutex);
    vk_context_free(r->ctx);
    free(r);
}

vk_status vk_lock_auto_renew(vk_lock *lock)
{
    if (lock && lock->async_manager != NULL)
        return vk__async_lock_auto_renew(lock);
    vk_status st = check_handle(lock, "vk_lock_auto_renew");
    if (st != VK_OK)
        return st;
    if (lock->released)
        return vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");
    if (atomic_load(&lock->renewal) != NULL)
        return VK_OK;
    renewer *r = calloc(1, sizeof *r);
    if (!r)
        return vk__fail_nomem();
    r->lock = lock;
    r->fork_generation = vk__fork_generation();
    st = vk_context_new(&r->ctx);
    if (st != VK_OK) {
        free(r);
        return st;
    }
    vk__fork_watch();   /* so that a child can tell the thread is not its own */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&r->mutex, NULL);
    if (pthread_create(&r->thread, NULL, renewer_main, r) != 0) {
        pthread_cond_destroy(&r->wake);
        pthread_mutex_destroy(&r->mutex);
        vk_context_free(r->ctx);
        free(r);
        return vk__fail(VK_ERR_NO_MEMORY, "cannot start the lock renewal thread");
    }
    /* Install it unless a concurrent call installed its own meanwhile; the
     * thread is started first so that whoever installs a renewer installs
     * a running one, which renewal_stop() can always join. The loser's
     * thread is still in its first wait: it is stopped before it renews. */
    renewer *none = NULL;
    if (!atomic_compare_exchange_strong(&lock->renewal, &none, r))
        renewer_stop_and_free(r);
    return VK_OK;
}

/* Stops and joins the renewal thread, if any. In a forked child the thread
 * does not exist: its memory is dropped without touching its mutex, which
 * the parent's thread may have held at the fork. */
static void renewal_stop(vk_lock *lock)
{
    renewer *r = atomic_exchange(&lock->renewal, NULL);
    if (!r)
        return;
    if (r->fork_generation != vk__fork_generation()) {
        vk_context_free(r->ctx);
        free(r);
        return;
    }
    renewer_stop_and_free(r);
}

/* ---- with_lock ------------------------------------------------------------------------ */

/* Releases with its own budget, whatever state the caller's context is in.
 * The outcome is logged, not returned: with_lock reports fn's result. */
static void release_after_fn(vk_lock *lock)
{
    vk_context *ctx = cleanup_context();
    vk_lock_unlock(lock, ctx);
    vk_context_free(ctx);
}

static vk_status with_lock_traced(vk_lock_manager *manager, vk_context *ctx, const char *key,
                                  size_t keylen, const vk_lock_options *resolved,
                                  vk_lock_fn fn, void *userdata, int *attempts,
                                  const char **outcome_name);

vk_status vk_lock_manager_with_lock_options(vk_lock_manager *manager, vk_context *ctx,
                                            const char *key, size_t keylen,
                                            const vk_lock_options *opts, vk_lock_fn fn,
                                            void *userdata)
{
    vk_status st = check_manager_and_key(manager, key, keylen,
                                         "vk_lock_manager_with_lock_options");
    if (st != VK_OK)
        return st;
    if (!fn)
        return vk__fail_msg(VK_ERR_NIL_LOCK_FN, "lock function is nil");
    vk_lock_options resolved;
    st = vk__lock_options_resolve(&resolved, opts);
    if (st != VK_OK)
        return st;
    vk_lock_span span;
    vk__lock_span_start(&span, manager_events(manager), "redis.lock.with_lock", ctx, key,
                        keylen);
    int attempts = 0;
    const char *outcome = "error";
    st = with_lock_traced(manager, ctx, key, keylen, &resolved, fn, userdata, &attempts,
                          &outcome);
    vk__lock_span_end(&span, st, NULL, attempts, outcome);
    return st;
}

/* Acquires, runs fn, releases; *outcome_name: "released" (fn ran),
 * "contended" (held by another through every try), "lost" (fn ran but
 * the lock expired meanwhile) or "error". */
static vk_status with_lock_traced(vk_lock_manager *manager, vk_context *ctx, const char *key,
                                  size_t keylen, const vk_lock_options *resolved,
                                  vk_lock_fn fn, void *userdata, int *attempts,
                                  const char **outcome_name)
{
    vk_lock *lock = NULL;
    vk_lock_outcome outcome;
    vk_status st = acquire_with_retries(&lock, manager, ctx, key, keylen, resolved, &outcome,
                                        attempts);
    vk__lock_report_acquire(manager_events(manager), key, keylen, outcome);
    if (outcome == VK_LOCK_CONTENDED) {
        *outcome_name = "contended";
        return vk__lock_fail_acquire(VK_ERR_LOCK_ACQUIRE, key, keylen, "lock already taken");
    }
    if (outcome == VK_LOCK_FAULT) {
        /* Cancellation and deadlines keep their codes so that bindings
         * raise their own interrupt and timeout errors. */
        vk_status code = st == VK_ERR_CANCELLED || st == VK_ERR_TIMEOUT ? st
                                                                        : VK_ERR_LOCK_ACQUIRE;
        char *cause = vk__error_dup();
        st = vk__lock_fail_acquire(code, key, keylen, cause ? cause : vk_strerror(st));
        free(cause);
        return st;
    }

    if (resolved->auto_renew && (st = renew_or_give_back(lock)) != VK_OK)
        return st;
    vk_status fn_st = fn(userdata, lock);
    char *fn_detail = NULL;
    if (fn_st != VK_OK)
        fn_detail = vk_last_status() == fn_st ? vk__error_dup() : NULL;
    release_after_fn(lock);   /* stops the renewal first */
    bool lost = vk_lock_is_lost(lock);
    vk_lock_free(lock);

    /* fn finished, but another holder may have run beside it: the caller
     * must hear of it even if fn did not look. */
    *outcome_name = lost ? "lost" : "released";
    if (fn_st == VK_OK && lost)
        return vk__fail_msg(VK_ERR_LOCK_LOST, "lock was lost while held");
    if (fn_st == VK_OK)
        return VK_OK;
    st = vk__fail_msg(VK_ERR_LOCK_FN, "distributed lock: function execution: %s",
                      fn_detail ? fn_detail : vk_strerror(fn_st));
    free(fn_detail);
    return st;
}

vk_status vk_lock_manager_with_lock(vk_lock_manager *manager, vk_context *ctx,
                                    const char *key, size_t keylen, vk_lock_fn fn,
                                    void *userdata)
{
    return vk_lock_manager_with_lock_options(manager, ctx, key, keylen, NULL, fn, userdata);
}
