/*
 * Every rule of the lock that decides (lock_rules.h): its keys and values, the
 * requests and how their replies read, the quorum, the fencing token, the
 * drift allowance, the retry rule, and the texts, logs and metrics of the
 * outcomes. The blocking and event-loop managers both run on these.
 */
#include "lock/lock_rules.h"
#include "lock/lock_scripts.h"
#include "proto/proto.h"
#include "topology/cluster.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Redlock's allowance for clock drift on top of expiry * drift_factor. */
#define VK_LOCK_DRIFT_FLOOR_MS 2

/* ---- handles -------------------------------------------------------------- */

bool vk__lock_key_is_blank(const char *key, size_t keylen)
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

vk_lock *vk__lock_new(const char *key, size_t keylen, const vk_lock_options *opts)
{
    char head[32];
    const char *tail;
    fencing_key_parts(key, keylen, head, sizeof head, &tail);
    size_t head_len = strlen(head), tail_len = strlen(tail);
    size_t fencing_len = head_len + keylen + tail_len;
    vk_lock *lock = calloc(1, sizeof *lock + keylen + 1 + fencing_len + 1);
    if (!lock)
        return NULL;
    char *key_copy = (char *)(lock + 1);
    memcpy(key_copy, key, keylen);
    key_copy[keylen] = '\0';
    char *fencing = key_copy + keylen + 1;
    memcpy(fencing, head, head_len);
    memcpy(fencing + head_len, key, keylen);
    memcpy(fencing + head_len + keylen, tail, tail_len + 1); /* with its NUL */

    lock->key = key_copy;
    lock->keylen = keylen;
    lock->fencing_key = fencing;
    lock->fencing_keylen = fencing_len;
    lock->expiry_ms = opts->expiry_ms;
    lock->drift_factor = opts->drift_factor;
    atomic_init(&lock->valid_until_us, 0);
    atomic_init(&lock->lost, 0);
    atomic_init(&lock->renewal, NULL);
    return lock;
}

static void hex_encode(char *out, const unsigned char *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

vk_status vk__lock_new_value(vk_lock *lock)
{
    unsigned char bytes[16];
    bool ok = vk__random_bytes(bytes, sizeof bytes) == 0;
    hex_encode(lock->value, bytes, sizeof bytes);
    return ok ? VK_OK : vk__fail(VK_ERR_IO, "the random number generator failed");
}

int64_t vk__lock_remaining_validity_ms(const vk_lock *lock, int64_t expiry_ms,
                                       int64_t elapsed_us)
{
    int64_t drift_ms = (int64_t)((double)expiry_ms * lock->drift_factor) +
                       VK_LOCK_DRIFT_FLOOR_MS;
    return expiry_ms - elapsed_us / 1000 - drift_ms;
}

/* Contenders that collided once do not collide again in step. */
int64_t vk__lock_jittered_delay_ms(int64_t delay_ms)
{
    return delay_ms / 2 + vk__jitter(delay_ms);
}

/* A third leaves two more tries' worth of time before expiry. */
int64_t vk__lock_renew_interval_ms(const vk_lock *lock)
{
    return lock->expiry_ms / 3 > 0 ? lock->expiry_ms / 3 : 1;
}

/* ---- requests and replies ------------------------------------------------ */

static const char *const script_source[VK_LOCK_SCRIPT_COUNT] = {
    VK_LOCK_SCRIPT_RAISE, VK_LOCK_SCRIPT_RELEASE, VK_LOCK_SCRIPT_EXTEND,
};

static char script_sha[VK_LOCK_SCRIPT_COUNT][41];
static pthread_once_t script_sha_once = PTHREAD_ONCE_INIT;

/* EVALSHA needs each script's SHA-1; without it (a FIPS-only OpenSSL) the
 * scripts go by source every time. */
static void compute_script_shas(void)
{
    for (int i = 0; i < VK_LOCK_SCRIPT_COUNT; i++)
        vk__script_sha1_hex(script_source[i], strlen(script_source[i]), script_sha[i]);
}

void vk__lock_grant_argv(const vk_lock *lock, char expiry[24], const char **set_argv,
                         size_t *set_len, const char **incr_argv, size_t *incr_len)
{
    snprintf(expiry, 24, "%lld", (long long)lock->expiry_ms);
    const char *set[VK_LOCK_SET_ARGC] = { "SET", lock->key, lock->value, "NX", "PX", expiry };
    const size_t set_lens[VK_LOCK_SET_ARGC] = { 3, lock->keylen, strlen(lock->value), 2, 2,
                                                strlen(expiry) };
    memcpy(set_argv, set, sizeof set);
    memcpy(set_len, set_lens, sizeof set_lens);
    incr_argv[0] = "INCR";
    incr_len[0] = 4;
    incr_argv[1] = lock->fencing_key;
    incr_len[1] = lock->fencing_keylen;
}

/* An error reply as this thread's failure. */
static vk_status fail_with_error_reply(const vk_reply *reply)
{
    size_t len = 0;
    const char *text = vk_reply_get_string(reply, &len);
    return vk__fail(VK_ERR_SERVER, "%.*s", (int)len, text ? text : "");
}

vk_status vk__lock_grant_result(const vk_reply *set_reply, const vk_reply *incr_reply,
                                long long *token)
{
    *token = 0;
    if (vk_reply_get_type(set_reply) == VK_REPLY_ERROR)
        return fail_with_error_reply(set_reply);
    if (vk_reply_get_type(incr_reply) == VK_REPLY_ERROR)
        return fail_with_error_reply(incr_reply);
    if (vk_reply_get_type(incr_reply) != VK_REPLY_INTEGER)
        return vk__fail(VK_ERR_PROTOCOL, "unexpected reply type %d to INCR of a fencing counter",
                        (int)vk_reply_get_type(incr_reply));
    if (vk_reply_get_type(set_reply) != VK_REPLY_NIL)   /* OK: ours; NIL: another's */
        *token = vk_reply_get_integer(incr_reply);
    return VK_OK;
}

bool vk__lock_script_has_sha(vk_lock_script id)
{
    pthread_once(&script_sha_once, compute_script_shas);
    return script_sha[id][0] != '\0';
}

int vk__lock_script_argv(const vk_lock *lock, vk_lock_script id, bool by_sha, int nargs,
                         const char *const *args, const char **argv, size_t *argvlen)
{
    pthread_once(&script_sha_once, compute_script_shas);
    argv[0] = by_sha ? "EVALSHA" : "EVAL";
    argvlen[0] = by_sha ? 7 : 4;
    argv[1] = by_sha ? script_sha[id] : script_source[id];
    argvlen[1] = strlen(argv[1]);
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
    return 5 + nargs;
}

vk_status vk__lock_script_result(const vk_reply *reply, bool by_sha, long long *result,
                                 bool *resend_by_source)
{
    *resend_by_source = false;
    vk_reply_type type = vk_reply_get_type(reply);
    if (type == VK_REPLY_INTEGER) {
        *result = vk_reply_get_integer(reply);
        return VK_OK;
    }
    if (type == VK_REPLY_ERROR && by_sha && vk__reply_is_noscript((const redisReply *)reply)) {
        *resend_by_source = true;
        return VK_OK;
    }
    if (type == VK_REPLY_ERROR)
        return fail_with_error_reply(reply);
    return vk__fail(VK_ERR_PROTOCOL, "unexpected reply type %d to a lock script", (int)type);
}

/* ---- one attempt ------------------------------------------------------------ */

void vk__lock_attempt_init(vk_lock_attempt *a, size_t count)
{
    memset(a, 0, offsetof(vk_lock_attempt, tokens));
    a->count = count;
    a->quorum = count / 2 + 1;
    a->first_fault = VK_OK;
}

static void note_fault(vk_status *first, char **detail, vk_status st)
{
    if (*first == VK_OK) {
        *first = st;
        *detail = vk__error_dup();
    }
}

void vk__lock_attempt_grant(vk_lock_attempt *a, size_t i, vk_status st, long long token)
{
    uint64_t bit = (uint64_t)1 << i;
    if (st == VK_OK && token > 0) {
        a->held |= bit;
        a->tokens[i] = token;
        a->granted++;
        if (token > a->top)
            a->top = token;
    } else if (st != VK_OK) {
        /* The SET may have run before the reply was lost: clean it up
         * with the rest if the attempt fails. */
        a->faulted |= bit;
        a->faults++;
        note_fault(&a->first_fault, &a->fault_detail, st);
    }
}

bool vk__lock_attempt_must_raise(const vk_lock_attempt *a, size_t i)
{
    return a->count > 1 && a->granted >= a->quorum && (a->held & ((uint64_t)1 << i)) &&
           a->tokens[i] < a->top;
}

void vk__lock_attempt_raised(vk_lock_attempt *a, size_t i, bool ok)
{
    if (ok)
        return;
    /* Not raised: this node may not count towards the majority. */
    a->held &= ~((uint64_t)1 << i);
    a->faulted |= (uint64_t)1 << i;
    a->granted--;
}

vk_lock_outcome vk__lock_attempt_decide(vk_lock_attempt *a, vk_lock *lock, int64_t start_us,
                                        int64_t end_us, uint64_t *give_back,
                                        vk_status *fault)
{
    *give_back = 0;
    *fault = VK_OK;
    int64_t validity = vk__lock_remaining_validity_ms(lock, lock->expiry_ms, end_us - start_us);
    if (a->granted >= a->quorum && validity > 0) {
        free(a->fault_detail);
        a->fault_detail = NULL;
        lock->held = a->held;
        lock->fencing_token = a->top;
        lock->acquired_at_us = start_us;
        atomic_store(&lock->valid_until_us, start_us + validity * 1000);
        lock->released = false;
        return VK_LOCK_ACQUIRED;
    }
    *give_back = a->held | a->faulted;
    /* A fault is the cause when the failed nodes could have made the
     * majority; otherwise other holders did (contention). */
    vk_lock_outcome outcome = VK_LOCK_CONTENDED;
    if (a->first_fault != VK_OK && a->granted + a->faults >= a->quorum) {
        *fault = vk__fail_restore(a->first_fault, a->fault_detail);
        outcome = VK_LOCK_FAULT;
    }
    free(a->fault_detail);
    a->fault_detail = NULL;
    return outcome;
}

void vk__lock_tries_note(vk_lock_tries *t, vk_lock_outcome outcome, vk_status fault)
{
    free(t->last_detail);
    t->last_detail = NULL;
    t->last_fault = VK_OK;
    if (outcome == VK_LOCK_FAULT) {
        t->last_fault = fault;
        t->last_detail = vk__error_dup();
    }
}

vk_lock_outcome vk__lock_tries_end(vk_lock_tries *t, vk_status *fault)
{
    vk_lock_outcome outcome = VK_LOCK_CONTENDED;
    *fault = VK_OK;
    if (t->last_fault != VK_OK) {
        *fault = vk__fail_restore(t->last_fault, t->last_detail);
        outcome = VK_LOCK_FAULT;
    }
    free(t->last_detail);
    *t = (vk_lock_tries){0};
    return outcome;
}

/* ---- release and extend ------------------------------------------------------ */

void vk__lock_vote(vk_lock_votes *v, vk_status st, long long result)
{
    if (st != VK_OK) {
        v->faults++;
        note_fault(&v->first_fault, &v->fault_detail, st);
    } else if (result == 1) {
        v->yes++;
    }
}

uint64_t vk__lock_all_nodes(size_t count)
{
    return count >= VK_LOCK_MAX_NODES ? UINT64_MAX : (((uint64_t)1 << count) - 1);
}

static void count_metric(vk_events *ev, const char *name, const char *result)
{
    if (!ev || !vk__events_has_metrics(ev))
        return;
    vk_field label = { "result", result };
    vk__metric(ev, name, VK_METRIC_COUNTER, 1.0, &label, 1);
}

static void observe_hold(vk_events *ev, const vk_lock *lock, int64_t now_us)
{
    if (!ev || !vk__events_has_metrics(ev))
        return;
    double seconds = (double)(now_us - lock->acquired_at_us) / 1e6;
    vk__metric(ev, "redis_lock_hold_seconds", VK_METRIC_HISTOGRAM, seconds, NULL, 0);
}

vk_status vk__lock_unlock_decide(vk_lock_votes *v, vk_lock *lock, size_t quorum,
                                 vk_events *ev, int64_t now_us)
{
    vk_status st;
    if (v->yes >= quorum) {
        st = VK_OK;
    } else if (v->first_fault != VK_OK && v->yes + v->faults >= quorum) {
        /* The outcome is unknown: keep the handle releasable. */
        vk_status fault = vk__fail_restore(v->first_fault, v->fault_detail);
        free(v->fault_detail);
        v->fault_detail = NULL;
        count_metric(ev, "redis_lock_release_total", "error");
        vk__lock_log(ev, VK_LOG_WARN, "lock release failed", lock->key, lock->keylen,
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
    free(v->fault_detail);
    v->fault_detail = NULL;
    observe_hold(ev, lock, now_us);
    lock->released = true;
    atomic_store(&lock->valid_until_us, 0);
    count_metric(ev, "redis_lock_release_total", st == VK_OK ? "released" : "not_held");
    vk__lock_log(ev, st == VK_OK ? VK_LOG_DEBUG : VK_LOG_WARN,
                 st == VK_OK ? "lock released" : "lock was not held or already expired",
                 lock->key, lock->keylen, NULL);
    return st;
}

vk_status vk__lock_extend_decide(vk_lock_votes *v, vk_lock *lock, size_t quorum,
                                 int64_t expiry_ms, int64_t start_us, int64_t end_us)
{
    int64_t validity = vk__lock_remaining_validity_ms(lock, expiry_ms, end_us - start_us);
    vk_status st;
    if (v->yes >= quorum && validity > 0) {
        atomic_store(&lock->valid_until_us, start_us + validity * 1000);
        st = VK_OK;
    } else if (v->first_fault != VK_OK && v->yes + v->faults >= quorum) {
        st = vk__fail_restore(v->first_fault, v->fault_detail);
    } else {
        st = vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");
    }
    free(v->fault_detail);
    v->fault_detail = NULL;
    return st;
}

/* ---- texts, logs and metrics ------------------------------------------------- */

void vk__lock_log(vk_events *ev, vk_log_level level, const char *message, const char *key,
                  size_t keylen, const char *error)
{
    if (!ev || !vk__events_has_logger(ev))
        return;
    char *quoted = vk__quote_key(key, keylen);
    vk_field fields[2] = { { "key", quoted ? quoted : "" }, { "error", error } };
    vk__log(ev, level, message, fields, error ? 2 : 1);
    free(quoted);
}

const char *vk__lock_outcome_name(vk_lock_outcome outcome)
{
    switch (outcome) {
    case VK_LOCK_ACQUIRED: return "acquired";
    case VK_LOCK_CONTENDED: return "contended";
    default: return "error";
    }
}

void vk__lock_report_acquire(vk_events *ev, const char *key, size_t keylen,
                             vk_lock_outcome outcome)
{
    count_metric(ev, "redis_lock_acquisitions_total", vk__lock_outcome_name(outcome));
    if (outcome == VK_LOCK_ACQUIRED)
        vk__lock_log(ev, VK_LOG_DEBUG, "lock acquired", key, keylen, NULL);
    else if (outcome == VK_LOCK_CONTENDED)
        vk__lock_log(ev, VK_LOG_DEBUG, "lock already taken", key, keylen, NULL);
    else
        vk__lock_log(ev, VK_LOG_WARN, "lock acquisition failed", key, keylen, vk_last_error());
}

vk_status vk__lock_fail_acquire(vk_status code, const char *key, size_t keylen,
                                const char *cause)
{
    char *quoted = vk__quote_key(key, keylen);
    vk_status st = vk__fail_msg(code, "failed to acquire lock %s: %s",
                                quoted ? quoted : "\"\"", cause);
    free(quoted);
    return st;
}

vk_status vk__lock_fail_attempt(vk_status code, const char *key, size_t keylen)
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

vk_status vk__lock_fail_nil_handle(const char *function)
{
    vk__misuse(function, "lock handle is nil or not initialized");
    return vk__fail_msg(VK_ERR_NIL_LOCK_HANDLE, "lock handle is nil or not initialized");
}

/* ---- spans -------------------------------------------------------------------- */

/* The key as an attribute: its bytes, a control byte shown as '?', cut to
 * the buffer. */
static void key_text(char *out, size_t cap, const char *key, size_t keylen)
{
    size_t n = keylen < cap - 1 ? keylen : cap - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)key[i];
        out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    out[n] = '\0';
}

static void lock_span_begin(vk_lock_span *ls, vk_events *ev, const char *name,
                            vk_context *ctx, bool detached, const char *key, size_t keylen)
{
    if (VK_LIKELY(vk__events_tracer(ev) == NULL)) {
        ls->span.tracer = NULL;
        return;
    }
    key_text(ls->key, sizeof ls->key, key, keylen);
    const vk_field attrs[] = {{"db.system", "redis"}, {"redis.lock.key", ls->key}};
    if (detached)
        vk__span_start_detached(&ls->span, ev, name, attrs, 2);
    else
        vk__span_start(&ls->span, ev, name, ctx, attrs, 2);
}

void vk__lock_span_start(vk_lock_span *ls, vk_events *ev, const char *name, vk_context *ctx,
                         const char *key, size_t keylen)
{
    lock_span_begin(ls, ev, name, ctx, false, key, keylen);
}

void vk__lock_span_start_detached(vk_lock_span *ls, vk_events *ev, const char *name,
                                  const char *key, size_t keylen)
{
    lock_span_begin(ls, ev, name, NULL, true, key, keylen);
}

void vk__lock_span_end(vk_lock_span *ls, vk_status st, const char *error, int attempts,
                       const char *outcome)
{
    if (VK_LIKELY(ls->span.tracer == NULL))
        return;
    char count[16];
    snprintf(count, sizeof count, "%d", attempts);
    const vk_field attrs[] = {{"redis.lock.attempts", count}, {"redis.lock.outcome", outcome}};
    vk__span_end(&ls->span, st, error, attrs, 2);
}
