/*
 * One node's multiplexed connection, without I/O (see engine.h).
 *
 * Operations wait in `queue` (first in, first out) until the connection is
 * ready and the mux has room, then sit in `line` while the mux holds their
 * request, until their reply or the connection's failure completes them.
 * Order is kept: an operation waiting for its retry back-off holds up the
 * ones behind it, so that a caller's SET and the GET after it run in that
 * order even across a reconnect.
 *
 * The rules applied are the blocking client's, from the same functions:
 * the handshake (handshake.c), retry eligibility and back-off (retry.c),
 * the reconnect rate limit (retry.c's gate), refusals (-LOADING, ...).
 */
#include "engine/engine.h"
#include "engine/handshake.h"
#include "engine/mux.h"
#include "engine/retry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Requests in flight on the connection at most; more wait in the queue. */
#define VK_ENGINE_MAX_IN_FLIGHT 4096
/* Sentinel mode: how often the driver is asked to check with the sentinels
 * that the node is still the master (as the blocking client's driven mode
 * does). */
#define VK_ENGINE_MASTER_CHECK_MS 1000
/* While a first GCP IAM token is awaited, how often the engine looks. */
#define VK_ENGINE_TOKEN_POLL_MS 10
/* Where a new token's AUTH and a release's PING sit in steps[]. */
#define VK_ENGINE_AUTH_STEP VK_HANDSHAKE_MAX_STEPS
#define VK_ENGINE_RELEASE_STEP (VK_HANDSHAKE_MAX_STEPS + 1)

typedef enum op_kind {
    OP_COMMAND,
    OP_PIPELINE,
    OP_HANDSHAKE,     /* a step of the handshake, or a new token's AUTH */
    OP_TIMER          /* completes at not_before_ms; never on the wire */
} op_kind;

typedef struct engine_op engine_op;
struct engine_op {
    engine_op *prev, *next;     /* in queue, line or retries */
    op_kind kind;
    uint64_t id;
    vk_async_fn fn;
    void *userdata;
    unsigned flags;             /* VK_COMMAND_*: read-only, blocking */
    int64_t block_ms;           /* blocking: its own wait (0: no limit) */
    int retries;                /* attempts after the first */
    int64_t not_before_ms;      /* its retry back-off ends */
    bool in_mux;                /* the mux holds its request */
    bool dropped;               /* cancelled on the wire: freed once the mux lets go */
    bool exclusive;             /* a transaction: nothing is sent behind it */
    /* OP_HANDSHAKE: the step (its name) */
    const char *step;
    /* OP_PIPELINE */
    vk_pipeline_batch batch;
    redisReply *array;
    size_t got;
    /* OP_COMMAND: the encoded request, allocated with the operation */
    char *req;
    size_t req_len;
};

/* A completion held back until a later turn (see complete()). */
typedef struct deferred {
    struct deferred *next;
    vk_async_fn fn;
    void *userdata;
    vk_status status;
    redisReply *reply;
    char *detail;               /* vk_last_error() for it */
    bool may_resend;            /* routed: see vk__engine_may_resend */
} deferred;

typedef struct op_list {
    engine_op *head, *tail;
    size_t count;
} op_list;

typedef enum conn_state {
    CONN_DOWN,
    CONN_DIALING,     /* the driver is opening it */
    CONN_HANDSHAKE,   /* open; the handshake's replies are awaited */
    CONN_READY
} conn_state;

struct vk_engine {
    const vk_config *cfg;
    vk_credentials *credentials;
    vk_engine_driver drv;
    char peer[300];             /* the node, for messages */
    uint64_t next_id;

    op_list queue;              /* not yet given to the mux */
    op_list line;               /* the mux holds their requests */
    op_list retries;            /* failed in this turn, to go back in front of queue */
    op_list timers;             /* OP_TIMER, earliest first */

    conn_state state;
    vk_mux *mux;
    vk_mux *dead_mux;           /* failed during this turn: freed when it ends */
    int64_t dial_deadline_ms;
    int64_t last_progress_ms;   /* bytes last written or read */
    int handshake_left;         /* handshake replies still awaited */
    uint64_t auth_generation;   /* credentials the connection logged in with */
    bool reauth_in_line;        /* a new token's AUTH awaits its reply */
    /* Connection reuse (vk__engine_release): */
    bool releasing;             /* the PING that ends a release is in line */
    bool release_due;           /* its reply came: given up at the end of the
                                 * turn, if still idle */
    bool closing_clean;         /* the driver's close() runs for a connection
                                 * given up clean */
    /* A pub/sub message came: the connection is subscribed, never idle. */
    bool subscribed;
    bool exclusive_in_line;     /* a transaction is in the line */
    /* Sentinel mode (vk__engine_follow_master): the handshake asks ROLE,
     * the dial waits for the driver to locate the master, and a node that
     * says it is no longer the master (READONLY, MASTERDOWN) is left: no
     * request is sent to it any more, and once the line is empty the
     * connection closes and the next open locates the master again. */
    bool follows_master;
    bool stale;
    /* Cluster mode (vk__engine_route): the router decides every retry. A
     * failure sets may_resend for the completion it is about to run. */
    bool routed;
    bool may_resend;            /* for the next failure's completion */
    bool completing_may_resend; /* the completion running now */
    int64_t next_check_ms;      /* when the driver checks the master next */
    /* A first IAM token awaited (vk_credentials.token_pending): the
     * queue's operations wait for it until the dial timeout, or fail with
     * a fetch's failure. */
    int64_t token_poll_ms;
    int64_t token_wait_deadline_ms;  /* 0: not waiting */
    uint64_t token_failures_seen;
    /* The handshake's steps, then a new token's AUTH, then a release's
     * PING (VK_ENGINE_AUTH_STEP, VK_ENGINE_RELEASE_STEP). */
    engine_op steps[VK_HANDSHAKE_MAX_STEPS + 2];

    /* Blocking commands in the line stretch the read timeout. */
    int blocking_in_line;
    int unbounded_in_line;      /* of which wait without limit */
    int64_t block_sum_ms;

    /* Completions reached while an operation is being queued wait for the
     * next turn: the caller must never see its completion run before the
     * call that queued it returns. */
    bool submitting;
    deferred *deferred_head, *deferred_tail;

    vk_reconnect_gate gate;
    int64_t wake_at_ms;         /* the wake-up asked for and not yet come
                                 * (VK_ENGINE_NEVER: none) */
    int depth;                  /* entry points running (completions may re-enter) */
    int64_t now_ms;             /* the time of the outermost one */
    engine_op *cancelling;      /* being cancelled in the mux ... */
    bool cancel_completed;      /* ... which completed it (it was not written) */
    bool pump_again;            /* work for the next turn (a completion added some) */
};

/* ---- lists ------------------------------------------------------------------ */

static void list_push(op_list *l, engine_op *op)
{
    op->next = NULL;
    op->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
    l->count++;
}

static void list_remove(op_list *l, engine_op *op)
{
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    op->prev = op->next = NULL;
    l->count--;
}

/* Puts every element of `front` before those of l. */
static void list_prepend_all(op_list *l, op_list *front)
{
    if (front->head == NULL)
        return;
    front->tail->next = l->head;
    if (l->head != NULL)
        l->head->prev = front->tail;
    else
        l->tail = front->tail;
    l->head = front->head;
    l->count += front->count;
    *front = (op_list){0};
}

static engine_op *list_find(const op_list *l, uint64_t id)
{
    for (engine_op *op = l->head; op != NULL; op = op->next)
        if (op->id == id)
            return op;
    return NULL;
}

/* ---- operations ------------------------------------------------------------- */

static void free_op(engine_op *op)
{
    if (op->kind == OP_PIPELINE) {
        vk__pipeline_batch_free(&op->batch);
        vk__reply_free(op->array);
    }
    free(op);
}

/* A pipeline's replies so far are dropped: it starts again. */
static void reset_replies(engine_op *op)
{
    for (size_t i = 0; i < op->got; i++) {
        vk__reply_free(op->array->element[i]);
        op->array->element[i] = NULL;
    }
    op->got = 0;
}

/* The driver learns the outcome; the operation is gone. The detail of a
 * failure is already set. */
static void complete(vk_engine *e, engine_op *op, vk_status st, redisReply *reply)
{
    vk_async_fn fn = op->fn;
    void *userdata = op->userdata;
    bool may_resend = e->may_resend;
    e->may_resend = false;
    if (op->kind == OP_PIPELINE && st == VK_OK) {
        reply = op->array;
        op->array = NULL;
    }
    free_op(op);
    if (VK_UNLIKELY(e->submitting)) {
        deferred *d = calloc(1, sizeof *d);
        if (d != NULL) {
            *d = (deferred){.fn = fn, .userdata = userdata, .status = st, .reply = reply,
                            .detail = st != VK_OK ? vk__error_dup() : NULL,
                            .may_resend = may_resend};
            if (e->deferred_tail != NULL)
                e->deferred_tail->next = d;
            else
                e->deferred_head = d;
            e->deferred_tail = d;
            return;
        }
        /* Out of memory: better now than never. */
    }
    e->completing_may_resend = may_resend;
    e->drv.complete(e->drv.userdata, fn, userdata, st, reply);
    e->completing_may_resend = false;
}

/* Runs the completions held back by a queueing call, in order. */
static void deliver_deferred(vk_engine *e)
{
    while (e->deferred_head != NULL) {
        deferred *d = e->deferred_head;
        e->deferred_head = d->next;
        if (e->deferred_head == NULL)
            e->deferred_tail = NULL;
        if (d->status != VK_OK)
            vk__fail_restore(d->status, d->detail);
        e->completing_may_resend = d->may_resend;
        e->drv.complete(e->drv.userdata, d->fn, d->userdata, d->status, d->reply);
        e->completing_may_resend = false;
        free(d->detail);
        free(d);
    }
}

static vk_status new_op(vk_engine *e, op_kind kind, size_t req_len, vk_async_fn fn,
                        void *userdata, engine_op **out)
{
    engine_op *op = calloc(1, sizeof *op + req_len);
    if (op == NULL)
        return vk__fail_nomem();
    op->kind = kind;
    op->id = ++e->next_id;
    op->fn = fn;
    op->userdata = userdata;
    op->req = (char *)(op + 1);
    op->req_len = req_len;
    *out = op;
    return VK_OK;
}

/* ---- the line's timeouts ----------------------------------------------------- */

static void note_in_line(vk_engine *e, engine_op *op, bool in)
{
    op->in_mux = in;
    if (!(op->flags & VK_COMMAND_BLOCKING))
        return;
    int d = in ? 1 : -1;
    e->blocking_in_line += d;
    if (op->block_ms == 0)
        e->unbounded_in_line += d;
    else
        e->block_sum_ms += d * op->block_ms;
}

/* When the connection counts as stalled: replies (or writes) awaited and
 * no progress for the timeout, stretched by the blocking commands in line.
 * VK_ENGINE_NEVER when nothing is awaited. */
static int64_t stall_deadline(const vk_engine *e)
{
    if (e->state != CONN_HANDSHAKE && e->state != CONN_READY)
        return VK_ENGINE_NEVER;
    if (e->mux == NULL || vk__mux_in_flight(e->mux) == 0)
        return VK_ENGINE_NEVER;
    size_t unwritten;
    vk__mux_output(e->mux, &unwritten);
    if (unwritten > 0)
        return e->last_progress_ms + e->cfg->write_timeout_ms;
    if (e->unbounded_in_line > 0)
        return VK_ENGINE_NEVER;
    return e->last_progress_ms + e->cfg->read_timeout_ms + e->block_sum_ms;
}

/* ---- the connection ------------------------------------------------------------ */

static void on_mux_done(void *userdata, void *op, vk_status st, redisReply *reply, bool sent);
static void on_mux_drop(void *userdata, void *op);

/* The connection could not be opened, or failed before it was ready: the
 * operations waiting for it fail with its reason (the detail set), and
 * the next attempt waits for the rate limit. */
static void open_failed(vk_engine *e, vk_status st, int64_t now_ms);

/* Takes the connection down (the detail of st set): the driver closes it,
 * and every request in the line completes, or goes back for a retry, by
 * the retry policy. Completions may re-enter: the mux is freed when the
 * turn ends. The detail is set again afterwards. */
static void connection_down(vk_engine *e, vk_status st)
{
    char *detail = vk__error_dup();
    if (e->state != CONN_DOWN) {
        e->state = CONN_DOWN;
        e->drv.close(e->drv.userdata);
    }
    e->reauth_in_line = false;
    e->exclusive_in_line = false;
    e->stale = false;
    e->releasing = false;
    e->release_due = false;
    e->subscribed = false;
    if (e->mux != NULL) {
        e->dead_mux = e->mux;
        e->mux = NULL;
        vk__fail_restore(st, detail);
        vk__mux_fail(e->dead_mux, st);
    }
    vk__fail_restore(st, detail);
    free(detail);
}

/* Fails the connection (the detail set): see connection_down; before it
 * was ready, that is a failed open. */
static void fail_connection(vk_engine *e, vk_status st, int64_t now_ms)
{
    if (e->state == CONN_DOWN)
        return;
    if (e->state != CONN_READY) {
        open_failed(e, st, now_ms);
        return;
    }
    connection_down(e, st);
    e->pump_again = true;
}

/* A retry of op after `failures`-th failure (st): back to the front of the
 * queue after its back-off, or completion with st. */
static void retry_or_complete(vk_engine *e, engine_op *op, vk_status st, bool sent,
                              int64_t now_ms)
{
    vk_command cmd = {.flags = op->flags};
    if (op->kind == OP_PIPELINE)
        cmd.flags = 0;   /* never re-sent once any of it went out */
    if (e->routed) {
        e->may_resend = vk__retry_may_resend(st, sent, &cmd);
        complete(e, op, st, NULL);
        return;
    }
    if (vk__retry_after_failure(e->cfg, op->retries, st, sent, &cmd)) {
        op->not_before_ms = now_ms + vk__retry_backoff_ms(e->cfg, op->retries);
        op->retries++;
        if (op->kind == OP_PIPELINE)
            reset_replies(op);
        list_push(&e->retries, op);
        e->pump_again = true;
        return;
    }
    complete(e, op, st, NULL);
}

/* Sentinel mode: this node is no longer the master; see follows_master. */
static void leave_node(vk_engine *e)
{
    e->stale = true;
    e->pump_again = true;
}

/* A stale connection with nothing left in it closes quietly (nothing
 * fails); the queue dials again, and the driver locates the master. */
static void retire_stale(vk_engine *e)
{
    if (e->reauth_in_line || vk__mux_in_flight(e->mux) > 0)
        return;
    e->stale = false;
    e->state = CONN_DOWN;
    e->drv.close(e->drv.userdata);
    e->dead_mux = e->mux;
    e->mux = NULL;
    e->pump_again = true;
}

/* The connection is ready for requests. */
static void handshake_done(vk_engine *e, int64_t now_ms)
{
    e->state = CONN_READY;
    e->next_check_ms = now_ms + VK_ENGINE_MASTER_CHECK_MS;
    vk__reconnect_gate_passed(&e->gate);
    e->pump_again = true;
}

/* A release's PING was answered and nothing else came: the connection
 * leaves quietly (nothing fails), for the host's keepalive pool; the next
 * operation opens one again. */
static void give_up_clean(vk_engine *e)
{
    e->state = CONN_DOWN;
    e->closing_clean = true;
    e->drv.close(e->drv.userdata);
    e->closing_clean = false;
    e->dead_mux = e->mux;
    e->mux = NULL;
    e->pump_again = true;
}

/* A connection taken from the host's keepalive pool was logged in (with
 * the credentials of `generation`), and its db selected, when it was
 * first opened: only the master check is sent again (Sentinel mode: the
 * node may have been demoted since). */
static void start_reused(vk_engine *e, uint64_t generation, int64_t now_ms)
{
    e->auth_generation = generation;
    e->handshake_left = 0;
    if (!e->follows_master) {
        handshake_done(e, now_ms);
        return;
    }
    static const char *const role[] = {"ROLE"};
    static const size_t role_len[] = {4};
    engine_op *op = &e->steps[0];
    *op = (engine_op){.kind = OP_HANDSHAKE, .step = role[0]};
    vk_status st = vk__mux_submit_secret(e->mux, op, 1, role, role_len, false);
    if (st != VK_OK) {
        fail_connection(e, st, now_ms);
        return;
    }
    e->handshake_left = 1;
    e->drv.want_write(e->drv.userdata);
}

static void start_handshake(vk_engine *e, int64_t now_ms)
{
    char *user = NULL, *pass = NULL;
    uint64_t generation = 0;
    vk_status st = vk__credentials_copy(e->credentials, &user, &pass, &generation);
    vk_handshake plan;
    if (st == VK_OK) {
        vk__handshake_plan(&plan, e->cfg, user, pass);
        for (int i = 0; i < plan.count && st == VK_OK; i++) {
            const vk_handshake_step *s = &plan.steps[i];
            engine_op *op = &e->steps[i];
            *op = (engine_op){.kind = OP_HANDSHAKE, .step = s->name};
            st = vk__mux_submit_secret(e->mux, op, s->argc, s->argv, s->lens, s->secret);
        }
        e->handshake_left = plan.count;
        if (st == VK_OK && e->follows_master) {
            static const char *const role[] = {"ROLE"};
            static const size_t role_len[] = {4};
            engine_op *op = &e->steps[plan.count];
            *op = (engine_op){.kind = OP_HANDSHAKE, .step = role[0]};
            st = vk__mux_submit_secret(e->mux, op, 1, role, role_len, false);
            e->handshake_left++;
        }
    }
    vk__free_secret(user);
    vk__free_secret(pass);
    if (st != VK_OK) {
        fail_connection(e, st, now_ms);
        return;
    }
    e->auth_generation = generation;
    e->drv.want_write(e->drv.userdata);
}

/* A new token: AUTH goes in line with the requests, before the next. */
static void reauthenticate(vk_engine *e, int64_t now_ms)
{
    char *user = NULL, *pass = NULL;
    uint64_t generation = 0;
    vk_status st = vk__credentials_copy(e->credentials, &user, &pass, &generation);
    if (st == VK_OK && pass != NULL) {
        vk_handshake_step step;
        vk__handshake_auth_step(&step, user, pass);
        engine_op *op = &e->steps[VK_ENGINE_AUTH_STEP];
        *op = (engine_op){.kind = OP_HANDSHAKE, .step = step.name};
        st = vk__mux_submit_secret(e->mux, op, step.argc, step.argv, step.lens, true);
        e->reauth_in_line = st == VK_OK;
    }
    vk__free_secret(user);
    vk__free_secret(pass);
    if (st != VK_OK) {
        fail_connection(e, st, now_ms);
        return;
    }
    e->auth_generation = generation;
}

static void handshake_reply(vk_engine *e, engine_op *step, redisReply *reply, int64_t now_ms)
{
    vk_status st = strcmp(step->step, "ROLE") == 0
                       ? vk__handshake_role_check(e->peer, reply)
                       : vk__handshake_check(&(vk_handshake_step){.name = step->step}, reply);
    vk__reply_free(reply);
    if (st != VK_OK) {
        fail_connection(e, st, now_ms);
        return;
    }
    if (step == &e->steps[VK_ENGINE_AUTH_STEP]) {
        e->reauth_in_line = false;
        return;
    }
    if (step == &e->steps[VK_ENGINE_RELEASE_STEP]) {
        /* An operation that came after the PING keeps the connection;
         * else it goes at the end of the turn, once the bytes fed are all
         * read (and if nothing was queued meanwhile). */
        e->releasing = false;
        e->release_due = vk__mux_in_flight(e->mux) == 0 && e->queue.count == 0 &&
                         e->retries.count == 0;
        e->pump_again = true;
        return;
    }
    if (--e->handshake_left == 0)
        handshake_done(e, now_ms);
}

/* ---- replies ------------------------------------------------------------------- */

static void pipeline_reply(vk_engine *e, engine_op *op, redisReply *reply, int64_t now_ms)
{
    op->array->element[op->got++] = reply;
    if (op->got < op->batch.count)
        return;
    note_in_line(e, op, false);
    list_remove(&e->line, op);
    if (op->exclusive) {
        e->exclusive_in_line = false;
        e->pump_again = true;
    }
    bool ended = vk__pipeline_batch_ended(&op->batch, op->array);
    /* Sentinel mode: a node that is no longer the master sends the client
     * back to discovery (the pipeline itself is not retried). */
    for (size_t i = 0; e->follows_master && i < op->array->elements; i++) {
        if (vk__reply_demands_rediscovery(op->array->element[i])) {
            leave_node(e);
            break;
        }
    }
    complete(e, op, VK_OK, NULL);
    /* A transaction that may still be open would leak into every request
     * after it: the connection goes (nothing was sent behind it). */
    if (!ended) {
        vk__fail(VK_ERR_IO, "closed: a transaction may not have ended");
        fail_connection(e, VK_ERR_IO, now_ms);
    }
}

static void on_mux_done(void *userdata, void *opp, vk_status st, redisReply *reply, bool sent)
{
    vk_engine *e = userdata;
    engine_op *op = opp;
    int64_t now_ms = e->now_ms;
    if (op == e->cancelling)
        e->cancel_completed = true;
    if (op->kind == OP_HANDSHAKE) {
        if (st == VK_OK)
            handshake_reply(e, op, reply, now_ms);
        return;
    }
    if (st == VK_OK && op->kind == OP_PIPELINE) {
        pipeline_reply(e, op, reply, now_ms);
        return;
    }
    note_in_line(e, op, false);
    list_remove(&e->line, op);
    if (op->exclusive) {
        e->exclusive_in_line = false;
        e->pump_again = true;
    }
    if (st == VK_OK) {
        int max_retries = e->cfg->max_retries > 0 ? e->cfg->max_retries : 0;
        if (VK_UNLIKELY(e->follows_master && vk__reply_demands_rediscovery(reply))) {
            /* The node is not (or no longer) the master and did not run the
             * command: find the master again and retry there. */
            leave_node(e);
            if (op->retries < max_retries) {
                vk__reply_free(reply);
                op->not_before_ms = now_ms + vk__retry_backoff_ms(e->cfg, op->retries);
                op->retries++;
                list_push(&e->retries, op);
                e->pump_again = true;
                return;
            }
        } else if (VK_UNLIKELY(vk__reply_is_refusal(reply)) && op->retries < max_retries &&
                   !e->routed) {
            vk__reply_free(reply);
            /* Refused without running: safe to send again. */
            retry_or_complete(e, op, VK_ERR_SERVER, false, now_ms);
            return;
        }
        complete(e, op, VK_OK, reply);
        return;
    }
    retry_or_complete(e, op, st, sent, now_ms);
}

static void on_mux_push(void *userdata, redisReply *message)
{
    vk_engine *e = userdata;
    e->subscribed = true;
    e->drv.push(e->drv.userdata, message);
}

static void on_mux_drop(void *userdata, void *opp)
{
    vk_engine *e = userdata;
    engine_op *op = opp;
    note_in_line(e, op, false);
    free_op(op);
    (void)e;
}

/* ---- the turn: what to do next ---------------------------------------------------- */

/* Fails the operations at the front of the queue that are due, with the
 * rate limit's status (at most those there when called: a completion that
 * submits again is answered on a later turn). */
static void fail_due(vk_engine *e, vk_status st, int64_t now_ms)
{
    char *detail = vk__error_dup();
    size_t n = e->queue.count;
    while (n-- > 0 && e->queue.head != NULL && e->queue.head->not_before_ms <= now_ms) {
        engine_op *op = e->queue.head;
        list_remove(&e->queue, op);
        vk__fail_restore(st, detail);
        /* Nothing of it was sent. */
        e->may_resend = vk__retry_may_resend(st, false, &(vk_command){.flags = op->flags});
        complete(e, op, st, NULL);
    }
    free(detail);
}

static void open_failed(vk_engine *e, vk_status st, int64_t now_ms)
{
    /* Only the handshake's own requests can be in the mux. */
    connection_down(e, st);
    vk__reconnect_gate_failed(&e->gate, now_ms);
    fail_due(e, st, now_ms);
}

static void send_queued(vk_engine *e, int64_t now_ms)
{
    if (VK_UNLIKELY(e->stale)) {
        retire_stale(e);
        return;
    }
    if (e->credentials != NULL && !e->reauth_in_line &&
        atomic_load_explicit(&e->credentials->generation, memory_order_acquire) !=
            e->auth_generation) {
        reauthenticate(e, now_ms);
        if (e->state != CONN_READY)
            return;
    }
    bool queued = false;
    while (e->queue.head != NULL && !e->exclusive_in_line && vk__mux_can_submit(e->mux)) {
        engine_op *op = e->queue.head;
        if (op->not_before_ms > now_ms)
            break;
        /* A transaction waits for the line to empty, and nothing follows it
         * until its replies are in. */
        if (op->kind == OP_PIPELINE && op->batch.ends_len > 0 && e->line.count > 0)
            break;
        vk_status st = op->kind == OP_PIPELINE
                           ? vk__mux_submit_encoded(e->mux, op, op->batch.requests,
                                                    op->batch.len, op->batch.count, false)
                           : vk__mux_submit_encoded(e->mux, op, op->req, op->req_len, 1, false);
        if (st != VK_OK) {
            list_remove(&e->queue, op);
            complete(e, op, st, NULL);
            continue;
        }
        list_remove(&e->queue, op);
        list_push(&e->line, op);
        note_in_line(e, op, true);
        if (op->kind == OP_PIPELINE && op->batch.ends_len > 0) {
            op->exclusive = true;
            e->exclusive_in_line = true;
        }
        queued = true;
    }
    if (queued || e->reauth_in_line) {
        size_t len;
        vk__mux_output(e->mux, &len);
        if (len > 0)
            e->drv.want_write(e->drv.userdata);
    }
}

/* True while the first IAM token is awaited: the queue waits, or fails
 * with the fetch's failure, or with a timeout after the dial timeout. */
static bool awaiting_token(vk_engine *e, int64_t now_ms)
{
    if (VK_LIKELY(!atomic_load_explicit(&e->credentials->token_pending, memory_order_acquire))) {
        e->token_wait_deadline_ms = 0;
        return false;
    }
    if (e->token_wait_deadline_ms == 0)
        e->token_wait_deadline_ms = now_ms + e->cfg->dial_timeout_ms;
    vk_status st = vk__credentials_new_failure(e->credentials, &e->token_failures_seen);
    if (st == VK_OK && now_ms >= e->token_wait_deadline_ms) {
        /* No token and no news in time: the last failure if there was one. */
        uint64_t none = 0;
        st = vk__credentials_new_failure(e->credentials, &none);
        if (st == VK_OK)
            st = vk__fail(VK_ERR_TIMEOUT, "dial %s: waiting for the first GCP IAM token",
                          e->peer);
    }
    if (st != VK_OK) {
        e->token_wait_deadline_ms = 0;
        fail_due(e, st, now_ms);
    } else {
        e->token_poll_ms = now_ms + VK_ENGINE_TOKEN_POLL_MS;
    }
    return true;
}

static void pump(vk_engine *e, int64_t now_ms)
{
    e->pump_again = false;
    if (VK_UNLIKELY(e->release_due)) {
        e->release_due = false;
        if (vk__engine_idle(e))
            give_up_clean(e);
    }
    if (e->state == CONN_DOWN && e->queue.head != NULL) {
        engine_op *head = e->queue.head;
        if (head->not_before_ms > now_ms)
            return;
        if (VK_UNLIKELY(awaiting_token(e, now_ms)))
            return;
        vk_status st = vk__reconnect_gate_check(&e->gate, now_ms);
        if (st != VK_OK) {
            fail_due(e, st, now_ms);
            return;
        }
        e->state = CONN_DIALING;
        /* Sentinel mode: the dial's time starts once the master is found
         * (vk__engine_dial_started); each sentinel asked has its own. */
        e->dial_deadline_ms =
            e->follows_master ? VK_ENGINE_NEVER : now_ms + e->cfg->dial_timeout_ms;
        e->drv.open(e->drv.userdata);
        return;
    }
    if (e->state == CONN_READY)
        send_queued(e, now_ms);
}

static int64_t next_wake(const vk_engine *e, int64_t now_ms)
{
    int64_t at = VK_ENGINE_NEVER;
    if (e->pump_again || e->deferred_head != NULL)
        return INT64_MIN;   /* at once: a later turn has work */
    if (e->state == CONN_DIALING)
        at = e->dial_deadline_ms;
    int64_t stall = stall_deadline(e);
    if (stall < at)
        at = stall;
    /* The front operation's retry back-off (one that is due waits for room
     * or for the connection, not for the time). */
    const engine_op *head = e->queue.head;
    if (head != NULL && (e->state == CONN_DOWN || e->state == CONN_READY) &&
        head->not_before_ms > now_ms && head->not_before_ms < at)
        at = head->not_before_ms;
    if (e->timers.head != NULL && e->timers.head->not_before_ms < at)
        at = e->timers.head->not_before_ms;
    if (e->follows_master && e->state == CONN_READY && !e->stale && e->next_check_ms < at)
        at = e->next_check_ms;
    if (e->token_wait_deadline_ms != 0 && e->state == CONN_DOWN && e->queue.head != NULL &&
        e->token_poll_ms < at)
        at = e->token_poll_ms;
    return at;
}

/* Every entry point runs as a turn: begin() ... end(). The end, at the
 * outermost level only, puts failed operations back for their retry, frees
 * a failed mux, sends what can be sent and asks for the next wake-up. */
static void begin(vk_engine *e, int64_t now_ms)
{
    if (e->depth++ == 0)
        e->now_ms = now_ms;
}

static void end(vk_engine *e)
{
    if (e->depth > 1) {
        e->depth--;
        return;
    }
    int64_t now_ms = e->now_ms;
    if (!e->submitting)
        deliver_deferred(e);
    /* A bounded number of passes: completions that keep submitting work
     * that fails at once get their answers on later turns. */
    for (int pass = 0; pass < 4; pass++) {
        list_prepend_all(&e->queue, &e->retries);
        if (e->dead_mux != NULL) {
            vk__mux_free(e->dead_mux);
            e->dead_mux = NULL;
        }
        pump(e, now_ms);
        if (!e->pump_again)
            break;
    }
    e->depth--;
    /* A wake-up already asked for an earlier time is kept: when it comes,
     * the tick finds nothing due yet and asks again. So a deadline that
     * moves later with every reply costs no timer call per request. */
    int64_t at = next_wake(e, now_ms);
    if (at < e->wake_at_ms) {
        e->wake_at_ms = at;
        e->drv.wake(e->drv.userdata, at == INT64_MIN ? now_ms : at);
    }
}

/* ---- the API ----------------------------------------------------------------------- */

vk_status vk__engine_new(vk_engine **out, const vk_config *cfg, vk_credentials *credentials,
                         const char *peer, const vk_engine_driver *driver)
{
    *out = NULL;
    vk_engine *e = calloc(1, sizeof *e);
    if (e == NULL)
        return vk__fail_nomem();
    e->cfg = cfg;
    e->credentials = credentials;
    e->drv = *driver;
    snprintf(e->peer, sizeof e->peer, "%s", peer);
    e->wake_at_ms = VK_ENGINE_NEVER;
    *out = e;
    return VK_OK;
}

static void cancel_list(vk_engine *e, op_list *l, const char *why)
{
    while (l->head != NULL) {
        engine_op *op = l->head;
        list_remove(l, op);
        vk__fail(VK_ERR_CANCELLED, "%s", why);
        complete(e, op, VK_ERR_CANCELLED, NULL);
    }
}

void vk__engine_free(vk_engine *e, const char *why)
{
    if (e == NULL)
        return;
    e->depth++;   /* no turn ends here: nothing is sent or scheduled again */
    e->submitting = false;
    deliver_deferred(e);
    if (e->state != CONN_DOWN) {
        e->state = CONN_DOWN;
        e->drv.close(e->drv.userdata);
    }
    if (e->mux != NULL) {
        /* Cancelled, whatever the retry policy would say; the detail is
         * set only when there is something to cancel. */
        if (vk__mux_in_flight(e->mux) > 0) {
            vk__fail(VK_ERR_CANCELLED, "%s", why);
            vk__mux_fail(e->mux, VK_ERR_CANCELLED);
        }
        vk__mux_free(e->mux);
        e->mux = NULL;
    }
    if (e->dead_mux != NULL)
        vk__mux_free(e->dead_mux);
    cancel_list(e, &e->retries, why);
    cancel_list(e, &e->queue, why);
    cancel_list(e, &e->timers, why);
    if (e->wake_at_ms != VK_ENGINE_NEVER)
        e->drv.wake(e->drv.userdata, VK_ENGINE_NEVER);
    free(e);
}

/* A new operation joins the queue and goes out now if it can; whatever
 * completes during this turn is delivered on the next one. */
static void queue_op(vk_engine *e, engine_op *op, int64_t now_ms)
{
    bool outermost = e->depth == 0;
    if (outermost)
        e->submitting = true;
    begin(e, now_ms);
    list_push(&e->queue, op);
    e->pump_again = true;
    end(e);
    if (outermost) {
        e->submitting = false;
        if (e->deferred_head != NULL) {
            e->wake_at_ms = INT64_MIN;
            e->drv.wake(e->drv.userdata, now_ms);
        }
    }
}

vk_status vk__engine_command(vk_engine *e, const vk_command *cmd, vk_async_fn fn,
                             void *op_userdata, int64_t now_ms, uint64_t *id)
{
    size_t len;
    if (!vk__request_size(cmd->argc, cmd->argvlen, &len))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
    engine_op *op = NULL;
    vk_status st = new_op(e, OP_COMMAND, len, fn, op_userdata, &op);
    if (st != VK_OK)
        return st;
    vk__request_encode(op->req, cmd->argc, cmd->argv, cmd->argvlen);
    op->flags = cmd->flags;
    op->block_ms = cmd->block_ms;
    *id = op->id;
    queue_op(e, op, now_ms);
    return VK_OK;
}

vk_status vk__engine_pipeline(vk_engine *e, vk_pipeline_batch *batch, vk_async_fn fn,
                              void *op_userdata, int64_t now_ms, uint64_t *id)
{
    engine_op *op = NULL;
    vk_status st = new_op(e, OP_PIPELINE, 0, fn, op_userdata, &op);
    if (st != VK_OK)
        return st;
    op->array = vk__array_reply_new(batch->count);
    if (op->array == NULL) {
        free(op);
        return vk__fail_nomem();
    }
    op->batch = *batch;
    *batch = (vk_pipeline_batch){0};
    /* Its waits on the server stretch the read timeout; a pipeline is never
     * re-sent, so no other flag counts. */
    op->flags = op->batch.flags & VK_COMMAND_BLOCKING;
    op->block_ms = op->batch.block_ms;
    *id = op->id;
    queue_op(e, op, now_ms);
    return VK_OK;
}

static engine_op *find_op(const vk_engine *e, uint64_t id)
{
    engine_op *op = list_find(&e->queue, id);
    if (op == NULL)
        op = list_find(&e->retries, id);
    if (op == NULL)
        op = list_find(&e->line, id);
    if (op == NULL)
        op = list_find(&e->timers, id);
    return op;
}

/* The list holding an operation that is not in the mux. */
static op_list *list_of(vk_engine *e, const engine_op *op)
{
    if (op->kind == OP_TIMER)
        return &e->timers;
    return list_find(&e->queue, op->id) == op ? &e->queue : &e->retries;
}

vk_status vk__engine_cancel(vk_engine *e, uint64_t id, int64_t now_ms)
{
    engine_op *op = find_op(e, id);
    /* One in a failed connection's line is being completed with the
     * failure right now: no longer in flight either. */
    if (op == NULL || (op->in_mux && e->mux == NULL))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "no operation %llu in flight",
                        (unsigned long long)id);
    begin(e, now_ms);
    if (!op->in_mux) {
        list_remove(list_of(e, op), op);
        vk__fail(VK_ERR_CANCELLED, NULL);
        complete(e, op, VK_ERR_CANCELLED, NULL);
    } else {
        /* Not written: the mux completes it at once (cancelled). Written:
         * the mux keeps it until its reply comes, to drop it then. */
        e->cancelling = op;
        e->cancel_completed = false;
        vk__mux_cancel(e->mux, op);
        e->cancelling = NULL;
        if (!e->cancel_completed) {
            bool waits_forever = (op->flags & VK_COMMAND_BLOCKING) && op->block_ms == 0;
            list_remove(&e->line, op);
            op->dropped = true;
            if (op->exclusive) {
                e->exclusive_in_line = false;
                e->pump_again = true;
            }
            if (op->kind == OP_PIPELINE)
                reset_replies(op);
            vk__fail(VK_ERR_CANCELLED, NULL);
            e->drv.complete(e->drv.userdata, op->fn, op->userdata, VK_ERR_CANCELLED, NULL);
            /* A written command that waits without a limit (BLPOP k 0) may
             * never be answered, and every request behind it waits for its
             * reply: the connection goes now, and those requests are sent
             * again or fail by the retry policy, instead of waiting for the
             * server or the read timeout. */
            if (waits_forever && e->state == CONN_READY) {
                vk__fail(VK_ERR_IO, "%s: connection closed: a blocking command without a "
                                    "timeout was cancelled after it was sent",
                         e->peer);
                fail_connection(e, VK_ERR_IO, now_ms);
            }
        }
    }
    end(e);
    return VK_OK;
}

size_t vk__engine_pending(const vk_engine *e)
{
    return e->queue.count + e->retries.count + e->line.count + e->timers.count;
}

vk_status vk__engine_after(vk_engine *e, int64_t at_ms, vk_async_fn fn, void *op_userdata,
                           int64_t now_ms, uint64_t *id)
{
    engine_op *op = NULL;
    vk_status st = new_op(e, OP_TIMER, 0, fn, op_userdata, &op);
    if (st != VK_OK)
        return st;
    op->not_before_ms = at_ms;
    *id = op->id;
    begin(e, now_ms);
    /* Earliest first; equal times keep their order. Few timers are ever
     * pending at once (a lock's next try, its renewal). */
    engine_op *after = e->timers.tail;
    while (after != NULL && after->not_before_ms > at_ms)
        after = after->prev;
    if (after == NULL) {
        op->prev = NULL;
        op->next = e->timers.head;
        if (e->timers.head != NULL)
            e->timers.head->prev = op;
        else
            e->timers.tail = op;
        e->timers.head = op;
        e->timers.count++;
    } else if (after == e->timers.tail) {
        list_push(&e->timers, op);
    } else {
        op->prev = after;
        op->next = after->next;
        after->next->prev = op;
        after->next = op;
        e->timers.count++;
    }
    end(e);
    return VK_OK;
}

/* The timers that are due complete (those due when called: one a
 * completion sets for now waits for the next tick). */
static void fire_timers(vk_engine *e, int64_t now_ms)
{
    size_t n = e->timers.count;
    while (n-- > 0 && e->timers.head != NULL && e->timers.head->not_before_ms <= now_ms) {
        engine_op *op = e->timers.head;
        list_remove(&e->timers, op);
        complete(e, op, VK_OK, NULL);
    }
}

bool vk__engine_ready(const vk_engine *e)
{
    return e->state == CONN_READY;
}

/* The connection is open: a new one logs in, a reused one (reused) is
 * ready at once. */
static void opened(vk_engine *e, bool reused, uint64_t generation, int64_t now_ms)
{
    if (e->state != CONN_DIALING)
        return;
    begin(e, now_ms);
    vk_status st = vk__mux_new(&e->mux, VK_ENGINE_MAX_IN_FLIGHT, on_mux_done, e);
    if (st == VK_OK) {
        vk__mux_set_drop(e->mux, on_mux_drop);
        if (e->drv.push != NULL)
            vk__mux_set_push(e->mux, on_mux_push);
        e->state = CONN_HANDSHAKE;
        e->last_progress_ms = now_ms;
        e->reauth_in_line = false;
        e->exclusive_in_line = false;
        e->stale = false;
        e->releasing = e->release_due = e->subscribed = false;
        if (reused)
            start_reused(e, generation, now_ms);
        else
            start_handshake(e, now_ms);
    } else {
        open_failed(e, st, now_ms);
    }
    end(e);
}

void vk__engine_opened(vk_engine *e, int64_t now_ms)
{
    opened(e, false, 0, now_ms);
}

void vk__engine_opened_reused(vk_engine *e, uint64_t generation, int64_t now_ms)
{
    opened(e, true, generation, now_ms);
}

/* Idle, whatever credentials it logged in with. */
static bool idle_as_logged_in(const vk_engine *e)
{
    if (e->state != CONN_READY || e->mux == NULL || e->stale || e->subscribed ||
        e->releasing || e->reauth_in_line || e->exclusive_in_line)
        return false;
    if (vk__mux_in_flight(e->mux) > 0 || vk__mux_status(e->mux) != VK_OK)
        return false;
    size_t unwritten;
    vk__mux_output(e->mux, &unwritten);
    return unwritten == 0 && e->queue.count == 0 && e->retries.count == 0 &&
           e->line.count == 0;
}

static bool credentials_current(const vk_engine *e)
{
    return e->credentials == NULL ||
           atomic_load_explicit(&e->credentials->generation, memory_order_acquire) ==
               e->auth_generation;
}

bool vk__engine_idle(const vk_engine *e)
{
    /* Logged in with credentials replaced since: not to be reused. */
    return idle_as_logged_in(e) && credentials_current(e);
}

bool vk__engine_release(vk_engine *e, int64_t now_ms)
{
    if (e->releasing)
        return true;
    if (!idle_as_logged_in(e))
        return false;
    static const char *const ping[] = {"PING"};
    static const size_t ping_len[] = {4};
    begin(e, now_ms);
    /* Newer credentials (a token refreshed while it was idle): their AUTH
     * goes first, so that the connection is pooled under their name. */
    if (!credentials_current(e)) {
        reauthenticate(e, now_ms);
        if (e->state != CONN_READY) {
            end(e);
            return false;
        }
    }
    engine_op *op = &e->steps[VK_ENGINE_RELEASE_STEP];
    *op = (engine_op){.kind = OP_HANDSHAKE, .step = ping[0]};
    bool ok = vk__mux_submit_secret(e->mux, op, 1, ping, ping_len, false) == VK_OK;
    if (ok) {
        e->releasing = true;
        e->drv.want_write(e->drv.userdata);
    }
    end(e);
    return ok;
}

bool vk__engine_closing_clean(const vk_engine *e)
{
    return e->closing_clean;
}

uint64_t vk__engine_auth_generation(const vk_engine *e)
{
    return e->auth_generation;
}

void vk__engine_open_failed(vk_engine *e, vk_status status, int64_t now_ms)
{
    if (e->state != CONN_DIALING)
        return;
    begin(e, now_ms);
    open_failed(e, status, now_ms);
    end(e);
}

const char *vk__engine_output(const vk_engine *e, size_t *len)
{
    if (e->mux == NULL || e->state == CONN_DOWN || e->state == CONN_DIALING) {
        *len = 0;
        return NULL;
    }
    return vk__mux_output(e->mux, len);
}

void vk__engine_wrote(vk_engine *e, size_t n, int64_t now_ms)
{
    if (e->mux == NULL || n == 0)
        return;
    begin(e, now_ms);
    vk__mux_wrote(e->mux, n);
    e->last_progress_ms = now_ms;
    end(e);
}

void vk__engine_feed(vk_engine *e, const char *bytes, size_t len, int64_t now_ms)
{
    if (e->mux == NULL || len == 0)
        return;
    begin(e, now_ms);
    e->last_progress_ms = now_ms;
    vk_mux *m = e->mux;
    if (vk__mux_feed(m, bytes, len) != VK_OK && e->mux == m) {
        /* The stream cannot be trusted (the mux failed every operation). */
        fail_connection(e, vk__mux_status(m), now_ms);
    }
    end(e);
}

void vk__engine_lost(vk_engine *e, vk_status status, int64_t now_ms)
{
    if (e->state == CONN_DOWN)
        return;
    begin(e, now_ms);
    fail_connection(e, status, now_ms);
    end(e);
}

void vk__engine_tick(vk_engine *e, int64_t now_ms)
{
    begin(e, now_ms);
    e->wake_at_ms = VK_ENGINE_NEVER;   /* the wake-up came: ask again for whatever is next */
    if (e->state == CONN_DIALING && now_ms >= e->dial_deadline_ms) {
        const char *stage = e->drv.dial_stage != NULL ? e->drv.dial_stage(e->drv.userdata) : NULL;
        vk__fail(VK_ERR_TIMEOUT, "dial %s%s%s", e->peer, stage != NULL ? ": " : "",
                 stage != NULL ? stage : "");
        open_failed(e, VK_ERR_TIMEOUT, now_ms);
    } else if (now_ms >= stall_deadline(e)) {
        size_t unwritten;
        vk__mux_output(e->mux, &unwritten);
        vk__fail(VK_ERR_TIMEOUT, "%s %s", unwritten > 0 ? "write" : "read", e->peer);
        fail_connection(e, VK_ERR_TIMEOUT, now_ms);
    }
    fire_timers(e, now_ms);
    if (e->follows_master && e->state == CONN_READY && !e->stale && now_ms >= e->next_check_ms &&
        e->drv.check_master != NULL) {
        e->next_check_ms = now_ms + VK_ENGINE_MASTER_CHECK_MS;
        e->drv.check_master(e->drv.userdata);
    }
    e->pump_again = true;
    end(e);
}

void vk__engine_follow_master(vk_engine *e)
{
    e->follows_master = true;
}

void vk__engine_route(vk_engine *e)
{
    e->routed = true;
}

bool vk__engine_may_resend(const vk_engine *e)
{
    return e->completing_may_resend;
}

void vk__engine_set_peer(vk_engine *e, const char *peer)
{
    snprintf(e->peer, sizeof e->peer, "%s", peer);
}

void vk__engine_dial_started(vk_engine *e, int64_t now_ms)
{
    if (e->state != CONN_DIALING)
        return;
    begin(e, now_ms);
    e->dial_deadline_ms = now_ms + e->cfg->dial_timeout_ms;
    end(e);
}

void vk__engine_leave_node(vk_engine *e, int64_t now_ms)
{
    if (e->state != CONN_READY && e->state != CONN_HANDSHAKE)
        return;
    begin(e, now_ms);
    leave_node(e);
    end(e);
}
