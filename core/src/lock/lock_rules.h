/*
 * The lock's handle and every rule of SEMANTICS §4 that decides
 * (lock_rules.c), shared by the blocking manager (lock.c) and the
 * event-loop one (lock_async.c). Neither manager decides anything of its
 * own: they send the requests these functions build and hand back the
 * replies.
 *
 * The rules read no clock and do no I/O: times come in as arguments.
 */
#ifndef VK_LOCK_RULES_H
#define VK_LOCK_RULES_H

#include "support/support.h"
#include "lock/lock_options.h"

#include "vkclient_async.h"

#include <stdatomic.h>
#include <stdbool.h>

/* A quorum is tracked in a 64-bit mask, one bit per node. */
#define VK_LOCK_MAX_NODES 64
/* The budget of a release that must happen whatever the caller's context. */
#define VK_LOCK_RELEASE_BUDGET_MS 5000

struct vk_lock {
    vk_lock_manager *manager;              /* a blocking manager's (referenced) ... */
    vk_async_lock_manager *async_manager;  /* ... or an event-loop manager's */
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
    /* Blocking: the running automatic renewal (a thread), or NULL;
     * installed atomically since two threads may ask at once. */
    _Atomic(struct renewer *) renewal;
    /* Event loop: operations running on the handle, its renewal timer
     * (lock_async.c). */
    struct vk_async_lock_state *async_state;
};

/* ---- handles -------------------------------------------------------------- */

/* NULL or only white space: SEMANTICS §4's empty key. */
bool vk__lock_key_is_blank(const char *key, size_t keylen);
/* One allocation: the handle, its key and its fencing-counter key, with
 * opts' expiry and drift; no manager yet, not held. NULL without memory. */
vk_lock *vk__lock_new(const char *key, size_t keylen, const vk_lock_options *opts);
/* A fresh random value for the next attempt. */
vk_status vk__lock_new_value(vk_lock *lock);
/* The milliseconds left of expiry_ms after elapsed_us, less Redlock's
 * drift allowance; <= 0 means the lock cannot be trusted. */
int64_t vk__lock_remaining_validity_ms(const vk_lock *lock, int64_t expiry_ms,
                                       int64_t elapsed_us);
/* The wait before the next try: uniform in [delay/2, delay*3/2). */
int64_t vk__lock_jittered_delay_ms(int64_t delay_ms);
/* Renewal extends every third of the expiry (at least 1 ms). */
int64_t vk__lock_renew_interval_ms(const vk_lock *lock);

/* ---- requests and replies ------------------------------------------------ */

typedef enum vk_lock_script {
    VK_LOCK_RAISE,    /* ARGV: value, floor */
    VK_LOCK_RELEASE,  /* ARGV: value */
    VK_LOCK_EXTEND,   /* ARGV: value, expiry ms */
    VK_LOCK_SCRIPT_COUNT
} vk_lock_script;

/* One node's grant: SET key value NX PX expiry and INCR of the counter,
 * sent back to back. The words point into lock and expiry (>= 24 bytes). */
#define VK_LOCK_SET_ARGC 6
#define VK_LOCK_INCR_ARGC 2
void vk__lock_grant_argv(const vk_lock *lock, char expiry[24], const char **set_argv,
                         size_t *set_len, const char **incr_argv, size_t *incr_len);
/* Their replies: VK_OK with *token the counter when the SET took the lock,
 * else 0 (held by another); an error reply or an odd reply is the node's
 * fault (detail set). */
vk_status vk__lock_grant_result(const vk_reply *set_reply, const vk_reply *incr_reply,
                                long long *token);

/* A script call on the lock's two keys: EVALSHA (by_sha) or EVAL with the
 * script's source; args are NUL-terminated. Returns argc (<= 7). */
#define VK_LOCK_SCRIPT_MAX_ARGC 7
int vk__lock_script_argv(const vk_lock *lock, vk_lock_script id, bool by_sha, int nargs,
                         const char *const *args, const char **argv, size_t *argvlen);
/* Whether EVALSHA can be tried first (the digest could be computed). */
bool vk__lock_script_has_sha(vk_lock_script id);
/* The script's reply: VK_OK and its integer; *resend_by_source when the
 * server did not know the digest (NOSCRIPT: send it again with EVAL,
 * which also caches it); else the node's fault (detail set). */
vk_status vk__lock_script_result(const vk_reply *reply, bool by_sha, long long *result,
                                 bool *resend_by_source);

/* ---- one attempt ------------------------------------------------------------ */

/*
 * An attempt's votes. Fencing tokens: each node's counter only ever grows
 * (INCR, or a raise to a larger value). The token T is the largest counter
 * over the nodes that granted the lock, and before success every node
 * counted as held has its counter raised to at least T, so a majority of
 * nodes carry a counter >= T. Any later acquisition needs a majority too,
 * and two majorities share a node: there its INCR yields more than T, so
 * its token is > T. Tokens therefore never go back, whichever majority the
 * next holder reaches. On one node (or when all counters agree) no raise
 * is needed.
 *
 * The counter moves on every attempt, granted or not: tokens must only
 * grow, not be consecutive. Another client's SET cannot succeed between
 * our SET and our INCR unless our key expired in between, and then this
 * attempt's validity (expiry less the time taken) is gone and it fails.
 */
typedef struct vk_lock_attempt {
    size_t count, quorum;
    uint64_t held;            /* granted (and raised where needed) */
    uint64_t faulted;         /* failed: our SET may have run there */
    size_t granted, faults;
    long long top;            /* the largest granted counter */
    vk_status first_fault;
    char *fault_detail;
    long long tokens[VK_LOCK_MAX_NODES];   /* last: set only where granted */
} vk_lock_attempt;

typedef enum vk_lock_outcome {
    VK_LOCK_ACQUIRED,
    VK_LOCK_CONTENDED,        /* other holders kept a majority out of reach */
    VK_LOCK_FAULT             /* faults did */
} vk_lock_outcome;

void vk__lock_attempt_init(vk_lock_attempt *a, size_t count);
/* Node i's grant result (vk__lock_grant_result's status and token). */
void vk__lock_attempt_grant(vk_lock_attempt *a, size_t i, vk_status st, long long token);
/* After every grant: whether node i's counter must be raised to top. */
bool vk__lock_attempt_must_raise(const vk_lock_attempt *a, size_t i);
/* Node i's raise: ok when the script ran and answered 1. */
void vk__lock_attempt_raised(vk_lock_attempt *a, size_t i, bool ok);
/*
 * The verdict, with the attempt's start and end (microseconds, one clock).
 * Acquired: the lock is filled in (held, token, validity). Otherwise
 * *give_back names the nodes to release (what was granted or may have
 * been), and a fault is this thread's error. Frees the attempt's state.
 */
vk_lock_outcome vk__lock_attempt_decide(vk_lock_attempt *a, vk_lock *lock, int64_t start_us,
                                        int64_t end_us, uint64_t *give_back,
                                        vk_status *fault);

/* Over the tries: a fault counts only when it was the last try's outcome. */
typedef struct vk_lock_tries {
    vk_status last_fault;
    char *last_detail;
} vk_lock_tries;
void vk__lock_tries_note(vk_lock_tries *t, vk_lock_outcome outcome, vk_status fault);
/* After the last try: VK_LOCK_CONTENDED, or VK_LOCK_FAULT with its code
 * (detail restored). Frees t's state. */
vk_lock_outcome vk__lock_tries_end(vk_lock_tries *t, vk_status *fault);

/* ---- release and extend ------------------------------------------------------ */

/* Per node: the script said 1 (yes), 0, or failed. */
typedef struct vk_lock_votes {
    size_t yes, faults;
    vk_status first_fault;
    char *fault_detail;
} vk_lock_votes;

void vk__lock_vote(vk_lock_votes *v, vk_status st, long long result);
/* Every node of the manager, for a release (one whose reply was lost may
 * hold our value too). */
uint64_t vk__lock_all_nodes(size_t count);

/* The end of an unlock: the handle is marked released unless the outcome
 * is unknown (then it stays releasable), with its logs and metrics.
 * Frees v's state. */
vk_status vk__lock_unlock_decide(vk_lock_votes *v, vk_lock *lock, size_t quorum,
                                 vk_events *ev, int64_t now_us);
/* The end of an extend started at start_us: the validity is reset when a
 * majority extended in time. Frees v's state. */
vk_status vk__lock_extend_decide(vk_lock_votes *v, vk_lock *lock, size_t quorum,
                                 int64_t expiry_ms, int64_t start_us, int64_t end_us);

/* ---- event-loop handles (lock_async.c) --------------------------------------- */

/* vk_lock_free and vk_lock_auto_renew of an event-loop manager's handle. */
void vk__async_lock_free(vk_lock *lock);
vk_status vk__async_lock_auto_renew(vk_lock *lock);

/* ---- texts, logs and metrics ------------------------------------------------- */

/* The log and metrics of an acquisition's outcome. */
void vk__lock_report_acquire(vk_events *ev, const char *key, size_t keylen,
                             vk_lock_outcome outcome);
/* "acquired", "contended" or "error": the metric's label, a span's outcome. */
const char *vk__lock_outcome_name(vk_lock_outcome outcome);

/* A "redis.lock.*" span: the key at the start (its bytes, a control byte
 * as '?'), the attempts made and the outcome at the end. */
typedef struct vk_lock_span {
    vk_span span;
    char key[256];
} vk_lock_span;
void vk__lock_span_start(vk_lock_span *ls, vk_events *ev, const char *name, vk_context *ctx,
                         const char *key, size_t keylen);
/* For an event-loop operation, which ends in a later call. */
void vk__lock_span_start_detached(vk_lock_span *ls, vk_events *ev, const char *name,
                                  const char *key, size_t keylen);
/* error: NULL for this thread's vk_last_error() when st is a failure. */
void vk__lock_span_end(vk_lock_span *ls, vk_status st, const char *error, int attempts,
                       const char *outcome);
/* "failed to acquire lock <quoted key>: <cause>" with code. */
vk_status vk__lock_fail_acquire(vk_status code, const char *key, size_t keylen,
                                const char *cause);
/* A try's fault: "failed to attempt lock acquisition for <quoted key>:
 * <cause>" with the cause's code (a freed client keeps its own text). */
vk_status vk__lock_fail_attempt(vk_status code, const char *key, size_t keylen);
/* Logs with the key quoted as SEMANTICS §4 asks; nothing without a logger. */
void vk__lock_log(vk_events *ev, vk_log_level level, const char *message, const char *key,
                  size_t keylen, const char *error);
/* "lock handle is nil or not initialized". */
vk_status vk__lock_fail_nil_handle(const char *function);

#endif /* VK_LOCK_RULES_H */
