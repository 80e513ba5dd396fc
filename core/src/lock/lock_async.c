/*
 * The lock on event-loop and hosted clients (vkclient_async.h): the
 * blocking manager's operations as small state machines that send each
 * phase's requests to every node at once and go on when the last reply is
 * in. Every decision is lock_rules.c's, as for the blocking manager; this
 * file only sends requests, collects replies and keeps the phases' order.
 *
 * Phases of an acquisition: GRANT (SET NX PX + INCR on every node), RAISE
 * (fencing counters below the top, quorums only), then either the lock is
 * ours or GIVE_BACK (release what was or may have been taken), a WAIT on
 * the first client's timer, and the next try.
 *
 * One thread (the clients'), so counts need no atomics. An operation holds
 * a reference on its manager and keeps its handle alive (a handle freed
 * meanwhile is released when the last operation on it ends).
 */
#include "api/driven.h"
#include "lock/lock_rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The manager hears when one of its clients is freed: that node is then
 * NULL, and every request for it fails as a freed client's would. */
typedef struct node_watch {
    vk_driven_watch base;     /* first: the watch is the node_watch */
    struct vk_async_lock_manager *m;
    size_t index;
} node_watch;

typedef struct lock_op lock_op;

struct vk_async_lock_manager {
    int refs;                 /* the owner, each handle, each running operation */
    uint64_t last_id;         /* of acquisitions, for vk_async_lock_cancel */
    lock_op *acquiring;       /* the acquisitions running */
    size_t count;
    size_t quorum;            /* count / 2 + 1 */
    vk_driven **nodes;        /* borrowed; NULL once that client is freed */
    node_watch *watches;
};

/* A handle's event-loop state: it is freed only when no operation runs
 * on it, and its renewal is a timer on the first client. */
typedef struct vk_async_lock_state {
    int busy;                 /* operations (and the renewal's wait) on it */
    bool free_requested;
    bool renewing;
    uint64_t renew_timer;     /* the next renewal's wait, 0 while one runs */
    size_t renew_node;        /* the client whose timer it is (live while it waits:
                               * a freed client cancels its waits) */
} handle_state;

typedef enum op_kind { OP_TRY, OP_ACQUIRE, OP_UNLOCK, OP_EXTEND, OP_RENEW } op_kind;
typedef enum op_phase { PHASE_GRANT, PHASE_RAISE, PHASE_GIVE_BACK, PHASE_VOTE } op_phase;

/* One node's part of a phase. */
typedef struct node_call {
    lock_op *op;
    size_t index;
    vk_lock_script script;
    bool by_sha;
    int replies_left;         /* GRANT: SET and INCR */
    vk_status fault;          /* GRANT: the first failure */
    char *fault_detail;
    vk_reply *set_reply;
    vk_reply *incr_reply;
} node_call;

struct lock_op {
    op_kind kind;
    op_phase phase;
    vk_async_lock_manager *m;
    /* OP_TRY, OP_ACQUIRE: among the manager's acquisitions. */
    uint64_t id;
    lock_op *next_acquiring;
    /* Cancelled: its completion ran; it only gives back what its attempt
     * in flight may take, then ends. */
    bool cancelled;
    uint64_t wait_id;         /* the wait between tries on ... */
    size_t wait_node;         /* ... this client's timer; 0: none */
    vk_lock *lock;
    vk_lock_options opts;
    int tries_done;
    vk_lock_span *span;       /* OP_TRY with a tracer: "redis.lock.try_lock" */
    const char *outcome;      /* the span's, once known */
    vk_async_lock_fn lock_fn;
    vk_async_done_fn done_fn;
    void *userdata;
    size_t waiting;           /* node calls of this phase still out */
    bool starting;            /* inside the public call that started it */
    bool done;                /* the result is set */
    vk_status result;
    char *result_detail;
    vk_lock *result_lock;
    int64_t start_us;
    int64_t expiry_ms;        /* OP_EXTEND, OP_RENEW */
    char floor[24];
    char expiry[24];
    vk_lock_attempt attempt;
    vk_lock_tries tries;
    vk_lock_votes votes;
    node_call calls[];
};

static void advance(lock_op *op);
static void renewal_schedule(vk_lock *lock);

/* ---- the manager and handles -------------------------------------------------- */

static vk_events *manager_events(const vk_async_lock_manager *m)
{
    for (size_t i = 0; i < m->count; i++)
        if (m->nodes[i] != NULL)
            return vk__client_events(m->nodes[i]->core);
    return NULL;
}

static void node_gone(vk_driven_watch *w)
{
    node_watch *nw = (node_watch *)w;
    nw->m->nodes[nw->index] = NULL;
}

/* The client whose timer serves the manager's waits: the first live one
 * (NULL when every client is gone). */
static vk_driven *timer_node(const vk_async_lock_manager *m, size_t *index)
{
    for (size_t i = 0; i < m->count; i++) {
        if (m->nodes[i] != NULL) {
            if (index != NULL)
                *index = i;
            return m->nodes[i];
        }
    }
    return NULL;
}

/* A wait of delay_ms on the manager's timer; VK_ERR_NIL_CLIENT when no
 * client is left. */
static vk_status wait_on_loop(const vk_async_lock_manager *m, const char *function,
                              int64_t delay_ms, vk_async_fn fn, void *userdata, uint64_t *id,
                              size_t *index)
{
    vk_driven *d = timer_node(m, index);
    if (d == NULL)
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    return vk__driven_after(d, function, delay_ms, fn, userdata, id);
}

/* A call on the clients' thread (any live client's: they share it);
 * with every client gone, the requests fail as such. */
static vk_status check_thread(const vk_async_lock_manager *m, const char *function)
{
    vk_driven *d = timer_node(m, NULL);
    return d != NULL ? vk__driven_check_thread(d, function) : VK_OK;
}

static void manager_unref(vk_async_lock_manager *m)
{
    if (m == NULL || --m->refs > 0)
        return;
    for (size_t i = 0; i < m->count; i++)
        if (m->nodes[i] != NULL)
            vk__driven_unwatch(m->nodes[i], &m->watches[i].base);
    free(m);
}

static vk_status new_manager(vk_async_lock_manager **out, vk_driven *const *nodes, size_t n,
                             const char *function)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (nodes == NULL || n == 0)
        return vk__fail_msg(VK_ERR_LOCK_NOT_INITIALIZED, "distributed lock is not initialized");
    if (n > VK_LOCK_MAX_NODES)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a lock quorum takes at most %d clients",
                        VK_LOCK_MAX_NODES);
    for (size_t i = 0; i < n; i++) {
        vk_status st = vk__driven_usable(nodes[i], function);
        if (st != VK_OK)
            return st;
    }
    /* One allocation: the manager, its nodes and their watches. */
    vk_async_lock_manager *m =
        calloc(1, sizeof *m + n * (sizeof m->nodes[0] + sizeof *m->watches));
    if (m == NULL)
        return vk__fail_nomem();
    m->refs = 1;
    m->count = n;
    m->quorum = n / 2 + 1;
    m->watches = (node_watch *)(m + 1);
    m->nodes = (vk_driven **)(m->watches + n);
    for (size_t i = 0; i < n; i++) {
        m->nodes[i] = nodes[i];
        m->watches[i] = (node_watch){ .base = { .gone = node_gone }, .m = m, .index = i };
        vk__driven_watch(nodes[i], &m->watches[i].base);
    }
    *out = m;
    return VK_OK;
}

VK_API vk_status vk_async_lock_manager_new(vk_async_lock_manager **out,
                                           vk_async *const *clients, size_t n)
{
    /* A vk_async starts with its vk_driven (driven.h). */
    return new_manager(out, (vk_driven *const *)clients, n, "vk_async_lock_manager_new");
}

VK_API vk_status vk_hosted_lock_manager_new(vk_async_lock_manager **out,
                                            vk_hosted *const *clients, size_t n)
{
    return new_manager(out, (vk_driven *const *)clients, n, "vk_hosted_lock_manager_new");
}

VK_API void vk_async_lock_manager_free(vk_async_lock_manager *manager)
{
    manager_unref(manager);
}

static handle_state *state_of(const vk_lock *lock)
{
    return lock->async_state;
}

static void handle_release(vk_lock *lock)
{
    vk_async_lock_manager *m = lock->async_manager;
    free(state_of(lock));
    free(lock);
    manager_unref(m);
}

static void renewal_stop(vk_lock *lock)
{
    handle_state *hs = state_of(lock);
    uint64_t timer = hs->renew_timer;
    hs->renewing = false;
    hs->renew_timer = 0;
    /* The wait completes (cancelled) inside the cancel, and lets go of the
     * handle: the caller still holds it through its own reference. */
    if (timer != 0)
        vk__driven_cancel(lock->async_manager->nodes[hs->renew_node], "vk_lock_auto_renew",
                          timer);
}

void vk__async_lock_free(vk_lock *lock)
{
    handle_state *hs = state_of(lock);
    renewal_stop(lock);
    if (hs->busy > 0)
        hs->free_requested = true;
    else
        handle_release(lock);
}

/* ---- operations: start and end ------------------------------------------------- */

static lock_op *new_op(op_kind kind, vk_async_lock_manager *m, vk_lock *lock)
{
    lock_op *op = calloc(1, sizeof *op + m->count * sizeof op->calls[0]);
    if (op == NULL)
        return NULL;
    op->kind = kind;
    op->m = m;
    m->refs++;
    op->lock = lock;
    if (lock != NULL)
        state_of(lock)->busy++;
    for (size_t i = 0; i < m->count; i++) {
        op->calls[i].op = op;
        op->calls[i].index = i;
    }
    if (kind == OP_TRY || kind == OP_ACQUIRE) {
        op->id = ++m->last_id;
        op->next_acquiring = m->acquiring;
        m->acquiring = op;
    }
    return op;
}

static void free_op(lock_op *op)
{
    /* Only acquisitions are listed: unlocks, extends and renewals pass. */
    for (lock_op **at = &op->m->acquiring; op->id != 0 && *at != NULL;
         at = &(*at)->next_acquiring) {
        if (*at == op) {
            *at = op->next_acquiring;
            break;
        }
    }
    if (op->span != NULL) {
        /* Ended without a result (its client went first). */
        vk__lock_span_end(op->span, VK_ERR_CANCELLED, vk_strerror(VK_ERR_CANCELLED),
                          op->tries_done, "error");
        free(op->span);
    }
    free(op->result_detail);
    free(op->attempt.fault_detail);
    free(op->tries.last_detail);
    free(op->votes.fault_detail);
    vk_lock *lock = op->lock;
    if (lock != NULL && --state_of(lock)->busy == 0 && state_of(lock)->free_requested)
        handle_release(lock);
    manager_unref(op->m);
    free(op);
}

/* Runs the completion and ends the operation. */
static void deliver(lock_op *op)
{
    if (op->result != VK_OK)
        vk__fail_restore(op->result, op->result_detail);
    if (op->kind == OP_TRY || op->kind == OP_ACQUIRE) {
        /* The handle now belongs to the completion, not to the operation. */
        vk_lock *lock = op->result_lock;
        if (op->lock != NULL && op->lock != lock)
            state_of(op->lock)->free_requested = true;   /* ours, never given out */
        if (lock != NULL) {
            state_of(lock)->busy--;
            op->lock = NULL;
        }
        op->lock_fn(op->userdata, op->result, lock);
    } else if (op->done_fn != NULL) {
        op->done_fn(op->userdata, op->result);
    }
    free_op(op);
}

/* A cancelled acquisition has given back what it took: it ends, its own
 * handle (never given out) with it. */
static void end_span(lock_op *op, vk_status st, const char *error);

static void end_cancelled(lock_op *op)
{
    op->outcome = "cancelled";
    end_span(op, VK_ERR_CANCELLED, vk_strerror(VK_ERR_CANCELLED));
    if (op->lock != NULL)
        state_of(op->lock)->free_requested = true;
    free_op(op);
}

/* The try's span ends with its result. */
static void end_span(lock_op *op, vk_status st, const char *error)
{
    if (op->span == NULL)
        return;
    vk__lock_span_end(op->span, st, error, op->tries_done,
                      op->outcome != NULL ? op->outcome : "error");
    free(op->span);
    op->span = NULL;
}

static void finish(lock_op *op, vk_status st, vk_lock *lock)
{
    if (op->cancelled) {
        end_cancelled(op);
        return;
    }
    end_span(op, st, NULL);
    op->done = true;
    op->result = st;
    op->result_detail = st != VK_OK ? vk__error_dup() : NULL;
    op->result_lock = lock;
    if (!op->starting)
        deliver(op);
}

static void deliver_later(void *userdata, vk_status st, vk_reply *reply)
{
    (void)st;
    vk_reply_free(reply);
    deliver(userdata);
}

/* Ends the public call that started op: an operation that already ended
 * (every request refused at once, a released handle) completes on the
 * loop's next turn, never inside the call. If even that cannot be
 * arranged, the result is returned instead and no completion runs. */
static vk_status started(lock_op *op, const char *function)
{
    op->starting = false;
    if (!op->done)
        return VK_OK;
    vk_status st = wait_on_loop(op->m, function, 0, deliver_later, op, NULL, NULL);
    if (st == VK_OK)
        return VK_OK;
    /* Ended at once: nothing was acquired (result_lock is NULL), and the
     * operation's own handle goes with it. */
    st = op->result;
    vk__fail_restore(st, op->result_detail);
    if (op->lock != NULL && (op->kind == OP_TRY || op->kind == OP_ACQUIRE))
        state_of(op->lock)->free_requested = true;
    free_op(op);
    return st;
}

/* ---- node calls ---------------------------------------------------------------- */

/* A request to node i; a freed client fails it as vk_async_command would
 * have, without the misuse report (the caller did nothing wrong). */
static vk_status node_command(lock_op *op, size_t i, int argc, const char *const *argv,
                              const size_t *argvlen, vk_async_fn fn, node_call *c)
{
    vk_driven *d = op->m->nodes[i];
    if (d == NULL)
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    return vk__driven_command(d, "vk_async_lock", argc, argv, argvlen, fn, c, NULL);
}

static void call_done(node_call *c)
{
    lock_op *op = c->op;
    if (--op->waiting == 0)
        advance(op);
}

/* GRANT: the SET's and the INCR's replies; the node is settled when
 * both are in (or the one that was sent). */
static void grant_reply(node_call *c, vk_status st, vk_reply *reply, bool is_set)
{
    if (st != VK_OK && c->fault == VK_OK) {
        c->fault = st;
        c->fault_detail = vk__error_dup();
    }
    if (is_set)
        c->set_reply = reply;
    else
        c->incr_reply = reply;
    if (--c->replies_left > 0)
        return;
    long long token = 0;
    if (c->fault == VK_OK)
        st = vk__lock_grant_result(c->set_reply, c->incr_reply, &token);
    else
        st = vk__fail_restore(c->fault, c->fault_detail);
    vk__lock_attempt_grant(&c->op->attempt, c->index, st, token);
    vk_reply_free(c->set_reply);
    vk_reply_free(c->incr_reply);
    c->set_reply = c->incr_reply = NULL;
    free(c->fault_detail);
    c->fault_detail = NULL;
    c->fault = VK_OK;
    call_done(c);
}

static void grant_set_reply(void *userdata, vk_status st, vk_reply *reply)
{
    grant_reply(userdata, st, reply, true);
}

static void grant_incr_reply(void *userdata, vk_status st, vk_reply *reply)
{
    grant_reply(userdata, st, reply, false);
}

static void send_grant(node_call *c)
{
    lock_op *op = c->op;
    const char *set[VK_LOCK_SET_ARGC], *incr[VK_LOCK_INCR_ARGC];
    size_t set_len[VK_LOCK_SET_ARGC], incr_len[VK_LOCK_INCR_ARGC];
    vk__lock_grant_argv(op->lock, op->expiry, set, set_len, incr, incr_len);
    c->fault = VK_OK;
    c->replies_left = 0;
    vk_status st = node_command(op, c->index, VK_LOCK_SET_ARGC, set, set_len, grant_set_reply, c);
    if (st != VK_OK) {
        vk__lock_attempt_grant(&op->attempt, c->index, st, 0);
        return;
    }
    c->replies_left = 1;
    op->waiting++;
    st = node_command(op, c->index, VK_LOCK_INCR_ARGC, incr, incr_len, grant_incr_reply, c);
    if (st != VK_OK) {
        /* The SET's reply settles the node: a fault whatever it says. */
        c->fault = st;
        c->fault_detail = vk__error_dup();
        return;
    }
    c->replies_left = 2;
}

/* Each phase's vote on one node's script result. */
static void script_voted(node_call *c, vk_status st, long long result)
{
    lock_op *op = c->op;
    switch (op->phase) {
    case PHASE_RAISE:
        vk__lock_attempt_raised(&op->attempt, c->index, st == VK_OK && result == 1);
        break;
    case PHASE_GIVE_BACK:
        break;   /* best effort: the attempt's outcome stands */
    default:
        vk__lock_vote(&op->votes, st, result);
        break;
    }
}

static void send_script(node_call *c);

static void script_reply(void *userdata, vk_status st, vk_reply *reply)
{
    node_call *c = userdata;
    long long result = 0;
    bool resend = false;
    if (st == VK_OK)
        st = vk__lock_script_result(reply, c->by_sha, &result, &resend);
    vk_reply_free(reply);
    if (resend) {
        c->by_sha = false;
        c->op->waiting++;
        send_script(c);
    } else {
        script_voted(c, st, result);
    }
    call_done(c);
}

static void send_script(node_call *c)
{
    lock_op *op = c->op;
    const char *args[2] = { op->lock->value, NULL };
    int nargs = 1;
    if (c->script == VK_LOCK_RAISE)
        args[nargs++] = op->floor;
    else if (c->script == VK_LOCK_EXTEND)
        args[nargs++] = op->expiry;
    const char *argv[VK_LOCK_SCRIPT_MAX_ARGC];
    size_t argvlen[VK_LOCK_SCRIPT_MAX_ARGC];
    int argc = vk__lock_script_argv(op->lock, c->script, c->by_sha, nargs, args, argv, argvlen);
    vk_status st = node_command(op, c->index, argc, argv, argvlen, script_reply, c);
    if (st != VK_OK) {
        script_voted(c, st, 0);
        op->waiting--;   /* counted by the caller; settled now */
    }
}

/* Sends script on the nodes in mask; the phase ends when every reply is
 * in (at once when none could be sent). */
static void run_phase(lock_op *op, op_phase phase, vk_lock_script script, uint64_t mask)
{
    op->phase = phase;
    op->waiting = 1;   /* held until every node was asked */
    for (size_t i = 0; i < op->m->count; i++) {
        if (!(mask & ((uint64_t)1 << i)))
            continue;
        node_call *c = &op->calls[i];
        c->script = script;
        c->by_sha = vk__lock_script_has_sha(script);
        op->waiting++;
        send_script(c);
    }
    call_done(&op->calls[0]);
}

/* ---- acquisition ----------------------------------------------------------------- */

static void start_attempt(lock_op *op)
{
    vk_status st = vk__lock_new_value(op->lock);
    if (st != VK_OK) {
        vk__lock_tries_note(&op->tries, VK_LOCK_FAULT, st);
        op->tries_done++;
        op->phase = PHASE_GIVE_BACK;
        op->waiting = 1;
        call_done(&op->calls[0]);
        return;
    }
    vk__lock_attempt_init(&op->attempt, op->m->count);
    op->start_us = vk__now_us();
    op->phase = PHASE_GRANT;
    op->waiting = 1;
    for (size_t i = 0; i < op->m->count; i++)
        send_grant(&op->calls[i]);
    call_done(&op->calls[0]);
}

static void retry_wait_over(void *userdata, vk_status st, vk_reply *reply)
{
    lock_op *op = userdata;
    vk_reply_free(reply);
    op->wait_id = 0;
    if (op->cancelled) {
        end_cancelled(op);
        return;
    }
    if (st != VK_OK) {
        /* The wait was cut short (the client was freed): that ends it. */
        vk__lock_tries_note(&op->tries, VK_LOCK_FAULT, st);
        op->tries_done = op->opts.tries;
        op->phase = PHASE_GIVE_BACK;
        op->waiting = 1;
        call_done(&op->calls[0]);
        return;
    }
    start_attempt(op);
}

static void acquired(lock_op *op)
{
    vk_lock *lock = op->lock;
    op->outcome = vk__lock_outcome_name(VK_LOCK_ACQUIRED);
    vk__lock_report_acquire(manager_events(op->m), lock->key, lock->keylen, VK_LOCK_ACQUIRED);
    if (op->opts.auto_renew) {
        state_of(lock)->renewing = true;
        renewal_schedule(lock);
    }
    finish(op, VK_OK, lock);
}

/* After the last try, or a wait cut short. */
static void attempts_over(lock_op *op)
{
    vk_status fault;
    vk_lock_outcome outcome = vk__lock_tries_end(&op->tries, &fault);
    vk_lock *lock = op->lock;
    op->outcome = vk__lock_outcome_name(outcome);
    vk__lock_report_acquire(manager_events(op->m), lock->key, lock->keylen, outcome);
    if (op->kind == OP_TRY) {
        if (outcome == VK_LOCK_FAULT)
            finish(op, vk__lock_fail_attempt(fault, lock->key, lock->keylen), NULL);
        else
            finish(op, VK_OK, NULL);
    } else if (outcome == VK_LOCK_CONTENDED) {
        finish(op, vk__lock_fail_acquire(VK_ERR_LOCK_ACQUIRE, lock->key, lock->keylen,
                                         "lock already taken"),
               NULL);
    } else {
        finish(op, fault, NULL);
    }
}

static void attempt_over(lock_op *op)
{
    if (op->cancelled) {
        end_cancelled(op);
        return;
    }
    if (op->tries_done >= op->opts.tries) {
        attempts_over(op);
        return;
    }
    int64_t delay = op->opts.retry_delay_ms > 0
                        ? vk__lock_jittered_delay_ms(op->opts.retry_delay_ms)
                        : 0;
    vk_status st = wait_on_loop(op->m, "vk_async_lock_acquire", delay, retry_wait_over, op,
                                &op->wait_id, &op->wait_node);
    if (st != VK_OK) {
        vk__lock_tries_note(&op->tries, VK_LOCK_FAULT, st);
        attempts_over(op);
    }
}

static void decide_attempt(lock_op *op)
{
    uint64_t to_release = 0;
    vk_status fault;
    vk_lock_outcome outcome = vk__lock_attempt_decide(&op->attempt, op->lock, op->start_us,
                                                      vk__now_us(), &to_release, &fault);
    op->tries_done++;
    if (outcome == VK_LOCK_ACQUIRED && op->cancelled) {
        /* Taken for nobody: given back on every node (the release only
         * deletes our own value). */
        uint64_t all = op->m->count >= 64 ? UINT64_MAX : ((uint64_t)1 << op->m->count) - 1;
        run_phase(op, PHASE_GIVE_BACK, VK_LOCK_RELEASE, all);
        return;
    }
    if (outcome == VK_LOCK_ACQUIRED) {
        vk__lock_tries_note(&op->tries, outcome, VK_OK);
        acquired(op);
        return;
    }
    vk__lock_tries_note(&op->tries, outcome, fault);
    run_phase(op, PHASE_GIVE_BACK, VK_LOCK_RELEASE, to_release);
}

static void decide_votes(lock_op *op)
{
    vk_async_lock_manager *m = op->m;
    vk_lock *lock = op->lock;
    if (op->kind == OP_UNLOCK) {
        finish(op, vk__lock_unlock_decide(&op->votes, lock, m->quorum, manager_events(m),
                                          vk__now_us()),
               NULL);
        return;
    }
    vk_status st = vk__lock_extend_decide(&op->votes, lock, m->quorum, op->expiry_ms,
                                          op->start_us, vk__now_us());
    if (op->kind == OP_RENEW) {
        handle_state *hs = state_of(lock);
        if (!hs->renewing) {
            /* Unlocked or freed meanwhile: the outcome no longer matters. */
        } else if (st == VK_OK) {
            renewal_schedule(lock);
        } else {
            atomic_store(&lock->lost, 1);
            hs->renewing = false;
            vk__lock_log(manager_events(m), VK_LOG_WARN, "lock renewal failed; the lock is lost",
                         lock->key, lock->keylen, vk_last_error());
        }
    }
    finish(op, st, NULL);
}

/* Called when a phase's last reply is in. */
static void advance(lock_op *op)
{
    switch (op->phase) {
    case PHASE_GRANT: {
        uint64_t raise = 0;
        for (size_t i = 0; i < op->m->count; i++)
            if (vk__lock_attempt_must_raise(&op->attempt, i))
                raise |= (uint64_t)1 << i;
        if (raise == 0) {
            decide_attempt(op);
        } else {
            snprintf(op->floor, sizeof op->floor, "%lld", op->attempt.top);
            run_phase(op, PHASE_RAISE, VK_LOCK_RAISE, raise);
        }
        break;
    }
    case PHASE_RAISE:
        decide_attempt(op);
        break;
    case PHASE_GIVE_BACK:
        attempt_over(op);
        break;
    case PHASE_VOTE:
        decide_votes(op);
        break;
    }
}

static vk_status check_manager(vk_async_lock_manager *m, const char *key, size_t keylen,
                               const void *fn, const char *function)
{
    if (m == NULL) {
        vk__misuse(function, "lock manager is nil");
        return vk__fail_msg(VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil");
    }
    if (vk__lock_key_is_blank(key, keylen))
        return vk__fail_msg(VK_ERR_EMPTY_LOCK_KEY, "lock key cannot be empty");
    if (fn == NULL)
        return vk__fail_msg(VK_ERR_NIL_LOCK_FN, "lock function is nil");
    return check_thread(m, function);
}

static vk_status start_acquire(op_kind kind, vk_async_lock_manager *m, const char *key,
                               size_t keylen, const vk_lock_options *opts,
                               vk_async_lock_fn fn, void *userdata, const char *function,
                               uint64_t *id)
{
    lock_op *op = new_op(kind, m, NULL);
    handle_state *hs = calloc(1, sizeof *hs);
    vk_lock *lock = op != NULL && hs != NULL ? vk__lock_new(key, keylen, opts) : NULL;
    if (lock == NULL) {
        free(hs);
        if (op != NULL)
            free_op(op);
        return vk__fail_nomem();
    }
    lock->async_manager = m;
    lock->async_state = hs;
    m->refs++;   /* the handle's */
    op->lock = lock;
    hs->busy = 1;
    op->opts = *opts;
    op->lock_fn = fn;
    op->userdata = userdata;
    op->starting = true;
    if (kind == OP_TRY && vk__events_tracer(manager_events(m)) != NULL &&
        (op->span = malloc(sizeof *op->span)) != NULL)
        vk__lock_span_start_detached(op->span, manager_events(m), "redis.lock.try_lock", key,
                                     keylen);
    uint64_t op_id = op->id;
    start_attempt(op);
    vk_status st = started(op, function);
    if (st == VK_OK && id != NULL)
        *id = op_id;
    return st;
}

VK_API vk_status vk_async_lock_try(vk_async_lock_manager *manager, const char *key,
                                   size_t keylen, vk_async_lock_fn fn, void *userdata,
                                   uint64_t *id)
{
    if (id != NULL)
        *id = 0;
    vk_status st = check_manager(manager, key, keylen, (const void *)fn, "vk_async_lock_try");
    if (st != VK_OK)
        return st;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1;
    return start_acquire(OP_TRY, manager, key, keylen, &opts, fn, userdata,
                         "vk_async_lock_try", id);
}

VK_API vk_status vk_async_lock_acquire(vk_async_lock_manager *manager, const char *key,
                                       size_t keylen, const vk_lock_options *opts,
                                       vk_async_lock_fn fn, void *userdata, uint64_t *id)
{
    if (id != NULL)
        *id = 0;
    vk_status st = check_manager(manager, key, keylen, (const void *)fn,
                                 "vk_async_lock_acquire");
    if (st != VK_OK)
        return st;
    vk_lock_options resolved;
    st = vk__lock_options_resolve(&resolved, opts);
    if (st != VK_OK)
        return st;
    return start_acquire(OP_ACQUIRE, manager, key, keylen, &resolved, fn, userdata,
                         "vk_async_lock_acquire", id);
}

VK_API vk_status vk_async_lock_cancel(vk_async_lock_manager *manager, uint64_t id)
{
    if (manager == NULL) {
        vk__misuse("vk_async_lock_cancel", "lock manager is nil");
        return vk__fail_msg(VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil");
    }
    vk_status st = check_thread(manager, "vk_async_lock_cancel");
    if (st != VK_OK)
        return st;
    lock_op *op = manager->acquiring;
    while (op != NULL && op->id != id)
        op = op->next_acquiring;
    /* An acquisition whose result is decided is no longer in flight (its
     * completion is on its way). */
    if (op == NULL || op->done || op->cancelled)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "no lock acquisition %llu in flight",
                        (unsigned long long)id);
    op->cancelled = true;
    vk__fail(VK_ERR_CANCELLED, NULL);
    op->lock_fn(op->userdata, VK_ERR_CANCELLED, NULL);
    /* Waiting between tries: the wait ends now, and the operation with it
     * (retry_wait_over). Otherwise its requests are out: it ends when
     * their replies are in, giving back what they took. */
    if (op->wait_id != 0) {
        vk_driven *d = manager->nodes[op->wait_node];
        if (d != NULL)
            vk__driven_cancel(d, "vk_async_lock_cancel", op->wait_id);
    }
    return VK_OK;
}

/* ---- unlock, extend, renewal -------------------------------------------------------- */

static vk_status check_handle(const vk_lock *lock, const void *fn, const char *function)
{
    if (lock != NULL && lock->manager != NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "%s: the lock belongs to a blocking lock "
                                                 "manager: use vk_lock_unlock / vk_lock_extend",
                        function);
    if (lock == NULL || lock->async_manager == NULL || state_of((vk_lock *)lock)->free_requested)
        return vk__lock_fail_nil_handle(function);
    if (fn == NULL)
        return vk__fail_msg(VK_ERR_NIL_LOCK_FN, "lock function is nil");
    return check_thread(lock->async_manager, function);
}

/* Starts a vote (release or extend) on every node; a released handle ends
 * at once with the rule's text. */
static vk_status start_vote(op_kind kind, vk_lock *lock, int64_t expiry_ms,
                            vk_async_done_fn fn, void *userdata, const char *function)
{
    lock_op *op = new_op(kind, lock->async_manager, lock);
    if (op == NULL)
        return vk__fail_nomem();
    op->done_fn = fn;
    op->userdata = userdata;
    op->expiry_ms = expiry_ms;
    snprintf(op->expiry, sizeof op->expiry, "%lld", (long long)expiry_ms);
    op->starting = true;
    if (lock->released) {
        finish(op, vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired"),
               NULL);
    } else {
        op->start_us = vk__now_us();
        run_phase(op, PHASE_VOTE, kind == OP_UNLOCK ? VK_LOCK_RELEASE : VK_LOCK_EXTEND,
                  vk__lock_all_nodes(op->m->count));
    }
    return started(op, function);
}

VK_API vk_status vk_async_lock_unlock(vk_lock *lock, vk_async_done_fn fn, void *userdata)
{
    vk_status st = check_handle(lock, (const void *)fn, "vk_async_lock_unlock");
    if (st != VK_OK)
        return st;
    /* Renewal stops first. A renewal already sent reaches each node before
     * this release (one connection per node, in order). */
    renewal_stop(lock);
    return start_vote(OP_UNLOCK, lock, 0, fn, userdata, "vk_async_lock_unlock");
}

VK_API vk_status vk_async_lock_extend(vk_lock *lock, int64_t expiry_ms, vk_async_done_fn fn,
                                      void *userdata)
{
    vk_status st = check_handle(lock, (const void *)fn, "vk_async_lock_extend");
    if (st != VK_OK)
        return st;
    if (expiry_ms <= 0)
        return vk__fail_msg(VK_ERR_LOCK_EXPIRY_INVALID, "lock expiry must be greater than 0");
    return start_vote(OP_EXTEND, lock, expiry_ms, fn, userdata, "vk_async_lock_extend");
}

static void renew_done(void *userdata, vk_status st)
{
    (void)userdata;
    (void)st;   /* decide_votes has acted on it */
}

static void renewal_due(void *userdata, vk_status st, vk_reply *reply)
{
    vk_lock *lock = userdata;
    vk_reply_free(reply);
    handle_state *hs = state_of(lock);
    hs->renew_timer = 0;
    hs->busy--;   /* the wait's hold on the handle */
    if (st != VK_OK || !hs->renewing) {
        if (hs->busy == 0 && hs->free_requested)
            handle_release(lock);
        return;
    }
    st = start_vote(OP_RENEW, lock, lock->expiry_ms, renew_done, NULL, "vk_lock_auto_renew");
    if (st != VK_OK) {
        atomic_store(&lock->lost, 1);
        hs->renewing = false;
        vk__lock_log(manager_events(lock->async_manager), VK_LOG_WARN,
                     "lock renewal failed; the lock is lost", lock->key, lock->keylen,
                     vk_last_error());
    }
}

/* The next renewal, a third of the expiry from now. A failure to arm it
 * loses the lock as a failed extension would. */
static void renewal_schedule(vk_lock *lock)
{
    handle_state *hs = state_of(lock);
    uint64_t id = 0;
    vk_status st = wait_on_loop(lock->async_manager, "vk_lock_auto_renew",
                                vk__lock_renew_interval_ms(lock), renewal_due, lock, &id,
                                &hs->renew_node);
    if (st != VK_OK) {
        atomic_store(&lock->lost, 1);
        hs->renewing = false;
        return;
    }
    hs->busy++;
    hs->renew_timer = id;
}

vk_status vk__async_lock_auto_renew(vk_lock *lock)
{
    handle_state *hs = state_of(lock);
    if (hs->free_requested)
        return vk__lock_fail_nil_handle("vk_lock_auto_renew");
    if (lock->released)
        return vk__fail_msg(VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired");
    vk_status st = check_thread(lock->async_manager, "vk_lock_auto_renew");
    if (st != VK_OK)
        return st;
    if (hs->renewing)
        return VK_OK;
    hs->renewing = true;
    renewal_schedule(lock);
    return atomic_load(&lock->lost) ? vk__fail(VK_ERR_NIL_CLIENT, NULL) : VK_OK;
}
