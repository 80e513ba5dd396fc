/*
 * The distributed lock (Redlock over one or more independent nodes), its
 * handles, TryLock / WithLock and automatic renewal. SEMANTICS §4 is the
 * contract.
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
#include "topology/cluster.h"
#include "lock/lock_options.h"
#include "lock/lock_scripts.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

/* A quorum is tracked in a 64-bit mask, one bit per node. */
#define VK_LOCK_MAX_NODES 64
/* The budget of a release that must happen whatever the caller's context. */
#define VK_LOCK_RELEASE_BUDGET_MS 5000
/* Redlock's allowance for clock drift on top of expiry * drift_factor. */
#define VK_LOCK_DRIFT_FLOOR_MS 2

struct vk_lock_manager {
    atomic_int refs;          /* the owner plus one per live handle */
    size_t count;
    size_t quorum;            /* count / 2 + 1 */
    vk_client *clients[];     /* each referenced */
};

struct vk_lock {
    vk_lock_manager *manager; /* referenced */
    const char *key;          /* both strings live in this allocation */
    size_t keylen;
    const char *fencing_key;
    size_t fencing_keylen;
    char value[33];           /* 128 random bits, hex */
    int64_t expiry_ms;
    double drift_factor;
    int64_t acquired_at_us;
    atomic_int_fast64_t valid_until_us; /* 0 once released */
    atomic_int lost;
    int64_t fencing_token;
    uint64_t held;            /* bit i: node i granted the lock */
    bool released;
    /* Running automatic renewal, or NULL. Atomic: two threads may ask for
     * it at once, and only one renewer may be installed. */
    _Atomic(struct renewer *) renewal;
};

/* ---- scripts -------------------------------------------------------------- */

typedef enum script_id {
    SCRIPT_RAISE,
    SCRIPT_RELEASE,
    SCRIPT_EXTEND,
    SCRIPT_COUNT
} script_id;

static const char *const script_source[SCRIPT_COUNT] = {
    VK_LOCK_SCRIPT_RAISE, VK_LOCK_SCRIPT_RELEASE, VK_LOCK_SCRIPT_EXTEND,
};

static char script_sha[SCRIPT_COUNT][41];
static pthread_once_t script_sha_once = PTHREAD_ONCE_INIT;

static void hex_encode(char *out, const unsigned char *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The server names a cached script by the SHA-1 of its source, so the
 * names are known without asking the server. */
static void compute_script_shas(void)
{
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (EVP_Digest(script_source[i], strlen(script_source[i]), digest, &len,
                       EVP_sha1(), NULL) != 1 || len != 20) {
            script_sha[i][0] = '\0'; /* run_script then always uses EVAL */
            continue;
        }
        hex_encode(script_sha[i], digest, 20);
    }
}

/* An error reply as this thread's failure. */
static vk_status fail_with_error_reply(const vk_reply *reply)
{
    size_t len = 0;
    const char *text = vk_reply_get_string(reply, &len);
    return vk__fail(VK_ERR_SERVER, "%.*s", (int)len, text ? text : "");
}

static bool is_noscript(const vk_reply *reply)
{
    size_t len = 0;
    const char *text = vk_reply_get_string(reply, &len);
    return text && len >= 8 && memcmp(text, "NOSCRIPT", 8) == 0;
}

/*
 * Runs one lock script on one client with the lock's two keys and stores
 * its integer result. EVALSHA first; when the server does not know the
 * script (first use, a restart, SCRIPT FLUSH) it answers NOSCRIPT and the
 * script is sent with EVAL, which also caches it: later calls are one
 * EVALSHA round trip again. This is SCRIPT LOAD folded into the first call.
 */
static vk_status run_script(vk_client *client, vk_context *ctx, script_id id,
                            const vk_lock *lock, int nargs, const char *const *args,
                            long long *result)
{
    if (!vk__client_alive(client))
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    pthread_once(&script_sha_once, compute_script_shas);

    const char *argv[8];
    size_t argvlen[8];
    argv[2] = "2";
    argvlen[2] = 1;
    argv[3] = lock->key;
    argvlen[3] = lock->keylen;
    argv[4] = lock->fencing_key;
    argvlen[4] = lock->fencing_keylen;
    for (int i = 0; i < nargs; i++) {
        argv[5 + i] = args[i];
        argvlen[5 + i] = strlen(args[i]);
    }
    bool by_sha = script_sha[id][0] != '\0';
    for (;;) {
        argv[0] = by_sha ? "EVALSHA" : "EVAL";
        argvlen[0] = by_sha ? 7 : 4;
        argv[1] = by_sha ? script_sha[id] : script_source[id];
        argvlen[1] = strlen(argv[1]);

        vk_reply *reply = NULL;
        vk_status st = vk_client_command(&reply, client, ctx, 5 + nargs, argv, argvlen);
        if (st != VK_OK)
            return st;
        vk_reply_type type = vk_reply_get_type(reply);
        if (type == VK_REPLY_INTEGER) {
            *result = vk_reply_get_integer(reply);
            vk_reply_free(reply);
            return VK_OK;
        }
        if (type == VK_REPLY_ERROR && by_sha && is_noscript(reply)) {
            vk_reply_free(reply);
            by_sha = false;
            continue;
        }
        if (type == VK_REPLY_ERROR) {
            st = fail_with_error_reply(reply);
        } else {
            st = vk__fail(VK_ERR_PROTOCOL, "unexpected reply type %d to a lock script",
                          (int)type);
        }
        vk_reply_free(reply);
        return st;
    }
}

/*
 * One node's part of an acquisition: SET key value NX PX expiry and INCR of
 * the fencing counter, pipelined (one round trip, and no script for the
 * server to run). *token is the counter's new value when the SET took the
 * lock, else 0.
 *
 * The counter moves on every attempt, granted or not: tokens must only
 * grow, not be consecutive. Another client's SET cannot succeed between
 * our SET and our INCR unless our key expired in between, and then this
 * attempt's validity (expiry less the time taken) is gone and it fails.
 */
static vk_status set_and_count(vk_client *client, vk_context *ctx, const vk_lock *lock,
                               const char *expiry, long long *token)
{
    *token = 0;
    if (!vk__client_alive(client))
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    const char *set[] = { "SET", lock->key, lock->value, "NX", "PX", expiry };
    const size_t set_len[] = { 3, lock->keylen, strlen(lock->value), 2, 2, strlen(expiry) };
    const char *incr[] = { "INCR", lock->fencing_key };
    const size_t incr_len[] = { 4, lock->fencing_keylen };
    vk_pipeline *pipeline = NULL;
    vk_reply *replies = NULL;
    vk_status st = vk_pipeline_new(&pipeline, client);
    if (st == VK_OK && (st = vk_pipeline_append(pipeline, 6, set, set_len)) == VK_OK &&
        (st = vk_pipeline_append(pipeline, 2, incr, incr_len)) == VK_OK)
        st = vk_pipeline_exec(&replies, pipeline, ctx);
    vk_pipeline_free(pipeline);
    if (st != VK_OK)
        return st;
    const vk_reply *set_reply = vk_reply_get_element(replies, 0);
    const vk_reply *incr_reply = vk_reply_get_element(replies, 1);
    const vk_reply *failed = vk_reply_get_type(set_reply) == VK_REPLY_ERROR    ? set_reply
                             : vk_reply_get_type(incr_reply) == VK_REPLY_ERROR ? incr_reply
                                                                               : NULL;
    if (failed != NULL) {
        st = fail_with_error_reply(failed);
    } else if (vk_reply_get_type(incr_reply) != VK_REPLY_INTEGER) {
        st = vk__fail(VK_ERR_PROTOCOL, "unexpected reply type %d to INCR of a fencing counter",
                      (int)vk_reply_get_type(incr_reply));
    } else if (vk_reply_get_type(set_reply) != VK_REPLY_NIL) {
        /* OK: ours. (NIL: held by someone else.) */
        *token = vk_reply_get_integer(incr_reply);
    }
    vk_reply_free(replies);
    return st;
}

/* ---- events ----------------------------------------------------------------- */

static vk_events *manager_events(const vk_lock_manager *m)
{
    vk_client *first = m->clients[0];
    return vk__client_alive(first) ? vk__client_events(first) : NULL;
}

/* Logs with the key quoted as SEMANTICS §4 asks; costs nothing without a
 * logger. */
static void log_lock(const vk_lock_manager *m, vk_log_level level, const char *message,
                     const char *key, size_t keylen, const char *error)
{
    vk_events *ev = manager_events(m);
    if (!ev || !vk__events_has_logger(ev))
        return;
    char *quoted = vk__quote_key(key, keylen);
    vk_field fields[2] = { { "key", quoted ? quoted : "" }, { "error", error } };
    vk__log(ev, level, message, fields, error ? 2 : 1);
    free(quoted);
}

static void count_metric(const vk_lock_manager *m, const char *name, const char *result)
{
    vk_events *ev = manager_events(m);
    if (!ev || !vk__events_has_metrics(ev))
        return;
    vk_field label = { "result", result };
    vk__metric(ev, name, VK_METRIC_COUNTER, 1.0, &label, 1);
}

static void observe_hold(const vk_lock *lock)
{
    vk_events *ev = manager_events(lock->manager);
    if (!ev || !vk__events_has_metrics(ev))
        return;
    double seconds = (double)(vk__now_us() - lock->acquired_at_us) / 1e6;
    vk__metric(ev, "redis_lock_hold_seconds", VK_METRIC_HISTOGRAM, seconds, NULL, 0);
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

static bool key_is_blank(const char *key, size_t keylen)
{
    if (!key)
        return true;
    for (size_t i = 0; i < keylen; i++)
        if (!isspace((unsigned char)key[i]))
            return false;
    return true;
}

/* True when the key has a cluster hash tag: a '{' followed later by a '}'
 * with at least one byte between them (the cluster's own rule). */
static bool has_hash_tag(const char *key, size_t keylen)
{
    const char *open = memchr(key, '{', keylen);
    if (!open)
        return false;
    size_t rest = keylen - (size_t)(open - key) - 1;
    const char *close = memchr(open + 1, '}', rest);
    return close && close > open + 1;
}

/*
 * The fencing counter's key is "<head><key><tail>". It must live in the lock
 * key's cluster slot so that one script can touch both:
 *   - "<key>:fencing" when the key has a hash tag (the tag decides);
 *   - "{<key>}:fencing" otherwise: the whole key becomes the tag, as the
 *     whole key decides its own slot;
 *   - "{<n>}:fencing:<key>" for a key with a '}' but no tag, which cannot
 *     be wrapped: n is the smallest number whose slot is the key's (every
 *     slot has one below 110,000, a few microseconds of CRC16 at most).
 */
static void fencing_key_parts(const char *key, size_t keylen, char *head, size_t head_size,
                              const char **tail)
{
    if (has_hash_tag(key, keylen)) {
        head[0] = '\0';
        *tail = ":fencing";
    } else if (memchr(key, '}', keylen) == NULL) {
        snprintf(head, head_size, "{");
        *tail = "}:fencing";
    } else {
        unsigned slot = vk__cluster_key_slot(key, keylen);
        char n[16];
        for (unsigned i = 0;; i++) {
            int len = snprintf(n, sizeof n, "%u", i);
            if (vk__cluster_key_slot(n, (size_t)len) == slot)
                break;
        }
        snprintf(head, head_size, "{%s}:fencing:", n);
        *tail = "";
    }
}

/* One allocation: the handle, the key and the fencing-counter key. */
static vk_lock *new_lock(vk_lock_manager *m, const char *key, size_t keylen,
                         const vk_lock_options *opts)
{
    char head[32];
    const char *tail;
    fencing_key_parts(key, keylen, head, sizeof head, &tail);
    size_t head_len = strlen(head), tail_len = strlen(tail);
    size_t fencing_len = head_len + keylen + tail_len;
    vk_lock *lock = malloc(sizeof *lock + keylen + 1 + fencing_len + 1);
    if (!lock)
        return NULL;
    char *key_copy = (char *)(lock + 1);
    memcpy(key_copy, key, keylen);
    key_copy[keylen] = '\0';
    char *fencing = key_copy + keylen + 1;
    memcpy(fencing, head, head_len);
    memcpy(fencing + head_len, key, keylen);
    memcpy(fencing + head_len + keylen, tail, tail_len + 1); /* with its NUL */

    lock->manager = m;
    atomic_fetch_add(&m->refs, 1);
    lock->key = key_copy;
    lock->keylen = keylen;
    lock->fencing_key = fencing;
    lock->fencing_keylen = fencing_len;
    lock->value[0] = '\0';
    lock->expiry_ms = opts->expiry_ms;
    lock->drift_factor = opts->drift_factor;
    lock->acquired_at_us = 0;
    atomic_init(&lock->valid_until_us, 0);
    atomic_init(&lock->lost, 0);
    lock->fencing_token = 0;
    lock->held = 0;
    lock->released = false;
    atomic_init(&lock->renewal, NULL);
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
    renewal_stop(lock);
    manager_unref(lock->manager);
    free(lock);
}

/* The milliseconds left of expiry_ms after `elapsed_us`, less Redlock's
 * drift allowance; <= 0 means the lock cannot be trusted. */
static int64_t remaining_validity_ms(const vk_lock *lock, int64_t expiry_ms,
                                     int64_t elapsed_us)
{
    int64_t drift_ms = (int64_t)((double)expiry_ms * lock->drift_factor) +
                       VK_LOCK_DRIFT_FLOOR_MS;
    return expiry_ms - elapsed_us / 1000 - drift_ms;
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

/* Compare-and-delete on the nodes in `nodes`; counts the nodes where the
 * lock was ours and the faults. The first fault's code is returned (its
 * detail is on this thread); VK_OK when no node failed. */
static vk_status release_on(vk_lock *lock, vk_context *ctx, uint64_t nodes,
                            size_t *released, size_t *faults)
{
    const char *args[1] = { lock->value };
    vk_status first_fault = VK_OK;
    char *fault_detail = NULL;
    *released = 0;
    *faults = 0;
    for (size_t i = 0; i < lock->manager->count; i++) {
        if (!(nodes & ((uint64_t)1 << i)))
            continue;
        long long result = 0;
        vk_status st = run_script(lock->manager->clients[i], ctx, SCRIPT_RELEASE, lock, 1,
                                  args, &result);
        if (st == VK_OK) {
            if (result == 1)
                (*released)++;
        } else {
            (*faults)++;
            if (first_fault == VK_OK) {
                first_fault = st;
                fault_detail = vk__error_dup();
            }
        }
    }
    if (first_fault != VK_OK) {
        vk__fail_restore(first_fault, fault_detail);
        free(fault_detail);
    }
    return first_fault;
}

static void new_lock_value(char out[33], bool *ok)
{
    unsigned char bytes[16];
    *ok = vk__random_bytes(bytes, sizeof bytes) == 0;
    hex_encode(out, bytes, sizeof bytes);
}

/*
 * One Redlock attempt. On VK_OK, *acquired tells whether the lock is ours
 * (validity and fencing token set). A non-OK return is a fault that kept a
 * majority out of reach (its detail is on this thread); plain contention
 * is VK_OK with *acquired false.
 *
 * Fencing tokens: each node's counter only ever grows (INCR, or a raise to
 * a larger value). The token T is the largest counter over the nodes that
 * granted the lock, and before success every node we count as held has its
 * counter raised to at least T, so a majority of nodes carry a counter
 * >= T. Any later acquisition needs a majority too, and two majorities
 * share a node: there its INCR yields more than T, and its token is the
 * maximum over its nodes, so it is > T. Tokens therefore never go back,
 * whichever majority the next holder reaches. On one node (or when all
 * counters agree) the raise costs nothing: it runs only where a node's
 * counter is below T.
 */
static vk_status acquire_once(vk_lock *lock, vk_context *ctx, bool *acquired)
{
    vk_lock_manager *m = lock->manager;
    *acquired = false;
    bool random_ok = false;
    new_lock_value(lock->value, &random_ok);
    if (!random_ok)
        return vk__fail(VK_ERR_IO, "the random number generator failed");

    char expiry[24];
    snprintf(expiry, sizeof expiry, "%lld", (long long)lock->expiry_ms);

    long long tokens[VK_LOCK_MAX_NODES];
    uint64_t held = 0, faulted = 0;
    size_t granted = 0, faults = 0;
    long long top = 0;
    vk_status first_fault = VK_OK;
    char *fault_detail = NULL;

    int64_t start_us = vk__now_us();
    for (size_t i = 0; i < m->count; i++) {
        long long token = 0;
        vk_status st = set_and_count(m->clients[i], ctx, lock, expiry, &token);
        if (st == VK_OK && token > 0) {
            held |= (uint64_t)1 << i;
            tokens[i] = token;
            granted++;
            if (token > top)
                top = token;
        } else if (st != VK_OK) {
            /* The SET may have run before the reply was lost: clean it up
             * with the rest if the attempt fails. */
            faulted |= (uint64_t)1 << i;
            faults++;
            if (first_fault == VK_OK) {
                first_fault = st;
                fault_detail = vk__error_dup();
            }
        }
    }

    if (granted >= m->quorum && m->count > 1) {
        char floor[24];
        snprintf(floor, sizeof floor, "%lld", top);
        const char *raise_args[2] = { lock->value, floor };
        for (size_t i = 0; i < m->count; i++) {
            if (!(held & ((uint64_t)1 << i)) || tokens[i] >= top)
                continue;
            long long ours = 0;
            vk_status st = run_script(m->clients[i], ctx, SCRIPT_RAISE, lock, 2, raise_args,
                                      &ours);
            if (st != VK_OK || ours != 1) {
                /* Not raised: this node may not count towards the majority. */
                held &= ~((uint64_t)1 << i);
                faulted |= (uint64_t)1 << i;
                granted--;
            }
        }
    }

    int64_t validity = remaining_validity_ms(lock, lock->expiry_ms, vk__now_us() - start_us);
    if (granted >= m->quorum && validity > 0) {
        free(fault_detail);
        lock->held = held;
        lock->fencing_token = top;
        lock->acquired_at_us = start_us;
        atomic_store(&lock->valid_until_us, start_us + validity * 1000);
        lock->released = false;
        *acquired = true;
        return VK_OK;
    }

    /* Give back what was taken, even if the caller's context is done. */
    uint64_t to_release = held | faulted;
    if (to_release) {
        vk_context *cleanup = cleanup_context();
        size_t released = 0, release_faults = 0;
        release_on(lock, cleanup, to_release, &released, &release_faults);
        vk_context_free(cleanup);
    }
    /* A fault is the cause when the failed nodes could have made the
     * majority; otherwise other holders did (contention). */
    if (first_fault != VK_OK && granted + faults >= m->quorum) {
        vk_status st = vk__fail_restore(first_fault, fault_detail);
        free(fault_detail);
        return st;
    }
    free(fault_detail);
    return VK_OK;
}

/* ---- acquire ------------------------------------------------------------------------ */

static vk_status check_manager_and_key(vk_lock_manager *manager, const char *key,
                                       size_t keylen, const char *function)
{
    if (!manager) {
        vk__misuse(function, "lock manager is nil");
        return vk__fail_msg(VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil");
    }
    if (key_is_blank(key, keylen))
        return vk__fail_msg(VK_ERR_EMPTY_LOCK_KEY, "lock key cannot be empty");
    return VK_OK;
}

/* The sleep between tries: uniform in [delay/2, delay*3/2), so contenders
 * that collided once do not collide again in step. */
static int64_t jittered_delay_ms(int64_t delay_ms)
{
    return delay_ms / 2 + vk__jitter(delay_ms);
}

typedef enum acquire_outcome {
    OUTCOME_ACQUIRED,
    OUTCOME_CONTENDED,
    OUTCOME_FAULT
} acquire_outcome;

/*
 * Tries up to opts->tries times. OUTCOME_FAULT returns the fault's code
 * (its detail on this thread); a cancelled or expired context stops the
 * retries at once.
 */
static vk_status acquire_with_retries(vk_lock **out, vk_lock_manager *m, vk_context *ctx,
                                      const char *key, size_t keylen,
                                      const vk_lock_options *opts, acquire_outcome *outcome)
{
    *out = NULL;
    vk_lock *lock = new_lock(m, key, keylen, opts);
    if (!lock) {
        *outcome = OUTCOME_FAULT;
        return vk__fail_nomem();
    }
    vk_status last_fault = VK_OK;
    char *last_detail = NULL;
    for (int attempt = 0; attempt < opts->tries; attempt++) {
        if (attempt > 0 && opts->retry_delay_ms > 0) {
            vk_status st = vk__ctx_sleep_ms(ctx, jittered_delay_ms(opts->retry_delay_ms));
            if (st != VK_OK) {
                free(last_detail);
                vk_lock_free(lock);
                *outcome = OUTCOME_FAULT;
                return st;
            }
        }
        bool acquired = false;
        vk_status st = acquire_once(lock, ctx, &acquired);
        if (st == VK_OK && acquired) {
            free(last_detail);
            *outcome = OUTCOME_ACQUIRED;
            *out = lock;
            return VK_OK;
        }
        if (st != VK_OK) {
            /* The caller's context ending stops the retries at once. */
            vk_status ctx_st = vk__ctx_check(ctx);
            if (ctx_st != VK_OK) {
                free(last_detail);
                vk_lock_free(lock);
                *outcome = OUTCOME_FAULT;
                return ctx_st;
            }
            free(last_detail);
            last_fault = st;
            last_detail = vk__error_dup();
        } else {
            free(last_detail);
            last_detail = NULL;
            last_fault = VK_OK;
        }
    }
    vk_lock_free(lock);
    if (last_fault != VK_OK) {
        *outcome = OUTCOME_FAULT;
        vk_status st = vk__fail_restore(last_fault, last_detail);
        free(last_detail);
        return st;
    }
    *outcome = OUTCOME_CONTENDED;
    return VK_OK;
}

static const char *outcome_label(acquire_outcome outcome)
{
    switch (outcome) {
    case OUTCOME_ACQUIRED: return "acquired";
    case OUTCOME_CONTENDED: return "contended";
    default: return "error";
    }
}

static void report_acquire(vk_lock_manager *m, const char *key, size_t keylen,
                           acquire_outcome outcome)
{
    count_metric(m, "redis_lock_acquisitions_total", outcome_label(outcome));
    if (outcome == OUTCOME_ACQUIRED)
        log_lock(m, VK_LOG_DEBUG, "lock acquired", key, keylen, NULL);
    else if (outcome == OUTCOME_CONTENDED)
        log_lock(m, VK_LOG_DEBUG, "lock already taken", key, keylen, NULL);
    else
        log_lock(m, VK_LOG_WARN, "lock acquisition failed", key, keylen, vk_last_error());
}

/* "failed to acquire lock <quoted key>: <cause>" with `code`. */
static vk_status fail_acquire(vk_status code, const char *key, size_t keylen,
                              const char *cause)
{
    char *quoted = vk__quote_key(key, keylen);
    vk_status st = vk__fail_msg(code, "failed to acquire lock %s: %s",
                                quoted ? quoted : "\"\"", cause);
    free(quoted);
    return st;
}

/* "failed to attempt lock acquisition for <quoted key>: <cause>": a
 * try_lock fault (contention is no error), with the cause's code. A freed
 * client is misuse, not a fault, and keeps its own text. */
static vk_status fail_attempt(vk_status code, const char *key, size_t keylen)
{
    if (code == VK_ERR_NIL_CLIENT)
        return code;
    char *cause = vk__error_dup();
    char *quoted = vk__quote_key(key, keylen);
    vk_status st = vk__fail_msg(code, "failed to attempt lock acquisition for %s: %s",
                                quoted ? quoted : "\"\"", cause ? cause : vk_strerror(code));
    free(quoted);
    free(cause);
    return st;
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
    acquire_outcome outcome;
    st = acquire_with_retries(out, manager, ctx, key, keylen, &opts, &outcome);
    report_acquire(manager, key, keylen, outcome);
    return outcome == OUTCOME_FAULT ? fail_attempt(st, key, keylen) : st;
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
    acquire_outcome outcome;
    st = acquire_with_retries(out, manager, ctx, key, keylen, &resolved, &outcome);
    report_acquire(manager, key, keylen, outcome);
    if (outcome == OUTCOME_CONTENDED)
        return fail_acquire(VK_ERR_LOCK_ACQUIRE, key, keylen, "lock already taken");
    if (st == VK_OK && resolved.auto_renew && (st = renew_or_give_back(*out)) != VK_OK)
        *out = NULL;
    return st;
}

/* ---- release, extend ----------------------------------------------------------------- */

static bool lock_is_usable(const vk_lock *lock)
{
    return lock && lock->manager && lock->value[0] != '\0';
}

vk_status vk_lock_unlock(vk_lock *lock, vk_context *ctx)
{
    if (!lock_is_usable(lock)) {
        vk__misuse("vk_lock_unlock", "lock handle is nil or not initialized");
        return vk__fail_msg(VK_ERR_NIL_LOCK_HANDLE, "lock handle is nil or not initialized");
    }
    vk_lock_manager *m = lock->manager;
    /* Before the release: a renewal racing it could re-extend a freed key. */
    renewal_stop(lock);
    if (lock->released)
        return vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");

    /* Every node, not only those that granted: one whose reply was lost
     * may hold our value too. The script leaves other holders alone. */
    uint64_t all = m->count == VK_LOCK_MAX_NODES ? UINT64_MAX
                                                  : (((uint64_t)1 << m->count) - 1);
    size_t released = 0, faults = 0;
    vk_status fault = release_on(lock, ctx, all, &released, &faults);
    vk_status st;
    if (released >= m->quorum) {
        st = VK_OK;
    } else if (fault != VK_OK && released + faults >= m->quorum) {
        /* The outcome is unknown: keep the handle releasable. */
        count_metric(m, "redis_lock_release_total", "error");
        log_lock(m, VK_LOG_WARN, "lock release failed", lock->key, lock->keylen,
                 vk_last_error());
        if (fault == VK_ERR_NIL_CLIENT)
            return fault;   /* misuse keeps its own text */
        char *cause = vk__error_dup();
        vk__fail_msg(fault, "distributed lock: unlock: %s", cause ? cause : vk_strerror(fault));
        free(cause);
        return fault;
    } else {
        st = vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");
    }
    observe_hold(lock);
    lock->released = true;
    atomic_store(&lock->valid_until_us, 0);
    count_metric(m, "redis_lock_release_total", st == VK_OK ? "released" : "not_held");
    log_lock(m, st == VK_OK ? VK_LOG_DEBUG : VK_LOG_WARN,
             st == VK_OK ? "lock released" : "lock was not held or already expired",
             lock->key, lock->keylen, NULL);
    return st;
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
    if (!lock_is_usable(lock)) {
        vk__misuse("vk_lock_extend", "lock handle is nil or not initialized");
        return vk__fail_msg(VK_ERR_NIL_LOCK_HANDLE, "lock handle is nil or not initialized");
    }
    if (expiry_ms <= 0)
        return vk__fail_msg(VK_ERR_LOCK_EXPIRY_INVALID, "lock expiry must be greater than 0");
    if (lock->released)
        return vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");

    vk_lock_manager *m = lock->manager;
    char expiry[24];
    snprintf(expiry, sizeof expiry, "%lld", (long long)expiry_ms);
    const char *args[2] = { lock->value, expiry };
    size_t extended = 0, faults = 0;
    vk_status first_fault = VK_OK;
    char *fault_detail = NULL;
    int64_t start_us = vk__now_us();
    for (size_t i = 0; i < m->count; i++) {
        long long result = 0;
        vk_status st = run_script(m->clients[i], ctx, SCRIPT_EXTEND, lock, 2, args, &result);
        if (st == VK_OK && result == 1) {
            extended++;
        } else if (st != VK_OK) {
            faults++;
            if (first_fault == VK_OK) {
                first_fault = st;
                fault_detail = vk__error_dup();
            }
        }
    }
    int64_t validity = remaining_validity_ms(lock, expiry_ms, vk__now_us() - start_us);
    if (extended >= m->quorum && validity > 0) {
        free(fault_detail);
        atomic_store(&lock->valid_until_us, start_us + validity * 1000);
        return VK_OK;
    }
    if (first_fault != VK_OK && extended + faults >= m->quorum) {
        vk_status st = vk__fail_restore(first_fault, fault_detail);
        free(fault_detail);
        return st;
    }
    free(fault_detail);
    return vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");
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
    int64_t interval_ms = r->lock->expiry_ms / 3 > 0 ? r->lock->expiry_ms / 3 : 1;
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
            log_lock(r->lock->manager, VK_LOG_WARN, "lock renewal failed; the lock is lost",
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
    if (!lock_is_usable(lock)) {
        vk__misuse("vk_lock_auto_renew", "lock handle is nil or not initialized");
        return vk__fail_msg(VK_ERR_NIL_LOCK_HANDLE, "lock handle is nil or not initialized");
    }
    if (lock->released)
        return vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");
    if (atomic_load(&lock->renewal) != NULL)
        return VK_OK;
    renewer *r = calloc(1, sizeof *r);
    if (!r)
        return vk__fail_nomem();
    r->lock = lock;
    r->fork_generation = vk__fork_generation();
    vk_status st = vk_context_new(&r->ctx);
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

    vk_lock *lock = NULL;
    acquire_outcome outcome;
    st = acquire_with_retries(&lock, manager, ctx, key, keylen, &resolved, &outcome);
    report_acquire(manager, key, keylen, outcome);
    if (outcome == OUTCOME_CONTENDED)
        return fail_acquire(VK_ERR_LOCK_ACQUIRE, key, keylen, "lock already taken");
    if (outcome == OUTCOME_FAULT) {
        /* Cancellation and deadlines keep their codes so that bindings
         * raise their own interrupt and timeout errors. */
        vk_status code = st == VK_ERR_CANCELLED || st == VK_ERR_TIMEOUT ? st
                                                                        : VK_ERR_LOCK_ACQUIRE;
        char *cause = vk__error_dup();
        st = fail_acquire(code, key, keylen, cause ? cause : vk_strerror(st));
        free(cause);
        return st;
    }

    if (resolved.auto_renew && (st = renew_or_give_back(lock)) != VK_OK)
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
